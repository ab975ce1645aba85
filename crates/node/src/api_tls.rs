//! Mutual TLS for the HTTP API (`[identity] api_mtls = true`): the connection task of
//! [`crate::api_serve`] runs the TLS handshake (our SVID as server certificate, a
//! client SVID verified when presented) and hands each request the caller's SPIFFE ID
//! as connection info. The API's `authorize` layer then lets the policy decide per
//! endpoint; without a client certificate only `/health/*` and `/metrics` answer (when
//! `api_open`, the default).
//!
//! The server's CertificateRequest names our bundle's CAs as DER X.501 names, so
//! OpenSSL (curl, Python's `ssl`, `openssl s_client`) and Go (Prometheus) clients pick
//! and send their SVID like the project's own CLI does.
//!
//! Public so other services (`x0tta6bl4 rag serve`) read the caller the same way.

use std::net::SocketAddr;

use x0tta6bl4_identity::SpiffeId;

/// Who is calling: the remote address and, with a client SVID, its SPIFFE ID.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its SPIFFE ID, when it presented an SVID (always, when the TLS configuration
    /// requires client certificates).
    pub id: Option<SpiffeId>,
}
