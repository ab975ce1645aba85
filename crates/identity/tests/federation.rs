//! SPIFFE federation: two trust domains with their own CAs; real TLS handshakes (in
//! memory) and the link-state authenticator.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{craft, handshake, refused_both_ways, uri};
use x0tta6bl4_identity::{
    peer_spiffe_id, CertificateAuthority, FederatedBundles, NameBindings, NodeIdentity,
    TrustDomain, BUNDLE_FILE,
};
use x0tta6bl4_proto::{AuthError, NodeName};

const TTL: Duration = Duration::from_secs(3600);

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

/// A CA of `domain` in `root/DOMAIN` with node SVIDs in `root/DOMAIN-NAME`.
fn domain_with_nodes(root: &Path, domain: &str, names: &[&str]) -> Vec<NodeIdentity> {
    let ca = CertificateAuthority::init(&root.join(domain), &td(domain)).unwrap();
    names
        .iter()
        .map(|n| {
            let out = root.join(format!("{domain}-{n}"));
            ca.issue_node(&NodeName::new(n).unwrap(), TTL, &out)
                .unwrap();
            NodeIdentity::load(&out).unwrap()
        })
        .collect()
}

fn bundle_file(root: &Path, domain: &str) -> PathBuf {
    root.join(domain).join(BUNDLE_FILE)
}

fn federate(node: &NodeIdentity, root: &Path, domains: &[&str]) -> NodeIdentity {
    let entries: Vec<_> = domains
        .iter()
        .map(|d| (td(d), bundle_file(root, d)))
        .collect();
    let federated = FederatedBundles::load(&entries).unwrap();
    node.with_federation(&federated).unwrap()
}

#[test]
fn federated_peers_verify_each_other_against_their_own_bundles() {
    let root = tempfile::tempdir().unwrap();
    let a = &domain_with_nodes(root.path(), "a.test", &["a1"])[0];
    let b = &domain_with_nodes(root.path(), "b.test", &["b1"])[0];
    let a = federate(a, root.path(), &["b.test"]);
    let b = federate(b, root.path(), &["a.test"]);
    assert_eq!(a.federated().trust_domains().count(), 1);

    let (client, server) =
        handshake(a.client_config().unwrap(), b.server_config().unwrap()).unwrap();
    assert_eq!(
        &peer_spiffe_id(client.peer_certificates().unwrap()).unwrap(),
        b.spiffe_id()
    );
    assert_eq!(
        &peer_spiffe_id(server.peer_certificates().unwrap()).unwrap(),
        a.spiffe_id()
    );
    assert!(handshake(b.client_config().unwrap(), a.server_config().unwrap()).is_ok());
    // Our own domain still works with federation on.
    let a2 = &domain_with_nodes(&root.path().join("more"), "a.test", &["a2"])[0];
    // (a2 comes from another CA of the same name: refused, own bundle only.)
    assert!(handshake(a.client_config().unwrap(), a2.server_config().unwrap()).is_err());
}

#[test]
fn a_domain_without_a_configured_bundle_is_refused_with_the_reason() {
    let root = tempfile::tempdir().unwrap();
    let a = &domain_with_nodes(root.path(), "a.test", &["a1"])[0];
    let b = &domain_with_nodes(root.path(), "b.test", &["b1"])[0];
    domain_with_nodes(root.path(), "c.test", &[]);
    // a federates c.test, not b.test: b is from a domain a does not know.
    let a = federate(a, root.path(), &["c.test"]);
    let b = federate(b, root.path(), &["a.test"]);
    let refused = handshake(a.client_config().unwrap(), b.server_config().unwrap())
        .expect_err("a trusted a peer of a non-federated domain");
    let text = format!("{refused:?}");
    assert!(text.contains("UnknownTrustDomain"), "{text}");
    assert!(text.contains("b.test"), "{text}");
    assert!(handshake(b.client_config().unwrap(), a.server_config().unwrap()).is_err());
}

#[test]
fn a_peer_of_domain_b_chaining_to_domain_a_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let a = &domain_with_nodes(root.path(), "a.test", &["a1"])[0];
    domain_with_nodes(root.path(), "b.test", &[]);
    let a = federate(a, root.path(), &["b.test"]);
    // Signed by a.test's CA but claiming b.test: a.test's CA never vouches for b.test.
    let forged = craft(&root.path().join("a.test"), |params| {
        params.subject_alt_names = vec![uri("spiffe://b.test/node/x")];
    });
    for error in refused_both_ways(&a, &forged) {
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{error:?}"
        );
    }
    // And one signed by b.test's CA claiming a.test is refused the same way.
    let forged = craft(&root.path().join("b.test"), |params| {
        params.subject_alt_names = vec![uri("spiffe://a.test/node/y")];
    });
    for error in refused_both_ways(&a, &forged) {
        assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    }
}

