//! Revocations on real nodes (real QUIC, real SVIDs, in one process): a node that was
//! down while a revocation flooded learns it on its first link after it returns, and the
//! revoked node cannot re-enter the mesh through it.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, issue, write_config, Api};
use x0tta6bl4_node::{load_config, NodeHandle};

async fn start(dir: &std::path::Path, name: &str, peers: &[std::net::SocketAddr]) -> NodeHandle {
    let any = "127.0.0.1:0".parse().unwrap();
    let path = write_config(dir, name, any, any, peers);
    NodeHandle::start(load_config(&path).unwrap())
        .await
        .unwrap()
}

async fn revoked(api: &Api) -> Vec<String> {
    let (_, list) = api.get("/api/v1/revocations").await;
    serde_json::from_value(list).unwrap_or_default()
}

async fn neighbour_up(api: &Api, name: &str) -> bool {
    let (_, peers) = api.get("/api/v1/peers").await;
    peers
        .as_array()
        .is_some_and(|p| p.iter().any(|n| n["name"] == name && n["state"] == "up"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_the_flood_learns_the_revocation_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["n1", "n2", "n3", "n5"]);
    // n2 and n3 dial n1; n5 dials n3 only, so while n3 is down n5 is cut off from the
    // flood, and when n3 returns n5 would re-enter through it.
    let n1 = start(dir.path(), "n1", &[]).await;
    let n2 = start(dir.path(), "n2", &[n1.quic_addr()]).await;
    let n3_listen = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let n3_config = write_config(dir.path(), "n3", n3_listen, any, &[n1.quic_addr()]);
    let n3 = NodeHandle::start(load_config(&n3_config).unwrap())
        .await
        .unwrap();
    let n5 = start(dir.path(), "n5", &[n3_listen]).await;
    let (api1, api5) = (Api::new(&n1), Api::new(&n5));
    eventually(Duration::from_secs(15), "n5 routes to n1", || async {
        api5.route("n1").await.is_some()
    })
    .await;
    n3.shutdown().await.unwrap();

    let ca = x0tta6bl4_identity::CertificateAuthority::open(&dir.path().join("ca")).unwrap();
    let revocation = ca
        .revoke(&x0tta6bl4_proto::NodeName::new("n5").unwrap())
        .unwrap();
    let body = serde_json::to_string(&revocation).unwrap();
    let (status, answer) = api1.post("/api/v1/revocations", &body).await;
    assert_eq!(status, 200, "{answer}");
    let api2 = Api::new(&n2);
    eventually(
        Duration::from_secs(5),
        "n2 holds the revocation",
        || async { revoked(&api2).await == ["n5"] },
    )
    .await;

    // n3 returns with an empty revocations file: it never heard of the revocation.
    let n3 = NodeHandle::start(load_config(&n3_config).unwrap())
        .await
        .unwrap();
    let api3 = Api::new(&n3);
    let started = Instant::now();
    let linked = eventually(Duration::from_secs(10), "n3 links to n1", || {
        neighbour_up(&api3, "n1")
    })
    .await;
    let learnt = eventually(
        Duration::from_secs(10),
        "n3 holds the revocation",
        || async { revoked(&api3).await == ["n5"] },
    )
    .await;
    println!(
        "n3 linked to n1 {linked:?} after it started and held the revocation {:?} later",
        learnt.saturating_sub(linked)
    );
    assert!(
        learnt.saturating_sub(linked) < Duration::from_secs(2),
        "learnt within one link-up: {learnt:?} after start, linked after {linked:?}"
    );
    // n5 is cut off for good: n3 drops and refuses it, and nobody routes to it.
    eventually(Duration::from_secs(5), "n5 cut off everywhere", || async {
        let n5_neighbour = neighbour_up(&api3, "n5").await;
        let routes = [&api1, &api2, &api3];
        let mut any_route = false;
        for api in routes {
            any_route |= api.route("n5").await.is_some();
        }
        !n5_neighbour && !any_route && api5.route("n1").await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!neighbour_up(&api3, "n5").await, "n5 re-entered through n3");
    let metrics = api3.text("/metrics").await;
    assert!(
        metrics.contains("x0tta6bl4_revocations_installed_total 1"),
        "{metrics}"
    );
    println!("whole test took {:?}", started.elapsed());
    for node in [n1, n2, n3, n5] {
        node.shutdown().await.unwrap();
    }
}
