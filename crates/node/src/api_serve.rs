//! Serving the HTTP API with bounded resources (issue 11: thousands of half-sent
//! requests used to stay open for good and exhausted the node's file descriptors).
//!
//! axum's own `serve` has no timeouts and no connection cap, so this module runs the
//! accept loop itself and hands each connection to hyper's HTTP/1.1 server:
//! - at most `[api] connections_max` connections are open at once (TLS handshakes
//!   included). At the cap a new connection evicts the one that has been idle the
//!   longest (no request in progress: a client that has not finished sending its
//!   request head, or a keep-alive connection between requests); when every open
//!   connection has a request in progress, the new one is closed at once. Either way
//!   the file descriptors the API holds stay bounded, and a flood of stalled
//!   connections cannot keep a prompt client out;
//! - a request head must arrive within `[api] header_timeout_ms` (hyper's header read
//!   timeout, which also closes idle keep-alive connections), at most
//!   [`HEAD_BYTES_MAX`] bytes and [`HEADERS_MAX`] headers;
//! - the TLS handshake (`api_mtls`) runs in the connection's task, bounded by
//!   [`HANDSHAKE_TIMEOUT`], so a slow handshake never holds up the accept loop;
//! - the whole request, body included, must be handled within
//!   `[api] request_timeout_ms` (the `api` module's timeout layer answers 408).
//!
//! Public so other services of the binary (`x0tta6bl4 rag serve`) serve their routers
//! with the same limits, TLS handshake and counters instead of a copy of this loop.
//!
//! Every refusal and timeout is counted in `x0tta6bl4_api_connections_refused_total`
//! by reason; `x0tta6bl4_api_connections_open` is the number open now. The API runs on
//! its own tasks and only reaches the driver through its bounded command queue, so a
//! flooded API does not hold up the mesh.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::api_tls::Caller;
use crate::state::stopped;

/// Longest TLS handshake of an API client (`api_mtls`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head buffered, in bytes (hyper's read buffer; its minimum is 8 KiB).
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most headers in one request.
pub const HEADERS_MAX: usize = 64;
/// After the node is asked to stop: how long requests in progress may finish.
const DRAIN: Duration = Duration::from_millis(1500);
/// Pause after a failed `accept` (e.g. the process is out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The API's connection limits (`[api]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once (TLS handshakes included).
    pub connections_max: usize,
    /// Longest wait for a request head.
    pub header_timeout: Duration,
    /// Longest time to receive and answer a request, body included (enforced by the
    /// router's own timeout layer, which counts [`Refusal::RequestTimeout`]).
    pub request_timeout: Duration,
}

/// Why the API refused or closed a connection or request; the `reason` label of
/// `api_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// At `connections_max` with a request in progress on every connection.
    Limit,
    /// Closed, idle the longest, to make room for a new connection at the cap.
    Evicted,
    /// The request head did not arrive within `header_timeout_ms`.
    HeaderTimeout,
    /// The request (body included) took longer than `request_timeout_ms`: 408.
    RequestTimeout,
    /// The TLS handshake failed or timed out (`api_mtls`).
    TlsHandshake,
    /// `accept` failed (e.g. out of file descriptors).
    AcceptFailed,
}

impl Refusal {
    /// Every reason.
    pub const ALL: [Refusal; 6] = [
        Refusal::Limit,
        Refusal::Evicted,
        Refusal::HeaderTimeout,
        Refusal::RequestTimeout,
        Refusal::TlsHandshake,
        Refusal::AcceptFailed,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Evicted => "evicted",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::RequestTimeout => "request_timeout",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::AcceptFailed => "accept_failed",
        }
    }
}

