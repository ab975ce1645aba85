//! PPO routing agents in the twin (issue 15, item 3): every node runs an agent per link
//! that, every `decision_interval_ms`, puts a cost multiplier on the link
//! (`x0tta6bl4_proto::Node::set_link_risk`, flooded by the link-state protocol, so
//! routes stay loop-free) from what the node sees locally:
//!
//! - the link's probe window, the six features of [`linkpredict::LinkWindow`] (loss now,
//!   its change and maximum, jitter and its change, queueing);
//! - the share of the flows the node forwards that leave over this link;
//! - the multiplier the link carries now (log scale).
//!
//! The reward of a node's agents over a decision interval is the delivery ratio of the
//! flows the node forwarded (source included, destination not) minus their mean
//! one-way latency in units of [`LATENCY_UNIT`]; a node that forwarded no flow gets
//! the mean over all flows (every agent works for the mesh). The base cost is ETX
//! (`protocol.link_cost = "etx"`): a policy that keeps every multiplier at 1 routes
//! exactly as `--routing etx`.
//!
//! All agents share one policy ([`x0tta6bl4_fl::ppo::PolicyModel`]); [`train`] runs
//! episodes (one iteration of a scenario on one of several topologies each, the
//! measurement loop of `twin run`), and after each episode every node's PPO update on
//! its own agents' steps is computed and the updates are merged with FedAvg
//! ([`x0tta6bl4_fl::ppo::federated_round`]). Evaluation (`twin run --routing ppo`) acts
//! greedily with the same loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use x0tta6bl4_fl::linkpredict::{LinkRisk, FEATURES};
use x0tta6bl4_fl::ppo::{self, Mode, PolicyModel, PpoConfig, PpoError, Step};
use x0tta6bl4_proto::{Instant, Rng};

use crate::check::{Walk, Walks};
use crate::engine::{Sim, Status};
use crate::runner::{converge_with, iteration_seed, RunError, RunOptions};
use crate::scenario::{affected_flows, run_iteration_with, Scenario};
use crate::topology::Topology;

/// The multipliers an agent chooses from.
pub const MULTIPLIERS: [f64; 5] = [1.0, 1.5, 2.0, 4.0, 8.0];
/// Observation size: the link window's features, the flow share, the multiplier.
pub const INPUTS: usize = FEATURES + 2;
/// Default interval between two decisions of an agent (and two samples of its window).
pub const DECISION_INTERVAL: Duration = Duration::from_millis(200);
/// Default samples per window (1 s).
pub const WINDOW: usize = 5;
/// Default hidden units per layer.
pub const HIDDEN: usize = 32;
/// Latency that costs as much reward as losing every message: 100 ms.
pub const LATENCY_UNIT: f64 = 100.0;

