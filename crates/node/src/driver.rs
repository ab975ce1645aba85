//! The driver: one task owns the sans-IO [`Node`] and feeds it.
//!
//! Like quinn's `ConnectionDriver`, it makes no protocol decision. Every turn takes one
//! input (a frame, a link event, a timer, an API command, a probe-flow tick), hands it
//! to the node and then follows the call order documented on [`Node`]: drain
//! `poll_transmit`, re-arm the one timer from `poll_timeout`, drain `poll_event`. Frames
//! are taken in batches of at most [`IO_LOOP_BOUND`] per turn so timers and commands
//! are not starved. Readers of the state (HTTP API, metrics) see a snapshot refreshed
//! at most every [`SNAPSHOT_INTERVAL`], on a turn the driver takes anyway (a probe, a
//! frame); only a change that no such turn follows within [`SNAPSHOT_STALE_MAX`] gets a
//! wakeup of its own.
//!
//! Zero trust holds for open links too: each link remembers when its peer's SVID stops
//! being valid, and the driver closes it at that instant (see [`Driver::close_expired`]);
//! the handshake verifiers then refuse the peer's reconnects until it has a fresh SVID.
//! A node that renews its SVID sends the new certificate on its open links (an SVID
//! update, verified like a handshake's), so renewal keeps every link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use quinn::{Connection, Endpoint};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::Instrument;
use x0tta6bl4_proto::{
    Delivery, Destination, Event, Instant, Message, NeighbourView, Node, NodeName, RevokeOutcome,
    SendError, Transmit,
};

use crate::outage::{Arrival, OutageTracker};
use crate::probe_path::{self, ProbePaths};
use crate::revocation_store::{self, RevocationStore};
use crate::state::{
    stopped, unix_micros, DriverDrop, IdentityClose, MessageRecord, PeerView, RouteView, Shared,
};
use crate::transport::{self, close, Input, LinkContext, NewLink};

/// Inputs handled per turn before timers and commands get their chance.
pub(crate) const IO_LOOP_BOUND: usize = 160;
/// A protocol timer handled this late is logged (probes run every 50 ms by default),
/// at most once per [`TIMER_LATE_LOG_INTERVAL`].
const TIMER_LATE_WARN: Duration = Duration::from_millis(100);
const TIMER_LATE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// A timer this late first lets the transport deliver what arrived meanwhile.
const TIMER_LATE_DRAIN: Duration = Duration::from_millis(5);
/// Turns given to the transport's tasks before a late timer (socket, connection, link
/// reader: each hands the frame on to the next).
const TRANSPORT_TURNS: usize = 3;
/// Shortest interval between two snapshot refreshes.
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(10);
/// Longest a change waits for the next refresh. Refreshes ride on the turns the driver
/// takes anyway (an idle node's probes and answers come every few tens of ms); a wakeup
/// only for the snapshot was a sixth of an idle node's wakeups.
pub(crate) const SNAPSHOT_STALE_MAX: Duration = Duration::from_millis(100);
/// A link heard within this is alive (see [`Driver::keep_old_link`]).
const LINK_ALIVE: Duration = Duration::from_secs(1);
/// Streams being written at once (frames too large for a datagram).
const STREAM_SENDS_MAX: usize = 256;
/// Rounds of event handling after one input (handling an event may feed the node).
const EVENT_ROUNDS_MAX: usize = 64;
/// Application channel of messages (`/api/v1/send`, `/api/v1/messages`).
pub(crate) const MESSAGE_CHANNEL: u8 = 0;
/// Application channel of data-plane probe flows.
pub(crate) const FLOW_CHANNEL: u8 = 1;
/// Channels from this one up are attached channels: the node keeps their deliveries for
/// the local process that reads them (`/api/v1/channels/{channel}/...`; channel 2 is
/// federated learning, `x0tta6bl4 fl agent`).
pub(crate) const FIRST_ATTACHED_CHANNEL: u8 = 2;
/// Probe-flow targets accepted at once.
pub(crate) const FLOW_TARGETS_MAX: usize = 1024;

