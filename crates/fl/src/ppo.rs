//! PPO routing agents (Schulman et al. 2017, "Proximal Policy Optimization
//! Algorithms"): a policy that picks a link's cost multiplier from the link's local
//! observations, trained with the clipped surrogate objective and generalised
//! advantage estimation (GAE, Schulman et al. 2016), policies merged across nodes with
//! FedAvg ([`AggregatorKind::FedAvg`], the rule of [`crate::aggregate`]).
//!
//! Written on candle (tensors, autograd, AdamW) because no PPO crate builds here; the
//! loss is the one of the paper and of Stable-Baselines3's `PPO.train`: `-min(r A,
//! clip(r, 1-ε, 1+ε) A) + c_v (V - R)² - c_e H`, advantages normalised per minibatch.
//!
//! The network is two tanh MLPs on the same observation: a policy head (two hidden
//! layers, one logit per action) and a value head (one hidden layer). Acting is a
//! forward pass written out here (as [`crate::linkpredict`]'s inference: a candle graph
//! per link and per decision would cost more than the model); training runs the same
//! network in candle, and a test checks both give the same logits.
//!
//! Sans-IO: no clock, no threads, randomness from the caller's seeded RNG. The twin
//! (`x0tta6bl4_twin::ppo`) drives it: every node's agent observes its links, acts, and
//! after each episode each node's update is computed from its own steps and the
//! updates are FedAvg'd ([`federated_round`]). A policy travels as a file
//! ([`PolicyFile`]) with the SHA-256 of its canonical JSON, refused when it fails it.

use std::path::Path;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregatorKind, Context, Update};

/// The file format's name and version.
pub const FORMAT: &str = "x0tta6bl4-ppo-policy/1";

/// Largest multiplier a policy may put on a link's cost (the protocol's own bound on
/// `set_link_risk` is 1000).
pub const MULTIPLIER_MAX: f64 = 1000.0;

/// A policy: its shape, what its actions mean, how often it acts, and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyModel {
    /// Observation size.
    pub inputs: usize,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Action `a` puts `multipliers[a]` on the link's cost (1 = the base cost).
    pub multipliers: Vec<f64>,
    /// Interval between two decisions of an agent.
    pub decision_interval_ms: u64,
    /// Samples of a link's window (taken every decision) in an observation.
    pub window: usize,
    /// Parameters in [`PolicyModel::shapes`] order.
    pub params: Vec<f32>,
}

/// One decision: the action, its log-probability and the value estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Index into [`PolicyModel::multipliers`].
    pub action: usize,
    /// log π(action | observation).
    pub logp: f32,
    /// V(observation).
    pub value: f32,
}

/// How an agent picks its action.
pub enum Mode<'a, R: Rng> {
    /// The most probable action (evaluation, the daemon).
    Greedy,
    /// Drawn from the policy (training).
    Sample(&'a mut R),
}

impl PolicyModel {
    /// A freshly initialised policy (uniform in ±1/sqrt(fan_in), as PyTorch's
    /// `nn.Linear`; the last policy layer scaled by 0.01 so every action starts about
    /// equally likely, as Stable-Baselines3 does).
    pub fn new(
        inputs: usize,
        hidden: usize,
        multipliers: Vec<f64>,
        decision_interval_ms: u64,
        window: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let mut model = PolicyModel {
            inputs,
            hidden,
            multipliers,
            decision_interval_ms,
            window,
            params: Vec::new(),
        };
        let shapes = model.shapes();
        for (k, pair) in shapes.chunks(2).enumerate() {
            let bound = 1.0 / (pair[0][0] as f32).sqrt();
            let scale = if k == 2 { 0.01 } else { 1.0 };
            let u = Uniform::new_inclusive(-bound, bound).expect("bound > 0");
            let n: usize = pair[0].iter().product();
            model.params.extend((0..n).map(|_| u.sample(rng) * scale));
            model.params.extend(std::iter::repeat_n(0.0, pair[1][0]));
        }
        model
    }

    /// Number of actions.
    pub fn actions(&self) -> usize {
        self.multipliers.len()
    }

