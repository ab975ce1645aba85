//! Real nodes on loopback: QUIC with mutual TLS, SVIDs from a CA made in a tempdir, and
//! the HTTP API as the demo uses it. No mocks.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{config, eventually, issue, restart, write_config, Api};
use serde_json::{json, Value};
use x0tta6bl4_node::{load_config, NodeHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_of_three_nodes_converges_delivers_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b", "c"]);
    let b = NodeHandle::start(config(dir.path(), "b", &[]))
        .await
        .unwrap();
    let a = NodeHandle::start(config(dir.path(), "a", &[b.quic_addr()]))
        .await
        .unwrap();
    let c = NodeHandle::start(config(dir.path(), "c", &[b.quic_addr()]))
        .await
        .unwrap();
    let (api_a, api_b, api_c) = (Api::new(&a), Api::new(&b), Api::new(&c));

    for api in [&api_a, &api_b, &api_c] {
        eventually(Duration::from_secs(10), "ready", || async {
            api.get("/health/ready").await.0 == 200
        })
        .await;
        assert_eq!(
            api.get("/health/live").await,
            (200, json!({"status": "live"}))
        );
    }
    let converged = eventually(Duration::from_secs(10), "a reaches c via b", || async {
        let (a_to_c, c_to_a) = (api_a.route("c").await, api_c.route("a").await);
        a_to_c.is_some_and(|r| r["next_hop"] == "b" && r["hops"] == 2)
            && c_to_a.is_some_and(|r| r["next_hop"] == "b")
    })
    .await;
    eprintln!("routes converged {converged:?} after all nodes were ready");

    check_status_peers_topology(&api_a).await;
    check_send_and_errors(&api_a, &api_c).await;
    check_metrics(&api_a).await;
    check_flows(&api_a, &api_c).await;
    check_attached_channels(&api_a, &api_c).await;

    let b = stop_and_restart(dir.path(), b, &api_a, &api_c).await;
    for node in [a, b, c] {
        node.shutdown().await.unwrap();
    }
}

