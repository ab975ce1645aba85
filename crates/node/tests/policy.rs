//! The authorization policy on real nodes: neighbours, messages and API calls allowed
//! or denied by SPIFFE ID pattern, decisions counted, reload on file change and on
//! SIGHUP, and a bad file rejected with the old policy kept.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{eventually, issue, Api};
use x0tta6bl4_node::{load_config, NodeConfig, NodeHandle};

const DENY_C: &str = r#"
[[rule]]
name = "no-c"
effect = "deny"
actions = ["neighbour"]
from = "spiffe://mesh.test/node/c"
"#;

const DENY_NOBODY: &str = r#"
[[rule]]
name = "no-z"
effect = "deny"
actions = ["neighbour"]
from = "spiffe://mesh.test/node/z"
"#;

fn config_with_policy(dir: &Path, name: &str, peers: &[SocketAddr], policy: &str) -> NodeConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir, name, any, any, peers);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("policy = \"{policy}\"\n"));
    std::fs::write(&path, text).unwrap();
    load_config(&path).unwrap()
}

async fn peer_up(api: &Api, name: &str) -> bool {
    let (_, peers) = api.get("/api/v1/peers").await;
    peers
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["name"] == name && p["state"] == "up"))
}

async fn metric(api: &Api, line: &str) -> bool {
    api.text("/metrics").await.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_a_neighbour_and_reloads_on_file_change_keeping_old_on_error() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b", "c"]);
    let policy_file = dir.path().join("b-policy.toml");
    std::fs::write(&policy_file, DENY_C).unwrap();
    let b = NodeHandle::start(config_with_policy(dir.path(), "b", &[], "b-policy.toml"))
        .await
        .unwrap();
    let a = NodeHandle::start(common::config(dir.path(), "a", &[b.quic_addr()]))
        .await
        .unwrap();
    let c = NodeHandle::start(common::config(dir.path(), "c", &[b.quic_addr()]))
        .await
        .unwrap();
    let api_b = Api::new(&b);
    eventually(Duration::from_secs(10), "a is b's neighbour", || {
        peer_up(&api_b, "a")
    })
    .await;
    let denied = "x0tta6bl4_policy_decisions_total{decision=\"deny\",action=\"neighbour\"}";
    eventually(Duration::from_secs(10), "c denied and counted", || async {
        api_b
            .text("/metrics")
            .await
            .lines()
            .any(|l| l.starts_with(denied) && l.rsplit(' ').next().unwrap() != "0")
    })
    .await;
    assert!(!peer_up(&api_b, "c").await);

    // A bad file is rejected; the old policy (deny c) stays in force.
    std::fs::write(&policy_file, "[[rule]]\nname = \"x\"\neffect = \"allow\"\nactions = [\"fly\"]\nfrom = \"spiffe://*/**\"\n").unwrap();
    eventually(Duration::from_secs(5), "bad policy rejected", || {
        metric(
            &api_b,
            "x0tta6bl4_policy_reloads_total{result=\"rejected\"} 1",
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!peer_up(&api_b, "c").await, "the rejected file took effect");

    // A good file takes effect without a restart: c becomes a neighbour.
    std::fs::write(&policy_file, DENY_NOBODY).unwrap();
    eventually(Duration::from_secs(15), "c admitted after reload", || {
        peer_up(&api_b, "c")
    })
    .await;
    assert!(metric(&api_b, "x0tta6bl4_policy_reloads_total{result=\"ok\"} 1").await);

    // A reload that denies a neighbour with an open link closes that link.
    std::fs::write(&policy_file, DENY_C.replace("node/c", "node/a")).unwrap();
    eventually(
        Duration::from_secs(5),
        "a's link dropped after reload",
        || async { !peer_up(&api_b, "a").await },
    )
    .await;
    assert!(peer_up(&api_b, "c").await);
    for node in [a, b, c] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_governs_messages_and_api_calls_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let policy_file = dir.path().join("b-policy.toml");
    let deny_a_to_b = r#"
[[rule]]
name = "a-may-not-write-to-b"
effect = "deny"
actions = ["send"]
from = "spiffe://mesh.test/node/a"
to = "spiffe://mesh.test/node/b"

[[rule]]
name = "read-only-api"
effect = "deny"
actions = ["api"]
from = "anonymous"
endpoints = ["POST /api/v1/**"]
"#;
    std::fs::write(&policy_file, deny_a_to_b).unwrap();
    let b = NodeHandle::start(config_with_policy(dir.path(), "b", &[], "b-policy.toml"))
        .await
        .unwrap();
    let a = NodeHandle::start(common::config(dir.path(), "a", &[b.quic_addr()]))
        .await
        .unwrap();
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    eventually(Duration::from_secs(10), "a up at b", || {
        peer_up(&api_b, "a")
    })
    .await;
    eventually(Duration::from_secs(10), "route a -> b", || async {
        api_a.route("b").await.is_some()
    })
    .await;

    // b's API: POSTs denied to anonymous callers, reads and health stay open.
    let (status, body) = api_b
        .post("/api/v1/send", r#"{"to": "a", "payload": "x"}"#)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("authorization policy"),
        "{body}"
    );
    assert_eq!(api_b.get("/api/v1/peers").await.0, 200);
    assert_eq!(api_b.get("/health/live").await.0, 200);

    // a -> b: a's policy (default) lets it send, b drops it on delivery.
    let (status, body) = api_a
        .post("/api/v1/send", r#"{"to": "b", "payload": "hello"}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(5), "message denied at b", || {
        metric(
            &api_b,
            "x0tta6bl4_policy_decisions_total{decision=\"deny\",action=\"send\"} 1",
        )
    })
    .await;
    let (_, messages) = api_b.get("/api/v1/messages").await;
    assert!(!messages.to_string().contains("hello"), "{messages}");

    // SIGHUP reloads even when the file looks unchanged (same size and mtime).
    let modified = std::fs::metadata(&policy_file).unwrap().modified().unwrap();
    let allow_all = deny_a_to_b.replace("effect = \"deny\"", "effect = \"allow\"");
    let allow_all = allow_all.trim();
    assert_eq!(allow_all.len(), deny_a_to_b.len());
    std::fs::write(&policy_file, allow_all).unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(&policy_file)
        .unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(metric(&api_b, "x0tta6bl4_policy_reloads_total{result=\"ok\"} 0").await);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(5), "reloaded on SIGHUP", || {
        metric(&api_b, "x0tta6bl4_policy_reloads_total{result=\"ok\"} 1")
    })
    .await;
    let (status, body) = api_a
        .post("/api/v1/send", r#"{"to": "b", "payload": "again"}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(
        Duration::from_secs(5),
        "message delivered after reload",
        || async {
            api_b
                .get("/api/v1/messages")
                .await
                .1
                .to_string()
                .contains("again")
        },
    )
    .await;
    assert_eq!(
        api_b
            .post("/api/v1/send", r#"{"to": "a", "payload": "y"}"#)
            .await
            .0,
        202
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