#[test]
fn bad_federated_bundles_are_refused_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let a = &domain_with_nodes(root.path(), "a.test", &["a1"])[0];
    domain_with_nodes(root.path(), "b.test", &[]);
    let missing = root.path().join("nope.pem");
    let error = FederatedBundles::load(&[(td("b.test"), missing.clone())])
        .unwrap_err()
        .to_string();
    assert!(error.contains(&missing.display().to_string()), "{error}");
    assert!(error.contains("federated trust bundle"), "{error}");

    let garbage = root.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let error = FederatedBundles::load(&[(td("b.test"), garbage.clone())])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with(&garbage.display().to_string()), "{error}");
    assert!(error.contains("no CERTIFICATE"), "{error}");

    // b.test's bundle configured as c.test's.
    let wrong = bundle_file(root.path(), "b.test");
    let error = FederatedBundles::load(&[(td("c.test"), wrong.clone())])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with(&wrong.display().to_string()), "{error}");
    assert!(
        error.contains(
            "holds CAs of trust domain b.test, but is configured as the bundle of c.test"
        ),
        "{error}"
    );

    // A leaf certificate is not a bundle.
    let leaf = root.path().join("a.test-a1").join("svid.pem");
    let error = FederatedBundles::load(&[(td("a.test"), leaf.clone())])
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a usable trust bundle"), "{error}");

    // Our own domain is not federated.
    let own =
        FederatedBundles::load(&[(td("a.test"), bundle_file(root.path(), "a.test"))]).unwrap();
    let error = a.with_federation(&own).unwrap_err().to_string();
    assert!(error.contains("own trust domain"), "{error}");
}

#[test]
fn authenticator_verifies_federated_nodes_and_keeps_names_apart() {
    let root = tempfile::tempdir().unwrap();
    let a_nodes = domain_with_nodes(root.path(), "a.test", &["a1", "x"]);
    let b_nodes = domain_with_nodes(root.path(), "b.test", &["b1", "x", "a1"]);
    let a1 = federate(&a_nodes[0], root.path(), &["b.test"]);
    let bindings = NameBindings::new(a1.spiffe_id());
    let (auth, _) = a1.authenticator_with_bindings(bindings.clone());
    let message = b"link-state";
    let sign = |node: &NodeIdentity| {
        let signer = node.authenticator();
        (signer.credential().to_vec(), signer.sign(message))
    };
    let name = |n: &str| NodeName::new(n).unwrap();

    // A federated node's advertisement verifies against its own domain's bundle.
    let (credential, signature) = sign(&b_nodes[0]);
    auth.verify(&name("b1"), &credential, message, &signature)
        .unwrap();
    assert_eq!(
        bindings.spiffe_id(&name("b1")).unwrap().to_string(),
        "spiffe://b.test/node/b1"
    );

    // a.test's x binds the name first; b.test's x is refused for it.
    let (credential, signature) = sign(&a_nodes[1]);
    auth.verify(&name("x"), &credential, message, &signature)
        .unwrap();
    let (credential, signature) = sign(&b_nodes[1]);
    match auth.verify(&name("x"), &credential, message, &signature) {
        Err(AuthError::UntrustedCredential { reason, .. }) => {
            assert!(
                reason.contains("already bound to spiffe://a.test/node/x"),
                "{reason}"
            )
        }
        other => panic!("a second domain's x was accepted: {other:?}"),
    }
    // Our own name is bound from the start.
    let (credential, signature) = sign(&b_nodes[2]);
    let refused = auth.verify(&name("a1"), &credential, message, &signature);
    assert!(
        matches!(&refused, Err(AuthError::UntrustedCredential { reason, .. }) if reason.contains("already bound")),
        "{refused:?}"
    );
    // Without federation, b.test's nodes are unknown.
    let plain = a_nodes[0].authenticator();
    let (credential, signature) = sign(&b_nodes[0]);
    let refused = plain.verify(&name("b1"), &credential, message, &signature);
    assert!(
        matches!(&refused, Err(AuthError::UntrustedCredential { reason, .. }) if reason.contains("neither ours")),
        "{refused:?}"
    );
}
