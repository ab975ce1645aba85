//! Link telemetry (docs/telemetry.md): one [`TelemetrySource`] trait, several sources,
//! one per-link sample each second, a window of samples per link, and from the window a
//! fixed feature vector ([`FEATURE_NAMES`]) for the learning parts of issue #15
//! (link-failure prediction, routing agents), exported as Prometheus metrics too.
//!
//! Key design decision: telemetry observes and never steers. The driver hands it a view
//! of each link once a second ([`Telemetry::due`]); nothing here feeds back into the
//! protocol core, so a node without eBPF support (not root, no BTF, built without the
//! `ebpf` feature) routes exactly as before, and one with it does too.
//!
//! Sources: [`ProbeSource`] (the core's probe RTT and loss), [`QuicSource`] (quinn's
//! path statistics: RTT, congestion window, sent and lost packets) and, with the `ebpf`
//! feature, [`KernelSource`] (packets, bytes and drops per peer address counted in the
//! kernel). The kernel maps are read on a thread of their own, so the driver only ever
//! copies the latest reading.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use serde::Serialize;
use x0tta6bl4_proto::{NeighbourView, NodeName};

/// How often each link is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per link: the window the features are computed over (10 s).
pub const WINDOW_SAMPLES_MAX: usize = 10;
/// Links tracked at most (beyond, new links get no window; the protocol's own
/// `neighbours_max` is smaller in every configuration we ship).
pub const LINKS_MAX: usize = 1024;

/// What one link looked like at one instant; each source fills what it knows.
/// Cumulative counters are since the source began counting for this link.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LinkSample {
    /// When.
    #[serde(skip)]
    pub at: Option<Instant>,
    /// The core's smoothed probe RTT, seconds.
    pub probe_rtt_seconds: Option<f64>,
    /// The core's probe loss estimate, 0 to 1.
    pub probe_loss_ratio: Option<f64>,
    /// quinn's smoothed RTT, seconds.
    pub quic_rtt_seconds: Option<f64>,
    /// quinn's congestion window, bytes.
    pub quic_cwnd_bytes: Option<u64>,
    /// QUIC packets sent on the link's current connection.
    pub quic_sent_packets: Option<u64>,
    /// QUIC packets declared lost on it.
    pub quic_lost_packets: Option<u64>,
    /// Packets sent to and received from the peer's address, counted by the kernel.
    pub kernel_packets: Option<u64>,
    /// Their bytes.
    pub kernel_bytes: Option<u64>,
    /// Packets to or from the peer's address the kernel dropped (any reason).
    pub kernel_drops: Option<u64>,
}

/// One link as the driver sees it when sampling.
#[derive(Clone, Copy, Debug)]
pub struct LinkInput<'a> {
    /// The neighbour.
    pub neighbour: &'a NodeName,
    /// The core's view of it.
    pub probe: Option<&'a NeighbourView>,
    /// The open QUIC connection, if any.
    pub connection: Option<&'a quinn::Connection>,
}

impl LinkInput<'_> {
    /// The peer's address (IPv4-mapped IPv6 turned back into IPv4).
    pub fn address(&self) -> Option<IpAddr> {
        self.connection
            .map(|c| c.remote_address())
            .map(|a: SocketAddr| a.ip().to_canonical())
    }
}

/// A source of link measurements.
pub trait TelemetrySource: Send {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// Called once per sampling round, before the links: take a consistent reading.
    fn begin(&mut self) {}
    /// Fill in what this source knows about `link`.
    fn sample(&mut self, link: &LinkInput<'_>, into: &mut LinkSample);
    /// Node-wide series for `/metrics` (for the kernel source: per-interface counters).
    fn encode(&self, _encoder: &mut DescriptorEncoder) -> fmt::Result {
        Ok(())
    }
}

/// The protocol core's probe measurements.
#[derive(Debug, Default)]
pub struct ProbeSource;

impl TelemetrySource for ProbeSource {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn sample(&mut self, link: &LinkInput<'_>, into: &mut LinkSample) {
        if let Some(probe) = link.probe {
            into.probe_rtt_seconds = probe.srtt.map(|rtt| rtt.as_secs_f64());
            into.probe_loss_ratio = Some(probe.loss);
        }
    }
}

/// quinn's path statistics of the link's connection (`Connection::stats()`).
#[derive(Debug, Default)]
pub struct QuicSource;

impl TelemetrySource for QuicSource {
    fn name(&self) -> &'static str {
        "quic"
    }

