//! The discrete-event engine: N protocol instances, one simulated clock, link models.
//!
//! The engine is a driver of `x0tta6bl4_proto::Node` exactly like the daemon: it feeds
//! inputs, drains `poll_transmit`, re-arms one timer per node from `poll_timeout`, and
//! acts on `poll_event` (dials, connection closes on neighbour-down, deliveries). It
//! models what the daemon's transport does around the core — QUIC handshakes taking one
//! round trip, connection close frames, stateless resets after a restart, dial timeouts
//! — so that timings in the twin are the timings of the real node. The chaos lab's
//! faults have models here too: one-way blocks (a handshake needs both directions),
//! rate limits shaped like `tc tbf`, slow nodes (CPU or memory pressure) and Byzantine
//! nodes whose forged and replayed bytes go through `Node::handle_datagram`.
//!
//! Determinism: every random choice comes from one seeded [`Rng`], events at the same
//! instant run in insertion order, and no hash map is iterated where order matters. The
//! same seed gives the same history, byte for byte.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_proto::{
    ByzantineSender, Config, DecisionKind, Destination, Event, FastMap, Instant, LinkStateSnapshot,
    Message, Node, NodeName, Rng, SimAuthenticator, SlotNames,
};

use crate::topology::{LinkParams, Topology};

/// Frames buffered for a paused node before further ones are dropped.
const PAUSED_INBOX_MAX: usize = 10_000;
/// The UDP port every simulated node "listens" on.
const SIM_PORT: u16 = 7000;
/// Bytes a frame of the mesh protocol occupies on the wire beyond its encoding, as the
/// daemon sends it (one QUIC DATAGRAM frame in a 1-RTT packet, `transport::send`) over
/// the lab's veth pairs, where `tc` counts the Ethernet header:
/// Ethernet 14 + IPv4 20 + UDP 8 = 42; QUIC short header 1 (flags) + 8 (destination
/// connection ID: quinn's default `RandomConnectionIdGenerator` issues 8-byte IDs) + 2
/// (packet number: quinn encodes the smallest length covering twice the unacknowledged
/// range, 1 or 2 bytes on a busy link; 2 taken) = 11; AEAD tag 16 (AES-128-GCM and
/// ChaCha20-Poly1305 alike); DATAGRAM frame type 1 (0x31, with length) + length varint 2
/// (frames of 64..16383 bytes) = 3. Total 42 + 11 + 16 + 3 = 72. Acknowledgement frames
/// and several datagrams sharing one packet are not modelled.
pub const WIRE_OVERHEAD_BYTES: u64 = 72;
/// Token-bucket depth of a bandwidth-limited link (`tc tbf ... burst 32kbit`, as the
/// lab's bandwidth fault): after an idle spell this many bytes leave at once.
pub const SHAPER_BURST_BYTES: u64 = 32_000 / 8;
/// Longest queue a bandwidth-limited link holds (`tc tbf ... latency 100ms`): a frame
/// that finds more than this ahead of it is dropped and counted in `frames_lost`.
pub const SHAPER_QUEUE_MAX: Duration = Duration::from_millis(100);

/// The callback id with which [`Sim::run_until`] returns when a message arrived on the
/// collected channel ([`Sim::collect_channel`]).
pub const DELIVERY_CALLBACK: u64 = u64::MAX;

/// A message delivered on the collected channel: (destination, source, payload).
pub type Collected = (u32, u32, Vec<u8>);

/// Settings of the engine itself (the protocol's are in [`Config`]).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Protocol configuration of every node (seed and sequence are set per node).
    pub protocol: Config,
    /// Seed of the whole run.
    pub seed: u64,
}

impl SimConfig {
    /// Defaults matching the node daemon.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            protocol: Config::default(),
            seed,
        }
    }
}

/// Whether a simulated node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Processing frames and timers.
    Running,
    /// Stopped (SIGSTOP): frames queue up, timers wait.
    Paused,
    /// Gone (SIGKILL / power off): its state is lost.
    Crashed,
}

#[derive(Clone)]
struct SimNode {
    node: Node,
    status: Status,
    timer_at: Option<Instant>,
    inbox: VecDeque<(u32, Payload)>,
    incarnation: u32,
    /// A node under CPU or memory pressure handles every input this late, plus a uniform
    /// `0..processing_jitter` (see [`Sim::set_processing_delay`]).
    processing_delay: Duration,
    processing_jitter: Duration,
    /// When the slow node handles the last frame it held back: later frames wait at
    /// least until then, so frames are handled in arrival order (one input queue).
    processing_free_at: Instant,
    /// While `Some`, the node sends forged and replayed frames with every frame.
    byzantine: Option<ByzantineSender<Box<[u8]>>>,
    /// Timer firings handled (liveness: a spinning node fires without bound).
    timer_fires: u64,
}

/// What a frame carries across a link: a message (the twin skips encoding), or bytes
/// the receiver must decode as the daemon does (a Byzantine node's forgeries and
/// replays).
#[derive(Clone)]
enum Payload {
    Decoded(Message),
    Encoded(Box<[u8]>),
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Decoded(message) => message.encoded_len() as u64,
            Payload::Encoded(bytes) => bytes.len() as u64,
        }
    }
}

/// One simulated link (both directions share the parameters).
#[derive(Clone, Debug)]
pub struct SimLink {
    /// One end (the dialer).
    pub a: u32,
    /// The other end.
    pub b: u32,
    /// Latency, jitter, loss and bandwidth.
    pub params: LinkParams,
    /// Whether frames cross it at all.
    pub up: bool,
    /// Directional filters for asymmetric partitions: `[a→b blocked, b→a blocked]`.
    pub blocked: [bool; 2],
    busy_until: [Instant; 2],
    /// The open connection: (id, incarnation of a, incarnation of b).
    conn: Option<(u64, u32, u32)>,
}

#[derive(Clone)]
enum Pending {
    Frame {
        to: u32,
        from: u32,
        link: u32,
        conn: u64,
        payload: Payload,
        /// Already held back by a slow receiver once.
        late: bool,
    },
    Timer {
        node: u32,
    },
    /// A dial's handshake flight (the first or a retransmission) leaves the dialer.
    HandshakeFlight {
        dialer: u32,
        addr: SocketAddr,
        dial: u64,
        incarnation: u32,
    },
    /// A flight got through: the handshake completes now unless the link or an end
    /// went away meanwhile.
    Handshake {
        dialer: u32,
        target: u32,
        link: u32,
        addr: SocketAddr,
        dial: u64,
    },
    DialFailed {
        dialer: u32,
        addr: SocketAddr,
        dial: u64,
        incarnation: u32,
    },
    Close {
        to: u32,
        from: u32,
        link: u32,
        conn: u64,
    },
    Callback(u64),
}

