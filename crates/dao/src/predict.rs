//! The outcome predictor and the auto-proxy.
//!
//! **Predictor**: a logistic regression over four features of a proposal observed while its
//! vote is still open ([`Features`]): the sentiment of its discussion (VADER, [`crate::sentiment`]),
//! its proposer's history (the smoothed share of their earlier proposals that won), the early
//! turnout and the early margin. It predicts the probability that the votes *for* exceed the
//! votes *against* at the close. (Not "succeeded": whether the quorum is reached is what the
//! proxy's own votes help decide, so a proxy following a prediction of "defeated for lack of
//! quorum" would vote against proposals the voters favour.)
//!
//! Written by hand: it is 40 lines (standardised features, batch gradient descent on the
//! L2-regularised log loss), and the crate that would do it, linfa-logistic, brings ndarray,
//! argmin and linfa for four weights.
//!
//! **Auto-proxy**: an operator who opted in sets a [`ProxyPolicy`]; when their voting power is
//! not cast late in the vote, [`decide`] chooses a vote or a refusal, with the reason either
//! way.

use serde::{Deserialize, Serialize};

use crate::engine::Support;

/// What the predictor sees of a proposal while its vote is open.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Mean VADER compound score of the proposal's text and discussion (−1 … 1).
    pub sentiment: f64,
    /// The proposer's earlier proposals that won, smoothed: (won + 1) / (made + 2).
    pub proposer_history: f64,
    /// Share of the voting power at the snapshot cast so far.
    pub early_turnout: f64,
    /// (for − against) / (for + against) of the votes cast so far; 0 with none.
    pub early_margin: f64,
}

impl Features {
    pub const NAMES: [&'static str; 4] = [
        "sentiment",
        "proposer_history",
        "early_turnout",
        "early_margin",
    ];

    pub fn to_array(self) -> [f64; 4] {
        [
            self.sentiment,
            self.proposer_history,
            self.early_turnout,
            self.early_margin,
        ]
    }
}

/// A proposal of a history: its features and whether the votes for won at the close.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub features: Features,
    pub for_won: bool,
}

/// A fitted logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictor {
    /// Weights of the standardised features, in [`Features::NAMES`] order.
    pub weights: [f64; 4],
    pub bias: f64,
    pub mean: [f64; 4],
    pub std: [f64; 4],
}

impl Predictor {
    /// Fits on `data` by gradient descent on the mean log loss plus `l2`·|w|².
    pub fn fit(
        data: &[Observation],
        iterations: usize,
        rate: f64,
        l2: f64,
    ) -> Result<Self, String> {
        if data.is_empty() {
            return Err("no observations to train on".into());
        }
        let n = data.len() as f64;
        let mut mean = [0.0; 4];
        let mut std = [0.0; 4];
        for o in data {
            for (m, x) in mean.iter_mut().zip(o.features.to_array()) {
                *m += x / n;
            }
        }
        for o in data {
            for ((s, m), x) in std.iter_mut().zip(mean).zip(o.features.to_array()) {
                *s += (x - m) * (x - m) / n;
            }
        }
        for s in &mut std {
            *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
        }
        let mut p = Predictor {
            weights: [0.0; 4],
            bias: 0.0,
            mean,
            std,
        };
        for _ in 0..iterations {
            let (mut gw, mut gb) = ([0.0; 4], 0.0);
            for o in data {
                let x = p.standardise(&o.features);
                let err = p.prob_z(&x) - if o.for_won { 1.0 } else { 0.0 };
                for (g, xi) in gw.iter_mut().zip(x) {
                    *g += err * xi / n;
                }
                gb += err / n;
            }
            for (w, g) in p.weights.iter_mut().zip(gw) {
                *w -= rate * (g + 2.0 * l2 * *w);
            }
            p.bias -= rate * gb;
        }
        Ok(p)
    }

    fn standardise(&self, f: &Features) -> [f64; 4] {
        let mut x = f.to_array();
        for ((x, m), s) in x.iter_mut().zip(self.mean).zip(self.std) {
            *x = (*x - m) / s;
        }
        x
    }

    fn prob_z(&self, x: &[f64; 4]) -> f64 {
        let z: f64 = self.bias + self.weights.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }

    /// P(the votes for win at the close).
    pub fn probability(&self, f: &Features) -> f64 {
        self.prob_z(&self.standardise(f))
    }
}

/// Accuracy (threshold 0.5) and Brier score of probabilities against outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    pub accuracy: f64,
    pub brier: f64,
}

pub fn score(probabilities: &[f64], data: &[Observation]) -> Score {
    let n = data.len().max(1) as f64;
    let (mut right, mut brier) = (0.0, 0.0);
    for (p, o) in probabilities.iter().zip(data) {
        let y = if o.for_won { 1.0 } else { 0.0 };
        if (*p >= 0.5) == o.for_won {
            right += 1.0;
        }
        brier += (p - y) * (p - y);
    }
    Score {
        accuracy: right / n,
        brier: brier / n,
    }
}