    fn sample(&mut self, link: &LinkInput<'_>, into: &mut LinkSample) {
        if let Some(connection) = link.connection {
            let path = connection.stats().path;
            into.quic_rtt_seconds = Some(path.rtt.as_secs_f64());
            into.quic_cwnd_bytes = Some(path.cwnd);
            into.quic_sent_packets = Some(path.sent_packets);
            into.quic_lost_packets = Some(path.lost_packets);
        }
    }
}

#[cfg(feature = "ebpf")]
pub use kernel::KernelSource;

#[cfg(feature = "ebpf")]
mod kernel;

/// The names of [`LinkFeatures::values`], in order. Unknown values are NaN.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "probe_rtt_seconds",
    "probe_rtt_mean_seconds",
    "probe_jitter_seconds",
    "probe_loss_ratio",
    "quic_rtt_seconds",
    "quic_cwnd_bytes",
    "quic_lost_packets_per_second",
    "quic_loss_ratio",
    "kernel_packets_per_second",
    "kernel_bytes_per_second",
    "kernel_drops_per_second",
    "kernel_drop_ratio",
];
/// Length of the feature vector.
pub const FEATURES: usize = 12;

/// One link's feature vector over its window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkFeatures {
    /// The neighbour.
    pub neighbour: NodeName,
    /// Samples in the window.
    pub samples: usize,
    /// In the order of [`FEATURE_NAMES`]; NaN where the sources gave nothing.
    pub values: [f64; FEATURES],
    /// The latest sample.
    pub last: LinkSample,
}

impl LinkFeatures {
    /// The value of the feature called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        let index = FEATURE_NAMES.iter().position(|n| *n == name)?;
        Some(self.values[index])
    }
}

