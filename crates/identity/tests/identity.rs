//! CA, SVID files, mutual TLS handshakes in memory and the link-state authenticator.

mod common;

use common::{craft, handshake, refused_both_ways, uri};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use x0tta6bl4_identity::{
    peer_spiffe_id, CertificateAuthority, Error, NodeIdentity, SpiffeId, TrustDomain, ALPN,
};
use x0tta6bl4_proto::{AuthError, NodeName};

const TTL: Duration = Duration::from_secs(3600);

fn td() -> TrustDomain {
    "mesh.test".parse().unwrap()
}

fn name(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

/// A CA in `root/ca` and node SVIDs in `root/NAME`.
fn ca_with_nodes(root: &Path, names: &[&str]) -> (CertificateAuthority, Vec<NodeIdentity>) {
    let ca = CertificateAuthority::init(&root.join("ca"), &td()).unwrap();
    let nodes = names
        .iter()
        .map(|n| {
            ca.issue_node(&name(n), TTL, &root.join(n)).unwrap();
            NodeIdentity::load(&root.join(n)).unwrap()
        })
        .collect();
    (ca, nodes)
}

#[test]
fn ca_init_issue_load_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let (ca, nodes) = ca_with_nodes(root.path(), &["alpha"]);
    let node = &nodes[0];
    assert_eq!(
        node.spiffe_id().to_string(),
        "spiffe://mesh.test/node/alpha"
    );
    assert_eq!(node.name(), &name("alpha"));
    assert_eq!(node.trust_domain(), &td());
    let remaining = node.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(remaining <= TTL && remaining > TTL - Duration::from_secs(60));

    let reopened = CertificateAuthority::open(&root.path().join("ca")).unwrap();
    assert_eq!(reopened.trust_domain(), ca.trust_domain());
    let files = reopened
        .issue_node(&name("beta"), TTL, &root.path().join("beta"))
        .unwrap();
    assert_eq!(files.spiffe_id.to_string(), "spiffe://mesh.test/node/beta");
    assert_eq!(files.key, root.path().join("beta/svid_key.pem"));
    let beta = NodeIdentity::load(&root.path().join("beta")).unwrap();
    assert_eq!(beta.not_after(), files.not_after);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [root.path().join("ca/ca_key.pem"), files.key.clone()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
    let config = std::fs::read_to_string(root.path().join("ca/ca.toml")).unwrap();
    assert!(config.contains("trust_domain = \"mesh.test\""), "{config}");
    assert_eq!(
        std::fs::read(root.path().join("ca/bundle.pem")).unwrap(),
        std::fs::read(&files.bundle).unwrap()
    );

    // Re-issuing replaces the files in place.
    ca.issue_node(&name("beta"), TTL, &root.path().join("beta"))
        .unwrap();
    assert!(NodeIdentity::load(&root.path().join("beta")).is_ok());
}

#[test]
fn init_refuses_an_existing_ca() {
    let root = tempfile::tempdir().unwrap();
    CertificateAuthority::init(root.path(), &td()).unwrap();
    let key_before = std::fs::read(root.path().join("ca_key.pem")).unwrap();
    let error = CertificateAuthority::init(root.path(), &td()).unwrap_err();
    assert!(matches!(error, Error::CaExists { .. }), "{error}");
    assert!(
        error.to_string().contains("refusing to overwrite"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(root.path().join("ca_key.pem")).unwrap(),
        key_before
    );
}

#[test]
fn bad_files_give_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nowhere");
    let error = NodeIdentity::load(&missing).unwrap_err().to_string();
    assert!(error.starts_with("cannot read SVID certificate"), "{error}");
    assert!(
        error.contains(&missing.join("svid.pem").display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("x0tta6bl4 ca issue --dir CA --name NAME --out"),
        "{error}"
    );

    let error = CertificateAuthority::open(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("ca.toml") && error.contains("x0tta6bl4 ca init"),
        "{error}"
    );

    let (ca, _) = ca_with_nodes(root.path(), &["a", "b"]);
    // Garbage PEM, and a key that belongs to another SVID: no panic, a named file.
    std::fs::write(
        root.path().join("a/svid.pem"),
        b"-----BEGIN CERTIFICATE-----\n!!\n",
    )
    .unwrap();
    let error = NodeIdentity::load(&root.path().join("a")).unwrap_err();
    assert!(matches!(error, Error::BadFile { .. }), "{error}");
    ca.issue_node(&name("a"), TTL, &root.path().join("a"))
        .unwrap();
    std::fs::copy(
        root.path().join("b/svid_key.pem"),
        root.path().join("a/svid_key.pem"),
    )
    .unwrap();
    let error = NodeIdentity::load(&root.path().join("a"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("svid_key.pem") && error.contains("does not match"),
        "{error}"
    );

    let error = ca.issue_node(
        &name("a"),
        Duration::from_secs(20 * 365 * 86400),
        root.path(),
    );
    assert!(matches!(error, Err(Error::Config(_))));
}

#[test]
fn mutual_handshake_negotiates_x25519mlkem768() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["client", "server"]);
    let (client, server) = handshake(
        nodes[0].client_config().unwrap(),
        nodes[1].server_config().unwrap(),
    )
    .unwrap();
    for group in [
        client.negotiated_key_exchange_group(),
        server.negotiated_key_exchange_group(),
    ] {
        assert_eq!(group.unwrap().name(), rustls::NamedGroup::X25519MLKEM768);
    }
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(client.alpn_protocol(), Some(ALPN));
    assert_eq!(server.alpn_protocol(), Some(ALPN));
    let seen_by_client = peer_spiffe_id(client.peer_certificates().unwrap()).unwrap();
    let seen_by_server = peer_spiffe_id(server.peer_certificates().unwrap()).unwrap();
    assert_eq!(&seen_by_client, nodes[1].spiffe_id());
    assert_eq!(&seen_by_server, nodes[0].spiffe_id());
    assert_eq!(seen_by_server.node_name(), Some(name("client")));
}

fn assert_all_contain(errors: &[rustls::Error], needle: &str) {
    for error in errors {
        assert!(
            format!("{error} / {error:?}").contains(needle),
            "{needle:?} not in {error:?}"
        );
    }
}

#[test]
fn crafted_control_certificate_is_accepted() {
    // The baseline of the refusal tests below: unedited, the crafted cert is fine.
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    let crafted = craft(&root.path().join("ca"), |_| {});
    let config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![crafted.cert.clone()], crafted.key.clone_key())
    .unwrap();
    assert!(handshake(nodes[0].client_config().unwrap(), Arc::new(config)).is_ok());
}

