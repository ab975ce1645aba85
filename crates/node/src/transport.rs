//! QUIC transport: one endpoint (server and client), one task per connection.
//!
//! Connection tasks authenticate the peer's SVID, announce the link to the driver and
//! then only read: datagrams and unidirectional streams become [`Input::Frame`]s. They
//! make no protocol decision; the driver decides which link to keep and what to send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, EndpointConfig, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tracing::Instrument;
use x0tta6bl4_identity::{KxMode, KxRecord, NodeIdentity};
use x0tta6bl4_proto::NodeName;

use crate::dial_log::DialRefusal;
use crate::state::{DriverDrop, Handshake, Shared};
use crate::BindError;

/// Server name the client presents; SPIFFE verifiers ignore DNS names.
pub(crate) const SERVER_NAME: &str = "x0tta6bl4";
/// Without traffic for this long a connection is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that sent nothing for this long sends a PING: probes may flow outside
/// it (`probe_path`), so without them an idle link's connection would time out. A
/// fourth of the idle timeout, so that two lost PINGs in a row do not close it.
const KEEP_ALIVE: Duration = Duration::from_millis(1250);
/// Datagrams buffered per connection before the application reads them.
const DATAGRAM_RECEIVE_BUFFER_BYTES: usize = 4 << 20;
/// Datagrams buffered per connection for sending (the oldest is dropped beyond).
const DATAGRAM_SEND_BUFFER_BYTES: usize = 1 << 20;
/// Unidirectional streams a peer may have open to us at once (one per large frame).
const UNI_STREAMS_MAX: u32 = 64;
/// Connections being accepted at once.
const INCOMING_MAX: usize = 1024;

/// Application close codes.
pub(crate) mod close {
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 0;
    /// The peer's certificate does not name a node.
    pub const UNAUTHORISED: u32 = 1;
    /// Another link to the same node was kept.
    pub const DUPLICATE: u32 = 2;
    /// The protocol refused the link (neighbour table full, or the node itself).
    pub const REFUSED: u32 = 3;
    /// The protocol declared the neighbour down.
    pub const NEIGHBOUR_DOWN: u32 = 4;
    /// The peer was revoked by the CA.
    pub const REVOKED: u32 = 5;
    /// The peer's SVID expired while the link was open.
    pub const PEER_SVID_EXPIRED: u32 = 6;
}

/// First bytes of an SVID update: a node's renewed leaf certificate (DER), sent on its
/// open links so that its neighbours keep them past the old SVID's notAfter. Never the
/// first byte of a protocol frame (its version).
pub(crate) const SVID_UPDATE_MAGIC: &[u8] = b"\xffX0SVIDUP1";
/// Longest SVID update accepted, in bytes.
pub(crate) const SVID_UPDATE_LEN_MAX: usize = 8 * 1024;

/// What connection, dial and beacon tasks hand to the driver.
pub(crate) enum Input {
    /// A connection is established and its peer authenticated.
    LinkUp(NewLink),
    /// Connection `id` to `name` closed.
    LinkDown {
        id: u64,
        name: NodeName,
        error: ConnectionError,
    },
    /// Bytes from `name` over connection `id`.
    Frame {
        id: u64,
        name: NodeName,
        bytes: Bytes,
    },
    /// Dialing `addr` failed.
    DialFailed { addr: SocketAddr, error: String },
    /// A discovery beacon arrived.
    Beacon { from: SocketAddr, bytes: Vec<u8> },
    /// A static peer given by host name resolved to `addr`.
    AddPeer(SocketAddr),
    /// A static peer given by host name no longer resolves to `addr`.
    RemovePeer(SocketAddr),
}

/// An authenticated connection, before the driver decided to keep it.
pub(crate) struct NewLink {
    pub id: u64,
    pub name: NodeName,
    pub spiffe_id: String,
    pub conn: Connection,
    /// The address this node dialed, `None` for an accepted connection.
    pub dialed: Option<SocketAddr>,
    /// The key-exchange group the handshake negotiated, e.g. `X25519MLKEM768`.
    pub kx_group: Option<String>,
    /// When the peer's SVID stops being valid (`x0tta6bl4_identity::peer_svid_expiry`).
    pub svid_expiry: std::time::SystemTime,
}

/// What every connection task needs.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub inputs: mpsc::Sender<Input>,
    pub shared: Arc<Shared>,
    pub next_id: Arc<AtomicU64>,
    pub tls: Arc<LinkTls>,
}

