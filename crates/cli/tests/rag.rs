//! `x0tta6bl4 rag serve`: the real binary, SVIDs issued by the project's CA, the real
//! embedding model and the project's own MTTR runbook.

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, ca_init, ca_issue, code, path, run, stderr};
use serde_json::{json, Value};
use x0tta6bl4_rag::embed::{default_model_dir, FETCH_HINT, MODEL_FILES};

/// Whether the embedding model is there; under `CI=true` its absence fails the test.
fn model_present() -> bool {
    let dir = default_model_dir();
    if MODEL_FILES.iter().all(|f| dir.join(f).is_file()) {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "CI=true and the embedding model is missing in {}: {FETCH_HINT}",
        dir.display()
    );
    eprintln!(
        "SKIPPED: the embedding model is missing in {}; {FETCH_HINT}",
        dir.display()
    );
    false
}

fn runbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbook-mttr.md")
}

const POLICY: &str = r#"
default = "deny"

[[rule]]
name = "read"
effect = "allow"
actions = ["api"]
from = "spiffe://example.org/node/*"
endpoints = ["POST /api/v1/rag/query", "GET /api/v1/rag/advise", "GET /metrics"]

[[rule]]
name = "ops-ingest"
effect = "allow"
actions = ["api"]
from = "spiffe://example.org/node/ops"
endpoints = ["POST /api/v1/rag/ingest"]
"#;

/// A running `rag serve` and its address; killed on drop.
struct Guardian {
    child: Child,
    addr: SocketAddr,
    /// Keeps the reader of the child's stderr draining it.
    _log: mpsc::Receiver<String>,
}

impl Drop for Guardian {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, store: &Path) -> Guardian {
    let mut child = bin()
        .args([
            "rag",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--index",
            path(store),
        ])
        .args(["--identity", path(&dir.join("guardian"))])
        .args(["--policy", path(&dir.join("policy.toml"))])
        .args(["--docs", path(&runbook())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rag serve did not start: {seen:?}");
        };
        if let Some(rest) = line.split("listening on https://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            return Guardian {
                child,
                addr,
                _log: rx,
            };
        }
        seen.push(line);
    }
}

/// An HTTPS client presenting the SVID in `svid`.
fn client(svid: &Path) -> reqwest::Client {
    x0tta6bl4_identity::install_default_crypto_provider();
    let identity = x0tta6bl4_identity::NodeIdentity::load(svid).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(identity.api_client_config().unwrap())
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .unwrap()
}