#[test]
fn refuses_a_foreign_ca() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    // Same trust domain name, different CA key.
    let foreign = root.path().join("foreign");
    CertificateAuthority::init(&foreign, &td()).unwrap();
    let crafted = craft(&foreign, |_| {});
    let errors = refused_both_ways(&nodes[0], &crafted);
    for error in &errors {
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{error:?}"
        );
    }
}

#[test]
fn refuses_an_expired_svid() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    let crafted = craft(&root.path().join("ca"), |params| {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now - time::Duration::days(1);
    });
    for error in refused_both_ways(&nodes[0], &crafted) {
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
            ),
            "{error:?}"
        );
    }
}

#[test]
fn refuses_two_uri_sans() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    let crafted = craft(&root.path().join("ca"), |params| {
        params.subject_alt_names = vec![
            uri("spiffe://mesh.test/node/x"),
            uri("spiffe://mesh.test/node/y"),
        ];
    });
    assert_all_contain(&refused_both_ways(&nodes[0], &crafted), "UriSanCount(2)");
}

#[test]
fn refuses_a_ca_as_leaf() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    let crafted = craft(&root.path().join("ca"), |params| {
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    assert_all_contain(&refused_both_ways(&nodes[0], &crafted), "CaAsLeaf");
}

#[test]
fn refuses_a_wrong_trust_domain() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    let crafted = craft(&root.path().join("ca"), |params| {
        params.subject_alt_names = vec![uri("spiffe://other.test/node/x")];
    });
    assert_all_contain(
        &refused_both_ways(&nodes[0], &crafted),
        "UnknownTrustDomain",
    );
}