/// Builds one TLS configuration per handshake, so that each records the key-exchange
/// group it negotiated (quinn does not expose it; see `x0tta6bl4_identity::KxRecord`).
pub(crate) struct LinkTls {
    /// Replaced when the SVID is renewed: new handshakes use the new one at once.
    pub identity: std::sync::RwLock<NodeIdentity>,
    pub kx: KxMode,
    pub transport: Arc<TransportConfig>,
    /// One configuration of each side built ahead, so that a handshake does not wait
    /// for its configuration to be built (refilled while the handshake runs).
    spare_server: std::sync::Mutex<Option<(quinn::ServerConfig, KxRecord)>>,
    spare_client: std::sync::Mutex<Option<(quinn::ClientConfig, KxRecord)>>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LinkTls {
    /// `initial_rtt`: the RTT a handshake assumes before it measured one
    /// (`Config::handshake_initial_rtt`, which also paces the twin's handshakes).
    pub(crate) fn new(identity: NodeIdentity, kx: KxMode, initial_rtt: Duration) -> LinkTls {
        let transport = Arc::new(transport_config(initial_rtt));
        LinkTls {
            identity: std::sync::RwLock::new(identity),
            kx,
            transport,
            spare_server: std::sync::Mutex::new(None),
            spare_client: std::sync::Mutex::new(None),
        }
    }

    /// Build the next handshake's configurations ahead of time.
    pub(crate) fn refill(&self) {
        if lock(&self.spare_server).is_none() {
            let built = self.build_server().ok();
            *lock(&self.spare_server) = built;
        }
        if lock(&self.spare_client).is_none() {
            let built = self.build_client().ok();
            *lock(&self.spare_client) = built;
        }
    }

    /// The identity new handshakes present.
    pub(crate) fn current(&self) -> NodeIdentity {
        let identity = self.identity.read();
        identity
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Present `identity` in new handshakes (existing links keep theirs).
    pub(crate) fn replace(&self, identity: NodeIdentity) {
        let mut current = self
            .identity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = identity;
        drop(current);
        *lock(&self.spare_server) = None;
        *lock(&self.spare_client) = None;
    }

    fn server(&self) -> anyhow::Result<(quinn::ServerConfig, KxRecord)> {
        let spare = lock(&self.spare_server).take();
        spare.map_or_else(|| self.build_server(), Ok)
    }

    fn client(&self) -> anyhow::Result<(quinn::ClientConfig, KxRecord)> {
        let spare = lock(&self.spare_client).take();
        spare.map_or_else(|| self.build_client(), Ok)
    }

    fn build_server(&self) -> anyhow::Result<(quinn::ServerConfig, KxRecord)> {
        let (tls, record) = self.current().server_config_recorded(self.kx)?;
        let crypto = QuicServerConfig::try_from(tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server
            .transport_config(self.transport.clone())
            .max_incoming(INCOMING_MAX);
        Ok((server, record))
    }

    fn build_client(&self) -> anyhow::Result<(quinn::ClientConfig, KxRecord)> {
        let (tls, record) = self.current().client_config_recorded(self.kx)?;
        let crypto = QuicClientConfig::try_from(tls)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.transport.clone());
        Ok((client, record))
    }
}

/// Bind the QUIC endpoint on `listen` with the identity's mTLS configurations; returns
/// it and its bound address. Handshakes use per-connection configurations from `tls`;
/// these defaults only set the endpoint's limits.
pub(crate) fn bind_endpoint(
    tls: &LinkTls,
    listen: SocketAddr,
) -> anyhow::Result<(Endpoint, SocketAddr)> {
    let socket =
        std::net::UdpSocket::bind(listen).map_err(|io| BindError::Quic { addr: listen, io })?;
    let (server, _) = tls.server().map_err(|e| {
        anyhow::anyhow!("the identity's TLS server configuration cannot carry QUIC: {e}")
    })?;
    let (client, _) = tls.client().map_err(|e| {
        anyhow::anyhow!("the identity's TLS client configuration cannot carry QUIC: {e}")
    })?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| anyhow::anyhow!("no async runtime for QUIC"))?;
    let mut endpoint = Endpoint::new(EndpointConfig::default(), Some(server), socket, runtime)
        .map_err(|io| BindError::Quic { addr: listen, io })?;
    endpoint.set_default_client_config(client);
    let addr = endpoint
        .local_addr()
        .map_err(|io| BindError::Quic { addr: listen, io })?;
    Ok((endpoint, addr))
}

/// Ack-eliciting packets a peer may receive before it must acknowledge (see
/// `transport_config`).
const ACK_ELICITING_THRESHOLD: u32 = 10;

fn transport_config(initial_rtt: Duration) -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport.initial_rtt(initial_rtt);
    let idle_ms = u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    let idle = quinn::IdleTimeout::from(VarInt::from_u32(idle_ms));
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER_BYTES))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER_BYTES)
        .max_concurrent_uni_streams(UNI_STREAMS_MAX.into())
        .max_concurrent_bidi_streams(0u32.into());
    // Probes and their replies cross every link every few tens of milliseconds, so a
    // peer's acknowledgements can ride on them: ask it to acknowledge every 10th
    // ack-eliciting packet (or after its max_ack_delay) instead of every 2nd, which
    // halves the packets of an idle link.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(acks));
    transport
}

