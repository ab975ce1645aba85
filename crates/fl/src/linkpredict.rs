//! Link-failure prediction: from a link's window of probe measurements (loss, RTT,
//! jitter as `x0tta6bl4_proto::Node::link_features` gives them), the probability that
//! the link goes down within the horizon (2 s by default).
//!
//! The model is a logistic regression ([`ModelKind::LogReg`] with two classes, the
//! architecture of [`crate::model`]) trained with candle, federatedly: each node trains
//! on the samples of its own links and the updates are merged with FedAvg
//! ([`AggregatorKind::FedAvg`], the aggregation rule of [`crate::aggregate`]), in
//! process. Inference is a dot product and a sigmoid over 6 features, written out here
//! (a candle graph per link and per 100 ms would cost more than the model).
//!
//! A model travels as a file ([`PredictorFile`]): the model and the SHA-256 of its
//! canonical JSON. [`PredictorFile::load`] refuses a file whose hash does not match,
//! whose format is unknown, or whose parameters are not finite; the caller then keeps
//! routing with its previous costs. Training data comes from the twin's
//! `degrade-then-fail` scenario (`x0tta6bl4_twin::predict`).

use std::collections::VecDeque;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use x0tta6bl4_proto::LinkFeatures;

use crate::aggregate::{AggregatorKind, Context, Update};
use crate::data::Dataset;
use crate::model::{self, ModelKind, ModelSpec, TrainConfig};

/// Features per sample.
pub const FEATURES: usize = 6;

/// What each feature is, in order.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "loss (now)",
    "loss change over the window",
    "loss (most in the window)",
    "jitter (rttvar) now, per 10 ms",
    "jitter change over the window, per 10 ms",
    "queueing (srtt - base RTT) now, per 10 ms",
];

/// The file format's name and version.
pub const FORMAT: &str = "x0tta6bl4-link-predictor/1";

/// The logistic regression's shape: [`FEATURES`] inputs, classes "up" and "down".
pub fn spec() -> ModelSpec {
    ModelSpec {
        kind: ModelKind::LogReg,
        inputs: FEATURES,
        classes: 2,
    }
}

/// One link's recent measurements, as one node sees them, sampled at a fixed interval.
#[derive(Clone, Debug, Default)]
pub struct LinkWindow {
    /// (loss, rttvar ms, srtt - base ms), oldest first.
    samples: VecDeque<[f64; 3]>,
}

impl LinkWindow {
    /// Add one sample; keeps the last `len`.
    pub fn push(&mut self, f: &LinkFeatures, len: usize) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let excess = f
            .srtt
            .map_or(0.0, |srtt| (ms(srtt) - ms(f.base_rtt)).max(0.0));
        self.samples.push_back([f.loss, ms(f.rttvar), excess]);
        while self.samples.len() > len.max(1) {
            self.samples.pop_front();
        }
    }

    /// Forget everything (the link went down).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The feature vector, once `len` samples are held.
    pub fn features(&self, len: usize) -> Option<[f32; FEATURES]> {
        if self.samples.len() < len.max(1) {
            return None;
        }
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let loss_max = self.samples.iter().map(|s| s[0]).fold(0.0, f64::max);
        Some([
            last[0] as f32,
            (last[0] - first[0]) as f32,
            loss_max as f32,
            (last[1] / 10.0) as f32,
            ((last[1] - first[1]) / 10.0) as f32,
            (last[2] / 10.0) as f32,
        ])
    }
}

/// Factor on a link's cost while its failure is predicted: a 2-hop detour over clean
/// links costs less than a raised link, so flows move.
pub const RISK_FACTOR: f64 = 20.0;

/// What one prediction asks of a link's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskAction {
    /// Leave it (no prediction yet, an invalid one, or no change of side).
    Keep,
    /// The prediction reached the threshold on a link not raised: raise it.
    Raise,
    /// The prediction fell below half the threshold on a raised link: restore it.
    Restore,
}

/// The prediction loop over one node's (or, in the twin, every node's) links: each
/// link's window and the decision from each sample. The twin
/// (`x0tta6bl4_twin::predict::PredictorLoop`) and the daemon (`x0tta6bl4_node`'s
/// predictor) both run it every `sample_interval_ms` and call
/// `x0tta6bl4_proto::Node::set_link_risk` with [`RISK_FACTOR`] on
/// [`RiskAction::Raise`] and 1 on [`RiskAction::Restore`].
#[derive(Clone, Debug)]
pub struct LinkRisk<K> {
    windows: std::collections::BTreeMap<K, LinkWindow>,
    /// Predictions made.
    pub predictions: u64,
    /// Predictions that were NaN or outside 0..1: ignored (the link keeps its cost).
    pub invalid_outputs: u64,
}