    /// Parameter tensors in flat order: policy `[in, h] [h] [h, h] [h] [h, A] [A]`,
    /// then value `[in, h] [h] [h, 1] [1]` (weights `[in, out]`).
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        let (i, h, a) = (self.inputs, self.hidden, self.actions());
        vec![
            vec![i, h],
            vec![h],
            vec![h, h],
            vec![h],
            vec![h, a],
            vec![a],
            vec![i, h],
            vec![h],
            vec![h, 1],
            vec![1],
        ]
    }

    fn num_params(&self) -> usize {
        self.shapes()
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// Logits and value of one observation (NaN when parameters or observation are not
    /// finite: [`PolicyModel::act`] checks).
    pub fn forward(&self, obs: &[f32]) -> (Vec<f64>, f64) {
        let mut at = 0;
        let mut layer = |x: &[f64], out: usize, tanh: bool| {
            let w = &self.params[at..at + x.len() * out];
            let b = &self.params[at + x.len() * out..at + x.len() * out + out];
            at += x.len() * out + out;
            (0..out)
                .map(|o| {
                    let z = x.iter().enumerate().fold(f64::from(b[o]), |z, (k, xk)| {
                        z + xk * f64::from(w[k * out + o])
                    });
                    if tanh {
                        z.tanh()
                    } else {
                        z
                    }
                })
                .collect::<Vec<f64>>()
        };
        let x: Vec<f64> = obs.iter().map(|&v| f64::from(v)).collect();
        let h = layer(&x, self.hidden, true);
        let h = layer(&h, self.hidden, true);
        let logits = layer(&h, self.actions(), false);
        let v = layer(&x, self.hidden, true);
        let value = layer(&v, 1, false)[0];
        (logits, value)
    }

    /// The agent's decision on `obs`, or `None` when the network's output is not
    /// finite (NaN parameters or observation): the caller ignores it and counts it.
    pub fn act<R: Rng>(&self, obs: &[f32], mode: Mode<'_, R>) -> Option<Decision> {
        if obs.len() != self.inputs {
            return None;
        }
        let (logits, value) = self.forward(obs);
        if !value.is_finite() || logits.iter().any(|l| !l.is_finite()) {
            return None;
        }
        let logp = log_softmax(&logits);
        let action = match mode {
            Mode::Greedy => (0..logp.len())
                .max_by(|&a, &b| logp[a].total_cmp(&logp[b]).then(b.cmp(&a)))
                .expect("at least one action"),
            Mode::Sample(rng) => {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                let mut pick = logp.len() - 1;
                for (a, lp) in logp.iter().enumerate() {
                    acc += lp.exp();
                    if u < acc {
                        pick = a;
                        break;
                    }
                }
                pick
            }
        };
        Some(Decision {
            action,
            logp: logp[action] as f32,
            value: value as f32,
        })
    }

    /// Why this policy cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.inputs == 0 || self.hidden == 0 || self.multipliers.is_empty() {
            return Err("inputs, hidden and multipliers must not be empty".into());
        }
        if self.params.len() != self.num_params() {
            return Err(format!(
                "{} parameters, a policy of this shape has {}",
                self.params.len(),
                self.num_params()
            ));
        }
        if self.params.iter().any(|p| !p.is_finite()) {
            return Err("a parameter is not a finite number".into());
        }
        if let Some(m) = self
            .multipliers
            .iter()
            .find(|m| !(1.0..=MULTIPLIER_MAX).contains(*m))
        {
            return Err(format!("multiplier {m} is outside 1..={MULTIPLIER_MAX}"));
        }
        if self.decision_interval_ms == 0 || self.window == 0 {
            return Err("decision_interval_ms and window must be at least 1".into());
        }
        Ok(())
    }
}

fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    logits.iter().map(|l| l - max - sum.ln()).collect()
}

/// One step of one agent: what it saw and did, and the reward that followed.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The observation.
    pub obs: Vec<f32>,
    /// The decision taken on it.
    pub decision: Decision,
    /// The reward until the agent's next decision.
    pub reward: f32,
}

/// PPO's settings (clip, λ, epochs, minibatch and value weight as Stable-Baselines3's
/// `PPO`; γ, learning rate and entropy weight set for short routing horizons).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoConfig {
    /// Discount per decision.
    pub gamma: f64,
    /// GAE's λ.
    pub lambda: f64,
    /// The clip range ε of the surrogate objective.
    pub clip: f64,
    /// Passes over the steps per update.
    pub epochs: usize,
    /// Steps per minibatch.
    pub minibatch: usize,
    /// AdamW's learning rate.
    pub lr: f64,
    /// Weight of the value loss.
    pub value_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            gamma: 0.9,
            lambda: 0.95,
            clip: 0.2,
            epochs: 10,
            minibatch: 64,
            lr: 1e-2,
            value_coef: 0.5,
            entropy_coef: 0.01,
        }
    }
}

