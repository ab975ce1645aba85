//! The discrete-event engine: N protocol instances, one simulated clock, link models.
//!
//! The engine is a driver of `x0tta6bl4_proto::Node` exactly like the daemon: it feeds
//! inputs, drains `poll_transmit`, re-arms one timer per node from `poll_timeout`, and
//! acts on `poll_event` (dials, connection closes on neighbour-down, deliveries). It
//! models what the daemon's transport does around the core — QUIC handshakes taking one
//! round trip, connection close frames, stateless resets after a restart, dial timeouts
//! — so that timings in the twin are the timings of the real node.
//!
//! Determinism: every random choice comes from one seeded [`Rng`], events at the same
//! instant run in insertion order, and no hash map is iterated where order matters. The
//! same seed gives the same history, byte for byte.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use x0tta6bl4_proto::{
    Config, Destination, Event, Instant, LinkStateSnapshot, Message, Node, NodeName, Rng,
    SimAuthenticator,
};

use crate::topology::{LinkParams, Topology};

/// Frames buffered for a paused node before further ones are dropped.
const PAUSED_INBOX_MAX: usize = 10_000;
/// The UDP port every simulated node "listens" on.
const SIM_PORT: u16 = 7000;

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
    inbox: VecDeque<(u32, Message)>,
    incarnation: u32,
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
        message: Message,
    },
    Timer {
        node: u32,
    },
    Handshake {
        dialer: u32,
        target: u32,
        link: u32,
        addr: SocketAddr,
    },
    DialFailed {
        dialer: u32,
        addr: SocketAddr,
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
    index: HashMap<NodeName, u32>,
    /// All links; `adjacency[i]` lists the links of node i.
    links: Vec<SimLink>,
    adjacency: Vec<Vec<u32>>,
    pair: HashMap<(u32, u32), u32>,
    queue: EventQueue,
    next_conn: u64,
    rng: Rng,
    config: SimConfig,
    stats: SimStats,
    observed: Vec<(Instant, Observed)>,
    callbacks_due: Vec<u64>,
    /// While `Some`, link-state updates are held here instead of crossing links (see
    /// [`Sim::hold_link_state`]): (sender, receiver, frame), in the order sent.
    held_updates: Option<Vec<(u32, NodeName, Message)>>,
}

impl Sim {
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
            names,
            index,
            links: Vec::with_capacity(topology.links.len()),
            adjacency: vec![Vec::new(); n],
            pair: HashMap::new(),
            queue: EventQueue::default(),
            next_conn: 1,
            rng: Rng::seed(config.seed),
            stats: SimStats::default(),
            observed: Vec::new(),
            callbacks_due: Vec::new(),
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
        Node::new(name, protocol, auth, self.now).expect("protocol config validated by the caller")
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

    /// Whether frames can cross link `l` from `from` to the other end right now.
    pub fn usable(&self, l: u32) -> bool {
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
        while let Some((from, message)) = self.nodes[i as usize].inbox.pop_front() {
            let from_name = self.names[from as usize].clone();
            self.nodes[i as usize]
                .node
                .handle_message(now, &from_name, message);
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

    /// Change a link's loss probability.
    pub fn set_link_loss(&mut self, l: u32, loss: f64) {
        self.links[l as usize].params.loss = loss.clamp(0.0, 1.0);
    }

    /// Change a link's latency.
    pub fn set_link_latency(&mut self, l: u32, latency: Duration) {
        self.links[l as usize].params.latency = latency;
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
                message,
            } => self.deliver_frame(to, from, link, conn, message),
            Pending::Timer { node } => self.fire_timer(node),
            Pending::Handshake {
                dialer,
                target,
                link,
                addr,
            } => self.complete_handshake(dialer, target, link, addr),
            Pending::DialFailed {
                dialer,
                addr,
                incarnation,
            } => {
                let sim_node = &mut self.nodes[dialer as usize];
                if sim_node.status == Status::Running && sim_node.incarnation == incarnation {
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
        sim_node.node.handle_timeout(now);
        self.after_input(i);
    }

    fn deliver_frame(&mut self, to: u32, from: u32, link: u32, conn: u64, message: Message) {
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
                // stateless reset: the sender learns at once that the connection is gone.
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
            Status::Paused => {
                let inbox = &mut self.nodes[to as usize].inbox;
                if inbox.len() < PAUSED_INBOX_MAX {
                    inbox.push_back((from, message));
                }
            }
            Status::Running => {
                let from_name = self.names[from as usize].clone();
                self.nodes[to as usize]
                    .node
                    .handle_message(self.now, &from_name, message);
                self.after_input(to);
            }
        }
    }

    fn complete_handshake(&mut self, dialer: u32, target: u32, link: u32, addr: SocketAddr) {
        let reachable = self.links[link as usize].up
            && self.nodes[target as usize].status == Status::Running
            && self.nodes[dialer as usize].status == Status::Running;
        if !reachable {
            return; // the dial-failure timer already queued reports it
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
            .handle_link_up(now, target_name, Some(addr))
        {
            self.links[link as usize].conn = None;
        }
        self.nodes[target as usize]
            .node
            .handle_link_up(now, dialer_name, None);
        self.after_input(dialer);
        self.after_input(target);
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
                let at = at.max(self.now + Duration::from_micros(1));
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
        let link = &mut self.links[l as usize];
        let Some((conn, ..)) = link.conn else { return };
        let bytes = message.encoded_len() as u64;
        if let Message::Data(_) = message {
            self.stats.data_frames += 1;
        } else {
            self.stats.control_frames += 1;
            self.stats.control_bytes += bytes;
        }
        let direction = usize::from(link.a != from);
        let lossy = link.params.loss > 0.0 && self.rng.unit() < link.params.loss;
        if !link.up || link.blocked[direction] || lossy {
            self.stats.frames_lost += 1;
            return;
        }
        let mut at = self.now;
        if link.params.bandwidth_bps > 0 {
            let transmission =
                Duration::from_secs_f64(bytes as f64 * 8.0 / link.params.bandwidth_bps as f64);
            let start = link.busy_until[direction].max(self.now);
            link.busy_until[direction] = start + transmission;
            at = link.busy_until[direction];
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
                message,
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
                    self.observed.push((
                        self.now,
                        Observed::FlowArrival {
                            source,
                            destination: i,
                        },
                    ));
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
        if self.links[l as usize].up && self.nodes[j as usize].status == Status::Running {
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

    fn dial(&mut self, dialer: u32, addr: SocketAddr) {
        let incarnation = self.nodes[dialer as usize].incarnation;
        let target = index_of_addr(addr).filter(|&t| (t as usize) < self.nodes.len());
        let answering = target.and_then(|t| {
            let l = self.link_between(dialer, t)?;
            let link = &self.links[l as usize];
            (link.up && self.nodes[t as usize].status == Status::Running).then_some((
                t,
                l,
                link.params.latency,
            ))
        });
        match answering {
            Some((target, link, latency)) => {
                // One round trip for the QUIC + TLS 1.3 handshake.
                self.push(
                    self.now + latency * 2,
                    Pending::Handshake {
                        dialer,
                        target,
                        link,
                        addr,
                    },
                );
            }
            None => {
                // As the daemon: a dial without a completed handshake fails after this.
                let failed_at =
                    self.now + Duration::from_millis(self.config.protocol.dial_timeout_ms);
                self.push(
                    failed_at,
                    Pending::DialFailed {
                        dialer,
                        addr,
                        incarnation,
                    },
                );
            }
        }
    }
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
}
