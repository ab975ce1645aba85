//! The probe path: probes and their answers as plain UDP datagrams on a socket of their
//! own, outside the links' QUIC connections (`[transport] probe_path = "udp"`).
//!
//! A QUIC datagram costs a node about 50 µs of CPU on its way through quinn and three
//! tokio tasks; probes are most of an idle mesh's packets. On this path the driver owns
//! the socket: it reads every waiting packet in one `recvmmsg` (quinn-udp) per wakeup and
//! seals and sends probes itself, with no task or channel in between.
//!
//! **Keys.** When a link comes up, each end exports two keys from the link's TLS session
//! (`Connection::export_keying_material`, label [`EXPORTER_LABEL`], context
//! `sender NUL receiver`), one per direction, and sends the peer an *offer* over the
//! connection: its probe socket's port and a random 64-bit tag the peer must put on
//! every packet to it (the tag names the link, like a QUIC connection ID). A peer that
//! never offers (an older node, or `probe_path = "quic"`) keeps getting probes over QUIC.
//!
//! **Proof before use.** An offer only says where the peer listens; a firewall, a NAT or
//! a container that publishes only the QUIC port may still swallow every packet sent
//! there. So a link keeps its probes on QUIC until a round trip on the path worked: at
//! each probe interval it sends a sealed [`HELLO`] (up to [`HELLO_TRIES`]), which the
//! peer answers on the path with [`HELLO_ANSWER`]; the first authentic answer proves
//! both directions for this node's probes, which then take the path. A probe answer
//! always goes back the way its probe came (the path or QUIC), so each side's probing
//! depends only on its own proof. On the path, a probe due when no answer came back on
//! the path since the previous probe goes over QUIC with a hello (the path is proven
//! again by its answer; on a link slower than the probe interval answers still arrive
//! between any two probes); hellos unanswered [`HELLO_TRIES`] times in a row make the link give up
//! (counted by [`Fallback`], logged once per link) and try again after a backoff
//! ([`RETRY_FIRST`] doubling up to [`RETRY_MAX`]). A dead peer is not masked: its probes
//! over QUIC go unanswered too, and the protocol's dead interval fires as before.
//!
//! **Packets.** `tag:u64 counter:u64 sealed-frame` (big-endian): the frame is sealed with
//! ChaCha20-Poly1305 (aws-lc-rs, already the TLS provider; ChaCha20 because Pi-class
//! CPUs lack AES instructions), the nonce is the per-direction packet counter and the
//! 16-byte header is the associated data. The receiver keeps a 64-packet replay window
//! per link (RFC 4303 3.4.3). What fails is dropped and counted by [`Refusal`].

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use x0tta6bl4_proto::{Instant, Message, NodeName};

use crate::state::{DriverDrop, Shared};

/// First bytes of an offer (sent over the link's connection): never the first byte of a
/// protocol frame (its version). Then the probe socket's port (u16) and the tag (u64).
pub const OFFER_MAGIC: &[u8] = b"\xffX0PROBE1";
/// Length of an offer.
pub const OFFER_BYTES: usize = OFFER_MAGIC.len() + 2 + 8;
/// The TLS exporter label of the probe keys (RFC 8446 7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-x0tta6bl4-probe-path-v1";
/// Tag and packet counter.
pub const HEADER_BYTES: usize = 16;
/// The AEAD's authentication tag.
pub const AUTH_TAG_BYTES: usize = 16;
/// Longest frame sent on the path (a probe or an answer is 14 bytes).
pub const FRAME_BYTES_MAX: usize = 256;
/// Longest packet accepted.
pub const PACKET_BYTES_MAX: usize = HEADER_BYTES + FRAME_BYTES_MAX + AUTH_TAG_BYTES;
/// Packets remembered behind the newest one (older ones are refused as replays).
pub const REPLAY_WINDOW: u64 = 64;
/// The frame that asks the peer to answer on the path (never a protocol frame: 0xff is
/// no protocol version).
pub const HELLO: &[u8] = b"\xffHELLO";
/// The answer to a [`HELLO`], sent back on the path.
pub const HELLO_ANSWER: &[u8] = b"\xffHELLO-ANSWER";
/// Hellos sent in a row, one per probe interval, before the link gives up on the path.
pub const HELLO_TRIES: u32 = 8;
/// Wait after the first give-up before the next hellos (doubled at each give-up).
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest wait between two rounds of hellos.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Receive buffers per `recvmmsg` (each holds up to the socket's GRO segments).
const RECEIVE_SLOTS: usize = 16;
/// Packets read per driver turn before timers and commands get their chance.
pub(crate) const PACKETS_PER_TURN_MAX: usize = 256;

/// Why a packet on the probe path was dropped; the `reason` label of
/// `probe_path_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Shorter than a header and authentication tag (truncated), or longer than any
    /// probe.
    Malformed,
    /// A tag no open link of this node gave out (a closed link, or a stranger).
    UnknownLink,
    /// Failed authentication: not sealed with the link's key (forged or corrupted).
    Forged,
    /// Authentic, but its counter was seen already or is behind the replay window.
    Replayed,
}