/// Stop b: a and c lose each other (and b) at once, since b closes its links. Then
/// restart b on the same port: a and c redial it, and its new advertisements outrank the
/// old ones (their sequence numbers start at the wall-clock time).
async fn stop_and_restart(
    dir: &std::path::Path,
    b: NodeHandle,
    api_a: &Api,
    api_c: &Api,
) -> NodeHandle {
    let stopped_at = Instant::now();
    let b_quic = b.quic_addr();
    b.shutdown().await.unwrap();
    for (api, other) in [(api_a, "c"), (api_c, "a")] {
        eventually(
            Duration::from_secs(1),
            "route withdrawn after b stopped",
            || async { api.route(other).await.is_none() && api.route("b").await.is_none() },
        )
        .await;
    }
    eprintln!(
        "routes through b withdrawn {:?} after b was asked to stop",
        stopped_at.elapsed()
    );
    let (status, body) = api_a
        .post("/api/v1/send", r#"{"to": "c", "payload": "x"}"#)
        .await;
    assert!(status == 503 || status == 404, "{status} {body}");

    let restarted_at = Instant::now();
    let b = restart(dir, "b", b_quic).await;
    let healed = eventually(Duration::from_secs(5), "a reaches c again", || async {
        api_a.route("c").await.is_some_and(|r| r["next_hop"] == "b")
    })
    .await;
    eprintln!(
        "a reaches c again {healed:?} after b restarted ({:?} after the restart began)",
        restarted_at.elapsed()
    );
    b
}

async fn check_status_peers_topology(api_a: &Api) {
    let (status, body) = api_a.get("/api/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "a");
    assert_eq!(body["spiffe_id"], "spiffe://mesh.test/node/a");
    assert_eq!(body["neighbours_up"], 1);
    assert_eq!(body["routes"], 2);
    assert_eq!(body["lsdb_entries"], 3);
    for key in [
        "version",
        "uptime_s",
        "neighbours",
        "sequence",
        "messages_received",
    ] {
        assert!(body.get(key).is_some(), "status lacks {key}: {body}");
    }
    let (_, peers) = api_a.get("/api/v1/peers").await;
    let peer = &peers[0];
    assert_eq!(
        (&peer["name"], &peer["state"]),
        (&json!("b"), &json!("up")),
        "{peers}"
    );
    assert_eq!(peer["spiffe_id"], "spiffe://mesh.test/node/b");
    assert!(
        peer["rtt_ms"].is_f64() && peer["addr"].is_string() && peer["cost"].is_u64(),
        "{peer}"
    );
    let (_, topology) = api_a.get("/api/v1/topology").await;
    assert_eq!(topology["nodes"], json!(["a", "b", "c"]));
    let links: Vec<(&str, &str)> = topology["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["source"].as_str().unwrap(), l["target"].as_str().unwrap()))
        .collect();
    assert_eq!(links, [("a", "b"), ("b", "c")]);
}

async fn check_send_and_errors(api_a: &Api, api_c: &Api) {
    let (status, body) = api_a
        .post(
            "/api/v1/send",
            r#"{"to": "c", "payload": "hello over two hops"}"#,
        )
        .await;
    assert_eq!((status, &body["next_hop"]), (202, &json!("b")), "{body}");
    let id = body["id"].clone();
    eventually(Duration::from_secs(2), "message arrives at c", || async {
        let (_, messages) = api_c.get("/api/v1/messages").await;
        messages.as_array().unwrap().iter().any(|m| {
            m["from"] == "a"
                && m["id"] == id
                && m["payload"] == "hello over two hops"
                && m["hops"] == 2
        })
    })
    .await;
    let (status, body) = api_a
        .post("/api/v1/send", r#"{"to": "nobody", "payload": "x"}"#)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nobody"), "{body}");
    let (status, body) = api_a
        .post("/api/v1/send", r#"{"to": "c", "payload": "#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("EOF"), "{body}");
    let (status, body) = api_a.post("/api/v1/send", r#"{"payload": "x"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing field `to`"),
        "{body}"
    );
    let too_large = format!(r#"{{"to": "c", "payload": "{}"}}"#, "x".repeat(5000));
    assert_eq!(api_a.post("/api/v1/send", &too_large).await.0, 413);
    assert_eq!(api_a.get("/api/v1/nothing").await.0, 404);
}

/// Channel 2 carries raw bytes for a local process (the FL agent): sent with
/// `POST /api/v1/channels/2/send?to=`, read with a long poll, kept apart from channel 0
/// and from other attached channels.
async fn check_attached_channels(api_a: &Api, api_c: &Api) {
    let payload = "\u{0}\u{ff}fl frame"; // JSON text; the node takes the raw body bytes
    let (status, body) = api_a.post("/api/v1/channels/2/send?to=c", payload).await;
    assert_eq!((status, &body["next_hop"]), (202, &json!("b")), "{body}");
    let (status, body) = api_c
        .get("/api/v1/channels/2/messages?after=0&wait_ms=2000")
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    let m = &messages[0];
    assert_eq!((&m["from"], &m["hops"]), (&json!("a"), &json!(2)), "{body}");
    assert_eq!(
        m["payload_hex"],
        json!(hex_of(payload.as_bytes())),
        "{body}"
    );
    let seq = m["seq"].as_u64().unwrap();
    // Nothing newer: the long poll waits, then answers empty.
    let started = std::time::Instant::now();
    let (_, body) = api_c
        .get(&format!(
            "/api/v1/channels/2/messages?after={seq}&wait_ms=300"
        ))
        .await;
    assert!(body["messages"].as_array().unwrap().is_empty(), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Another attached channel sees nothing of channel 2; channel 0 sees nothing either.
    let (_, body) = api_c.get("/api/v1/channels/3/messages").await;
    assert!(body["messages"].as_array().unwrap().is_empty(), "{body}");
    let (_, messages) = api_c.get("/api/v1/messages").await;
    assert!(
        !messages
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["payload"].as_str().unwrap().contains("fl frame")),
        "{messages}"
    );
    // Channels 0 and 1 have their own endpoints; the destination is required.
    for path in [
        "/api/v1/channels/1/send?to=c",
        "/api/v1/channels/256/send?to=c",
        "/api/v1/channels/2/send",
    ] {
        let (status, body) = api_a.post(path, "x").await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, body) = api_c.get("/api/v1/channels/0/messages").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("/api/v1/send"),
        "{body}"
    );
    let (status, _) = api_a
        .post("/api/v1/channels/2/send?to=c", &"x".repeat(5000))
        .await;
    assert_eq!(status, 413);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn check_metrics(api_a: &Api) {
    let text = api_a.text("/metrics").await;
    for name in [
        "x0tta6bl4_build_info{version=",
        "x0tta6bl4_uptime_seconds ",
        "x0tta6bl4_neighbours{state=\"up\"} 1",
        "x0tta6bl4_link_rtt_seconds{neighbour=\"b\"}",
        "x0tta6bl4_routes 2",
        "x0tta6bl4_lsa_originated_total",
        "x0tta6bl4_route_computation_seconds_count",
        "x0tta6bl4_healing_decisions_total{kind=\"withdraw\"}",
        "x0tta6bl4_dropped_total{reason=\"malformed\"}",
        "x0tta6bl4_handshakes_total{result=\"ok\"}",
        "x0tta6bl4_svid_expiry_timestamp_seconds",
        "x0tta6bl4_messages_originated_total 1",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("x0tta6bl4_"), "unprefixed metric: {line}");
    }
}

async fn check_flows(api_a: &Api, api_c: &Api) {
    let (status, body) = api_a
        .post("/api/v1/flows", r#"{"targets": ["c"], "interval_ms": 10}"#)
        .await;
    assert_eq!((status, body), (200, json!({"flows": 1})));
    eventually(
        Duration::from_secs(2),
        "probe flow arrives at c",
        || async {
            let (_, flows) = api_c.get("/api/v1/flows").await;
            flows["received"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["source"] == "a" && r["arrivals_us"].as_array().unwrap().len() >= 10)
        },
    )
    .await;
    let (_, flows) = api_c.get("/api/v1/flows").await;
    let arrivals: Vec<u64> = flows["received"][0]["arrivals_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
    let since = arrivals[arrivals.len() / 2];
    let (_, later) = api_c.get(&format!("/api/v1/flows?since_us={since}")).await;
    assert!(later["received"][0]["arrivals_us"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.as_u64().unwrap() > since));
    assert_eq!(api_c.get("/api/v1/flows?since_us=soon").await.0, 400);
    let (_, sender) = api_a.get("/api/v1/flows").await;
    assert_eq!(sender["interval_ms"], 10);
    assert!(sender["sent"].as_u64().unwrap() >= 10, "{sender}");
    assert_eq!(
        api_a
            .post("/api/v1/flows", r#"{"targets": ["c"], "interval_ms": 0}"#)
            .await
            .0,
        400
    );
    let response = api_a
        .client
        .delete(format!("{}/api/v1/flows", api_a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"flows": 0}));
    // Stopped, the flows keep their counts (until the next start) and send no more.
    let (_, stopped) = api_a.get("/api/v1/flows").await;
    assert_eq!(stopped["interval_ms"], 0, "{stopped}");
    let kept = stopped["sent"].as_u64().unwrap();
    assert!(kept >= sender["sent"].as_u64().unwrap(), "{stopped}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(api_a.get("/api/v1/flows").await.1["sent"], kept);
}

#[tokio::test]
async fn taken_port_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a"]);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut config = config(dir.path(), "a", &[]);
    config.listen = taken.local_addr().unwrap();
    let error = NodeHandle::start(config)
        .await
        .err()
        .expect("binding a taken port must fail");
    let expected = format!(
        "cannot bind QUIC endpoint on {}: address already in use (another node? change `listen`)",
        taken.local_addr().unwrap()
    );
    assert_eq!(format!("{error:#}"), expected);
}

#[test]
fn unknown_key_error_names_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let text = "listen = \"127.0.0.1:7001\"\napi_listen = \"127.0.0.1:8001\"\n[identity]\ndir = \"svid\"\n[protocol.healing]\ndamp_msec = 5\n";
    std::fs::write(&path, text).unwrap();
    let error = load_config(&path).unwrap_err().to_string();
    let expected = format!(
        "{}:6:1: unknown key `protocol.healing.damp_msec`, expected one of",
        path.display()
    );
    assert!(error.starts_with(&expected), "{error}");
}

#[test]
fn example_config_loads_with_every_key() {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "examples",
        "node.toml",
    ]
    .iter()
    .collect();
    let config = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.protocol,
        x0tta6bl4_proto::Config::default(),
        "the example shows the defaults"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let shown = toml::to_string(&config.protocol).unwrap();
    for line in shown.lines().filter(|l| l.contains('=')) {
        let key = line.split('=').next().unwrap().trim();
        assert!(
            text.contains(&format!("\n{key} = ")),
            "examples/node.toml does not show protocol key `{key}`"
        );
    }
}

/// Two nodes that list each other as static peers dial at the same time; both keep the
/// same one of the two connections, and the link stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_keep_one_stable_link() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let free = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (quic_a, quic_b) = (free(), free());
    let any = "127.0.0.1:0".parse().unwrap();
    let a = load_config(&write_config(dir.path(), "a", quic_a, any, &[quic_b])).unwrap();
    let b = load_config(&write_config(dir.path(), "b", quic_b, any, &[quic_a])).unwrap();
    let (a, b) = (
        NodeHandle::start(a).await.unwrap(),
        NodeHandle::start(b).await.unwrap(),
    );
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for api in [&api_a, &api_b] {
        eventually(Duration::from_secs(5), "ready", || async {
            api.get("/health/ready").await.0 == 200
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for api in [&api_a, &api_b] {
        let (_, peers) = api.get("/api/v1/peers").await;
        assert_eq!(peers[0]["state"], "up", "{peers}");
        let metrics = api.text("/metrics").await;
        assert!(
            metrics.contains("x0tta6bl4_neighbour_down_total 0\n"),
            "the link flapped:\n{metrics}"
        );
    }
    let (status, _) = api_a
        .post("/api/v1/send", r#"{"to": "b", "payload": "hi"}"#)
        .await;
    assert_eq!(status, 202);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
