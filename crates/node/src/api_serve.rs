//! Serving the HTTP API with bounded resources (issue 11: thousands of half-sent
//! requests used to stay open for good and exhausted the node's file descriptors, and
//! a connection storm against the API starved the mesh).
//!
//! The API runs on a tokio runtime and an OS thread of its own ([`spawn`]): a flooded
//! API never puts a task beside the driver (measured under a connection storm, before:
//! up to ~200 API tasks on the driver's two workers and protocol timers handled 0.2 to
//! 0.8 s late, so probes went out late and live neighbours were declared down; after:
//! none, `tests/api_flood.rs`). It reaches the driver only through its bounded command
//! queue and the snapshot the driver publishes.
//!
//! axum's own `serve` has no timeouts and no connection cap, so this module runs the
//! accept loop itself and hands each connection to hyper's HTTP/1.1 server:
//! - at most `[api] accepts_per_second` connections are accepted a second (a token
//!   bucket, bursts of as many); beyond, new connections wait in the kernel's listen
//!   queue, so a reconnect storm costs a bounded share of the CPU, and once the queue
//!   is full the kernel drops the storm's SYNs and its clients back off;
//! - at most `[api] connections_max` connections are open at once (TLS handshakes
//!   included): a connection over the cap is closed at accept, so the file descriptors
//!   the API holds never exceed the cap. It also tells the connection idle the longest
//!   (no request in progress: a client that has not finished sending its request head,
//!   or a keep-alive connection between requests), if idle for at least
//!   [`EVICT_IDLE_MIN`], to close, making room for a later connection: a flood of
//!   stalled connections cannot keep prompt clients out for long, and a client that
//!   reconnects at once gets each connection evicted at most every `EVICT_IDLE_MIN`;
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
//! by reason, pauses at the accept rate in `x0tta6bl4_api_accept_throttled_total`;
//! `x0tta6bl4_api_connections_open` is the number open now.

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
use tokio::sync::{oneshot, watch, Notify};
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
/// At the cap, a connection idle for less than this is not evicted: every client has
/// this long to send its request, and a client that reconnects as soon as it is closed
/// gets each of its connections evicted at most this often.
pub(crate) const EVICT_IDLE_MIN: Duration = Duration::from_secs(1);

/// The API's connection limits (`[api]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once (TLS handshakes included).
    pub connections_max: usize,
    /// New connections accepted per second at most; beyond, they wait in the
    /// kernel's listen queue.
    pub accepts_per_second: u32,
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
    /// Over `connections_max`: closed at accept.
    Limit,
    /// Closed, idle the longest, to make room for a later connection at the cap.
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
    throttled: AtomicU64,
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

    /// Times the accept loop paused at `accepts_per_second`.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// Run `next` on `request` within `limit` (the body included: a client that sends it
/// slowly, or not at all, is cut off); past it, count a [`Refusal::RequestTimeout`] and
/// answer `408 {"error": ...}` naming the request and `setting`, the limit's knob.
pub async fn within_request_timeout(
    limit: Duration,
    counters: &ApiCounters,
    setting: &str,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            counters.refuse(Refusal::RequestTimeout);
            let error = format!(
                "{method} {path} was not received and answered within {} ms: send the whole \
                 request at once ({setting})",
                limit.as_millis()
            );
            (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                axum::Json(serde_json::json!({ "error": error })),
            )
                .into_response()
        }
    }
}

/// One open connection in the table.
struct Slot {
    /// Requests being handled (HTTP/1.1: 0 or 1).
    in_flight: u32,
    /// When the connection last became idle (accepted, or its last request answered).
    idle_since: Instant,
    /// Told to close (eviction); the slot stays taken until its socket is closed.
    evicted: bool,
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

