//! Prometheus metrics (`docs/metrics.md` lists them).
//!
//! Proto keeps its own cumulative [`x0tta6bl4_proto::Stats`]; rather than mirror each
//! increment, a [`Collector`] reads the driver's latest snapshot at scrape time and
//! renders the counters and gauges from it. Only the three histograms (route computation
//! time, probe-flow outages, timer lateness) are live metrics the driver updates.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use x0tta6bl4_proto::{DecisionKind, DropReason, NeighbourState, Stats};

use crate::api_serve::{ApiCounters, Refusal};
use crate::dial_log::DialRefusal;
use crate::outage::OUTAGE_BUCKETS_SECONDS;
use crate::probe_path::{Fallback as ProbeFallback, Refusal as ProbeRefusal};
use crate::state::{DriverDrop, Handshake, IdentityClose, Shared};

/// Prefix of every metric name.
pub const PREFIX: &str = "x0tta6bl4";

/// The registry behind `/metrics` and the live metrics the driver updates.
pub(crate) struct Metrics {
    pub registry: Registry,
    pub route_computation_seconds: Histogram,
    pub flow_outage_seconds: Histogram,
    /// How late the driver handled the protocol's timer (probes, failure detection).
    pub timer_lateness_seconds: Histogram,
    /// The HTTP API's connection counters (`api_serve`).
    pub api: Arc<ApiCounters>,
}

impl Metrics {
    pub fn new(shared: Arc<Shared>) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        // 10 µs to ~1.3 s.
        let route_computation_seconds = Histogram::new(exponential_buckets(1e-5, 2.0, 18));
        registry.register(
            "route_computation_seconds",
            "Duration of protocol timer handling that ran a route computation (shortest paths over the link-state database)",
            route_computation_seconds.clone(),
        );
        let flow_outage_seconds = Histogram::new(OUTAGE_BUCKETS_SECONDS);
        registry.register(
            "flow_outage_seconds",
            "Outages of probe flows received by this node: the gap between the last probe delivered before and the first after, when longer than 3 sender intervals",
            flow_outage_seconds.clone(),
        );
        // 100 µs to ~3.3 s.
        let timer_lateness_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 16));
        registry.register(
            "driver_timer_lateness_seconds",
            "How long after its deadline the driver handled the protocol's timer (probe sends, failure detection); a late timer means the mesh is starved of CPU",
            timer_lateness_seconds.clone(),
        );
        registry.register_collector(Box::new(NodeCollector { shared }));
        let api = Arc::new(ApiCounters::default());
        registry.register_collector(Box::new(ApiCollector(api.clone())));
        Metrics {
            registry,
            route_computation_seconds,
            flow_outage_seconds,
            timer_lateness_seconds,
            api,
        }
    }

    /// The text exposition (OpenMetrics).
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

struct NodeCollector {
    shared: Arc<Shared>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_node(&mut encoder)?;
        self.encode_protocol(&mut encoder)?;
        self.encode_driver(&mut encoder)
    }
}

