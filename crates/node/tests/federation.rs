//! Federation on real nodes (QUIC, mutual TLS): a node of a partner trust domain joins a
//! mesh through configured bundles and the policy, routes messages, and is refused
//! (logged, counted) without a policy rule; two domains' nodes of one name stay apart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{eventually, Api};
use x0tta6bl4_identity::{CertificateAuthority, TrustDomain};
use x0tta6bl4_node::{load_config, NodeConfig, NodeHandle};
use x0tta6bl4_proto::NodeName;

/// A CA of `domain` in `dir/DOMAIN` and SVIDs in `dir/DIRNAME` for `(dirname, name)`.
fn issue(dir: &Path, domain: &str, nodes: &[(&str, &str)]) {
    common::logs();
    let ca =
        CertificateAuthority::init(&dir.join(domain), &TrustDomain::new(domain).unwrap()).unwrap();
    for (dirname, name) in nodes {
        let name = NodeName::new(name).unwrap();
        ca.issue_node(&name, Duration::from_secs(3600), &dir.join(dirname))
            .unwrap();
    }
}

/// Node `dirname`'s configuration, trusting `federation` (`(domain, bundle file)`) and,
/// when given, with `policy` as its policy file.
fn config(
    dir: &Path,
    dirname: &str,
    peers: &[SocketAddr],
    federation: &[&str],
    policy: Option<&str>,
) -> NodeConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir, dirname, any, any, peers);
    let mut text = std::fs::read_to_string(&path).unwrap();
    if let Some(policy) = policy {
        let file = format!("{dirname}-policy.toml");
        std::fs::write(dir.join(&file), policy).unwrap();
        text.push_str(&format!("policy = \"{file}\"\n"));
    }
    let entries: Vec<String> = federation
        .iter()
        .map(|d| format!("\"{d}\" = \"{d}/bundle.pem\""))
        .collect();
    text.push_str(&format!("federation = {{ {} }}\n", entries.join(", ")));
    std::fs::write(&path, text).unwrap();
    load_config(&path).unwrap()
}

fn allow(domain: &str) -> String {
    format!(
        "[[rule]]\nname = \"partner\"\neffect = \"allow\"\nactions = [\"neighbour\", \"send\"]\nfrom = \"spiffe://{domain}/node/*\"\n"
    )
}

async fn peer(api: &Api, name: &str) -> Option<serde_json::Value> {
    let (_, peers) = api.get("/api/v1/peers").await;
    peers
        .as_array()?
        .iter()
        .find(|p| p["name"] == name && p["state"] == "up")
        .cloned()
}

async fn denied_neighbours(api: &Api) -> u64 {
    let prefix = "x0tta6bl4_policy_decisions_total{decision=\"deny\",action=\"neighbour\"} ";
    let text = api.text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_node_joins_the_mesh_and_routes_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    issue(root, "a.test", &[("a1", "a1"), ("a2", "a2")]);
    issue(root, "b.test", &[("b1", "b1")]);
    let partner = allow("b.test");
    let a1 = NodeHandle::start(config(root, "a1", &[], &["b.test"], Some(&partner)))
        .await
        .unwrap();
    let a2 = NodeHandle::start(config(
        root,
        "a2",
        &[a1.quic_addr()],
        &["b.test"],
        Some(&partner),
    ))
    .await
    .unwrap();
    let home = allow("a.test");
    let b1 = NodeHandle::start(config(
        root,
        "b1",
        &[a2.quic_addr()],
        &["a.test"],
        Some(&home),
    ))
    .await
    .unwrap();
    let (api_a1, api_a2, api_b1) = (Api::new(&a1), Api::new(&a2), Api::new(&b1));
    eventually(
        Duration::from_secs(15),
        "b1 routes to a1 through a2",
        || async {
            api_b1
                .route("a1")
                .await
                .is_some_and(|r| r["next_hop"] == "a2")
        },
    )
    .await;
    let seen = peer(&api_a2, "b1").await.expect("b1 is a2's neighbour");
    assert_eq!(seen["spiffe_id"], "spiffe://b.test/node/b1");
    eventually(Duration::from_secs(10), "a1 routes to b1", || async {
        api_a1.route("b1").await.is_some()
    })
    .await;

    let mut sent = 0;
    for i in 0..20 {
        let body = format!(r#"{{"to": "a1", "payload": "from-partner-{i}"}}"#);
        let (status, answer) = api_b1.post("/api/v1/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        sent += 1;
    }
    eventually(
        Duration::from_secs(5),
        "partner messages delivered",
        || async {
            let (_, messages) = api_a1.get("/api/v1/messages").await;
            messages
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["from"] == "b1").count())
                == sent
        },
    )
    .await;
    let body = r#"{"to": "b1", "payload": "reply"}"#;
    assert_eq!(api_a1.post("/api/v1/send", body).await.0, 202);
    eventually(Duration::from_secs(5), "reply delivered", || async {
        let (_, messages) = api_b1.get("/api/v1/messages").await;
        messages
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["from"] == "a1"))
    })
    .await;
    for node in [a1, a2, b1] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_partner_without_a_policy_rule_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    issue(root, "a.test", &[("a1", "a1")]);
    issue(root, "b.test", &[("b1", "b1")]);
    // a1 trusts b.test's bundle, but its policy (the default) denies foreign IDs.
    let a1 = NodeHandle::start(config(root, "a1", &[], &["b.test"], None))
        .await
        .unwrap();
    let b1 = NodeHandle::start(config(
        root,
        "b1",
        &[a1.quic_addr()],
        &["a.test"],
        Some(&allow("a.test")),
    ))
    .await
    .unwrap();
    let api_a1 = Api::new(&a1);
    eventually(
        Duration::from_secs(10),
        "b1 refused and counted",
        || async { denied_neighbours(&api_a1).await >= 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(peer(&api_a1, "b1").await.is_none(), "b1 became a neighbour");
    for node in [a1, b1] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_node_cannot_take_a_local_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    issue(root, "a.test", &[("a1", "a1"), ("a-x", "x")]);
    issue(root, "b.test", &[("b-x", "x")]);
    let a1 = NodeHandle::start(config(root, "a1", &[], &["b.test"], Some(&allow("b.test"))))
        .await
        .unwrap();
    let api_a1 = Api::new(&a1);
    let ax = NodeHandle::start(config(root, "a-x", &[a1.quic_addr()], &[], None))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "a.test's x linked", || async {
        peer(&api_a1, "x").await.is_some()
    })
    .await;
    let before = denied_neighbours(&api_a1).await;
    // b.test's x is verified (federated) and allowed by the policy, but its name is
    // bound to a.test: refused as a neighbour, and it does not replace a.test's x.
    let bx = NodeHandle::start(config(
        root,
        "b-x",
        &[a1.quic_addr()],
        &["a.test"],
        Some(&allow("a.test")),
    ))
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "b.test's x refused", || async {
        denied_neighbours(&api_a1).await > before
    })
    .await;
    let seen = peer(&api_a1, "x")
        .await
        .expect("a.test's x is still linked");
    assert_eq!(seen["spiffe_id"], "spiffe://a.test/node/x");
    for node in [a1, ax, bx] {
        node.shutdown().await.unwrap();
    }
}