/// GAE advantages and returns of one trajectory (consecutive steps of one agent; the
/// last one ends it, so nothing is bootstrapped after it).
pub fn advantages(steps: &[Step], gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let mut adv = vec![0.0f32; steps.len()];
    let mut next_value = 0.0f64;
    let mut running = 0.0f64;
    for t in (0..steps.len()).rev() {
        let v = f64::from(steps[t].decision.value);
        let delta = f64::from(steps[t].reward) + gamma * next_value - v;
        running = delta + gamma * lambda * running;
        adv[t] = running as f32;
        next_value = v;
    }
    let ret = adv
        .iter()
        .zip(steps)
        .map(|(a, s)| a + s.decision.value)
        .collect();
    (adv, ret)
}

/// Training failed.
#[derive(Debug, thiserror::Error)]
pub enum PpoError {
    /// The file cannot be read or written.
    #[error("PPO policy {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid policy file.
    #[error(
        "PPO policy {path}: {reason}; retrain it with `x0tta6bl4 twin train-ppo --out {path}`"
    )]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Training failed inside candle or the aggregation.
    #[error("PPO training: {0}")]
    Training(String),
}

impl From<candle_core::Error> for PpoError {
    fn from(e: candle_core::Error) -> Self {
        PpoError::Training(e.to_string())
    }
}

/// What one update measured on its steps (before it changed the policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct UpdateStats {
    /// Steps trained on.
    pub steps: usize,
    /// Mean reward per step.
    pub mean_reward: f64,
    /// Mean policy entropy over the last epoch (nats).
    pub entropy: f64,
    /// Share of steps whose probability ratio left the clip range in the last epoch.
    pub clip_fraction: f64,
}

/// PPO on `trajectories` from `model`'s parameters: returns the new parameters.
pub fn update(
    model: &PolicyModel,
    trajectories: &[Vec<Step>],
    cfg: PpoConfig,
    rng: &mut impl Rng,
) -> Result<(Vec<f32>, UpdateStats), PpoError> {
    model.check().map_err(PpoError::Training)?;
    let (mut obs, mut actions, mut old_logp, mut adv, mut ret) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut reward_sum = 0.0f64;
    for t in trajectories {
        let (a, r) = advantages(t, cfg.gamma, cfg.lambda);
        for (s, (a, r)) in t.iter().zip(a.into_iter().zip(r)) {
            if s.obs.len() != model.inputs {
                return Err(PpoError::Training(format!(
                    "an observation of {} values, the policy takes {}",
                    s.obs.len(),
                    model.inputs
                )));
            }
            obs.extend_from_slice(&s.obs);
            actions.push(s.decision.action as u32);
            old_logp.push(s.decision.logp);
            adv.push(a);
            ret.push(r);
            reward_sum += f64::from(s.reward);
        }
    }
    let n = actions.len();
    let mut stats = UpdateStats {
        steps: n,
        mean_reward: reward_sum / n.max(1) as f64,
        ..UpdateStats::default()
    };
    if n == 0 {
        return Ok((model.params.clone(), stats));
    }
    let vars = vars_of(model)?;
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..cfg.epochs.max(1) {
        order.shuffle(rng);
        let (mut entropy, mut clipped) = (0.0, 0.0);
        for b in order.chunks(cfg.minibatch.max(2)) {
            let pick = |v: &[f32]| b.iter().map(|&i| v[i]).collect::<Vec<f32>>();
            let mut x = Vec::with_capacity(b.len() * model.inputs);
            for &i in b {
                x.extend_from_slice(&obs[i * model.inputs..(i + 1) * model.inputs]);
            }
            let dev = &Device::Cpu;
            let x = Tensor::from_vec(x, (b.len(), model.inputs), dev)?;
            let a: Vec<u32> = b.iter().map(|&i| actions[i]).collect();
            let a = Tensor::from_vec(a, (b.len(), 1), dev)?;
            let old = Tensor::from_vec(pick(&old_logp), b.len(), dev)?;
            let adv_b = normalised(&pick(&adv));
            let adv_b = Tensor::from_vec(adv_b, b.len(), dev)?;
            let ret_b = Tensor::from_vec(pick(&ret), b.len(), dev)?;
            let (logits, value) = forward_tensor(&vars, &x)?;
            let logp_all = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let logp = logp_all.gather(&a, 1)?.squeeze(1)?;
            let ratio = (logp - old)?.exp()?;
            let surr1 = (&ratio * &adv_b)?;
            let surr2 = (ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)? * &adv_b)?;
            let policy_loss = surr1.minimum(&surr2)?.mean_all()?.neg()?;
            let value_loss = (value - ret_b)?.sqr()?.mean_all()?;
            let ent = (logp_all.exp()? * &logp_all)?
                .sum(D::Minus1)?
                .neg()?
                .mean_all()?;
            let loss =
                ((policy_loss + (value_loss * cfg.value_coef)?)? - (&ent * cfg.entropy_coef)?)?;
            opt.backward_step(&loss)?;
            entropy += f64::from(ent.to_scalar::<f32>()?) * b.len() as f64;
            let r: Vec<f32> = ratio.to_vec1()?;
            clipped += r
                .iter()
                .filter(|r| (f64::from(**r) - 1.0).abs() > cfg.clip)
                .count() as f64;
        }
        stats.entropy = entropy / n as f64;
        stats.clip_fraction = clipped / n as f64;
    }
    let mut out = Vec::with_capacity(model.params.len());
    for v in &vars {
        out.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
    }
    if out.iter().any(|p| !p.is_finite()) {
        return Err(PpoError::Training(
            "the update made a parameter NaN or infinite (lower the learning rate)".into(),
        ));
    }
    Ok((out, stats))
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.len().max(1) as f32;
    let mean = v.iter().sum::<f32>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
    let sd = var.sqrt() + 1e-8;
    v.iter().map(|x| (x - mean) / sd).collect()
}