impl Refusal {
    /// Every reason, in the order `/metrics` shows them.
    pub const ALL: [Refusal; 4] = [
        Refusal::Malformed,
        Refusal::UnknownLink,
        Refusal::Forged,
        Refusal::Replayed,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownLink => "unknown_link",
            Refusal::Forged => "forged",
            Refusal::Replayed => "replayed",
        }
    }
}

/// Why a link gave up on the path and probes over QUIC; the `reason` label of
/// `probe_path_fallbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No hello on this link was ever answered: the peer's probe port is out of reach
    /// (a firewall, a NAT, a container that publishes only the QUIC port).
    Unproven,
    /// The path worked on this link, then its probes and hellos went unanswered.
    Lost,
}

impl Fallback {
    /// Every reason, in the order `/metrics` shows them.
    pub const ALL: [Fallback; 2] = [Fallback::Unproven, Fallback::Lost];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Unproven => "unproven",
            Fallback::Lost => "lost",
        }
    }
}

/// Where a due probe goes, as [`PathState::on_probe`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// On the path (proven, and the last probe there was answered).
    Path,
    /// Over QUIC.
    Quic {
        /// Whether a hello goes on the path with it.
        hello: bool,
    },
    /// Over QUIC: the hellos went unanswered, the link gives up until a backoff ends.
    GaveUp(Fallback),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    /// Hellos sent since the last answer.
    Proving(u32),
    /// A round trip worked; `awaiting`: no answer came on the path since the last probe.
    Proven { awaiting: bool },
    /// Given up until then.
    Resting(Instant),
}

/// Whether one link's probes may take the path: a state machine ticked by the link's
/// probes (no timer of its own), deterministic in its inputs.
#[derive(Clone, Debug)]
pub struct PathState {
    proof: Proof,
    backoff: Duration,
    ever_proven: bool,
}

impl Default for PathState {
    fn default() -> Self {
        PathState {
            proof: Proof::Proving(0),
            backoff: RETRY_FIRST,
            ever_proven: false,
        }
    }
}

impl PathState {
    /// Whether probes go over the path now.
    pub fn proven(&self) -> bool {
        matches!(self.proof, Proof::Proven { .. })
    }

    /// A probe is due at `now`: where it goes.
    pub fn on_probe(&mut self, now: Instant) -> Step {
        let hellos = match self.proof {
            Proof::Proven { awaiting: false } => {
                self.proof = Proof::Proven { awaiting: true };
                return Step::Path;
            }
            Proof::Resting(until) if now < until => return Step::Quic { hello: false },
            Proof::Proving(hellos) => hellos,
            // The last probe on the path went unanswered, or the backoff ended.
            Proof::Proven { awaiting: true } | Proof::Resting(_) => 0,
        };
        if hellos < HELLO_TRIES {
            self.proof = Proof::Proving(hellos + 1);
            return Step::Quic { hello: true };
        }
        self.proof = Proof::Resting(now + self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        let reason = if self.ever_proven {
            Fallback::Lost
        } else {
            Fallback::Unproven
        };
        Step::GaveUp(reason)
    }

    /// An authentic answer (to a hello or a probe) came back on the path.
    pub fn on_answer(&mut self) {
        self.proof = Proof::Proven { awaiting: false };
        self.ever_proven = true;
        self.backoff = RETRY_FIRST;
    }
}

/// What the probe path did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ProbePathCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    fallbacks: [AtomicU64; Fallback::ALL.len()],
    /// Links whose probes go over the path now.
    pub links: AtomicU64,
}

