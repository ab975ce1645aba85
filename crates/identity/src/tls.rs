//! rustls certificate verifiers that authenticate peers by SPIFFE ID, not by DNS name.
//!
//! Both verifiers run [`TrustBundles::verify`]: webpki path validation against the
//! bundle of the peer's trust domain (ours or a federated one) plus the X509-SVID leaf
//! rules. Handshake signatures are checked with
//! [`rustls::crypto::verify_tls13_signature`] and the aws-lc-rs provider's algorithms.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::KeyUsage;

use crate::federation::TrustBundles;

/// The crypto provider of configurations built without a [`crate::KxMode`]: aws-lc-rs
/// with its default cipher suites and the groups of [`crate::KxMode::Hybrid`]
/// (X25519MLKEM768 preferred, X25519 as the fallback).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = crate::KxMode::Hybrid.groups();
    Arc::new(provider)
}

/// The provider's signature verification algorithms (for chains and handshakes).
pub(crate) fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// Used by clients: accepts a server whose certificate is a leaf SVID of our trust
/// domain or of a federated one (chaining to that domain's bundle), whatever server
/// name the connection was opened with.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    bundle: Arc<TrustBundles>,
}

impl SpiffeServerVerifier {
    pub(crate) fn new(bundle: Arc<TrustBundles>) -> Self {
        SpiffeServerVerifier { bundle }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_peer(
            &self.bundle,
            end_entity,
            intermediates,
            now,
            KeyUsage::server_auth(),
            "server",
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.bundle.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.bundle.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bundle.algorithms().supported_schemes()
    }
}

/// Verify a peer's certificate as a leaf SVID of its trust domain's bundle, logging the
/// outcome; `role` names the peer's side of the handshake.
fn verify_peer(
    bundle: &TrustBundles,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: KeyUsage,
    role: &str,
) -> Result<(), rustls::Error> {
    match bundle.verify(end_entity, intermediates, now, usage) {
        Ok(svid) => {
            tracing::debug!(peer = %svid.spiffe_id, "{role} SVID verified");
            Ok(())
        }
        Err(error) => {
            tracing::debug!(%error, "{role} SVID rejected");
            Err(error.into())
        }
    }
}

/// Used by servers: requires a client certificate that is a leaf SVID of our trust domain
/// or of a federated one.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    bundle: Arc<TrustBundles>,
    subjects: Vec<DistinguishedName>,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    pub(crate) fn new(bundle: Arc<TrustBundles>) -> Self {
        let subjects = bundle.subjects();
        SpiffeClientVerifier {
            bundle,
            subjects,
            mandatory: true,
        }
    }

    /// A verifier that lets clients without a certificate in (the CA service's joins),
    /// and verifies those that present one.
    pub(crate) fn optional(bundle: Arc<TrustBundles>) -> Self {
        SpiffeClientVerifier {
            mandatory: false,
            ..SpiffeClientVerifier::new(bundle)
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_peer(
            &self.bundle,
            end_entity,
            intermediates,
            now,
            KeyUsage::client_auth(),
            "client",
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.bundle.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.bundle.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bundle.algorithms().supported_schemes()
    }
}