/// What the HTTP API asks of the driver; each carries its reply channel.
pub(crate) enum Command {
    Send {
        to: NodeName,
        channel: u8,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<SendReceipt, SendError>>,
    },
    StartFlows {
        targets: Vec<NodeName>,
        interval_ms: u64,
        reply: oneshot::Sender<usize>,
    },
    StopFlows {
        reply: oneshot::Sender<usize>,
    },
    Topology {
        reply: oneshot::Sender<Topology>,
    },
    /// A CA revocation (`x0tta6bl4_identity::Revocation::to_bytes`) to verify, act on
    /// and flood.
    Revoke {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<String, RevokeError>>,
    },
    /// New `[protocol]` settings (a configuration reload); refused with the reason.
    Reconfigure {
        config: Box<x0tta6bl4_proto::Config>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Why `POST /api/v1/revocations` did not succeed.
#[derive(Debug)]
pub(crate) enum RevokeError {
    /// Not a genuine revocation, or no room for it: nothing changed.
    Refused(String),
    /// Applied and flooded, but not yet on disk (retried until it is).
    NotPersisted(String),
}

/// An accepted message.
pub(crate) struct SendReceipt {
    pub id: u64,
    pub next_hop: NodeName,
}

/// Two-way links of the link-state database (`GET /api/v1/topology`).
#[derive(Debug, Serialize)]
pub(crate) struct Topology {
    pub nodes: Vec<NodeName>,
    pub links: Vec<TopologyLink>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TopologyLink {
    pub source: NodeName,
    pub target: NodeName,
    pub cost: u32,
}

struct Link {
    id: u64,
    conn: Connection,
    dialed_by_me: bool,
    last_heard: std::time::Instant,
    kx_group: Option<String>,
    /// When the peer's SVID stops being valid: the link is closed then.
    peer_svid_expiry: SystemTime,
}

struct Flows {
    targets: Vec<NodeName>,
    interval: Duration,
    next_at: tokio::time::Instant,
    seq: u64,
}

/// What the driver is built from.
pub(crate) struct DriverParts {
    pub node: Node,
    pub clock: std::time::Instant,
    pub endpoint: Endpoint,
    pub context: LinkContext,
    pub beacon: Option<(Arc<UdpSocket>, SocketAddr)>,
    pub route_seconds: Histogram,
    pub outage_seconds: Histogram,
    pub timer_lateness: Histogram,
    /// Fault injection on frames sent, when started with `--chaos`.
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
    /// The accepted revocations' file.
    pub revocations: RevocationStore,
    /// Link telemetry, sampled from here (it never feeds back into the core).
    pub telemetry: crate::telemetry::Telemetry,
    /// The probe socket and keys (`[transport] probe_path = "udp"`), else `None`.
    pub probe_paths: Option<ProbePaths>,
    /// The link-failure predictor (`[predictor]`), when one is loaded.
    pub predictor: Option<crate::predictor::Predictor>,
}

pub(crate) struct Driver {
    node: Node,
    /// The epoch of proto time.
    clock: std::time::Instant,
    endpoint: Endpoint,
    context: LinkContext,
    shared: Arc<Shared>,
    beacon: Option<(Arc<UdpSocket>, SocketAddr)>,
    route_seconds: Histogram,
    outage_seconds: Histogram,
    timer_lateness: Histogram,
    chaos: Option<Arc<crate::chaos::Chaos>>,
    revocations: RevocationStore,
    telemetry: crate::telemetry::Telemetry,
    probe_paths: Option<ProbePaths>,
    predictor: Option<crate::predictor::Predictor>,
    revocation_retry_at: Option<tokio::time::Instant>,
    outages: OutageTracker,
    links: HashMap<NodeName, Link>,
    spiffe_ids: HashMap<NodeName, String>,
    /// The policy generation the open links were checked against.
    policy_generation: u64,
    /// The expiry of our SVID as last sent to the neighbours (a renewal changes it).
    announced_not_after: SystemTime,
    timer_at: tokio::time::Instant,
    flows: Option<Flows>,
    stream_permits: Arc<Semaphore>,
    snapshot_at: tokio::time::Instant,
    snapshot_pending: bool,
    routes_dirty: bool,
    /// Route audit mismatches already logged (see `Stats::route_audit_mismatches`).
    route_mismatches_logged: u64,
    /// What this node advertises as its addresses (see [`Advertise`]).
    advertise: Advertise,
    /// The neighbour whose frame from the probe path is being handled: a probe answer
    /// to it goes back on the path (an answer goes the way its probe came).
    answer_on_path: Option<NodeName>,
}

/// What a frame is to the probe path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathFrame {
    /// Not a probe or an answer: always over QUIC.
    Other,
    /// A probe: on the path when the link's path is proven.
    Probe,
    /// A probe answer: on the path when its probe came over it.
    Answer,
}

/// Where this node says it can be reached (the proto core floods it, see
/// `Node::set_addresses`).
pub(crate) enum Advertise {
    /// `advertise` in the configuration, or the `listen` address when it names an IP.
    Fixed(Vec<SocketAddr>),
    /// `listen` is a wildcard: each link's local IP (the route's source address towards
    /// the peer) with the listen port: the first
    /// [`x0tta6bl4_proto::wire::ADDRESSES_PER_RECORD_MAX`] links' addresses, then no more.
    Learnt { port: u16, seen: Vec<SocketAddr> },
}

impl Advertise {
    /// From the configured `advertise` list and the bound QUIC address.
    pub(crate) fn new(configured: &[SocketAddr], bound: SocketAddr) -> Advertise {
        if !configured.is_empty() {
            Advertise::Fixed(configured.to_vec())
        } else if bound.ip().is_unspecified() {
            Advertise::Learnt {
                port: bound.port(),
                seen: Vec::new(),
            }
        } else {
            Advertise::Fixed(vec![bound])
        }
    }

    /// A link to `remote` came up: returns the addresses to advertise if they changed.
    fn link_to(&mut self, remote: SocketAddr) -> Option<Vec<SocketAddr>> {
        if !matches!(self, Advertise::Learnt { .. }) {
            return None;
        }
        self.local_ip(local_ip_towards(remote)?)
    }

    /// A link came up on local address `ip`: returns the addresses to advertise if they
    /// changed.
    fn local_ip(&mut self, ip: std::net::IpAddr) -> Option<Vec<SocketAddr>> {
        let Advertise::Learnt { port, seen } = self else {
            return None;
        };
        let addr = SocketAddr::new(ip, *port);
        // Once the record is full it stays as it is: a node with more local addresses than
        // a record holds (a gateway with a subnet per link) would otherwise re-sign and
        // flood a new record at every link that comes up, each evicting the oldest (a
        // 70-neighbour gateway in the lab originated 164 records in its first 20 s and
        // drowned in them).
        if seen.contains(&addr) || seen.len() >= x0tta6bl4_proto::wire::ADDRESSES_PER_RECORD_MAX {
            return None;
        }
        seen.push(addr);
        Some(seen.clone())
    }
}

/// The source address the kernel picks to reach `remote` (a connected UDP socket sends
/// nothing): a wildcard-bound node's address as its peers see it.
fn local_ip_towards(remote: SocketAddr) -> Option<std::net::IpAddr> {
    let remote = match remote.ip() {
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), remote.port()),
            None => remote,
        },
        std::net::IpAddr::V4(_) => remote,
    };
    let any: SocketAddr = if remote.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(remote).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Until `socket` (the probe socket, if any) has packets waiting.