impl NodeCollector {
    fn encode_node(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        let mut family = e.encode_descriptor(
            "build_info",
            "Build information; always 1",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(family.encode_family(&version)?)?;
        let identity = [
            ("name", self.shared.name.as_str()),
            ("spiffe_id", self.shared.spiffe_id.as_str()),
        ];
        let mut family = e.encode_descriptor(
            "node_info",
            "The node's identity; always 1 (joins a scrape target to its node name)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(family.encode_family(&identity)?)?;
        let uptime = self.shared.started.elapsed().as_secs_f64();
        gauge(
            e,
            "uptime_seconds",
            "Seconds since the node started",
            uptime,
        )?;
        let expiry = self
            .shared
            .svid_not_after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let help = "Expiry of the node's X.509-SVID, seconds since the Unix epoch";
        gauge(
            e,
            "svid_expiry_timestamp_seconds",
            help,
            expiry.as_secs_f64(),
        )?;
        let issued = self
            .shared
            .svid_issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let help = "When the node's current X.509-SVID was issued (notBefore plus the CA's clock-skew allowance), seconds since the Unix epoch; with the expiry it gives the fraction of the SVID's life left";
        gauge(
            e,
            "svid_issued_timestamp_seconds",
            help,
            issued.as_secs_f64(),
        )
    }

    fn encode_protocol(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let snapshot = self.shared.snapshot();
        let states = [
            NeighbourState::Init,
            NeighbourState::Up,
            NeighbourState::Down,
            NeighbourState::Damped,
        ];
        let by_state = states.map(|s| {
            let count = snapshot
                .neighbours
                .iter()
                .filter(|n| n.state == s.as_str())
                .count();
            (s.as_str(), count as i64)
        });
        gauge_family(e, "neighbours", "Neighbours by state", "state", by_state)?;
        let rtt = snapshot
            .neighbours
            .iter()
            .filter_map(|n| Some((n.name.as_str(), n.rtt_ms? / 1000.0)));
        let help = "Smoothed probe round-trip time per neighbour";
        gauge_family(e, "link_rtt_seconds", help, "neighbour", rtt)?;
        let loss = snapshot
            .neighbours
            .iter()
            .map(|n| (n.name.as_str(), n.loss));
        let help = "Estimated probe loss (0 to 1) per neighbour";
        gauge_family(e, "link_loss_ratio", help, "neighbour", loss)?;
        gauge(
            e,
            "routes",
            "Destinations with a route",
            snapshot.routes.len() as i64,
        )?;
        let help = "Advertisements in the link-state database";
        gauge(e, "lsdb_entries", help, snapshot.lsdb_entries as i64)?;
        let s = &snapshot.stats;
        for (name, help, value) in stats_counters(s) {
            counter(e, name, help, value)?;
        }
        let kinds = DecisionKind::ALL.map(|k| (k.as_str(), s.decided(k)));
        counter_family(
            e,
            "healing_decisions",
            "Healing-loop decisions by kind",
            "kind",
            kinds,
        )
    }

    fn encode_driver(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let stats = self.shared.snapshot().stats.clone();
        let counters = &self.shared.counters;
        let proto = DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), stats.dropped(*r)));
        let driver = DriverDrop::ALL
            .iter()
            .map(|r| (r.as_str(), counters.dropped(*r)));
        let help = "Frames, messages and events dropped, by reason";
        counter_family(e, "dropped", help, "reason", proto.chain(driver))?;
        let results = Handshake::ALL.map(|r| (r.as_str(), counters.handshakes(r)));
        let help = "QUIC handshakes by result (ok: peer SVID names a node)";
        counter_family(e, "handshakes", help, "result", results)?;
        let refusals = &counters.dial_refusals;
        let reasons = DialRefusal::ALL.map(|r| (r.as_str(), refusals.count(r)));
        let help = "Dials refused because of identity: peer_refused (the peer does not accept our certificate, or closed the link at once as unauthorised or revoked), peer_untrusted (we do not trust or allow the peer's)";
        counter_family(e, "dial_refusals", help, "reason", reasons)?;
        let closes = IdentityClose::ALL.map(|r| (r.as_str(), counters.identity_closes(r)));
        let help = "Open links closed because the peer stopped being trusted, by reason (peer_svid_expired, revoked, policy_denied)";
        counter_family(e, "identity_link_closes", help, "reason", closes)?;
        let groups = counters.kx_handshakes();
        let groups = groups.iter().map(|(group, n)| (group.as_str(), *n));
        let help = "Successful QUIC handshakes by negotiated key-exchange group";
        counter_family(e, "kx_handshakes", help, "group", groups)?;
        let policy = &self.shared.policy;
        let help = "Authorization policy decisions by decision (allow, deny) and action (neighbour, send, api)";
        let mut family =
            e.encode_descriptor("policy_decisions", help, None, MetricType::Counter)?;
        for (decision, action, count) in policy.decisions() {
            let labels = [("decision", decision), ("action", action)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let resolutions = counters.name_resolutions.counts();
        let help = "Resolutions of static peers given by host name, by result (ok; not_found: no address in the hosts file or DNS; error: DNS failed or did not answer); a name is resolved again when its answer's TTL expires (1 s to 60 s), and 1 s after a failure";
        counter_family(e, "peer_name_resolutions", help, "result", resolutions)?;
        let help = "Authorization policy reloads by result (ok; rejected: the old policy stayed)";
        counter_family(e, "policy_reloads", help, "result", policy.reloads())?;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let reloads = [
            ("ok", load(&counters.config_reloads_ok)),
            ("rejected", load(&counters.config_reloads_rejected)),
        ];
        let help = "Configuration reloads (SIGHUP, POST /api/v1/config/reload) by result (ok; rejected: the configuration in force stayed)";
        counter_family(e, "config_reloads", help, "result", reloads)?;
        let failures = counters
            .state_write_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        let help = "Writes of state files (revocations.jsonl) that failed; each is retried";
        counter(e, "state_write_failures", help, failures)?;
        let pending = counters
            .state_writes_pending
            .load(std::sync::atomic::Ordering::Relaxed);
        let help = "Accepted revocations not yet written to disk (the node is not ready)";
        gauge(e, "state_writes_pending", help, pending as i64)?;
        let path = &counters.probe_path;
        let packets = [
            ("sent", load(&path.sent)),
            ("received", load(&path.received)),
        ];
        let help = "Probes and probe answers on the probe path ([transport] probe_path = \"udp\"), by direction; received counts only authentic packets";
        counter_family(e, "probe_path_packets", help, "direction", packets)?;
        let refused = ProbeRefusal::ALL.map(|r| (r.as_str(), path.refused(r)));
        let help = "Packets on the probe socket dropped, by reason (malformed, unknown_link, forged, replayed)";
        counter_family(e, "probe_path_refused", help, "reason", refused)?;
        let fallbacks = ProbeFallback::ALL.map(|r| (r.as_str(), path.fallbacks(r)));
        let help = "Times a link gave up on the probe path after its hellos went unanswered and probes over QUIC until a backoff ends, by reason (unproven: never answered on the link, lost: answered before)";
        counter_family(e, "probe_path_fallbacks", help, "reason", fallbacks)?;
        let help = "Links whose probes go over the probe path (their peer offered it and answered a hello or probe on it)";
        gauge(e, "probe_path_links", help, load(&path.links) as i64)?;
        let sent = counters
            .flow_probes_sent
            .load(std::sync::atomic::Ordering::Relaxed);
        counter(
            e,
            "flow_probes_sent",
            "Data-plane probe-flow messages sent by this node",
            sent,
        )
    }
}

/// The HTTP API's connections (`api_serve`).
#[derive(Debug)]
struct ApiCollector(Arc<ApiCounters>);

impl Collector for ApiCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let api = &self.0;
        let help = "HTTP API connections open now (at most [api] connections_max)";
        gauge(e, "api_connections_open", help, api.open() as i64)?;
        let help = "HTTP API connections accepted";
        counter(e, "api_connections_accepted", help, api.accepted())?;
        let help = "Times the HTTP API paused accepting at [api] accepts_per_second (new connections wait in the kernel's listen queue meanwhile)";
        counter(e, "api_accept_throttled", help, api.throttled())?;
        let reasons = Refusal::ALL.map(|r| (r.as_str(), api.refused(r)));
        let help = "HTTP API connections and requests refused or closed by a limit, by reason (limit, evicted, header_timeout, request_timeout, tls_handshake, accept_failed)";
        counter_family(e, "api_connections_refused", help, "reason", reasons)
    }
}

