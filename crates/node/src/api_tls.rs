//! Mutual TLS for the HTTP API (`[identity] api_mtls = true`): a listener that runs the
//! TLS handshake (our SVID as server certificate, a client SVID verified when presented)
//! and hands axum the caller's SPIFFE ID as connection info. The API's `authorize`
//! layer then lets the policy decide per endpoint; without a client certificate only
//! `/health/*` and `/metrics` answer (when `api_open`, the default).
//!
//! Handshakes run one at a time in the accept loop, each bounded by
//! [`HANDSHAKE_TIMEOUT`]: an operator API, not a public one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x0tta6bl4_identity::SpiffeId;

/// Longest TLS handshake of an API client.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is calling: the remote address and, with a client SVID, its SPIFFE ID.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    #[allow(dead_code)] // kept for logs and future use
    pub addr: SocketAddr,
    pub id: Option<SpiffeId>,
}

pub(crate) struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Caller;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp));
            match handshake.await {
                Ok(Ok(tls)) => {
                    let id = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| x0tta6bl4_identity::peer_spiffe_id(certs).ok());
                    return (tls, Caller { addr, id });
                }
                Ok(Err(error)) => {
                    tracing::info!(remote = %addr, %error, "API TLS handshake refused")
                }
                Err(_) => tracing::info!(remote = %addr, "API TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Caller {
            addr: self.tcp.local_addr()?,
            id: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for Caller
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