/// The mean of the absolute differences between consecutive values (RFC 3550's jitter,
/// without its smoothing); NaN with fewer than two.
fn jitter(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    let sum: f64 = values.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    sum / (values.len() - 1) as f64
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// (first, last, seconds between) of a cumulative counter over the window: its samples
/// after the last reset (a new connection starts its counters again).
fn span(window: &VecDeque<LinkSample>, counter: fn(&LinkSample) -> Option<u64>) -> Option<(u64, u64, f64)> {
    let points: Vec<(Instant, u64)> = window
        .iter()
        .filter_map(|s| Some((s.at?, counter(s)?)))
        .collect();
    let reset = points.windows(2).rposition(|w| w[1].1 < w[0].1).map_or(0, |i| i + 1);
    let points = &points[reset..];
    let (first, last) = (points.first()?, points.last()?);
    let seconds = last.0.duration_since(first.0).as_secs_f64();
    (seconds > 0.0).then_some((first.1, last.1, seconds))
}

fn rate(window: &VecDeque<LinkSample>, counter: fn(&LinkSample) -> Option<u64>) -> f64 {
    span(window, counter).map_or(f64::NAN, |(first, last, seconds)| (last - first) as f64 / seconds)
}

/// `part` over `part + rest` of two counters' increases over the window.
fn ratio(
    window: &VecDeque<LinkSample>,
    part: fn(&LinkSample) -> Option<u64>,
    whole: fn(&LinkSample) -> Option<u64>,
) -> f64 {
    match (span(window, part), span(window, whole)) {
        (Some((p0, p1, _)), Some((w0, w1, _))) if w1 > w0 => (p1 - p0) as f64 / (w1 - w0) as f64,
        (Some(_), Some(_)) => 0.0,
        _ => f64::NAN,
    }
}

/// The feature vector of one link's window.
pub fn features(neighbour: &NodeName, window: &VecDeque<LinkSample>) -> LinkFeatures {
    let last = window.back().cloned().unwrap_or_default();
    let rtts: Vec<f64> = window.iter().filter_map(|s| s.probe_rtt_seconds).collect();
    let kernel_all = |s: &LinkSample| Some(s.kernel_packets? + s.kernel_drops?);
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let values = [
        nan(last.probe_rtt_seconds),
        mean(&rtts),
        jitter(&rtts),
        nan(last.probe_loss_ratio),
        nan(last.quic_rtt_seconds),
        nan(last.quic_cwnd_bytes.map(|c| c as f64)),
        rate(window, |s| s.quic_lost_packets),
        ratio(window, |s| s.quic_lost_packets, |s| s.quic_sent_packets),
        rate(window, |s| s.kernel_packets),
        rate(window, |s| s.kernel_bytes),
        rate(window, |s| s.kernel_drops),
        ratio(window, |s| s.kernel_drops, kernel_all),
    ];
    LinkFeatures {
        neighbour: neighbour.clone(),
        samples: window.len(),
        values,
        last,
    }
}

/// What `/metrics` and [`crate::NodeHandle::link_features`] read: the latest features.
#[derive(Debug, Default)]
pub(crate) struct Published {
    links: Mutex<Vec<LinkFeatures>>,
    sources: Mutex<Vec<Box<dyn TelemetrySource>>>,
    ebpf_loaded: bool,
}

impl fmt::Debug for dyn TelemetrySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The sources and each link's window; owned by the driver.
pub struct Telemetry {
    windows: HashMap<NodeName, VecDeque<LinkSample>>,
    next_at: Instant,
    published: Arc<Published>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("links", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The probe and QUIC sources, plus the kernel collector when it loads; logs exactly
    /// one line saying whether the kernel collector runs, and if not, why.
    pub fn start() -> Telemetry {
        let mut sources: Vec<Box<dyn TelemetrySource>> =
            vec![Box::new(ProbeSource), Box::new(QuicSource)];
        let ebpf_loaded = match kernel_source() {
            Ok(source) => {
                sources.push(source);
                true
            }
            Err(why) => {
                tracing::info!("eBPF telemetry off: {why}");
                false
            }
        };
        Telemetry::with_sources(sources, ebpf_loaded)
    }

    /// Telemetry over these sources (tests, the twin).
    pub fn with_sources(sources: Vec<Box<dyn TelemetrySource>>, ebpf_loaded: bool) -> Telemetry {
        Telemetry {
            windows: HashMap::new(),
            next_at: Instant::now(),
            published: Arc::new(Published {
                links: Mutex::new(Vec::new()),
                sources: Mutex::new(sources),
                ebpf_loaded,
            }),
        }
    }

    /// Whether a sampling round is due.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Sample every link, slide the windows, publish the features. Links not given are
    /// forgotten.
    pub fn sample(&mut self, now: Instant, links: &[LinkInput<'_>]) {
        self.next_at = now + SAMPLE_INTERVAL;
        let mut sources = self.published.sources.lock().unwrap_or_else(PoisonError::into_inner);
        for source in sources.iter_mut() {
            source.begin();
        }
        self.windows
            .retain(|name, _| links.iter().any(|l| l.neighbour == name));
        let mut published = Vec::with_capacity(links.len());
        for link in links {
            let mut sample = LinkSample {
                at: Some(now),
                ..LinkSample::default()
            };
            for source in sources.iter_mut() {
                source.sample(link, &mut sample);
            }
            if !self.windows.contains_key(link.neighbour) && self.windows.len() >= LINKS_MAX {
                continue;
            }
            let window = self.windows.entry(link.neighbour.clone()).or_default();
            if window.len() == WINDOW_SAMPLES_MAX {
                window.pop_front();
            }
            window.push_back(sample);
            published.push(features(link.neighbour, window));
        }
        drop(sources);
        published.sort_by(|a, b| a.neighbour.cmp(&b.neighbour));
        *self.published.links.lock().unwrap_or_else(PoisonError::into_inner) = published;
    }

    /// The latest feature vectors, one per link, sorted by neighbour.
    pub fn features(&self) -> Vec<LinkFeatures> {
        self.published.features()
    }

    pub(crate) fn published(&self) -> Arc<Published> {
        self.published.clone()
    }
}

impl Published {
    pub(crate) fn features(&self) -> Vec<LinkFeatures> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(feature = "ebpf")]
fn kernel_source() -> Result<Box<dyn TelemetrySource>, String> {
    let source = KernelSource::start().map_err(|e| e.to_string())?;
    tracing::info!(interfaces = ?source.interfaces(), "eBPF telemetry on");
    Ok(Box::new(source))
}

#[cfg(not(feature = "ebpf"))]
fn kernel_source() -> Result<Box<dyn TelemetrySource>, String> {
    Err("built without the `ebpf` feature (docs/telemetry.md)".into())
}

/// The telemetry series of `/metrics` (docs/metrics.md, "Telemetry").
pub(crate) struct TelemetryCollector(pub Arc<Published>);

impl fmt::Debug for TelemetryCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TelemetryCollector")
    }
}

impl Collector for TelemetryCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let loaded = ConstGauge::new(i64::from(self.0.ebpf_loaded));
        loaded.encode(e.encode_descriptor(
            "telemetry_ebpf_loaded",
            "1 when the eBPF kernel collector is loaded, 0 when it is not (not root, no BTF, built without the ebpf feature)",
            None,
            MetricType::Gauge,
        )?)?;
        let links = self.0.features();
        encode_links(&mut e, &links)?;
        let sources = self.0.sources.lock().unwrap_or_else(PoisonError::into_inner);
        for source in sources.iter() {
            source.encode(&mut e)?;
        }
        Ok(())
    }
}

