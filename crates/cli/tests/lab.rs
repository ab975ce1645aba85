//! The chaos lab against real namespaces and real node processes (needs root; CI runs
//! as root). Every fault of the catalogue (14 of 14) has a scenario here that asserts
//! the mesh healed: every affected flow delivered again and no survivor pair
//! unreachable; the identity faults also that the node was cut off, its reconnects
//! refused and counted. Each test fails under `CI=true` when root or a tool is missing,
//! and bounds what it measures within twice the targets (MTTR p95, false downs).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{code, run, stderr, stdout};

/// Labs share the machine's two cores: one at a time keeps the MTTR honest. A directory
/// made atomically is the lock, so it also holds across processes (cargo nextest runs
/// every test in its own process); a lock whose owner died is taken over.
struct LabLock(PathBuf);

impl LabLock {
    fn take() -> LabLock {
        let dir = std::env::temp_dir().join("x0tta6bl4-lab-tests.lock");
        let me = std::process::id().to_string();
        loop {
            if std::fs::create_dir(&dir).is_ok() {
                std::fs::write(dir.join("pid"), &me).unwrap();
                return LabLock(dir);
            }
            let owner = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
            let alive =
                !owner.is_empty() && std::path::Path::new(&format!("/proc/{owner}")).exists();
            if !alive && !owner.is_empty() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One lab at a time within this process too (the lock directory is per process).
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `lab run ... --json` and return the parsed object (asserting exit 0).
fn lab_json(args: &[&str]) -> serde_json::Value {
    let _one_at_a_time = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _one_per_machine = LabLock::take();
    let mut all = vec!["lab", "run", "--json"];
    all.extend_from_slice(args);
    let output = run(&all);
    assert_eq!(code(&output), 0, "{all:?}: {}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("one JSON object")
}

fn keys(value: &serde_json::Value) -> Vec<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

fn assert_router(report: &serde_json::Value, name: &str) {
    let r = &report["routers"][name];
    let mut k = keys(r);
    k.sort();
    // Identity faults add what the mesh did about the node (asserted by their test).
    // x0tta6bl4 adds its routing figures (asserted below).
    k.retain(|k| k != "identity" && k != "budget" && k != "routing");
    assert_eq!(
        k,
        [
            "false_down_events",
            "flows",
            "mttr_ms",
            "resources",
            "unhealed_flows",
            "unreachable_pairs_after_heal"
        ],
        "{report}"
    );
    let mut m = keys(&r["mttr_ms"]);
    m.sort();
    assert_eq!(
        m,
        ["max", "mean", "p50", "p95", "p99", "samples"],
        "{report}"
    );
    assert_eq!(r["unreachable_pairs_after_heal"], 0, "{report}");
    assert_eq!(r["unhealed_flows"], 0, "{report}");
    // Every node process was measured: CPU used, memory resident, idle and under flows.
    let res = &r["resources"];
    for phase in ["idle", "flows", "heal"] {
        assert!(
            res[phase]["seconds"].as_f64() > Some(0.0),
            "{phase}: {report}"
        );
        assert!(
            res[phase]["rss_mib"]["max"].as_f64() > Some(0.0),
            "{phase}: {report}"
        );
    }
    // babeld may use less than a clock tick (10 ms) in a short run.
    assert!(
        name != "x0tta6bl4" || res["cpu_s_total"]["max"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        res["cpu_s_total"]["max"].as_f64() >= res["cpu_s_total"]["mean"].as_f64(),
        "{report}"
    );
    assert!(res["load_average_start"][0].as_f64().is_some(), "{report}");
    if name.starts_with("x0tta6bl4") {
        let g = &r["routing"];
        let delivery = g["delivery_ratio"].as_f64().expect("a delivery ratio");
        // A Byzantine forwarder's altered copies of probes are delivered too (data
        // messages are not signed end to end): only then may the ratio pass 1.
        let byzantine = report["scenario"]
            .as_str()
            .is_some_and(|s| s.starts_with("byzantine"));
        assert!(delivery > 0.0 && (delivery <= 1.0 || byzantine), "{report}");
        assert!(g["link_hours"].as_f64() > Some(0.0), "{report}");
        assert!(
            g["unneeded_reroutes_per_link_hour"].as_f64().is_some(),
            "{report}"
        );
    } else {
        assert!(r.get("routing").is_none(), "{report}");
    }
    let false_downs = r["false_down_events"].as_u64().expect("a count");
    // Bounded for our protocol; babeld's are counted (and compared in the soak).
    assert!(
        name != "x0tta6bl4" || false_downs <= FALSE_DOWNS_MAX,
        "{false_downs} false neighbour-downs: {report}"
    );
}

/// Whether this machine can run a lab test: root, `ip`, `nft` and the `tools` it needs.
/// Under `CI=true` a missing prerequisite fails the test, so a CI that cannot run the
/// lab is red (issue 11, item 9); elsewhere the test is skipped with the reason.
fn lab_prerequisites(tools: &[&str]) -> bool {
    let mut missing: Vec<&str> = Vec::new();
    if !is_root() {
        missing.push("root");
    }
    for tool in ["ip", "nft"].iter().chain(tools) {
        if !have(tool) {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "the chaos lab test cannot run: missing {} (run as root; scripts/test.sh installs \
         iproute2, nftables, stress-ng and babeld)",
        missing.join(", ")
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {reason}"
    );
    eprintln!("skipped: {reason}");
    false
}

/// The bound on a lab MTTR p95, in ms: twice the 250 ms target, so that a protocol
/// regression fails the test while the benchmarks hold the target itself.
const P95_MS_MAX: f64 = 500.0;
/// False neighbour-downs tolerated in one lab run (measured: 0 in every run of the
/// README's sweep; 2 in a 5-minute soak at 5 % loss).
const FALSE_DOWNS_MAX: u64 = 2;

/// The x0tta6bl4 router's MTTR p95 and samples, with the p95 bounded.
fn assert_mttr(report: &serde_json::Value, what: &str, p95_max: f64) -> u64 {
    let mttr = &report["routers"]["x0tta6bl4"]["mttr_ms"];
    let samples = mttr["samples"].as_u64().unwrap();
    let p95 = mttr["p95"].as_f64().unwrap();
    assert!(
        p95 <= p95_max,
        "{what}: p95 {p95} ms > {p95_max} ms: {report}"
    );
    samples
}

/// A ring of five: killing a node always breaks the flow between its two neighbours
/// (the other way round is longer), so there are outages to measure (on a ring of four
/// the seed may pick a node no route crosses).
#[test]
fn ring_of_five_node_kill_heals_with_the_issue_json() {
    if !lab_prerequisites(&[]) {
        return;
    }
    let report = lab_json(&[
        "--topology",
        "ring",
        "--nodes",
        "5",
        "--scenario",
        "node-kill",
        "--iterations",
        "2",
        "--seed",
        "3",
    ]);
    let mut top = keys(&report);
    top.sort();
    assert_eq!(
        top,
        [
            "iterations",
            "lab_cpu_s",
            "nodes",
            "routers",
            "scenario",
            "seed",
            "topology",
            "twin"
        ]
    );
    assert_eq!(keys(&report["routers"]), ["x0tta6bl4"]);
    assert_router(&report, "x0tta6bl4");
    let mut twin = keys(&report["twin"]);
    twin.sort();
    assert_eq!(twin, ["error_p50", "error_p95", "mttr_ms"]);
    assert_eq!(
        (report["nodes"].as_u64(), report["seed"].as_u64()),
        (Some(5), Some(3))
    );
    // Killing a ring node breaks the flows through it: measured, and healed in time.
    let samples = assert_mttr(&report, "node-kill", P95_MS_MAX);
    assert!(samples > 0, "no affected flow measured: {report}");
    // The twin's prediction sits next to it. Its 5 % (p50) and 10 % (p95) targets are
    // held by the 16-node grid benchmark (100+ samples); with 3 or 4 samples on a ring of
    // five the lab measured 132 ms against the twin's 161 ms (error 0.22), so the bound
    // here only catches a twin that no longer models node-kill at all.
    let (error_p50, error_p95) = (
        report["twin"]["error_p50"].as_f64().unwrap(),
        report["twin"]["error_p95"].as_f64().unwrap(),
    );
    assert!(error_p50 <= 0.5 && error_p95 <= 0.5, "twin error: {report}");
}

#[test]
fn every_automated_fault_heals_on_a_ring() {
    if !lab_prerequisites(&["stress-ng"]) {
        return;
    }
    for fault in [
        "node-kill",
        "node-pause:hold_ms=600",
        "node-restart",
        "link-down",
        "partition:hold_ms=600",
        "asym-partition:hold_ms=600",
        "loss:rate=0.2",
        "delay:delay_ms=60,jitter_ms=10",
        "bandwidth:mbps=1",
        "cpu-stress:hold_ms=500",
        "mem-stress:hold_ms=500",
        "byzantine:hold_ms=1000",
    ] {
        // A ring of six: every node and link carries transit flows, so each fault
        // has affected flows to measure whichever element the seed picks.
        let report = lab_json(&["--topology", "ring", "--nodes", "6", "--scenario", fault]);
        assert_router(&report, "x0tta6bl4");
        // A partition's flows across the split wait for the heal: the hold adds to it.
        let hold_ms = fault
            .split_once("hold_ms=")
            .filter(|_| fault.contains("partition"))
            .map_or(0.0, |(_, ms)| ms.parse::<f64>().unwrap());
        let samples = assert_mttr(&report, fault, P95_MS_MAX + hold_ms);
        // CPU and memory pressure need not break any flow (a 2-core machine may absorb
        // them), so only faults that cut paths must show affected flows.
        let may_spare_every_flow =
            fault.starts_with("cpu-stress") || fault.starts_with("mem-stress");
        assert!(
            samples > 0 || may_spare_every_flow,
            "{fault}: no affected flow measured: {report}"
        );
        // Every lab run has the twin's prediction for the same fault next to it.
        assert!(
            report["twin"]["mttr_ms"]["samples"].as_u64() > Some(0) || may_spare_every_flow,
            "{fault}: no twin prediction: {report}"
        );
    }
}

/// The identity faults: the node whose SVID expired (renewal withheld) or that the CA
/// revoked is cut off by every neighbour, its flows re-route around it, its reconnects
/// are refused and counted, and it does not get back in.
#[test]
fn identity_faults_cut_the_node_off_and_heal() {
    if !lab_prerequisites(&[]) {
        return;
    }
    for fault in ["svid-expiry:ttl_s=6", "revoke"] {
        let report = lab_json(&[
            "--topology",
            "ring",
            "--nodes",
            "6",
            "--scenario",
            fault,
            "--iterations",
            "2",
        ]);
        assert_router(&report, "x0tta6bl4");
        let r = &report["routers"]["x0tta6bl4"];
        let samples = assert_mttr(&report, fault, P95_MS_MAX);
        assert!(samples > 0, "{fault}: no affected flow measured: {report}");
        let identity = &r["identity"];
        // A ring node has two neighbours; each closes its link, in both iterations.
        assert_eq!(identity["links_closed"], 4, "{fault}: {report}");
        assert!(
            identity["reconnects_refused"].as_u64().unwrap() >= 1,
            "{fault}: no refused reconnect counted: {report}"
        );
        assert_eq!(identity["readmitted"], 0, "{fault}: {report}");
        assert!(report["twin"]["mttr_ms"].is_object(), "{report}");
    }
}

#[test]
fn babeld_side_by_side_on_a_tiny_ring() {
    if !lab_prerequisites(&["babeld"]) {
        return;
    }
    let plot = tempfile::NamedTempFile::new().unwrap();
    let report = lab_json(&[
        "--topology",
        "ring",
        "--nodes",
        "5",
        "--scenario",
        "node-kill",
        "--router",
        "babeld",
        // babeld's routes between the victim's two neighbours go through it or the long
        // way round, as its link costs jitter (2 to 6 of the 12 flows crossed it in
        // eight runs here); once in CI none did. Three kills measure some.
        "--iterations",
        "3",
        "--plot",
        plot.path().to_str().unwrap(),
    ]);
    assert_eq!(keys(&report["routers"]), ["babeld"]);
    assert_router(&report, "babeld");
    // The comparison measured babeld's outages too (matched timers: p95 ~330 ms).
    let babeld = &report["routers"]["babeld"]["mttr_ms"];
    assert!(babeld["samples"].as_u64() > Some(0), "{report}");
    let svg = std::fs::read_to_string(plot.path()).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("babeld"), "{svg}");
}

#[test]
fn a_short_soak_counts_false_alarms() {
    if !lab_prerequisites(&["babeld"]) {
        return;
    }
    let _one_at_a_time = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _one_per_machine = LabLock::take();
    let router = "both";
    let output = run(&[
        "lab",
        "soak",
        "--minutes",
        "0.1",
        "--loss",
        "5%",
        "--router",
        router,
        "--json",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(report["loss"], 0.05);
    let expected = ["babeld", "x0tta6bl4"];
    assert_eq!(keys(&report["routers"]), expected, "{report}");
    for name in expected {
        let r = &report["routers"][name];
        assert!(r["seconds"].as_f64().unwrap() >= 5.0, "{report}");
        assert!(r["false_down_events"].as_u64().is_some(), "{report}");
    }
    // At 5 % loss x0tta6bl4's failure detector raised 2 false alarms in 5 minutes
    // (README): in 6 s a regression shows as more than FALSE_DOWNS_MAX.
    let ours = report["routers"]["x0tta6bl4"]["false_down_events"].as_u64();
    assert!(ours <= Some(FALSE_DOWNS_MAX), "{report}");
}

/// `lab soak --api-abuse` (issue 11): thousands of sends and half-open requests against
/// every node's API during the soak wedge no node, leave every pair reachable, raise no
/// false neighbour-down (the API has a thread of its own; before, the connection storm
/// starved the nodes' probes: 12 and 40 false downs in two 15 s runs) and each node's
/// metrics show what it refused (300 held half-open requests per node against a cap of
/// 256: closed at accept, and evictions).
#[test]
fn a_soak_with_api_abuse_wedges_no_node() {
    if !lab_prerequisites(&[]) {
        return;
    }
    let _one_at_a_time = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _one_per_machine = LabLock::take();
    let output = run(&[
        "lab",
        "soak",
        "--minutes",
        "0.25",
        "--loss",
        "1%",
        "--api-abuse",
        "--json",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let abuse = &report["api_abuse"];
    assert_eq!(abuse["wedged_nodes"], serde_json::json!([]), "{report}");
    assert_eq!(abuse["unreachable_pairs"], 0, "{report}");
    assert!(
        abuse["sends"]["accepted"].as_u64() > Some(1_000),
        "{report}"
    );
    assert!(
        abuse["half_open_opened"].as_u64() >= Some(4 * 300),
        "{report}"
    );
    let refused = abuse["refused"].as_object().expect("per node");
    assert_eq!(refused.len(), 4, "{report}");
    for (node, reasons) in refused {
        assert!(reasons["limit"].as_u64() > Some(0), "{node}: {report}");
        assert!(reasons["evicted"].as_u64() > Some(0), "{node}: {report}");
    }
    let downs = report["routers"]["x0tta6bl4"]["false_down_events"].as_u64();
    assert_eq!(downs, Some(0), "{report}");
    assert_eq!(
        abuse["late_timers"].as_object().map(|m| m.len()),
        Some(4),
        "{report}"
    );
}

/// babeld's neighbour-down events come from its local interface: at heavy loss on every
/// link, a matched-timer babeld loses neighbours (and so does x0tta6bl4), so a count
/// stuck at zero would mean the monitor does not work.
#[test]
fn babeld_neighbour_downs_are_counted() {
    if !lab_prerequisites(&["babeld"]) {
        return;
    }
    let _one_at_a_time = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _one_per_machine = LabLock::take();
    let output = run(&[
        "lab",
        "soak",
        "--minutes",
        "0.2",
        "--loss",
        "40%",
        "--router",
        "babeld",
        "--json",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let downs = report["routers"]["babeld"]["false_down_events"]
        .as_u64()
        .unwrap();
    assert!(downs > 0, "{report}");
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let output = run(&["lab", "run", "--scenario", "meteor"]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("unknown fault \"meteor\""),
        "{}",
        stderr(&output)
    );
    for fault in ["svid-expiry", "revoke", "delay", "byzantine"] {
        let output = run(&["lab", "run", "--scenario", fault, "--router", "babeld"]);
        assert_eq!(code(&output), 2);
        let text = stderr(&output);
        assert!(
            text.contains("not applicable to babeld") && text.contains("--router x0tta6bl4"),
            "{text}"
        );
    }
    let output = run(&["lab", "run", "--scenario", "svid-expiry:ttl_s=1"]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("ttl_s"), "{}", stderr(&output));
    let output = run(&["lab", "soak", "--router", "ospf"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let output = run(&["lab", "run", "--router", "ospf"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let output = run(&["lab", "soak", "--minutes", "0", "--loss", "5%"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let output = run(&["lab", "soak", "--minutes", "1", "--loss", "150%"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    for (flag, value, says) in [
        ("--flows-sample", "0", "--flows-sample 0"),
        ("--node-cpu", "lots", "share of one core"),
        ("--node-cpu", "0", "out of range"),
        ("--node-memory", "64X", "K, M or G"),
        ("--node-memory", "1M", "at least 8M"),
        (
            "--node-protocol",
            "probe_interval_ms=1",
            "probe_interval_ms",
        ),
        ("--node-protocol", "no_such_key=1", "no_such_key"),
    ] {
        let output = run(&["lab", "run", flag, value]);
        assert_eq!(code(&output), 2, "{flag} {value}");
        assert!(stderr(&output).contains(says), "{}", stderr(&output));
    }
    let output = run(&["lab", "run", "--nodes", "500"]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("at most 128"),
        "{}",
        stderr(&output)
    );
}

/// `--flows-sample` runs only a sample of the crossing flows, `--node-protocol` sets the
/// timers of the nodes and of the twin beside them, and `--node-cpu` /
/// `--node-memory` put every node in a cgroup whose limits the report gives back with
/// what they did. Under `CI=true` a host where the cgroups cannot be made fails.
#[test]
fn a_budgeted_sampled_run_heals_and_reports_its_cgroups() {
    if !lab_prerequisites(&[]) {
        return;
    }
    let _one_at_a_time = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _one_per_machine = LabLock::take();
    let args = [
        "lab",
        "run",
        "--json",
        "--topology",
        "ring",
        "--nodes",
        "5",
        "--scenario",
        "node-kill",
        "--seed",
        "3",
        "--flows-sample",
        "2",
        "--node-cpu",
        "0.5",
        "--node-memory",
        "128M",
        // The nodes' timers, and the twin's next to them: 100 ms probes, 3 missed. ETX
        // costs keep each flow on its fewest hops: with the measured metric a node
        // starved by its CPU budget on a loaded host answers a millisecond late, which
        // costs as much as a hop, and a flow that left the victim before the kill healed
        // in 40 ms, the probable cause of a run where both sampled flows did.
        "--node-protocol",
        "probe_interval_ms=100,link_cost=\"etx\"",
    ];
    let output = run(&args);
    let text = stderr(&output);
    if code(&output) == 2 && text.contains("cgroup") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: the lab cannot make cgroups here: {text}"
        );
        eprintln!("skipped: the lab cannot make cgroups here: {text}");
        return;
    }
    assert_eq!(code(&output), 0, "{args:?}: {text}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_router(&report, "x0tta6bl4");
    let r = &report["routers"]["x0tta6bl4"];
    assert_eq!(r["flows"]["sample"], 2, "{report}");
    let started = r["flows"]["started"].as_u64().unwrap();
    assert!((1..=2).contains(&started), "{report}");
    assert!(r["mttr_ms"]["samples"].as_u64() > Some(0), "{report}");
    // Detection alone takes 300 ms at 100 ms probes, in the lab and in the twin (the
    // default 50 ms probes heal in about 160).
    for side in [&r["mttr_ms"], &report["twin"]["mttr_ms"]] {
        assert!(side["p50"].as_f64() > Some(250.0), "{report}");
    }
    let budget = &r["budget"];
    assert!(
        budget["cgroup"] == "v2" || budget["cgroup"] == "v1",
        "{report}"
    );
    assert_eq!(budget["cpu"], 0.5, "{report}");
    assert_eq!(budget["memory_bytes"], 128u64 << 20, "{report}");
    assert_eq!(budget["oom_kills"], 0, "{report}");
    // Within the limit: every node's resident memory stayed under it.
    let peak = r["resources"]["rss_peak_mib"]["max"].as_f64().unwrap();
    assert!(peak > 1.0 && peak < 128.0, "{report}");
    // Nothing of the lab's cgroups is left behind.
    let name = "x0l";
    // The lab makes them in its own cgroup of each v1 hierarchy (this test's too).
    let own = |controller: &str| {
        std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                c.split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_owned())
            })
            .unwrap_or_default()
    };
    let roots = [
        "/sys/fs/cgroup".to_owned(),
        format!("/sys/fs/cgroup/cpu{}", own("cpu")),
        format!("/sys/fs/cgroup/memory{}", own("memory")),
    ];
    for root in &roots {
        let left: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name))
            .collect();
        assert!(left.is_empty(), "{root}: {left:?} left behind");
    }
}

/// A model that predicts a failure from the probe loss alone: P(down within 2 s) =
/// sigmoid(20 x loss - 2), threshold 0.5 (an estimated round-trip loss of 0.1 raises
/// the link). The estimate is an average over ~16 probes (800 ms) and lags a ramp: on a
/// quiet host it had reached only 0.13 when seed 1's ramps cut the link, so a model
/// raising at 0.3 never raised there (it did on a loaded host, where late answers count
/// as lost too). A clean link's estimate stays at 0.
fn loss_predictor(dir: &std::path::Path) -> PathBuf {
    use x0tta6bl4_fl::linkpredict::{spec, PredictorFile, PredictorModel};
    let mut params = vec![0.0_f32; spec().num_params()];
    params[1] = 20.0; // loss now -> "down"
    params[13] = -2.0; // bias of "down"
    let model = PredictorModel {
        horizon_ms: 2000,
        sample_interval_ms: 100,
        window: 10,
        threshold: 0.5,
        params,
    };
    let path = dir.join("predictor.json");
    PredictorFile::save(&model, &path).unwrap();
    path
}

/// `--routing cost,etx,predict` on `degrade-then-fail`: the three routings run as
/// routers of their own on the same ramps (loss stepped by nftables, then the cut);
/// each heals and reports delivery and reroutes; only predict's nodes raise links, and
/// they do while the ramps run (before the cut: the iterations are all cuts here).
#[test]
fn routings_side_by_side_on_degrade_then_fail() {
    if !lab_prerequisites(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = loss_predictor(dir.path());
    let report = lab_json(&[
        "--topology",
        "ring",
        "--nodes",
        "6",
        "--scenario",
        "degrade-then-fail:recover=0,ramp_min_ms=1500,ramp_max_ms=2500,loss=0.6",
        "--iterations",
        "2",
        "--routing",
        "cost,etx,predict",
        "--predictor",
        model.to_str().unwrap(),
    ]);
    let mut routers = keys(&report["routers"]);
    routers.sort();
    assert_eq!(
        routers,
        ["x0tta6bl4", "x0tta6bl4-etx", "x0tta6bl4-predict"],
        "{report}"
    );
    for name in &routers {
        assert_router(&report, name);
        let mttr = &report["routers"][name]["mttr_ms"];
        assert!(mttr["samples"].as_u64() > Some(0), "{name}: {report}");
    }
    let raises = |name: &str| report["routers"][name]["routing"]["predictor_raises"].as_u64();
    assert_eq!(raises("x0tta6bl4"), Some(0), "{report}");
    assert_eq!(raises("x0tta6bl4-etx"), Some(0), "{report}");
    assert!(raises("x0tta6bl4-predict") > Some(0), "{report}");
    assert!(
        report["twin"]["mttr_ms"]["samples"].as_u64() > Some(0),
        "{report}"
    );
}

#[test]
fn bad_routings_and_models_are_refused_before_the_lab_starts() {
    let dir = tempfile::tempdir().unwrap();
    let model = loss_predictor(dir.path());
    let tampered = dir.path().join("tampered.json");
    let text = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&tampered, text.replacen("20.0", "21.0", 1)).unwrap();
    for (args, says) in [
        (vec!["--routing", "ppo"], "not available yet"),
        (vec!["--routing", "cost,predict"], "--predictor"),
        (vec!["--routing", "cost,cost"], "given twice"),
        (
            vec!["--predictor", model.to_str().unwrap()],
            "--routing predict",
        ),
        (
            vec![
                "--routing",
                "predict",
                "--predictor",
                tampered.to_str().unwrap(),
            ],
            "hash check failed",
        ),
        (
            vec!["--routing", "etx", "--node-protocol", "link_cost=\"etx\""],
            "--node-protocol link_cost",
        ),
        (
            vec!["--scenario", "degrade-then-fail:jitter_ms=5"],
            "jitter_ms",
        ),
    ] {
        let mut all = vec!["lab", "run"];
        all.extend_from_slice(&args);
        let output = run(&all);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
