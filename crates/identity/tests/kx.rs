//! Post-quantum key exchange: real TLS 1.3 handshakes in memory between configurations
//! of each `KxMode`, and peers restricted to classical groups.

mod common;

use common::{handshake, AcceptAnyServer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{aws_lc_rs, SupportedKxGroup};
use rustls::{ClientConfig, NamedGroup, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x0tta6bl4_identity::{CertificateAuthority, KxMode, NodeIdentity, TrustDomain};
use x0tta6bl4_proto::NodeName;

fn nodes(root: &Path) -> (NodeIdentity, NodeIdentity) {
    let td: TrustDomain = "mesh.test".parse().unwrap();
    let ca = CertificateAuthority::init(&root.join("ca"), &td).unwrap();
    let load = |n: &str| {
        let name = NodeName::new(n).unwrap();
        ca.issue_node(&name, Duration::from_secs(3600), &root.join(n))
            .unwrap();
        NodeIdentity::load(&root.join(n)).unwrap()
    };
    (load("a"), load("b"))
}

fn svid_of(dir: &Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let pem = std::fs::read(dir.join("svid.pem")).unwrap();
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let pem = std::fs::read(dir.join("svid_key.pem")).unwrap();
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .unwrap()
        .unwrap();
    (chain, key)
}

fn provider_with(groups: &[&'static dyn SupportedKxGroup]) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = groups.to_vec();
    Arc::new(provider)
}

/// A peer that is not one of ours: only `groups`, presenting the SVID in `dir`.
fn foreign_client(dir: &Path, groups: &[&'static dyn SupportedKxGroup]) -> Arc<ClientConfig> {
    let (chain, key) = svid_of(dir);
    let config = ClientConfig::builder_with_provider(provider_with(groups))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

fn foreign_server(dir: &Path, groups: &[&'static dyn SupportedKxGroup]) -> Arc<ServerConfig> {
    let (chain, key) = svid_of(dir);
    let config = ServerConfig::builder_with_provider(provider_with(groups))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

#[test]
fn every_mode_pair_of_ours_negotiates_x25519mlkem768_and_records_it() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = nodes(root.path());
    for client_mode in KxMode::ALL {
        for server_mode in KxMode::ALL {
            let (client_config, client_record) = a.client_config_recorded(client_mode).unwrap();
            let (server_config, server_record) = b.server_config_recorded(server_mode).unwrap();
            assert_eq!(client_record.group(), None);
            let (client, server) = handshake(client_config, server_config).unwrap();
            let negotiated = client.negotiated_key_exchange_group().unwrap().name();
            assert_eq!(negotiated, NamedGroup::X25519MLKEM768);
            assert_eq!(
                server.negotiated_key_exchange_group().unwrap().name(),
                negotiated
            );
            let pair = format!("{client_mode} -> {server_mode}");
            assert_eq!(
                client_record.group().as_deref(),
                Some("X25519MLKEM768"),
                "{pair}"
            );
            assert_eq!(
                server_record.group().as_deref(),
                Some("X25519MLKEM768"),
                "{pair}"
            );
        }
    }
}

#[test]
fn hybrid_falls_back_to_x25519_and_records_the_classical_group() {
    let root = tempfile::tempdir().unwrap();
    let (_, b) = nodes(root.path());
    // Our server, a classical-only client.
    let (server_config, record) = b.server_config_recorded(KxMode::Hybrid).unwrap();
    let client = foreign_client(&root.path().join("a"), &[aws_lc_rs::kx_group::X25519]);
    handshake(client, server_config).unwrap();
    assert_eq!(record.group().as_deref(), Some("X25519"));
    assert!(!x0tta6bl4_identity::is_post_quantum_group("X25519"));
    assert!(x0tta6bl4_identity::is_post_quantum_group("X25519MLKEM768"));

    // Our client, a classical-only server: the server picks X25519, the hybrid
    // share's classical component.
    let (client_config, record) = b.client_config_recorded(KxMode::Hybrid).unwrap();
    let server = foreign_server(&root.path().join("a"), &[aws_lc_rs::kx_group::X25519]);
    let (client, _) = handshake(client_config, server).unwrap();
    assert_eq!(
        client.negotiated_key_exchange_group().unwrap().name(),
        NamedGroup::X25519
    );
    assert_eq!(record.group().as_deref(), Some("X25519"));
}

#[test]
fn only_classical_allowed_accepts_nist_curves() {
    let root = tempfile::tempdir().unwrap();
    let (_, b) = nodes(root.path());
    let p256 = &[aws_lc_rs::kx_group::SECP256R1];
    let client = || foreign_client(&root.path().join("a"), p256);
    let (server_config, record) = b.server_config_recorded(KxMode::ClassicalAllowed).unwrap();
    handshake(client(), server_config).unwrap();
    assert_eq!(record.group().as_deref(), Some("secp256r1"));
    for mode in [KxMode::Hybrid, KxMode::StrictPq] {
        let (server_config, record) = b.server_config_recorded(mode).unwrap();
        let error = handshake(client(), server_config).unwrap_err();
        assert!(
            matches!(error, rustls::Error::PeerIncompatible(_)),
            "{mode}: {error:?}"
        );
        assert_eq!(record.group(), None);
    }
}

#[test]
fn strict_pq_refuses_classical_peers_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    let (_, b) = nodes(root.path());
    let classical = &[aws_lc_rs::kx_group::X25519, aws_lc_rs::kx_group::SECP256R1];
    let (server_config, record) = b.server_config_recorded(KxMode::StrictPq).unwrap();
    let client = foreign_client(&root.path().join("a"), classical);
    let error = handshake(client, server_config).unwrap_err();
    assert!(
        matches!(error, rustls::Error::PeerIncompatible(_)),
        "{error:?}"
    );
    assert_eq!(record.group(), None);

    let (client_config, record) = b.client_config_recorded(KxMode::StrictPq).unwrap();
    let server = foreign_server(&root.path().join("a"), classical);
    let error = handshake(client_config, server).unwrap_err();
    assert!(
        matches!(error, rustls::Error::PeerIncompatible(_)),
        "{error:?}"
    );
    assert_eq!(record.group(), None);
}

#[test]
fn records_are_independent_and_reused_slots_start_empty() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = nodes(root.path());
    for _ in 0..3 {
        let (c1, r1) = a.client_config_recorded(KxMode::Hybrid).unwrap();
        let (s1, q1) = b.server_config_recorded(KxMode::Hybrid).unwrap();
        let (_, q2) = b.server_config_recorded(KxMode::Hybrid).unwrap();
        handshake(c1, s1).unwrap();
        assert_eq!(r1.group().as_deref(), Some("X25519MLKEM768"));
        assert_eq!(q1.group().as_deref(), Some("X25519MLKEM768"));
        assert_eq!(q2.group(), None, "a record other handshakes never touched");
    }
}

#[test]
fn modes_parse_from_their_config_names() {
    for mode in KxMode::ALL {
        assert_eq!(mode.as_str().parse::<KxMode>(), Ok(mode));
    }
    let error = "pq".parse::<KxMode>().unwrap_err();
    assert!(error.contains("strict-pq"), "{error}");
    assert_eq!(KxMode::default(), KxMode::Hybrid);
}