/// Accept connections until the endpoint closes.
pub(crate) async fn accept_loop(endpoint: Endpoint, context: LinkContext) {
    while let Some(incoming) = endpoint.accept().await {
        let context = context.clone();
        let connection = async move {
            let remote = incoming.remote_address();
            let (config, record) = match context.tls.server() {
                Ok(built) => built,
                Err(error) => {
                    tracing::error!(%remote, %error, "cannot build the TLS configuration");
                    return incoming.refuse();
                }
            };
            let connecting = incoming.accept_with(Arc::new(config));
            context.tls.refill();
            match async { connecting?.await }.await {
                Ok(conn) => established(conn, None, record, context).await,
                Err(error) => {
                    context.shared.counters.handshake(Handshake::Failed);
                    // The reason (e.g. "certificate rejected: expired ...") is the error.
                    tracing::info!(%remote, %error, "incoming handshake refused");
                }
            }
        };
        tokio::spawn(connection.in_current_span());
    }
}

/// Dial `addr`; report the link, or the failure, to the driver. A dial whose handshake
/// has not completed within `timeout` (`protocol.dial_timeout_ms`) fails: quinn does not
/// see ICMP port-unreachable, so a dead peer would otherwise hold it for the idle timeout.
pub(crate) async fn dial(
    endpoint: Endpoint,
    addr: SocketAddr,
    timeout: Duration,
    context: LinkContext,
) {
    let connecting = context.tls.client().and_then(|(config, record)| {
        let connecting = endpoint.connect_with(config, addr, SERVER_NAME)?;
        Ok((connecting, record))
    });
    let (connecting, record) = match connecting {
        Ok(connecting) => connecting,
        Err(error) => {
            let error = error.to_string();
            let _ = context.inputs.send(Input::DialFailed { addr, error }).await;
            return;
        }
    };
    context.tls.refill();
    let error = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => return established(conn, Some(addr), record, context).await,
        Ok(Err(error)) => {
            if let Some((kind, reason)) = crate::dial_log::classify(&error) {
                context
                    .shared
                    .counters
                    .dial_refusals
                    .record(addr, kind, &reason);
            }
            error.to_string()
        }
        Err(_) => format!("no handshake within {timeout:?}"),
    };
    context.shared.counters.handshake(Handshake::Failed);
    let _ = context.inputs.send(Input::DialFailed { addr, error }).await;
}

/// Authenticate, announce, read until the connection closes, announce the close.
async fn established(
    conn: Connection,
    dialed: Option<SocketAddr>,
    record: KxRecord,
    context: LinkContext,
) {
    let remote = conn.remote_address();
    // The handshake is over: read the group and release the record's slot.
    let kx_group = record.group();
    drop(record);
    let (name, spiffe_id, svid_expiry) = match authenticate(&conn) {
        Ok(peer) => peer,
        Err(reason) => {
            context.shared.counters.handshake(Handshake::Rejected);
            tracing::warn!(%remote, %reason, "peer refused: its certificate does not name a node");
            conn.close(
                close::UNAUTHORISED.into(),
                b"certificate does not name a node",
            );
            if let Some(addr) = dialed {
                let refusals = &context.shared.counters.dial_refusals;
                refusals.record(addr, DialRefusal::PeerUntrusted, &reason);
                let _ = context
                    .inputs
                    .send(Input::DialFailed {
                        addr,
                        error: reason,
                    })
                    .await;
            }
            return;
        }
    };
    let allowed = x0tta6bl4_identity::SpiffeId::parse(&spiffe_id)
        .is_ok_and(|id| context.shared.policy.neighbour(&id));
    if !allowed {
        context.shared.counters.handshake(Handshake::Rejected);
        conn.close(
            close::UNAUTHORISED.into(),
            b"refused by authorization policy",
        );
        if let Some(addr) = dialed {
            let error = format!("authorization policy denies {spiffe_id} as a neighbour");
            let refusals = &context.shared.counters.dial_refusals;
            refusals.record(addr, DialRefusal::PeerUntrusted, &error);
            let _ = context.inputs.send(Input::DialFailed { addr, error }).await;
        }
        return;
    }
    context.shared.counters.handshake(Handshake::Ok);
    context.shared.counters.kx_handshake(kx_group.as_deref());
    if !kx_group
        .as_deref()
        .is_some_and(x0tta6bl4_identity::is_post_quantum_group)
    {
        tracing::warn!(neighbour = %name, group = ?kx_group, "link uses a classical key exchange: it is not protected against a quantum adversary");
    }
    let id = context.next_id.fetch_add(1, Ordering::Relaxed);
    let link = NewLink {
        id,
        name: name.clone(),
        spiffe_id,
        conn: conn.clone(),
        dialed,
        kx_group,
        svid_expiry,
    };
    if context.inputs.send(Input::LinkUp(link)).await.is_err() {
        return; // the driver is gone: the node is stopping
    }
    let error = read_loop(&conn, id, &name, &context).await;
    if let Some(addr) = dialed {
        let refusals = &context.shared.counters.dial_refusals;
        match crate::dial_log::classify(&error) {
            Some((kind, reason)) => refusals.record(addr, kind, &reason),
            None => refusals.clear(addr),
        }
    }
    let _ = context
        .inputs
        .send(Input::LinkDown { id, name, error })
        .await;
}

