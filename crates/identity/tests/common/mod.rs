//! Helpers shared by the identity integration tests.
#![allow(dead_code)] // each test file uses a subset

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use std::path::Path;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use x0tta6bl4_identity::NodeIdentity;

/// Drive a handshake between two in-memory connections; the first error either side
/// reports ends it.
pub fn handshake(
    client_config: Arc<ClientConfig>,
    server_config: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let server_name = ServerName::try_from("ignored.invalid").unwrap();
    let mut client = ClientConnection::new(client_config, server_name)?;
    let mut server = ServerConnection::new(server_config)?;
    for _ in 0..16 {
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        let mut reader = bytes.as_slice();
        while !reader.is_empty() {
            server.read_tls(&mut reader).unwrap();
        }
        server.process_new_packets()?;

        let mut bytes = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut bytes).unwrap();
        }
        let mut reader = bytes.as_slice();
        while !reader.is_empty() {
            client.read_tls(&mut reader).unwrap();
        }
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish in 16 rounds");
}

/// Test-only: a client that accepts any server, to present a bad client certificate.
#[derive(Debug)]
pub struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate and key made by hand, signed by the CA in `ca_dir`.
pub struct Crafted {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

pub fn craft(ca_dir: &Path, edit: impl FnOnce(&mut CertificateParams)) -> Crafted {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca_key.pem")).unwrap()).unwrap();
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "crafted");
    params.subject_alt_names = vec![uri("spiffe://mesh.test/node/crafted")];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(1);
    edit(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Crafted {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

pub fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

/// Present `crafted` as a server to `good`'s client and as a client to `good`'s server;
/// both must refuse it. Returns the two errors.
pub fn refused_both_ways(good: &NodeIdentity, crafted: &Crafted) -> [rustls::Error; 2] {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let bad_server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![crafted.cert.clone()], crafted.key.clone_key())
        .unwrap();
    let client_side = handshake(good.client_config().unwrap(), Arc::new(bad_server))
        .expect_err("our client accepted a bad server certificate");

    let bad_client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_auth_cert(vec![crafted.cert.clone()], crafted.key.clone_key())
        .unwrap();
    let server_side = handshake(Arc::new(bad_client), good.server_config().unwrap())
        .expect_err("our server accepted a bad client certificate");
    [client_side, server_side]
}