#[test]
fn refuses_bad_key_usage() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["good"]);
    let ca_dir = root.path().join("ca");
    let cert_sign = craft(&ca_dir, |params| {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    assert_all_contain(&refused_both_ways(&nodes[0], &cert_sign), "keyCertSign");
    let server_only = craft(&ca_dir, |params| {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    assert_all_contain(
        &refused_both_ways(&nodes[0], &server_only),
        "ExtendedKeyUsage",
    );
}

#[test]
fn authenticator_signs_and_verifies() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["a", "b"]);
    let auth_a = nodes[0].authenticator();
    let auth_b = nodes[1].authenticator();
    let (a, b) = (name("a"), name("b"));
    let message = b"lsa seq=7 links=[b:12ms]";
    let signature = auth_a.sign(message);
    // Twice: the second time the credential comes from the cache.
    for _ in 0..2 {
        auth_b
            .verify(&a, auth_a.credential(), message, &signature)
            .unwrap();
    }
    let tampered = auth_b.verify(
        &a,
        auth_a.credential(),
        b"lsa seq=8 links=[b:12ms]",
        &signature,
    );
    assert!(
        matches!(tampered, Err(AuthError::BadSignature { .. })),
        "{tampered:?}"
    );
    let wrong_origin = auth_b.verify(&b, auth_a.credential(), message, &signature);
    let named_a = |e: &AuthError| match e {
        AuthError::WrongOrigin {
            credential_name, ..
        } => credential_name == "a",
        _ => false,
    };
    assert!(
        wrong_origin.as_ref().is_err_and(named_a),
        "{wrong_origin:?}"
    );
    // b's credential with a's signature: the credential is fine, the signature is not.
    let stolen = auth_a.verify(&b, auth_b.credential(), message, &signature);
    assert!(
        matches!(stolen, Err(AuthError::BadSignature { .. })),
        "{stolen:?}"
    );
    let garbage = auth_b.verify(&a, b"not a certificate", message, &signature);
    assert!(
        matches!(garbage, Err(AuthError::UntrustedCredential { .. })),
        "{garbage:?}"
    );
}

#[test]
fn authenticator_rejects_foreign_and_expired_credentials() {
    let root = tempfile::tempdir().unwrap();
    let (_ca, nodes) = ca_with_nodes(root.path(), &["a"]);
    let foreign_root = root.path().join("foreign");
    let (_foreign_ca, foreign_nodes) = ca_with_nodes(&foreign_root, &["x"]);
    let auth = nodes[0].authenticator();
    let foreign = foreign_nodes[0].authenticator();
    let message = b"hello";
    let result = auth.verify(
        &name("x"),
        foreign.credential(),
        message,
        &foreign.sign(message),
    );
    match result {
        Err(AuthError::UntrustedCredential { reason, .. }) => {
            assert!(
                reason.contains("not issued by a CA of the trust bundle"),
                "{reason}"
            )
        }
        other => panic!("foreign credential accepted or misreported: {other:?}"),
    }

    let expired = craft(&root.path().join("ca"), |params| {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now - time::Duration::days(1);
    });
    let result = auth.verify(&name("crafted"), &expired.cert, message, b"sig");
    match result {
        Err(AuthError::UntrustedCredential { reason, .. }) => {
            assert!(reason.contains("expired"), "{reason}")
        }
        other => panic!("expired credential accepted or misreported: {other:?}"),
    }
}

#[test]
fn peer_spiffe_id_needs_a_certificate() {
    assert!(peer_spiffe_id(&[]).is_err());
    assert!(peer_spiffe_id(&[CertificateDer::from(vec![1, 2, 3])]).is_err());
    let id: SpiffeId = "spiffe://mesh.test/node/a".parse().unwrap();
    assert_eq!(id.node_name(), Some(name("a")));
}

#[test]
fn example_policy_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy.toml");
    let td: TrustDomain = "example.org".parse().unwrap();
    let policy = x0tta6bl4_identity::Policy::load(&path, &td).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.rules(), 4);
    let id = |s: &str| SpiffeId::parse(s).unwrap();
    assert!(!policy
        .neighbour(&id("spiffe://example.org/node/quarantine-7"))
        .allowed());
    assert!(policy
        .neighbour(&id("spiffe://partner.example/node/gw-1"))
        .allowed());
    assert!(!policy
        .neighbour(&id("spiffe://partner.example/node/gw-2"))
        .allowed());
    assert!(!policy.api(None, "POST", "/api/v1/send").allowed());
}