/// The event queue: a radix heap of small (time, sequence, slot) keys over a slab of
/// payloads, so queue operations move 24 bytes instead of whole frames. Ties in time
/// are broken by insertion sequence, which keeps runs deterministic.
///
/// Simulated time never goes back, so nothing is pushed before the last time popped
/// (`last`): an event is filed under the highest bit in which its time differs from
/// `last`, and only the lowest non-empty bucket is ever re-filed, when the events at
/// `last` (`due`, in sequence order) run out. That takes O(log time span) amortised per
/// event instead of a binary heap's O(log queue length) cache misses; the order is the
/// heap's exactly.
#[derive(Clone, Default)]
struct EventQueue {
    last: u64,
    /// Events at `last`, in sequence order: (sequence, slot).
    due: VecDeque<(u64, u32)>,
    /// `buckets[b]`: events whose time first differs from `last` in bit `b - 1`.
    buckets: Vec<Vec<(u64, u64, u32)>>,
    /// The earliest time queued, once asked for while `due` is empty.
    earliest: Option<u64>,
    len: usize,
    slab: Vec<Option<Pending>>,
    free: Vec<u32>,
    seq: u64,
}

impl EventQueue {
    fn bucket(&self, at: u64) -> usize {
        (u64::BITS - (at ^ self.last).leading_zeros()) as usize
    }

    fn push(&mut self, at: Instant, what: Pending) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(what);
                slot
            }
            None => {
                self.slab.push(Some(what));
                (self.slab.len() - 1) as u32
            }
        };
        self.seq += 1;
        let at = at.as_micros();
        assert!(at >= self.last, "an event before the time last popped");
        if at == self.last {
            self.due.push_back((self.seq, slot));
        } else {
            if self.buckets.is_empty() {
                self.buckets.resize_with(u64::BITS as usize + 1, Vec::new);
            }
            let bucket = self.bucket(at);
            self.buckets[bucket].push((at, self.seq, slot));
        }
        self.earliest = self.earliest.map(|t| t.min(at));
        self.len += 1;
    }

    fn peek_time(&mut self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if !self.due.is_empty() {
            return Some(Instant::from_micros(self.last));
        }
        let earliest = match self.earliest {
            Some(t) => t,
            None => {
                let lowest = self.buckets.iter().find(|b| !b.is_empty())?;
                lowest.iter().map(|&(at, _, _)| at).min()?
            }
        };
        self.earliest = Some(earliest);
        Some(Instant::from_micros(earliest))
    }

    /// Move the earliest events into `due` (only when it is empty).
    fn refill(&mut self) -> Option<()> {
        let lowest = self.buckets.iter().position(|b| !b.is_empty())?;
        let mut events = std::mem::take(&mut self.buckets[lowest]);
        self.last = events.iter().map(|&(at, _, _)| at).min()?;
        let mut due = Vec::new();
        for (at, seq, slot) in events.drain(..) {
            if at == self.last {
                due.push((seq, slot));
            } else {
                let bucket = self.bucket(at);
                self.buckets[bucket].push((at, seq, slot));
            }
        }
        if self.buckets[lowest].is_empty() {
            self.buckets[lowest] = events; // keep the allocation
        }
        due.sort_unstable();
        self.due.extend(due);
        Some(())
    }

    fn pop(&mut self) -> Option<(Instant, Pending)> {
        if self.due.is_empty() {
            self.refill()?;
        }
        let (_, slot) = self.due.pop_front()?;
        self.len -= 1;
        self.earliest = None;
        let what = self.slab[slot as usize]
            .take()
            .expect("queued slot holds its event");
        self.free.push(slot);
        Some((Instant::from_micros(self.last), what))
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Queue events processed.
    pub events: u64,
    /// Control frames (everything but application data) put on links.
    pub control_frames: u64,
    /// Bytes of those frames.
    pub control_bytes: u64,
    /// Data frames put on links.
    pub data_frames: u64,
    /// Frames lost on links (loss, link down, partition).
    pub frames_lost: u64,
    /// Neighbour-down events reported by nodes.
    pub neighbour_down: u64,
    /// Route-change events reported by nodes.
    pub route_changes: u64,
}

/// Application-level observations the scenario layer wants from the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A probe-flow message arrived: (source, destination, payload).
    FlowArrival {
        /// Sending node.
        source: u32,
        /// Receiving node.
        destination: u32,
        /// When it was sent (µs of simulated time), when its payload says (the scenario
        /// layer's probes carry it as 8 little-endian bytes).
        sent_us: Option<u64>,
    },
    /// A link's cost was raised so traffic moves off it: by the healing loop (a
    /// degraded link) or by a link-failure predictor ([`Sim::set_link_risk`]).
    Rerouted {
        /// The node that raised it.
        node: u32,
        /// The neighbour at the other end.
        neighbour: u32,
        /// Raised by the predictor (else by the healing loop).
        predicted: bool,
    },
    /// A node declared a neighbour down.
    NeighbourDown {
        /// The node.
        node: u32,
        /// The neighbour.
        neighbour: u32,
        /// Whether the link could carry frames both ways at that instant (a down event
        /// on a usable link to a running neighbour is a false alarm).
        link_usable: bool,
    },
}

/// The digital twin's engine. Cloning it forks the whole simulated world.
#[derive(Clone)]
pub struct Sim {
    now: Instant,
    nodes: Vec<SimNode>,
    names: Vec<NodeName>,
    /// One slot table for every node's link-state database (`Node::share_slot_names`).
    slot_names: Arc<SlotNames>,
    index: FastMap<NodeName, u32>,
    /// All links; `adjacency[i]` lists the links of node i.
    links: Vec<SimLink>,
    adjacency: Vec<Vec<u32>>,
    pair: FastMap<(u32, u32), u32>,
    queue: EventQueue,
    next_conn: u64,
    /// Dials under way: neither completed nor failed yet (see [`Sim::dial`]).
    dials_pending: std::collections::BTreeSet<u64>,
    next_dial: u64,
    rng: Rng,
    config: SimConfig,
    stats: SimStats,
    observed: Vec<(Instant, Observed)>,
    callbacks_due: Vec<u64>,
    /// Application channel whose deliveries are kept for the driver, and those kept:
    /// (destination, source, payload) (see [`Sim::collect_channel`]).
    collected: (Option<u8>, Vec<Collected>),
    /// While `Some`, link-state updates are held here instead of crossing links (see
    /// [`Sim::hold_link_state`]): (sender, receiver, frame), in the order sent.
    held_updates: Option<Vec<(u32, NodeName, Message)>>,
    /// The first liveness violation seen (see [`Sim::liveness_violation`]).
    liveness_violation: Option<String>,
}

