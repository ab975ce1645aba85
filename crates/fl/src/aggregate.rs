//! Aggregation rules behind one trait: FedAvg, coordinate-wise median, trimmed mean,
//! Krum, Multi-Krum, Bulyan and FLTrust.
//!
//! Every rule computes in f64 and follows Flower's `flwr.server.strategy.aggregate`
//! definitions exactly where Flower has the rule (FedAvg = `aggregate`, median =
//! `aggregate_median`, trimmed mean = `aggregate_trimmed_avg`, Krum / Multi-Krum =
//! `aggregate_krum`, Bulyan = `aggregate_bulyan` over Krum); `tests/flower.rs` runs
//! Flower's functions on the same updates and requires the same result to 1e-6. FLTrust
//! (Cao et al., NDSS 2021) is not in Flower and follows the paper. Flower works on numpy
//! arrays from Python; no Rust crate offers these rules, hence this module.

use std::fmt;

/// One participant's update (a model delta) and the sample count it claims.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The flat update, one value per model parameter.
    pub values: Vec<f32>,
    /// Number of training samples the participant claims it used.
    pub num_samples: u64,
}

/// What an aggregator may use besides the updates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// FLTrust's root update: the coordinator's own update on its small clean root set.
    pub root: Option<&'a [f32]>,
}

/// An aggregate and the updates the rule set aside as suspicious.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregated {
    /// The aggregated update.
    pub values: Vec<f32>,
    /// Indices (into the input) of updates the rule excluded or gave zero weight.
    pub suspected: Vec<usize>,
}

/// Why a rule could not aggregate.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// No update to aggregate.
    #[error("no update to aggregate")]
    Empty,
    /// Updates of different lengths.
    #[error("updates have different lengths ({0} and {1})")]
    Shape(usize, usize),
    /// Too few updates for the rule's Byzantine assumption.
    #[error("{rule} needs at least {needed} updates for f = {f}, got {got}")]
    TooFew {
        /// The rule.
        rule: &'static str,
        /// Updates needed.
        needed: usize,
        /// Updates given.
        got: usize,
        /// Assumed number of Byzantine updates.
        f: usize,
    },
    /// FLTrust without a root update.
    #[error("FLTrust needs the coordinator's root update")]
    NoRoot,
}

/// An aggregation rule.
pub trait Aggregator: Send + Sync {
    /// Short name, as on the command line.
    fn name(&self) -> String;
    /// Whether the rule needs [`Context::root`].
    fn needs_root(&self) -> bool {
        false
    }
    /// Aggregate `updates` (all of the same length).
    fn aggregate(&self, updates: &[Update], ctx: &Context) -> Result<Aggregated, AggregateError>;
}

/// The rules, by name, with their parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggregatorKind {
    /// Sample-weighted mean (McMahan et al. 2017; Flower `aggregate`).
    FedAvg,
    /// Coordinate-wise median (Yin et al. 2018).
    Median,
    /// Coordinate-wise trimmed mean cutting `beta` of the updates at each end.
    TrimmedMean {
        /// Proportion cut at each end, in [0, 0.5).
        beta: f64,
    },
    /// Krum (Blanchard et al. 2017) with `f` assumed Byzantine updates.
    Krum {
        /// Assumed Byzantine updates per round.
        f: usize,
    },
    /// Multi-Krum: FedAvg of the `m` best-scored updates.
    MultiKrum {
        /// Assumed Byzantine updates per round.
        f: usize,
        /// Updates kept.
        m: usize,
    },
    /// Bulyan (El Mhamdi et al. 2018) over Krum; needs n >= 4f + 3.
    Bulyan {
        /// Assumed Byzantine updates per round.
        f: usize,
    },
    /// FLTrust: cosine trust against the coordinator's root update.
    FlTrust,
}

impl AggregatorKind {
    /// Build the rule.
    pub fn build(self) -> Box<dyn Aggregator> {
        Box::new(Rule(self))
    }
}

impl fmt::Display for AggregatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregatorKind::FedAvg => write!(f, "fedavg"),
            AggregatorKind::Median => write!(f, "median"),
            AggregatorKind::TrimmedMean { beta } => write!(f, "trimmed-mean(beta={beta})"),
            AggregatorKind::Krum { f: byz } => write!(f, "krum(f={byz})"),
            AggregatorKind::MultiKrum { f: byz, m } => write!(f, "multi-krum(f={byz},m={m})"),
            AggregatorKind::Bulyan { f: byz } => write!(f, "bulyan(f={byz})"),
            AggregatorKind::FlTrust => write!(f, "fltrust"),
        }
    }
}