async fn call(
    c: &reqwest::Client,
    addr: SocketAddr,
    target: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("https://{addr}{target}");
    let request = match body {
        Some(body) => c.post(url).body(body.to_string()),
        None => c.get(url),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn metrics(c: &reqwest::Client, addr: SocketAddr) -> String {
    let (status, text) = call(c, addr, "/metrics", None).await;
    assert_eq!(status, 200);
    text.as_str().unwrap().to_owned()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn guardian_serves_svid_holders_by_policy_and_refuses_everyone_else() {
    if !model_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca_init(&d.join("ca"), "example.org");
    for name in ["guardian", "reader", "ops"] {
        ca_issue(&d.join("ca"), name, &d.join(name));
    }
    ca_init(&d.join("other-ca"), "other.org");
    ca_issue(&d.join("other-ca"), "reader", &d.join("intruder"));
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    let store = d.join("store");
    let guardian = start(d, &store);
    let addr = guardian.addr;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (reader, ops) = (client(&d.join("reader")), client(&d.join("ops")));
        served(&reader, &ops, addr).await;
        refused(&reader, &d.join("intruder"), addr).await;
    });
    drop(guardian);
    corrupt_store_is_refused(d, &store);
}

/// What SVID holders get, by policy.
async fn served(reader: &reqwest::Client, ops: &reqwest::Client, addr: SocketAddr) {
    let question = json!({"text": "a neighbour stopped answering probes", "k": 3});
    let (status, body) = call(reader, addr, "/api/v1/rag/query", Some(question)).await;
    assert_eq!(status, 200, "{body}");
    let answers = body["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers[0]["source"]
        .as_str()
        .unwrap()
        .ends_with("runbook-mttr.md"));
    assert!(answers[0]["score"].as_f64().unwrap() > answers[2]["score"].as_f64().unwrap());
    assert!(!answers[0]["headings"].as_array().unwrap().is_empty());

    let (status, body) = call(
        reader,
        addr,
        "/api/v1/rag/advise?event=X0tta6bl4NeighbourDown",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched"], "heading");
    let first = &body["passages"][0];
    assert_eq!(
        first["headings"].as_array().unwrap().last().unwrap(),
        "X0tta6bl4NeighbourDown"
    );
    let (status, body) = call(
        reader,
        addr,
        "/api/v1/rag/advise?event=link_loss_high",
        None,
    )
    .await;
    assert_eq!(
        (status, body["matched"].as_str()),
        (200, Some("heading")),
        "{body}"
    );
    let (status, body) = call(
        reader,
        addr,
        "/api/v1/rag/advise?event=cpu-stress&k=2",
        None,
    )
    .await;
    assert_eq!(
        (status, body["matched"].as_str()),
        (200, Some("similarity")),
        "{body}"
    );
    assert_eq!(body["passages"].as_array().unwrap().len(), 2);
    let (status, body) = call(reader, addr, "/api/v1/rag/advise?event=a%20b", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("event names are"),
        "{body}"
    );

    let document = json!({"documents": [{"source": "runbooks/disk.md",
        "text": "# Disk full\n\nWhen the disk of a node is full, delete old index snapshots under /var/lib/x0tta6bl4 and restart the node."}]});
    let (status, body) = call(reader, addr, "/api/v1/rag/ingest", Some(document.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("denies POST /api/v1/rag/ingest"),
        "{body}"
    );
    let (status, body) = call(ops, addr, "/api/v1/rag/ingest", Some(document)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], 1);
    let question = json!({"text": "the disk is full", "k": 1});
    let (_, body) = call(reader, addr, "/api/v1/rag/query", Some(question)).await;
    assert_eq!(body["answers"][0]["source"], "runbooks/disk.md", "{body}");

    let long = json!({"text": "x".repeat(5000), "k": 1});
    let (status, body) = call(reader, addr, "/api/v1/rag/query", Some(long)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("longer than 4096 bytes"),
        "{body}"
    );
    let huge = json!({"text": "x", "k": 1, "padding": "y".repeat(20_000)});
    let (status, body) = call(reader, addr, "/api/v1/rag/query", Some(huge)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than 16384 bytes"),
        "{body}"
    );
    let (status, body) = call(reader, addr, "/api/v1/rag/query", Some(json!({"k": 1}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing field `text`"),
        "{body}"
    );
}

/// Callers without an SVID of the trust domain never get past the TLS handshake.
async fn refused(reader: &reqwest::Client, intruder: &Path, addr: SocketAddr) {
    let before = metrics(reader, addr).await;
    let tls_refused = r#"x0tta6bl4_rag_connections_refused_total{reason="tls_handshake"}"#;
    let refused_before = metric(&before, tls_refused);
    // An SVID of another trust domain.
    let foreign = client(intruder);
    let error = foreign
        .get(format!("https://{addr}/metrics"))
        .send()
        .await
        .expect_err("a foreign SVID must be refused");
    assert!(error.is_connect() || error.is_request(), "{error:?}");
    // No TLS at all.
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("x0tta6bl4_rag"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = metrics(reader, addr).await;
    assert!(
        metric(&after, tls_refused) >= refused_before + 2.0,
        "{after}"
    );
    let denied = r#"x0tta6bl4_rag_policy_decisions_total{endpoint="ingest",decision="deny"}"#;
    assert_eq!(metric(&after, denied), 1.0);
    let ok = r#"x0tta6bl4_rag_requests_total{endpoint="query",status="200"}"#;
    assert_eq!(metric(&after, ok), 2.0);
    assert!(metric(&after, "x0tta6bl4_rag_chunks") > 10.0);
}

/// A damaged index is refused with the file named, and left as it was.
fn corrupt_store_is_refused(d: &Path, store: &Path) {
    let index = store.join("index.bin");
    let mut bytes = std::fs::read(&index).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&index, &bytes).unwrap();
    let output = run(&[
        "rag",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--index",
        path(store),
        "--identity",
        path(&d.join("guardian")),
    ]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("checksum mismatch") && err.contains("index.bin"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&index).unwrap(),
        bytes,
        "the damaged file was rewritten"
    );
}

#[test]
fn serve_without_an_svid_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&[
        "rag",
        "serve",
        "--index",
        path(dir.path()),
        "--identity",
        path(&dir.path().join("none")),
    ]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("cannot load the service's SVID") && err.contains("ca issue"),
        "{err}"
    );
}

/// Whether `rag bench --edge` could make its cgroup; under `CI=true` a host where it
/// cannot fails the test.
fn edge_cgroups_available(output: &std::process::Output) -> bool {
    let text = stderr(output);
    if code(output) == 2 && text.contains("cgroup") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: rag bench --edge cannot make its cgroup here: {text}"
        );
        eprintln!("SKIPPED: rag bench --edge cannot make its cgroup here: {text}");
        return false;
    }
    true
}

/// `rag bench --edge` runs the benchmark pinned to one CPU in a memory-capped cgroup,
/// reports the budget and the targets, and says so when the limit kills it.
#[test]
fn edge_bench_runs_in_a_capped_cgroup_and_reports_oom_kills() {
    let output = run(&[
        "rag",
        "bench",
        "--edge",
        "--edge-memory",
        "256M",
        "--dataset",
        "synthetic:2000",
        "--no-model",
        "--index",
        "int8",
        "--json",
    ]);
    if !edge_cgroups_available(&output) {
        return;
    }
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let line = String::from_utf8_lossy(&output.stdout).into_owned();
    let report: Value = serde_json::from_str(line.trim()).expect("one JSON report");
    assert_eq!(report["vectors"], 2000, "{report}");
    assert_eq!(report["cpus"], 1, "pinned to one CPU: {report}");
    let edge = &report["edge"];
    assert_eq!(edge["memory_max_bytes"], 256u64 << 20, "{report}");
    assert_eq!(edge["oom_kills"], 0, "{report}");
    let targets = report["targets"].as_array().expect("targets");
    assert!(
        targets
            .iter()
            .any(|t| t["target"].as_str().unwrap().starts_with("int8 recall@10")),
        "{report}"
    );
    // 100,000 vectors of 384 floats are 154 MB: a 64 MiB limit kills the child.
    let output = run(&[
        "rag",
        "bench",
        "--edge",
        "--edge-memory",
        "64M",
        "--dataset",
        "synthetic-100k",
        "--no-model",
        "--index",
        "flat",
    ]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("killed by the memory limit"),
        "{}",
        stderr(&output)
    );
    // A quota above the one pinned core is a usage error.
    let output = run(&[
        "rag",
        "bench",
        "--edge",
        "--edge-cpu",
        "2",
        "--dataset",
        "synthetic:100",
        "--no-model",
        "--index",
        "flat",
    ]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--edge-cpu"),
        "{}",
        stderr(&output)
    );
}