impl ProbePathCounters {
    pub fn fall_back(&self, reason: Fallback) {
        self.fallbacks[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn fallbacks(&self, reason: Fallback) -> u64 {
        self.fallbacks[reason as usize].load(Ordering::Relaxed)
    }

    pub fn refuse(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }
}

/// A key of one direction of one link, exported from the link's TLS session.
pub fn derive_key(
    conn: &quinn::Connection,
    sender: &NodeName,
    receiver: &NodeName,
) -> Result<LessSafeKey, String> {
    let mut context = Vec::with_capacity(sender.as_str().len() + receiver.as_str().len() + 1);
    context.extend_from_slice(sender.as_str().as_bytes());
    context.push(0);
    context.extend_from_slice(receiver.as_str().as_bytes());
    let mut secret = [0u8; 32];
    conn.export_keying_material(&mut secret, EXPORTER_LABEL, &context)
        .map_err(|_| "the link's TLS session exports no keying material".to_owned())?;
    let key = UnboundKey::new(&CHACHA20_POLY1305, &secret)
        .map_err(|_| "ChaCha20-Poly1305 refused a 32-byte key".to_owned())?;
    Ok(LessSafeKey::new(key))
}

/// The offer a node sends over a new link: its probe port and the tag it gave the link.
pub fn encode_offer(port: u16, tag: u64) -> Bytes {
    let mut offer = Vec::with_capacity(OFFER_BYTES);
    offer.extend_from_slice(OFFER_MAGIC);
    offer.extend_from_slice(&port.to_be_bytes());
    offer.extend_from_slice(&tag.to_be_bytes());
    Bytes::from(offer)
}

/// The port and tag of an offer.
pub fn decode_offer(bytes: &[u8]) -> Result<(u16, u64), String> {
    let body = bytes
        .strip_prefix(OFFER_MAGIC)
        .filter(|body| body.len() == OFFER_BYTES - OFFER_MAGIC.len())
        .ok_or_else(|| format!("{} bytes; an offer has {OFFER_BYTES}", bytes.len()))?;
    let port = u16::from_be_bytes([body[0], body[1]]);
    let tag = u64::from_be_bytes(body[2..].try_into().unwrap_or_default());
    if port == 0 {
        return Err("port 0".to_owned());
    }
    Ok((port, tag))
}

fn nonce(counter: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// Seal `frame` as packet number `counter` of the link the receiver tagged `tag`.
pub fn seal(key: &LessSafeKey, tag: u64, counter: u64, frame: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_BYTES + frame.len() + AUTH_TAG_BYTES);
    packet.extend_from_slice(&tag.to_be_bytes());
    packet.extend_from_slice(&counter.to_be_bytes());
    packet.extend_from_slice(frame);
    let (header, body) = packet.split_at_mut(HEADER_BYTES);
    // Sealing fails only for inputs beyond ChaCha20's 256 GiB limit.
    let sealed = key.seal_in_place_separate_tag(nonce(counter), Aad::from(&*header), body);
    let auth = sealed.map(|t| t.as_ref().to_vec()).unwrap_or_default();
    packet.extend_from_slice(&auth);
    packet
}

/// The tag a packet names, if it is long enough to be one.
pub fn packet_tag(packet: &[u8]) -> Result<u64, Refusal> {
    if packet.len() < HEADER_BYTES + AUTH_TAG_BYTES || packet.len() > PACKET_BYTES_MAX {
        return Err(Refusal::Malformed);
    }
    Ok(u64::from_be_bytes(
        packet[..8].try_into().unwrap_or_default(),
    ))
}

/// Packets seen of one direction of a link: the newest counter and a bitmap of the
/// [`REPLAY_WINDOW`] before it.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    newest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// Whether `counter` was not seen yet and is within the window (0 never is: counters
    /// start at 1).
    pub fn fresh(&self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.newest {
            return true;
        }
        let behind = self.newest - counter;
        behind < REPLAY_WINDOW && self.seen & (1 << behind) == 0
    }

    /// Remember `counter` (after it authenticated).
    pub fn mark(&mut self, counter: u64) {
        if counter > self.newest {
            let ahead = counter - self.newest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.newest = counter;
        } else {
            self.seen |= 1 << (self.newest - counter);
        }
    }
}

/// Open `packet` (header included) with `key`, checking `window`; returns the frame.
pub fn open<'a>(
    key: &LessSafeKey,
    window: &mut ReplayWindow,
    packet: &'a mut [u8],
) -> Result<&'a [u8], Refusal> {
    packet_tag(packet)?;
    let (header, body) = packet.split_at_mut(HEADER_BYTES);
    let counter = u64::from_be_bytes(header[8..].try_into().unwrap_or_default());
    if !window.fresh(counter) {
        // Checked again after authentication, which alone may move the window; this
        // early refusal only saves the work (and cannot be abused: nothing changes).
        return Err(Refusal::Replayed);
    }
    let frame: &[u8] = key
        .open_in_place(nonce(counter), Aad::from(&*header), body)
        .map_err(|_| Refusal::Forged)?;
    window.mark(counter);
    Ok(frame)
}

