//! The participation model behind `x0tta6bl4 dao simulate`, and the simulated proposal
//! history behind `x0tta6bl4 dao predict`.
//!
//! An electorate of N operators (one unit of voting power each, as in the contracts) faces
//! M proposals, run through the real [`Engine`] (its delegation, quadratic ballots, snapshot
//! tally and quorum), three times with the same random draws:
//!
//! 1. **direct**: operators vote only themselves;
//! 2. **delegation**: a share of operators delegate (liquid, transitive) to others, chosen
//!    in proportion to their engagement, so power flows towards active voters;
//! 3. **delegation + auto-proxy**: in addition, a share of operators opted in to the
//!    auto-proxy with the policy "follow the prediction above a confidence threshold"
//!    ([`crate::predict`]). At 3/4 of the voting period the proxy asks the outcome predictor
//!    (a logistic regression trained beforehand on a separate simulated history, another
//!    seed, scenario 2) for P(for wins) from the discussion's sentiment, the proposer's
//!    history, the turnout and the margin so far, and votes for each opted-in operator whose
//!    power is not yet cast when the prediction's confidence reaches the threshold; every
//!    vote and every refusal is recorded with its reason.
//!
//! Abstention is calibrated to the ~5 % of voting power cast per proposal that real DAOs
//! see (Falk et al. 2024: Aave, Compound, Lido, Uniswap): each operator's engagement is drawn
//! from Beta(0.25, 4.75) (mean 0.05, a long tail of a few very active operators), scaled per
//! proposal by a salience factor drawn from LogNormal(-σ²/2, σ = 0.5) (mean 1).
//!
//! Proposals: the proposer is drawn in proportion to engagement (active operators propose
//! more); each operator has a proposal quality ~ Normal(0, 0.15) added to the proposal's
//! approval ~ Uniform(0.2, 0.9) (clamped to 0.05 … 0.95), the chance that a voter or a
//! commenter is for it. Each proposal gets 0 to 5 discussion comments drawn from a bank of
//! written operator comments (a quarter neutral questions, the others supportive with
//! probability = approval); the proposal's sentiment is VADER's mean compound score over its
//! text and comments.
//!
//! Participation = share of the voting power registered at the snapshot that was cast,
//! directly or through delegation or proxy (`represented / eligible` of the engine's tally).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, LogNormal, Normal};
use serde::Serialize;

use crate::engine::{Action, Engine, Refused, Rules, Support};
use crate::predict::{
    self, Evaluation, Features, Observation, Predictor, ProxyContext, ProxyDecision, ProxyPolicy,
};
use crate::sentiment;

/// The electorate model's parameters.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub voters: usize,
    pub proposals: usize,
    pub seed: u64,
    /// Beta(alpha, beta) of each operator's engagement: its chance to vote on a proposal of
    /// average salience. Mean alpha / (alpha + beta).
    pub engagement_alpha: f64,
    pub engagement_beta: f64,
    /// σ of the log-normal salience of each proposal (mean 1).
    pub salience_sigma: f64,
    /// σ of each operator's proposal quality, added to their proposals' approval.
    pub quality_sigma: f64,
    /// Share of operators who delegate their power (scenarios 2 and 3).
    pub delegation_share: f64,
    /// Share of operators who opted in to the auto-proxy (scenario 3).
    pub proxy_share: f64,
    /// Confidence an opted-in operator asks of the prediction before the proxy votes.
    pub proxy_threshold: f64,
    /// Proposals of the separate history the proxy's predictor is trained on.
    pub train_proposals: usize,
    pub rules: Rules,
}