/// A fresh policy for the twin's agents.
pub fn new_policy(seed: u64) -> PolicyModel {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    PolicyModel::new(
        INPUTS,
        HIDDEN,
        MULTIPLIERS.to_vec(),
        DECISION_INTERVAL.as_millis() as u64,
        WINDOW,
        &mut rng,
    )
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowInterval {
    sent: u64,
    delivered: u64,
    latency_ms_sum: f64,
}

impl FlowInterval {
    /// The flow's reward over the interval, `None` when it sent nothing.
    fn reward(&self) -> Option<f64> {
        if self.sent == 0 {
            return None;
        }
        let delivery = (self.delivered as f64 / self.sent as f64).min(1.0);
        let latency = if self.delivered == 0 {
            0.0
        } else {
            self.latency_ms_sum / self.delivered as f64
        };
        Some(delivery - latency / LATENCY_UNIT)
    }
}

/// Every node's agents during one iteration: their links' windows, the flows they
/// forward, their decisions and (training) their steps.
pub struct Agents {
    policy: Arc<PolicyModel>,
    /// `Some` while training: actions are drawn from the policy.
    sampling: Option<ChaCha8Rng>,
    windows: LinkRisk<(u32, u32)>,
    next_decision: Option<Instant>,
    /// Per flow, the (node, next hop) pairs of its path at the last decision.
    paths: BTreeMap<(u32, u32), Vec<(u32, u32)>>,
    interval: BTreeMap<(u32, u32), FlowInterval>,
    /// Decisions waiting for their reward, by (node, neighbour).
    pending: BTreeMap<(u32, u32), (Vec<f32>, ppo::Decision)>,
    /// Each agent's steps (training only), by (node, neighbour).
    pub steps: BTreeMap<(u32, u32), Vec<Step>>,
    /// Decisions made.
    pub decisions: u64,
    /// Decisions whose network output was NaN or infinite: ignored (the link keeps its
    /// multiplier).
    pub invalid: u64,
    /// Multiplier changes applied.
    pub changes: u64,
}

impl Agents {
    /// Agents acting greedily with `policy` (evaluation).
    pub fn greedy(policy: Arc<PolicyModel>) -> Self {
        Agents {
            policy,
            sampling: None,
            windows: LinkRisk::default(),
            next_decision: None,
            paths: BTreeMap::new(),
            interval: BTreeMap::new(),
            pending: BTreeMap::new(),
            steps: BTreeMap::new(),
            decisions: 0,
            invalid: 0,
            changes: 0,
        }
    }

    /// Agents drawing their actions from `policy` with a seeded RNG, recording steps.
    pub fn training(policy: Arc<PolicyModel>, seed: u64) -> Self {
        Agents {
            sampling: Some(ChaCha8Rng::seed_from_u64(seed)),
            ..Agents::greedy(policy)
        }
    }

    /// Flow (`source`, `destination`) sent a message.
    pub fn sent(&mut self, source: u32, destination: u32) {
        self.interval.entry((source, destination)).or_default().sent += 1;
    }

    /// A message of flow (`source`, `destination`) arrived after `latency_us`.
    pub fn arrived(&mut self, source: u32, destination: u32, latency_us: u64) {
        let f = self.interval.entry((source, destination)).or_default();
        f.delivered += 1;
        f.latency_ms_sum += latency_us as f64 / 1e3;
    }

    /// Called every flow tick: when a decision is due, reward the last decisions, look
    /// at the flows' paths, and let every running node's agents decide.
    pub fn tick(&mut self, sim: &mut Sim, flows: &[(u32, u32)], now: Instant) {
        if self.next_decision.is_some_and(|at| now < at) {
            return;
        }
        self.next_decision = Some(now + Duration::from_millis(self.policy.decision_interval_ms));
        self.reward_pending();
        let shares = self.trace_paths(sim, flows);
        for i in 0..sim.len() as u32 {
            if sim.status(i) != Status::Running {
                continue;
            }
            for k in 0..sim.links_of(i).len() {
                let link = &sim.links()[sim.links_of(i)[k] as usize];
                let j = if link.a == i { link.b } else { link.a };
                self.decide(sim, i, j, shares.get(&(i, j)).copied().unwrap_or(0.0));
            }
        }
    }

    fn decide(&mut self, sim: &mut Sim, i: u32, j: u32, share: f64) {
        let Some(f) = sim.node(i).link_features(sim.name(j)) else {
            return;
        };
        let (Some(x), _) = self.windows.observe((i, j), &f, self.policy.window, None) else {
            return;
        };
        let mut obs = x.to_vec();
        obs.push(share as f32);
        let top = MULTIPLIERS[MULTIPLIERS.len() - 1];
        obs.push((f.risk_factor.max(1.0).ln() / top.ln()) as f32);
        self.decisions += 1;
        let decision = match self.sampling.as_mut() {
            Some(rng) => self.policy.act(&obs, Mode::Sample(rng)),
            None => self.policy.act::<ChaCha8Rng>(&obs, Mode::Greedy),
        };
        let Some(decision) = decision else {
            self.invalid += 1;
            return;
        };
        let multiplier = self.policy.multipliers[decision.action];
        if multiplier != f.risk_factor && sim.set_link_risk(i, j, multiplier) {
            self.changes += 1;
        }
        if self.sampling.is_some() {
            self.pending.insert((i, j), (obs, decision));
        }
    }

    /// Walk every flow's path; returns, per (node, neighbour), the share of the flows
    /// the node forwards that leave over that link.
    fn trace_paths(&mut self, sim: &Sim, flows: &[(u32, u32)]) -> BTreeMap<(u32, u32), f64> {
        self.paths.clear();
        let mut per_node: BTreeMap<u32, u64> = BTreeMap::new();
        let mut per_link: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut walks = Walks::towards(sim, flows.first().map_or(0, |f| f.1));
        let mut by_destination = flows.to_vec();
        by_destination.sort_by_key(|&(s, d)| (d, s));
        for (s, d) in by_destination {
            walks.retarget(d);
            let Walk::Reached(path) = walks.walk(s) else {
                continue;
            };
            let hops: Vec<(u32, u32)> = path.windows(2).map(|w| (w[0], w[1])).collect();
            for &(a, b) in &hops {
                *per_node.entry(a).or_default() += 1;
                *per_link.entry((a, b)).or_default() += 1;
            }
            self.paths.insert((s, d), hops);
        }
        per_link
            .into_iter()
            .map(|((a, b), n)| ((a, b), n as f64 / per_node[&a] as f64))
            .collect()
    }

    /// Each node's reward over the interval just ended.
    fn node_rewards(&self) -> (BTreeMap<u32, f64>, f64) {
        let mut sums: BTreeMap<u32, (f64, u32)> = BTreeMap::new();
        let (mut all, mut count) = (0.0, 0u32);
        for (flow, stats) in &self.interval {
            let Some(r) = stats.reward() else { continue };
            all += r;
            count += 1;
            for &(node, _) in self.paths.get(flow).into_iter().flatten() {
                let e = sums.entry(node).or_default();
                e.0 += r;
                e.1 += 1;
            }
        }
        let mean = if count == 0 {
            0.0
        } else {
            all / f64::from(count)
        };
        let rewards = sums
            .into_iter()
            .map(|(n, (s, c))| (n, s / f64::from(c)))
            .collect();
        (rewards, mean)
    }

    fn reward_pending(&mut self) {
        let (rewards, mean) = self.node_rewards();
        self.interval.clear();
        for ((i, j), (obs, decision)) in std::mem::take(&mut self.pending) {
            let reward = rewards.get(&i).copied().unwrap_or(mean) as f32;
            self.steps.entry((i, j)).or_default().push(Step {
                obs,
                decision,
                reward,
            });
        }
    }

    /// End of the iteration: the last decisions get the last interval's reward.
    pub fn finish(&mut self) {
        self.reward_pending();
    }

    /// The recorded steps grouped by node (the federation's participants), one
    /// trajectory per link.
    pub fn steps_by_node(&mut self) -> Vec<Vec<Vec<Step>>> {
        let mut by_node: BTreeMap<u32, Vec<Vec<Step>>> = BTreeMap::new();
        for ((i, _), steps) in std::mem::take(&mut self.steps) {
            by_node.entry(i).or_default().push(steps);
        }
        by_node.into_values().collect()
    }
}

/// One training episode's figures.
#[derive(Clone, Debug, Serialize)]
pub struct EpisodeReport {
    /// Episode number, from 0.
    pub episode: usize,
    /// The topology it ran on (as given).
    pub topology: String,
    /// Delivery ratio of the measured flows.
    pub delivery_ratio: f64,
    /// Mean reward per agent step.
    pub mean_reward: f64,
    /// Agent steps trained on.
    pub steps: usize,
    /// Nodes whose updates were averaged.
    pub participants: usize,
    /// Policy entropy (nats; ln 5 = 1.61 is uniform).
    pub entropy: f64,
    /// Share of steps whose ratio was clipped.
    pub clip_fraction: f64,
    /// Multiplier changes the agents made.
    pub changes: u64,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The twin could not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// PPO failed.
    #[error(transparent)]
    Ppo(#[from] PpoError),
}

/// Train a policy from `policy` over `episodes` episodes: episode `e` runs iteration
/// `e` (draws from `iteration_seed(seed, e)`) of `scenario` on
/// `topologies[e % len]` (each converged once) with sampling agents, then the nodes'
/// PPO updates are FedAvg'd into the policy. Deterministic per seed. `progress` gets
/// every episode's report.
pub fn train(
    topologies: &[(String, Topology)],
    scenario: &Scenario,
    options: &RunOptions,
    episodes: usize,
    mut policy: PolicyModel,
    cfg: PpoConfig,
    progress: &mut dyn FnMut(&EpisodeReport),
) -> Result<(PolicyModel, Vec<EpisodeReport>), TrainError> {
    let mut bases = Vec::new();
    for (_, topology) in topologies {
        scenario
            .validate(topology.len(), topology.links.len())
            .map_err(RunError::from)?;
        let (base, _) = converge_with(
            topology,
            &options.sim,
            options.converge_max,
            options.start,
            options.threads,
        )?;
        bases.push(base);
    }
    let seed = options.sim.seed;
    let mut train_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5050_4f00);
    let mut reports = Vec::with_capacity(episodes);
    for e in 0..episodes {
        let which = e % bases.len().max(1);
        let mut sim = bases[which].clone();
        let mut rng = Rng::seed(iteration_seed(seed, e));
        sim.reseed(rng.next_u64());
        let plan = scenario.plan(&sim, &mut rng);
        let flows = affected_flows(&sim, &plan, options.measurement.flows_max, &mut rng);
        let mut agents = Agents::training(Arc::new(policy.clone()), iteration_seed(seed, e));
        let result = run_iteration_with(
            &mut sim,
            &plan,
            &flows,
            &options.measurement,
            &mut rng,
            Some(&mut agents),
        );
        let per_node = agents.steps_by_node();
        let stats = ppo::federated_round(&mut policy, &per_node, cfg, &mut train_rng)?;
        let r = &result.routing;
        let report = EpisodeReport {
            episode: e,
            topology: topologies[which].0.clone(),
            delivery_ratio: r.delivered as f64 / r.sent.max(1) as f64,
            mean_reward: stats.mean_reward,
            steps: stats.steps,
            participants: stats.participants,
            entropy: stats.entropy,
            clip_fraction: stats.clip_fraction,
            changes: agents.changes,
        };
        progress(&report);
        reports.push(report);
    }
    Ok((policy, reports))
}