/// One direction towards a neighbour whose offer arrived.
struct Outbound {
    link_id: u64,
    to: SocketAddr,
    tag: u64,
    key: LessSafeKey,
    counter: u64,
    state: PathState,
    /// Whether this link's give-up was logged (once per link).
    logged: bool,
}

/// A packet sealed for the path, and where it goes.
pub(crate) type Sealed = (SocketAddr, Vec<u8>);

/// What the driver does with a due probe (from [`ProbePaths::probe`]).
pub(crate) struct ProbeRoute {
    /// The probe sealed for the path, or `None`: it goes over QUIC.
    pub probe: Option<Sealed>,
    /// A hello to send on the path.
    pub hello: Option<Sealed>,
    /// The link gave up on the path now; `true` the first time on this link.
    pub gave_up: Option<(Fallback, bool)>,
}

/// One direction from a neighbour, under the tag this node gave its link.
struct Inbound {
    link_id: u64,
    name: NodeName,
    key: LessSafeKey,
    window: ReplayWindow,
}

/// The probe socket and the keys of every link (owned by the driver).
pub(crate) struct ProbePaths {
    socket: Arc<UdpSocket>,
    state: quinn_udp::UdpSocketState,
    port: u16,
    me: NodeName,
    inbound: HashMap<u64, Inbound>,
    outbound: HashMap<NodeName, Outbound>,
    buffer: Vec<u8>,
    random: aws_lc_rs::rand::SystemRandom,
}