impl Model {
    pub fn new(voters: usize, proposals: usize, seed: u64) -> Self {
        Model {
            voters,
            proposals,
            seed,
            engagement_alpha: 0.25,
            engagement_beta: 4.75,
            salience_sigma: 0.5,
            quality_sigma: 0.15,
            delegation_share: 0.35,
            proxy_share: 0.20,
            proxy_threshold: 0.60,
            train_proposals: 300,
            rules: Rules::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(2..=crate::engine::MAX_OPERATORS).contains(&self.voters) {
            return Err(format!(
                "--voters {} is out of range: 2 to {} (the registry's bound)",
                self.voters,
                crate::engine::MAX_OPERATORS
            ));
        }
        if !(1..=10_000).contains(&self.proposals) {
            return Err(format!(
                "--proposals {} is out of range: 1 to 10000",
                self.proposals
            ));
        }
        Ok(())
    }
}

/// One scenario's measured participation.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: &'static str,
    /// Mean over proposals of the share of voting power cast by operators themselves.
    pub direct_turnout: f64,
    /// Mean over proposals of the share of voting power cast directly or through delegation
    /// or proxy.
    pub participation: f64,
    /// Proposals that reached the quorum.
    pub quorum_reached: usize,
    /// Proposals that succeeded (quorum and more for than against).
    pub succeeded: usize,
    /// Votes the auto-proxy cast (scenario 3).
    pub proxy_votes: usize,
    /// Times the auto-proxy refused to vote for an operator whose power was not cast, because
    /// the prediction's confidence was below the threshold (scenario 3).
    pub proxy_declined: usize,
    /// Operators with a delegation in force.
    pub delegating: usize,
}

/// A proxy decision for an operator whose power was not cast, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyRecord {
    pub proposal: u64,
    pub operator: String,
    /// "for", "against", "abstain", or "none" when the proxy refused.
    pub support: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: Model,
    pub scenarios: Vec<ScenarioResult>,
    /// The auto-proxy's predictor (scenario 3), trained on `model.train_proposals` proposals
    /// of another seed's history.
    pub predictor: Option<Predictor>,
    /// The first proxy votes and refusals of scenario 3, with their reasons (at most 3 each).
    pub proxy_examples: Vec<ProxyRecord>,
}

/// Operator i's id.
fn op(i: usize) -> String {
    format!("spiffe://sim.mesh/operator/{i}")
}

const ADMIN: &str = "registrar";

/// Written operator comments, by side.
const SUPPORTIVE: &[&str] = &[
    "Great idea, this makes the mesh more resilient.",
    "Support: failover gets faster and uptime improves.",
    "Good change, we tried it on our site and it is stable.",
    "Makes sense to me, I agree.",
    "Yes please, this keeps the nodes secure and reliable.",
    "+1, well tested, no problems here.",
    "Love it. Redundancy is worth the extra traffic.",
    "Finally! Thanks for doing the measurements, very helpful.",
];
const CRITICAL: &[&str] = &[
    "This will cause another outage like last month.",
    "Against: it doubles the latency on long paths.",
    "Bad idea, links will start flapping.",
    "No. Too risky without a rollback plan.",
    "This hurts small nodes, they become unreachable under congestion.",
    "I worry this leaves unpatched nodes compromised.",
    "Terrible timing, we are still recovering from the downtime.",
    "Not convinced, the last change made things worse.",
];
const NEUTRAL: &[&str] = &[
    "What is the expected traffic overhead?",
    "Has this been tried on the test bed?",
    "Link to the measurement please.",
    "Which nodes does this affect?",
];

/// The operators' draws, the same in every scenario.
struct Electorate {
    engagement: Vec<f64>,
    delegates: Vec<bool>,
    proxied: Vec<bool>,
    quality: Vec<f64>,
}