impl Sim {
    /// The protocol configuration every node runs (before per-node seeds).
    pub fn protocol(&self) -> &x0tta6bl4_proto::Config {
        &self.config.protocol
    }

    /// Build the engine over `topology`; nodes start at once and dial their links.
    pub fn new(topology: &Topology, config: SimConfig) -> Sim {
        let n = topology.names.len();
        let names: Vec<NodeName> = topology.names.clone();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let mut sim = Sim {
            now: Instant::from_micros(1_000_000),
            nodes: Vec::with_capacity(n),
            slot_names: SlotNames::shared(names.clone()),
            names,
            index,
            links: Vec::with_capacity(topology.links.len()),
            adjacency: vec![Vec::new(); n],
            liveness_violation: None,
            pair: FastMap::default(),
            queue: EventQueue::default(),
            next_conn: 1,
            dials_pending: Default::default(),
            next_dial: 0,
            rng: Rng::seed(config.seed),
            stats: SimStats::default(),
            observed: Vec::new(),
            callbacks_due: Vec::new(),
            collected: (None, Vec::new()),
            held_updates: None,
            config,
        };
        for link in &topology.links {
            let id = sim.links.len() as u32;
            sim.links.push(SimLink {
                a: link.a,
                b: link.b,
                params: link.params.clone(),
                up: true,
                blocked: [false; 2],
                busy_until: [Instant::ZERO; 2],
                conn: None,
            });
            sim.adjacency[link.a as usize].push(id);
            sim.adjacency[link.b as usize].push(id);
            sim.pair
                .insert((link.a.min(link.b), link.a.max(link.b)), id);
        }
        for i in 0..n as u32 {
            let node = sim.make_node(i);
            sim.nodes.push(SimNode {
                node,
                status: Status::Running,
                timer_at: None,
                inbox: VecDeque::new(),
                incarnation: 0,
                processing_delay: Duration::ZERO,
                processing_jitter: Duration::ZERO,
                processing_free_at: Instant::ZERO,
                byzantine: None,
                timer_fires: 0,
            });
        }
        for i in 0..n as u32 {
            sim.add_dialed_peers(i);
            sim.drain(i);
        }
        sim
    }

    fn make_node(&mut self, i: u32) -> Node {
        let name = self.names[i as usize].clone();
        let protocol = Config {
            rng_seed: self.rng.next_u64(),
            // As the daemon: wall-clock milliseconds, so a restart outranks old state.
            initial_sequence: self.now.as_micros() / 1_000 + 1,
            ..self.config.protocol.clone()
        };
        let auth = SimAuthenticator::new(self.config.seed, name.clone());
        let mut node = Node::new(name, protocol, auth, self.now)
            .expect("protocol config validated by the caller");
        node.share_slot_names(&self.slot_names);
        node
    }

    fn add_dialed_peers(&mut self, i: u32) {
        let now = self.now;
        for &l in &self.adjacency[i as usize] {
            let link = &self.links[l as usize];
            if link.a == i {
                self.nodes[i as usize].node.add_peer(now, addr_of(link.b));
            }
        }
    }