impl ProbePaths {
    /// Bind the probe socket on `addr` (port 0: one of the kernel's choosing; each link
    /// learns it from the offer).
    pub fn bind(addr: SocketAddr, me: NodeName) -> std::io::Result<ProbePaths> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let socket = UdpSocket::from_std(socket)?;
        let port = socket.local_addr()?.port();
        let slot = state.gro_segments().max(1) * PACKET_BYTES_MAX;
        Ok(ProbePaths {
            socket: Arc::new(socket),
            state,
            port,
            me,
            inbound: HashMap::new(),
            outbound: HashMap::new(),
            buffer: vec![0; slot * RECEIVE_SLOTS],
            random: aws_lc_rs::rand::SystemRandom::new(),
        })
    }

    pub fn socket(&self) -> Arc<UdpSocket> {
        self.socket.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Links whose probes go over the path (proven).
    pub fn links(&self) -> usize {
        self.outbound.values().filter(|o| o.state.proven()).count()
    }

    /// Link `link_id` to `name` came up over `conn`: forget its previous link, accept
    /// its packets under a fresh tag and return the offer to send over `conn`.
    pub fn link_up(
        &mut self,
        name: &NodeName,
        link_id: u64,
        conn: &quinn::Connection,
    ) -> Result<Bytes, String> {
        self.link_down(name);
        let key = derive_key(conn, name, &self.me)?;
        let tag = loop {
            let mut bytes = [0u8; 8];
            aws_lc_rs::rand::SecureRandom::fill(&self.random, &mut bytes)
                .map_err(|_| "the system's random source failed".to_owned())?;
            let tag = u64::from_be_bytes(bytes);
            if !self.inbound.contains_key(&tag) {
                break tag;
            }
        };
        let inbound = Inbound {
            link_id,
            name: name.clone(),
            key,
            window: ReplayWindow::default(),
        };
        self.inbound.insert(tag, inbound);
        Ok(encode_offer(self.port, tag))
    }

    /// The peer's offer over link `link_id`: hellos go there from the next probe on, and
    /// probes once one is answered. One offer per link: the key of a link's direction
    /// is the same for all its offers, so a second one is refused rather than starting
    /// the packet numbers (the nonces) again.
    pub fn offer(
        &mut self,
        name: &NodeName,
        link_id: u64,
        conn: &quinn::Connection,
        bytes: &[u8],
    ) -> Result<(), String> {
        let (port, tag) = decode_offer(bytes)?;
        if self
            .outbound
            .get(name)
            .is_some_and(|o| o.link_id == link_id)
        {
            return Err(
                "a second offer on the same link: the first one is kept (a peer \
                        offers once per link; its key would repeat packet numbers)"
                    .to_owned(),
            );
        }
        let key = derive_key(conn, &self.me, name)?;
        let to = SocketAddr::new(conn.remote_address().ip(), port);
        let outbound = Outbound {
            link_id,
            to,
            tag,
            key,
            counter: 0,
            state: PathState::default(),
            logged: false,
        };
        self.outbound.insert(name.clone(), outbound);
        Ok(())
    }

    /// The link to `name` closed: forget its keys.
    pub fn link_down(&mut self, name: &NodeName) {
        self.outbound.remove(name);
        self.inbound.retain(|_, inbound| inbound.name != *name);
    }

    /// `frame` sealed for link `link_id` to `name`, and where it goes; `None` when the
    /// peer offered no path on that link (the frame then goes over QUIC).
    pub fn seal(&mut self, name: &NodeName, link_id: u64, frame: &[u8]) -> Option<Sealed> {
        if frame.len() > FRAME_BYTES_MAX {
            return None;
        }
        let outbound = self
            .outbound
            .get_mut(name)
            .filter(|o| o.link_id == link_id)?;
        Some(outbound.seal(frame))
    }

    /// A probe `frame` to `name` over link `link_id` is due at `now`: sealed for the path
    /// when the link's path is proven, else `None` (QUIC), with a hello when one is due.
    pub fn probe(
        &mut self,
        name: &NodeName,
        link_id: u64,
        frame: &[u8],
        now: Instant,
    ) -> ProbeRoute {
        let mut route = ProbeRoute {
            probe: None,
            hello: None,
            gave_up: None,
        };
        let outbound = self.outbound.get_mut(name).filter(|o| o.link_id == link_id);
        let Some(outbound) = outbound.filter(|_| frame.len() <= FRAME_BYTES_MAX) else {
            return route;
        };
        match outbound.state.on_probe(now) {
            Step::Path => route.probe = Some(outbound.seal(frame)),
            Step::Quic { hello } => route.hello = hello.then(|| outbound.seal(HELLO)),
            Step::GaveUp(reason) => {
                route.gave_up = Some((reason, !outbound.logged));
                outbound.logged = true;
            }
        }
        route
    }

    /// Read what waits on the socket (at most [`PACKETS_PER_TURN_MAX`] packets, in
    /// batches of `recvmmsg`); returns each authentic protocol frame with its link and
    /// the answers to hellos (to send), and counts the refused ones. An answer to a hello
    /// or a probe proves the link's path.
    pub fn receive(&mut self, counters: &ProbePathCounters) -> Received {
        let mut received = Received::default();
        let slot = self.buffer.len() / RECEIVE_SLOTS;
        let mut handled = 0;
        while handled < PACKETS_PER_TURN_MAX {
            let mut meta = [quinn_udp::RecvMeta::default(); RECEIVE_SLOTS];
            let mut slices: Vec<IoSliceMut<'_>> =
                self.buffer.chunks_mut(slot).map(IoSliceMut::new).collect();
            let (socket, state) = (&self.socket, &self.state);
            let read = socket.try_io(Interest::READABLE, || {
                state.recv((&**socket).into(), &mut slices, &mut meta)
            });
            let Ok(count) = read else {
                break; // WouldBlock: the socket is drained (readiness cleared)
            };
            drop(slices);
            for (index, meta) in meta.iter().take(count).enumerate() {
                let start = index * slot;
                let data = &mut self.buffer[start..start + meta.len.min(slot)];
                let stride = meta.stride.max(1);
                for packet in data.chunks_mut(stride) {
                    handled += 1;
                    match open_with(&mut self.inbound, packet) {
                        Ok((name, link_id, frame)) => {
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            let outbound = self.outbound.get_mut(&name);
                            let outbound = outbound.filter(|o| o.link_id == link_id);
                            received.take(name, link_id, frame, outbound);
                        }
                        Err(reason) => counters.refuse(reason),
                    }
                }
            }
        }
        received
    }
}

