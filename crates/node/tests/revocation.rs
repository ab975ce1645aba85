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

/// Issue #19 item 5: a pod recreated from scratch has an empty state directory, so its
/// `revocations.jsonl` is gone. Every node of the mesh is restarted in turn with its
/// file deleted (a rolling restart of recreated pods, the revoked node still running and
/// dialing): each one re-learns the revocation from its neighbours by anti-entropy
/// before the next goes, and at the end every node holds it, persisted again, and the
/// revoked node is still refused everywhere. (If every holder lost its state at once,
/// nobody would be left to re-learn from: the operator posts it again, docs/runbook.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_wiped_state_keeps_the_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["n1", "n2", "n3"];
    issue(dir.path(), &["n1", "n2", "n3", "n5"]);
    let any = "127.0.0.1:0".parse().unwrap();
    let listen: Vec<std::net::SocketAddr> = names
        .iter()
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap()
        })
        .collect();
    // A full mesh of three: each dials the ones before it (static peers, as seeds).
    let configs: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| write_config(dir.path(), name, listen[i], any, &listen[..i]))
        .collect();
    let mut nodes = Vec::new();
    for config in &configs {
        nodes.push(Some(
            NodeHandle::start(load_config(config).unwrap())
                .await
                .unwrap(),
        ));
    }
    let n5 = start(dir.path(), "n5", &[listen[0]]).await;
    let api5 = Api::new(&n5);
    eventually(Duration::from_secs(15), "n5 routes to n3", || async {
        api5.route("n3").await.is_some()
    })
    .await;

    let ca = x0tta6bl4_identity::CertificateAuthority::open(&dir.path().join("ca")).unwrap();
    let revocation = ca
        .revoke(&x0tta6bl4_proto::NodeName::new("n5").unwrap())
        .unwrap();
    let api1 = Api::new(nodes[0].as_ref().unwrap());
    let (status, answer) = api1
        .post(
            "/api/v1/revocations",
            &serde_json::to_string(&revocation).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for node in nodes.iter().flatten() {
        let api = Api::new(node);
        eventually(Duration::from_secs(5), "every node holds it", || async {
            revoked(&api).await == ["n5"]
        })
        .await;
    }

    for (i, name) in names.iter().enumerate() {
        nodes[i].take().unwrap().shutdown().await.unwrap();
        let file = dir.path().join(name).join("revocations.jsonl");
        assert!(file.exists(), "{name} had persisted the revocation");
        std::fs::remove_file(&file).unwrap();
        // The old endpoint's socket may linger for a moment after shutdown.
        let mut attempts = 0;
        let node = loop {
            match NodeHandle::start(load_config(&configs[i]).unwrap()).await {
                Ok(node) => break node,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    println!("{name} restart: {error:#}; again in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("{name} restart: {error:#}"),
            }
        };
        let api = Api::new(&node);
        let other = names[(i + 1) % names.len()];
        eventually(Duration::from_secs(10), "the restarted node links", || {
            neighbour_up(&api, other)
        })
        .await;
        eventually(
            Duration::from_secs(10),
            "the restarted node re-learns",
            || async { revoked(&api).await == ["n5"] },
        )
        .await;
        eventually(
            Duration::from_secs(5),
            "the revocation persisted again",
            || async { std::fs::read_to_string(&file).is_ok_and(|text| text.contains("n5")) },
        )
        .await;
        nodes[i] = Some(node);
    }

    let apis: Vec<Api> = nodes.iter().flatten().map(Api::new).collect();
    eventually(Duration::from_secs(5), "n5 cut off everywhere", || async {
        let mut anything = api5.route("n1").await.is_some();
        for api in &apis {
            anything |= api.route("n5").await.is_some() || neighbour_up(api, "n5").await;
        }
        !anything
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !neighbour_up(&apis[0], "n5").await,
        "n5 re-entered through n1"
    );
    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
    n5.shutdown().await.unwrap();
}