fn vars_of(model: &PolicyModel) -> Result<Vec<Var>, PpoError> {
    let mut vars = Vec::new();
    let mut at = 0;
    for s in model.shapes() {
        let n: usize = s.iter().product();
        vars.push(Var::from_slice(
            &model.params[at..at + n],
            s.as_slice(),
            &Device::Cpu,
        )?);
        at += n;
    }
    Ok(vars)
}

/// Logits `[B, A]` and values `[B]` of a batch, the network of
/// [`PolicyModel::forward`] in candle.
fn forward_tensor(v: &[Var], x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let dense =
        |x: &Tensor, w: &Var, b: &Var| x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor());
    let h = dense(x, &v[0], &v[1])?.tanh()?;
    let h = dense(&h, &v[2], &v[3])?.tanh()?;
    let logits = dense(&h, &v[4], &v[5])?;
    let hv = dense(x, &v[6], &v[7])?.tanh()?;
    let value = dense(&hv, &v[8], &v[9])?.squeeze(1)?;
    Ok((logits, value))
}

/// What a federated round did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoundStats {
    /// Participants (nodes with steps).
    pub participants: usize,
    /// Steps over all of them.
    pub steps: usize,
    /// Mean reward per step.
    pub mean_reward: f64,
    /// Mean entropy of the policy, weighted by steps.
    pub entropy: f64,
    /// Mean clip fraction, weighted by steps.
    pub clip_fraction: f64,
}

/// One federated round: each node's PPO update from `model` on its own trajectories
/// (`per_node[k]`), merged with FedAvg (weighted by steps) into `model`.
pub fn federated_round(
    model: &mut PolicyModel,
    per_node: &[Vec<Vec<Step>>],
    cfg: PpoConfig,
    rng: &mut impl Rng,
) -> Result<RoundStats, PpoError> {
    let mut updates = Vec::new();
    let mut stats = RoundStats::default();
    for trajectories in per_node {
        let (local, s) = update(model, trajectories, cfg, rng)?;
        if s.steps == 0 {
            continue;
        }
        let w = s.steps as f64;
        stats.participants += 1;
        stats.steps += s.steps;
        stats.mean_reward += s.mean_reward * w;
        stats.entropy += s.entropy * w;
        stats.clip_fraction += s.clip_fraction * w;
        updates.push(Update {
            values: local
                .iter()
                .zip(&model.params)
                .map(|(l, g)| l - g)
                .collect(),
            num_samples: s.steps as u64,
        });
    }
    if updates.is_empty() {
        return Ok(stats);
    }
    let total = stats.steps as f64;
    stats.mean_reward /= total;
    stats.entropy /= total;
    stats.clip_fraction /= total;
    let merged = AggregatorKind::FedAvg
        .build()
        .aggregate(&updates, &Context::default())
        .map_err(|e| PpoError::Training(e.to_string()))?;
    for (g, d) in model.params.iter_mut().zip(&merged.values) {
        *g += d;
    }
    model.check().map_err(PpoError::Training)?;
    Ok(stats)
}

