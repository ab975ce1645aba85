//! `x0tta6bl4 twin`: the real binary, real topologies, and a real Prometheus server
//! scraping a real mesh for `--topology prometheus:URL`.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{code, http, run, stderr, stdout, Mesh};
use serde_json::Value;

fn json(output: &std::process::Output) -> Value {
    assert_eq!(code(output), 0, "stderr: {}", stderr(output));
    serde_json::from_str(&stdout(output)).expect("one JSON object on stdout")
}

#[test]
fn run_reports_mttr_and_is_deterministic_per_seed() {
    let args = [
        "twin",
        "run",
        "--topology",
        "grid",
        "--nodes",
        "16",
        "--scenario",
        "node-failure",
        "--iterations",
        "4",
        "--seed",
        "9",
        "--json",
    ];
    let first = json(&run(&args));
    for key in [
        "nodes",
        "scenario",
        "iterations",
        "seed",
        "converged_ms",
        "unreachable_pairs_after_heal",
        "sim_seconds",
        "wall_seconds",
    ] {
        assert!(first.get(key).is_some(), "missing {key}: {first}");
    }
    for key in ["mean", "p50", "p95", "p99", "max", "samples"] {
        assert!(first["mttr_ms"].get(key).is_some(), "missing mttr_ms.{key}");
    }
    assert_eq!(first["nodes"], 16);
    assert_eq!(first["unreachable_pairs_after_heal"], 0);
    assert!(first["mttr_ms"]["samples"].as_u64().unwrap() > 0);
    // Detection needs at least probe_interval * (probe_misses - 1) of silence.
    assert!(first["mttr_ms"]["p50"].as_f64().unwrap() >= 100.0);
    let mut second = json(&run(&args));
    let mut first = first;
    for volatile in ["wall_seconds", "sim_seconds_per_wall_second"] {
        first.as_object_mut().unwrap().remove(volatile);
        second.as_object_mut().unwrap().remove(volatile);
    }
    assert_eq!(first, second, "the same seed gives the same results");
}

#[test]
fn every_scenario_runs_and_heals() {
    for scenario in [
        "link-failure",
        "partition:hold_ms=500",
        "cascade:p=0.5",
        "flap:period_ms=200,cycles=2",
        "degrade:links=2,loss=0.5",
        "asym-partition:hold_ms=500",
        "bandwidth:links=2,mbps=0.1",
        "slow-node:delay_ms=10,jitter_ms=5,hold_ms=500",
        "byzantine:hold_ms=300",
    ] {
        let out = run(&[
            "twin",
            "run",
            "--topology",
            "random-geometric",
            "--nodes",
            "30",
            "--scenario",
            scenario,
            "--iterations",
            "2",
            "--json",
        ]);
        let report = json(&out);
        assert_eq!(
            report["unreachable_pairs_after_heal"], 0,
            "{scenario}: {report}"
        );
    }
}

#[test]
fn writes_csv_plot_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, svg, prom) = (
        dir.path().join("s.csv"),
        dir.path().join("m.svg"),
        dir.path().join("twin.prom"),
    );
    let out = run(&[
        "twin",
        "run",
        "--topology",
        "ring",
        "--nodes",
        "10",
        "--iterations",
        "2",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--metrics-out",
        prom.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("MTTR"));
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("iteration,source,destination,outage_ms\n") && csv.lines().count() > 1);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let prom = std::fs::read_to_string(prom).unwrap();
    // deploy/monitoring/twin-metrics.txt lists every name (and its labels) the dashboards
    // may use; what the twin writes must match it.
    let listed_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/monitoring/twin-metrics.txt"
    ))
    .expect("deploy/monitoring/twin-metrics.txt");
    let listed: std::collections::BTreeMap<&str, BTreeSet<&str>> = listed_text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap();
            (
                name,
                parts
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .collect(),
            )
        })
        .collect();
    let mut names = BTreeSet::new();
    for line in prom.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = line.split_once('{').expect("labelled series");
        let labels: BTreeSet<&str> = rest
            .split('}')
            .next()
            .unwrap()
            .split(',')
            .filter_map(|kv| kv.split('=').next())
            .collect();
        let expected = listed.get(name).unwrap_or_else(|| {
            panic!("{name} is not listed in deploy/monitoring/twin-metrics.txt")
        });
        assert_eq!(&labels, expected, "labels of {name}");
        names.insert(name);
    }
    assert_eq!(
        names.len(),
        listed.len(),
        "every listed twin metric is written"
    );
    assert!(names.contains("x0tta6bl4_twin_mttr_seconds"));
}