struct Rule(AggregatorKind);

impl Aggregator for Rule {
    fn name(&self) -> String {
        self.0.to_string()
    }
    fn needs_root(&self) -> bool {
        self.0 == AggregatorKind::FlTrust
    }
    fn aggregate(&self, updates: &[Update], ctx: &Context) -> Result<Aggregated, AggregateError> {
        let first = updates.first().ok_or(AggregateError::Empty)?;
        for u in updates {
            if u.values.len() != first.values.len() {
                return Err(AggregateError::Shape(first.values.len(), u.values.len()));
            }
        }
        let all: Vec<usize> = (0..updates.len()).collect();
        let (values, suspected) = match self.0 {
            AggregatorKind::FedAvg => (fedavg(updates, &all), vec![]),
            AggregatorKind::Median => (coordinate(updates, median), vec![]),
            AggregatorKind::TrimmedMean { beta } => {
                (coordinate(updates, |col| trimmed_mean(col, beta)), vec![])
            }
            AggregatorKind::Krum { f } => {
                let best = krum_scores(updates, &all, f).0;
                let v = to_f64(&updates[best].values);
                (v, all.iter().copied().filter(|&i| i != best).collect())
            }
            AggregatorKind::MultiKrum { f, m } => {
                let m = m.clamp(1, updates.len());
                let scores = krum_scores(updates, &all, f).1;
                let mut order: Vec<usize> = all.clone();
                order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
                let kept = &order[..m];
                (fedavg(updates, kept), order[m..].to_vec())
            }
            AggregatorKind::Bulyan { f } => bulyan(updates, f)?,
            AggregatorKind::FlTrust => fltrust(updates, ctx.root.ok_or(AggregateError::NoRoot)?)?,
        };
        let mut suspected = suspected;
        suspected.sort_unstable();
        Ok(Aggregated {
            values: values.into_iter().map(|v| v as f32).collect(),
            suspected,
        })
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn fedavg(updates: &[Update], which: &[usize]) -> Vec<f64> {
    let d = updates[0].values.len();
    let total: f64 = which.iter().map(|&i| updates[i].num_samples as f64).sum();
    let mut out = vec![0.0f64; d];
    if total == 0.0 {
        return out;
    }
    for &i in which {
        let w = updates[i].num_samples as f64;
        for (o, &v) in out.iter_mut().zip(&updates[i].values) {
            *o += f64::from(v) * w;
        }
    }
    out.iter_mut().for_each(|o| *o /= total);
    out
}

fn coordinate(updates: &[Update], rule: impl Fn(&mut [f64]) -> f64) -> Vec<f64> {
    let d = updates[0].values.len();
    let mut col = vec![0.0f64; updates.len()];
    (0..d)
        .map(|j| {
            for (c, u) in col.iter_mut().zip(updates) {
                *c = f64::from(u.values[j]);
            }
            rule(&mut col)
        })
        .collect()
}

fn median(col: &mut [f64]) -> f64 {
    col.sort_by(f64::total_cmp);
    let n = col.len();
    if n % 2 == 1 {
        col[n / 2]
    } else {
        0.5 * (col[n / 2 - 1] + col[n / 2])
    }
}

fn trimmed_mean(col: &mut [f64], beta: f64) -> f64 {
    col.sort_by(f64::total_cmp);
    let n = col.len();
    let cut = (beta * n as f64) as usize;
    let kept = &col[cut..n - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum()
}

/// Krum over the updates `which`: (index of the best, score of every update in `which`
/// by position in `updates`, others infinite). Flower's `aggregate_krum`.
fn krum_scores(updates: &[Update], which: &[usize], f: usize) -> (usize, Vec<f64>) {
    let n = which.len();
    let closest = (n as i64 - f as i64 - 2).max(1) as usize;
    let mut scores = vec![f64::INFINITY; updates.len()];
    for &i in which {
        let mut d: Vec<f64> = which
            .iter()
            .map(|&j| sq_dist(&updates[i].values, &updates[j].values))
            .collect();
        d.sort_by(f64::total_cmp);
        scores[i] = d.iter().skip(1).take(closest).sum();
    }
    let best = which
        .iter()
        .copied()
        .min_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)))
        .expect("which is not empty");
    (best, scores)
}