/// A policy file: the policy and the SHA-256 (hex) of its canonical JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The policy.
    pub model: PolicyModel,
    /// SHA-256 of `serde_json::to_vec(&model)`, hex.
    pub sha256: String,
}

impl PolicyFile {
    /// Check a file's bytes: format, hash, shape, parameters. `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<PolicyModel, PpoError> {
        crate::hashed::open(bytes, FORMAT, "PPO policy", PolicyModel::check).map_err(|reason| {
            PpoError::Invalid {
                path: path.to_owned(),
                reason,
            }
        })
    }

    /// Read and check a policy file.
    pub fn load(path: &Path) -> Result<PolicyModel, PpoError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PpoError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Write the file of `model` atomically (a crash leaves the old file or the new).
    pub fn save(model: &PolicyModel, path: &Path) -> Result<(), PpoError> {
        crate::hashed::save(model, FORMAT, path).map_err(|source| PpoError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A contextual bandit: the observation says which of 3 actions pays 1 (the others
    /// pay 0). A random policy earns 1/3; PPO must learn to earn > 0.9.
    fn bandit_round(model: &mut PolicyModel, rng: &mut ChaCha8Rng, nodes: usize) -> RoundStats {
        let mut per_node = Vec::new();
        for _ in 0..nodes {
            let mut trajectories = Vec::new();
            for _ in 0..32 {
                let right = rng.random_range(0..3usize);
                let mut obs = vec![0.0f32; 3];
                obs[right] = 1.0;
                let d = model.act(&obs, Mode::Sample(rng)).unwrap();
                let reward = if d.action == right { 1.0 } else { 0.0 };
                trajectories.push(vec![Step {
                    obs,
                    decision: d,
                    reward,
                }]);
            }
            per_node.push(trajectories);
        }
        federated_round(model, &per_node, PpoConfig::default(), rng).unwrap()
    }

    #[test]
    fn ppo_learns_a_contextual_bandit_federatedly_and_deterministically() {
        let train = |seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut model = PolicyModel::new(3, 16, vec![1.0, 2.0, 4.0], 100, 1, &mut rng);
            let first = bandit_round(&mut model, &mut rng, 4);
            let mut last = first.clone();
            for _ in 0..40 {
                last = bandit_round(&mut model, &mut rng, 4);
            }
            (model, first, last)
        };
        let (model, first, last) = train(7);
        assert!(first.mean_reward < 0.5, "{first:?}");
        assert!(last.mean_reward > 0.9, "{last:?}");
        assert_eq!(last.participants, 4);
        for right in 0..3 {
            let mut obs = vec![0.0f32; 3];
            obs[right] = 1.0;
            let d = model.act::<ChaCha8Rng>(&obs, Mode::Greedy).unwrap();
            assert_eq!(d.action, right);
        }
        // Same seed, same bits; another seed, another policy.
        assert_eq!(train(7).0, model);
        assert_ne!(train(8).0.params, model.params);
    }

    /// A delayed reward: the action at step 0 decides the reward at step 2 only; with
    /// GAE the credit flows back (a policy that ignores γ cannot learn it).
    #[test]
    fn gae_carries_a_delayed_reward_back_to_the_action_that_earned_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut model = PolicyModel::new(3, 16, vec![1.0, 2.0], 100, 1, &mut rng);
        let cfg = PpoConfig {
            gamma: 0.99,
            ..PpoConfig::default()
        };
        let mut last = 0.0;
        for _ in 0..40 {
            let mut trajectories = Vec::new();
            let mut total = 0.0;
            for _ in 0..64 {
                let mut steps = Vec::new();
                let mut chose = 0;
                for t in 0..3 {
                    let mut obs = vec![0.0f32; 3];
                    obs[t] = 1.0;
                    let d = model.act(&obs, Mode::Sample(&mut rng)).unwrap();
                    if t == 0 {
                        chose = d.action;
                    }
                    let reward = if t == 2 && chose == 1 { 1.0 } else { 0.0 };
                    total += reward;
                    steps.push(Step {
                        obs,
                        decision: d,
                        reward,
                    });
                }
                trajectories.push(steps);
            }
            last = total / 64.0;
            federated_round(&mut model, &[trajectories], cfg, &mut rng).unwrap();
        }
        assert!(last > 0.9, "share of episodes rewarded: {last}");
        let d = model
            .act::<ChaCha8Rng>(&[1.0, 0.0, 0.0], Mode::Greedy)
            .unwrap();
        assert_eq!(d.action, 1);
    }

    #[test]
    fn advantages_follow_the_gae_recursion() {
        let step = |reward: f32, value: f32| Step {
            obs: vec![0.0],
            decision: Decision {
                action: 0,
                logp: 0.0,
                value,
            },
            reward,
        };
        let steps = [step(1.0, 0.5), step(0.0, 0.2), step(2.0, 1.0)];
        let (adv, ret) = advantages(&steps, 0.9, 0.8);
        let d2 = 2.0 - 1.0;
        let d1 = 0.0 + 0.9 * 1.0 - 0.2;
        let d0 = 1.0 + 0.9 * 0.2 - 0.5;
        let a1 = d1 + 0.72 * d2;
        let a0 = d0 + 0.72 * a1;
        for (got, want) in adv.iter().zip([a0, a1, d2]) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{adv:?}");
        }
        assert!((ret[0] - (adv[0] + 0.5)).abs() < 1e-6);
    }

    #[test]
    fn the_candle_network_and_the_written_out_one_agree() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let model = PolicyModel::new(4, 8, vec![1.0, 1.5, 2.0], 100, 1, &mut rng);
        let obs = [0.3f32, -1.2, 0.0, 2.5];
        let (logits, value) = model.forward(&obs);
        let vars = vars_of(&model).unwrap();
        let x = Tensor::from_vec(obs.to_vec(), (1, 4), &Device::Cpu).unwrap();
        let (l, v) = forward_tensor(&vars, &x).unwrap();
        let l: Vec<f32> = l.squeeze(0).unwrap().to_vec1().unwrap();
        let v: Vec<f32> = v.to_vec1().unwrap();
        for (a, b) in l.iter().zip(&logits) {
            assert!((f64::from(*a) - b).abs() < 1e-5);
        }
        assert!((f64::from(v[0]) - value).abs() < 1e-5);
    }

    #[test]
    fn a_policy_file_that_fails_its_check_is_refused_and_nan_outputs_are_none() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let model = PolicyModel::new(2, 4, vec![1.0, 8.0], 200, 5, &mut rng);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        PolicyFile::save(&model, &path).unwrap();
        assert_eq!(PolicyFile::load(&path).unwrap(), model);
        let text = std::fs::read_to_string(&path).unwrap();
        let altered = text.replacen(
            "\"decision_interval_ms\": 200",
            "\"decision_interval_ms\": 300",
            1,
        );
        assert_ne!(altered, text);
        let e = PolicyFile::from_bytes(altered.as_bytes(), "policy.json").unwrap_err();
        assert!(e.to_string().contains("hash check failed"), "{e}");
        assert!(e.to_string().contains("twin train-ppo"), "{e}");
        for bad in [&b""[..], b"{}", b"[1]", &text.as_bytes()[..text.len() / 2]] {
            assert!(PolicyFile::from_bytes(bad, "policy.json").is_err());
        }
        // A multiplier out of range, or a NaN parameter, under a matching hash.
        for broken in [
            PolicyModel {
                multipliers: vec![1.0, 2000.0],
                ..model.clone()
            },
            PolicyModel {
                multipliers: vec![0.5, 2.0],
                ..model.clone()
            },
            {
                let mut m = model.clone();
                m.params[3] = f32::NAN;
                m
            },
        ] {
            let file = PolicyFile {
                format: FORMAT.into(),
                sha256: crate::hashed::digest(&broken),
                model: broken.clone(),
            };
            let bytes = serde_json::to_vec(&file).unwrap();
            assert!(PolicyFile::from_bytes(&bytes, "p").is_err());
        }
        let mut nan = model.clone();
        nan.params[0] = f32::NAN;
        assert_eq!(nan.act::<ChaCha8Rng>(&[1.0, 1.0], Mode::Greedy), None);
        assert_eq!(
            model.act::<ChaCha8Rng>(&[f32::NAN, 1.0], Mode::Greedy),
            None
        );
        assert_eq!(model.act::<ChaCha8Rng>(&[1.0], Mode::Greedy), None);
        assert!(model.act::<ChaCha8Rng>(&[1.0, 1.0], Mode::Greedy).is_some());
    }
}
