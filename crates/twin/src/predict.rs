//! Link-failure prediction in the twin: the loop that feeds every node's links to a
//! predictor and raises or restores their costs through the protocol's hook
//! (`x0tta6bl4_proto::Node::set_link_risk`, which the daemon's driver calls the same
//! way), and the training data: `degrade-then-fail` iterations whose link features are
//! sampled every `sample_interval_ms` and labelled with whether the link was cut within
//! the horizon.
//!
//! The model itself ([`x0tta6bl4_fl::linkpredict`]) is trained federatedly: each
//! sample belongs to the node that measured it, and [`train`] runs FedAvg over the
//! nodes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_fl::linkpredict::{
    self, FedTrainConfig, LinkRisk, PredictorError, PredictorModel, RiskAction, Sample,
    TrainReport, FEATURES,
};
use x0tta6bl4_proto::{Instant, Rng};

use crate::engine::{Sim, Status};
use crate::runner::{converge_with, iteration_seed, RunError, RunOptions};
use crate::scenario::{Action, FaultPlan, Scenario};
use crate::topology::Topology;

/// Default horizon: P(link down within 2 s).
pub const HORIZON: Duration = Duration::from_secs(2);
/// Default interval between samples of a link.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Default samples per window (1 s).
pub const WINDOW: usize = 10;
/// Factor on a link's cost while its failure is predicted (the daemon uses the same).
pub use x0tta6bl4_fl::linkpredict::RISK_FACTOR;

/// How a run routes (`twin run --routing`).
#[derive(Clone, Debug, Default)]
pub enum Routing {
    /// The protocol's measured cost (hop, base RTT, loss) and its healing loop.
    #[default]
    Cost,
    /// ETX costs (`protocol.link_cost = "etx"`) and the healing loop.
    Etx,
    /// The measured cost, raised on links whose failure the model predicts.
    Predict(Arc<PredictorModel>),
    /// ETX costs with the multipliers a PPO policy's agents put on them
    /// ([`crate::ppo`]).
    Ppo(Arc<x0tta6bl4_fl::ppo::PolicyModel>),
}

impl Routing {
    /// The name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Routing::Cost => "cost",
            Routing::Etx => "etx",
            Routing::Predict(_) => "predict",
            Routing::Ppo(_) => "ppo",
        }
    }
}

/// Every running node's windows of its links and the predictions made: the shared
/// loop of [`linkpredict::LinkRisk`] (the daemon runs the same one), keyed by (node,
/// neighbour).
#[derive(Clone, Debug, Default)]
pub struct PredictorLoop {
    /// The windows, the predictions made and those that were invalid.
    pub risk: LinkRisk<(u32, u32)>,
}

impl PredictorLoop {
    /// Sample every running node's links once. With a `model`, predict and raise or
    /// restore costs; with `record`, push (node, neighbour, features) of every full
    /// window.
    pub fn tick(
        &mut self,
        sim: &mut Sim,
        window: usize,
        model: Option<&PredictorModel>,
        factor: f64,
        mut record: Option<&mut Vec<(u32, u32, [f32; FEATURES])>>,
    ) {
        for i in 0..sim.len() as u32 {
            if sim.status(i) != Status::Running {
                continue;
            }
            for k in 0..sim.links_of(i).len() {
                let link = &sim.links()[sim.links_of(i)[k] as usize];
                let j = if link.a == i { link.b } else { link.a };
                let name = sim.name(j).clone();
                let Some(f) = sim.node(i).link_features(&name) else {
                    continue;
                };
                let (x, action) = self.risk.observe((i, j), &f, window, model);
                if let (Some(x), Some(out)) = (x, record.as_deref_mut()) {
                    out.push((i, j, x));
                }
                match action {
                    RiskAction::Raise => {
                        sim.set_link_risk(i, j, factor);
                    }
                    RiskAction::Restore => {
                        sim.set_link_risk(i, j, 1.0);
                    }
                    RiskAction::Keep => {}
                }
            }
        }
    }
}