impl<K> Default for LinkRisk<K> {
    fn default() -> Self {
        LinkRisk {
            windows: std::collections::BTreeMap::new(),
            predictions: 0,
            invalid_outputs: 0,
        }
    }
}

impl<K: Ord> LinkRisk<K> {
    /// One sample `f` of link `key` into a window of `window` samples. Returns the
    /// window's features once it is full and, with a `model`, what to do with the
    /// link's cost. A link that is down forgets its window.
    pub fn observe(
        &mut self,
        key: K,
        f: &LinkFeatures,
        window: usize,
        model: Option<&PredictorModel>,
    ) -> (Option<[f32; FEATURES]>, RiskAction) {
        let w = self.windows.entry(key).or_default();
        if !f.up {
            w.clear();
            return (None, RiskAction::Keep);
        }
        w.push(f, window);
        let Some(x) = w.features(window) else {
            return (None, RiskAction::Keep);
        };
        let Some(model) = model else {
            return (Some(x), RiskAction::Keep);
        };
        let p = model.predict(&x);
        self.predictions += 1;
        if !valid_probability(p) {
            self.invalid_outputs += 1;
            return (Some(x), RiskAction::Keep);
        }
        let action = if p >= model.threshold && f.risk_factor == 1.0 {
            RiskAction::Raise
        } else if p < model.threshold / 2.0 && f.risk_factor > 1.0 {
            RiskAction::Restore
        } else {
            RiskAction::Keep
        };
        (Some(x), action)
    }

    /// Forget the windows of links for which `keep` is false (neighbours gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.windows.retain(|k, _| keep(k));
    }
}

/// A trained predictor and how to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictorModel {
    /// Horizon of the prediction: P(link down within this many ms).
    pub horizon_ms: u64,
    /// Interval between two samples of a link (and two predictions).
    pub sample_interval_ms: u64,
    /// Samples in a window.
    pub window: usize,
    /// A link whose predicted failure reaches this gets its cost raised; it gets it back
    /// below half of it.
    pub threshold: f64,
    /// Logistic regression parameters in [`crate::model`]'s flat order (weight
    /// `[FEATURES, 2]`, then bias `[2]`).
    pub params: Vec<f32>,
}

impl PredictorModel {
    /// P(link down within the horizon) for one feature vector. NaN when the parameters
    /// or features are not finite: callers must check (see [`valid_probability`]).
    pub fn predict(&self, x: &[f32; FEATURES]) -> f64 {
        let (w, b) = self.params.split_at(FEATURES * 2);
        let mut z = [f64::from(b[0]), f64::from(b[1])];
        for (f, &xf) in x.iter().enumerate() {
            for (c, zc) in z.iter_mut().enumerate() {
                *zc += f64::from(xf) * f64::from(w[f * 2 + c]);
            }
        }
        1.0 / (1.0 + (z[0] - z[1]).exp())
    }

    fn check(&self) -> Result<(), String> {
        if self.params.len() != spec().num_params() {
            return Err(format!(
                "{} parameters, the model has {}",
                self.params.len(),
                spec().num_params()
            ));
        }
        if self.params.iter().any(|p| !p.is_finite()) {
            return Err("a parameter is not a finite number".into());
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(format!("threshold {} is not in (0, 1)", self.threshold));
        }
        if self.horizon_ms == 0 || self.sample_interval_ms == 0 || self.window == 0 {
            return Err("horizon_ms, sample_interval_ms and window must be at least 1".into());
        }
        Ok(())
    }
}

/// Whether a prediction may be acted on: a probability, not NaN or out of range.
pub fn valid_probability(p: f64) -> bool {
    p.is_finite() && (0.0..=1.0).contains(&p)
}

/// A model file: the model and the SHA-256 (hex) of its canonical JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictorFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The model.
    pub model: PredictorModel,
    /// SHA-256 of `serde_json::to_vec(&model)`, hex.
    pub sha256: String,
}

/// A model file that is refused.
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    /// The file cannot be read or written.
    #[error("link predictor {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid model file.
    #[error("link predictor {path}: {reason}; retrain it with `x0tta6bl4 twin train-predictor --out {path}`")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Training failed inside candle or the aggregation.
    #[error("link predictor training: {0}")]
    Training(String),
}

