//! State shared between the driver (the only writer) and the HTTP API and metrics
//! (readers): a snapshot of the protocol state, the received-message and probe-flow
//! rings, and counters of what the driver itself dropped.
//!
//! Locks are `std::sync` locks held for a copy, never across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use serde::Serialize;
use x0tta6bl4_proto::{NodeName, Stats};

/// Application messages kept for `GET /api/v1/messages` (the oldest is dropped).
pub const MESSAGES_MAX: usize = 1000;
/// Deliveries kept for the attached channels (the oldest is dropped).
pub const APP_MESSAGES_MAX: usize = 4096;
/// Payload bytes kept for the attached channels (the oldest is dropped).
pub const APP_BYTES_MAX: usize = 32 << 20;
/// Probe-flow arrivals kept per source (the oldest is dropped).
pub const ARRIVALS_PER_SOURCE_MAX: usize = 60_000;
/// Probe-flow sources tracked; arrivals from further sources are dropped and counted.
pub const FLOW_SOURCES_MAX: usize = 256;

/// One neighbour as `GET /api/v1/peers` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerView {
    /// Node name.
    pub name: NodeName,
    /// SPIFFE ID from its SVID (`null` if it never had a link since this node started).
    pub spiffe_id: Option<String>,
    /// Remote QUIC address of the open link.
    pub addr: Option<SocketAddr>,
    /// Smoothed round-trip time in milliseconds, once measured.
    pub rtt_ms: Option<f64>,
    /// Estimated probe loss, 0 to 1.
    pub loss: f64,
    /// `init`, `up`, `down` or `damped`.
    pub state: &'static str,
    /// The cost this node advertises for the link.
    pub cost: u32,
    /// Whether the link is in this node's advertisement (carries routes): not until one
    /// of its probes was answered, nor while it delivers under 10 % of round trips.
    pub routed: bool,
    /// Key-exchange group of the open link's handshake, e.g. `X25519MLKEM768`.
    pub kx_group: Option<String>,
    /// The addresses the neighbour advertised through the mesh (its signed address
    /// record, newest held): where this node redials it if its configured address fails.
    pub advertised: Vec<SocketAddr>,
}

/// One route as `GET /api/v1/routes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteView {
    /// Destination node.
    pub destination: NodeName,
    /// Neighbour messages are handed to.
    pub next_hop: NodeName,
    /// Path cost.
    pub cost: u64,
    /// Hops.
    pub hops: u32,
}

/// The protocol state as of the driver's last refresh (at most ~10 ms old).
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub neighbours: Vec<PeerView>,
    pub routes: Vec<RouteView>,
    pub lsdb_entries: usize,
    pub sequence: u64,
    pub stats: Stats,
}

impl Snapshot {
    pub fn neighbours_up(&self) -> usize {
        self.neighbours.iter().filter(|n| n.state == "up").count()
    }
}

/// One application message as `GET /api/v1/messages` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    /// The source node.
    pub from: NodeName,
    /// The source's message identifier.
    pub id: u64,
    /// The payload (invalid UTF-8 is replaced by U+FFFD).
    pub payload: String,
    /// Hops it took.
    pub hops: u8,
    /// Arrival time, microseconds since the Unix epoch.
    pub received_at_us: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Messages {
    pub ring: VecDeque<MessageRecord>,
    /// Channel-0 messages received since start.
    pub total: u64,
}

/// One delivery on an attached application channel (2 to 255), as
/// `GET /api/v1/channels/{channel}/messages` hands it to the process attached there
/// (e.g. an `x0tta6bl4 fl agent` on channel 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppMessage {
    /// Position in the node's sequence of channel deliveries, from 1.
    pub seq: u64,
    pub channel: u8,
    pub from: NodeName,
    pub payload: Vec<u8>,
    pub hops: u8,
}