    /// Re-seed the engine's own random choices (loss, jitter), e.g. per iteration.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::seed(seed);
    }

    // ----- getters -----

    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The protocol instance of node `i`.
    pub fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize].node
    }

    /// The name of node `i`.
    pub fn name(&self, i: u32) -> &NodeName {
        &self.names[i as usize]
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &NodeName) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// Status of node `i`.
    pub fn status(&self, i: u32) -> Status {
        self.nodes[i as usize].status
    }

    /// All links.
    pub fn links(&self) -> &[SimLink] {
        &self.links
    }

    /// Links of node `i`.
    pub fn links_of(&self, i: u32) -> &[u32] {
        &self.adjacency[i as usize]
    }

    /// The link between `a` and `b`.
    pub fn link_between(&self, a: u32, b: u32) -> Option<u32> {
        self.pair.get(&(a.min(b), a.max(b))).copied()
    }

    /// Entries in the event queue (including stale timer entries).
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Observations since the last call.
    pub fn take_observed(&mut self) -> Vec<(Instant, Observed)> {
        std::mem::take(&mut self.observed)
    }

    /// Timer firings node `i` handled so far (all incarnations).
    pub fn timer_fires(&self, i: u32) -> u64 {
        self.nodes[i as usize].timer_fires
    }

    /// The first liveness violation seen (a node whose timer was due again right after
    /// it ran), if any.
    pub fn liveness_violation(&self) -> Option<&str> {
        self.liveness_violation.as_deref()
    }

    /// Node `at` receives the simulation authority's revocation of `target` (as an
    /// operator's `ca revoke --api`): it verifies, applies and floods it.
    /// Returns false (and does nothing) when node `at` is not running.
    pub fn revoke(&mut self, at: u32, target: u32) -> bool {
        if self.nodes[at as usize].status != Status::Running {
            return false;
        }
        let authority = SimAuthenticator::new(self.config.seed, self.names[at as usize].clone());
        let revocation = authority.revocation(&self.names[target as usize]);
        let now = self.now;
        let outcome = self.nodes[at as usize].node.revoke(now, &revocation);
        debug_assert!(
            outcome.is_ok(),
            "the simulation authority signs genuine ones"
        );
        self.after_input(at);
        true
    }

    /// Whether link `l` counts as a path right now: [`Sim::passable`], and it carries
    /// traffic ([`crate::LinkParams::carries_traffic`]).
    pub fn usable(&self, l: u32) -> bool {
        self.passable(l) && self.links[l as usize].params.carries_traffic()
    }

    /// Whether frames can cross link `l` both ways right now (up, not blocked, both ends
    /// running), however lossy it is.
    pub fn passable(&self, l: u32) -> bool {
        let link = &self.links[l as usize];
        link.up
            && !link.blocked[0]
            && !link.blocked[1]
            && self.nodes[link.a as usize].status == Status::Running
            && self.nodes[link.b as usize].status == Status::Running
    }

    // ----- faults -----

    /// Crash node `i`: its state is lost and nobody is told.
    pub fn crash(&mut self, i: u32) {
        let sim_node = &mut self.nodes[i as usize];
        sim_node.status = Status::Crashed;
        sim_node.inbox.clear();
        sim_node.timer_at = None;
    }

    /// Cut node `i` off the mesh as a revocation or an expired SVID does: every neighbour
    /// closes its connection to it at once (as the daemon does on either), then the node
    /// is gone for routing (its reconnects would be refused), like a crash.
    pub fn expel(&mut self, i: u32) {
        for &l in &self.links_of(i).to_vec() {
            let link = &self.links[l as usize];
            let j = if link.a == i { link.b } else { link.a };
            if self.nodes[j as usize].status == Status::Running {
                self.close_connection(j, i);
                self.after_input(j);
            }
        }
        self.crash(i);
    }

    /// Restart a crashed node as a fresh process.
    pub fn restart(&mut self, i: u32) {
        assert_eq!(
            self.nodes[i as usize].status,
            Status::Crashed,
            "restart needs a crashed node"
        );
        let node = self.make_node(i);
        let sim_node = &mut self.nodes[i as usize];
        sim_node.node = node;
        sim_node.status = Status::Running;
        sim_node.incarnation += 1;
        self.add_dialed_peers(i);
        self.after_input(i);
    }

    /// Pause node `i` (SIGSTOP).
    pub fn pause(&mut self, i: u32) {
        if self.nodes[i as usize].status == Status::Running {
            self.nodes[i as usize].status = Status::Paused;
        }
    }

    /// Resume a paused node (SIGCONT): it handles what queued up, then its timers.
    pub fn resume(&mut self, i: u32) {
        if self.nodes[i as usize].status != Status::Paused {
            return;
        }
        self.nodes[i as usize].status = Status::Running;
        let now = self.now;
        while let Some((from, payload)) = self.nodes[i as usize].inbox.pop_front() {
            self.hand_in(i, from, payload, now);
        }
        self.nodes[i as usize].node.handle_timeout(now);
        self.after_input(i);
    }

    /// Take link `l` down or up (frames stop crossing; nobody is told).
    pub fn set_link_up(&mut self, l: u32, up: bool) {
        self.links[l as usize].up = up;
    }

    /// Block one direction of link `l` (`a_to_b` picks which).
    pub fn set_blocked(&mut self, l: u32, a_to_b: bool, blocked: bool) {
        self.links[l as usize].blocked[usize::from(!a_to_b)] = blocked;
    }

    /// Change a link's loss probability, the same in both directions.
    pub fn set_link_loss(&mut self, l: u32, loss: f64) {
        let params = &mut self.links[l as usize].params;
        params.loss = loss.clamp(0.0, 1.0);
        params.loss_reverse = None;
    }

    /// Change a link's jitter (extra one-way delay, uniform in `0..jitter` per frame).
    pub fn set_link_jitter(&mut self, l: u32, jitter: Duration) {
        self.links[l as usize].params.jitter = jitter;
    }

    /// Node `i` puts `factor` on the cost of its link to `j`
    /// ([`x0tta6bl4_proto::Node::set_link_risk`], the hook a link-failure predictor
    /// drives); a raise from 1 is observed as [`Observed::Rerouted`]. Returns whether
    /// the node took the factor (a running node, a known neighbour, a valid factor).
    pub fn set_link_risk(&mut self, i: u32, j: u32, factor: f64) -> bool {
        if self.nodes[i as usize].status != Status::Running {
            return false;
        }
        let now = self.now;
        let name = self.names[j as usize].clone();
        let node = &mut self.nodes[i as usize].node;
        let before = node.link_features(&name).map_or(1.0, |f| f.risk_factor);
        let changed = node.set_link_risk(now, &name, factor);
        if changed && before == 1.0 && factor > 1.0 {
            self.observed.push((
                now,
                Observed::Rerouted {
                    node: i,
                    neighbour: j,
                    predicted: true,
                },
            ));
        }
        self.after_input(i);
        changed
    }

    /// Change a link's latency.
    pub fn set_link_latency(&mut self, l: u32, latency: Duration) {
        self.links[l as usize].params.latency = latency;
    }

    /// Limit link `l` to `bits_per_second` each way (0: unlimited), shaped like
    /// `tc tbf rate .. burst 32kbit latency 100ms`: see [`WIRE_OVERHEAD_BYTES`],
    /// [`SHAPER_BURST_BYTES`] and [`SHAPER_QUEUE_MAX`].
    pub fn set_link_bandwidth(&mut self, l: u32, bits_per_second: u64) {
        self.links[l as usize].params.bandwidth_bps = bits_per_second;
    }

    /// Make node `i` handle every frame and timer `delay` plus a uniform `0..jitter`
    /// late, as a host under CPU or memory pressure does; zero for both lifts it. Frames
    /// already held back are still handled late. QUIC handshakes and connection closes
    /// are not delayed (the model covers the protocol's inputs, not the transport's).
    pub fn set_processing_delay(&mut self, i: u32, delay: Duration, jitter: Duration) {
        let sim_node = &mut self.nodes[i as usize];
        sim_node.processing_delay = delay;
        sim_node.processing_jitter = jitter;
    }

    /// Make node `i` Byzantine (or honest again): with every frame it sends to a
    /// neighbour it also sends the extra frames of [`ByzantineSender`] (a forged copy,
    /// replays of its last frames), which the receiver decodes and verifies from bytes.
    pub fn set_byzantine(&mut self, i: u32, on: bool) {
        let sim_node = &mut self.nodes[i as usize];
        if on {
            sim_node.byzantine.get_or_insert_with(ByzantineSender::new);
        } else {
            sim_node.byzantine = None;
        }
    }

    /// Whether a QUIC handshake between `dialer` and `target` over link `l` can complete
    /// now: it needs both directions (a one-way block stops it) and both ends running.
    fn handshake_gets_through(&self, dialer: u32, target: u32, l: u32) -> bool {
        self.carries(l, dialer)
            && self.carries(l, target)
            && self.nodes[target as usize].status == Status::Running
            && self.nodes[dialer as usize].status == Status::Running
    }

    /// Whether link `l` carries frames from `from` to its other end (up, that direction
    /// not blocked).
    fn carries(&self, l: u32, from: u32) -> bool {
        let link = &self.links[l as usize];
        link.up && !link.blocked[usize::from(link.a != from)]
    }

    // ----- starting from a snapshot -----

    /// Hold every link-state update (flood, database sync, retransmission) at its sender
    /// instead of putting it on the link, until [`Sim::install_link_state_snapshot`].
    /// Probes, acknowledgements and data flow as usual.
    pub fn hold_link_state(&mut self) {
        self.held_updates.get_or_insert_with(Vec::new);
    }

    /// Whether every running node advertises each of its topology links (as many as
    /// `neighbours_max` allows): its own advertisement is the one a converged mesh holds.
    pub fn own_advertisements_complete(&self) -> bool {
        let neighbours_max = self.config.protocol.neighbours_max;
        (0..self.nodes.len() as u32).all(|i| {
            let sim_node = &self.nodes[i as usize];
            let node = &sim_node.node;
            let advertised = node
                .lsdb()
                .get(node.name())
                .map_or(0, |entry| entry.lsa.lsa.links.len());
            sim_node.status != Status::Running
                || advertised == self.adjacency[i as usize].len().min(neighbours_max)
        })
    }

    /// State transfer to every running node: the current own advertisement of every
    /// running node, as one [`LinkStateSnapshot`], goes through
    /// `Node::handle_link_state_snapshot` (the same verification and acceptance checks
    /// as a flooded advertisement; routes computed at once), on `threads` threads (the
    /// nodes are independent, so the result does not depend on it). Then the updates
    /// held since [`Sim::hold_link_state`] go out in the order they were sent: their
    /// receivers now hold them already and acknowledge them as duplicates.
    pub fn install_link_state_snapshot(&mut self, threads: usize) -> LinkStateSnapshot {
        let running = |n: &&SimNode| n.status == Status::Running;
        let own = self.nodes.iter().filter(running).filter_map(|n| {
            let entry = n.node.lsdb().get(n.node.name())?;
            Some(entry.lsa.clone())
        });
        let snapshot = LinkStateSnapshot::new(own);
        let now = self.now;
        let chunk = self.nodes.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            for part in self.nodes.chunks_mut(chunk) {
                let snapshot = &snapshot;
                scope.spawn(move || {
                    for sim_node in part.iter_mut().filter(|n| n.status == Status::Running) {
                        sim_node.node.handle_link_state_snapshot(now, snapshot);
                    }
                });
            }
        });
        for (from, to, message) in self.held_updates.take().unwrap_or_default() {
            self.put_on_link(from, &to, message);
        }
        for i in 0..self.nodes.len() as u32 {
            if self.nodes[i as usize].status == Status::Running {
                self.after_input(i);
            }
        }
        snapshot
    }

    // ----- the data plane -----

    /// Send an application message from `from` to `to` on `channel`.
    pub fn send(&mut self, from: u32, to: u32, channel: u8, payload: Vec<u8>) -> bool {
        if self.nodes[from as usize].status != Status::Running {
            return false;
        }
        let now = self.now;
        let to_name = self.names[to as usize].clone();
        let ok = self.nodes[from as usize]
            .node
            .send(now, &to_name, channel, payload)
            .is_ok();
        self.after_input(from);
        ok
    }

    /// Keep the messages delivered on `channel` for the driver ([`Sim::take_collected`]):
    /// each delivery ends [`Sim::run_until`] early with the callback [`DELIVERY_CALLBACK`],
    /// so a driver running an application over the mesh (the twin's federated learning)
    /// answers a message at the simulated instant it arrives.
    pub fn collect_channel(&mut self, channel: u8) {
        self.collected.0 = Some(channel);
    }

    /// The messages delivered on the collected channel since the last call, in delivery
    /// order: (destination, source, payload).
    pub fn take_collected(&mut self) -> Vec<Collected> {
        std::mem::take(&mut self.collected.1)
    }

    /// Ask to be woken at `at` (see [`Sim::run_until`]): returns the callback's id.
    pub fn schedule_callback(&mut self, at: Instant, id: u64) {
        self.push(at.max(self.now), Pending::Callback(id));
    }

    // ----- running -----

    /// Process events up to and including `until`, or until a callback fires; returns
    /// the callbacks that fired (empty when `until` was reached).
    pub fn run_until(&mut self, until: Instant) -> Vec<u64> {
        while let Some(at) = self.queue.peek_time() {
            if at > until {
                break;
            }
            let (at, what) = self.queue.pop().expect("peeked");
            debug_assert!(at >= self.now, "time went backwards");
            self.now = at;
            self.stats.events += 1;
            self.process(what);
            if !self.callbacks_due.is_empty() {
                return std::mem::take(&mut self.callbacks_due);
            }
        }
        self.now = self.now.max(until);
        Vec::new()
    }

    /// Run for `duration` of simulated time, ignoring callbacks.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end || self.queue.peek_time().is_some_and(|at| at <= end) {
            let fired = self.run_until(end);
            if fired.is_empty() {
                break;
            }
        }
    }

    fn push(&mut self, at: Instant, what: Pending) {
        self.queue.push(at, what);
    }

    fn process(&mut self, what: Pending) {
        match what {
            Pending::Frame {
                to,
                from,
                link,
                conn,
                payload,
                late,
            } => self.deliver_frame(to, from, link, conn, payload, late),
            Pending::Timer { node } => self.fire_timer(node),
            Pending::HandshakeFlight {
                dialer,
                addr,
                dial,
                incarnation,
            } => {
                let sim_node = &self.nodes[dialer as usize];
                // A crashed or restarted dialer's flights died with its process.
                if sim_node.status == Status::Running && sim_node.incarnation == incarnation {
                    self.handshake_flight(dialer, addr, dial);
                }
            }
            Pending::Handshake {
                dialer,
                target,
                link,
                addr,
                dial,
            } => {
                if !self.complete_handshake(dialer, target, link, addr) {
                    // Lost on the way back: report it now, as a failed dial.
                    self.dials_pending.insert(dial);
                }
            }
            Pending::DialFailed {
                dialer,
                addr,
                incarnation,
                dial,
            } => {
                let failed = self.dials_pending.remove(&dial);
                let sim_node = &mut self.nodes[dialer as usize];
                if failed
                    && sim_node.status == Status::Running
                    && sim_node.incarnation == incarnation
                {
                    sim_node.node.handle_dial_failed(self.now, addr);
                    self.after_input(dialer);
                }
            }
            Pending::Close {
                to,
                from,
                link,
                conn,
            } => {
                // Applies unless a newer connection replaced the closed one meanwhile.
                let current = self.links[link as usize].conn.is_none_or(|c| c.0 == conn);
                if current && self.nodes[to as usize].status == Status::Running {
                    self.links[link as usize].conn = None;
                    let from_name = self.names[from as usize].clone();
                    self.nodes[to as usize]
                        .node
                        .handle_link_down(self.now, &from_name);
                    self.after_input(to);
                }
            }
            Pending::Callback(id) => self.callbacks_due.push(id),
        }
    }

    fn fire_timer(&mut self, i: u32) {
        let now = self.now;
        let sim_node = &mut self.nodes[i as usize];
        if sim_node.status != Status::Running || sim_node.timer_at != Some(now) {
            return; // stale timer entry
        }
        sim_node.timer_at = None;
        sim_node.timer_fires += 1;
        sim_node.node.handle_timeout(now);
        // Liveness: after `handle_timeout(now)` nothing may be due at `now` any more; a
        // timer due again at once would spin the daemon's driver (the engine below only
        // survives it by moving the timer a microsecond on).
        if self.liveness_violation.is_none()
            && sim_node.node.poll_timeout().is_some_and(|at| at <= now)
        {
            self.liveness_violation = Some(format!(
                "{} at {:?}: a timer is due again right after handle_timeout (deadline {:?})",
                sim_node.node.name(),
                now,
                sim_node.node.poll_timeout()
            ));
        }
        self.after_input(i);
    }

    fn deliver_frame(
        &mut self,
        to: u32,
        from: u32,
        link: u32,
        conn: u64,
        payload: Payload,
        late: bool,
    ) {
        let l = &self.links[link as usize];
        let Some((open, inc_a, inc_b)) = l.conn else {
            return;
        };
        if open != conn {
            return; // the connection it was sent on is gone
        }
        let incarnation = if l.a == to { inc_a } else { inc_b };
        match self.nodes[to as usize].status {
            Status::Crashed => {}
            _ if self.nodes[to as usize].incarnation != incarnation => {
                // A restarted process answers a frame of the old connection with a
                // stateless reset: the sender learns at once that the connection is gone,
                // unless the way back is cut.
                if self.carries(link, to) {
                    let latency = self.links[link as usize].params.latency;
                    self.push(
                        self.now + latency,
                        Pending::Close {
                            to: from,
                            from: to,
                            link,
                            conn,
                        },
                    );
                }
            }
            Status::Paused => {
                let inbox = &mut self.nodes[to as usize].inbox;
                if inbox.len() < PAUSED_INBOX_MAX {
                    inbox.push_back((from, payload));
                }
            }
            Status::Running if !late && self.is_slow(to) => {
                // A slow node gets to the frame later, in arrival order.
                let lag = self.processing_lag(to);
                let sim_node = &mut self.nodes[to as usize];
                let at = (self.now + lag).max(sim_node.processing_free_at);
                sim_node.processing_free_at = at;
                self.push(
                    at,
                    Pending::Frame {
                        to,
                        from,
                        link,
                        conn,
                        payload,
                        late: true,
                    },
                );
            }
            Status::Running => {
                self.hand_in(to, from, payload, self.now);
                self.after_input(to);
            }
        }
    }

    /// Give node `to` a frame from `from`: a decoded message directly, bytes through
    /// `Node::handle_datagram` (decoding, then the same checks as the daemon's frames).
    fn hand_in(&mut self, to: u32, from: u32, payload: Payload, now: Instant) {
        let from_name = &self.names[from as usize];
        let node = &mut self.nodes[to as usize].node;
        match payload {
            Payload::Decoded(message) => node.handle_message(now, from_name, message),
            Payload::Encoded(bytes) => node.handle_datagram(now, from_name, &bytes),
        }
    }

    fn is_slow(&self, i: u32) -> bool {
        let sim_node = &self.nodes[i as usize];
        !sim_node.processing_delay.is_zero() || !sim_node.processing_jitter.is_zero()
    }

    /// How late a slow node handles its next input (zero for a node at full speed; the
    /// random draw only happens for slow nodes, so other runs keep their history).
    fn processing_lag(&mut self, i: u32) -> Duration {
        let sim_node = &self.nodes[i as usize];
        let (delay, jitter) = (sim_node.processing_delay, sim_node.processing_jitter);
        if jitter.is_zero() {
            delay
        } else {
            delay + jitter.mul_f64(self.rng.unit())
        }
    }

    /// Complete a handshake that got through; false if the link or an end went away
    /// during its round trip.
    fn complete_handshake(
        &mut self,
        dialer: u32,
        target: u32,
        link: u32,
        addr: SocketAddr,
    ) -> bool {
        if !self.handshake_gets_through(dialer, target, link) {
            return false;
        }
        self.next_conn += 1;
        let l = &mut self.links[link as usize];
        let (inc_a, inc_b) = (
            self.nodes[l.a as usize].incarnation,
            self.nodes[l.b as usize].incarnation,
        );
        l.conn = Some((self.next_conn, inc_a, inc_b));
        let now = self.now;
        let (dialer_name, target_name) = (
            self.names[dialer as usize].clone(),
            self.names[target as usize].clone(),
        );
        if !self.nodes[dialer as usize]
            .node
            .handle_link_up(now, target_name.clone(), Some(addr))
        {
            // The dialer does not accept the target (revoked): as the daemon's verifier
            // refusing the server's certificate, a failed dial.
            self.links[link as usize].conn = None;
            self.after_input(dialer);
            return false;
        }
        if !self.nodes[target as usize]
            .node
            .handle_link_up(now, dialer_name, None)
        {
            // The target refuses the dialer (revoked): the dialer saw its handshake
            // complete, then the connection close.
            self.links[link as usize].conn = None;
            self.nodes[dialer as usize]
                .node
                .handle_link_down(now, &target_name);
        }
        self.after_input(dialer);
        self.after_input(target);
        true
    }

    /// After any input to node `i`: drain transmits, re-arm the timer, act on events.
    fn after_input(&mut self, i: u32) {
        self.drain(i);
    }

    fn drain(&mut self, i: u32) {
        // Acting on events may feed the node more input (a connection close), so repeat
        // until it is quiet; each round strictly consumes queued output.
        loop {
            while let Some(transmit) = self.nodes[i as usize].node.poll_transmit() {
                if let Destination::Neighbour(to) = transmit.destination {
                    self.put_on_link(i, &to, transmit.message);
                }
            }
            if let Some(at) = self.nodes[i as usize].node.poll_timeout() {
                // A slow node's timer fires late too.
                let lag = self.processing_lag(i);
                let at = at.max(self.now + Duration::from_micros(1)) + lag;
                if self.nodes[i as usize].timer_at != Some(at) {
                    self.nodes[i as usize].timer_at = Some(at);
                    self.push(at, Pending::Timer { node: i });
                }
            }
            let events: Vec<Event> =
                std::iter::from_fn(|| self.nodes[i as usize].node.poll_event()).collect();
            if events.is_empty() {
                break;
            }
            for event in events {
                self.on_event(i, event);
            }
        }
    }

    fn put_on_link(&mut self, from: u32, to_name: &NodeName, message: Message) {
        if let (Some(held), Message::LsUpdate { .. }) = (&mut self.held_updates, &message) {
            held.push((from, to_name.clone(), message));
            return;
        }
        let Some(&to) = self.index.get(to_name) else {
            return;
        };
        let Some(l) = self.link_between(from, to) else {
            return;
        };
        let Some((conn, ..)) = self.links[l as usize].conn else {
            return;
        };
        if let Some(sender) = &mut self.nodes[from as usize].byzantine {
            // As the daemon's chaos layer: the extras go out just before the frame.
            let mut bytes = Vec::with_capacity(message.encoded_len());
            message.encode(&mut bytes);
            let rng = &mut self.rng;
            let extras = sender.extras(&bytes.into_boxed_slice(), || rng.unit());
            for extra in extras {
                self.transmit(from, to, l, conn, Payload::Encoded(extra));
            }
        }
        self.transmit(from, to, l, conn, Payload::Decoded(message));
    }

    /// Put one frame on link `l` from `from` to `to`: loss, blocks, the rate limit's
    /// queue, latency and jitter decide whether and when it arrives.
    fn transmit(&mut self, from: u32, to: u32, l: u32, conn: u64, payload: Payload) {
        let bytes = payload.len();
        if let Payload::Decoded(Message::Data(_)) = payload {
            self.stats.data_frames += 1;
        } else {
            self.stats.control_frames += 1;
            self.stats.control_bytes += bytes;
        }
        let link = &mut self.links[l as usize];
        let direction = usize::from(link.a != from);
        let loss = link.params.loss_of(direction == 0);
        let lossy = loss > 0.0 && self.rng.unit() < loss;
        if !link.up || link.blocked[direction] || lossy {
            self.stats.frames_lost += 1;
            return;
        }
        let mut at = self.now;
        if link.params.bandwidth_bps > 0 {
            let Some(departure) = shape(link, direction, bytes, self.now) else {
                self.stats.frames_lost += 1;
                return;
            };
            at = departure;
        }
        let jitter = link.params.jitter.mul_f64(self.rng.unit());
        at = at + link.params.latency + jitter;
        self.push(
            at,
            Pending::Frame {
                to,
                from,
                link: l,
                conn,
                payload,
                late: false,
            },
        );
    }

    fn on_event(&mut self, i: u32, event: Event) {
        match event {
            Event::Dial { addr } => self.dial(i, addr),
            Event::NeighbourDown { name, .. } => {
                self.stats.neighbour_down += 1;
                let Some(&j) = self.index.get(&name) else {
                    return;
                };
                let link_usable = self.link_between(i, j).is_some_and(|l| self.usable(l));
                self.observed.push((
                    self.now,
                    Observed::NeighbourDown {
                        node: i,
                        neighbour: j,
                        link_usable,
                    },
                ));
                self.close_connection(i, j);
            }
            Event::RoutesChanged { .. } => self.stats.route_changes += 1,
            Event::Delivered(delivery) if delivery.channel == 1 => {
                if let Some(&source) = self.index.get(&delivery.source) {
                    let sent_us = <[u8; 8]>::try_from(delivery.payload.as_slice())
                        .ok()
                        .map(u64::from_le_bytes);
                    self.observed.push((
                        self.now,
                        Observed::FlowArrival {
                            source,
                            destination: i,
                            sent_us,
                        },
                    ));
                }
            }
            Event::Healing(decision) if decision.kind == DecisionKind::Reroute => {
                if let Some(&j) = self.index.get(&decision.neighbour) {
                    self.observed.push((
                        self.now,
                        Observed::Rerouted {
                            node: i,
                            neighbour: j,
                            predicted: false,
                        },
                    ));
                }
            }
            Event::Delivered(delivery) if Some(delivery.channel) == self.collected.0 => {
                if let Some(&source) = self.index.get(&delivery.source) {
                    self.collected.1.push((i, source, delivery.payload));
                    self.callbacks_due.push(DELIVERY_CALLBACK);
                }
            }
            Event::Revoked { node, .. } => {
                // As the daemon: the revoked node's connection is closed at once.
                if let Some(&j) = self.index.get(&node) {
                    self.close_connection(i, j);
                }
            }
            Event::Delivered(_) | Event::NeighbourUp { .. } | Event::Healing(_) => {}
        }
    }

    /// As the daemon: a neighbour declared down gets its connection closed; the close
    /// frame reaches the other end if the link still carries frames.
    fn close_connection(&mut self, i: u32, j: u32) {
        let Some(l) = self.link_between(i, j) else {
            return;
        };
        let now = self.now;
        let j_name = self.names[j as usize].clone();
        // Each end holds its own connection handle: i closes its end even when the
        // other end closed first (its close frame may have been lost on a dead link).
        self.nodes[i as usize].node.handle_link_down(now, &j_name);
        let Some((conn, ..)) = self.links[l as usize].conn.take() else {
            return;
        };
        if self.carries(l, i) && self.nodes[j as usize].status == Status::Running {
            let latency = self.links[l as usize].params.latency;
            self.push(
                now + latency,
                Pending::Close {
                    to: j,
                    from: i,
                    link: l,
                    conn,
                },
            );
        }
    }

    /// As the daemon's transport: the handshake flight goes out at the offsets of
    /// `Config::handshake_attempts` (the first send, then QUIC's retransmissions); the
    /// first that finds the link carrying both ways and the target running completes one
    /// round trip later; if none has by `dial_timeout_ms`, the dial fails.
    fn dial(&mut self, dialer: u32, addr: SocketAddr) {
        self.next_dial += 1;
        let dial = self.next_dial;
        self.dials_pending.insert(dial);
        let incarnation = self.nodes[dialer as usize].incarnation;
        for offset in self.config.protocol.handshake_attempts() {
            self.push(
                self.now + offset,
                Pending::HandshakeFlight {
                    dialer,
                    addr,
                    dial,
                    incarnation,
                },
            );
        }
        let failed_at = self.now + Duration::from_millis(self.config.protocol.dial_timeout_ms);
        self.push(
            failed_at,
            Pending::DialFailed {
                dialer,
                addr,
                incarnation,
                dial,
            },
        );
    }

    /// One handshake flight of dial `dial`: if it gets through, the handshake completes
    /// one round trip later.
    fn handshake_flight(&mut self, dialer: u32, addr: SocketAddr, dial: u64) {
        if !self.dials_pending.contains(&dial) {
            return; // completed, or failed
        }
        let target = index_of_addr(addr).filter(|&t| (t as usize) < self.nodes.len());
        let answering = target.and_then(|t| {
            let l = self.link_between(dialer, t)?;
            self.handshake_gets_through(dialer, t, l).then_some((
                t,
                l,
                self.links[l as usize].params.latency,
            ))
        });
        if let Some((target, link, latency)) = answering {
            // One round trip for the QUIC + TLS 1.3 handshake; later flights of this dial
            // are not needed any more.
            self.dials_pending.remove(&dial);
            self.push(
                self.now + latency * 2,
                Pending::Handshake {
                    dialer,
                    target,
                    link,
                    addr,
                    dial,
                },
            );
        }
    }
}