async fn readable(socket: Option<&UdpSocket>) {
    match socket {
        Some(socket) => {
            if socket.readable().await.is_err() {
                std::future::pending::<()>().await; // a closed socket: never again
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    pub fn new(parts: DriverParts, advertise: Advertise) -> Driver {
        let shared = parts.context.shared.clone();
        let announced_not_after = parts.context.tls.current().not_after();
        Driver {
            node: parts.node,
            clock: parts.clock,
            endpoint: parts.endpoint,
            context: parts.context,
            shared,
            beacon: parts.beacon,
            route_seconds: parts.route_seconds,
            outage_seconds: parts.outage_seconds,
            timer_lateness: parts.timer_lateness,
            chaos: parts.chaos,
            revocations: parts.revocations,
            telemetry: parts.telemetry,
            probe_paths: parts.probe_paths,
            predictor: parts.predictor,
            revocation_retry_at: None,
            outages: OutageTracker::default(),
            links: HashMap::new(),
            spiffe_ids: HashMap::new(),
            policy_generation: 0,
            announced_not_after,
            timer_at: tokio::time::Instant::now(),
            flows: None,
            stream_permits: Arc::new(Semaphore::new(STREAM_SENDS_MAX)),
            snapshot_at: tokio::time::Instant::now(),
            snapshot_pending: true,
            routes_dirty: true,
            route_mismatches_logged: 0,
            advertise,
            answer_on_path: None,
        }
    }

    /// The node's clock: microseconds since the driver's epoch.
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// Static peers, beacons and the revocations kept from earlier runs, before the loop
    /// starts. Each kept revocation is verified again by the protocol core.
    pub fn configure(
        &mut self,
        peers: &[SocketAddr],
        beacon_port: Option<u16>,
        kept_revocations: &[Vec<u8>],
    ) {
        let now = self.now();
        for bytes in kept_revocations {
            match self.node.revoke(now, bytes) {
                Ok(RevokeOutcome::New(node) | RevokeOutcome::Known(node)) => {
                    // Already on disk: the `Revoked` event must not write it again.
                    self.shared.policy.revoke(&node);
                }
                Ok(RevokeOutcome::Full(node)) => tracing::warn!(%node,
                    "kept revocation not applied: protocol.revocations_max reached"),
                Err(error) => tracing::warn!(file = %self.revocations.path().display(), %error,
                    "kept revocation ignored"),
            }
        }
        for addr in peers {
            self.node.add_peer(now, *addr);
        }
        if let Advertise::Fixed(addresses) = &self.advertise {
            tracing::info!(?addresses, "advertising addresses to the mesh");
            self.node.set_addresses(now, addresses);
        }
        if let Some(port) = beacon_port {
            self.node.enable_beacons(now, port);
        }
        self.after_input();
    }

    /// Run until `stop` turns true.
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut commands: mpsc::Receiver<Command>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.after_input();
        self.refresh_snapshot();
        let mut commands_open = true;
        let mut late_timers = 0_u64;
        let mut late_logged: Option<tokio::time::Instant> = None;
        let probe_socket = self.probe_paths.as_ref().map(ProbePaths::socket);
        loop {
            let flow_at = self.flows.as_ref().map(|f| f.next_at);
            let expiry_at = self.next_peer_expiry();
            let predict_at = self.predictor.as_ref().map(|p| p.next_at());
            let snapshot_at = self
                .snapshot_pending
                .then_some(self.snapshot_at + SNAPSHOT_STALE_MAX);
            let changed = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = tokio::time::sleep_until(self.timer_at) => {
                    let late = tokio::time::Instant::now().saturating_duration_since(self.timer_at);
                    self.timer_lateness.observe(late.as_secs_f64());
                    if late >= TIMER_LATE_WARN {
                        late_timers += 1;
                        if late_logged.is_none_or(|at| at.elapsed() >= TIMER_LATE_LOG_INTERVAL) {
                            tracing::warn!(late_ms = late.as_millis(), late_timers,
                                "protocol timers handled late (count since the last such line): \
                                 the host is starved of CPU");
                            late_logged = Some(tokio::time::Instant::now());
                            late_timers = 0;
                        }
                    }
                    if late >= TIMER_LATE_DRAIN {
                        // The process did not run for a while: frames that arrived meanwhile
                        // wait in the socket and the connection tasks, which the runtime
                        // would run after this one. Judged first, a neighbour whose probes
                        // are queued here would look silent and be declared down.
                        for _ in 0..TRANSPORT_TURNS {
                            tokio::task::yield_now().await;
                        }
                        self.take_ready_inputs(&mut inputs, IO_LOOP_BOUND);
                        self.on_probe_packets();
                    }
                    self.on_timeout();
                    true
                }
                () = sleep_until(flow_at) => {
                    self.on_flow_tick();
                    true
                }
                () = sleep_until(expiry_at) => {
                    self.close_expired();
                    true
                }
                () = sleep_until(predict_at) => {
                    self.on_predict_tick();
                    true
                }
                () = sleep_until(self.revocation_retry_at) => {
                    self.revocations.retry(&self.shared);
                    self.schedule_revocation_retry();
                    false
                }
                command = commands.recv(), if commands_open => {
                    match command {
                        Some(command) => {
                            self.on_command(command);
                            // The caller may read right after: let it see its effect.
                            self.refresh_snapshot();
                        }
                        None => commands_open = false,
                    }
                    true
                }
                () = readable(probe_socket.as_deref()) => {
                    self.on_probe_packets();
                    true
                }
                input = inputs.recv() => {
                    let Some(input) = input else { break };
                    self.on_input(input);
                    self.take_ready_inputs(&mut inputs, IO_LOOP_BOUND - 1);
                    true
                }
                () = sleep_until(snapshot_at) => {
                    self.refresh_snapshot();
                    false
                }
            };
            self.snapshot_pending |= changed;
            if self.snapshot_pending
                && tokio::time::Instant::now() >= self.snapshot_at + SNAPSHOT_INTERVAL
            {
                self.refresh_snapshot();
            }
        }
        self.refresh_snapshot();
    }

    // ----- inputs -----

    /// Handle up to `most` inputs that are already waiting, without waiting for more.
    fn take_ready_inputs(&mut self, inputs: &mut mpsc::Receiver<Input>, most: usize) {
        for _ in 0..most {
            let Ok(input) = inputs.try_recv() else { break };
            self.on_input(input);
        }
    }

    /// The link-failure predictor's round (`predictor`): raised or restored costs are
    /// flooded at once.
    fn on_predict_tick(&mut self) {
        let now = self.now();
        if let Some(predictor) = self.predictor.as_mut() {
            predictor.tick(&mut self.node, now);
        }
        self.after_input();
    }

    fn on_timeout(&mut self) {
        let runs = self.node.stats().spf_runs;
        let started = std::time::Instant::now();
        self.node.handle_timeout(self.now());
        if self.node.stats().spf_runs > runs {
            self.route_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.after_input();
    }

    fn on_input(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::LinkUp(link) => self.on_link_up(link),
            Input::LinkDown { id, name, error } => {
                if self.links.get(&name).is_none_or(|link| link.id != id) {
                    return; // a replaced or already closed connection
                }
                self.remove_link(&name);
                // Simultaneous dials: the peer closed this link as the duplicate of one
                // it keeps, whose LinkUp may still be on its way here. Not a failure; if
                // no link follows, the probes declare the neighbour down.
                let duplicate = matches!(&error, quinn::ConnectionError::ApplicationClosed(c)
                    if c.error_code == quinn::VarInt::from_u32(close::DUPLICATE));
                if duplicate {
                    tracing::debug!(neighbour = %name, "link closed as a duplicate by the peer");
                } else {
                    tracing::info!(neighbour = %name, %error, "link closed");
                    self.node.handle_link_down(now, &name);
                }
            }
            Input::Frame { id, name, bytes } => {
                self.heard(&name, id);
                if bytes.starts_with(transport::SVID_UPDATE_MAGIC) {
                    if let Err(error) = self.on_svid_update(&bytes, &name, id) {
                        tracing::warn!(neighbour = %name, %error, "SVID update refused");
                    }
                } else if bytes.starts_with(probe_path::OFFER_MAGIC) {
                    self.on_probe_offer(&name, id, &bytes);
                } else {
                    self.node.handle_datagram(now, &name, &bytes);
                }
            }
            Input::DialFailed { addr, error } => {
                tracing::debug!(%addr, %error, "dial failed; retrying with backoff");
                self.node.handle_dial_failed(now, addr);
            }
            Input::Beacon { from, bytes } => self.node.handle_beacon(now, from, &bytes),
            Input::AddPeer(addr) => self.node.add_peer(now, addr),
            Input::RemovePeer(addr) => self.node.remove_peer(addr),
        }
        self.after_input();
    }

    /// A frame arrived over link `id` to `name`: the link is alive.
    fn heard(&mut self, name: &NodeName, id: u64) {
        if let Some(link) = self.links.get_mut(name).filter(|link| link.id == id) {
            link.last_heard = std::time::Instant::now();
        }
    }

    /// Forget the link to `name`, and its probe path.
    fn remove_link(&mut self, name: &NodeName) -> Option<Link> {
        if let Some(paths) = self.probe_paths.as_mut() {
            paths.link_down(name);
        }
        self.links.remove(name)
    }

    /// The peer of link `id` offers its probe path: send our probes there.
    fn on_probe_offer(&mut self, name: &NodeName, id: u64, bytes: &[u8]) {
        let Some(paths) = self.probe_paths.as_mut() else {
            return; // `probe_path = "quic"`: our probes stay on the link
        };
        let Some(link) = self.links.get(name).filter(|link| link.id == id) else {
            return; // a replaced or closed link
        };
        match paths.offer(name, id, &link.conn, bytes) {
            Ok(()) => tracing::debug!(neighbour = %name, "probe path offered: proving it"),
            Err(error) => tracing::warn!(neighbour = %name, %error,
                "probe path offer refused: probes stay on the QUIC link"),
        }
    }

    /// Authentic frames waiting on the probe socket, each handled as an input.
    fn on_probe_packets(&mut self) {
        let Some(paths) = self.probe_paths.as_mut() else {
            return;
        };
        let received = paths.receive(&self.shared.counters.probe_path);
        let socket = paths.socket();
        for (to, answer) in received.answers {
            probe_path::send(&socket, to, &answer, &self.shared);
        }
        for (name, id, bytes) in received.frames {
            self.heard(&name, id);
            self.node.handle_datagram(self.now(), &name, &bytes);
            self.answer_on_path = Some(name);
            self.after_input();
            self.answer_on_path = None;
        }
    }

    /// A revocation from the API: the core verifies it, applies and floods it; the reply
    /// waits until it is on disk (or says that it is not).
    fn on_revoke_command(&mut self, bytes: &[u8]) -> Result<String, RevokeError> {
        let outcome = self
            .node
            .revoke(self.now(), bytes)
            .map_err(|e| RevokeError::Refused(e.to_string()))?;
        // Handle the `Revoked` event now: it persists the revocation and closes the link.
        self.after_input();
        match outcome {
            RevokeOutcome::New(node) => match self.revocations.pending_error(&node) {
                None => Ok(format!("node {node} revoked")),
                Some(error) => Err(RevokeError::NotPersisted(format!(
                    "node {node} is revoked and the revocation flooded, but it could not be \
                     written to {} ({error}); it is retried every {} s and the node reports \
                     not ready until it is written",
                    self.revocations.path().display(),
                    revocation_store::RETRY_INTERVAL.as_secs()
                ))),
            },
            RevokeOutcome::Known(node) => Ok(format!("node {node} was already revoked")),
            RevokeOutcome::Full(node) => Err(RevokeError::Refused(format!(
                "node {node} not revoked: this node holds protocol.revocations_max revocations"
            ))),
        }
    }

    /// A new revocation the core accepted (from the API, a neighbour or anti-entropy):
    /// write it to disk, apply it to the policy and close the node's connection.
    /// Returns whether that fed the node an input.
    fn on_revoked(&mut self, node: NodeName, revocation: &[u8]) -> bool {
        if self.shared.policy.revoke(&node) {
            if let Err(error) = self.revocations.persist(&node, revocation, &self.shared) {
                tracing::error!(%node, file = %self.revocations.path().display(), %error,
                    "revocation applied but not written; retrying");
                self.schedule_revocation_retry();
            }
            if &node == self.node.name() {
                tracing::error!("this node's identity was revoked: its neighbours will cut it off");
            } else {
                tracing::warn!(%node, "revocation accepted: node cut off, reconnects refused");
            }
        }
        let Some(link) = self.remove_link(&node) else {
            return false;
        };
        link.conn.close(close::REVOKED.into(), b"revoked");
        self.shared.counters.identity_close(IdentityClose::Revoked);
        self.node.handle_link_down(self.now(), &node);
        true
    }

    fn schedule_revocation_retry(&mut self) {
        self.revocation_retry_at = self
            .revocations
            .has_pending()
            .then(|| tokio::time::Instant::now() + revocation_store::RETRY_INTERVAL);
    }

    /// A neighbour's renewed SVID over link `id`: verified as a handshake would verify
    /// it, and naming that neighbour, it moves the link's expiry.
    fn on_svid_update(&mut self, bytes: &[u8], from: &NodeName, id: u64) -> Result<(), String> {
        if bytes.len() > transport::SVID_UPDATE_LEN_MAX {
            return Err(format!(
                "{} bytes; at most {}",
                bytes.len(),
                transport::SVID_UPDATE_LEN_MAX
            ));
        }
        let leaf =
            rustls::pki_types::CertificateDer::from(&bytes[transport::SVID_UPDATE_MAGIC.len()..]);
        let (spiffe_id, expiry) = self
            .context
            .tls
            .current()
            .verify_peer_svid(&leaf)
            .map_err(|e| e.to_string())?;
        if spiffe_id.node_name().as_ref() != Some(from) {
            return Err(format!("it names {spiffe_id}, not the neighbour"));
        }
        if let Some(link) = self.links.get_mut(from).filter(|link| link.id == id) {
            link.peer_svid_expiry = link.peer_svid_expiry.max(expiry);
            tracing::debug!(neighbour = %from, "neighbour renewed its SVID: link kept");
        }
        Ok(())
    }

    /// After our SVID was renewed, send the new certificate on every open link.
    fn announce_renewal(&mut self) {
        let identity = self.context.tls.current();
        if identity.not_after() == self.announced_not_after {
            return;
        }
        self.announced_not_after = identity.not_after();
        let mut update = transport::SVID_UPDATE_MAGIC.to_vec();
        update.extend_from_slice(identity.certificate());
        let update = Bytes::from(update);
        for link in self.links.values() {
            transport::send_stream(
                &link.conn,
                update.clone(),
                &self.stream_permits,
                &self.shared,
            );
        }
        tracing::info!(
            neighbours = self.links.len(),
            "renewed SVID sent on every link"
        );
    }

    /// When the first open link's peer SVID stops being valid, on the tokio clock.
    fn next_peer_expiry(&self) -> Option<tokio::time::Instant> {
        let first = self.links.values().map(|l| l.peer_svid_expiry).min()?;
        let left = first.duration_since(SystemTime::now()).unwrap_or_default();
        Some(tokio::time::Instant::now() + left)
    }

    /// Close every link whose peer's SVID is no longer valid: the protocol takes the
    /// neighbour down and floods it, and the verifiers refuse its reconnects.
    fn close_expired(&mut self) {
        let now = SystemTime::now();
        let expired: Vec<NodeName> = self
            .links
            .iter()
            .filter(|(_, link)| link.peer_svid_expiry <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            let Some(link) = self.remove_link(&name) else {
                continue;
            };
            tracing::warn!(neighbour = %name, "link closed: the peer's SVID expired");
            link.conn
                .close(close::PEER_SVID_EXPIRED.into(), b"your SVID expired");
            self.shared
                .counters
                .identity_close(IdentityClose::PeerSvidExpired);
            self.node.handle_link_down(self.now(), &name);
        }
        self.after_input();
    }

    /// Keep one connection per neighbour (see [`Driver::keep_old_link`]).
    fn on_link_up(&mut self, new: NewLink) {
        let now = self.now();
        if let Some(old) = self.links.get(&new.name) {
            if self.keep_old_link(old, &new) {
                tracing::debug!(neighbour = %new.name, "duplicate link closed; keeping the older one");
                new.conn.close(close::DUPLICATE.into(), b"duplicate link");
                if new.dialed.is_some() {
                    // Tell proto which node the dialed address belongs to.
                    self.node.handle_link_up(now, new.name, new.dialed);
                }
                return;
            }
            // Only the acceptor of the new link closes the old one: it learns of the new
            // link after the dialer did, so the dialer never sees the old link close
            // before it knows the new one (which would take the neighbour down). The
            // dialer just forgets the old link; its close arrives later and is ignored.
            if new.dialed.is_none() {
                old.conn
                    .close(close::DUPLICATE.into(), b"replaced by a newer link");
            }
            self.remove_link(&new.name);
        }
        if !self.node.handle_link_up(now, new.name.clone(), new.dialed) {
            tracing::warn!(neighbour = %new.name, "link refused: neighbour table full (raise protocol.neighbours_max), own name, \
                or another node than the one whose address learnt from the mesh was dialed");
            new.conn.close(close::REFUSED.into(), b"refused");
            return;
        }
        tracing::debug!(neighbour = %new.name, remote = %new.conn.remote_address(), dialed = new.dialed.is_some(), "link up");
        if let Some(addresses) = self.advertise.link_to(new.conn.remote_address()) {
            tracing::info!(?addresses, "advertising addresses to the mesh");
            self.node.set_addresses(now, &addresses);
        }
        self.spiffe_ids.insert(new.name.clone(), new.spiffe_id);
        if let Some(paths) = self.probe_paths.as_mut() {
            match paths.link_up(&new.name, new.id, &new.conn) {
                Ok(offer) => {
                    transport::send_stream(&new.conn, offer, &self.stream_permits, &self.shared)
                }
                Err(error) => tracing::warn!(neighbour = %new.name, %error,
                    "no probe path offered: the neighbour probes over the QUIC link"),
            }
        }
        let link = Link {
            id: new.id,
            conn: new.conn,
            dialed_by_me: new.dialed.is_some(),
            last_heard: std::time::Instant::now(),
            kx_group: new.kx_group,
            peer_svid_expiry: new.svid_expiry,
        };
        self.links.insert(new.name, link);
    }

    /// A new connection replaces the old one, unless the old one is alive (heard within
    /// [`LINK_ALIVE`]) and was dialed by the node with the smaller name while the new one
    /// was dialed by the larger. Both ends apply the same rule, so simultaneous dials keep
    /// the same connection, and a restarted peer's new connection replaces one that went
    /// silent.
    fn keep_old_link(&self, old: &Link, new: &NewLink) -> bool {
        let alive = old.last_heard.elapsed() < LINK_ALIVE && old.conn.close_reason().is_none();
        let me = self.node.name();
        let smaller = me.min(&new.name);
        let dialer = |by_me: bool| if by_me { me } else { &new.name };
        alive && dialer(old.dialed_by_me) == smaller && dialer(new.dialed.is_some()) != smaller
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                to,
                channel,
                payload,
                reply,
            } => {
                let next_hop = match self.node.routes().get(&to) {
                    Some(route) => route.next_hop.clone(),
                    None => to.clone(), // itself, or an error below
                };
                let result = self.node.send(self.now(), &to, channel, payload);
                let _ = reply.send(result.map(|id| SendReceipt { id, next_hop }));
                self.after_input();
            }
            Command::StartFlows {
                targets,
                interval_ms,
                reply,
            } => {
                let count = targets.len();
                self.set_flows(targets, interval_ms);
                let _ = reply.send(count);
            }
            Command::Revoke { bytes, reply } => {
                let _ = reply.send(self.on_revoke_command(&bytes));
            }
            Command::StopFlows { reply } => {
                // The counts stay until the next start, so a collector that stops
                // every node's flows before reading them compares like with like.
                self.flows = None;
                self.shared.flows().interval_ms = 0;
                let _ = reply.send(0);
            }
            Command::Topology { reply } => {
                let _ = reply.send(self.topology());
            }
            Command::Reconfigure { config, reply } => {
                let mut config = *config;
                // Drawn at start, not in the file.
                config.rng_seed = self.node.config().rng_seed;
                config.initial_sequence = self.node.config().initial_sequence;
                let now = self.now();
                let result = self
                    .node
                    .set_config(config, now)
                    .map_err(|e| format!("protocol.{} = {}: {}", e.key, e.value, e.fix));
                let _ = reply.send(result);
                self.after_input();
            }
        }
    }

    // ----- outputs -----

    /// The call order of [`Node`]: transmits, timer, events; again while handling the
    /// events fed the node.
    fn after_input(&mut self) {
        for _ in 0..EVENT_ROUNDS_MAX {
            while let Some(transmit) = self.node.poll_transmit() {
                self.transmit(transmit);
            }
            let deadline = self.node.poll_timeout();
            self.timer_at = match deadline {
                Some(deadline) => tokio::time::Instant::from_std(
                    self.clock + Duration::from_micros(deadline.as_micros()),
                ),
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            let mut fed = false;
            while let Some(event) = self.node.poll_event() {
                if self.on_event(event) {
                    fed = true;
                    break;
                }
            }
            if !fed {
                return;
            }
        }
    }

    /// Send a frame to `name`, through the fault-injection layer when it is on. A probe
    /// or its answer may go over the probe path (see [`Driver::seal_for_path`]).
    fn send_on(&mut self, name: &NodeName, bytes: Bytes, kind: PathFrame) {
        let Some(link) = self.links.get(name) else {
            return self.shared.counters.drop(DriverDrop::NoLink);
        };
        let (conn, id) = (link.conn.clone(), link.id);
        let verdict = self
            .chaos
            .as_ref()
            .map_or(crate::chaos::Verdict::Send, |c| c.decide(name.as_str()));
        if let Some(chaos) = &self.chaos {
            for extra in chaos.byzantine_extras(name.as_str(), &bytes) {
                transport::send(&conn, extra, &self.stream_permits, &self.shared);
            }
        }
        // Sealed whatever the verdict: a dropped packet uses its number, as a lost one.
        let sealed = self.seal_for_path(name, id, &bytes, kind);
        let shared = self.shared.clone();
        let send = move |permits: &Arc<Semaphore>| match sealed {
            Some((socket, (to, packet))) => probe_path::send(&socket, to, &packet, &shared),
            None => transport::send(&conn, bytes, permits, &shared),
        };
        match verdict {
            crate::chaos::Verdict::Send => send(&self.stream_permits),
            crate::chaos::Verdict::Drop => {}
            crate::chaos::Verdict::Delay(delay) => {
                let permits = self.stream_permits.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    send(&permits);
                });
            }
        }
    }

    /// `bytes` to `name` over link `id` sealed for the probe path, when it goes there: a
    /// probe when the link's path is proven (else a hello may go with it, see
    /// [`probe_path::PathState`]), an answer when its probe came over the path.
    fn seal_for_path(
        &mut self,
        name: &NodeName,
        id: u64,
        bytes: &[u8],
        kind: PathFrame,
    ) -> Option<(Arc<UdpSocket>, probe_path::Sealed)> {
        let now = self.now();
        let paths = self.probe_paths.as_mut()?;
        let sealed = match kind {
            PathFrame::Other => return None,
            PathFrame::Answer if self.answer_on_path.as_ref() != Some(name) => return None,
            PathFrame::Answer => paths.seal(name, id, bytes)?,
            PathFrame::Probe => {
                let route = paths.probe(name, id, bytes, now);
                if let Some((to, hello)) = route.hello {
                    probe_path::send(&paths.socket(), to, &hello, &self.shared);
                }
                if let Some((reason, first)) = route.gave_up {
                    self.shared.counters.probe_path.fall_back(reason);
                    let (hellos, reason) = (probe_path::HELLO_TRIES, reason.as_str());
                    if first {
                        tracing::warn!(neighbour = %name, reason, hellos,
                            "probe path unanswered: probes go over the QUIC link, the path is \
                             tried again later (is the peer's probe_port reachable?)");
                    } else {
                        tracing::debug!(neighbour = %name, reason, "probe path unanswered again");
                    }
                }
                route.probe?
            }
        };
        Some((paths.socket(), sealed))
    }

    fn transmit(&mut self, transmit: Transmit) {
        let kind = match transmit.message {
            Message::Probe { .. } => PathFrame::Probe,
            Message::ProbeAck { .. } => PathFrame::Answer,
            _ => PathFrame::Other,
        };
        let bytes = Bytes::from(transmit.message.to_bytes());
        match transmit.destination {
            Destination::Neighbour(name) => self.send_on(&name, bytes, kind),
            Destination::Beacon => {
                let Some((socket, to)) = &self.beacon else {
                    return;
                };
                if let Err(error) = socket.try_send_to(&bytes, *to) {
                    tracing::debug!(%to, %error, "beacon send failed");
                    self.shared.counters.drop(DriverDrop::SendFailed);
                }
            }
        }
    }

    /// Act on one event; returns true if that fed the node an input.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Dial { addr } => {
                tracing::debug!(%addr, "dialing");
                let timeout = Duration::from_millis(self.node.config().dial_timeout_ms);
                let dial =
                    transport::dial(self.endpoint.clone(), addr, timeout, self.context.clone());
                tokio::spawn(dial.in_current_span());
            }
            Event::NeighbourUp { name } => tracing::info!(neighbour = %name, "neighbour up"),
            Event::NeighbourDown { name, reason } => {
                tracing::warn!(neighbour = %name, %reason, "neighbour down");
                // Close its connection so the dialer redials and a restarted or resumed
                // peer gets a fresh link.
                if let Some(link) = self.remove_link(&name) {
                    link.conn
                        .close(close::NEIGHBOUR_DOWN.into(), b"neighbour down");
                    self.node.handle_link_down(self.now(), &name);
                    return true;
                }
            }
            Event::RoutesChanged { changed, reachable } => {
                tracing::debug!(changed, reachable, "routes changed");
                for (destination, route) in self.node.routes().iter() {
                    tracing::trace!(%destination, next_hop = %route.next_hop, cost = route.cost, hops = route.hops, "route");
                }
                self.routes_dirty = true;
                let mismatches = self.node.stats().route_audit_mismatches;
                if mismatches > self.route_mismatches_logged {
                    self.route_mismatches_logged = mismatches;
                    tracing::error!(
                        mismatches,
                        "route audit: the incremental route computation \
                        differed from a full one (a bug; the full table is in force)"
                    );
                }
            }
            Event::Delivered(delivery) => self.on_delivery(delivery),
            Event::Revoked { node, revocation } => return self.on_revoked(node, &revocation),
            Event::Healing(decision) => tracing::info!(
                kind = decision.kind.as_str(),
                neighbour = %decision.neighbour,
                reason = %decision.reason,
                "healing decision"
            ),
        }
        false
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        let at_us = unix_micros(SystemTime::now());
        match delivery.channel {
            MESSAGE_CHANNEL if !self.shared.policy.send(&delivery.source, self.node.name()) => {}
            MESSAGE_CHANNEL => self.shared.record_message(MessageRecord {
                from: delivery.source,
                id: delivery.id,
                payload: String::from_utf8_lossy(&delivery.payload).into_owned(),
                hops: delivery.hops,
                received_at_us: at_us,
            }),
            FLOW_CHANNEL => {
                let arrival = self
                    .outages
                    .arrival(&delivery.source, &delivery.payload, at_us);
                let Arrival::Counted(outage) = arrival else {
                    return self.shared.counters.drop(DriverDrop::FlowReplayed);
                };
                self.shared.record_arrival(&delivery.source, at_us);
                if let Some(outage_us) = outage {
                    tracing::debug!(source = %delivery.source, outage_us, "probe flow recovered");
                    self.outage_seconds.observe(outage_us as f64 / 1e6);
                }
            }
            FIRST_ATTACHED_CHANNEL..
                if self.shared.policy.send(&delivery.source, self.node.name()) =>
            {
                self.shared.record_app(
                    delivery.channel,
                    delivery.source,
                    delivery.payload,
                    delivery.hops,
                )
            }
            FIRST_ATTACHED_CHANNEL.. => {}
        }
    }

    // ----- probe flows -----

    pub(crate) fn set_flows(&mut self, targets: Vec<NodeName>, interval_ms: u64) {
        let running = !targets.is_empty();
        self.flows = running.then(|| Flows {
            targets,
            interval: Duration::from_millis(interval_ms),
            next_at: tokio::time::Instant::now(),
            seq: 0,
        });
        let mut flows = self.shared.flows();
        flows.interval_ms = if running { interval_ms } else { 0 };
        flows.sent = 0;
        flows.unroutable = 0;
    }

    /// Send one probe to every flow target: payload = flow sequence number and send
    /// time (Unix µs), both u64 big-endian.
    fn on_flow_tick(&mut self) {
        let Some(flows) = self.flows.as_mut() else {
            return;
        };
        let now = tokio::time::Instant::now();
        flows.next_at += flows.interval;
        if flows.next_at <= now {
            flows.next_at = now + flows.interval; // skip ticks missed while busy
        }
        let seq = flows.seq;
        flows.seq += 1;
        let targets = std::mem::take(&mut flows.targets);
        let sent_us = unix_micros(SystemTime::now());
        let (mut sent, mut unroutable) = (0u64, 0u64);
        for target in &targets {
            let mut payload = Vec::with_capacity(16);
            payload.extend_from_slice(&seq.to_be_bytes());
            payload.extend_from_slice(&sent_us.to_be_bytes());
            match self.node.send(self.now(), target, FLOW_CHANNEL, payload) {
                Ok(_) => sent += 1,
                Err(_) => unroutable += 1,
            }
            self.after_input();
        }
        if let Some(flows) = self.flows.as_mut() {
            flows.targets = targets;
        }
        let mut state = self.shared.flows();
        state.sent += sent;
        state.unroutable += unroutable;
        drop(state);
        self.shared
            .counters
            .flow_probes_sent
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    }

    // ----- views -----

    /// After a policy reload, close the links whose peer may no longer be a neighbour.
    fn recheck_links(&mut self) {
        let generation = self.shared.policy.generation();
        if generation == self.policy_generation {
            return;
        }
        self.policy_generation = generation;
        let denied: Vec<NodeName> = self
            .links
            .keys()
            .filter(|name| {
                let id = self.spiffe_ids.get(*name);
                let id = id.and_then(|id| x0tta6bl4_identity::SpiffeId::parse(id).ok());
                !id.is_some_and(|id| self.shared.policy.neighbour(&id))
            })
            .cloned()
            .collect();
        for name in denied {
            if let Some(link) = self.remove_link(&name) {
                tracing::info!(neighbour = %name, "link closed: the reloaded policy denies it");
                link.conn.close(
                    close::UNAUTHORISED.into(),
                    b"refused by authorization policy",
                );
                self.shared
                    .counters
                    .identity_close(IdentityClose::PolicyDenied);
                self.node.handle_link_down(self.now(), &name);
            }
        }
    }

    fn refresh_snapshot(&mut self) {
        self.recheck_links();
        if let Some(paths) = &self.probe_paths {
            let links = &self.shared.counters.probe_path.links;
            links.store(paths.links() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        self.sample_telemetry();
        self.announce_renewal();
        self.snapshot_at = tokio::time::Instant::now();
        self.snapshot_pending = false;
        let neighbours: Vec<PeerView> = self
            .node
            .neighbours()
            .into_iter()
            .map(|n| self.peer_view(n))
            .collect();
        // `neighbours()` is sorted by name.
        self.spiffe_ids
            .retain(|name, _| neighbours.binary_search_by(|n| n.name.cmp(name)).is_ok());
        let routes = self.routes_dirty.then(|| {
            let routes = self.node.routes().iter();
            routes
                .map(|(destination, route)| RouteView {
                    destination: destination.clone(),
                    next_hop: route.next_hop.clone(),
                    cost: route.cost,
                    hops: route.hops,
                })
                .collect()
        });
        self.routes_dirty = false;
        let mut snapshot = self.shared.snapshot_mut();
        snapshot.neighbours = neighbours;
        if let Some(routes) = routes {
            snapshot.routes = routes;
        }
        snapshot.lsdb_entries = self.node.lsdb().len();
        snapshot.sequence = self.node.sequence();
        snapshot.stats = self.node.stats().clone();
    }

    /// Once a second: each neighbour's probe view and connection to the telemetry.
    fn sample_telemetry(&mut self) {
        let now = std::time::Instant::now();
        if !self.telemetry.due(now) {
            return;
        }
        let neighbours = self.node.neighbours();
        let links: Vec<crate::telemetry::LinkInput<'_>> = neighbours
            .iter()
            .map(|n| {
                let connection = self.links.get(&n.name).map(|link| &link.conn);
                crate::telemetry::LinkInput::connected(&n.name, Some(n), connection)
            })
            .collect();
        self.telemetry.sample(now, &links);
    }

    fn peer_view(&self, n: NeighbourView) -> PeerView {
        PeerView {
            spiffe_id: self.spiffe_ids.get(&n.name).cloned(),
            addr: self
                .links
                .get(&n.name)
                .map(|link| link.conn.remote_address()),
            rtt_ms: n.srtt.map(|rtt| rtt.as_micros() as f64 / 1000.0),
            loss: n.loss,
            state: n.state.as_str(),
            cost: n.cost,
            routed: n.advertised,
            kx_group: self.links.get(&n.name).and_then(|l| l.kx_group.clone()),
            advertised: self.node.learnt_addresses(&n.name).to_vec(),
            name: n.name,
        }
    }

    /// Links both ends advertise, once, `source < target`, at the larger cost.
    fn topology(&self) -> Topology {
        let lsdb = self.node.lsdb();
        let mut nodes: Vec<NodeName> = lsdb.iter().map(|(origin, _)| origin.clone()).collect();
        nodes.sort();
        let mut links = Vec::new();
        for (origin, entry) in lsdb.iter() {
            for link in entry
                .lsa
                .lsa
                .links
                .iter()
                .filter(|link| *origin < link.neighbour)
            {
                let back = lsdb
                    .get(&link.neighbour)
                    .and_then(|e| e.lsa.lsa.links.iter().find(|l| l.neighbour == *origin));
                if let Some(back) = back {
                    let cost = link.cost.max(back.cost);
                    links.push(TopologyLink {
                        source: origin.clone(),
                        target: link.neighbour.clone(),
                        cost,
                    });
                }
            }
        }
        links.sort_by(|x, y| (&x.source, &x.target).cmp(&(&y.source, &y.target)));
        Topology { nodes, links }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_advertises_each_links_local_address_with_its_port() {
        let configured: SocketAddr = "10.0.0.5:7000".parse().unwrap();
        let mut fixed = Advertise::new(&[configured], "0.0.0.0:7000".parse().unwrap());
        assert!(matches!(&fixed, Advertise::Fixed(a) if a == &[configured]));
        assert_eq!(fixed.link_to("127.0.0.1:9".parse().unwrap()), None);
        let bound: SocketAddr = "127.0.0.3:7001".parse().unwrap();
        assert!(matches!(Advertise::new(&[], bound), Advertise::Fixed(a) if a == [bound]));

        let mut learnt = Advertise::new(&[], "0.0.0.0:7002".parse().unwrap());
        let first = learnt.link_to("127.0.0.1:9".parse().unwrap());
        assert_eq!(first, Some(vec!["127.0.0.1:7002".parse().unwrap()]));
        // The same local address again: nothing new to advertise (IPv4-mapped too).
        assert_eq!(learnt.link_to("127.0.0.1:10".parse().unwrap()), None);
        assert_eq!(
            learnt.link_to("[::ffff:127.0.0.1]:10".parse().unwrap()),
            None
        );
        // Other destinations reached from the same local address add nothing.
        for i in 0..20u8 {
            assert_eq!(learnt.link_to(SocketAddr::from(([127, 0, 1, i], 9))), None);
        }
        let Advertise::Learnt { seen, .. } = &learnt else {
            panic!("stays learnt")
        };
        assert_eq!(seen.len(), 1);
        assert!(seen.iter().all(|a| a.port() == 7002));
    }

    #[test]
    fn a_full_address_record_stays_as_it_is_when_more_links_come_up() {
        let max = x0tta6bl4_proto::wire::ADDRESSES_PER_RECORD_MAX;
        let mut learnt = Advertise::new(&[], "0.0.0.0:7000".parse().unwrap());
        let ip = |i: u8| std::net::IpAddr::from([10, 0, i, 1]);
        for i in 0..max as u8 {
            let advertised = learnt.local_ip(ip(i)).expect("a new address is advertised");
            assert_eq!(advertised.len(), usize::from(i) + 1);
        }
        // A gateway's 70 links, each on its own subnet: no new record, the first stay.
        for i in max as u8..70 {
            assert_eq!(learnt.local_ip(ip(i)), None, "link {i}");
        }
        let Advertise::Learnt { seen, .. } = &learnt else {
            panic!("stays learnt")
        };
        let first: Vec<SocketAddr> = (0..max as u8)
            .map(|i| SocketAddr::new(ip(i), 7000))
            .collect();
        assert_eq!(seen, &first);
    }
}
