//! The kernel source: the eBPF collector ([`crate::ebpf`]) read once a second on a
//! thread of its own.

use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::{LinkInput, LinkSample, TelemetrySource, SAMPLE_INTERVAL};
use crate::ebpf::{Counters, EbpfCollector, Interfaces, KernelCounters, LoadError};

/// Packets, bytes and drops per peer address and interface, counted in the kernel.
/// Dropping it stops its thread and detaches the programs.
pub struct KernelSource {
    latest: Arc<Mutex<Option<KernelCounters>>>,
    /// This round's reading.
    current: Option<KernelCounters>,
    interfaces: Vec<String>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for KernelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelSource")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl KernelSource {
    /// Load the collector on every interface of the calling thread's namespace.
    pub fn start() -> Result<KernelSource, LoadError> {
        let collector = EbpfCollector::load(&Interfaces::All)?;
        Ok(KernelSource::from_collector(collector))
    }

    /// Read `collector` once a second from now on.
    pub fn from_collector(collector: EbpfCollector) -> KernelSource {
        let interfaces = collector.interfaces();
        let latest = Arc::new(Mutex::new(None));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = latest.clone();
        let thread = std::thread::Builder::new()
            .name("ebpf-reader".into())
            .spawn(move || read_loop(&collector, &shared, &stopped))
            .map_err(|error| {
                tracing::warn!(%error, "cannot start the eBPF reader thread: no kernel counters")
            })
            .ok();
        KernelSource {
            latest,
            current: None,
            interfaces,
            stop: Some(stop),
            thread,
        }
    }

    /// The interfaces watched.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }
}

fn read_loop(
    collector: &EbpfCollector,
    latest: &Mutex<Option<KernelCounters>>,
    stopped: &mpsc::Receiver<()>,
) {
    let mut failing = false;
    loop {
        match collector.read() {
            Ok(counters) => {
                failing = false;
                *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(counters);
            }
            // Logged when it starts failing, not every second.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot read the eBPF collector's maps");
            }
            Err(_) => {}
        }
        match stopped.recv_timeout(SAMPLE_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Drop for KernelSource {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One counter of [`Counters`] (packets or bytes).
type CounterField = fn(&Counters) -> u64;

impl TelemetrySource for KernelSource {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn begin(&mut self) {
        self.current = self
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
    }

    fn sample(&mut self, link: &LinkInput<'_>, into: &mut LinkSample) {
        let (Some(current), Some(address)) = (&self.current, link.address) else {
            return;
        };
        let peer = current.peers.get(&address).cloned().unwrap_or_default();
        into.kernel_packets = Some(peer.received.packets + peer.sent.packets);
        into.kernel_bytes = Some(peer.received.bytes + peer.sent.bytes);
        into.kernel_drops = Some(peer.drops_total().packets);
    }

    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(counters) = latest.as_ref() else {
            return Ok(());
        };
        let families: [(&str, &str, CounterField); 2] = [
            (
                "kernel_interface_packets",
                "Packets through the node's interfaces, counted by the eBPF collector's tc programs",
                |c| c.packets,
            ),
            (
                "kernel_interface_bytes",
                "Bytes (with link-layer headers) through the node's interfaces, counted by the eBPF collector's tc programs",
                |c| c.bytes,
            ),
        ];
        for (name, help, value) in families {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (interface, c) in &counters.interfaces {
                for (direction, side) in [("received", &c.received), ("sent", &c.sent)] {
                    let labels = [("interface", interface.as_str()), ("direction", direction)];
                    ConstCounter::new(value(side)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut drops = e.encode_descriptor(
            "kernel_drops",
            "Packets the kernel dropped in the node's network namespace (tracepoint skb:kfree_skb), by interface and drop reason",
            None,
            MetricType::Counter,
        )?;
        for (interface, c) in &counters.interfaces {
            for (reason, d) in &c.drops {
                let labels = [
                    ("interface", interface.as_str()),
                    ("reason", reason.as_str()),
                ];
                ConstCounter::new(d.packets).encode(drops.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
