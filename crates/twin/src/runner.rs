//! The batch runner: converge once, then run a scenario's iterations, each on a fork of
//! the converged mesh, in parallel, and summarise them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use x0tta6bl4_proto::measure::MttrSummary;
use x0tta6bl4_proto::{Instant, Rng};

use crate::check;
use crate::engine::{Sim, SimConfig};
use crate::scenario::{
    affected_flows, run_iteration, IterationResult, Measurement, Scenario, ScenarioError,
};
use crate::topology::Topology;

/// Why a run could not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The scenario does not fit the topology.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The protocol configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The mesh did not converge before the bound.
    #[error("the mesh did not converge within {bound_ms} ms of simulated time ({health}); replay with --seed {seed}")]
    NoConvergence {
        /// The bound.
        bound_ms: u64,
        /// What the checker saw last.
        health: String,
        /// The run's seed.
        seed: u64,
    },
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Engine and protocol settings, including the seed.
    pub sim: SimConfig,
    /// Iterations of the scenario.
    pub iterations: usize,
    /// Measurement settings.
    pub measurement: Measurement,
    /// Longest simulated time allowed for the initial convergence.
    pub converge_max: Duration,
    /// Worker threads for iterations (results do not depend on it).
    pub threads: usize,
}

impl RunOptions {
    /// Defaults for a seed.
    pub fn new(seed: u64) -> Self {
        RunOptions {
            sim: SimConfig::new(seed),
            iterations: 10,
            measurement: Measurement::default(),
            converge_max: Duration::from_secs(60),
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8),
        }
    }
}

/// A run's results; `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Nodes simulated.
    pub nodes: usize,
    /// Links simulated.
    pub links: usize,
    /// The topology as given.
    pub topology: String,
    /// The scenario as given.
    pub scenario: String,
    /// Iterations run.
    pub iterations: usize,
    /// The run's seed.
    pub seed: u64,
    /// Outage of measured flows, over all iterations.
    pub mttr_ms: MttrSummary,
    /// Simulated time from start until the mesh first converged.
    pub converged_ms: f64,
    /// Time from the fault until the last route change, per iteration.
    pub reconverged_ms: MttrSummary,
    /// Connected pairs without a working path after the scenario, summed over iterations.
    pub unreachable_pairs_after_heal: usize,
    /// Measured flows that never delivered again, summed over iterations.
    pub unhealed_flows: usize,
    /// Neighbour-down events on links that worked, summed over iterations.
    pub false_down_events: usize,
    /// Control-plane messages per node per simulated second during the iterations.
    pub control_messages_per_node_per_second: f64,
    /// Control-plane bytes per node per simulated second during the iterations.
    pub control_bytes_per_node_per_second: f64,
    /// Simulated seconds, convergence plus all iterations.
    pub sim_seconds: f64,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Simulated seconds per wall-clock second.
    pub sim_seconds_per_wall_second: f64,
    /// Every outage sample: (iteration, source, destination, ms).
    #[serde(skip)]
    pub samples: Vec<(usize, String, String, f64)>,
}

/// Converge a fresh mesh over `topology`; returns it and the time it took.
pub fn converge(
    topology: &Topology,
    config: &SimConfig,
    bound: Duration,
) -> Result<(Sim, Duration), RunError> {
    config
        .protocol
        .validate()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let mut sim = Sim::new(topology, config.clone());
    let start = sim.now();
    let mut rng = Rng::seed(config.seed ^ 0xc0ffee);
    let step = Duration::from_millis(10);
    let pairs_max = 2_000;
    loop {
        sim.run_for(step);
        let elapsed = sim.now().saturating_since(start);
        // Walks first (cheap); the full check with route counts only once they pass.
        let paths_ok = check::check_paths(&sim, pairs_max, &mut rng).ok();
        let health = if paths_ok {
            check::check(&sim, pairs_max, &mut rng)
        } else {
            check::Health {
                loops: 1,
                ..check::Health::default()
            }
        };
        if health.ok() {
            return Ok((sim, elapsed));
        }
        if elapsed > bound {
            return Err(RunError::NoConvergence {
                bound_ms: bound.as_millis() as u64,
                health: format!("{health:?}"),
                seed: config.seed,
            });
        }
    }
}

