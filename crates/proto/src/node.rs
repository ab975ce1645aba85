//! [`Node`]: one protocol instance.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::addresses::{AddressBook, Offered};
use crate::config::{Config, ConfigError};
use crate::crypto::{AuthError, Authenticator};
use crate::heal::{self, Decision, DecisionKind, Observation, Symptom};
use crate::lsdb::{InstallOutcome, LinkStateDb, LinkStateSnapshot, SlotNames};
use crate::name::NodeName;
use crate::neighbour::{Detection, DownReason, Neighbour, NeighbourState, NeighbourView};
use crate::replay::RecentMessages;
use crate::revocations::{Inserted, RevocationSet};
use crate::rng::Rng;
use crate::route::{compute_routes, update_routes, RoutingTable};
use crate::time::Instant;
use crate::wire::{self, AddressRecord, Data, Lsa, LsaLink, Message, SignedLsa, WireError};

/// Interval of the aging sweep over the link-state database.
const AGE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Data identifiers start at `initial_sequence << DATA_IDS_PER_MS_LOG2` (see `Node::new`).
const DATA_IDS_PER_MS_LOG2: u32 = 12;
/// Peer addresses kept for dialing (static plus discovered).
const PEERS_MAX: usize = 1024;
/// Bytes of advertisements bundled into one update frame at most.
const UPDATE_BYTES_MAX: usize = 16 * 1024;
/// Bytes of address records bundled into one frame at most.
const ADDRESS_FRAME_BYTES_MAX: usize = 16 * 1024;
/// Dials to learnt addresses awaiting their outcome, at most.
const LEARNT_DIALS_MAX: usize = PEERS_MAX;
/// Bytes of revocations bundled into one frame at most.
const REVOCATION_FRAME_BYTES_MAX: usize = 16 * 1024;
/// Digest rounds sent to disagreeing neighbours before waiting for the periodic round:
/// at most 400 ms apart, about 25 s of tries, so that a revocation crosses a link that
/// loses most round trips (80 %: 25 tries in 10 s all fail with chance 0.4 %).
const REVOCATION_RESYNCS_MAX: u32 = 64;

/// Capacity a drained retransmission list keeps (more is given back).
const RETRANSMIT_CAPACITY_KEPT: usize = 64;

/// Where a transmit goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A neighbour, over its authenticated link.
    Neighbour(NodeName),
    /// The LAN discovery beacon (UDP broadcast).
    Beacon,
}

/// A message the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: Destination,
    /// What ([`Message::encode`] gives the bytes).
    pub message: Message,
}

/// An application message that reached this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The node that sent it.
    pub source: NodeName,
    /// The application channel (0: messages, 1: probe flows).
    pub channel: u8,
    /// The source's identifier of the message.
    pub id: u64,
    /// Hops it took (the initial hop limit minus what was left, plus one).
    pub hops: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Something the driver should know or do.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Open a connection to this address; report back with
    /// [`Node::handle_link_up`] or [`Node::handle_dial_failed`].
    Dial {
        /// The peer's address.
        addr: SocketAddr,
    },
    /// A neighbour answered and is now advertised.
    NeighbourUp {
        /// The neighbour.
        name: NodeName,
    },
    /// A neighbour is gone.
    NeighbourDown {
        /// The neighbour.
        name: NodeName,
        /// Why.
        reason: DownReason,
    },
    /// The forwarding table changed ([`Node::routes`] has the new one).
    RoutesChanged {
        /// Destinations whose route changed.
        changed: usize,
        /// Destinations now reachable.
        reachable: usize,
    },
    /// An application message arrived for this node.
    Delivered(Delivery),
    /// The healing loop decided something.
    Healing(Decision),
    /// A verified revocation of `node` that this node did not hold before (from a
    /// neighbour's flood or anti-entropy, or from [`Node::revoke`]). The core already
    /// refuses the node as a neighbour, drops its advertisement and data, took it down if
    /// it was a neighbour, and floods the revocation; the driver persists it, closes the
    /// node's connection and applies it to the node's policy.
    Revoked {
        /// The revoked node.
        node: NodeName,
        /// The revocation's bytes, as [`Authenticator::verify_revocation`] accepted them.
        revocation: Arc<[u8]>,
    },
}

/// What [`Node::revoke`] did with a verified revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The node was not revoked before: the revocation is applied and flooded.
    New(NodeName),
    /// The node was revoked already.
    Known(NodeName),
    /// `revocations_max` revocations are held already; this one was not kept.
    Full(NodeName),
}

/// Why something was dropped. Each reason is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Bytes that are not a valid frame.
    Malformed,
    /// A frame of a protocol version this build does not speak.
    UnknownVersion,
    /// A frame above the size limit.
    Oversized,
    /// A message from a node that is not a neighbour.
    NotNeighbour,
    /// An advertisement whose signature or credential did not verify.
    BadSignature,
    /// An advertisement whose content is inconsistent (self-links, unsorted links).
    BadAdvertisement,
    /// An advertisement older than the one held.
    StaleAdvertisement,
    /// A new origin while the link-state database is full.
    DatabaseFull,
    /// A message for a destination without route.
    NoRoute,
    /// A message whose hop limit ran out.
    TtlExpired,
    /// The transmit queue was full.
    TransmitQueueFull,
    /// The event queue was full (the oldest event was dropped).
    EventQueueFull,
    /// An advertisement retransmitted the maximum number of times without acknowledgement.
    RetransmitsExhausted,
    /// A data message this node forwarded or delivered already (a replay, or a loop).
    Replayed,
    /// A data message from a source without an advertisement in the database.
    UnknownSource,
    /// An advertisement, data message or link from a revoked node.
    Revoked,
    /// A revocation that did not verify.
    BadRevocation,
    /// A link dialed at an address learnt from the mesh whose handshake proved another
    /// node than the one that advertised the address (refused and closed).
    UnexpectedPeer,
}

impl DropReason {
    /// All reasons, for metrics.
    pub const ALL: [DropReason; 18] = [
        DropReason::Malformed,
        DropReason::UnknownVersion,
        DropReason::Oversized,
        DropReason::NotNeighbour,
        DropReason::BadSignature,
        DropReason::BadAdvertisement,
        DropReason::StaleAdvertisement,
        DropReason::DatabaseFull,
        DropReason::NoRoute,
        DropReason::TtlExpired,
        DropReason::TransmitQueueFull,
        DropReason::EventQueueFull,
        DropReason::RetransmitsExhausted,
        DropReason::Replayed,
        DropReason::UnknownSource,
        DropReason::Revoked,
        DropReason::BadRevocation,
        DropReason::UnexpectedPeer,
    ];

    /// The reason's metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::Oversized => "oversized",
            DropReason::NotNeighbour => "not_neighbour",
            DropReason::BadSignature => "bad_signature",
            DropReason::BadAdvertisement => "bad_advertisement",
            DropReason::StaleAdvertisement => "stale_advertisement",
            DropReason::DatabaseFull => "database_full",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TransmitQueueFull => "transmit_queue_full",
            DropReason::EventQueueFull => "event_queue_full",
            DropReason::RetransmitsExhausted => "retransmits_exhausted",
            DropReason::Replayed => "replayed",
            DropReason::UnknownSource => "unknown_source",
            DropReason::Revoked => "revoked",
            DropReason::BadRevocation => "bad_revocation",
            DropReason::UnexpectedPeer => "unexpected_peer",
        }
    }
}

/// Why [`Node::send`] refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No advertisement of that node is known.
    #[error("unknown node {0}: it is not in this node's link-state database")]
    UnknownDestination(NodeName),
    /// The node is known but unreachable now.
    #[error("no route to {0} at the moment")]
    NoRoute(NodeName),
    /// The payload is larger than `payload_bytes_max`.
    #[error("payload of {len} bytes exceeds payload_bytes_max = {max}")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// What a node's probes measured of one link: the inputs of a link-failure
/// predictor ([`Node::link_features`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkFeatures {
    /// Whether the neighbour is up.
    pub up: bool,
    /// Estimated round-trip probe loss, 0 to 1.
    pub loss: f64,
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// RTT variation (RFC 6298 `rttvar`): the jitter the probes see.
    pub rttvar: Duration,
    /// Least of the recent RTT samples.
    pub base_rtt: Duration,
    /// The factor [`Node::set_link_risk`] put on the link's cost (1: none).
    pub risk_factor: f64,
}

/// Cumulative counters, for metrics and the twin's overhead figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Link cost changes made by [`Node::set_link_risk`] on up links.
    pub risk_cost_changes: u64,
    /// Frames handed in by the driver.
    pub frames_received: u64,
    /// Frames handed out to the driver.
    pub frames_sent: u64,
    /// Bytes of frames handed out.
    pub bytes_sent: u64,
    /// Advertisements this node originated.
    pub lsa_originated: u64,
    /// Advertisements received from neighbours.
    pub lsa_received: u64,
    /// Advertisements verified and installed.
    pub lsa_installed: u64,
    /// Advertisement copies sent (floods and retransmissions).
    pub lsa_sent: u64,
    /// Bytes of advertisement copies sent.
    pub lsa_bytes_sent: u64,
    /// Retransmissions among them.
    pub lsa_retransmitted: u64,
    /// Advertisements aged out of the database.
    pub lsa_expired: u64,
    /// Route computations run.
    pub spf_runs: u64,
    /// Among them, those that repaired the table incrementally (what changed only).
    pub spf_incremental: u64,
    /// Repaired tables checked against a full computation (see [`ROUTE_AUDIT_EVERY`]).
    pub route_audits: u64,
    /// Among them, those that differed (a bug: the full computation's table is adopted).
    pub route_audit_mismatches: u64,
    /// Route changes (destinations whose route changed, summed over computations).
    pub route_changes: u64,
    /// Application messages originated here.
    pub data_originated: u64,
    /// Application messages forwarded for others.
    pub data_forwarded: u64,
    /// Application messages delivered here.
    pub data_delivered: u64,
    /// Neighbour down transitions.
    pub neighbour_down: u64,
    /// Probes sent to suspected neighbours (`suspect_probe_interval_ms`), beyond the
    /// probe interval's.
    pub suspect_probes: u64,
    /// Revocations verified and newly held (flooded, exchanged or commanded).
    pub revocations_installed: u64,
    /// Revocation digests sent (anti-entropy).
    pub revocation_digests_sent: u64,
    /// Other nodes' address records verified and newly held.
    pub address_records_installed: u64,
    /// Dials to addresses learnt from the mesh.
    pub learnt_dials: u64,
    /// Healing decisions by kind, in [`DecisionKind::ALL`] order.
    pub decisions: [u64; 4],
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0)]
    }

    /// Decisions counted of `kind`.
    pub fn decided(&self, kind: DecisionKind) -> u64 {
        self.decisions[DecisionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0)]
    }
}

