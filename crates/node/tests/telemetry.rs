//! Link telemetry on real nodes (QUIC with mutual TLS on loopback): each link gets a
//! feature vector from the probe and QUIC sources, and `/metrics` exports it. The eBPF
//! source is tested in tests/ebpf.rs.

mod common;

use std::time::Duration;

use common::{config, eventually, issue, Api};
use x0tta6bl4_node::telemetry::FEATURE_NAMES;
use x0tta6bl4_node::NodeHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_link_gets_probe_and_quic_features_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let b = NodeHandle::start(config(dir.path(), "b", &[]))
        .await
        .unwrap();
    let a = NodeHandle::start(config(dir.path(), "a", &[b.quic_addr()]))
        .await
        .unwrap();
    // Two samples, a second apart, give the window's jitter.
    eventually(Duration::from_secs(10), "a's features of b", || async {
        let features = a.link_features();
        features.first().is_some_and(|f| {
            f.neighbour.as_str() == "b" && f.samples >= 2 && f.last.probe_rtt_seconds.is_some()
        })
    })
    .await;
    let f = &a.link_features()[0];
    assert_eq!(f.values.len(), FEATURE_NAMES.len());
    let rtt = f.get("probe_rtt_seconds").unwrap();
    assert!(rtt > 0.0 && rtt < 1.0, "{f:?}");
    assert!(f.get("probe_jitter_seconds").unwrap() >= 0.0, "{f:?}");
    let cwnd = f.get("quic_cwnd_bytes").unwrap();
    assert!(cwnd >= 1200.0, "quinn's congestion window: {f:?}");
    assert!(f.last.quic_sent_packets.unwrap() > 0, "{f:?}");
    assert!(f.get("quic_loss_ratio").unwrap() >= 0.0, "{f:?}");

    let metrics = Api::new(&a).text("/metrics").await;
    for series in [
        "x0tta6bl4_link_quic_cwnd_bytes{neighbour=\"b\"}",
        "x0tta6bl4_link_quic_lost_packets_total{neighbour=\"b\"}",
        "x0tta6bl4_link_jitter_seconds{neighbour=\"b\"}",
        "x0tta6bl4_telemetry_ebpf_loaded ",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    if !cfg!(feature = "ebpf") {
        assert!(metrics.contains("x0tta6bl4_telemetry_ebpf_loaded 0"));
    }
    // Built with the feature and run as root (best in a namespace of its own:
    // `ip netns exec NS cargo test -p x0tta6bl4-node --features ebpf --test telemetry`,
    // else the nodes watch every interface of the host), the kernel counts the link too.
    #[cfg(feature = "ebpf")]
    if x0tta6bl4_node::ebpf::is_root() {
        eventually(
            Duration::from_secs(5),
            "kernel counters of the link",
            || async {
                let metrics = Api::new(&a).text("/metrics").await;
                metrics.contains("x0tta6bl4_telemetry_ebpf_loaded 1")
                    && metrics.contains("x0tta6bl4_link_kernel_packets_total{neighbour=\"b\"}")
                    && metrics.contains("x0tta6bl4_kernel_interface_packets_total{interface=\"lo\"")
            },
        )
        .await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