impl Outbound {
    fn seal(&mut self, frame: &[u8]) -> Sealed {
        self.counter += 1;
        (self.to, seal(&self.key, self.tag, self.counter, frame))
    }
}

/// What one read of the probe socket brought.
#[derive(Default)]
pub(crate) struct Received {
    /// Protocol frames, with the peer and link they came over.
    pub frames: Vec<(NodeName, u64, Bytes)>,
    /// Answers to the peers' hellos, sealed, to send.
    pub answers: Vec<Sealed>,
}

impl Received {
    /// An authentic `frame` from `name` over link `link_id`, whose outbound direction
    /// (if the peer offered it) is `outbound`.
    fn take(
        &mut self,
        name: NodeName,
        link_id: u64,
        frame: &[u8],
        outbound: Option<&mut Outbound>,
    ) {
        if frame == HELLO {
            // Answered on the path only: an answer over QUIC would prove nothing.
            self.answers.extend(outbound.map(|o| o.seal(HELLO_ANSWER)));
            return;
        }
        let answer =
            frame == HELLO_ANSWER || matches!(Message::decode(frame), Ok(Message::ProbeAck { .. }));
        if answer {
            if let Some(outbound) = outbound {
                outbound.state.on_answer();
            }
        }
        if frame != HELLO_ANSWER {
            self.frames
                .push((name, link_id, Bytes::copy_from_slice(frame)));
        }
    }
}

/// Send a sealed packet; a refusal (a full socket buffer) is a dropped frame.
pub(crate) fn send(socket: &UdpSocket, to: SocketAddr, packet: &[u8], shared: &Shared) {
    match socket.try_send_to(packet, to) {
        Ok(_) => {
            shared
                .counters
                .probe_path
                .sent
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            tracing::debug!(%to, %error, "probe path send failed");
            shared.counters.drop(DriverDrop::SendFailed);
        }
    }
}