fn electorate(model: &Model) -> Result<Electorate, String> {
    model.validate()?;
    let engagement = Beta::new(model.engagement_alpha, model.engagement_beta)
        .map_err(|e| format!("engagement distribution: {e}"))?;
    let quality =
        Normal::new(0.0, model.quality_sigma).map_err(|e| format!("quality distribution: {e}"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(model.seed);
    let n = model.voters;
    let engagement: Vec<f64> = (0..n).map(|_| engagement.sample(&mut rng)).collect();
    let delegates = (0..n)
        .map(|_| rng.random_bool(model.delegation_share))
        .collect();
    let proxied = (0..n).map(|_| rng.random_bool(model.proxy_share)).collect();
    let quality = (0..n).map(|_| quality.sample(&mut rng)).collect();
    Ok(Electorate {
        engagement,
        delegates,
        proxied,
        quality,
    })
}

/// Runs the three scenarios.
pub fn run(model: &Model) -> Result<Report, String> {
    let el = electorate(model)?;
    let predictor = if model.proxy_share > 0.0 {
        let mut other = model.clone();
        other.seed = model.seed ^ 0x05ee_d0f1;
        other.proposals = model.train_proposals;
        let train = history(&other)?;
        Some(Predictor::fit(&train, 2_000, 0.5, 1e-3)?)
    } else {
        None
    };
    let mut scenarios = Vec::new();
    let mut examples = Vec::new();
    for (k, name) in ["direct", "delegation", "delegation+proxy"]
        .into_iter()
        .enumerate()
    {
        let run = scenario(
            model,
            name,
            &el,
            k >= 1,
            if k == 2 { predictor.as_ref() } else { None },
        )
        .map_err(|e| format!("simulation refused an operation: {e}"))?;
        if k == 2 {
            let (votes, refusals): (Vec<_>, Vec<_>) =
                run.records.into_iter().partition(|r| r.support != "none");
            examples = votes.into_iter().take(3).collect();
            examples.extend(refusals.into_iter().take(3));
        }
        scenarios.push(run.result);
    }
    Ok(Report {
        model: model.clone(),
        scenarios,
        predictor,
        proxy_examples: examples,
    })
}

/// A simulated proposal history (scenario 2: delegation, no proxy): each proposal's features
/// at 3/4 of its vote and whether its votes for won at the close, in order.
pub fn history(model: &Model) -> Result<Vec<Observation>, String> {
    let el = electorate(model)?;
    scenario(model, "delegation", &el, true, None)
        .map(|r| r.observations)
        .map_err(|e| format!("simulation refused an operation: {e}"))
}

/// `dao predict`: a history of `model.proposals` proposals, the first `train_share` of them
/// to train the predictor, the rest held out to score it and the base rate.
pub fn predict_benchmark(model: &Model, train_share: f64) -> Result<Evaluation, String> {
    if !(0.05..=0.95).contains(&train_share) {
        return Err(format!(
            "--train-share {train_share} is out of range: 0.05 to 0.95"
        ));
    }
    let h = history(model)?;
    if h.len() < 2 {
        return Err("too few proposals to hold any out: pass more --proposals".into());
    }
    let cut = ((h.len() as f64 * train_share).round() as usize).clamp(1, h.len() - 1);
    predict::evaluate(&h[..cut], &h[cut..])
}

struct ScenarioRun {
    result: ScenarioResult,
    records: Vec<ProxyRecord>,
    observations: Vec<Observation>,
}

/// Draws an operator in proportion to engagement.
fn pick(rng: &mut ChaCha8Rng, p: &[f64], total: f64) -> usize {
    let mut x = rng.random::<f64>() * total;
    let mut j = 0;
    while j + 1 < p.len() && x >= p[j] {
        x -= p[j];
        j += 1;
    }
    j
}

fn scenario(
    model: &Model,
    name: &'static str,
    el: &Electorate,
    delegation: bool,
    predictor: Option<&Predictor>,
) -> Result<ScenarioRun, Refused> {
    let n = model.voters;
    let p = &el.engagement[..];
    let rules = model.rules;
    let mut engine = Engine::new(rules, ADMIN)?;
    for i in 0..n {
        engine.admit(ADMIN, &op(i), 1)?;
    }
    let salience = LogNormal::new(
        -model.salience_sigma * model.salience_sigma / 2.0,
        model.salience_sigma,
    )
    .map_err(|_| Refused("simulate: invalid salience sigma"))?;
    // Delegations, drawn with their own generator so that the votes below are the same in
    // every scenario. A delegate is chosen in proportion to engagement; a choice that would
    // close a cycle is refused by the engine and drawn again (at most 8 times).
    let mut drng = ChaCha8Rng::seed_from_u64(model.seed ^ 0xde1e_9a7e);
    let total: f64 = p.iter().sum();
    let mut delegating = 0;
    if delegation {
        for (i, _) in el.delegates.iter().enumerate().filter(|(_, d)| **d) {
            for _ in 0..8 {
                let j = pick(&mut drng, p, total);
                if j != i && engine.delegate(&op(i), &op(j), 2).is_ok() {
                    delegating += 1;
                    break;
                }
            }
        }
    }
    let policy = ProxyPolicy::FollowPrediction {
        threshold: model.proxy_threshold,
    };
    let (mut made, mut won) = (vec![0u32; n], vec![0u32; n]);
    let mut direct_sum = 0.0;
    let mut part_sum = 0.0;
    let (mut quorum_reached, mut succeeded, mut proxy_votes, mut proxy_declined) = (0, 0, 0, 0);
    let mut records = Vec::new();
    let mut observations = Vec::new();
    let span = rules.voting_delay + rules.voting_period + 1;
    for j in 0..model.proposals {
        let mut prng =
            ChaCha8Rng::seed_from_u64(model.seed.wrapping_mul(31).wrapping_add(j as u64 + 1));
        let start = 10 + j as u64 * span;
        let s = salience.sample(&mut prng);
        let proposer = pick(&mut prng, p, total);
        // How much the electorate likes this proposal: each voter's chance to vote for.
        let approval = (prng.random_range(0.2..0.9) + el.quality[proposer]).clamp(0.05, 0.95);
        let value = 10 + (j as u64 % 1000);
        let text = format!("Set protocol.probe_interval_ms to {value} ms.");
        let mut texts = vec![text.clone()];
        for _ in 0..prng.random_range(0..6) {
            let bank = if prng.random_bool(0.25) {
                NEUTRAL
            } else if prng.random_bool(approval) {
                SUPPORTIVE
            } else {
                CRITICAL
            };
            texts.push(bank[prng.random_range(0..bank.len())].to_string());
        }
        let mood = sentiment::mean_compound(texts.iter().map(String::as_str));
        let id = engine.propose(
            &op(proposer),
            Action::ParameterChange {
                name: "protocol.probe_interval_ms".into(),
                value,
            },
            &text,
            start,
        )?;
        let open = start + rules.voting_delay + 1;
        // Direct votes at random times in the window.
        let mut votes: Vec<(u64, usize, u8, u64)> = Vec::new();
        for (i, &pi) in p.iter().enumerate() {
            let turns_up = prng.random_bool((pi * s).min(1.0));
            let side = if prng.random_bool(approval) { 1 } else { 0 };
            let weight = prng.random_range(1..=10u64);
            let at = open + prng.random_range(0..rules.voting_period);
            if turns_up {
                votes.push((at, i, side, weight));
            }
        }
        votes.sort();
        let observe_at = open + rules.voting_period * 3 / 4;
        let track = (f64::from(won[proposer]) + 1.0) / (f64::from(made[proposer]) + 2.0);
        let mut features = None;
        let mut direct = 0u64;
        let mut observe =
            |engine: &mut Engine, features: &mut Option<Features>| -> Result<(), Refused> {
                let t = engine.tally(id)?;
                let cast = t.for_votes + t.against;
                let f = Features {
                    sentiment: mood,
                    proposer_history: track,
                    early_turnout: t.represented as f64 / t.eligible.max(1) as f64,
                    early_margin: if cast == 0 {
                        0.0
                    } else {
                        (t.for_votes as f64 - t.against as f64) / cast as f64
                    },
                };
                *features = Some(f);
                if let Some(model) = predictor {
                    let (v, d) = run_proxy(
                        engine,
                        id,
                        observe_at,
                        &el.proxied,
                        &policy,
                        model,
                        f,
                        &mut records,
                    )?;
                    proxy_votes += v;
                    proxy_declined += d;
                }
                Ok(())
            };
        for &(at, i, side, weight) in &votes {
            if features.is_none() && at >= observe_at {
                observe(&mut engine, &mut features)?;
            }
            if engine.ballot_of(id, &op(i))? != [0; 3] {
                continue; // the proxy voted for this operator already: it keeps that vote
            }
            engine.cast_vote(&op(i), id, side, weight, at)?;
            direct += 1;
        }
        if features.is_none() {
            observe(&mut engine, &mut features)?;
        }
        let tally = engine.tally(id)?;
        let for_won = tally.for_votes > tally.against;
        made[proposer] += 1;
        won[proposer] += u32::from(for_won);
        if let Some(features) = features {
            observations.push(Observation { features, for_won });
        }
        direct_sum += direct as f64 / tally.eligible as f64;
        part_sum += tally.represented as f64 / tally.eligible as f64;
        if engine.quorum_reached(&tally) {
            quorum_reached += 1;
            if for_won {
                succeeded += 1;
            }
        }
    }
    let m = model.proposals as f64;
    Ok(ScenarioRun {
        result: ScenarioResult {
            name,
            direct_turnout: direct_sum / m,
            participation: part_sum / m,
            quorum_reached,
            succeeded,
            proxy_votes,
            proxy_declined,
            delegating,
        },
        records,
        observations,
    })
}

/// The auto-proxy at time `at`: for every opted-in operator whose power is not cast yet,
/// applies their policy; returns (votes cast, refusals).
#[allow(clippy::too_many_arguments)]
fn run_proxy(
    engine: &mut Engine,
    id: u64,
    at: u64,
    proxied: &[bool],
    policy: &ProxyPolicy,
    model: &Predictor,
    features: Features,
    records: &mut Vec<ProxyRecord>,
) -> Result<(usize, usize), Refused> {
    let resolved = engine.resolve(id)?;
    let (mut votes, mut declined) = (0, 0);
    for (i, _) in proxied.iter().enumerate().filter(|(_, o)| **o) {
        if resolved[i].is_some() {
            continue; // its power is cast already (directly or through its delegate)
        }
        let decision = predict::decide(
            policy,
            ProxyContext {
                already_cast: false,
                delegate_ballot: None,
                prediction: Some((model, features)),
            },
        );
        let support = match &decision {
            ProxyDecision::Vote { support, .. } => {
                engine.cast_vote(&op(i), id, *support as u8, 1, at)?;
                votes += 1;
                match support {
                    Support::For => "for",
                    Support::Against => "against",
                    Support::Abstain => "abstain",
                }
            }
            ProxyDecision::NoVote { .. } => {
                declined += 1;
                "none"
            }
        };
        // Keep the first three of each kind as examples.
        let refusal = support == "none";
        if records
            .iter()
            .filter(|r| (r.support == "none") == refusal)
            .count()
            < 3
        {
            records.push(ProxyRecord {
                proposal: id,
                operator: op(i),
                support,
                reason: decision.reason().to_string(),
            });
        }
    }
    Ok((votes, declined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_calibrated_and_delegation_raises_participation() {
        let report = run(&Model::new(200, 40, 7)).unwrap();
        let [direct, delegation, proxy] = &report.scenarios[..] else {
            panic!("three scenarios")
        };
        assert!(
            (0.03..0.08).contains(&direct.participation),
            "baseline {}",
            direct.participation
        );
        assert!((direct.participation - direct.direct_turnout).abs() < 1e-12);
        assert!(delegation.participation > direct.participation);
        assert!(proxy.participation > delegation.participation);
        assert!(proxy.proxy_votes > 0 && !report.proxy_examples.is_empty());
        assert!(report.predictor.is_some());
    }

    #[test]
    fn a_higher_threshold_makes_the_proxy_refuse_more() {
        let mut low = Model::new(120, 30, 3);
        low.train_proposals = 150;
        let mut high = low.clone();
        high.proxy_threshold = 0.95;
        let (low, high) = (run(&low).unwrap(), run(&high).unwrap());
        assert!(high.scenarios[2].proxy_votes < low.scenarios[2].proxy_votes);
        assert!(high.scenarios[2].proxy_declined > low.scenarios[2].proxy_declined);
        let refusal = high
            .proxy_examples
            .iter()
            .find(|r| r.support == "none")
            .expect("a refusal is recorded");
        assert!(
            refusal.reason.contains("below the threshold 0.95"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn predictor_beats_the_base_rate_on_held_out_proposals() {
        let e = predict_benchmark(&Model::new(150, 400, 11), 0.7).unwrap();
        assert_eq!((e.train, e.test), (280, 120));
        assert!(
            e.predictor.accuracy > e.baseline.accuracy + 0.05,
            "{:?} vs {:?}",
            e.predictor,
            e.baseline
        );
        // the discussion's sentiment and the proposer's record alone, before any vote
        assert!(
            e.without_votes.brier < e.baseline.brier,
            "{:?} vs {:?}",
            e.without_votes,
            e.baseline
        );
        assert!(
            e.predictor.brier < e.baseline.brier,
            "{:?} vs {:?}",
            e.predictor,
            e.baseline
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(run(&Model::new(1, 5, 1)).unwrap_err().contains("--voters"));
        assert!(run(&Model::new(10, 0, 1))
            .unwrap_err()
            .contains("--proposals"));
        assert!(predict_benchmark(&Model::new(10, 10, 1), 0.99)
            .unwrap_err()
            .contains("--train-share"));
    }
}
