//! `[flows]`: probe flows started from the configuration (issue #19, item 9), so a
//! deployment's MTTR metrics have data without an API call, and again after a restart;
//! and the SVID's issue time next to its expiry in /metrics (item 7).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, issue, Api};
use x0tta6bl4_node::{load_config, NodeConfig, NodeHandle};

/// Node `name`'s configuration with `flows` appended (a `[flows]` table's keys).
fn with_flows(dir: &Path, name: &str, peers: &[std::net::SocketAddr], flows: &str) -> NodeConfig {
    let any = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir, name, any, any, peers);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}[flows]\n{flows}\n")).unwrap();
    load_config(&path).unwrap()
}

async fn probes_from(api: &Api, source: &str) -> usize {
    let (_, flows) = api.get("/api/v1/flows").await;
    flows["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == source)
        .map(|r| r["arrivals_us"].as_array().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_of_the_configuration_run_from_the_start_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    // One shared list, as the chart renders it: a node skips its own name.
    let flows = "targets = [\"a\", \"b\"]\ninterval_ms = 20";
    let b = NodeHandle::start(with_flows(dir.path(), "b", &[], flows))
        .await
        .unwrap();
    let a_config = with_flows(dir.path(), "a", &[b.quic_addr()], flows);
    let a = NodeHandle::start(a_config.clone()).await.unwrap();
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for (api, from) in [(&api_b, "a"), (&api_a, "b")] {
        eventually(
            Duration::from_secs(10),
            "probes from the other node",
            || async { probes_from(api, from).await >= 10 },
        )
        .await;
    }
    let (_, sender) = api_a.get("/api/v1/flows").await;
    assert_eq!(sender["interval_ms"], 20, "{sender}");

    // Restarted with the same configuration, a sends again without being asked.
    a.shutdown().await.unwrap();
    let a = NodeHandle::start(a_config).await.unwrap();
    let api_a = Api::new(&a);
    eventually(
        Duration::from_secs(10),
        "a's flow after its restart",
        || async {
            let (_, sender) = api_a.get("/api/v1/flows").await;
            sender["sent"].as_u64().unwrap_or(0) >= 10 && probes_from(&api_b, "a").await >= 20
        },
    )
    .await;

    // The SVID's issue time and expiry: 1 h apart (common::issue), issued about now.
    let metrics = api_a.text("/metrics").await;
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let issued = value("x0tta6bl4_svid_issued_timestamp_seconds");
    let expiry = value("x0tta6bl4_svid_expiry_timestamp_seconds");
    assert!((expiry - issued - 3600.0).abs() < 2.0, "{issued} {expiry}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - issued).abs() < 120.0, "issued {issued}, now {now}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[test]
fn bad_flows_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir.path(), "a", any, any, &[]);
    let base = std::fs::read_to_string(&path).unwrap();
    for (flows, key, fix) in [
        ("interval_ms = 0", "flows.interval_ms", "use 1 to 60000"),
        ("targets = [\"Not A Name\"]", "flows", ""),
        ("target = [\"b\"]", "flows", "target"),
    ] {
        std::fs::write(&path, format!("{base}[flows]\n{flows}\n")).unwrap();
        let error = load_config(&path).unwrap_err().to_string();
        assert!(
            error.contains(key) && error.contains(fix),
            "{flows}: {error}"
        );
    }
}
