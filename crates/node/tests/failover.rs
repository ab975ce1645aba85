//! Data-plane MTTR with a crashed node: a–b–d is the shortest path from a to d and
//! a–c–e–d the detour, where b and c run as child processes (this test binary
//! re-executed) so one can be killed with SIGKILL, which closes nothing: the survivors
//! must notice by probe timeout. The detour is a hop longer so that the flow's path
//! before the kill is b, whatever the round trips of two equal paths would do under a
//! loaded host (a diamond's two equal paths swap on noise, and a kill of the node the
//! flow had just left measures nothing).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{config_with, eventually, issue, write_config_with, Api};
use x0tta6bl4_node::{load_config, NodeHandle};
use x0tta6bl4_proto::measure::flow_outage_us;

/// Set in a child process: the configuration file of the node it runs.
const CHILD_CONFIG_ENV: &str = "X0TTA6BL4_TEST_CHILD_CONFIG";

/// Not a test by itself: the body of a child process the failover test starts (a node
/// that can be killed). Returns at once when run normally.
#[test]
fn child_node_process() {
    let Ok(path) = std::env::var(CHILD_CONFIG_ENV) else {
        return;
    };
    // The parent holds our stdin; when it dies, so do we (no orphans).
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let config = load_config(Path::new(&path)).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(x0tta6bl4_node::run(config, std::future::pending()))
        .unwrap();
}

/// ETX link costs for every node of the test (see the module's documentation).
const ETX: &str = "[protocol]\nlink_cost = \"etx\"\n";

/// A node in a child process, killed (SIGKILL) on drop.
struct Child {
    process: std::process::Child,
    quic: SocketAddr,
    api: SocketAddr,
}

impl Child {
    fn start(dir: &Path, name: &str) -> Child {
        let quic = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let api = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let path = write_config_with(dir, name, quic, api, &[], ETX);
        let process = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_node_process",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_CONFIG_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Child { process, quic, api }
    }

    fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_heals_around_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b", "c", "d", "e"]);
    let mut b = Child::start(dir.path(), "b");
    let c = Child::start(dir.path(), "c");
    let a = NodeHandle::start(config_with(dir.path(), "a", &[b.quic, c.quic], ETX))
        .await
        .unwrap();
    let e = NodeHandle::start(config_with(dir.path(), "e", &[c.quic], ETX))
        .await
        .unwrap();
    let d = NodeHandle::start(config_with(dir.path(), "d", &[b.quic, e.quic_addr()], ETX))
        .await
        .unwrap();
    let (api_a, api_d) = (Api::new(&a), Api::new(&d));
    for child in [&b, &c] {
        wait_ready(&Api::at(child.api)).await;
    }
    eventually(
        Duration::from_secs(10),
        "a reaches d in two hops through b",
        || async {
            api_a
                .route("d")
                .await
                .is_some_and(|r| r["hops"] == 2 && r["next_hop"] == "b")
        },
    )
    .await;

    let (status, _) = api_a
        .post("/api/v1/flows", r#"{"targets": ["d"], "interval_ms": 10}"#)
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let route = api_a.route("d").await.unwrap();
    assert_eq!(
        route["next_hop"], "b",
        "the flow left the shortest path: {route}"
    );
    let fault_at_us = unix_micros();
    let killed_at = Instant::now();
    b.kill();

    eventually(Duration::from_secs(3), "a reroutes through c", || async {
        api_a
            .route("d")
            .await
            .is_some_and(|r| r["next_hop"] == "c" && r["hops"] == 3)
    })
    .await;
    let rerouted = killed_at.elapsed();
    let outage_us = outage_at(&api_d, fault_at_us).await;
    let outage_ms = outage_us / 1000;
    eprintln!("killed b: a rerouted via c after {rerouted:?}; data-plane outage {outage_ms} ms");
    assert!(
        outage_us < 1_000_000,
        "outage {outage_us} µs: expected well under 1 s with 50 ms probes"
    );
    // The receiver's histogram saw the same outage (its gap between arrivals).
    let metrics = api_d.text("/metrics").await;
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} ")));
        let line = line.unwrap_or_else(|| panic!("{name} missing from /metrics"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let count = value("x0tta6bl4_flow_outage_seconds_count");
    let sum = value("x0tta6bl4_flow_outage_seconds_sum");
    assert!(count >= 1.0, "no outage observed: {count}");
    assert!(
        sum >= outage_us as f64 / 1e6 - 1e-6,
        "outage sum {sum} s below the measured outage {outage_us} µs"
    );
    for node in [a, d, e] {
        node.shutdown().await.unwrap();
    }
}

async fn wait_ready(api: &Api) {
    eventually(Duration::from_secs(10), "child node ready", || async {
        let response = api
            .client
            .get(format!("{}/health/ready", api.base))
            .send()
            .await;
        response.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// The outage of the (only) flow arriving at `api`'s node around `fault_at_us`, once
/// probes arrive again.
async fn outage_at(api: &Api, fault_at_us: u64) -> u64 {
    eventually(
        Duration::from_secs(3),
        "probes arrive again after the fault",
        || async {
            let (_, flows) = api
                .get(&format!("/api/v1/flows?since_us={fault_at_us}"))
                .await;
            flows["received"][0]["arrivals_us"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;
    let (_, flows) = api.get("/api/v1/flows").await;
    let arrivals = flows["received"][0]["arrivals_us"].as_array().unwrap();
    let arrivals: Vec<u64> = arrivals.iter().map(|t| t.as_u64().unwrap()).collect();
    flow_outage_us(&arrivals, fault_at_us).expect("the flow had a baseline and recovered")
}
