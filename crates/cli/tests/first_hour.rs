//! What a new user meets in the first hour: errors that say what is wrong and how to fix
//! it, and numbers that explain themselves. Real node processes, the real binary.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ca_init, ca_issue, code, path, run, stderr, stdout, Mesh};

/// A node whose API requires mutual TLS (`api_mtls = true`), killed when dropped.
struct MtlsNode {
    dir: tempfile::TempDir,
    api: std::net::SocketAddr,
    child: std::process::Child,
}

impl MtlsNode {
    fn start() -> MtlsNode {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        ca_init(&ca, "example.org");
        for name in ["n", "ops"] {
            ca_issue(&ca, name, &dir.path().join(name));
        }
        let (quic, api) = common::free_ports(1)[0];
        let config = dir.path().join("n.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{quic}\"\napi_listen = \"{api}\"\nstandalone = true\n[identity]\n\
                 dir = \"n\"\napi_mtls = true\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("n.log")).unwrap();
        let child = common::bin()
            .args(["node", "--config", path(&config)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = MtlsNode { dir, api, child };
        // Ready once the operator's SVID gets an answer.
        let ops = node.dir.path().join("ops");
        let url = format!("https://{api}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = run(&["status", "--api", &url, "--svid", path(&ops), "--json"]);
            if code(&output) == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not answer: {}\n{}",
                stderr(&output),
                std::fs::read_to_string(node.dir.path().join("n.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }
}

impl Drop for MtlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `status`/`send` against an mTLS API without `--svid`, or over plain HTTP: the error
/// names the cause and the flag that fixes it, not "check that the node runs".
#[test]
fn errors_against_an_mtls_api_name_the_fix() {
    let node = MtlsNode::start();
    let https = format!("https://{}", node.api);
    let http = format!("http://{}", node.api);

    for args in [
        vec!["status", "--api", &https],
        vec!["send", "--api", &https, "--to", "n", "hello"],
    ] {
        let output = run(&args);
        let text = stderr(&output);
        assert_eq!(code(&output), 1, "{args:?}: {text}");
        assert!(
            text.starts_with("x0tta6bl4: ")
                && text.contains("requires mutual TLS with a client SVID")
                && text.contains("pass --svid DIR")
                && text.contains("bundle.pem"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("check that the node runs"), "{text}");
    }

    let output = run(&["status", "--api", &http]);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "{text}");
    assert!(
        text.contains("the API speaks https")
            && text.contains(&format!("--api {https} with --svid DIR")),
        "{text}"
    );

    // Nothing listening: that, and only then, is the advice to check the node.
    let (_, closed) = common::free_ports(1)[0];
    let output = run(&["status", "--api", &format!("http://{closed}")]);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "{text}");
    assert!(
        text.contains("nothing listens there: check that the node runs"),
        "{text}"
    );

    // The fix works: with the operator's SVID the same URL answers.
    let ops = node.dir.path().join("ops");
    let output = run(&["status", "--api", &https, "--svid", path(&ops)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
}

/// A value of the wrong type in the node's config names the file, line, column, key and
/// how to write the value.
#[test]
fn a_config_value_of_the_wrong_type_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:7001\"\napi_listen = 8001\n[identity]\ndir = \"svid\"\n",
    )
    .unwrap();
    let output = run(&["node", "--config", path(&bad), "--check-config"]);
    let text = stderr(&output);
    assert_eq!(code(&output), 2, "{text}");
    assert!(
        text.contains("bad.toml:2:14: `api_listen`: invalid type: integer `8001`")
            && text.contains("api_listen = \"127.0.0.1:8001\""),
        "{text}"
    );
}

/// A twin run whose fault breaks no flow that can heal (any link of a line) measured
/// nothing: it says so and exits 1 instead of printing an MTTR of 0.
#[test]
fn a_twin_run_that_measures_no_flow_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("line.json");
    std::fs::write(
        &file,
        r#"{"nodes": ["a", "b", "c"], "links": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}"#,
    )
    .unwrap();
    let spec = format!("file:{}", file.display());
    let base = [
        "twin",
        "run",
        "--topology",
        &spec,
        "--scenario",
        "link-failure",
    ];
    let output = run(&base);
    assert_eq!(code(&output), 1, "{}{}", stdout(&output), stderr(&output));
    assert!(
        stdout(&output).contains("MTTR                 not measured"),
        "{}",
        stdout(&output)
    );
    assert!(
        !stdout(&output).contains("mean 0.0 ms"),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("no flow was measured")
            && stderr(&output).contains("alternative paths"),
        "{}",
        stderr(&output)
    );
    let output = run(&[&base[..], &["--json"]].concat());
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["mttr_ms"]["samples"], 0);

    // The same fault on a ring is measured and succeeds.
    let output = run(&[
        "twin",
        "run",
        "--topology",
        "ring",
        "--nodes",
        "6",
        "--scenario",
        "link-failure",
        "--iterations",
        "2",
    ]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
}

/// `status --wait-routes N` waits for a node just started; the tables say which cost is
/// which.
#[test]
fn status_waits_for_routes_and_explains_both_costs() {
    let mesh = Mesh::start(&["a", "b", "c"], &[&[], &[0], &[0, 1]]);
    let output = run(&["status", "--api", &mesh.api(0), "--wait-routes", "2"]);
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "{}\n{}", stderr(&output), mesh.logs());
    assert!(
        text.contains("Peers (COST: the link's cost measured now)")
            && text.contains("Routes (COST: sum of the advertised link costs along the path"),
        "{text}"
    );
    let routes = text.split("\nRoutes").nth(1).unwrap_or_default();
    for name in ["b", "c"] {
        assert!(
            routes.lines().any(|l| l.starts_with(name)),
            "no route to {name}: {text}"
        );
    }
    let output = run(&["status", "--help"]);
    assert!(
        stdout(&output).contains("cost_change_percent"),
        "{}",
        stdout(&output)
    );
}

/// `twin tune --help` says how long the sweep takes, that it shows progress, and why
/// the median MTTR stops growing with the miss threshold.
#[test]
fn twin_tune_help_explains_duration_and_flat_medians() {
    let output = run(&["twin", "tune", "--help"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // Help text is wrapped to the terminal: compare with single spaces.
    let text = stdout(&output)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "takes minutes",
        "estimate of the time left",
        "Why MTTR p50 can be the same",
        "healing.degraded_loss",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

/// Off a terminal, `twin tune` says up front what it will run and reports each
/// combination with the time left on stderr.
#[test]
fn twin_tune_reports_progress_off_a_terminal() {
    let output = run(&[
        "twin",
        "tune",
        "--topology",
        "ring",
        "--nodes",
        "6",
        "--intervals-ms",
        "50,100",
        "--misses",
        "3",
        "--soak-s",
        "5",
        "--iterations",
        "1",
    ]);
    let text = stderr(&output);
    assert_eq!(code(&output), 0, "{text}");
    assert!(
        text.contains("twin tune: 2 timer combinations (2 probe intervals x 1 miss thresholds x 1 suspicion paces)")
            && text.contains("twin tune: 1/2 combinations in ")
            && text.contains("twin tune: 2/2 combinations in ")
            && text.contains(" s left"),
        "{text}"
    );
}