fn bulyan(updates: &[Update], f: usize) -> Result<(Vec<f64>, Vec<usize>), AggregateError> {
    let n = updates.len();
    if n < 4 * f + 3 {
        return Err(AggregateError::TooFew {
            rule: "bulyan",
            needed: 4 * f + 3,
            got: n,
            f,
        });
    }
    let theta = n - 2 * f;
    let beta = theta - 2 * f;
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut selected = Vec::with_capacity(theta);
    for _ in 0..theta {
        let best = krum_scores(updates, &remaining, f).0;
        remaining.retain(|&i| i != best);
        selected.push(best);
    }
    let d = updates[0].values.len();
    let mut col = vec![0.0f64; theta];
    let mut out = Vec::with_capacity(d);
    for j in 0..d {
        for (c, &i) in col.iter_mut().zip(&selected) {
            *c = f64::from(updates[i].values[j]);
        }
        let med = median(&mut col.clone());
        col.sort_by(|a, b| (a - med).abs().total_cmp(&(b - med).abs()));
        out.push(col[..beta].iter().sum::<f64>() / beta as f64);
    }
    Ok((out, remaining))
}

fn fltrust(updates: &[Update], root: &[f32]) -> Result<(Vec<f64>, Vec<usize>), AggregateError> {
    let d = updates[0].values.len();
    if root.len() != d {
        return Err(AggregateError::Shape(d, root.len()));
    }
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let root_norm = norm(root);
    let mut out = vec![0.0f64; d];
    let mut total_trust = 0.0;
    let mut suspected = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        let un = norm(&u.values);
        let dot: f64 = u
            .values
            .iter()
            .zip(root)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        let trust = if un > 0.0 && root_norm > 0.0 {
            (dot / (un * root_norm)).max(0.0)
        } else {
            0.0
        };
        if trust == 0.0 {
            suspected.push(i);
            continue;
        }
        total_trust += trust;
        let scale = trust * root_norm / un;
        for (o, &v) in out.iter_mut().zip(&u.values) {
            *o += scale * f64::from(v);
        }
    }
    if total_trust > 0.0 {
        out.iter_mut().for_each(|o| *o /= total_trust);
    }
    Ok((out, suspected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(values: &[f32], n: u64) -> Update {
        Update {
            values: values.to_vec(),
            num_samples: n,
        }
    }

    fn run(kind: AggregatorKind, updates: &[Update], root: Option<&[f32]>) -> Aggregated {
        kind.build().aggregate(updates, &Context { root }).unwrap()
    }

    #[test]
    fn fedavg_weights_by_samples() {
        let r = run(
            AggregatorKind::FedAvg,
            &[u(&[1.0, 0.0], 1), u(&[4.0, 3.0], 2)],
            None,
        );
        assert_eq!(r.values, vec![3.0, 2.0]);
    }

    #[test]
    fn median_and_trimmed_mean_ignore_an_outlier() {
        let ups = [u(&[1.0], 1), u(&[2.0], 1), u(&[3.0], 1), u(&[1000.0], 1)];
        assert_eq!(run(AggregatorKind::Median, &ups, None).values, vec![2.5]);
        let tm = run(AggregatorKind::TrimmedMean { beta: 0.25 }, &ups, None);
        assert_eq!(tm.values, vec![2.5]);
    }

    #[test]
    fn krum_picks_the_central_update() {
        let ups = [
            u(&[0.0, 0.0], 1),
            u(&[0.1, 0.0], 1),
            u(&[0.0, 0.1], 1),
            u(&[0.1, 0.1], 1),
            u(&[50.0, -50.0], 1),
        ];
        let r = run(AggregatorKind::Krum { f: 1 }, &ups, None);
        assert!(r.values[0] < 1.0 && r.suspected.contains(&4));
        let mk = run(AggregatorKind::MultiKrum { f: 1, m: 4 }, &ups, None);
        assert_eq!(mk.suspected, vec![4]);
    }

    #[test]
    fn bulyan_checks_n_against_f() {
        let ups: Vec<Update> = (0..6).map(|i| u(&[i as f32], 1)).collect();
        let err = AggregatorKind::Bulyan { f: 1 }
            .build()
            .aggregate(&ups, &Context::default())
            .unwrap_err();
        assert!(matches!(err, AggregateError::TooFew { needed: 7, .. }));
        let ups: Vec<Update> = (0..7).map(|i| u(&[i as f32], 1)).collect();
        assert!(run(AggregatorKind::Bulyan { f: 1 }, &ups, None).values[0] < 6.0);
    }

    #[test]
    fn fltrust_zeroes_opposed_updates() {
        let root = [1.0f32, 0.0];
        let ups = [u(&[2.0, 0.0], 1), u(&[-5.0, 0.0], 1)];
        let r = run(AggregatorKind::FlTrust, &ups, Some(&root));
        assert_eq!(r.values, vec![1.0, 0.0]);
        assert_eq!(r.suspected, vec![1]);
    }
}