fn encode_links(e: &mut DescriptorEncoder, links: &[LinkFeatures]) -> fmt::Result {
    let gauges: [(&str, &str, fn(&LinkFeatures) -> Option<f64>); 3] = [
        ("link_jitter_seconds", "Mean absolute change of the smoothed probe RTT between samples one second apart, over the last 10 s", |l| Some(l.values[2]).filter(|v| !v.is_nan())),
        ("link_quic_rtt_seconds", "quinn's smoothed RTT of the link's connection", |l| l.last.quic_rtt_seconds),
        ("link_quic_cwnd_bytes", "quinn's congestion window of the link's connection", |l| l.last.quic_cwnd_bytes.map(|c| c as f64)),
    ];
    for (name, help, value) in gauges {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for link in links {
            if let Some(value) = value(link) {
                let labels = [("neighbour", link.neighbour.as_str())];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    let counters: [(&str, &str, fn(&LinkSample) -> Option<u64>); 4] = [
        ("link_quic_sent_packets_total", "QUIC packets sent on the link's current connection (starts again with a new connection)", |s| s.quic_sent_packets),
        ("link_quic_lost_packets_total", "QUIC packets declared lost on the link's current connection (starts again with a new connection)", |s| s.quic_lost_packets),
        ("link_kernel_packets_total", "Packets to and from the neighbour's address counted by the eBPF collector on the node's interfaces", |s| s.kernel_packets),
        ("link_kernel_drops_total", "Packets to or from the neighbour's address the kernel dropped, any reason (eBPF collector)", |s| s.kernel_drops),
    ];
    for (name, help, value) in counters {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
        for link in links {
            if let Some(value) = value(&link.last) {
                let labels = [("neighbour", link.neighbour.as_str())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}