#[test]
fn revocations_verify_against_the_bundle_and_refuse_forgeries() {
    let root = tempfile::tempdir().unwrap();
    let (ca, nodes) = ca_with_nodes(root.path(), &["a", "b"]);
    let revocation = ca.revoke(&name("b")).unwrap();
    assert!(ca.is_revoked(&name("b")).unwrap());
    assert!(!ca.is_revoked(&name("a")).unwrap());
    let bytes = revocation.to_bytes();
    let decoded = x0tta6bl4_identity::Revocation::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.verify(&nodes[0]), Ok(name("b")));

    // Another CA's revocation, a tampered target, garbage: refused.
    let other = CertificateAuthority::init(&root.path().join("other"), &td()).unwrap();
    let foreign = other.revoke(&name("b")).unwrap();
    assert!(foreign
        .verify(&nodes[0])
        .unwrap_err()
        .contains("does not verify"));
    let mut tampered = revocation.clone();
    tampered.target = "spiffe://mesh.test/node/a".into();
    assert!(tampered.verify(&nodes[0]).is_err());
    let mut tampered = revocation.clone();
    tampered.issued_at += 1;
    assert!(tampered.verify(&nodes[0]).is_err());
    for garbage in [
        &b""[..],
        b"\xffX0REVOKE1{",
        b"\xffX0REVOKE1{\"target\":\"x\",\"issued_at\":1,\"signature\":\"zz\"}",
        &[0xff; 5000],
    ] {
        assert!(x0tta6bl4_identity::Revocation::from_bytes(garbage).is_err());
    }
}

proptest::proptest! {
    #[test]
    fn revocation_decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let mut framed = x0tta6bl4_identity::REVOCATION_MAGIC.to_vec();
        framed.extend(&bytes);
        let _ = x0tta6bl4_identity::Revocation::from_bytes(&bytes);
        let _ = x0tta6bl4_identity::Revocation::from_bytes(&framed);
    }
}

proptest::proptest! {
    #[test]
    fn policy_parser_never_panics(text in "\\PC{0,400}") {
        let td: TrustDomain = "mesh.test".parse().unwrap();
        let _ = x0tta6bl4_identity::Policy::parse(&text, "p.toml", &td);
    }

    #[test]
    fn policy_patterns_never_panic(from in "[a-z*/:.-]{0,60}", path in "[a-z*/.-]{0,40}") {
        let td: TrustDomain = "mesh.test".parse().unwrap();
        let text = format!(
            "[[rule]]\nname = \"r\"\neffect = \"deny\"\nactions = [\"api\"]\nfrom = {from:?}\nendpoints = [{:?}]\n",
            format!("GET /{path}")
        );
        if let Ok(policy) = x0tta6bl4_identity::Policy::parse(&text, "p.toml", &td) {
            let id = SpiffeId::parse("spiffe://mesh.test/node/a").unwrap();
            let _ = policy.api(Some(&id), "GET", &format!("/{path}"));
        }
    }
}

/// One node identity for the SVID-update decoder property below (built once).
fn update_fixture() -> &'static (tempfile::TempDir, NodeIdentity, Vec<u8>) {
    static FIXTURE: std::sync::OnceLock<(tempfile::TempDir, NodeIdentity, Vec<u8>)> =
        std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let td: TrustDomain = "mesh.test".parse().unwrap();
        let ca = CertificateAuthority::init(&dir.path().join("ca"), &td).unwrap();
        for name in ["a", "b"] {
            let name = NodeName::new(name).unwrap();
            ca.issue_node(
                &name,
                Duration::from_secs(3600),
                &dir.path().join(name.as_str()),
            )
            .unwrap();
        }
        let a = NodeIdentity::load(&dir.path().join("a")).unwrap();
        let b = NodeIdentity::load(&dir.path().join("b")).unwrap();
        let leaf = b.certificate().to_vec();
        (dir, a, leaf)
    })
}

proptest::proptest! {
    /// What a neighbour sends as its renewed SVID (the node's SVID-update frame) is checked
    /// by `verify_peer_svid`: any bytes, and any corruption of a real leaf, give an answer,
    /// never a panic, and a corrupted leaf is never accepted as another valid SVID.
    #[test]
    fn svid_update_verification_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..900),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..=255), 1..6),
    ) {
        let (_, identity, leaf) = update_fixture();
        let _ = identity.verify_peer_svid(&CertificateDer::from(bytes.as_slice()));
        let mut corrupted = leaf.clone();
        for (index, xor) in flips {
            let at = index % corrupted.len();
            corrupted[at] ^= xor;
        }
        let verdict = identity.verify_peer_svid(&CertificateDer::from(corrupted.as_slice()));
        proptest::prop_assert!(verdict.is_err(), "a corrupted leaf was accepted");
    }
}

#[test]
fn svid_update_verification_accepts_the_real_leaf() {
    let (_, identity, leaf) = update_fixture();
    let (id, expiry) = identity
        .verify_peer_svid(&CertificateDer::from(leaf.as_slice()))
        .unwrap();
    assert_eq!(id.to_string(), "spiffe://mesh.test/node/b");
    assert!(expiry > SystemTime::now() + Duration::from_secs(3000));
}