impl PredictorFile {
    /// The file of `model`.
    pub fn new(model: PredictorModel) -> Self {
        PredictorFile {
            format: FORMAT.to_owned(),
            sha256: crate::hashed::digest(&model),
            model,
        }
    }

    /// Check a file's bytes: format, hash, parameters. `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<PredictorModel, PredictorError> {
        crate::hashed::open(bytes, FORMAT, "link predictor", PredictorModel::check).map_err(
            |reason| PredictorError::Invalid {
                path: path.to_owned(),
                reason,
            },
        )
    }

    /// Read and check a model file.
    pub fn load(path: &Path) -> Result<PredictorModel, PredictorError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PredictorError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Write the file of `model` (temporary file, fsync, rename: a crash leaves the old
    /// file or the new one).
    pub fn save(model: &PredictorModel, path: &Path) -> Result<(), PredictorError> {
        crate::hashed::save(model, FORMAT, path).map_err(|source| PredictorError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// One labelled sample: the features a node saw of one link, and whether the link went
/// down within the horizon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The node that measured it (the federation participant that holds it).
    pub node: u32,
    /// The features.
    pub x: [f32; FEATURES],
    /// The link went down within the horizon.
    pub down_soon: bool,
}

/// Settings of federated training.
#[derive(Clone, Copy, Debug)]
pub struct FedTrainConfig {
    /// FedAvg rounds.
    pub rounds: usize,
    /// Local training per round.
    pub local: TrainConfig,
    /// Positive samples are repeated so they weigh this share of each node's data (at
    /// most; failures are rare next to the hours a link works).
    pub positive_share: f64,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// The threshold flags at most this share of the training negatives (the trade
    /// between early reroutes and unneeded ones).
    pub false_positive_rate: f64,
}

impl Default for FedTrainConfig {
    fn default() -> Self {
        FedTrainConfig {
            rounds: 30,
            local: TrainConfig {
                epochs: 1,
                batch: 64,
                lr: 0.5,
                momentum: 0.5,
            },
            positive_share: 0.2,
            seed: 1,
            false_positive_rate: 0.01,
        }
    }
}

/// What training gave, measured on the samples given for evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Participants (nodes with samples).
    pub participants: usize,
    /// Training samples, and positives among them.
    pub samples: usize,
    /// Positive training samples.
    pub positives: usize,
    /// The threshold chosen.
    pub threshold: f64,
    /// On the evaluation samples at that threshold: share of positives flagged.
    pub recall: f64,
    /// Share of negatives flagged.
    pub false_positive_rate: f64,
    /// Share of flagged samples that were positive.
    pub precision: f64,
}

/// Train the predictor federatedly: one participant per node of `train`, FedAvg over
/// `cfg.rounds` rounds; the threshold is chosen on `train` (the most recall with at
/// most `cfg.false_positive_rate` of negatives flagged), and the model measured on
/// `eval`.
pub fn train_federated(
    train: &[Sample],
    eval: &[Sample],
    horizon_ms: u64,
    sample_interval_ms: u64,
    window: usize,
    cfg: FedTrainConfig,
) -> Result<(PredictorModel, TrainReport), PredictorError> {
    let spec = spec();
    let mut by_node: std::collections::BTreeMap<u32, Vec<&Sample>> = Default::default();
    for s in train {
        by_node.entry(s.node).or_default().push(s);
    }
    let positives = train.iter().filter(|s| s.down_soon).count();
    if positives == 0 || positives == train.len() {
        return Err(PredictorError::Training(format!(
            "{} samples with {positives} positives: both classes are needed (run more iterations of degrade-then-fail)",
            train.len()
        )));
    }
    // Each participant's dataset, positives repeated up to `positive_share`.
    let parts: Vec<(Dataset, Vec<usize>)> = by_node
        .values()
        .map(|rows| {
            let mut x = Vec::with_capacity(rows.len() * FEATURES);
            let mut y = Vec::with_capacity(rows.len());
            for s in rows {
                x.extend_from_slice(&s.x);
                y.push(u8::from(s.down_soon));
            }
            let pos: Vec<usize> = (0..y.len()).filter(|&i| y[i] == 1).collect();
            let neg = y.len() - pos.len();
            let mut idx: Vec<usize> = (0..y.len()).collect();
            if !pos.is_empty() {
                let share = cfg.positive_share.clamp(0.0, 0.9);
                let wanted = (share / (1.0 - share) * neg as f64).ceil() as usize;
                let repeats = (wanted / pos.len()).saturating_sub(1);
                for _ in 0..repeats {
                    idx.extend_from_slice(&pos);
                }
            }
            let data = Dataset {
                features: FEATURES,
                classes: 2,
                x,
                y,
            };
            (data, idx)
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut global = spec.init(&mut rng);
    let fedavg = AggregatorKind::FedAvg.build();
    let err = |e: String| PredictorError::Training(e);
    for _ in 0..cfg.rounds {
        let mut updates = Vec::with_capacity(parts.len());
        for (data, idx) in &parts {
            let local = model::train(spec, &global, data, idx, cfg.local, false, &mut rng)
                .map_err(|e| err(e.to_string()))?;
            updates.push(Update {
                values: local.iter().zip(&global).map(|(l, g)| l - g).collect(),
                num_samples: data.len() as u64,
            });
        }
        let merged = fedavg
            .aggregate(&updates, &Context::default())
            .map_err(|e| err(e.to_string()))?;
        for (g, d) in global.iter_mut().zip(&merged.values) {
            *g += d;
        }
    }
    let mut model = PredictorModel {
        horizon_ms,
        sample_interval_ms,
        window,
        threshold: 0.5,
        params: global,
    };
    model.check().map_err(err)?;
    model.threshold = choose_threshold(&model, train, cfg.false_positive_rate);
    let (recall, false_positive_rate, precision) = measure(&model, eval);
    let report = TrainReport {
        participants: parts.len(),
        samples: train.len(),
        positives,
        threshold: model.threshold,
        recall,
        false_positive_rate,
        precision,
    };
    Ok((model, report))
}

/// The lowest threshold (most recall) that flags at most `fpr` of the negatives.
fn choose_threshold(model: &PredictorModel, samples: &[Sample], fpr: f64) -> f64 {
    let mut negatives: Vec<f64> = samples
        .iter()
        .filter(|s| !s.down_soon)
        .map(|s| model.predict(&s.x))
        .filter(|p| valid_probability(*p))
        .collect();
    negatives.sort_by(f64::total_cmp);
    let at = ((negatives.len() as f64) * (1.0 - fpr.clamp(0.0, 1.0))) as usize;
    let p = negatives.get(at.min(negatives.len().saturating_sub(1)));
    p.map_or(0.5, |&p| (p + 1e-6).clamp(0.05, 0.999))
}

/// (recall, false-positive rate, precision) of `model` at its threshold on `samples`.
pub fn measure(model: &PredictorModel, samples: &[Sample]) -> (f64, f64, f64) {
    let (mut tp, mut fp, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
    for s in samples {
        let flagged = model.predict(&s.x) >= model.threshold;
        if s.down_soon {
            pos += 1;
            tp += usize::from(flagged);
        } else {
            neg += 1;
            fp += usize::from(flagged);
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (ratio(tp, pos), ratio(fp, neg), ratio(tp, tp + fp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn features(loss: f64, jitter_ms: u64) -> LinkFeatures {
        LinkFeatures {
            up: true,
            loss,
            srtt: Some(Duration::from_millis(2 + jitter_ms)),
            rttvar: Duration::from_millis(jitter_ms),
            base_rtt: Duration::from_millis(2),
            risk_factor: 1.0,
        }
    }

    /// Rising loss and jitter precede failures, flat low loss does not: the federated
    /// model must separate them (it cannot if training or FedAvg is broken).
    #[test]
    fn federated_training_separates_ramps_from_steady_links() {
        let mut samples = Vec::new();
        for node in 0..4u32 {
            for k in 0..200 {
                let mut w = LinkWindow::default();
                let ramp = k % 4 == 0;
                for t in 0..10 {
                    let noise = f64::from((k * 7 + t) % 5) * 0.01;
                    let (loss, jitter) = if ramp {
                        (0.05 + 0.04 * f64::from(t as u32) + noise, 1 + t as u64)
                    } else {
                        (0.05 + noise, 1)
                    };
                    w.push(&features(loss, jitter), 10);
                }
                samples.push(Sample {
                    node,
                    x: w.features(10).unwrap(),
                    down_soon: ramp,
                });
            }
        }
        let cfg = FedTrainConfig {
            rounds: 10,
            ..FedTrainConfig::default()
        };
        let (model, report) = train_federated(&samples, &samples, 2000, 100, 10, cfg).unwrap();
        assert_eq!(report.participants, 4);
        assert!(report.recall > 0.9, "{report:?}");
        assert!(report.false_positive_rate < 0.01, "{report:?}");
        let mut steady = LinkWindow::default();
        for _ in 0..10 {
            steady.push(&features(0.05, 1), 10);
        }
        assert!(model.predict(&steady.features(10).unwrap()) < model.threshold);
    }

    #[test]
    fn a_model_file_that_fails_its_check_is_refused() {
        let model = PredictorModel {
            horizon_ms: 2000,
            sample_interval_ms: 100,
            window: 10,
            threshold: 0.4,
            params: (0..spec().num_params()).map(|i| i as f32 * 0.1).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        PredictorFile::save(&model, &path).unwrap();
        assert_eq!(PredictorFile::load(&path).unwrap(), model);

        let text = std::fs::read_to_string(&path).unwrap();
        // One parameter changed, hash left as it was.
        let altered = text.replacen("0.1", "0.2", 1);
        assert_ne!(altered, text);
        let e = PredictorFile::from_bytes(altered.as_bytes(), "p.json").unwrap_err();
        assert!(e.to_string().contains("hash check failed"), "{e}");
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            &text.as_bytes()[..text.len() / 2],
        ] {
            assert!(PredictorFile::from_bytes(bad, "p.json").is_err());
        }
        // A NaN parameter under a matching hash is refused too.
        let mut nan = model.clone();
        nan.params[0] = f32::NAN;
        let file = PredictorFile {
            format: FORMAT.into(),
            sha256: String::new(),
            model: nan,
        };
        let bytes = serde_json::to_vec(&file).unwrap();
        assert!(PredictorFile::from_bytes(&bytes, "p.json").is_err());
        assert!(!valid_probability(f64::NAN) && !valid_probability(1.5));
    }

    /// The shared loop: no decision before the window is full, a raise at the
    /// threshold, none while raised, a restore below half of it, invalid outputs
    /// counted and ignored, and a link that goes down forgets its window.
    #[test]
    fn link_risk_raises_at_the_threshold_and_restores_below_half_of_it() {
        let mut params = vec![0.0_f32; spec().num_params()];
        params[1] = 20.0; // loss now -> "down"
        params[13] = -6.0; // p = sigmoid(20 loss - 6): 0.5 at loss 0.3
        let model = PredictorModel {
            horizon_ms: 2000,
            sample_interval_ms: 100,
            window: 3,
            threshold: 0.5,
            params,
        };
        let mut risk = LinkRisk::default();
        let mut f = features(0.5, 1);
        assert_eq!(
            risk.observe("b", &f, 3, Some(&model)),
            (None, RiskAction::Keep)
        );
        assert_eq!(risk.observe("b", &f, 3, Some(&model)).1, RiskAction::Keep);
        let (x, action) = risk.observe("b", &f, 3, Some(&model));
        assert_eq!((x.map(|x| x[0]), action), (Some(0.5), RiskAction::Raise));
        f.risk_factor = RISK_FACTOR;
        assert_eq!(risk.observe("b", &f, 3, Some(&model)).1, RiskAction::Keep);
        // p(0.27) = 0.354: above half the threshold, the link stays raised.
        f.loss = 0.27;
        assert_eq!(risk.observe("b", &f, 3, Some(&model)).1, RiskAction::Keep);
        f.loss = 0.1;
        assert_eq!(
            risk.observe("b", &f, 3, Some(&model)).1,
            RiskAction::Restore
        );
        assert_eq!((risk.predictions, risk.invalid_outputs), (4, 0));
        // Down: the window starts again.
        f.up = false;
        assert_eq!(
            risk.observe("b", &f, 3, Some(&model)),
            (None, RiskAction::Keep)
        );
        f.up = true;
        assert_eq!(risk.observe("b", &f, 3, Some(&model)).0, None);
        // NaN parameters give NaN: counted, nothing done.
        let mut nan = model.clone();
        nan.params[13] = f32::NAN;
        let mut risk = LinkRisk::default();
        let f = features(0.9, 1);
        for _ in 0..5 {
            assert_eq!(risk.observe(1u32, &f, 3, Some(&nan)).1, RiskAction::Keep);
        }
        assert_eq!((risk.predictions, risk.invalid_outputs), (3, 3));
        risk.retain(|_| false);
        assert_eq!(risk.observe(1u32, &f, 3, None), (None, RiskAction::Keep));
    }
}
