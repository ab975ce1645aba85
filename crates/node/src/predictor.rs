//! The link-failure predictor in the daemon (`[predictor] model = FILE`,
//! docs/prediction.md): every `sample_interval_ms` of the model (100 ms for the models
//! `x0tta6bl4 twin train-predictor` writes) the driver samples each neighbour's link as
//! the protocol core measures it ([`x0tta6bl4_proto::Node::link_features`]) into the
//! same feature window the twin uses ([`LinkRisk`] of `x0tta6bl4_fl::linkpredict`),
//! and raises a link whose predicted failure reaches the model's threshold by
//! [`RISK_FACTOR`] ([`x0tta6bl4_proto::Node::set_link_risk`], flooded at once), then
//! gives it back its measured cost when the prediction falls below half the threshold.
//!
//! A model file that fails its hash check (or is unreadable, of another format, or has
//! non-finite parameters) is refused at start with one error line; the node then routes
//! with its measured costs, as without the key. Predictions that are NaN or outside 0..1
//! are ignored and counted (`x0tta6bl4_link_predictions_invalid_total`).

use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use x0tta6bl4_fl::linkpredict::{LinkRisk, PredictorFile, PredictorModel, RiskAction, RISK_FACTOR};
use x0tta6bl4_proto::{Instant, Node, NodeName};

/// `[predictor]`: the link-failure predictor the node runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictorConfig {
    /// The model file (`x0tta6bl4 twin train-predictor --out FILE`), relative to the
    /// configuration file's directory. None (the default): no predictor, links keep
    /// their measured costs.
    pub model: Option<PathBuf>,
}

/// The predictor's metrics (docs/metrics.md), live: the driver updates them.
#[derive(Clone, Debug, Default)]
pub(crate) struct PredictorMetrics {
    loaded: Gauge,
    refused: Gauge,
    predictions: Counter,
    invalid: Counter,
    raises: Counter,
    restores: Counter,
}

impl PredictorMetrics {
    pub(crate) fn register(registry: &mut Registry) -> PredictorMetrics {
        let m = PredictorMetrics::default();
        registry.register(
            "link_predictor_loaded",
            "1 while a link-failure predictor runs ([predictor] model), 0 without one or when the file was refused",
            m.loaded.clone(),
        );
        registry.register(
            "link_predictor_refused",
            "1 when the configured link-failure predictor file was refused at start (hash check, format or parameters; the log says why): the node routes with its measured costs",
            m.refused.clone(),
        );
        registry.register(
            "link_predictions",
            "Link-failure predictions made (one per up link every sample interval of the model)",
            m.predictions.clone(),
        );
        registry.register(
            "link_predictions_invalid",
            "Link-failure predictions that were NaN or outside 0..1: ignored, the link kept its cost",
            m.invalid.clone(),
        );
        registry.register(
            "link_risk_raises",
            "Links whose cost the predictor raised (predicted failure at or above the model's threshold)",
            m.raises.clone(),
        );
        registry.register(
            "link_risk_restores",
            "Raised links the predictor gave back their measured cost (prediction below half the threshold)",
            m.restores.clone(),
        );
        m
    }
}

/// The running predictor, owned by the driver.
pub(crate) struct Predictor {
    model: PredictorModel,
    risk: LinkRisk<NodeName>,
    interval: Duration,
    next_at: tokio::time::Instant,
    metrics: PredictorMetrics,
}

impl Predictor {
    /// The predictor of `config`, when a model is configured and its file passes its
    /// checks; a refused file is logged and counted, and the node runs without one.
    pub(crate) fn start(config: &PredictorConfig, metrics: PredictorMetrics) -> Option<Predictor> {
        let path = config.model.as_ref()?;
        match PredictorFile::load(path) {
            Ok(model) => {
                tracing::info!(file = %path.display(), threshold = model.threshold,
                    interval_ms = model.sample_interval_ms, window = model.window,
                    "link-failure predictor loaded");
                metrics.loaded.set(1);
                let interval = Duration::from_millis(model.sample_interval_ms);
                Some(Predictor {
                    model,
                    risk: LinkRisk::default(),
                    interval,
                    next_at: tokio::time::Instant::now() + interval,
                    metrics,
                })
            }
            Err(error) => {
                tracing::error!(%error,
                    "link-failure predictor refused: the node routes with its measured link costs");
                metrics.refused.set(1);
                None
            }
        }
    }

    /// When the next prediction round is due.
    pub(crate) fn next_at(&self) -> tokio::time::Instant {
        self.next_at
    }

    /// One round: every neighbour's link sampled, predicted, raised or restored.
    pub(crate) fn tick(&mut self, node: &mut Node, now: Instant) {
        let started = tokio::time::Instant::now();
        self.next_at += self.interval;
        if self.next_at <= started {
            self.next_at = started + self.interval; // skip rounds missed while busy
        }
        let (predictions, invalid) = (self.risk.predictions, self.risk.invalid_outputs);
        let neighbours = node.neighbours();
        for n in &neighbours {
            let Some(f) = node.link_features(&n.name) else {
                continue;
            };
            let (_, action) =
                self.risk
                    .observe(n.name.clone(), &f, self.model.window, Some(&self.model));
            let (factor, counter) = match action {
                RiskAction::Raise => (RISK_FACTOR, &self.metrics.raises),
                RiskAction::Restore => (1.0, &self.metrics.restores),
                RiskAction::Keep => continue,
            };
            if node.set_link_risk(now, &n.name, factor) {
                counter.inc();
                tracing::debug!(neighbour = %n.name, factor, "link cost risk factor set by the predictor");
            }
        }
        // `neighbours()` is sorted by name.
        self.risk
            .retain(|name| neighbours.binary_search_by(|n| n.name.cmp(name)).is_ok());
        self.metrics
            .predictions
            .inc_by(self.risk.predictions - predictions);
        self.metrics
            .invalid
            .inc_by(self.risk.invalid_outputs - invalid);
    }
}