/// When each link the plan cuts goes down, as an offset from the fault.
pub fn cut_offsets(plan: &FaultPlan) -> BTreeMap<u32, Duration> {
    let mut cuts = BTreeMap::new();
    for (at, action) in &plan.actions {
        if let Action::LinkDown(l) = action {
            cuts.entry(*l).or_insert(*at);
        }
    }
    cuts
}

/// Labelled samples from iterations `range` of `scenario` (meant for
/// `degrade-then-fail`) on `topology`: every running node's view of each of its links,
/// every `SAMPLE_INTERVAL`, from 1 s before the fault until 1 s after the last action;
/// a sample is positive when its link is cut within `HORIZON` after it. Samples taken
/// once the link is already cut are left out (nothing to predict).
pub fn collect_samples(
    topology: &Topology,
    scenario: &Scenario,
    options: &RunOptions,
    range: Range<usize>,
) -> Result<Vec<Sample>, RunError> {
    scenario.validate(topology.len(), topology.links.len())?;
    let (base, _) = converge_with(
        topology,
        &options.sim,
        options.converge_max,
        options.start,
        options.threads,
    )?;
    let mut samples = Vec::new();
    for k in range {
        let mut sim = base.clone();
        let mut rng = Rng::seed(iteration_seed(options.sim.seed, k));
        sim.reseed(rng.next_u64());
        let plan = scenario.plan(&sim, &mut rng);
        let cuts = cut_offsets(&plan);
        let fault_at = sim.now() + Duration::from_secs(1);
        let last = plan.actions.last().map_or(Duration::ZERO, |(at, _)| *at);
        let end = fault_at + last + Duration::from_secs(1);
        let mut actions = plan.actions.iter().peekable();
        let mut lp = PredictorLoop::default();
        let mut tick = sim.now();
        let mut seen = Vec::new();
        while tick < end {
            while let Some((offset, action)) = actions.peek() {
                if fault_at + *offset > tick {
                    break;
                }
                action.apply(&mut sim);
                actions.next();
            }
            seen.clear();
            lp.tick(&mut sim, WINDOW, None, 1.0, Some(&mut seen));
            for &(i, j, x) in &seen {
                let Some(l) = sim.link_between(i, j) else {
                    continue;
                };
                let cut = cuts.get(&l).map(|&at| fault_at + at);
                if cut.is_some_and(|c| c <= tick) {
                    continue;
                }
                let down_soon = cut.is_some_and(|c| c <= tick + HORIZON);
                samples.push(Sample {
                    node: i,
                    x,
                    down_soon,
                });
            }
            tick = tick + SAMPLE_INTERVAL;
            sim.run_until(tick);
        }
        sim.take_observed();
    }
    Ok(samples)
}

/// Train a predictor from `train` iterations and measure it on `eval` iterations (other
/// seeds' draws), federatedly over the nodes.
pub fn train(
    topology: &Topology,
    scenario: &Scenario,
    options: &RunOptions,
    train: Range<usize>,
    eval: Range<usize>,
    cfg: FedTrainConfig,
) -> Result<(PredictorModel, TrainReport), TrainError> {
    let train_samples = collect_samples(topology, scenario, options, train)?;
    let eval_samples = collect_samples(topology, scenario, options, eval)?;
    Ok(linkpredict::train_federated(
        &train_samples,
        &eval_samples,
        HORIZON.as_millis() as u64,
        SAMPLE_INTERVAL.as_millis() as u64,
        WINDOW,
        cfg,
    )?)
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The twin could not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Training failed.
    #[error(transparent)]
    Model(#[from] PredictorError),
}

/// Whether a reroute of link `l` at `at` was needed: the link is cut before it (and not
/// yet detected) or within the horizon plus one second after it.
pub fn reroute_needed(cuts: &BTreeMap<u32, Instant>, l: u32, at: Instant) -> bool {
    cuts.get(&l)
        .is_some_and(|&cut| cut <= at + HORIZON + Duration::from_secs(1))
}