    /// Take a slot for a new connection. At the cap the new connection is refused (the
    /// caller closes it at once, so the descriptors held never exceed the cap), and the
    /// connection idle the longest, if idle for at least [`EVICT_IDLE_MIN`], is told to
    /// close to make room for a later one.
    fn admit(&self, counters: &ApiCounters) -> Result<(u64, Arc<Notify>), Refusal> {
        let mut slots = self.lock();
        if slots.len() >= self.max {
            let now = Instant::now();
            let oldest = slots
                .values_mut()
                .filter(|slot| slot.in_flight == 0 && !slot.evicted)
                .filter(|slot| now.duration_since(slot.idle_since) >= EVICT_IDLE_MIN)
                .min_by_key(|slot| slot.idle_since);
            if let Some(oldest) = oldest {
                // Its slot is freed when its task has closed the socket.
                oldest.evicted = true;
                oldest.close.notify_one();
                counters.refuse(Refusal::Evicted);
            }
            return Err(Refusal::Limit);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let slot = Slot {
            in_flight: 0,
            idle_since: Instant::now(),
            evicted: false,
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

/// A token bucket over accepts: at most `rate` a second, in bursts of up to `rate`.
struct AcceptRate {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl AcceptRate {
    fn new(per_second: u32) -> AcceptRate {
        let rate = f64::from(per_second.max(1));
        AcceptRate {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    /// How long to wait before the next accept (zero when one may be taken now).
    fn wait(&mut self, now: Instant) -> Duration {
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    /// One accept taken.
    fn take(&mut self) {
        self.tokens -= 1.0;
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

/// Serve the API on a runtime and a thread of its own (see the module docs): the
/// driver's runtime never runs an API task. Returns at once; the receiver gets
/// [`serve`]'s result when the API has stopped.
pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    counters: Arc<ApiCounters>,
    stop: watch::Receiver<bool>,
    span: tracing::Span,
) -> std::io::Result<oneshot::Receiver<std::io::Result<()>>> {
    // Moved to the API's own reactor.
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, result) = oneshot::channel();
    let run = async move {
        let listener = TcpListener::from_std(listener)?;
        serve(listener, router, tls, limits, counters, stop).await
    };
    std::thread::Builder::new()
        .name("x0tta6bl4-api".into())
        .spawn(move || {
            let _ = done.send(runtime.block_on(run.instrument(span)));
        })?;
    Ok(result)
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
    let mut rate = AcceptRate::new(limits.accepts_per_second);
    loop {
        let wait = rate.wait(Instant::now());
        if !wait.is_zero() {
            // New connections wait in the kernel's listen queue meanwhile.
            serving.counters.throttled.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut stop) => break,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        rate.take();
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
                drop(tcp); // closed at accept: the cap bounds the descriptors at all times
                continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_come_in_bursts_then_at_the_rate() {
        let mut rate = AcceptRate::new(100);
        let start = rate.at;
        let mut burst = 0;
        while rate.wait(start).is_zero() {
            rate.take();
            burst += 1;
        }
        assert_eq!(burst, 100);
        let wait = rate.wait(start);
        assert!(wait > Duration::from_millis(9) && wait <= Duration::from_millis(10));
        // 50 ms later, 5 more.
        let later = start + Duration::from_millis(50);
        let mut more = 0;
        while rate.wait(later).is_zero() {
            rate.take();
            more += 1;
        }
        assert_eq!(more, 5);
        // Idle for long: the bucket holds one second's worth, no more.
        let much_later = later + Duration::from_secs(60);
        let mut refilled = 0;
        while rate.wait(much_later).is_zero() {
            rate.take();
            refilled += 1;
        }
        assert_eq!(refilled, 100);
    }

    #[tokio::test]
    async fn over_the_cap_is_refused_and_the_longest_idle_evicted_without_freeing_its_slot() {
        let counters = ApiCounters::default();
        let connections = Connections {
            slots: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            max: 2,
        };
        let (first, first_close) = connections.admit(&counters).unwrap();
        let (second, _) = connections.admit(&counters).unwrap();
        // Both were idle for less than EVICT_IDLE_MIN: refused, nothing evicted.
        assert_eq!(connections.admit(&counters).err(), Some(Refusal::Limit));
        assert_eq!(counters.refused(Refusal::Evicted), 0);
        // The first idle for long, the second busy: the first is told to close; the
        // newcomer is still refused, and the slot stays taken until it has closed.
        let long_ago = Instant::now() - EVICT_IDLE_MIN * 2;
        connections.lock().get_mut(&first).unwrap().idle_since = long_ago;
        connections.lock().get_mut(&second).unwrap().idle_since = long_ago;
        connections.request(second, true);
        assert_eq!(connections.admit(&counters).err(), Some(Refusal::Limit));
        assert_eq!(counters.refused(Refusal::Evicted), 1);
        let told = tokio::time::timeout(Duration::from_secs(1), first_close.notified());
        assert!(told.await.is_ok());
        assert_eq!(connections.lock().len(), 2);
        // Not evicted twice.
        assert_eq!(connections.admit(&counters).err(), Some(Refusal::Limit));
        assert_eq!(counters.refused(Refusal::Evicted), 1);
        // Once it has closed, the next connection gets its slot.
        connections.release(first);
        assert!(connections.admit(&counters).is_ok());
    }
}