/// A predictor's evaluation on held-out proposals, next to the base rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub train: usize,
    pub test: usize,
    /// Share of training proposals whose votes for won: the baseline's constant probability.
    pub base_rate: f64,
    pub predictor: Score,
    pub baseline: Score,
    /// The same regression without the vote so far (early turnout and margin zeroed): what
    /// sentiment and proposer history alone predict, as before anyone voted.
    pub without_votes: Score,
    pub model: Predictor,
}

/// Fits on `train` and scores on `test`, with the base-rate baseline.
pub fn evaluate(train: &[Observation], test: &[Observation]) -> Result<Evaluation, String> {
    if test.is_empty() {
        return Err("no held-out observations to test on".into());
    }
    let model = Predictor::fit(train, 2_000, 0.5, 1e-3)?;
    let base_rate = train.iter().filter(|o| o.for_won).count() as f64 / train.len() as f64;
    let probs: Vec<f64> = test
        .iter()
        .map(|o| model.probability(&o.features))
        .collect();
    let blind = |o: &Observation| Observation {
        features: Features {
            early_turnout: 0.0,
            early_margin: 0.0,
            ..o.features
        },
        ..*o
    };
    let train_blind: Vec<_> = train.iter().map(blind).collect();
    let test_blind: Vec<_> = test.iter().map(blind).collect();
    let blind_model = Predictor::fit(&train_blind, 2_000, 0.5, 1e-3)?;
    let blind_probs: Vec<f64> = test_blind
        .iter()
        .map(|o| blind_model.probability(&o.features))
        .collect();
    Ok(Evaluation {
        without_votes: score(&blind_probs, &test_blind),
        train: train.len(),
        test: test.len(),
        base_rate,
        predictor: score(&probs, test),
        baseline: score(&vec![base_rate; test.len()], test),
        model,
    })
}

/// The policy an operator set for the auto-proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum ProxyPolicy {
    /// Vote the side this operator voted on, once they have.
    FollowDelegate { delegate: String },
    /// Vote the side the predictor expects to win, only when its probability for that side
    /// reaches `threshold` (0.5 … 1).
    FollowPrediction { threshold: f64 },
}

/// What the proxy knows when it acts for one operator on one proposal.
#[derive(Debug, Clone, Copy)]
pub struct ProxyContext<'a> {
    /// The operator's power is cast already, directly or through their delegation.
    pub already_cast: bool,
    /// The followed delegate's own ballot [against, for, abstain] (FollowDelegate).
    pub delegate_ballot: Option<[u64; 3]>,
    /// The predictor and the proposal's features now (FollowPrediction).
    pub prediction: Option<(&'a Predictor, Features)>,
}

/// The proxy's choice for one operator, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ProxyDecision {
    Vote { support: Support, reason: String },
    NoVote { reason: String },
}

impl ProxyDecision {
    pub fn reason(&self) -> &str {
        match self {
            ProxyDecision::Vote { reason, .. } | ProxyDecision::NoVote { reason } => reason,
        }
    }
}

fn side_name(s: Support) -> &'static str {
    match s {
        Support::Against => "against",
        Support::For => "for",
        Support::Abstain => "abstain",
    }
}

