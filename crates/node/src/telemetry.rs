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
//! feature, `KernelSource` (packets, bytes and drops per peer address counted in the
//! kernel). The kernel maps are read on a thread of their own, so the driver only ever
//! copies the latest reading.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The peer's IP address, as the kernel sees it (IPv4-mapped IPv6 as IPv4).
    pub address: Option<IpAddr>,
    /// The core's view of it.
    pub probe: Option<&'a NeighbourView>,
    /// The open QUIC connection, if any.
    pub connection: Option<&'a quinn::Connection>,
}

impl<'a> LinkInput<'a> {
    /// A link with an open connection: its address is the connection's.
    pub fn connected(
        neighbour: &'a NodeName,
        probe: Option<&'a NeighbourView>,
        connection: Option<&'a quinn::Connection>,
    ) -> LinkInput<'a> {
        let address = connection.map(|c| c.remote_address().ip().to_canonical());
        LinkInput {
            neighbour,
            address,
            probe,
            connection,
        }
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
fn span(
    window: &VecDeque<LinkSample>,
    counter: fn(&LinkSample) -> Option<u64>,
) -> Option<(u64, u64, f64)> {
    let points: Vec<(Instant, u64)> = window
        .iter()
        .filter_map(|s| Some((s.at?, counter(s)?)))
        .collect();
    let reset = points
        .windows(2)
        .rposition(|w| w[1].1 < w[0].1)
        .map_or(0, |i| i + 1);
    let points = &points[reset..];
    let (first, last) = (points.first()?, points.last()?);
    let seconds = last.0.duration_since(first.0).as_secs_f64();
    (seconds > 0.0).then_some((first.1, last.1, seconds))
}

fn rate(window: &VecDeque<LinkSample>, counter: fn(&LinkSample) -> Option<u64>) -> f64 {
    span(window, counter).map_or(f64::NAN, |(first, last, seconds)| {
        (last - first) as f64 / seconds
    })
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
    ebpf_loaded: AtomicBool,
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
    /// The probe and QUIC sources, plus the kernel collector once it loads (on a thread
    /// of its own: loading takes 0.1-0.5 s, which neither delays the node's start nor
    /// blocks a runtime thread). Logs exactly one line saying whether the kernel
    /// collector runs, and if not, why.
    pub fn start() -> Telemetry {
        let sources: Vec<Box<dyn TelemetrySource>> =
            vec![Box::new(ProbeSource), Box::new(QuicSource)];
        let telemetry = Telemetry::with_sources(sources, false);
        start_kernel_source(telemetry.published.clone());
        telemetry
    }

    /// Telemetry over these sources (tests, the twin).
    pub fn with_sources(sources: Vec<Box<dyn TelemetrySource>>, ebpf_loaded: bool) -> Telemetry {
        Telemetry {
            windows: HashMap::new(),
            next_at: Instant::now(),
            published: Arc::new(Published {
                links: Mutex::new(Vec::new()),
                sources: Mutex::new(sources),
                ebpf_loaded: AtomicBool::new(ebpf_loaded),
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
        let mut sources = self
            .published
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
        *self
            .published
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = published;
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
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Load the kernel collector on a thread of its own (in the caller's network namespace,
/// which threads inherit) and add it to `published` once it runs.
#[cfg(feature = "ebpf")]
fn start_kernel_source(published: Arc<Published>) {
    let span = tracing::Span::current();
    let load = move || {
        let _entered = span.enter();
        match KernelSource::start() {
            Ok(source) => {
                tracing::info!(interfaces = ?source.interfaces(), "eBPF telemetry on");
                published
                    .sources
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Box::new(source));
                published.ebpf_loaded.store(true, Ordering::Relaxed);
            }
            Err(why) => tracing::info!("eBPF telemetry off: {why}"),
        }
    };
    let spawned = std::thread::Builder::new()
        .name("ebpf-load".into())
        .spawn(load);
    if let Err(error) = spawned {
        tracing::info!("eBPF telemetry off: cannot start its loader thread: {error}");
    }
}

#[cfg(not(feature = "ebpf"))]
fn start_kernel_source(_published: Arc<Published>) {
    tracing::info!("eBPF telemetry off: built without the `ebpf` feature (docs/telemetry.md)");
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
        let loaded = ConstGauge::new(i64::from(self.0.ebpf_loaded.load(Ordering::Relaxed)));
        loaded.encode(e.encode_descriptor(
            "telemetry_ebpf_loaded",
            "1 when the eBPF kernel collector is loaded, 0 when it is not (not root, no BTF, built without the ebpf feature)",
            None,
            MetricType::Gauge,
        )?)?;
        let links = self.0.features();
        encode_links(&mut e, &links)?;
        let sources = self
            .0
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for source in sources.iter() {
            source.encode(&mut e)?;
        }
        Ok(())
    }
}

/// A per-link series: name, help, and how to read its value.
type Series<T, V> = (&'static str, &'static str, fn(&T) -> Option<V>);

fn encode_links(e: &mut DescriptorEncoder, links: &[LinkFeatures]) -> fmt::Result {
    let gauges: [Series<LinkFeatures, f64>; 3] = [
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
    let counters: [Series<LinkSample, u64>; 4] = [
        ("link_quic_sent_packets", "QUIC packets sent on the link's current connection (starts again with a new connection)", |s| s.quic_sent_packets),
        ("link_quic_lost_packets", "QUIC packets declared lost on the link's current connection (starts again with a new connection)", |s| s.quic_lost_packets),
        ("link_kernel_packets", "Packets to and from the neighbour's address counted by the eBPF collector on the node's interfaces", |s| s.kernel_packets),
        ("link_kernel_drops", "Packets to or from the neighbour's address the kernel dropped, any reason (eBPF collector)", |s| s.kernel_drops),
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

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_proto::NeighbourState;

    fn view(name: &NodeName, rtt_ms: u64, loss: f64) -> NeighbourView {
        NeighbourView {
            name: name.clone(),
            state: NeighbourState::Up,
            srtt: Some(Duration::from_millis(rtt_ms)),
            loss,
            cost: 10,
            link_open: true,
            flaps: 0,
            advertised: true,
        }
    }

    /// Counters as the kernel source would give them: a script of (packets, drops).
    struct Script(Vec<(u64, u64)>);

    impl TelemetrySource for Script {
        fn name(&self) -> &'static str {
            "script"
        }
        fn sample(&mut self, _link: &LinkInput<'_>, into: &mut LinkSample) {
            let (packets, drops) = self.0.remove(0);
            into.kernel_packets = Some(packets);
            into.kernel_bytes = Some(packets * 100);
            into.kernel_drops = Some(drops);
        }
    }

    fn round(telemetry: &mut Telemetry, at: Instant, views: &[NeighbourView]) {
        let links: Vec<LinkInput<'_>> = views
            .iter()
            .map(|v| LinkInput::connected(&v.name, Some(v), None))
            .collect();
        telemetry.sample(at, &links);
    }

    #[test]
    fn window_gives_mean_jitter_rates_and_ratios() {
        let b = NodeName::new("b").unwrap();
        let script = Script(vec![(0, 0), (1000, 0), (2000, 10), (3000, 30)]);
        let mut telemetry =
            Telemetry::with_sources(vec![Box::new(ProbeSource), Box::new(script)], false);
        let start = Instant::now();
        for (i, rtt) in [10, 14, 12, 20].into_iter().enumerate() {
            round(
                &mut telemetry,
                start + SAMPLE_INTERVAL * i as u32,
                &[view(&b, rtt, 0.25)],
            );
        }
        let features = telemetry.features();
        assert_eq!(features.len(), 1);
        let f = &features[0];
        assert_eq!(f.samples, 4);
        let close = |name: &str, want: f64| {
            let got = f.get(name).unwrap();
            assert!((got - want).abs() < 1e-9, "{name}: {got} != {want}");
        };
        close("probe_rtt_seconds", 0.020);
        close("probe_rtt_mean_seconds", 0.014);
        close("probe_jitter_seconds", (0.004 + 0.002 + 0.008) / 3.0);
        close("probe_loss_ratio", 0.25);
        close("kernel_packets_per_second", 1000.0);
        close("kernel_bytes_per_second", 100_000.0);
        close("kernel_drops_per_second", 10.0);
        close("kernel_drop_ratio", 30.0 / 3030.0);
        // No connection: the QUIC features are unknown, not zero.
        assert!(f.get("quic_cwnd_bytes").unwrap().is_nan());
        assert!(f.get("quic_loss_ratio").unwrap().is_nan());
        assert!(!telemetry.due(start + SAMPLE_INTERVAL * 3));
        assert!(telemetry.due(start + SAMPLE_INTERVAL * 4));
    }

    #[test]
    fn window_is_bounded_counter_resets_start_afresh_and_gone_links_are_forgotten() {
        let (b, c) = (NodeName::new("b").unwrap(), NodeName::new("c").unwrap());
        // c's counters: rising, then a new connection starts them again at 5.
        let mut counts: Vec<(u64, u64)> = (0..15).map(|i| (i * 100, 0)).collect();
        counts.extend([(5, 0), (105, 0)]);
        let script = Script(counts);
        let mut telemetry = Telemetry::with_sources(vec![Box::new(script)], false);
        let start = Instant::now();
        for i in 0..17u32 {
            round(
                &mut telemetry,
                start + SAMPLE_INTERVAL * i,
                &[view(&c, 10, 0.0)],
            );
        }
        let f = &telemetry.features()[0];
        assert_eq!(f.samples, WINDOW_SAMPLES_MAX);
        // Only the two samples after the reset count: 100 packets in 1 s.
        assert!((f.get("kernel_packets_per_second").unwrap() - 100.0).abs() < 1e-9);
        // With no counters at all the rate is unknown.
        let mut telemetry = Telemetry::with_sources(vec![Box::new(ProbeSource)], false);
        round(
            &mut telemetry,
            start,
            &[view(&b, 10, 0.0), view(&c, 10, 0.0)],
        );
        round(
            &mut telemetry,
            start + SAMPLE_INTERVAL,
            &[view(&c, 12, 0.0)],
        );
        let features = telemetry.features();
        assert_eq!(features.len(), 1, "b is gone");
        assert_eq!(features[0].neighbour, c);
        assert!(features[0]
            .get("kernel_packets_per_second")
            .unwrap()
            .is_nan());
        assert_eq!(telemetry.windows.len(), 1);
    }

    #[test]
    fn feature_names_match_the_vector() {
        assert_eq!(FEATURE_NAMES.len(), FEATURES);
        let mut names = FEATURE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURES, "names are unique");
    }
}
