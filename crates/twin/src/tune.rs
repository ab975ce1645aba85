//! What-if tuning: sweep probe interval and miss threshold on a lossy mesh, measuring
//! MTTR against false neighbour-down events, and recommend timers.

use std::time::Duration;

use serde::Serialize;

use crate::engine::{Observed, SimConfig};
use crate::runner::{self, RunOptions};
use crate::scenario::Scenario;
use crate::topology::Topology;

/// One combination of timers and what it measured.
#[derive(Clone, Debug, Serialize)]
pub struct TuneRow {
    /// `protocol.probe_interval_ms`.
    pub probe_interval_ms: u64,
    /// `protocol.probe_misses_max`.
    pub probe_misses_max: u32,
    /// `protocol.suspect_probe_interval_ms` (0: suspicion off).
    pub suspect_probe_interval_ms: u64,
    /// MTTR of node failures, median, ms.
    pub mttr_p50_ms: f64,
    /// MTTR of node failures, 95th percentile, ms.
    pub mttr_p95_ms: f64,
    /// Outage samples behind the two figures.
    pub samples: usize,
    /// Neighbour-down events on working links, per link per hour, during the soak.
    pub false_down_per_link_hour: f64,
    /// Control-plane bytes per node per second.
    pub control_bytes_per_node_per_second: f64,
}

/// The sweep's settings.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Probe intervals tried, ms.
    pub intervals_ms: Vec<u64>,
    /// Miss thresholds tried.
    pub misses: Vec<u32>,
    /// Suspicion paces tried, ms (0: off).
    pub suspect_ms: Vec<u64>,
    /// Loss probability set on every link.
    pub loss: f64,
    /// Node-failure iterations per combination.
    pub iterations: usize,
    /// Simulated time without faults over which false alarms are counted.
    pub soak: Duration,
    /// Acceptable false neighbour-down events per link per hour.
    pub false_down_budget: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            intervals_ms: vec![20, 50, 100, 200],
            misses: vec![2, 3, 4, 6, 8],
            suspect_ms: vec![0],
            loss: 0.05,
            iterations: 5,
            soak: Duration::from_secs(120),
            false_down_budget: 1.0,
            seed: 1,
        }
    }
}

/// Run the sweep on `topology` (its links' loss is replaced by `options.loss`).
/// Returns every row and the index of the recommended one: the lowest MTTR p95 among
/// rows within the false-alarm budget, or the fewest false alarms if none is.
pub fn tune(
    topology: &Topology,
    options: &TuneOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<TuneRow>, usize), runner::RunError> {
    let mut lossy = topology.clone();
    for link in &mut lossy.links {
        link.params.loss = options.loss;
    }
    let total = options.intervals_ms.len() * options.misses.len() * options.suspect_ms.len();
    let mut rows = Vec::with_capacity(total);
    for &interval in &options.intervals_ms {
        for &misses in &options.misses {
            for &suspect in &options.suspect_ms {
                let mut sim_config = SimConfig::new(options.seed);
                sim_config.protocol.probe_interval_ms = interval;
                sim_config.protocol.probe_misses_max = misses;
                sim_config.protocol.suspect_probe_interval_ms = suspect;
                rows.push(tune_row(&lossy, sim_config, options)?);
                progress(rows.len(), total);
            }
        }
    }
    let within: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            rows[i].false_down_per_link_hour <= options.false_down_budget && rows[i].samples > 0
        })
        .collect();
    let best = if within.is_empty() {
        (0..rows.len()).min_by(|&a, &b| {
            rows[a]
                .false_down_per_link_hour
                .total_cmp(&rows[b].false_down_per_link_hour)
        })
    } else {
        within
            .into_iter()
            .min_by(|&a, &b| rows[a].mttr_p95_ms.total_cmp(&rows[b].mttr_p95_ms))
    };
    Ok((rows, best.unwrap_or(0)))
}

/// One combination's soak and node-failure iterations.
fn tune_row(
    lossy: &Topology,
    sim_config: SimConfig,
    options: &TuneOptions,
) -> Result<TuneRow, runner::RunError> {
    let false_down_per_link_hour = soak(lossy, &sim_config, options.soak)?;
    let protocol = sim_config.protocol.clone();
    let mut run = RunOptions::new(options.seed);
    run.sim = sim_config;
    run.iterations = options.iterations;
    let scenario = Scenario::NodeFailure {
        count: crate::scenario::Count::Nodes(1),
        closed: false,
        restart: None,
        transit: false,
    };
    let report = runner::run(lossy, "tune", &scenario, "node-failure", &run, &mut |_| {})?;
    Ok(TuneRow {
        probe_interval_ms: protocol.probe_interval_ms,
        probe_misses_max: protocol.probe_misses_max,
        suspect_probe_interval_ms: protocol.suspect_probe_interval_ms,
        mttr_p50_ms: report.mttr_ms.p50,
        mttr_p95_ms: report.mttr_ms.p95,
        samples: report.mttr_ms.samples,
        false_down_per_link_hour,
        control_bytes_per_node_per_second: report.control_bytes_per_node_per_second,
    })
}

/// False neighbour-down events per link per hour over `duration` without faults.
fn soak(
    topology: &Topology,
    config: &SimConfig,
    duration: Duration,
) -> Result<f64, runner::RunError> {
    let (mut sim, _) = runner::converge(topology, config, Duration::from_secs(60))?;
    sim.take_observed();
    sim.run_for(duration);
    let false_downs = sim
        .take_observed()
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                Observed::NeighbourDown {
                    link_usable: true,
                    ..
                }
            )
        })
        .count();
    let link_hours = topology.links.len() as f64 * duration.as_secs_f64() / 3600.0;
    // Each link has two ends that may each raise a false alarm; count per link.
    Ok(false_downs as f64 / link_hours.max(1e-9))
}