/// The API's connection counters, read by the metrics collector.
#[derive(Debug, Default)]
pub struct ApiCounters {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl ApiCounters {
    /// Count a refusal.
    pub fn refuse(&self, reason: Refusal) {
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.refused[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals counted for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.refused[index].load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// One open connection in the table.
struct Slot {
    /// Requests being handled (HTTP/1.1: 0 or 1).
    in_flight: u32,
    /// When the connection last became idle (accepted, or its last request answered).
    idle_since: Instant,
    /// Notified to close the connection (eviction).
    close: Arc<Notify>,
}

/// The open connections, by accept order.
struct Connections {
    slots: Mutex<BTreeMap<u64, Slot>>,
    next_id: AtomicU64,
    max: usize,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take a slot for a new connection: at the cap, evict the connection idle the
    /// longest; `Err` when every connection has a request in progress.
    fn admit(&self, counters: &ApiCounters) -> Result<(u64, Arc<Notify>), Refusal> {
        let mut slots = self.lock();
        if slots.len() >= self.max {
            let oldest = slots
                .iter()
                .filter(|(_, slot)| slot.in_flight == 0)
                .min_by_key(|(_, slot)| slot.idle_since)
                .map(|(id, _)| *id)
                .ok_or(Refusal::Limit)?;
            if let Some(evicted) = slots.remove(&oldest) {
                evicted.close.notify_one();
                counters.refuse(Refusal::Evicted);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let slot = Slot {
            in_flight: 0,
            idle_since: Instant::now(),
            close: close.clone(),
        };
        slots.insert(id, slot);
        debug_assert!(slots.len() <= self.max);
        Ok((id, close))
    }

    fn release(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn request(&self, id: u64, started: bool) {
        if let Some(slot) = self.lock().get_mut(&id) {
            if started {
                slot.in_flight += 1;
            } else {
                slot.in_flight = slot.in_flight.saturating_sub(1);
                slot.idle_since = Instant::now();
            }
        }
    }
}

/// Everything a connection task needs.
struct Serving {
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    counters: Arc<ApiCounters>,
    connections: Connections,
}

/// Marks a request in progress on connection `id` while alive.
struct InFlight(Arc<Serving>, u64);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.connections.request(self.1, false);
    }
}

/// Frees connection `id`'s slot and the open gauge when its task ends (or is aborted).
struct Open(Arc<Serving>, u64);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.release(self.1);
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve `router` on `listener` (over TLS with `tls`) until `stop` turns true, then let
/// requests in progress finish for up to [`DRAIN`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    counters: Arc<ApiCounters>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    assert!(limits.connections_max > 0, "validated by the configuration");
    let serving = Arc::new(Serving {
        router,
        tls: tls.map(TlsAcceptor::from),
        limits,
        counters,
        connections: Connections {
            slots: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            max: limits.connections_max,
        },
    });
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                serving.counters.refuse(Refusal::AcceptFailed);
                tracing::debug!(%error, "API accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let (id, close) = match serving.connections.admit(&serving.counters) {
            Ok(admitted) => admitted,
            Err(reason) => {
                serving.counters.refuse(reason);
                continue; // dropping `tcp` closes it
            }
        };
        serving.counters.accepted.fetch_add(1, Ordering::Relaxed);
        serving.counters.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(serving.clone(), id);
        let task = connection(tcp, addr, open, close, stop.clone());
        tasks.spawn(task.in_current_span());
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN, drain).await;
    Ok(()) // dropping `tasks` aborts the connections still open
}

/// One connection: the TLS handshake (with `api_mtls`), then HTTP/1.1.
async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    open: Open,
    close: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let serving = open.0.clone();
    let Some(acceptor) = &serving.tls else {
        let caller = Caller { addr, id: None };
        return serve_http(tcp, caller, &open, &close, stop).await;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let handshake = tokio::select! {
        handshake = handshake => handshake,
        () = close.notified() => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            serving.counters.refuse(Refusal::TlsHandshake);
            return tracing::debug!(remote = %addr, %error, "API TLS handshake refused");
        }
        Err(_) => {
            serving.counters.refuse(Refusal::TlsHandshake);
            return tracing::debug!(remote = %addr, "API TLS handshake timed out");
        }
    };
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| x0tta6bl4_identity::peer_spiffe_id(certs).ok());
    serve_http(tls, Caller { addr, id }, &open, &close, stop).await;
}

/// Serve HTTP/1.1 requests on `io` until the client closes, a limit closes it, it is
/// evicted, or the node stops (then after the request in progress).
async fn serve_http<I>(
    io: I,
    caller: Caller,
    open: &Open,
    close: &Notify,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (serving, id, remote) = (open.0.clone(), open.1, caller.addr);
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        let mut request = request.map(axum::body::Body::new);
        let info = axum::extract::ConnectInfo(caller.clone());
        request.extensions_mut().insert(info);
        serving.connections.request(id, true);
        let in_flight = InFlight(serving.clone(), id);
        let router = serving.router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(open.0.limits.header_timeout)
        .max_buf_size(HEAD_BYTES_MAX)
        .max_headers(HEADERS_MAX);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        open.0.counters.refuse(Refusal::HeaderTimeout);
                    }
                    tracing::debug!(%remote, %error, "API connection ended");
                }
                return;
            }
            () = close.notified() => return,
            () = stopped(&mut stop), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