/// Applies an operator's policy.
pub fn decide(policy: &ProxyPolicy, cx: ProxyContext<'_>) -> ProxyDecision {
    if cx.already_cast {
        return ProxyDecision::NoVote {
            reason: "power already cast (directly or through delegation): the proxy stays out"
                .into(),
        };
    }
    match policy {
        ProxyPolicy::FollowDelegate { delegate } => {
            let Some(b) = cx.delegate_ballot.filter(|b| *b != [0; 3]) else {
                return ProxyDecision::NoVote {
                    reason: format!("followed delegate {delegate} has not voted"),
                };
            };
            let support = if b[1] > b[0] && b[1] >= b[2] {
                Support::For
            } else if b[0] > b[1] && b[0] >= b[2] {
                Support::Against
            } else {
                Support::Abstain
            };
            ProxyDecision::Vote {
                support,
                reason: format!(
                    "follows delegate {delegate}, whose ballot is {} against / {} for / {} abstain: {}",
                    b[0],
                    b[1],
                    b[2],
                    side_name(support)
                ),
            }
        }
        ProxyPolicy::FollowPrediction { threshold } => {
            let Some((model, f)) = cx.prediction else {
                return ProxyDecision::NoVote {
                    reason: "no prediction available".into(),
                };
            };
            let p = model.probability(&f);
            let (support, confidence) = if p >= 0.5 {
                (Support::For, p)
            } else {
                (Support::Against, 1.0 - p)
            };
            let seen = format!(
                "P(for wins) = {p:.2} from sentiment {:+.2}, proposer history {:.2}, early turnout {:.1} %, early margin {:+.2}",
                f.sentiment,
                f.proposer_history,
                f.early_turnout * 100.0,
                f.early_margin
            );
            if confidence < *threshold {
                ProxyDecision::NoVote {
                    reason: format!(
                        "{seen}: confidence {confidence:.2} below the threshold {threshold:.2}, no vote"
                    ),
                }
            } else {
                ProxyDecision::Vote {
                    support,
                    reason: format!(
                        "{seen}: {} with confidence {confidence:.2} >= threshold {threshold:.2}",
                        side_name(support)
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(margin: f64, won: bool) -> Observation {
        Observation {
            features: Features {
                sentiment: 0.0,
                proposer_history: 0.5,
                early_turnout: 0.1,
                early_margin: margin,
            },
            for_won: won,
        }
    }

    #[test]
    fn fit_learns_a_separable_rule() {
        let data: Vec<_> = (0..40)
            .map(|i| {
                let m = i as f64 / 20.0 - 1.0;
                obs(m, m > 0.0)
            })
            .collect();
        let p = Predictor::fit(&data, 2_000, 0.5, 1e-3).unwrap();
        assert!(p.weights[3] > 1.0, "{:?}", p.weights);
        assert!(p.probability(&obs(0.8, true).features) > 0.9);
        assert!(p.probability(&obs(-0.8, false).features) < 0.1);
        let s = score(&[0.9, 0.2], &[obs(0.0, true), obs(0.0, true)]);
        assert_eq!(s.accuracy, 0.5);
        assert!((s.brier - (0.01 + 0.64) / 2.0).abs() < 1e-12);
        assert!(Predictor::fit(&[], 10, 0.1, 0.0).is_err());
    }

    fn model() -> Predictor {
        Predictor {
            weights: [0.0, 0.0, 0.0, 2.0],
            bias: 0.0,
            mean: [0.0; 4],
            std: [1.0; 4],
        }
    }

    #[test]
    fn prediction_policy_votes_only_above_its_threshold() {
        let m = model();
        let policy = ProxyPolicy::FollowPrediction { threshold: 0.8 };
        let cx = |margin: f64| ProxyContext {
            already_cast: false,
            delegate_ballot: None,
            prediction: Some((&m, obs(margin, true).features)),
        };
        // margin 1.0: P = σ(2) = 0.88 → for
        match decide(&policy, cx(1.0)) {
            ProxyDecision::Vote { support, reason } => {
                assert_eq!(support, Support::For);
                assert!(reason.contains("0.88 >= threshold 0.80"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // margin −1.0: P = 0.12 → against with confidence 0.88
        assert!(matches!(
            decide(&policy, cx(-1.0)),
            ProxyDecision::Vote {
                support: Support::Against,
                ..
            }
        ));
        // margin 0.3: P = 0.65 → below 0.8: no vote, and why
        let d = decide(&policy, cx(0.3));
        assert!(matches!(d, ProxyDecision::NoVote { .. }), "{d:?}");
        assert!(
            d.reason().contains("below the threshold 0.80"),
            "{}",
            d.reason()
        );
        // already cast: nothing
        let mut c = cx(1.0);
        c.already_cast = true;
        assert!(matches!(decide(&policy, c), ProxyDecision::NoVote { .. }));
        let mut c = cx(1.0);
        c.prediction = None;
        assert!(decide(&policy, c).reason().contains("no prediction"));
    }

    #[test]
    fn delegate_policy_follows_the_delegates_side_or_refuses() {
        let policy = ProxyPolicy::FollowDelegate {
            delegate: "op7".into(),
        };
        let cx = |b: Option<[u64; 3]>| ProxyContext {
            already_cast: false,
            delegate_ballot: b,
            prediction: None,
        };
        let d = decide(&policy, cx(Some([5, 2, 0])));
        assert!(
            matches!(&d, ProxyDecision::Vote { support: Support::Against, reason } if reason.contains("op7")),
            "{d:?}"
        );
        assert!(matches!(
            decide(&policy, cx(Some([0, 3, 1]))),
            ProxyDecision::Vote {
                support: Support::For,
                ..
            }
        ));
        assert!(matches!(
            decide(&policy, cx(Some([0, 0, 4]))),
            ProxyDecision::Vote {
                support: Support::Abstain,
                ..
            }
        ));
        for b in [None, Some([0, 0, 0])] {
            let d = decide(&policy, cx(b));
            assert_eq!(
                d,
                ProxyDecision::NoVote {
                    reason: "followed delegate op7 has not voted".into()
                }
            );
        }
    }
}