/// Seed of iteration `k` of a run seeded `seed`.
pub fn iteration_seed(seed: u64, k: usize) -> u64 {
    Rng::seed(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

/// Run `scenario` on `topology`; `progress` is called with the number of iterations done.
pub fn run(
    topology: &Topology,
    topology_spec: &str,
    scenario: &Scenario,
    scenario_spec: &str,
    options: &RunOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, RunError> {
    scenario.validate(topology.len(), topology.links.len())?;
    let wall = std::time::Instant::now();
    let (base, converged) = converge(topology, &options.sim, options.converge_max)?;
    let base_time = base.now();
    let results = run_iterations(&base, scenario, options, progress);
    let mut report = summarise(
        topology,
        topology_spec,
        scenario_spec,
        options,
        &base,
        &results,
    );
    report.converged_ms = converged.as_secs_f64() * 1e3;
    let iterations_sim: f64 = results.iter().map(|r| r.sim_time.as_secs_f64()).sum();
    report.sim_seconds = base_time
        .saturating_since(Instant::from_micros(1_000_000))
        .as_secs_f64()
        + iterations_sim;
    report.wall_seconds = wall.elapsed().as_secs_f64();
    report.sim_seconds_per_wall_second = report.sim_seconds / report.wall_seconds.max(1e-9);
    Ok(report)
}

fn run_iterations(
    base: &Sim,
    scenario: &Scenario,
    options: &RunOptions,
    progress: &mut dyn FnMut(usize),
) -> Vec<IterationResult> {
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel();
    let mut results: Vec<Option<IterationResult>> = vec![None; options.iterations];
    std::thread::scope(|scope| {
        for _ in 0..options.threads.clamp(1, options.iterations.max(1)) {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= options.iterations {
                    break;
                }
                let mut rng = Rng::seed(iteration_seed(options.sim.seed, k));
                let mut sim = base.clone();
                sim.reseed(rng.next_u64());
                let plan = scenario.plan(&sim, &mut rng);
                let flows = affected_flows(&sim, &plan, options.measurement.flows_max, &mut rng);
                let result = run_iteration(&mut sim, &plan, &flows, &options.measurement, &mut rng);
                drop(sim);
                if sender.send((k, result)).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        let mut done = 0;
        for (k, result) in receiver {
            results[k] = Some(result);
            done += 1;
            progress(done);
        }
    });
    results.into_iter().flatten().collect()
}

fn summarise(
    topology: &Topology,
    topology_spec: &str,
    scenario_spec: &str,
    options: &RunOptions,
    base: &Sim,
    results: &[IterationResult],
) -> Report {
    let mut samples = Vec::new();
    for (k, r) in results.iter().enumerate() {
        for &(s, d, ms) in &r.outages {
            samples.push((k, base.name(s).to_string(), base.name(d).to_string(), ms));
        }
    }
    let outage_ms: Vec<f64> = samples.iter().map(|s| s.3).collect();
    let reconverged: Vec<f64> = results.iter().map(|r| r.reconverged_ms).collect();
    let iteration_time: f64 = results
        .iter()
        .map(|r| r.sim_time.as_secs_f64())
        .sum::<f64>()
        .max(1e-9);
    let node_seconds = iteration_time * topology.len() as f64;
    Report {
        nodes: topology.len(),
        links: topology.links.len(),
        topology: topology_spec.to_owned(),
        scenario: scenario_spec.to_owned(),
        iterations: results.len(),
        seed: options.sim.seed,
        mttr_ms: MttrSummary::from_ms(&outage_ms),
        converged_ms: 0.0,
        reconverged_ms: MttrSummary::from_ms(&reconverged),
        unreachable_pairs_after_heal: results.iter().map(|r| r.unreachable_pairs_after_heal).sum(),
        unhealed_flows: results.iter().map(|r| r.unhealed_flows).sum(),
        false_down_events: results.iter().map(|r| r.false_down_events).sum(),
        control_messages_per_node_per_second: results
            .iter()
            .map(|r| r.control_frames as f64)
            .sum::<f64>()
            / node_seconds,
        control_bytes_per_node_per_second: results
            .iter()
            .map(|r| r.control_bytes as f64)
            .sum::<f64>()
            / node_seconds,
        sim_seconds: 0.0,
        wall_seconds: 0.0,
        sim_seconds_per_wall_second: 0.0,
        samples,
    }
}