/// The peer's node name, SPIFFE ID and SVID expiry from its (already verified) SVID.
fn authenticate(conn: &Connection) -> Result<(NodeName, String, std::time::SystemTime), String> {
    let identity = conn.peer_identity().ok_or("no peer certificate")?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not an X.509 certificate chain".to_owned())?;
    let id = x0tta6bl4_identity::peer_spiffe_id(&certs).map_err(|e| e.to_string())?;
    let name = id
        .node_name()
        .ok_or_else(|| format!("{id} is not a node SPIFFE ID (spiffe://TD/node/NAME)"))?;
    let expiry = x0tta6bl4_identity::peer_svid_expiry(&certs).map_err(|e| e.to_string())?;
    Ok((name, id.to_string(), expiry))
}

/// Forward datagrams and streams until the connection closes; returns why it closed.
async fn read_loop(
    conn: &Connection,
    id: u64,
    name: &NodeName,
    context: &LinkContext,
) -> ConnectionError {
    loop {
        tokio::select! {
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => forward(context, id, name, bytes),
                Err(error) => return error,
            },
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    let (context, name) = (context.clone(), name.clone());
                    tokio::spawn(read_stream(recv, id, name, context).in_current_span());
                }
                Err(error) => return error,
            },
        }
    }
}

async fn read_stream(mut recv: quinn::RecvStream, id: u64, name: NodeName, context: LinkContext) {
    match recv
        .read_to_end(x0tta6bl4_proto::wire::FRAME_BYTES_MAX)
        .await
    {
        Ok(bytes) => forward(&context, id, &name, Bytes::from(bytes)),
        Err(error) => {
            context.shared.counters.drop(DriverDrop::StreamReadFailed);
            tracing::debug!(neighbour = %name, %error, "stream read failed");
        }
    }
}

/// Hand a frame to the driver; if its queue is full, drop the frame and count it.
fn forward(context: &LinkContext, id: u64, name: &NodeName, bytes: Bytes) {
    let frame = Input::Frame {
        id,
        name: name.clone(),
        bytes,
    };
    if context.inputs.try_send(frame).is_err() {
        context.shared.counters.drop(DriverDrop::InputQueueFull);
    }
}

/// Send `bytes` to the peer of `conn`: a datagram when it fits, else a unidirectional
/// stream written by a task (at most `permits` such tasks run at once).
pub(crate) fn send(
    conn: &Connection,
    bytes: Bytes,
    permits: &Arc<tokio::sync::Semaphore>,
    shared: &Arc<Shared>,
) {
    let fits = conn
        .max_datagram_size()
        .is_some_and(|max| bytes.len() <= max);
    if fits {
        match conn.send_datagram(bytes.clone()) {
            Ok(()) => return,
            Err(quinn::SendDatagramError::TooLarge) => {} // the path MTU shrank: use a stream
            Err(_) => return shared.counters.drop(DriverDrop::SendFailed),
        }
    }
    send_stream(conn, bytes, permits, shared);
}

/// Send `bytes` on a new unidirectional stream: delivered reliably, unlike a datagram
/// (SVID updates go this way).
pub(crate) fn send_stream(
    conn: &Connection,
    bytes: Bytes,
    permits: &Arc<tokio::sync::Semaphore>,
    shared: &Arc<Shared>,
) {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        return shared.counters.drop(DriverDrop::StreamSendsFull);
    };
    let (conn, shared) = (conn.clone(), shared.clone());
    let write = async move {
        let _permit = permit;
        let result: anyhow::Result<()> = async {
            let mut stream = conn.open_uni().await?;
            stream.write_all(&bytes).await?;
            stream.finish()?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            shared.counters.drop(DriverDrop::SendFailed);
            tracing::debug!(remote = %conn.remote_address(), %error, "stream send failed");
        }
    };
    tokio::spawn(write.in_current_span());
}
