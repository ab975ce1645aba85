//! Nodes learn each other's addresses from the mesh: a peer that comes back at an address
//! no one configured (a recreated pod: new IP, new port) is redialed there, and the link
//! counts because the handshake proves its SVID. Real nodes on loopback, real QUIC/TLS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{config, eventually, issue, write_config, Api};
use serde_json::Value;
use x0tta6bl4_node::{load_config, NodeHandle};

/// `name`'s entry in `api`'s peer list.
async fn peer(api: &Api, name: &str) -> Option<Value> {
    let (_, peers) = api.get("/api/v1/peers").await;
    peers
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

fn addresses(peer: &Value) -> Vec<String> {
    peer["advertised"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_back_at_a_new_address_is_redialed_where_the_mesh_says_it_is() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b", "c"]);
    let a = NodeHandle::start(config(dir.path(), "a", &[]))
        .await
        .unwrap();
    let b = NodeHandle::start(config(dir.path(), "b", &[a.quic_addr()]))
        .await
        .unwrap();
    let old_b = b.quic_addr();
    // c is configured with b's first address only (as a pod is with a seed's).
    let c = NodeHandle::start(config(dir.path(), "c", &[a.quic_addr(), old_b]))
        .await
        .unwrap();
    let api_c = Api::new(&c);
    eventually(
        Duration::from_secs(10),
        "c holds b's address record",
        || async {
            peer(&api_c, "b")
                .await
                .is_some_and(|p| p["state"] == "up" && addresses(&p) == [old_b.to_string()])
        },
    )
    .await;

    // b is recreated elsewhere: another loopback IP and another port, which no node's
    // configuration names. It knows only a.
    b.shutdown().await.unwrap();
    let any_on_new_ip: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let path = write_config(
        dir.path(),
        "b",
        any_on_new_ip,
        "127.0.0.1:0".parse().unwrap(),
        &[a.quic_addr()],
    );
    let b = NodeHandle::start(load_config(&path).unwrap())
        .await
        .unwrap();
    let new_b = b.quic_addr();
    assert_ne!(new_b.ip(), old_b.ip());
    let took = eventually(
        Duration::from_secs(20),
        "c links to b at b's new address, learnt through a",
        || async {
            peer(&api_c, "b").await.is_some_and(|p| {
                p["state"] == "up"
                    && p["addr"] == new_b.to_string()
                    && addresses(&p) == [new_b.to_string()]
            })
        },
    )
    .await;
    eprintln!("c linked to b at its new address {new_b} {took:?} after b restarted");
    let (_, status) = api_c.get("/api/v1/status").await;
    eprintln!("c status: {status}");
    let metrics = api_c.text("/metrics").await;
    let dials: f64 = metrics
        .lines()
        .find(|l| l.starts_with("x0tta6bl4_learnt_address_dials_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("x0tta6bl4_learnt_address_dials_total in /metrics");
    assert!(dials >= 1.0, "c dialed a learnt address: {dials}");
    for node in [a, b, c] {
        node.shutdown().await.unwrap();
    }
}
