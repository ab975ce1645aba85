//! Scale benchmark of the digital twin. Prints measured figures; run with
//! `cargo bench -p x0tta6bl4-twin --bench scale` (the 1,000-node case, cold start; add
//! `-- quick` for a short run; `-- 10k` runs the 10,000-node case instead, started from
//! a link-state snapshot: see `x0tta6bl4_twin::Start::Snapshot`; `-- NODES ITERATIONS
//! cold|snapshot` runs any other size).
//!
//! Targets (issue: digital twin): 1,000 nodes × node-failure × 100 iterations in under
//! 60 s of wall time on 2 cores; 10,000 nodes converge and run one node-failure
//! iteration in under 120 s, with the memory per simulated node reported.

use std::time::Instant;

use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::{run, LinkParams, RunOptions, Scenario, Start, Topology};

/// A field of /proc/self/status in bytes (`VmRSS`: resident now; `VmHWM`: its peak).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn case(nodes: usize, iterations: usize, seed: u64, start: Start) {
    let rss_before = status_bytes("VmRSS");
    let started = Instant::now();
    let mut rng = Rng::seed(seed);
    let connectivity = 4.0 / (nodes as f64 - 1.0);
    let topology = Topology::erdos_renyi(nodes, connectivity, &mut rng, &LinkParams::default())
        .expect("topology");
    let spec = format!("erdos-renyi:connectivity={connectivity:.6}");
    let scenario: Scenario = "node-failure".parse().expect("scenario");
    let mut options = RunOptions::new(seed);
    options.iterations = iterations;
    options.start = start;
    let report = run(
        &topology,
        &spec,
        &scenario,
        "node-failure",
        &options,
        &mut |_| {},
    )
    .expect("run");
    let peak = status_bytes("VmHWM");
    println!(
        "twin nodes={nodes} links={} iterations={iterations} scenario=node-failure seed={seed} \
         start={start:?}: wall {:.1} s (converge + iterations), converged in {:.0} ms simulated, \
         {:.4} simulated s per wall s, MTTR p50 {:.1} ms p95 {:.1} ms ({} samples), \
         unreachable pairs after heal {}, memory {:.1} KiB per node (peak RSS growth {:.0} MiB)",
        report.links,
        started.elapsed().as_secs_f64(),
        report.converged_ms,
        report.sim_seconds_per_wall_second,
        report.mttr_ms.p50,
        report.mttr_ms.p95,
        report.mttr_ms.samples,
        report.unreachable_pairs_after_heal,
        (peak.saturating_sub(rss_before)) as f64 / nodes as f64 / 1024.0,
        (peak.saturating_sub(rss_before)) as f64 / (1024.0 * 1024.0),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    let only_10k = args.iter().any(|a| a == "10k");
    println!(
        "command: cargo bench -p x0tta6bl4-twin --bench scale{}",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    if quick {
        case(200, 10, 1, Start::Cold);
        return;
    }
    if let [nodes, iterations, start] = &args[..] {
        let start = if start == "snapshot" {
            Start::Snapshot
        } else {
            Start::Cold
        };
        let number = |v: &String| v.parse().expect("NODES and ITERATIONS are numbers");
        case(number(nodes), number(iterations), 1, start);
        return;
    }
    if !only_10k {
        case(1_000, 100, 1, Start::Cold);
    }
    // A cold start at 10,000 nodes floods every advertisement over every link, hundreds
    // of millions of duplicate deliveries: the 10,000-node case starts from a snapshot.
    if only_10k {
        case(10_000, 1, 1, Start::Snapshot);
    }
}
