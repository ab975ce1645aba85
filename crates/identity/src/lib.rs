//! SPIFFE identity for x0tta6bl4 nodes: a trust-domain CA, X.509-SVIDs, and the rustls
//! configurations that make every mesh link mutually authenticated.
//!
//! Key design decision: a node is identified by the URI SAN of its certificate,
//! `spiffe://TRUST-DOMAIN/node/NAME`, never by a DNS name or an address. Every place
//! that accepts a certificate — the TLS client's verifier, the TLS server's verifier and
//! the link-state [`Authenticator`](x0tta6bl4_proto::Authenticator) — runs the same
//! check: webpki path validation against the trust bundle, then the rules of the SPIFFE
//! X509-SVID specification (exactly one URI SAN, a SPIFFE ID of the bundle's trust domain, a
//! leaf with `CA=false`, `digitalSignature` and no `keyCertSign`/`cRLSign`, both TLS
//! usages when EKU is present, valid now). Keys are ECDSA P-256; TLS is 1.3 only with
//! the aws-lc-rs provider, which negotiates the hybrid post-quantum group X25519MLKEM768.
//!
//! Files (see [`CertificateAuthority`] for the CA directory): an SVID directory holds
//! [`SVID_CERT_FILE`], [`SVID_KEY_FILE`] (mode 0600) and [`BUNDLE_FILE`].
//!
//! Around that core: the CA service ([`join`], [`renew`], join tokens, `ca serve`),
//! three-step root rotation ([`RotationStep`]), CA-signed [`Revocation`]s, the
//! authorization [`Policy`], and key-exchange modes that record the negotiated group
//! ([`KxMode`], [`KxRecord`]). The trust bundle is a list of CAs (two during a
//! rotation), every connection re-validates the peer (no TLS session resumption), and
//! errors are `#[non_exhaustive]`. Federation ([`FederatedBundles`]): peers of other
//! trust domains are verified against their own domain's bundle, and [`NameBindings`]
//! keeps two domains' nodes of one name apart. docs/identity.md is the operator's view.
#![forbid(unsafe_code)]
#![deny(unused_must_use)]
#![warn(missing_docs)]

mod auth;
mod ca;
mod error;
mod federation;
mod files;
mod inspect;
mod kx;
mod node;
mod policy;
mod revocation;
mod rotation;
mod service;
mod spiffe;
mod svid;
mod tls;

use rustls_pki_types::CertificateDer;

pub use auth::{SignerHandle, VERIFIED_CREDENTIALS_MAX};
pub use ca::{
    CertificateAuthority, IssuedSvid, SvidFiles, CA_CERT_FILE, CA_CONFIG_FILE, CA_KEY_FILE, CA_TTL,
    CLOCK_SKEW_ALLOWANCE, SVID_TTL_DEFAULT,
};
pub use error::{Error, SvidError};
pub use federation::{
    parse_federation, FederatedBundles, NameBindings, FEDERATED_DOMAINS_MAX, NAME_BINDINGS_MAX,
};
pub use inspect::{inspect_certificate, BundleCheck, CertificateReport};
pub use kx::{is_post_quantum_group, KxMode, KxRecord};
pub use node::NodeIdentity;
pub use policy::{
    Action, Decision, Policy, PolicyError, Verdict, POLICY_FILE_LEN_MAX, POLICY_RULES_MAX,
};
pub use revocation::{Revocation, REVOCATIONS_FILE, REVOCATION_LEN_MAX, REVOCATION_MAGIC};
pub use rotation::{
    RotationStep, NEXT_CA_CERT_FILE, NEXT_CA_KEY_FILE, RETIRED_CA_CERT_FILE, RETIRED_CA_KEY_FILE,
};
pub use service::{
    join, renew, serve_from_dir, EXCHANGE_TIMEOUT, LINE_LEN_MAX, SERVICE_SVID_TTL_DEFAULT,
    TOKENS_FILE, TOKENS_MAX,
};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain, SPIFFE_ID_LEN_MAX, TRUST_DOMAIN_LEN_MAX};

/// The ALPN protocol of x0tta6bl4 links.
pub const ALPN: &[u8] = b"x0tta6bl4/1";
/// The SVID certificate file of an SVID directory.
pub const SVID_CERT_FILE: &str = "svid.pem";
/// The SVID private key file of an SVID directory (mode 0600).
pub const SVID_KEY_FILE: &str = "svid_key.pem";
/// The trust bundle file, in both CA and SVID directories.
pub const BUNDLE_FILE: &str = "bundle.pem";

/// The SPIFFE ID of a peer from the certificates it presented in a handshake (leaf
/// first, as quinn's `peer_identity()` and rustls' `peer_certificates()` give them).
///
/// It only extracts the ID: the verifiers of [`NodeIdentity::server_config`] and
/// [`NodeIdentity::client_config`] have already validated the chain. Use
/// [`SpiffeId::node_name`] to get the peer's node name.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, Error> {
    let leaf = certs.first().ok_or(SvidError::Missing)?;
    let x509 = svid::parse(leaf)?;
    Ok(svid::spiffe_id_of(&x509)?)
}

/// Make aws-lc-rs (the provider every configuration of this crate uses, with the
/// post-quantum hybrid group) the process-wide default rustls provider, for libraries
/// that look the default up rather than take a provider, such as reqwest's rustls
/// backend. Idempotent; an already installed default is kept.
pub fn install_default_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing it is fine: one default wins.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// When the SVID a peer presented stops being valid: the first instant the verifiers of
/// [`NodeIdentity::server_config`] and [`NodeIdentity::client_config`] refuse it (one
/// second past the leaf's notAfter, which they compare in whole seconds).
///
/// Like [`peer_spiffe_id`], it only reads the leaf of an already validated chain.
pub fn peer_svid_expiry(certs: &[CertificateDer<'_>]) -> Result<std::time::SystemTime, Error> {
    let leaf = certs.first().ok_or(SvidError::Missing)?;
    let (_, not_after) = svid::validity(&svid::parse(leaf)?);
    Ok(svid::refused_from(not_after))
}