/// Deliveries on attached channels, oldest first, bounded by [`APP_MESSAGES_MAX`] and
/// [`APP_BYTES_MAX`] (the oldest go first, counted in `dropped`).
#[derive(Debug, Default)]
pub(crate) struct AppChannels {
    pub ring: VecDeque<AppMessage>,
    pub bytes: usize,
    pub last_seq: u64,
    pub dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Flows {
    /// Interval of this node's running flows (0 when none run).
    pub interval_ms: u64,
    /// Probes sent since the flows were (re)started.
    pub sent: u64,
    /// Probes that could not be sent (unknown or unreachable target).
    pub unroutable: u64,
    /// Arrival times (Unix µs, ascending) per source.
    pub received: BTreeMap<NodeName, VecDeque<u64>>,
}

/// What the driver (not proto) dropped; the `reason` label of `dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DriverDrop {
    /// A frame arrived while the driver's input queue was full.
    InputQueueFull,
    /// A transmit for a neighbour without open link.
    NoLink,
    /// A message too large for a datagram while too many stream sends were in flight.
    StreamSendsFull,
    /// QUIC refused a datagram or stream send (connection lost), or a beacon send failed.
    SendFailed,
    /// A stream that failed or exceeded the frame size limit while being read.
    StreamReadFailed,
    /// A probe-flow arrival from a source beyond `FLOW_SOURCES_MAX`.
    FlowSourcesFull,
    /// A probe-flow probe counted already or stale (a replay; see `outage`).
    FlowReplayed,
    /// A delivery on an attached channel pushed out the oldest one not yet read.
    AttachedChannelFull,
}

impl DriverDrop {
    pub const ALL: [DriverDrop; 8] = [
        DriverDrop::InputQueueFull,
        DriverDrop::NoLink,
        DriverDrop::StreamSendsFull,
        DriverDrop::SendFailed,
        DriverDrop::StreamReadFailed,
        DriverDrop::FlowSourcesFull,
        DriverDrop::FlowReplayed,
        DriverDrop::AttachedChannelFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverDrop::InputQueueFull => "input_queue_full",
            DriverDrop::NoLink => "no_link",
            DriverDrop::StreamSendsFull => "stream_sends_full",
            DriverDrop::SendFailed => "send_failed",
            DriverDrop::StreamReadFailed => "stream_read_failed",
            DriverDrop::FlowSourcesFull => "flow_sources_full",
            DriverDrop::FlowReplayed => "flow_replayed",
            DriverDrop::AttachedChannelFull => "attached_channel_full",
        }
    }
}

/// Outcome of a QUIC handshake; the `result` label of `handshakes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Completed, and the peer's SVID names a node.
    Ok,
    /// The handshake failed (TLS or certificate verification error, timeout).
    Failed,
    /// Completed, but the peer's certificate does not name a node.
    Rejected,
}

impl Handshake {
    pub const ALL: [Handshake; 3] = [Handshake::Ok, Handshake::Failed, Handshake::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Failed => "failed",
            Handshake::Rejected => "rejected",
        }
    }
}

/// Why this node closed an open link because it stopped trusting the peer's identity;
/// the `reason` label of `identity_link_closes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdentityClose {
    /// The peer's SVID passed its notAfter.
    PeerSvidExpired,
    /// A CA revocation of the peer arrived.
    Revoked,
    /// A reloaded authorization policy no longer allows the peer as a neighbour.
    PolicyDenied,
}

