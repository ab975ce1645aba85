//! The command line against real node processes: `status`, `send` and `demo`.

mod common;

use std::time::{Duration, Instant};

use common::{code, http, run, stderr, stdout, Mesh};

/// How long a three-node line may take to converge (debug builds, a busy machine).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn status_and_send_on_a_three_node_line() {
    // n1 - n2 - n3: n1 and n3 dial n2, so n1 reaches n3 only through n2.
    let mesh = Mesh::start(&["n1", "n2", "n3"], &[&[1], &[], &[1]]);
    mesh.wait_converged(CONVERGE_TIMEOUT);

    let output = run(&["status", "--api", &mesh.api(0)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("node n1 (spiffe://test.x0tta6bl4.mesh/node/n1)"),
        "{text}"
    );
    assert!(text.contains("DESTINATION  NEXT_HOP"), "{text}");
    let route_to_n3 = text
        .lines()
        .find(|l| l.starts_with("n3 "))
        .expect("a route row for n3");
    assert!(
        route_to_n3.split_whitespace().nth(1) == Some("n2"),
        "{text}"
    );

    let output = run(&["status", "--api", &mesh.api(1), "--json"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("one JSON object");
    assert_eq!(json["status"]["name"], "n2");
    assert_eq!(json["peers"].as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json["routes"].as_array().map(Vec::len), Some(2), "{json}");

    let output = run(&[
        "send",
        "--api",
        &mesh.api(0),
        "--to",
        "n3",
        "hello through n2",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).contains("via n2"), "{}", stdout(&output));
    wait_for_message(&mesh, 2, "hello through n2");

    let output = run(&["send", "--api", &mesh.api(0), "--to", "nobody", "lost"]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!(
            "x0tta6bl4: cannot send to nobody ({})",
            mesh.api(0)
        )),
        "{text}"
    );
    assert!(text.contains("HTTP 404"), "{text}");
}

fn wait_for_message(mesh: &Mesh, index: usize, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http(mesh.nodes[index].1, "GET", "/api/v1/messages", None);
        assert_eq!(status, 200, "{body}");
        let messages: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let found = messages
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["payload"] == payload && m["from"] == "n1");
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{payload:?} never arrived: {body}\n{}",
            mesh.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_heals_six_nodes_and_prints_the_json_contract() {
    let started = Instant::now();
    let output = run(&[
        "demo", "--nodes", "6", "--kill", "1", "--seed", "6", "--json",
    ]);
    let text = stdout(&output);
    assert_eq!(
        code(&output),
        0,
        "stdout: {text}\nstderr: {}",
        stderr(&output)
    );
    assert_eq!(text.lines().count(), 1, "exactly one JSON line: {text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    for key in [
        "nodes",
        "killed",
        "converged_ms",
        "healed",
        "mttr_ms",
        "unreachable_pairs_after_heal",
    ] {
        assert!(json.get(key).is_some(), "missing {key}: {json}");
    }
    for key in ["mean", "p50", "p95", "p99", "max", "samples"] {
        assert!(
            json["mttr_ms"][key].is_number(),
            "missing mttr_ms.{key}: {json}"
        );
    }
    assert_eq!(json["nodes"], 6);
    assert_eq!(json["healed"], true, "{json}");
    assert_eq!(json["unreachable_pairs_after_heal"], 0, "{json}");
    assert_eq!(json["killed"].as_array().map(Vec::len), Some(1), "{json}");
    assert!(json["converged_ms"].as_u64().is_some(), "{json}");
    // The MTTR target (p95 <= 250 ms) is measured by the release-build demo (README),
    // not asserted here: debug builds on a loaded machine are slower.
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