/// Proto's cumulative counters: name (without `_total`), help, value.
fn stats_counters(s: &Stats) -> [(&'static str, &'static str, u64); 24] {
    [
        (
            "lsa_originated",
            "Link-state advertisements this node originated",
            s.lsa_originated,
        ),
        (
            "lsa_received",
            "Link-state advertisements received from neighbours",
            s.lsa_received,
        ),
        (
            "lsa_installed",
            "Received advertisements verified and installed",
            s.lsa_installed,
        ),
        (
            "lsa_sent",
            "Advertisement copies sent (floods and retransmissions)",
            s.lsa_sent,
        ),
        (
            "lsa_sent_bytes",
            "Bytes of advertisement copies sent",
            s.lsa_bytes_sent,
        ),
        (
            "lsa_retransmitted",
            "Advertisement retransmissions",
            s.lsa_retransmitted,
        ),
        (
            "lsa_expired",
            "Advertisements aged out of the database",
            s.lsa_expired,
        ),
        ("route_computations", "Route computations run", s.spf_runs),
        (
            "route_computations_incremental",
            "Route computations that repaired the table incrementally (what changed only)",
            s.spf_incremental,
        ),
        (
            "route_audits",
            "Incremental route computations checked against a full one",
            s.route_audits,
        ),
        (
            "route_audit_mismatches",
            "Audited incremental route computations that differed from a full one (a bug; the full table is adopted)",
            s.route_audit_mismatches,
        ),
        (
            "route_changes",
            "Route changes (destinations whose route changed, summed over computations)",
            s.route_changes,
        ),
        (
            "neighbour_down",
            "Neighbour down transitions",
            s.neighbour_down,
        ),
        (
            "suspect_probes",
            "Probes sent to suspected neighbours (protocol.suspect_probe_interval_ms), beyond the probe interval's",
            s.suspect_probes,
        ),
        (
            "revocations_installed",
            "Revocations verified and newly held (from the API, a flood or anti-entropy)",
            s.revocations_installed,
        ),
        (
            "revocation_digests_sent",
            "Revocation digests sent to neighbours (anti-entropy)",
            s.revocation_digests_sent,
        ),
        (
            "address_records_installed",
            "Other nodes' signed address records verified and newly held",
            s.address_records_installed,
        ),
        (
            "learnt_address_dials",
            "Dials to a peer's address learnt from the mesh (next to its configured one)",
            s.learnt_dials,
        ),
        (
            "messages_forwarded",
            "Application messages forwarded for others",
            s.data_forwarded,
        ),
        (
            "messages_delivered",
            "Application messages delivered to this node",
            s.data_delivered,
        ),
        (
            "messages_originated",
            "Application messages originated here",
            s.data_originated,
        ),
        (
            "frames_received",
            "Protocol frames received over links",
            s.frames_received,
        ),
        (
            "frames_sent",
            "Protocol frames sent over links and as beacons",
            s.frames_sent,
        ),
        (
            "frames_sent_bytes",
            "Bytes of protocol frames sent",
            s.bytes_sent,
        ),
    ]
}

fn gauge<V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge_family<'a, V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, V)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_label, value) in values {
        let labels = [(label, value_label)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter_family<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_label, value) in values {
        let labels = [(label, value_label)];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