#[test]
fn a_snapshot_start_converges_and_unknown_starts_are_refused() {
    let args = [
        "twin",
        "run",
        "--topology",
        "grid",
        "--nodes",
        "16",
        "--iterations",
        "2",
        "--seed",
        "9",
        "--start",
        "snapshot",
        "--json",
    ];
    let report = json(&run(&args));
    assert_eq!(report["unreachable_pairs_after_heal"], 0);
    assert!(report["mttr_ms"]["samples"].as_u64().unwrap() > 0);
    let out = run(&["twin", "run", "--start", "warm"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("use cold"), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_2() {
    let cases: [(&[&str], &str); 8] = [
        (&["twin", "run", "--topology", "torus"], "unknown topology"),
        (&["twin", "run", "--scenario", "meteor"], "unknown scenario"),
        (
            &[
                "twin",
                "run",
                "--nodes",
                "10",
                "--scenario",
                "node-failure:count=10",
            ],
            "fewer",
        ),
        (
            &["twin", "run", "--topology", "erdos-renyi:connectivity=1.5"],
            "connectivity",
        ),
        (
            &["twin", "run", "--topology", "file:/nonexistent/mesh.json"],
            "/nonexistent/mesh.json",
        ),
        (
            &["twin", "run", "--topology", "prometheus:http://127.0.0.1:9"],
            "Prometheus",
        ),
        (
            &["twin", "run", "--suspect-probe-interval-ms", "60"],
            "suspect_probe_interval_ms",
        ),
        (
            &[
                "twin",
                "tune",
                "--intervals-ms",
                "20,50",
                "--suspect-ms",
                "30",
            ],
            "--suspect-ms",
        ),
    ];
    for (args, needle) in cases {
        let out = run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("x0tta6bl4: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let out = run(&["twin", "tune", "--loss", "lots"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--loss"));
}

#[test]
fn reads_files_including_meshnet_lab_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.json");
    std::fs::write(&file, r#"{"nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}], "links": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}, {"source": "c", "target": "d"}, {"source": "d", "target": "a"}]}"#).unwrap();
    let spec = format!("file:{}", file.display());
    let topo = json(&run(&["twin", "topology", "--topology", &spec, "--json"]));
    assert_eq!(topo["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(topo["links"].as_array().unwrap().len(), 4);
    let report = json(&run(&[
        "twin",
        "run",
        "--topology",
        &spec,
        // b and d carry no flow (their neighbours are linked directly): enough
        // iterations that some fail a or c, else `twin run` says nothing was measured.
        "--iterations",
        "8",
        "--seed",
        "1",
        "--json",
    ]));
    assert_eq!(report["nodes"], 4);
    std::fs::write(&file, "{\"links\": [").unwrap();
    let out = run(&["twin", "run", "--topology", &spec]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
}

#[test]
fn fuzz_and_tune_run() {
    let out = run(&["twin", "fuzz", "--seeds", "5", "--seed", "100"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("0 of 5 seeds failed"));
    let tune = json(&run(&[
        "twin",
        "tune",
        "--loss",
        "5%",
        "--topology",
        "ring",
        "--nodes",
        "8",
        "--iterations",
        "2",
        "--soak-s",
        "60",
        "--intervals-ms",
        "20,50",
        "--misses",
        "2,6",
        "--suspect-ms",
        "0,10",
        "--json",
    ]));
    let rows = tune["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    // At 5 % loss two misses raise far more false alarms than six.
    let false_rate = |misses: u64| {
        rows.iter()
            .filter(|r| r["probe_misses_max"] == misses)
            .map(|r| r["false_down_per_link_hour"].as_f64().unwrap())
            .sum::<f64>()
    };
    assert!(false_rate(2) > false_rate(6), "{tune}");
    // Suspicion notices a failure within a probe interval and a few suspicion probes.
    let p50 = |interval: u64, suspect: u64| {
        rows.iter()
            .find(|r| {
                r["probe_interval_ms"] == interval
                    && r["probe_misses_max"] == 2
                    && r["suspect_probe_interval_ms"] == suspect
            })
            .map(|r| r["mttr_p50_ms"].as_f64().unwrap())
            .unwrap()
    };
    assert!(p50(50, 10) < p50(50, 0), "{tune}");
    assert!(tune["recommended"]["probe_misses_max"].as_u64().is_some());
}

/// Start Prometheus on a free loopback port scraping the given targets.
fn start_prometheus(dir: &std::path::Path, targets: &[String]) -> Option<(Child, String)> {
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: x0tta6bl4\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    Some((child, format!("127.0.0.1:{port}")))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn builds_the_twin_from_live_prometheus() {
    // A square with one diagonal: a-b, b-c, c-d, d-a, a-c.
    let mesh = Mesh::start(&["a", "b", "c", "d"], &[&[1, 2], &[2], &[3], &[0]]);
    mesh.wait_converged(Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = mesh
        .nodes
        .iter()
        .map(|(_, api, _, _)| api.to_string())
        .collect();
    let Some((child, address)) = start_prometheus(dir.path(), &targets) else {
        panic!("Debian's prometheus package is required: scripts/test.sh installs it");
    };
    let _prometheus = Killed(child);
    let url = format!("http://{address}");
    // Wait until every node's RTT series to each neighbour has been scraped.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let ready = std::net::TcpStream::connect(&address).is_ok() && {
            let (status, body) = http(
                address.parse().unwrap(),
                "GET",
                "/api/v1/query?query=count(x0tta6bl4_link_rtt_seconds)",
                None,
            );
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            status == 200 && v["data"]["result"][0]["value"][1].as_str() == Some("10")
        };
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the mesh: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let spec = format!("prometheus:{url}");
    let twin = json(&run(&["twin", "topology", "--topology", &spec, "--json"]));
    let live: Value =
        serde_json::from_str(&http(mesh.nodes[0].1, "GET", "/api/v1/topology", None).1).unwrap();
    let names = |v: &Value| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    let links = |v: &Value| {
        v["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let (s, t) = (
                    l["source"].as_str().unwrap().to_owned(),
                    l["target"].as_str().unwrap().to_owned(),
                );
                if s < t {
                    (s, t)
                } else {
                    (t, s)
                }
            })
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(names(&twin), names(&live));
    assert_eq!(links(&twin), links(&live));
    assert_eq!(links(&twin).len(), 5);
    for link in twin["links"].as_array().unwrap() {
        let latency = link["latency_ms"].as_f64().unwrap();
        assert!(
            latency > 0.0 && latency < 50.0,
            "measured loopback latency {latency} ms"
        );
    }
    let report = json(&run(&[
        "twin",
        "run",
        "--topology",
        &spec,
        // b and d carry no flow (their neighbours are linked directly): enough
        // iterations that some fail a or c, else `twin run` says nothing was measured.
        "--iterations",
        "8",
        "--seed",
        "1",
        "--json",
    ]));
    assert_eq!(report["nodes"], 4);
    assert_eq!(report["unreachable_pairs_after_heal"], 0);
}