#[derive(Clone, Debug)]
struct Peer {
    addr: SocketAddr,
    name: Option<NodeName>,
    connected: bool,
    next_dial_at: Option<Instant>,
    backoff: Duration,
}

/// Advertisements awaiting acknowledgement from one neighbour, by origin. A fixed-key
/// hasher keeps iteration order a function of history alone (determinism).
type RetransmitList = crate::hash::FastMap<NodeName, Retransmit>;

#[derive(Clone, Debug)]
struct Retransmit {
    sequence: u64,
    next_at: Instant,
    tries: u32,
}

/// One mesh node's protocol state machine.
///
/// Methods come in four kinds, like quinn-proto's `Connection`: getters
/// ([`Node::routes`], [`Node::neighbours`], ...), inputs (`handle_*`), commands
/// ([`Node::send`], [`Node::add_peer`]) and outputs (`poll_*`). After **every** input or
/// command the driver calls, in this order:
///
/// 1. [`Node::poll_transmit`] until `None`, sending each message;
/// 2. [`Node::poll_timeout`], and arms one timer for the deadline it returns;
/// 3. [`Node::poll_event`] until `None`, acting on each event.
///
/// When the timer fires it calls [`Node::handle_timeout`] with the current time. Early or
/// repeated calls to `handle_timeout` are harmless: nothing happens before its time.
#[derive(Clone)]
pub struct Node {
    name: NodeName,
    config: Config,
    auth: Arc<dyn Authenticator>,
    rng: Rng,
    neighbours: BTreeMap<NodeName, Neighbour>,
    lsdb: LinkStateDb,
    routes: RoutingTable,
    /// Sequence number of the last advertisement originated.
    sequence: u64,
    /// The cost last advertised for each neighbour, and the link's estimates then.
    advertised: BTreeMap<NodeName, Advertised>,
    /// The advertised links whose cost moved far enough to be worth a flood (see
    /// `cost_stale`), kept up to date per neighbour as its estimates change and emptied
    /// by each origination: `poll_timeout` runs after every event, and checking every
    /// link there took a quarter of the twin's time on a 660-neighbour gateway.
    stale_costs: BTreeSet<NodeName>,
    last_origination: Instant,
    /// Per neighbour: origin → advertisement awaiting acknowledgement.
    retransmits: BTreeMap<NodeName, RetransmitList>,
    spf_at: Option<Instant>,
    next_probe_at: Instant,
    next_refresh_at: Instant,
    next_age_check_at: Instant,
    beacon: Option<(u16, Instant)>,
    peers: Vec<Peer>,
    next_data_id: u64,
    /// Data messages forwarded or delivered lately (see `replay`).
    recent: RecentMessages,
    /// Verified revocations (see `revocations`).
    revocations: RevocationSet,
    next_revocation_sync_at: Instant,
    /// While some up neighbour's revocation digest differs from ours: when digests are
    /// sent to those neighbours again, and how often they were (for the backoff).
    revocation_resync_at: Option<Instant>,
    revocation_resyncs: u32,
    /// The newest address record of every node, this one's own included (see
    /// `addresses`), and the sequence number of our own last one.
    addresses: AddressBook,
    address_sequence: u64,
    /// When our own record was last signed.
    address_signed_at: Instant,
    /// Dials to learnt addresses in progress: the node each address was learnt for.
    learnt_dials: BTreeMap<SocketAddr, NodeName>,
    transmits: VecDeque<Transmit>,
    /// Advertisements and acknowledgements waiting to be bundled, per neighbour; they
    /// leave as few frames as possible when the transmit queue runs dry.
    staged_updates: BTreeMap<NodeName, Vec<(u32, Arc<SignedLsa>)>>,
    staged_acks: BTreeMap<NodeName, Vec<(NodeName, u64)>>,
    /// An origination held back by `lsa_min_interval_ms`.
    origination_due: Option<Instant>,
    /// When staged acknowledgements leave (`ack_delay_ms` after the first was staged).
    ack_due: Option<Instant>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Node {
    /// A node named `name` (its SPIFFE ID's node name), alone, at `now`.
    pub fn new(
        name: NodeName,
        config: Config,
        auth: impl Authenticator + 'static,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        config.validate()?;
        let mut node = Node {
            name,
            rng: Rng::seed(config.rng_seed),
            lsdb: LinkStateDb::new(config.lsdb_entries_max),
            sequence: config.initial_sequence.saturating_sub(1),
            auth: Arc::new(auth),
            neighbours: BTreeMap::new(),
            routes: RoutingTable::default(),
            advertised: BTreeMap::new(),
            stale_costs: BTreeSet::new(),
            last_origination: now,
            retransmits: BTreeMap::new(),
            spf_at: None,
            next_probe_at: now,
            next_refresh_at: now,
            next_age_check_at: now + AGE_CHECK_INTERVAL,
            beacon: None,
            peers: Vec::new(),
            // Above every identifier an earlier run of this node used (the sequence
            // start is wall-clock milliseconds in the daemon), so its messages are not
            // taken for replays after a restart: room for 4,096 messages per
            // millisecond of uptime.
            next_data_id: config.initial_sequence.max(1) << DATA_IDS_PER_MS_LOG2,
            recent: RecentMessages::default(),
            revocations: RevocationSet::new(config.revocations_max),
            next_revocation_sync_at: now + Duration::from_millis(config.revocation_sync_ms),
            revocation_resync_at: None,
            revocation_resyncs: 0,
            addresses: AddressBook::default(),
            address_sequence: config.initial_sequence.saturating_sub(1),
            address_signed_at: now,
            learnt_dials: BTreeMap::new(),
            transmits: VecDeque::new(),
            staged_updates: BTreeMap::new(),
            staged_acks: BTreeMap::new(),
            origination_due: None,
            ack_due: None,
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        };
        node.originate_now(now);
        Ok(node)
    }

    // ----- getters -----

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The forwarding table.
    pub fn routes(&self) -> &RoutingTable {
        &self.routes
    }

    /// The link-state database.
    pub fn lsdb(&self) -> &LinkStateDb {
        &self.lsdb
    }

    /// Resolve names through `names`, a slot table shared with other nodes of the same
    /// mesh (a simulation holding thousands of nodes: one table instead of one per node,
    /// so look-ups stay in cache). Behaviour is unchanged: slots are internal and ties
    /// are broken by name. A name the table lacks gives this node a private copy.
    pub fn share_slot_names(&mut self, names: &Arc<SlotNames>) {
        self.lsdb.share_names(names);
    }

    /// Every neighbour this node knows, sorted by name.
    pub fn neighbours(&self) -> Vec<NeighbourView> {
        self.neighbours
            .values()
            .map(|n| n.view(self.config.link_cost))
            .collect()
    }

    /// What the probes measured of the link to `neighbour` (the inputs of a link
    /// failure predictor); `None` for an unknown neighbour.
    pub fn link_features(&self, neighbour: &NodeName) -> Option<LinkFeatures> {
        self.neighbours.get(neighbour).map(|n| LinkFeatures {
            up: n.state == NeighbourState::Up,
            loss: n.loss,
            srtt: n.srtt(),
            rttvar: n.rttvar(),
            base_rtt: n.base_rtt(),
            risk_factor: n.risk_factor,
        })
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sequence number of this node's current advertisement.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether this node holds a verified revocation of `node`.
    pub fn is_revoked(&self, node: &NodeName) -> bool {
        self.revocations.contains(node)
    }

    /// The revoked nodes and their revocations, by name.
    pub fn revocations(&self) -> impl Iterator<Item = (&NodeName, &Arc<[u8]>)> {
        self.revocations.iter()
    }

    /// The addresses `node` advertised last through the mesh (this node's own for its
    /// own name; empty if none is known).
    pub fn learnt_addresses(&self, node: &NodeName) -> &[SocketAddr] {
        self.addresses.addresses(node)
    }

    /// Messages still queued for the driver (it should drain them with `poll_transmit`).
    pub fn transmits_queued(&self) -> usize {
        self.transmits.len() + self.staged_updates.len() + self.staged_acks.len()
    }

    // ----- commands -----

    /// Replace the settings in force with `config` at `now` (a configuration reload):
    /// every setting read as the node runs applies from now on, and a probe round due
    /// later than one new probe interval from now is brought forward to it. Refused,
    /// changing nothing, when `config` does not validate or changes a setting fixed at
    /// construction (`lsdb_entries_max`, `revocations_max`, `rng_seed`,
    /// `initial_sequence`): those need a new instance.
    pub fn set_config(&mut self, config: Config, now: Instant) -> Result<(), ConfigError> {
        config.validate()?;
        let (old, new) = (&self.config, &config);
        let fixed = [
            (
                "lsdb_entries_max",
                old.lsdb_entries_max as u64,
                new.lsdb_entries_max as u64,
            ),
            (
                "revocations_max",
                old.revocations_max as u64,
                new.revocations_max as u64,
            ),
            ("rng_seed", old.rng_seed, new.rng_seed),
            (
                "initial_sequence",
                old.initial_sequence,
                new.initial_sequence,
            ),
        ];
        if let Some(&(key, _, value)) = fixed.iter().find(|(_, old, new)| old != new) {
            return Err(ConfigError {
                key,
                value: value.to_string(),
                fix: "fixed when the node starts: restart it to change this".to_owned(),
            });
        }
        self.next_probe_at = self.next_probe_at.min(now + config.probe_interval());
        self.config = config;
        // `link_cost` and `cost_change_percent` may have changed.
        let names: Vec<NodeName> = self.neighbours.keys().cloned().collect();
        for name in &names {
            self.refresh_cost_stale(name);
        }
        Ok(())
    }

    /// Put `factor` on the advertised cost of the link to `neighbour` (the healing loop's
    /// input from a link-failure predictor, which the driver runs): raised while a
    /// failure is predicted, so flows move off the link before it dies, and 1 to give
    /// the link back its measured cost. A change floods a new advertisement at once
    /// (within `lsa_min_interval_ms`), not after `cost_update_interval_ms`: a predicted
    /// failure is urgent. Returns whether the factor changed. Refused (returns false,
    /// changes nothing) for an unknown neighbour and for a factor that is not finite or
    /// lies outside 1..=1000: a predictor's NaN never reaches the link-state. Without
    /// calls to it, costs are exactly as before.
    pub fn set_link_risk(&mut self, now: Instant, neighbour: &NodeName, factor: f64) -> bool {
        if !(1.0..=1_000.0).contains(&factor) {
            return false;
        }
        let Some(n) = self.neighbours.get_mut(neighbour) else {
            return false;
        };
        if n.risk_factor == factor {
            return false;
        }
        n.risk_factor = factor;
        let up = n.state == NeighbourState::Up;
        self.refresh_cost_stale(neighbour);
        if up {
            self.stats.risk_cost_changes += 1;
            self.originate(now);
        }
        true
    }

    /// Keep a connection to the peer at `addr` (a static peer): dial it now and redial
    /// it with backoff whenever the connection is lost.
    pub fn add_peer(&mut self, now: Instant, addr: SocketAddr) {
        if self.peers.iter().any(|p| p.addr == addr) || self.peers.len() >= PEERS_MAX {
            return;
        }
        let backoff = Duration::from_millis(self.config.dial_backoff_min_ms);
        self.peers.push(Peer {
            addr,
            name: None,
            connected: false,
            next_dial_at: Some(now),
            backoff,
        });
    }

    /// Stop keeping a connection to the static peer at `addr` (its name no longer resolves
    /// to it): it is not dialed again. A link open through it stays until it closes.
    pub fn remove_peer(&mut self, addr: SocketAddr) {
        self.peers.retain(|p| p.addr != addr);
    }

    /// Advertise `addresses` (where this node's QUIC endpoint can be reached) to the whole
    /// mesh in a signed address record, flooded now, handed to every new neighbour and
    /// re-signed at each advertisement refresh. Port-0 and repeated addresses are left
    /// out and at most [`wire::ADDRESSES_PER_RECORD_MAX`] kept; nothing happens when that
    /// leaves none or the same addresses are advertised already. Returns whether a new
    /// record was made.
    pub fn set_addresses(&mut self, now: Instant, addresses: &[SocketAddr]) -> bool {
        let mut kept: Vec<SocketAddr> = Vec::new();
        for addr in addresses.iter().filter(|a| a.port() != 0) {
            if !kept.contains(addr) && kept.len() < wire::ADDRESSES_PER_RECORD_MAX {
                kept.push(*addr);
            }
        }
        if kept.is_empty() || self.addresses.addresses(&self.name) == kept.as_slice() {
            return false;
        }
        self.originate_addresses(now, kept);
        true
    }

    /// Start LAN discovery beacons announcing that our QUIC endpoint listens on `port`.
    pub fn enable_beacons(&mut self, now: Instant, port: u16) {
        if self.config.beacon_interval_ms > 0 {
            self.beacon = Some((port, now));
        }
    }

    /// Send `payload` to node `to` on `channel`. Returns the message's identifier.
    pub fn send(
        &mut self,
        _now: Instant,
        to: &NodeName,
        channel: u8,
        payload: Vec<u8>,
    ) -> Result<u64, SendError> {
        let max = self.config.payload_bytes_max;
        if payload.len() > max {
            return Err(SendError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        let id = self.next_data_id;
        let data = Data {
            source: self.name.clone(),
            destination: to.clone(),
            ttl: self.config.ttl_default,
            channel,
            id,
            payload,
        };
        if *to == self.name {
            self.next_data_id += 1;
            self.stats.data_originated += 1;
            self.deliver(data, 0);
            return Ok(id);
        }
        let Some(next_hop) = self.routes.next_hop(to).cloned() else {
            return Err(if self.lsdb.get(to).is_some() {
                SendError::NoRoute(to.clone())
            } else {
                SendError::UnknownDestination(to.clone())
            });
        };
        self.next_data_id += 1;
        self.stats.data_originated += 1;
        self.transmit(Destination::Neighbour(next_hop), Message::Data(data));
        Ok(id)
    }

    /// A revocation from outside the mesh (the operator, through the driver's API, or the
    /// driver's persisted ones at start): verified by the authenticator, then applied and
    /// flooded like one from a neighbour.
    pub fn revoke(&mut self, now: Instant, revocation: &[u8]) -> Result<RevokeOutcome, AuthError> {
        if revocation.len() > wire::REVOCATION_BYTES_MAX {
            return Err(AuthError::BadRevocation {
                reason: format!(
                    "{} bytes; at most {}",
                    revocation.len(),
                    wire::REVOCATION_BYTES_MAX
                ),
            });
        }
        let target = self.auth.verify_revocation(revocation)?;
        Ok(self.install_revocation(now, None, target, Arc::from(revocation)))
    }

    // ----- inputs -----

    /// A link (authenticated connection) to `neighbour` is up. `dialed` is the address
    /// this node dialed to get it, if it dialed. Returns false if the link is refused
    /// (the neighbour table is full, or it is this node itself); the driver closes it.
    pub fn handle_link_up(
        &mut self,
        now: Instant,
        neighbour: NodeName,
        dialed: Option<SocketAddr>,
    ) -> bool {
        if neighbour == self.name {
            return false;
        }
        if self.revocations.contains(&neighbour) {
            self.count_drop(DropReason::Revoked);
            return false;
        }
        if let Some(expected) = dialed.and_then(|addr| self.learnt_dials.remove(&addr)) {
            // An address learnt from the mesh is a hint: the link counts only if the
            // handshake proved the node that advertised it.
            if expected != neighbour {
                self.count_drop(DropReason::UnexpectedPeer);
                return false;
            }
            for peer in self
                .peers
                .iter_mut()
                .filter(|p| p.name.as_ref() == Some(&neighbour))
            {
                peer.connected = true;
                peer.next_dial_at = None;
            }
        }
        if let Some(addr) = dialed {
            // The backoff is reset only once the neighbour answers (`neighbour_alive`): a
            // peer that completes the handshake and then refuses us (it does not trust our
            // certificate, or we are revoked) is redialed with a growing delay.
            if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == addr) {
                peer.name = Some(neighbour.clone());
                peer.connected = true;
                peer.next_dial_at = None;
            }
        }
        let mut resync = false;
        if let Some(n) = self.neighbours.get_mut(&neighbour) {
            if n.link_open {
                // A new connection while the old one looked open: the neighbour restarted
                // (or redialed) before its silence was noticed, and a restarted node holds
                // none of our database. `neighbour_alive` will not run again for a
                // neighbour already up, so the database is offered here.
                resync = n.state == NeighbourState::Up;
            } else {
                n.link_open = true;
                n.heard(now);
                if n.state == NeighbourState::Down {
                    n.state = NeighbourState::Init;
                }
            }
        } else {
            if self.neighbours.len() >= self.config.neighbours_max && !self.evict_down_neighbour() {
                return false;
            }
            self.neighbours
                .insert(neighbour.clone(), Neighbour::new(neighbour.clone(), now));
        }
        if resync {
            self.sync_database(now, &neighbour, true);
        }
        self.send_probe(now, &neighbour);
        true
    }

    /// The link to `neighbour` closed.
    pub fn handle_link_down(&mut self, now: Instant, neighbour: &NodeName) {
        if let Some(n) = self.neighbours.get_mut(neighbour) {
            n.link_open = false;
        }
        let max = Duration::from_millis(self.config.dial_backoff_max_ms);
        for peer in self
            .peers
            .iter_mut()
            .filter(|p| p.name.as_ref() == Some(neighbour) && p.connected)
        {
            peer.connected = false;
            peer.next_dial_at = Some(now + peer.backoff);
            peer.backoff = (peer.backoff * 2).min(max);
        }
        self.run_healing(now);
    }

    /// Dialing `addr` (after [`Event::Dial`]) failed; it is retried with backoff.
    pub fn handle_dial_failed(&mut self, now: Instant, addr: SocketAddr) {
        self.learnt_dials.remove(&addr);
        let jitter = self.rng.unit();
        let max = Duration::from_millis(self.config.dial_backoff_max_ms);
        if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == addr) {
            peer.connected = false;
            peer.next_dial_at = Some(now + peer.backoff.mul_f64(0.5 + jitter));
            peer.backoff = (peer.backoff * 2).min(max);
        }
    }

    /// Bytes arrived from `from` over its authenticated link.
    pub fn handle_datagram(&mut self, now: Instant, from: &NodeName, bytes: &[u8]) {
        match Message::decode(bytes) {
            Ok(message) => self.handle_message(now, from, message),
            Err(error) => {
                self.stats.frames_received += 1;
                self.count_drop(wire_drop_reason(&error));
            }
        }
    }

    /// A decoded message arrived from `from` (the twin may skip encoding; the daemon
    /// goes through [`Node::handle_datagram`]).
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, message: Message) {
        self.stats.frames_received += 1;
        if self.revocations.contains(from) {
            return self.count_drop(DropReason::Revoked);
        }
        let Some(n) = self.neighbours.get_mut(from) else {
            self.count_drop(DropReason::NotNeighbour);
            return;
        };
        n.heard(now);
        let revived =
            n.link_open && n.state != NeighbourState::Up && n.state != NeighbourState::Damped;
        match message {
            Message::Probe { seq, sent_us } => {
                self.transmit(
                    Destination::Neighbour(from.clone()),
                    Message::ProbeAck {
                        seq,
                        echo_us: sent_us,
                    },
                );
            }
            Message::ProbeAck { seq, echo_us } => {
                n.probe_acked(seq, Instant::from_micros(echo_us), now);
            }
            Message::LsUpdate { lsas } => {
                for (lifetime_ms, lsa) in lsas {
                    self.receive_lsa(now, from, lifetime_ms, lsa);
                }
            }
            Message::LsAck { acks } => {
                for (origin, sequence) in acks {
                    self.receive_ack(from, &origin, sequence);
                }
            }
            Message::Data(data) => self.receive_data(now, data),
            Message::Beacon { .. } => self.count_drop(DropReason::Malformed),
            Message::Revocations { items } => {
                for item in items {
                    self.receive_revocation(now, from, item);
                }
            }
            Message::Addresses { records } => {
                for record in records {
                    self.receive_addresses(from, record);
                }
            }
            Message::RevocationDigest {
                count,
                digest,
                reply_wanted,
            } => {
                n.revocation_digest = Some((count, digest));
                if (count, digest) != self.revocation_digest() {
                    self.send_revocations(from);
                    self.arm_revocation_resync(now);
                }
                if reply_wanted {
                    self.send_revocation_digest(from, false);
                }
            }
        }
        if revived {
            self.neighbour_alive(now, from);
        }
        self.advertise_if_changed(now, from);
    }

    /// Originate when `name` entered or left the advertisement (its first answered probe,
    /// or a withdrawal or return for its loss).
    fn advertise_if_changed(&mut self, now: Instant, name: &NodeName) {
        self.refresh_cost_stale(name);
        let advertisable = self.neighbours.get(name).is_some_and(|n| n.advertisable());
        if advertisable != self.advertised.contains_key(name) {
            self.originate(now);
        }
    }

    /// A LAN discovery beacon arrived from `from` (UDP source address).
    pub fn handle_beacon(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let (name, port) = match Message::decode(bytes) {
            Ok(Message::Beacon { name, port }) => (name, port),
            Ok(_) => return self.count_drop(DropReason::Malformed),
            Err(error) => return self.count_drop(wire_drop_reason(&error)),
        };
        // Only the smaller name dials, so two nodes that hear each other open one link.
        if name <= self.name || self.neighbours.get(&name).is_some_and(|n| n.link_open) {
            return;
        }
        let addr = SocketAddr::new(from.ip(), port);
        if !self
            .peers
            .iter()
            .any(|p| p.addr == addr || p.name.as_ref() == Some(&name))
        {
            self.add_peer(now, addr);
        }
    }

    /// State transfer: install the advertisements of `snapshot` that are newer than the
    /// ones held, each through the checks a flooded one passes (well-formed content,
    /// signature verified against its credential; failures are counted as drops), then
    /// compute routes at once. This node's own advertisement in the snapshot is ignored:
    /// its own is authoritative.
    ///
    /// Nothing is flooded or acknowledged: the snapshot did not come from a neighbour,
    /// and whoever hands it out hands it to every node. The digital twin uses it to start
    /// a large mesh from the advertisements its nodes originated (see `x0tta6bl4-twin`);
    /// the daemon does not. Advertisements installed so get the full `lsa_lifetime_ms`.
    pub fn handle_link_state_snapshot(&mut self, now: Instant, snapshot: &LinkStateSnapshot) {
        let expires_at = now + Duration::from_millis(self.config.lsa_lifetime_ms);
        let mut refused = Vec::new();
        let auth = self.auth.as_ref();
        let revocations = &self.revocations;
        let outcomes = self
            .lsdb
            .install_snapshot(snapshot, &self.name, expires_at, |lsa| {
                let admitted = if revocations.contains(&lsa.lsa.origin) {
                    Err(DropReason::Revoked)
                } else {
                    admit(auth, lsa)
                };
                admitted.map_err(|reason| refused.push(reason)).is_ok()
            });
        for reason in refused {
            self.count_drop(reason);
        }
        for outcome in outcomes {
            match outcome {
                InstallOutcome::Installed => self.stats.lsa_installed += 1,
                InstallOutcome::Full => self.count_drop(DropReason::DatabaseFull),
                InstallOutcome::Duplicate | InstallOutcome::Stale(_) => {}
            }
        }
        self.run_spf();
    }

    /// Time passed: run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_probe_at {
            self.probe_all(now);
        }
        self.probe_suspects(now);
        self.run_healing(now);
        self.retransmit_due(now);
        self.dial_due(now);
        if let Some((port, at)) = self.beacon {
            if now >= at {
                self.transmit(
                    Destination::Beacon,
                    Message::Beacon {
                        name: self.name.clone(),
                        port,
                    },
                );
                let interval = Duration::from_millis(self.config.beacon_interval_ms);
                self.beacon = Some((port, now + interval.mul_f64(0.8 + 0.4 * self.rng.unit())));
            }
        }
        if self.ack_due.is_some_and(|at| now >= at) {
            self.flush_acks();
        }
        let held_back = self.origination_due.is_some_and(|at| now >= at);
        if held_back || now >= self.next_refresh_at || self.cost_update_due(now) {
            self.originate(now);
        }
        if now >= self.next_age_check_at {
            self.age_out(now);
        }
        if now >= self.next_revocation_sync_at {
            self.sync_revocations_all(now);
        }
        if self.revocation_resync_at.is_some_and(|at| now >= at) {
            self.resync_revocations(now);
        }
        if self.spf_at.is_some_and(|at| now >= at) {
            self.run_spf();
        }
    }

    // ----- outputs -----

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.transmits.is_empty() {
            self.flush_staged();
        }
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadline = self
            .next_refresh_at
            .min(self.next_age_check_at)
            .min(self.next_revocation_sync_at);
        let mut earliest = |t: Instant| deadline = deadline.min(t);
        if self.neighbours.values().any(|n| n.link_open) {
            earliest(self.next_probe_at);
        }
        let detection = self.detection();
        for n in self.neighbours.values() {
            if n.link_open && n.state != NeighbourState::Down {
                let dead = n.dead_interval(&detection);
                earliest(n.last_heard + dead + Duration::from_micros(1));
            }
            if let Some(t) = n.suspect_probe_at(&detection) {
                earliest(t);
            }
            // Only a damped neighbour waits for its damping to end: a neighbour that went
            // down while damped keeps `damped_until` (it is damped again if it returns
            // before then), and arming a timer for a past instant would spin the driver.
            if let Some(t) = n.damped_until.filter(|_| n.state == NeighbourState::Damped) {
                earliest(t);
            }
            if let Some(t) = n.retransmit_due {
                earliest(t);
            }
        }
        for t in self.peers.iter().filter_map(|p| p.next_dial_at) {
            earliest(t);
        }
        if let Some((_, t)) = self.beacon {
            earliest(t);
        }
        if let Some(t) = self.spf_at {
            earliest(t);
        }
        if let Some(t) = self.revocation_resync_at {
            earliest(t);
        }
        if let Some(t) = self.origination_due {
            earliest(t);
        }
        if let Some(t) = self.ack_due {
            earliest(t);
        }
        if self.advertised_costs_stale() {
            earliest(
                self.last_origination + Duration::from_millis(self.config.cost_update_interval_ms),
            );
        }
        Some(deadline)
    }

    // ----- internals: queues and counters -----

    fn transmit(&mut self, destination: Destination, message: Message) {
        if self.transmits.len() >= self.config.transmit_queue_max {
            self.count_drop(DropReason::TransmitQueueFull);
            return;
        }
        let len = message.encoded_len() as u64;
        if let Message::LsUpdate { lsas } = &message {
            self.stats.lsa_sent += lsas.len() as u64;
            self.stats.lsa_bytes_sent += len;
        }
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += len;
        self.transmits.push_back(Transmit {
            destination,
            message,
        });
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= self.config.event_queue_max {
            self.events.pop_front();
            self.count_drop(DropReason::EventQueueFull);
        }
        self.events.push_back(event);
    }

    fn count_drop(&mut self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.stats.drops[i] += 1;
        }
    }

    fn evict_down_neighbour(&mut self) -> bool {
        let victim = self
            .neighbours
            .values()
            .find(|n| !n.link_open && n.state == NeighbourState::Down)
            .map(|n| n.name.clone());
        match victim {
            Some(name) => {
                self.neighbours.remove(&name);
                self.retransmits.remove(&name);
                self.stale_costs.remove(&name);
                true
            }
            None => false,
        }
    }

    // ----- probing -----

    fn probe_all(&mut self, now: Instant) {
        let targets: Vec<NodeName> = self
            .neighbours
            .values()
            .filter(|n| n.link_open)
            .map(|n| n.name.clone())
            .collect();
        for name in &targets {
            self.send_probe(now, name);
        }
        // ±10 % jitter keeps the probes of many nodes from synchronising.
        let interval = self
            .config
            .probe_interval()
            .mul_f64(0.9 + 0.2 * self.rng.unit());
        self.next_probe_at = now + interval;
    }

    /// Probe again every suspected neighbour whose last probe's answer is overdue
    /// (`suspect_probe_interval_ms`).
    fn probe_suspects(&mut self, now: Instant) {
        let detection = self.detection();
        if detection.suspect_interval.is_zero() {
            return;
        }
        let due: Vec<NodeName> = self
            .neighbours
            .values()
            .filter(|n| n.suspect_probe_at(&detection).is_some_and(|at| now >= at))
            .map(|n| n.name.clone())
            .collect();
        self.stats.suspect_probes += due.len() as u64;
        for name in &due {
            self.send_probe(now, name);
        }
    }

    /// The settings that decide when a neighbour is down.
    fn detection(&self) -> Detection {
        Detection {
            probe_interval: self.config.probe_interval(),
            misses_max: self.config.probe_misses_max,
            adaptive: self.config.adaptive_timeout,
            suspect_interval: Duration::from_millis(self.config.suspect_probe_interval_ms),
        }
    }

    fn send_probe(&mut self, now: Instant, name: &NodeName) {
        let Some(n) = self.neighbours.get_mut(name) else {
            return;
        };
        let seq = n.next_probe_seq();
        n.probe_sent(seq);
        n.probing(now);
        self.transmit(
            Destination::Neighbour(name.clone()),
            Message::Probe {
                seq,
                sent_us: now.as_micros(),
            },
        );
        // The probe it displaced may have been the loss that withdraws the link.
        self.advertise_if_changed(now, name);
    }

    fn neighbour_alive(&mut self, now: Instant, name: &NodeName) {
        let Some(n) = self.neighbours.get_mut(name) else {
            return;
        };
        if n.damped_until.is_some_and(|until| now < until) {
            n.state = NeighbourState::Damped;
            return;
        }
        n.damped_until = None;
        n.state = NeighbourState::Up;
        let backoff_min = Duration::from_millis(self.config.dial_backoff_min_ms);
        for peer in self
            .peers
            .iter_mut()
            .filter(|p| p.name.as_ref() == Some(name))
        {
            peer.backoff = backoff_min;
        }
        self.emit(Event::NeighbourUp { name: name.clone() });
        self.sync_database(now, name, false);
    }

    // ----- the healing loop -----

    fn observe(&self, n: &Neighbour, now: Instant) -> Observation {
        Observation {
            state: n.state,
            silent_for: now.saturating_since(n.last_heard),
            dead_interval: n.dead_interval(&self.detection()),
            link_open: n.link_open,
            loss: n.loss,
            rtt: n.srtt().map(|_| n.base_rtt()),
            degraded: n.degraded,
            flaps_in_window: n.down_times.len(),
            damped_until: n.damped_until,
        }
    }

    /// Monitor → analyse → plan → execute over every neighbour.
    fn run_healing(&mut self, now: Instant) {
        let window = Duration::from_millis(self.config.healing.flap_window_ms);
        let mut plans = Vec::new();
        for n in self.neighbours.values_mut() {
            n.flaps_within(now, window);
        }
        for n in self.neighbours.values() {
            let observation = self.observe(n, now);
            if let Some(symptom) = heal::analyse(&observation, now, &self.config.healing) {
                let decision =
                    heal::plan(&n.name, &symptom, n.damp_count, now, &self.config.healing);
                plans.push((symptom, decision));
            }
        }
        self.apply_plans(now, plans);
    }

    /// Execute decisions, count and emit them, and originate what they changed.
    fn apply_plans(&mut self, now: Instant, plans: Vec<(Symptom, Decision)>) {
        let mut changed = false;
        let mut urgent = false;
        for (symptom, decision) in plans {
            let withdraws = matches!(decision.kind, DecisionKind::Withdraw | DecisionKind::Damp);
            let did_change = self.execute(now, &symptom, &decision);
            changed |= did_change;
            urgent |= did_change && withdraws;
            let kind = DecisionKind::ALL
                .iter()
                .position(|k| *k == decision.kind)
                .unwrap_or(0);
            self.stats.decisions[kind] += 1;
            self.emit(Event::Healing(decision));
        }
        if urgent {
            // Bad news travels at once: no pacing, and routes are recomputed now rather
            // than after the usual delay, so nothing is forwarded to a lost neighbour.
            self.originate_now(now);
            self.run_spf();
        } else if changed {
            self.originate(now);
        }
    }

    /// Apply one decision. Returns whether the advertisement must change: the link was in
    /// it or belongs in it now (a decision about a link never advertised, withdrawn for
    /// its loss or not yet answered, changes nothing others know).
    fn execute(&mut self, now: Instant, symptom: &Symptom, decision: &Decision) -> bool {
        let healing = self.config.healing.clone();
        let Some(n) = self.neighbours.get_mut(&decision.neighbour) else {
            return false;
        };
        let was_advertised = self.advertised.contains_key(&n.name);
        match symptom {
            Symptom::Dead(reason) => {
                n.state = NeighbourState::Down;
                n.record_down(now);
                n.degraded = false;
                n.revocation_digest = None;
                self.stats.neighbour_down += 1;
                let name = n.name.clone();
                self.retransmits.remove(&name);
                self.emit(Event::NeighbourDown {
                    name,
                    reason: reason.clone(),
                });
            }
            Symptom::Degraded { .. } => n.degraded = true,
            Symptom::Recovered { .. } => n.degraded = false,
            Symptom::Flapping { .. } => {
                n.damped_until = Some(now + heal::damp_period(n.damp_count, &healing));
                n.damp_count = n.damp_count.saturating_add(1);
                n.state = NeighbourState::Damped;
                n.down_times.clear();
            }
            Symptom::DampingOver => {
                n.damped_until = None;
                n.state = NeighbourState::Up;
                let name = n.name.clone();
                self.emit(Event::NeighbourUp { name: name.clone() });
                self.sync_database(now, &name, false);
            }
        }
        self.refresh_cost_stale(&decision.neighbour);
        was_advertised
            || self
                .neighbours
                .get(&decision.neighbour)
                .is_some_and(|n| n.advertisable())
    }

    // ----- revocations -----

    fn receive_revocation(&mut self, now: Instant, from: &NodeName, revocation: Arc<[u8]>) {
        match self.auth.verify_revocation(&revocation) {
            Ok(target) => {
                self.install_revocation(now, Some(from), target, revocation);
            }
            Err(_) => self.count_drop(DropReason::BadRevocation),
        }
    }

    /// Keep a verified revocation; if it is news, act on it and flood it to every up
    /// neighbour but `from`.
    fn install_revocation(
        &mut self,
        now: Instant,
        from: Option<&NodeName>,
        target: NodeName,
        revocation: Arc<[u8]>,
    ) -> RevokeOutcome {
        let outcome = match self.revocations.insert(target.clone(), revocation.clone()) {
            Inserted::Known => return RevokeOutcome::Known(target),
            Inserted::Full => {
                self.count_drop(DropReason::DatabaseFull);
                return RevokeOutcome::Full(target);
            }
            // Flooded on, so every node converges on the same canonical copy.
            Inserted::Replaced => {
                self.arm_revocation_resync(now);
                RevokeOutcome::Known(target.clone())
            }
            Inserted::New => {
                self.stats.revocations_installed += 1;
                self.arm_revocation_resync(now);
                self.emit(Event::Revoked {
                    node: target.clone(),
                    revocation: revocation.clone(),
                });
                self.cut_off(now, &target);
                RevokeOutcome::New(target)
            }
        };
        self.send_to_up_neighbours(
            from,
            &Message::Revocations {
                items: vec![revocation.clone()],
            },
        );
        outcome
    }

    /// Act on a new revocation of `node`: take it down as a neighbour, stop dialing it,
    /// forget its advertisement (links to it stop counting: a link needs both ends'
    /// advertisements) and recompute routes at once.
    fn cut_off(&mut self, now: Instant, node: &NodeName) {
        if *node == self.name {
            return; // we were revoked: our neighbours cut us off
        }
        for peer in self
            .peers
            .iter_mut()
            .filter(|p| p.name.as_ref() == Some(node))
        {
            peer.next_dial_at = None;
        }
        self.addresses.remove(node);
        let alive = self.neighbours.get(node).is_some_and(|n| {
            matches!(
                n.state,
                NeighbourState::Init | NeighbourState::Up | NeighbourState::Damped
            )
        });
        if alive {
            let symptom = Symptom::Dead(DownReason::Revoked);
            let decision = heal::plan(node, &symptom, 0, now, &self.config.healing);
            self.apply_plans(now, vec![(symptom, decision)]);
        }
        if let Some(n) = self.neighbours.get_mut(node) {
            n.link_open = false;
        }
        self.retransmits.remove(node);
        if self.lsdb.remove(node).is_some() {
            for list in self.retransmits.values_mut() {
                list.remove(node);
            }
            self.run_spf();
        }
    }

    /// Every revocation held, to one neighbour, in as few frames as the limits allow.
    fn send_revocations(&mut self, to: &NodeName) {
        let all: Vec<Arc<[u8]>> = self.revocations.iter().map(|(_, r)| r.clone()).collect();
        let mut items = Vec::new();
        let mut bytes = 0;
        for revocation in all {
            let full = items.len() == wire::REVOCATIONS_PER_FRAME_MAX
                || bytes + revocation.len() > REVOCATION_FRAME_BYTES_MAX;
            if !items.is_empty() && full {
                let items = std::mem::take(&mut items);
                self.transmit(
                    Destination::Neighbour(to.clone()),
                    Message::Revocations { items },
                );
                bytes = 0;
            }
            bytes += revocation.len();
            items.push(revocation);
        }
        if !items.is_empty() {
            self.transmit(
                Destination::Neighbour(to.clone()),
                Message::Revocations { items },
            );
        }
    }

    fn revocation_digest(&self) -> (u32, u64) {
        (self.revocations.len() as u32, self.revocations.digest())
    }

    fn send_revocation_digest(&mut self, to: &NodeName, reply_wanted: bool) {
        let (count, digest) = self.revocation_digest();
        self.stats.revocation_digests_sent += 1;
        self.transmit(
            Destination::Neighbour(to.clone()),
            Message::RevocationDigest {
                count,
                digest,
                reply_wanted,
            },
        );
    }

    /// Up neighbours whose last digest differs from ours (or who sent none yet).
    fn out_of_sync_neighbours(&self) -> Vec<NodeName> {
        let ours = Some(self.revocation_digest());
        self.neighbours
            .values()
            .filter(|n| n.state == NeighbourState::Up && n.revocation_digest != ours)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Keep exchanging digests with out-of-sync neighbours until they agree (digests and
    /// revocations may be lost on the way), every `flood_retransmit_ms`, doubling.
    fn arm_revocation_resync(&mut self, now: Instant) {
        if self.revocation_resync_at.is_none() {
            self.revocation_resyncs = 0;
            self.revocation_resync_at =
                Some(now + Duration::from_millis(self.config.flood_retransmit_ms));
        }
    }

    fn resync_revocations(&mut self, now: Instant) {
        let lagging = self.out_of_sync_neighbours();
        if lagging.is_empty() || self.revocation_resyncs >= REVOCATION_RESYNCS_MAX {
            // In agreement, or given up until the periodic round.
            self.revocation_resync_at = None;
            return;
        }
        for name in &lagging {
            self.send_revocation_digest(name, true);
        }
        self.revocation_resyncs += 1;
        let rto = Duration::from_millis(self.config.flood_retransmit_ms);
        self.revocation_resync_at = Some(now + rto * (1u32 << self.revocation_resyncs.min(2)));
    }

    /// The periodic anti-entropy round: a digest to every up neighbour.
    fn sync_revocations_all(&mut self, now: Instant) {
        let interval = Duration::from_millis(self.config.revocation_sync_ms);
        self.next_revocation_sync_at = now + interval.mul_f64(0.9 + 0.2 * self.rng.unit());
        let up: Vec<NodeName> = self
            .neighbours
            .values()
            .filter(|n| n.state == NeighbourState::Up)
            .map(|n| n.name.clone())
            .collect();
        for name in up {
            self.send_revocation_digest(&name, true);
        }
    }

    // ----- link-state origination and flooding -----

    fn current_links(&self) -> Vec<LsaLink> {
        // BTreeMap iteration keeps links sorted by neighbour name, as the wire requires.
        self.neighbours
            .values()
            .filter(|n| n.advertisable())
            .map(|n| LsaLink {
                neighbour: n.name.clone(),
                cost: n.cost_for(self.config.link_cost),
            })
            .collect()
    }

    /// Whether any link's cost moved far enough from what we advertised to be worth a
    /// flood: by `cost_change_percent`, by at least [`COST_CHANGE_MIN`] (half a hop: on a
    /// link of a few hundred µs, 30 % is a few tens of µs of noise), and still so once
    /// each estimate that moved only within its noise is put back to its advertised value
    /// (see [`Neighbour::loss_moved`] and [`Neighbour::rtt_moved`]): on a radio link that
    /// loses half its probes, 30 % of the cost is one standard deviation of the loss
    /// estimate, and Ulm's nodes flooded a new cost every three seconds each. A cost
    /// that moved for another reason (degraded, the predictor's risk) is news as it is.
    fn advertised_costs_stale(&self) -> bool {
        !self.stale_costs.is_empty()
    }

    /// Whether the link to `n` is advertised at a cost that is stale (see
    /// [`Self::advertised_costs_stale`]).
    fn cost_stale(&self, n: &Neighbour) -> bool {
        let percent = u64::from(self.config.cost_change_percent);
        let metric = self.config.link_cost;
        let moved = |old: u32, new: u32| {
            let change = u64::from(new).abs_diff(u64::from(old));
            change >= COST_CHANGE_MIN && change * 100 >= percent * u64::from(old.max(1))
        };
        n.advertisable()
            && self.advertised.get(&n.name).is_some_and(|then| {
                let loss = if n.loss_moved(then.loss) {
                    n.loss
                } else {
                    then.loss
                };
                let base_rtt_us = if n.rtt_moved(then.base_rtt_us) {
                    n.base_rtt_us()
                } else {
                    then.base_rtt_us
                };
                moved(then.cost, n.cost_for(metric))
                    && moved(then.cost, n.cost_at(metric, loss, base_rtt_us))
            })
    }

    /// Re-judge the link to `name` after its estimates or state changed.
    fn refresh_cost_stale(&mut self, name: &NodeName) {
        match self.neighbours.get(name).map(|n| self.cost_stale(n)) {
            Some(true) => {
                if !self.stale_costs.contains(name) {
                    self.stale_costs.insert(name.clone());
                }
            }
            _ => {
                self.stale_costs.remove(name);
            }
        }
    }

    fn cost_update_due(&self, now: Instant) -> bool {
        now >= self.last_origination + Duration::from_millis(self.config.cost_update_interval_ms)
            && self.advertised_costs_stale()
    }

    /// Originate now, or as soon as `lsa_min_interval_ms` since the last origination
    /// allows (changes in the meantime are folded into that one advertisement).
    fn originate(&mut self, now: Instant) {
        let earliest =
            self.last_origination + Duration::from_millis(self.config.lsa_min_interval_ms);
        if now >= earliest {
            self.originate_now(now);
        } else if self.origination_due.is_none() {
            self.origination_due = Some(earliest);
        }
    }

    /// Originate, sign, install and flood a new advertisement of this node's links.
    fn originate_now(&mut self, now: Instant) {
        self.origination_due = None;
        if let Some(own) = self.addresses.get(&self.name) {
            // Our address record is re-signed once a refresh interval has passed (so it
            // floods past every node holding the old one: a node that missed it, as
            // records ride datagrams, gets it this time) and as soon as our credential
            // changed (a renewed SVID: the old one expires, and with it the record's
            // signature).
            let refresh = Duration::from_millis(self.config.lsa_refresh_ms);
            let renewed = *own.credential != *self.auth.credential();
            if renewed || now >= self.address_signed_at + refresh {
                let addresses = own.addresses.clone();
                self.originate_addresses(now, addresses);
            }
        }
        let links = self.current_links();
        self.advertised = links
            .iter()
            .map(|l| {
                let n = self.neighbours.get(&l.neighbour);
                let then = Advertised {
                    cost: l.cost,
                    loss: n.map_or(0.0, |n| n.loss),
                    base_rtt_us: n.map_or(0, |n| n.base_rtt_us()),
                };
                (l.neighbour.clone(), then)
            })
            .collect();
        // Every advertised link is now at its current cost.
        self.stale_costs.clear();
        self.sequence += 1;
        let lsa = Lsa {
            origin: self.name.clone(),
            sequence: self.sequence,
            links,
        };
        let signature = self.auth.sign(&lsa.signed_bytes());
        let signed = Arc::new(SignedLsa {
            lsa,
            credential: Arc::from(self.auth.credential()),
            signature,
        });
        let expires_at = now + Duration::from_millis(self.config.lsa_lifetime_ms);
        let outcome = self.lsdb.install(signed.clone(), expires_at);
        debug_assert_eq!(outcome, InstallOutcome::Installed);
        self.stats.lsa_originated += 1;
        self.last_origination = now;
        self.next_refresh_at = now + Duration::from_millis(self.config.lsa_refresh_ms);
        self.flood(now, &signed, None);
        self.schedule_spf(now);
    }

    /// Send `lsa` to every up neighbour except `except`, tracking acknowledgements.
    fn flood(&mut self, now: Instant, lsa: &Arc<SignedLsa>, except: Option<&NodeName>) {
        let Some(entry) = self.lsdb.get(&lsa.lsa.origin) else {
            return;
        };
        let lifetime_ms = remaining_ms(now, entry.expires_at);
        for target in self.up_neighbours(except) {
            self.send_lsa(now, &target, lsa, lifetime_ms);
        }
    }

    /// Send `lsa`, held with `lifetime_ms` left, to `target` (staged, and retransmitted
    /// until acknowledged).
    fn send_lsa(
        &mut self,
        now: Instant,
        target: &NodeName,
        lsa: &Arc<SignedLsa>,
        lifetime_ms: u32,
    ) {
        let next_at = now + self.flood_rto(target);
        let list = self.retransmits.entry(target.clone()).or_default();
        list.insert(
            lsa.lsa.origin.clone(),
            Retransmit {
                sequence: lsa.lsa.sequence,
                next_at,
                tries: 0,
            },
        );
        if let Some(n) = self.neighbours.get_mut(target) {
            n.retransmit_due = Some(n.retransmit_due.map_or(next_at, |t| t.min(next_at)));
        }
        self.staged_updates
            .entry(target.clone())
            .or_default()
            .push((lifetime_ms, lsa.clone()));
    }

    /// Turn staged advertisements and acknowledgements into as few frames as the
    /// per-frame limits allow.
    fn flush_staged(&mut self) {
        for (target, lsas) in std::mem::take(&mut self.staged_updates) {
            let frames = split_frames(lsas, wire::UPDATE_LSAS_MAX, UPDATE_BYTES_MAX, |(_, lsa)| {
                4 + wire::signed_lsa_len(lsa)
            });
            for lsas in frames {
                self.transmit(
                    Destination::Neighbour(target.clone()),
                    Message::LsUpdate { lsas },
                );
            }
        }
        if self.ack_due.is_none() {
            self.flush_acks();
        }
    }

    fn flush_acks(&mut self) {
        self.ack_due = None;
        for (target, acks) in std::mem::take(&mut self.staged_acks) {
            for chunk in acks.chunks(wire::ACKS_MAX) {
                self.transmit(
                    Destination::Neighbour(target.clone()),
                    Message::LsAck {
                        acks: chunk.to_vec(),
                    },
                );
            }
        }
    }

    /// Offer `name` every advertisement held; our own too when `with_own` (otherwise the
    /// caller originates a fresh one right after, so a soon-outdated copy is not flooded
    /// through the whole mesh first).
    fn sync_database(&mut self, now: Instant, name: &NodeName, with_own: bool) {
        let mut all: Vec<(u32, Arc<SignedLsa>)> = self
            .lsdb
            .iter()
            .filter(|(origin, _)| with_own || **origin != self.name)
            .map(|(_, e)| (remaining_ms(now, e.expires_at), e.lsa.clone()))
            .collect();
        all.sort_by(|a, b| a.1.lsa.origin.cmp(&b.1.lsa.origin));
        for (lifetime_ms, lsa) in &all {
            self.send_lsa(now, name, lsa, *lifetime_ms);
        }
        self.send_address_records(name);
        self.send_revocation_digest(name, true);
        self.arm_revocation_resync(now);
    }

    // ----- address records -----

    /// Sign, keep and flood a new record of this node's `addresses`.
    fn originate_addresses(&mut self, now: Instant, addresses: Vec<SocketAddr>) {
        self.address_sequence += 1;
        self.address_signed_at = now;
        let signed = AddressRecord::signed_bytes(&self.name, self.address_sequence, &addresses);
        let record = Arc::new(AddressRecord {
            origin: self.name.clone(),
            sequence: self.address_sequence,
            addresses,
            credential: Arc::from(self.auth.credential()),
            signature: self.auth.sign(&signed),
        });
        self.addresses.remove(&self.name);
        let offered = self.addresses.offer(record.clone(), usize::MAX);
        debug_assert_eq!(offered, Offered::Kept);
        self.flood_addresses(&record, None);
    }

    /// Send `record` to every up neighbour but `except`.
    fn flood_addresses(&mut self, record: &Arc<AddressRecord>, except: Option<&NodeName>) {
        self.send_to_up_neighbours(
            except,
            &Message::Addresses {
                records: vec![record.clone()],
            },
        );
    }

    /// Send `message` to every neighbour that is up, but `except`.
    fn send_to_up_neighbours(&mut self, except: Option<&NodeName>, message: &Message) {
        for target in self.up_neighbours(except) {
            self.transmit(Destination::Neighbour(target), message.clone());
        }
    }

    /// The neighbours that are up, but `except`: where floods go.
    fn up_neighbours(&self, except: Option<&NodeName>) -> Vec<NodeName> {
        self.neighbours
            .values()
            .filter(|n| n.state == NeighbourState::Up && Some(&n.name) != except)
            .map(|n| n.name.clone())
            .collect()
    }

    /// A record from neighbour `from`: kept and flooded on if it is news and verifies.
    /// Sequence numbers settle duplicates before any signature is checked.
    fn receive_addresses(&mut self, from: &NodeName, record: Arc<AddressRecord>) {
        if record.origin == self.name || !self.addresses.is_news(&record.origin, record.sequence) {
            return;
        }
        if self.revocations.contains(&record.origin) {
            return self.count_drop(DropReason::Revoked);
        }
        if !AddressRecord::well_formed(&record.addresses) {
            return self.count_drop(DropReason::BadAdvertisement);
        }
        let signed =
            AddressRecord::signed_bytes(&record.origin, record.sequence, &record.addresses);
        if self
            .auth
            .verify(
                &record.origin,
                &record.credential,
                &signed,
                &record.signature,
            )
            .is_err()
        {
            return self.count_drop(DropReason::BadSignature);
        }
        match self
            .addresses
            .offer(record.clone(), self.config.lsdb_entries_max)
        {
            Offered::Kept => {
                self.stats.address_records_installed += 1;
                self.flood_addresses(&record, Some(from));
            }
            Offered::Full => self.count_drop(DropReason::DatabaseFull),
            Offered::Known => {}
        }
    }

    /// Every address record held of a node we route to (our own included), to one
    /// neighbour, in as few frames as the limits allow. Records of nodes without a
    /// route (gone, most likely) are kept but not handed on: their credential may have
    /// expired since, and they come back with a fresh record.
    fn send_address_records(&mut self, to: &NodeName) {
        let all: Vec<Arc<AddressRecord>> = self
            .addresses
            .iter()
            .filter(|r| r.origin == self.name || self.routes.next_hop(&r.origin).is_some())
            .cloned()
            .collect();
        let frames = split_frames(
            all,
            wire::ADDRESS_RECORDS_PER_FRAME_MAX,
            ADDRESS_FRAME_BYTES_MAX,
            |record| record.credential.len() + record.signature.len() + 64,
        );
        for records in frames {
            self.transmit(
                Destination::Neighbour(to.clone()),
                Message::Addresses { records },
            );
        }
    }

    fn retransmit_due(&mut self, now: Instant) {
        let due: Vec<NodeName> = self
            .neighbours
            .values()
            .filter(|n| n.retransmit_due.is_some_and(|t| now >= t))
            .map(|n| n.name.clone())
            .collect();
        for name in due {
            self.retransmit_to(now, &name);
        }
    }

    /// How long to wait for `target`'s acknowledgement before the first retransmission:
    /// `flood_retransmit_ms`, or when longer the link's RTT plus four times its variation
    /// (at least 1 ms) plus the acknowledgement delay, as QUIC's probe timeout (RFC 9002
    /// 6.2.1; RFC 6298 without the delay would fire just before an acknowledgement held
    /// `ack_delay_ms` on a steady link). A fixed 100 ms on a link whose
    /// answers take a second (a busy gateway with 70 neighbours in the lab) sent every
    /// advertisement three or four times before its acknowledgement could arrive, and the
    /// copies kept the gateway busy: 112,411 retransmissions in its first 48 s.
    fn flood_rto(&self, target: &NodeName) -> Duration {
        let fixed = Duration::from_millis(self.config.flood_retransmit_ms);
        let measured = self
            .neighbours
            .get(target)
            .and_then(|n| Some(n.srtt()? + (n.rttvar() * 4).max(Duration::from_millis(1))))
            .map(|rtt| rtt + Duration::from_millis(self.config.ack_delay_ms));
        measured.map_or(fixed, |rtt| fixed.max(rtt))
    }

    fn retransmit_to(&mut self, now: Instant, name: &NodeName) {
        let rto = self.flood_rto(name);
        let tries_max = self.config.flood_retransmits_max;
        let mut resend = Vec::new();
        let mut exhausted = 0u64;
        let mut next_due: Option<Instant> = None;
        if let Some(list) = self.retransmits.get_mut(name) {
            list.retain(|origin, r| {
                if now < r.next_at {
                    next_due = Some(next_due.map_or(r.next_at, |t| t.min(r.next_at)));
                    return true;
                }
                if r.tries >= tries_max {
                    exhausted += 1;
                    return false;
                }
                r.tries += 1;
                r.next_at = now + rto * (1u32 << r.tries.min(RETRANSMIT_BACKOFF_DOUBLINGS_MAX));
                next_due = Some(next_due.map_or(r.next_at, |t| t.min(r.next_at)));
                resend.push((origin.clone(), r.sequence));
                true
            });
        }
        if let Some(n) = self.neighbours.get_mut(name) {
            n.retransmit_due = next_due;
        }
        for _ in 0..exhausted {
            self.count_drop(DropReason::RetransmitsExhausted);
        }
        for (origin, sequence) in resend {
            let Some(entry) = self.lsdb.get(&origin) else {
                continue;
            };
            if entry.lsa.lsa.sequence != sequence {
                continue;
            }
            let lsa = entry.lsa.clone();
            let lifetime_ms = u32::try_from(entry.expires_at.saturating_since(now).as_millis())
                .unwrap_or(u32::MAX);
            self.stats.lsa_retransmitted += 1;
            self.staged_updates
                .entry(name.clone())
                .or_default()
                .push((lifetime_ms, lsa));
        }
    }

    fn receive_ack(&mut self, from: &NodeName, origin: &NodeName, sequence: u64) {
        if let Some(list) = self.retransmits.get_mut(from) {
            if list.get(origin).is_some_and(|r| r.sequence <= sequence) {
                list.remove(origin);
                if list.is_empty() && list.capacity() > RETRANSMIT_CAPACITY_KEPT {
                    // A database sync fills the list with every origin once; give the
                    // memory back when it drains (the twin holds thousands of nodes).
                    list.shrink_to_fit();
                }
            }
        }
    }

    fn receive_lsa(
        &mut self,
        now: Instant,
        from: &NodeName,
        lifetime_ms: u32,
        lsa: Arc<SignedLsa>,
    ) {
        self.stats.lsa_received += 1;
        let origin = lsa.lsa.origin.clone();
        let sequence = lsa.lsa.sequence;
        if self.revocations.contains(&origin) && origin != self.name {
            // Acknowledged, so the sender stops retransmitting it, but never installed.
            self.stage_ack(now, from, &origin, sequence);
            return self.count_drop(DropReason::Revoked);
        }
        // Duplicates and stale copies are settled by sequence number alone: only an
        // advertisement that would change the database pays for signature verification.
        if origin != self.name {
            match self.lsdb.get(&origin) {
                Some(held) if held.lsa.lsa.sequence == sequence => {
                    self.stage_ack(now, from, &origin, sequence);
                    return self.receive_ack(from, &origin, sequence);
                }
                Some(held) if held.lsa.lsa.sequence > sequence => {
                    let (newer, lifetime_ms) =
                        (held.lsa.clone(), remaining_ms(now, held.expires_at));
                    self.count_drop(DropReason::StaleAdvertisement);
                    self.send_lsa(now, from, &newer, lifetime_ms);
                    return;
                }
                _ => {}
            }
        }
        if let Err(reason) = admit(self.auth.as_ref(), &lsa) {
            return self.count_drop(reason);
        }
        self.stage_ack(now, from, &origin, sequence);
        if origin == self.name {
            // An advertisement of a former incarnation of this node: outrank it.
            let ours = self.lsdb.get(&self.name).map(|e| e.lsa.clone());
            let differs = ours.is_none_or(|ours| ours.lsa != lsa.lsa);
            if sequence > self.sequence || (sequence == self.sequence && differs) {
                self.sequence = sequence;
                self.originate_now(now);
            }
            return;
        }
        let expires_at =
            now + Duration::from_millis(u64::from(lifetime_ms).min(self.config.lsa_lifetime_ms));
        match self.lsdb.install(lsa.clone(), expires_at) {
            InstallOutcome::Installed => {
                self.stats.lsa_installed += 1;
                self.receive_ack(from, &origin, sequence);
                self.flood(now, &lsa, Some(from));
                self.schedule_spf(now);
            }
            InstallOutcome::Full => self.count_drop(DropReason::DatabaseFull),
            InstallOutcome::Duplicate | InstallOutcome::Stale(_) => {
                debug_assert!(false, "duplicates and stale copies are handled above");
            }
        }
    }

    /// Acknowledgements wait `ack_delay_ms` so that one frame carries many of them.
    fn stage_ack(&mut self, now: Instant, to: &NodeName, origin: &NodeName, sequence: u64) {
        self.staged_acks
            .entry(to.clone())
            .or_default()
            .push((origin.clone(), sequence));
        if self.config.ack_delay_ms > 0 && self.ack_due.is_none() {
            self.ack_due = Some(now + Duration::from_millis(self.config.ack_delay_ms));
        }
    }

    fn age_out(&mut self, now: Instant) {
        self.next_age_check_at = now + AGE_CHECK_INTERVAL;
        let gone = self.lsdb.expire(now, &self.name);
        if !gone.is_empty() {
            self.stats.lsa_expired += gone.len() as u64;
            for list in self.retransmits.values_mut() {
                list.retain(|origin, _| !gone.contains(origin));
            }
            self.schedule_spf(now);
        }
        let (me, lsdb) = (&self.name, &self.lsdb);
        self.addresses
            .retain(|origin| origin == me || lsdb.get(origin).is_some());
    }

    // ----- routing and forwarding -----

    fn schedule_spf(&mut self, now: Instant) {
        if self.spf_at.is_none() {
            self.spf_at = Some(now + Duration::from_millis(self.config.spf_delay_ms));
        }
    }

    fn run_spf(&mut self) {
        self.spf_at = None;
        self.stats.spf_runs += 1;
        let changes = self.lsdb.take_changes();
        let changed = match update_routes(&self.name, &self.lsdb, &mut self.routes, &changes) {
            Some(mut changed) => {
                self.stats.spf_incremental += 1;
                if self.audit_due() {
                    changed += self.audit_routes();
                }
                changed
            }
            None => {
                let table = compute_routes(&self.name, &self.lsdb);
                let changed = table.changes_from(&self.routes);
                self.routes = table;
                changed
            }
        };
        if changed > 0 {
            self.stats.route_changes += changed as u64;
            let reachable = self.routes.len();
            self.emit(Event::RoutesChanged { changed, reachable });
        }
    }

    /// Whether the repaired table just computed is checked against a full computation:
    /// every one in debug builds (meshes up to 256 slots, which the tests and the fuzz
    /// use), one in [`ROUTE_AUDIT_EVERY`] in release builds.
    fn audit_due(&self) -> bool {
        if cfg!(debug_assertions) {
            self.lsdb.slot_count() <= 256
        } else {
            self.stats.spf_incremental.is_multiple_of(ROUTE_AUDIT_EVERY)
        }
    }

    /// Check the repaired table against a full computation; on a difference, count it,
    /// say so, adopt the full one and return the routes that changed by it.
    fn audit_routes(&mut self) -> usize {
        self.stats.route_audits += 1;
        let fresh = compute_routes(&self.name, &self.lsdb);
        if fresh == self.routes {
            return 0;
        }
        debug_assert!(false, "incremental routes differ from a full computation");
        self.stats.route_audit_mismatches += 1;
        let changed = fresh.changes_from(&self.routes);
        self.routes = fresh;
        changed
    }

    fn receive_data(&mut self, _now: Instant, mut data: Data) {
        // Only a node the mesh knows (its advertisement verified) may originate data.
        if self.revocations.contains(&data.source) {
            return self.count_drop(DropReason::Revoked);
        }
        if data.source != self.name && self.lsdb.get(&data.source).is_none() {
            return self.count_drop(DropReason::UnknownSource);
        }
        if !self.recent.admit(&data) {
            return self.count_drop(DropReason::Replayed);
        }
        if data.destination == self.name {
            let hops = self
                .config
                .ttl_default
                .saturating_sub(data.ttl)
                .saturating_add(1);
            return self.deliver(data, hops);
        }
        if data.ttl <= 1 {
            return self.count_drop(DropReason::TtlExpired);
        }
        let Some(next_hop) = self.routes.next_hop(&data.destination).cloned() else {
            return self.count_drop(DropReason::NoRoute);
        };
        data.ttl -= 1;
        self.stats.data_forwarded += 1;
        self.transmit(Destination::Neighbour(next_hop), Message::Data(data));
    }

    fn deliver(&mut self, data: Data, hops: u8) {
        self.stats.data_delivered += 1;
        self.emit(Event::Delivered(Delivery {
            source: data.source,
            channel: data.channel,
            id: data.id,
            hops,
            payload: data.payload,
        }));
    }

    // ----- dialing -----

    fn dial_due(&mut self, now: Instant) {
        let mut dials = Vec::new();
        for peer in &mut self.peers {
            if peer
                .name
                .as_ref()
                .is_some_and(|name| self.revocations.contains(name))
            {
                peer.next_dial_at = None; // a revoked node is never dialed again
                continue;
            }
            if peer.next_dial_at.is_some_and(|t| now >= t) {
                let linked = peer
                    .name
                    .as_ref()
                    .is_some_and(|name| self.neighbours.get(name).is_some_and(|n| n.link_open));
                peer.next_dial_at = None;
                if linked {
                    peer.connected = true;
                } else {
                    dials.push((peer.addr, peer.name.clone()));
                }
            }
        }
        let mut learnt = Vec::new();
        for (_, name) in &dials {
            // A peer whose name we know may have come back elsewhere: its addresses
            // learnt from the mesh are dialed next to the configured (or resolved) one.
            let Some(name) = name else { continue };
            for &addr in self.addresses.addresses(name) {
                let configured = self.peers.iter().any(|p| p.addr == addr);
                if !configured
                    && !learnt.contains(&addr)
                    && (self.learnt_dials.len() < LEARNT_DIALS_MAX
                        || self.learnt_dials.contains_key(&addr))
                {
                    self.learnt_dials.insert(addr, name.clone());
                    learnt.push(addr);
                }
            }
        }
        self.stats.learnt_dials += learnt.len() as u64;
        for addr in dials.into_iter().map(|(addr, _)| addr).chain(learnt) {
            self.emit(Event::Dial { addr });
        }
    }
}

/// The checks every advertisement passes before it may change the database, however it
/// arrived: well-formed content, then a signature that verifies.
fn admit(auth: &dyn Authenticator, lsa: &SignedLsa) -> Result<(), DropReason> {
    if !well_formed(&lsa.lsa) {
        return Err(DropReason::BadAdvertisement);
    }
    auth.verify(
        &lsa.lsa.origin,
        &lsa.credential,
        &lsa.lsa.signed_bytes(),
        &lsa.signature,
    )
    .map_err(|_| DropReason::BadSignature)
}

/// Content checks that do not need the signature: links sorted and unique, no self-link.
fn well_formed(lsa: &Lsa) -> bool {
    lsa.links.len() <= wire::LINKS_MAX
        && lsa
            .links
            .windows(2)
            .all(|w| w[0].neighbour < w[1].neighbour)
        && lsa.links.iter().all(|l| l.neighbour != lsa.origin)
}

fn wire_drop_reason(error: &WireError) -> DropReason {
    match error {
        WireError::UnknownVersion(_) => DropReason::UnknownVersion,
        WireError::Oversized(_) => DropReason::Oversized,
        _ => DropReason::Malformed,
    }
}

/// `items` in frames of at most `count_max` items and `bytes_max` bytes (by `len`), in
/// order; an item larger than `bytes_max` goes alone in its frame.
fn split_frames<T>(
    items: impl IntoIterator<Item = T>,
    count_max: usize,
    bytes_max: usize,
    len: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut frames = Vec::new();
    let mut frame: Vec<T> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_len = len(&item);
        if !frame.is_empty() && (frame.len() == count_max || bytes + item_len > bytes_max) {
            frames.push(std::mem::take(&mut frame));
            bytes = 0;
        }
        bytes += item_len;
        frame.push(item);
    }
    if !frame.is_empty() {
        frames.push(frame);
    }
    frames
}