fn open_with<'a>(
    inbound: &mut HashMap<u64, Inbound>,
    packet: &'a mut [u8],
) -> Result<(NodeName, u64, &'a [u8]), Refusal> {
    let tag = packet_tag(packet)?;
    let link = inbound.get_mut(&tag).ok_or(Refusal::UnknownLink)?;
    let frame = open(&link.key, &mut link.window, packet)?;
    Ok((link.name.clone(), link.link_id, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[byte; 32]).unwrap())
    }

    #[test]
    fn a_sealed_frame_opens_once_and_forgeries_and_truncations_do_not() {
        let (sender, receiver) = (key(1), key(1));
        let mut window = ReplayWindow::default();
        let frame = b"\x01\x01probe-frame!!";
        let packet = seal(&sender, 7, 1, frame);
        assert_eq!(packet_tag(&packet), Ok(7));
        assert_eq!(
            open(&receiver, &mut window, &mut packet.clone()),
            Ok(&frame[..])
        );
        // The same packet again is a replay.
        let mut again = packet.clone();
        let again = open(&receiver, &mut window, &mut again);
        assert_eq!(again, Err(Refusal::Replayed));
        // Any flipped bit, in the header or the body, fails authentication.
        for index in [3, 12, HEADER_BYTES + 2, packet.len() - 1] {
            let mut forged = seal(&sender, 7, 2, frame);
            forged[index] ^= 0x10;
            let result = open(&receiver, &mut window, &mut forged);
            assert_eq!(result, Err(Refusal::Forged), "byte {index}");
        }
        // Another link's key fails too; the window did not move for the forgeries.
        let mut other = seal(&key(2), 7, 2, frame);
        assert_eq!(
            open(&receiver, &mut window, &mut other),
            Err(Refusal::Forged)
        );
        let mut genuine = seal(&sender, 7, 2, frame);
        assert_eq!(open(&receiver, &mut window, &mut genuine), Ok(&frame[..]));
        // Truncated and oversized packets.
        let mut short = seal(&sender, 7, 3, frame);
        short.truncate(HEADER_BYTES + AUTH_TAG_BYTES - 1);
        assert_eq!(
            open(&receiver, &mut window, &mut short),
            Err(Refusal::Malformed)
        );
        let mut cut = seal(&sender, 7, 3, frame);
        cut.pop();
        assert_eq!(open(&receiver, &mut window, &mut cut), Err(Refusal::Forged));
        let mut long = vec![0u8; PACKET_BYTES_MAX + 1];
        assert_eq!(
            open(&receiver, &mut window, &mut long),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn the_replay_window_takes_reordered_packets_once_and_refuses_old_ones() {
        let mut window = ReplayWindow::default();
        assert!(!window.fresh(0), "counters start at 1");
        for counter in [5, 3, 4, 1] {
            assert!(window.fresh(counter), "{counter}");
            window.mark(counter);
            assert!(!window.fresh(counter), "{counter} again");
        }
        assert!(
            window.fresh(2) && !window.fresh(5),
            "5 is still in the window"
        );
        window.mark(2);
        window.mark(70);
        // 70 - 64 = 6: counters from 7 up are in the window, 6 and below are not.
        assert!(!window.fresh(6) && window.fresh(7) && window.fresh(69) && !window.fresh(70));
        window.mark(1000);
        assert!(!window.fresh(999 - REPLAY_WINDOW) && window.fresh(999));
    }

    #[test]
    fn offers_round_trip_and_bad_ones_are_refused() {
        let offer = encode_offer(7001, 0xdead_beef);
        assert_eq!(offer.len(), OFFER_BYTES);
        assert_eq!(decode_offer(&offer), Ok((7001, 0xdead_beef)));
        assert!(decode_offer(&offer[..OFFER_BYTES - 1]).is_err());
        assert!(decode_offer(&encode_offer(0, 1)).is_err());
        assert!(decode_offer(b"\x01\x02").is_err());
    }

    #[test]
    fn hellos_and_their_answers_are_small_and_never_protocol_frames() {
        // docs/edge-resources.md gives these sizes.
        assert_eq!(seal(&key(1), 7, 1, HELLO).len(), 38);
        assert_eq!(seal(&key(1), 7, 1, HELLO_ANSWER).len(), 45);
        assert!(Message::decode(HELLO).is_err() && Message::decode(HELLO_ANSWER).is_err());
    }

    #[test]
    fn probes_take_the_path_only_after_an_answer_and_leave_it_when_answers_stop() {
        let at = |ms: u64| Instant::from_micros(ms * 1000);
        let mut state = PathState::default();
        // Unproven: probes over QUIC, each with a hello, HELLO_TRIES times; then give up.
        for _ in 0..HELLO_TRIES {
            assert_eq!(state.on_probe(at(0)), Step::Quic { hello: true });
            assert!(!state.proven());
        }
        assert_eq!(state.on_probe(at(0)), Step::GaveUp(Fallback::Unproven));
        // Resting for RETRY_FIRST: no hellos, then a new round.
        let rest = RETRY_FIRST.as_millis() as u64;
        assert_eq!(state.on_probe(at(rest - 1)), Step::Quic { hello: false });
        assert_eq!(state.on_probe(at(rest)), Step::Quic { hello: true });
        // An answer proves the path: probes go there while they are answered.
        state.on_answer();
        assert!(state.proven());
        for _ in 0..3 {
            assert_eq!(state.on_probe(at(rest)), Step::Path);
            state.on_answer();
        }
        // One unanswered probe: the next goes over QUIC with a hello; its answer brings
        // the probes back.
        assert_eq!(state.on_probe(at(rest)), Step::Path);
        assert_eq!(state.on_probe(at(rest)), Step::Quic { hello: true });
        state.on_answer();
        assert_eq!(state.on_probe(at(rest)), Step::Path);
        // Answers stop: the path is lost after HELLO_TRIES hellos; the backoff started
        // again from RETRY_FIRST (an answer reset it) and doubles at each give-up.
        for _ in 0..HELLO_TRIES {
            assert_eq!(state.on_probe(at(rest)), Step::Quic { hello: true });
        }
        assert_eq!(state.on_probe(at(rest)), Step::GaveUp(Fallback::Lost));
        let retry = rest * 2;
        assert_eq!(state.on_probe(at(retry - 1)), Step::Quic { hello: false });
        for _ in 0..HELLO_TRIES {
            assert_eq!(state.on_probe(at(retry)), Step::Quic { hello: true });
        }
        assert_eq!(state.on_probe(at(retry)), Step::GaveUp(Fallback::Lost));
        let doubled = retry + 2 * RETRY_FIRST.as_millis() as u64;
        assert_eq!(state.on_probe(at(doubled - 1)), Step::Quic { hello: false });
        assert_eq!(state.on_probe(at(doubled)), Step::Quic { hello: true });
    }

    #[test]
    fn on_a_link_slower_than_the_probe_interval_answers_may_trail_the_probes() {
        let at = |ms: u64| Instant::from_micros(ms * 1000);
        let mut state = PathState::default();
        // Probes every 50 ms, a 120 ms round trip: each packet on the path is answered
        // 120 ms later, until the path breaks for packets sent from 3000 ms on.
        let (rtt, broken_from) = (120, 3000);
        let mut answers = std::collections::VecDeque::new();
        let mut steps = Vec::new();
        for ms in (0..4000).step_by(10) {
            while answers.front() == Some(&ms) {
                answers.pop_front();
                state.on_answer();
            }
            if ms % 50 != 0 {
                continue;
            }
            let step = state.on_probe(at(ms));
            let on_path = matches!(step, Step::Path | Step::Quic { hello: true });
            if on_path && ms < broken_from {
                answers.push_back(ms + rtt);
            }
            steps.push((ms, step));
        }
        // Proven by the first hello's answer; from then on every probe on the path: the
        // hellos sent before it are answered meanwhile, then some probe's answer comes
        // back between any two probes.
        assert_eq!(steps[0].1, Step::Quic { hello: true });
        let quic: Vec<_> = steps
            .iter()
            .filter(|(ms, step)| (150..broken_from).contains(ms) && *step != Step::Path)
            .collect();
        assert!(quic.is_empty(), "{quic:?}");
        // The break: back to QUIC with hellos within a round trip and a few intervals.
        let first = steps
            .iter()
            .find(|(ms, step)| *ms >= broken_from && *step != Step::Path)
            .unwrap();
        assert!(first.0 <= broken_from + rtt + 100, "{first:?}");
        assert_eq!(first.1, Step::Quic { hello: true });
    }
}