/// When a frame of `bytes` (its encoding) put on rate-limited `link` in `direction` at
/// `now` leaves the shaper, or `None` when the queue ahead of it is longer than
/// [`SHAPER_QUEUE_MAX`] (dropped, as `tc tbf` drops beyond its `latency`). A token
/// bucket of rate `bandwidth_bps` and depth [`SHAPER_BURST_BYTES`]: `busy_until` is the
/// time the bucket would be empty, and an idle link banks at most the burst.
fn shape(link: &mut SimLink, direction: usize, bytes: u64, now: Instant) -> Option<Instant> {
    let rate = link.params.bandwidth_bps as f64;
    debug_assert!(rate > 0.0, "shaping needs a rate");
    let wire_bits = ((bytes + WIRE_OVERHEAD_BYTES) * 8) as f64;
    let queued = link.busy_until[direction].saturating_since(now);
    if queued > SHAPER_QUEUE_MAX {
        return None;
    }
    let burst = Duration::from_secs_f64((SHAPER_BURST_BYTES * 8) as f64 / rate);
    let start = link.busy_until[direction].max(now - burst);
    link.busy_until[direction] = start + Duration::from_secs_f64(wire_bits / rate);
    Some(link.busy_until[direction].max(now))
}

/// The simulated address of node `i`.
pub fn addr_of(i: u32) -> SocketAddr {
    let [_, b, c, d] = i.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, b, c, d), SIM_PORT))
}