/// Repaired routing tables per one checked against a full computation in release builds
/// (about 1.5 % more route computation; a difference is counted and repaired).
const ROUTE_AUDIT_EVERY: u64 = 64;

/// What this node last advertised of a link, and the estimates its cost came from.
#[derive(Clone, Copy, Debug)]
struct Advertised {
    cost: u32,
    loss: f64,
    base_rtt_us: u32,
}

/// The least cost change worth a new advertisement (see `advertised_costs_stale`).
const COST_CHANGE_MIN: u64 = 5;

/// Doublings of the retransmission timeout of an unacknowledged advertisement (8x: 800
/// ms at the default 100 ms). Sixty-four times, as before, left a copy lost five times
/// in a row on a 46 %-loss radio link (1 % of them; a few of the 209 a node's only
/// neighbour forwards when it joins) waiting 6.4 s for the next try, so a node of a
/// Freifunk mesh went 20 s without a route to a node the rest of the mesh reached.
/// The measured RTO already keeps slow links from retransmitting early; the doubling
/// only spreads the copies of a link that keeps losing them.
const RETRANSMIT_BACKOFF_DOUBLINGS_MAX: u32 = 3;

/// Milliseconds left until `expires_at` (the lifetime an advertisement is sent with).
fn remaining_ms(now: Instant, expires_at: Instant) -> u32 {
    u32::try_from(expires_at.saturating_since(now).as_millis()).unwrap_or(u32::MAX)
}
