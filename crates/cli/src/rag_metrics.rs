//! Prometheus metrics of `rag serve` (prometheus-client, the library the node uses).
//!
//! - `x0tta6bl4_rag_requests_total{endpoint,status}` and
//!   `x0tta6bl4_rag_request_duration_seconds{endpoint}`: every answered request;
//! - `x0tta6bl4_rag_policy_decisions_total{endpoint,decision}`: the policy's verdicts;
//! - `x0tta6bl4_rag_generations_total{result}`: answers asked of the `--llm-endpoint`,
//!   `ok` or why not (`unreachable`, `timeout`, `status`, `malformed`);
//! - `x0tta6bl4_rag_chunks`, `x0tta6bl4_rag_index_memory_bytes`: the store served now;
//! - `x0tta6bl4_rag_connections_open`, `_accepted_total` and
//!   `x0tta6bl4_rag_connections_refused_total{reason}`: the connection counters of the
//!   node's API server, `reason="tls_handshake"` counting callers without a valid SVID.

use std::fmt;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use x0tta6bl4_node::api_serve::{ApiCounters, Refusal};
use x0tta6bl4_rag::store::Store;

type Labels = Vec<(&'static str, String)>;

/// The endpoint label of a request path (a fixed set, so labels stay bounded).
pub fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/api/v1/rag/query" => "query",
        "/api/v1/rag/ingest" => "ingest",
        "/api/v1/rag/advise" => "advise",
        "/metrics" => "metrics",
        _ => "other",
    }
}

/// The service's metrics.
pub struct RagMetrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    decisions: Family<Labels, Counter>,
    generations: Family<Labels, Counter>,
    chunks: Gauge,
    index_bytes: Gauge<i64, AtomicI64>,
    /// The API server's connection counters.
    pub counters: Arc<ApiCounters>,
}

impl RagMetrics {
    /// Register everything; `counters` are the API server's.
    pub fn new(counters: Arc<ApiCounters>) -> Self {
        let mut registry = Registry::with_prefix("x0tta6bl4_rag");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint and HTTP status",
            requests.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let help = "Time to answer a request (embedding and search included), by endpoint";
        registry.register("request_duration_seconds", help, durations.clone());
        let decisions = Family::<Labels, Counter>::default();
        let help = "Authorization policy decisions, by endpoint and decision (allow, deny)";
        registry.register("policy_decisions", help, decisions.clone());
        let generations = Family::<Labels, Counter>::default();
        let help = "Answers asked of the generation endpoint, by result (ok, unreachable, timeout, status, malformed)";
        registry.register("generations", help, generations.clone());
        let chunks = Gauge::default();
        registry.register("chunks", "Chunks in the store served", chunks.clone());
        let index_bytes = Gauge::<i64, AtomicI64>::default();
        let help = "Bytes the store's index holds in memory to answer searches";
        registry.register("index_memory_bytes", help, index_bytes.clone());
        registry.register_collector(Box::new(ConnectionCollector(counters.clone())));
        Self {
            registry,
            requests,
            durations,
            decisions,
            generations,
            chunks,
            index_bytes,
            counters,
        }
    }

    /// Count an answered request.
    pub fn observe(&self, endpoint: &'static str, status: u16, took: Duration) {
        let labels = vec![
            ("endpoint", endpoint.to_owned()),
            ("status", status.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        let labels = vec![("endpoint", endpoint.to_owned())];
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Count a policy decision.
    pub fn decision(&self, endpoint: &'static str, allowed: bool) {
        let decision = if allowed { "allow" } else { "deny" };
        let labels = vec![
            ("endpoint", endpoint.to_owned()),
            ("decision", decision.to_owned()),
        ];
        self.decisions.get_or_create(&labels).inc();
    }

    /// Count a generation by its result (`ok` or a `GenerateError::kind`).
    pub fn generation(&self, result: &'static str) {
        let labels = vec![("result", result.to_owned())];
        self.generations.get_or_create(&labels).inc();
    }

    /// Record the size of the store now served.
    pub fn set_store(&self, store: &Store) {
        self.chunks.set(store.manifest.chunks as i64);
        self.index_bytes.set(store.index().memory_bytes() as i64);
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[derive(Debug)]
struct ConnectionCollector(Arc<ApiCounters>);

impl Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let api = &self.0;
        let help = "Connections open now";
        let open = ConstGauge::new(api.open() as i64);
        open.encode(encoder.encode_descriptor(
            "connections_open",
            help,
            None,
            MetricType::Gauge,
        )?)?;
        let help = "Connections accepted (before the TLS handshake)";
        let accepted = ConstCounter::new(api.accepted());
        let kind = MetricType::Counter;
        accepted.encode(encoder.encode_descriptor("connections_accepted", help, None, kind)?)?;
        let help = "Connections and requests refused, by reason (tls_handshake: no valid client SVID; limit, evicted, header_timeout, request_timeout, accept_failed)";
        let mut family = encoder.encode_descriptor("connections_refused", help, None, kind)?;
        for reason in Refusal::ALL {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(api.refused(reason)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