fn index_of_addr(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == SIM_PORT => {
            let [a, b, c, d] = v4.ip().octets();
            (a == 10).then(|| u32::from_be_bytes([0, b, c, d]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check;

    fn converged_ring(n: usize, seed: u64) -> Sim {
        let topology = Topology::ring(n, &crate::topology::LinkParams::default()).unwrap();
        let (sim, _) =
            crate::runner::converge(&topology, &SimConfig::new(seed), Duration::from_secs(5))
                .unwrap();
        sim
    }

    fn healthy(sim: &Sim) -> bool {
        check::check(sim, 10_000, &mut Rng::seed(0)).ok()
    }

    #[test]
    fn a_restarted_node_rejoins() {
        let mut sim = converged_ring(6, 1);
        sim.crash(2);
        sim.run_for(Duration::from_millis(500));
        assert!(healthy(&sim), "survivors route around the crash");
        assert_eq!(sim.node(1).routes().len(), 4);
        sim.restart(2);
        sim.run_for(Duration::from_secs(3));
        assert!(healthy(&sim));
        assert_eq!(
            sim.node(1).routes().len(),
            5,
            "the restarted node is reachable again"
        );
    }

    #[test]
    fn a_paused_node_is_declared_down_and_comes_back() {
        let mut sim = converged_ring(6, 2);
        sim.pause(3);
        sim.run_for(Duration::from_millis(600));
        let downs = sim
            .take_observed()
            .iter()
            .filter(|(_, o)| matches!(o, Observed::NeighbourDown { neighbour: 3, .. }))
            .count();
        assert_eq!(downs, 2, "both neighbours declare the paused node down");
        sim.resume(3);
        sim.run_for(Duration::from_secs(3));
        assert!(healthy(&sim));
        assert_eq!(sim.node(0).routes().len(), 5);
    }

    #[test]
    fn same_seed_same_history() {
        let history = |seed| {
            let mut sim = converged_ring(8, seed);
            sim.crash(4);
            sim.run_for(Duration::from_millis(400));
            (
                sim.stats().clone(),
                (0..8)
                    .map(|i| sim.node(i).routes().clone())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(history(5), history(5));
    }

    /// One direction blocked: the side that stops hearing declares the other down, its
    /// close frame still gets through the open direction, and no handshake completes
    /// until the block lifts.
    #[test]
    fn a_one_way_block_cuts_the_link_until_lifted() {
        let mut sim = converged_ring(6, 3);
        let l = sim.link_between(0, 1).unwrap();
        let a_to_b = sim.links()[l as usize].a == 0;
        sim.set_blocked(l, a_to_b, true);
        assert!(!sim.usable(l));
        sim.run_for(Duration::from_millis(1_500));
        let downs: Vec<(u32, u32)> = sim
            .take_observed()
            .iter()
            .filter_map(|(_, o)| match *o {
                Observed::NeighbourDown {
                    node,
                    neighbour,
                    link_usable,
                } => {
                    assert!(!link_usable, "not a false alarm");
                    Some((node, neighbour))
                }
                Observed::FlowArrival { .. } | Observed::Rerouted { .. } => None,
            })
            .collect();
        assert!(downs.contains(&(1, 0)), "1 hears nothing from 0: {downs:?}");
        assert!(downs.contains(&(0, 1)), "0 is told or times out: {downs:?}");
        assert!(
            sim.links()[l as usize].conn.is_none(),
            "redials fail one-way"
        );
        assert!(healthy(&sim), "routed around the blocked link");
        assert_eq!(sim.node(0).routes().len(), 5);
        sim.set_blocked(l, a_to_b, false);
        sim.run_for(Duration::from_secs(5));
        assert!(
            sim.links()[l as usize].conn.is_some(),
            "redialled after the lift"
        );
        assert!(healthy(&sim));
    }

    /// The rate limit: an idle link passes a 32 kbit burst at once, then frames leave at
    /// the rate (encoding plus 72 bytes of headers), and a frame that finds more than
    /// 100 ms queued ahead of it is dropped.
    #[test]
    fn the_shaper_is_a_token_bucket_with_a_queue_limit() {
        let topology = Topology::ring(3, &LinkParams::default()).unwrap();
        let mut link = Sim::new(&topology, SimConfig::new(1)).links()[0].clone();
        link.params.bandwidth_bps = 1_000_000;
        let now = Instant::from_micros(10_000_000);
        let frame_bytes = 128; // 200 bytes on the wire: 1.6 ms at 1 Mbit/s
        let mut departures = Vec::new();
        while let Some(at) = shape(&mut link, 0, frame_bytes, now) {
            departures.push(at.saturating_since(now).as_micros());
        }
        let burst_frames = (SHAPER_BURST_BYTES / (frame_bytes + WIRE_OVERHEAD_BYTES)) as usize;
        assert_eq!(burst_frames, 20);
        assert!(departures[..burst_frames].iter().all(|&us| us == 0));
        assert_eq!(
            departures[burst_frames + 1] - departures[burst_frames],
            1_600
        );
        let queued_max = departures.last().copied().unwrap();
        assert!(
            (100_000..=101_600).contains(&queued_max),
            "the last frame accepted found at most 100 ms ahead: {queued_max} us"
        );
        assert_eq!(
            link.busy_until[1],
            Instant::ZERO,
            "each direction has its own"
        );
    }
}