impl IdentityClose {
    pub const ALL: [IdentityClose; 3] = [
        IdentityClose::PeerSvidExpired,
        IdentityClose::Revoked,
        IdentityClose::PolicyDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityClose::PeerSvidExpired => "peer_svid_expired",
            IdentityClose::Revoked => "revoked",
            IdentityClose::PolicyDenied => "policy_denied",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    drops: [AtomicU64; DriverDrop::ALL.len()],
    handshakes: [AtomicU64; Handshake::ALL.len()],
    identity_closes: [AtomicU64; IdentityClose::ALL.len()],
    pub flow_probes_sent: AtomicU64,
    /// Writes of a state file (revocations) that failed; each is retried.
    pub state_write_failures: AtomicU64,
    /// Records (revocations) accepted but not yet written to disk.
    pub state_writes_pending: AtomicU64,
    /// Configuration reloads (SIGHUP, API): applied, and refused (the old one stayed).
    pub config_reloads_ok: AtomicU64,
    pub config_reloads_rejected: AtomicU64,
    /// Dials refused because of identity, counted and logged rate-limited.
    pub dial_refusals: crate::dial_log::DialRefusals,
    /// Resolutions of static peers' host names by result (`peer_names`).
    pub name_resolutions: Arc<crate::peer_names::Resolutions>,
    /// Packets on the probe path, sent, received and refused (`probe_path`).
    pub probe_path: crate::probe_path::ProbePathCounters,
    /// Successful handshakes by key-exchange group (few distinct groups exist).
    kx_groups: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn drop(&self, reason: DriverDrop) {
        let index = DriverDrop::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.drops[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DriverDrop) -> u64 {
        let index = DriverDrop::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.drops[index].load(Ordering::Relaxed)
    }

    pub fn handshake(&self, result: Handshake) {
        let index = Handshake::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.handshakes[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Count a successful handshake under its key-exchange group (`unknown` if none
    /// was recorded).
    pub fn kx_handshake(&self, group: Option<&str>) {
        let mut groups = self
            .kx_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *groups
            .entry(group.unwrap_or("unknown").to_owned())
            .or_default() += 1;
    }

    /// Successful handshakes by key-exchange group, sorted by group.
    pub fn kx_handshakes(&self) -> Vec<(String, u64)> {
        let groups = self
            .kx_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        groups.iter().map(|(g, n)| (g.clone(), *n)).collect()
    }

    pub fn identity_close(&self, reason: IdentityClose) {
        let index = IdentityClose::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.identity_closes[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn identity_closes(&self, reason: IdentityClose) -> u64 {
        let index = IdentityClose::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.identity_closes[index].load(Ordering::Relaxed)
    }

    pub fn handshakes(&self, result: Handshake) -> u64 {
        let index = Handshake::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.handshakes[index].load(Ordering::Relaxed)
    }
}

/// Everything the API and metrics read.
#[derive(Debug)]
pub(crate) struct Shared {
    pub name: NodeName,
    pub spiffe_id: String,
    pub standalone: bool,
    pub started: std::time::Instant,
    /// Updated when the SVID is renewed.
    pub svid_not_after: Mutex<SystemTime>,
    /// When the current SVID was issued (its notBefore plus the clock-skew allowance
    /// the CA backdates by); updated with `svid_not_after`.
    pub svid_issued: Mutex<SystemTime>,
    pub snapshot: RwLock<Snapshot>,
    pub messages: Mutex<Messages>,
    pub flows: Mutex<Flows>,
    /// Deliveries on attached channels (2 to 255), and their waiters.
    pub app: Mutex<AppChannels>,
    pub app_arrived: tokio::sync::Notify,
    pub counters: Counters,
    /// The authorization policy in force.
    pub policy: Arc<crate::policy::NodePolicy>,
}

impl Shared {
    pub fn snapshot(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot_mut(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn messages(&self) -> MutexGuard<'_, Messages> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn app(&self) -> MutexGuard<'_, AppChannels> {
        self.app.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep a delivery on an attached channel and wake the long polls waiting for one.
    pub fn record_app(&self, channel: u8, from: NodeName, payload: Vec<u8>, hops: u8) {
        let mut app = self.app();
        while !app.ring.is_empty()
            && (app.ring.len() >= APP_MESSAGES_MAX || app.bytes + payload.len() > APP_BYTES_MAX)
        {
            if let Some(old) = app.ring.pop_front() {
                app.bytes -= old.payload.len();
                app.dropped += 1;
                self.counters.drop(DriverDrop::AttachedChannelFull);
            }
        }
        app.last_seq += 1;
        let seq = app.last_seq;
        app.bytes += payload.len();
        app.ring.push_back(AppMessage {
            seq,
            channel,
            from,
            payload,
            hops,
        });
        drop(app);
        self.app_arrived.notify_waiters();
    }

    pub fn flows(&self) -> MutexGuard<'_, Flows> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a delivered application message (channel 0).
    pub fn record_message(&self, record: MessageRecord) {
        let mut messages = self.messages();
        if messages.ring.len() >= MESSAGES_MAX {
            messages.ring.pop_front();
        }
        messages.ring.push_back(record);
        messages.total += 1;
    }

    /// Record a probe-flow arrival from `source` at `at_us` (Unix µs). Arrivals stay
    /// ascending even if the wall clock steps back.
    pub fn record_arrival(&self, source: &NodeName, at_us: u64) {
        let mut flows = self.flows();
        if !flows.received.contains_key(source) && flows.received.len() >= FLOW_SOURCES_MAX {
            drop(flows);
            return self.counters.drop(DriverDrop::FlowSourcesFull);
        }
        let ring = flows.received.entry(source.clone()).or_default();
        if ring.len() >= ARRIVALS_PER_SOURCE_MAX {
            ring.pop_front();
        }
        let at_us = ring.back().map_or(at_us, |&last| last.max(at_us));
        ring.push_back(at_us);
    }
}

/// Completes once the stop signal turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Microseconds since the Unix epoch, by the wall clock.
pub(crate) fn unix_micros(time: SystemTime) -> u64 {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let snapshot = Snapshot {
            neighbours: vec![],
            routes: vec![],
            lsdb_entries: 0,
            sequence: 0,
            stats: Stats::default(),
        };
        Shared {
            name: NodeName::new("a").unwrap(),
            spiffe_id: "spiffe://t/node/a".into(),
            standalone: false,
            started: std::time::Instant::now(),
            svid_not_after: Mutex::new(SystemTime::now()),
            svid_issued: Mutex::new(SystemTime::now()),
            snapshot: RwLock::new(snapshot),
            messages: Mutex::default(),
            flows: Mutex::default(),
            app: Mutex::default(),
            app_arrived: tokio::sync::Notify::new(),
            counters: Counters::default(),
            policy: Arc::new(
                crate::policy::NodePolicy::load(
                    None,
                    &"t".parse().unwrap(),
                    x0tta6bl4_identity::NameBindings::new(&"spiffe://t/node/a".parse().unwrap()),
                )
                .unwrap(),
            ),
        }
    }

    #[test]
    fn rings_are_bounded_and_arrivals_ascend() {
        let shared = shared();
        let b = NodeName::new("b").unwrap();
        for t in 0..(ARRIVALS_PER_SOURCE_MAX as u64 + 10) {
            shared.record_arrival(&b, t);
        }
        shared.record_arrival(&b, 5); // the clock stepped back
        let flows = shared.flows();
        let ring = &flows.received[&b];
        assert_eq!(ring.len(), ARRIVALS_PER_SOURCE_MAX);
        assert!(ring.iter().zip(ring.iter().skip(1)).all(|(x, y)| x <= y));
        drop(flows);
        for i in 0..FLOW_SOURCES_MAX + 3 {
            shared.record_arrival(&NodeName::new(&format!("s{i}")).unwrap(), 1);
        }
        assert_eq!(shared.flows().received.len(), FLOW_SOURCES_MAX);
        assert_eq!(shared.counters.dropped(DriverDrop::FlowSourcesFull), 4);
        for id in 0..MESSAGES_MAX as u64 + 1 {
            let from = b.clone();
            shared.record_message(MessageRecord {
                from,
                id,
                payload: String::new(),
                hops: 1,
                received_at_us: 0,
            });
        }
        assert_eq!(shared.messages().ring.len(), MESSAGES_MAX);
        assert_eq!(shared.messages().ring.front().map(|m| m.id), Some(1));
    }
}
