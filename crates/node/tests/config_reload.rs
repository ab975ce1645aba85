//! Configuration reload without a restart (issue 16): `POST /api/v1/config/reload` reads
//! the node's file again, applies the `[protocol]` settings that change at run time,
//! reports those that need a restart, and keeps the configuration in force when the file
//! is invalid, unreadable or absent.

mod common;

use std::time::Duration;

use common::{eventually, issue, Api};
use x0tta6bl4_node::{load_config, NodeHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_reloads_its_protocol_settings_and_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let any = "127.0.0.1:0".parse().unwrap();
    let b = NodeHandle::start(common::config(dir.path(), "b", &[]))
        .await
        .unwrap();
    let path = common::write_config(dir.path(), "a", any, any, &[b.quic_addr()]);
    let original = std::fs::read_to_string(&path).unwrap();
    let a = NodeHandle::start(load_config(&path).unwrap())
        .await
        .unwrap();
    let api = Api::new(&a);
    let interval = || async {
        let (status, config) = api.get("/api/v1/config").await;
        assert_eq!(status, 200, "{config}");
        config["protocol"]["probe_interval_ms"].as_u64().unwrap()
    };
    assert_eq!(interval().await, 50);
    eventually(Duration::from_secs(10), "a linked to b", || async {
        let (_, peers) = api.get("/api/v1/peers").await;
        peers.to_string().contains("\"up\"")
    })
    .await;

    // Runtime settings apply; settings read at start are reported, not applied.
    std::fs::write(
        &path,
        format!(
            "{original}[protocol]\nprobe_interval_ms = 400\nspf_delay_ms = 9\n\
             lsdb_entries_max = 77\n[api]\nconnections_max = 3\n"
        ),
    )
    .unwrap();
    let (status, report) = api.post("/api/v1/config/reload", "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["applied"],
        serde_json::json!(["protocol.probe_interval_ms", "protocol.spf_delay_ms"])
    );
    assert_eq!(
        report["restart_required"],
        serde_json::json!(["api", "protocol.lsdb_entries_max"])
    );
    assert_eq!(interval().await, 400);
    let (_, config) = api.get("/api/v1/config").await;
    assert_eq!(config["protocol"]["spf_delay_ms"], 9);
    assert_eq!(
        config["protocol"]["lsdb_entries_max"],
        x0tta6bl4_proto::Config::default().lsdb_entries_max
    );
    // The link stays up through the reload.
    let (_, peers) = api.get("/api/v1/peers").await;
    assert!(peers.to_string().contains("\"up\""), "{peers}");

    // Invalid, unreadable: refused with the reason, the settings in force stay.
    std::fs::write(
        &path,
        format!("{original}[protocol]\nprobe_interval_ms = 2\n"),
    )
    .unwrap();
    let (status, error) = api.post("/api/v1/config/reload", "").await;
    assert_eq!(status, 422, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("protocol.probe_interval_ms") && message.contains("use 5 to 60000"),
        "{message}"
    );
    assert!(
        message.contains("the configuration in force is kept"),
        "{message}"
    );
    std::fs::write(&path, "listen = [").unwrap();
    let (status, error) = api.post("/api/v1/config/reload", "").await;
    assert_eq!(status, 422, "{error}");
    std::fs::remove_file(&path).unwrap();
    let (status, error) = api.post("/api/v1/config/reload", "").await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("cannot read"),
        "{error}"
    );
    assert_eq!(interval().await, 400);
    let metrics = api.text("/metrics").await;
    for line in [
        "x0tta6bl4_config_reloads_total{result=\"ok\"} 1",
        "x0tta6bl4_config_reloads_total{result=\"rejected\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    a.shutdown().await.unwrap();

    // A node embedded with a configuration of no file has nothing to reload.
    let mut config = common::config(dir.path(), "a", &[]);
    config.source = None;
    let a = NodeHandle::start(config).await.unwrap();
    let (status, error) = Api::new(&a).post("/api/v1/config/reload", "").await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("not started from a configuration file"),
        "{error}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
