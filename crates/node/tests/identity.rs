//! Identity on real nodes: the negotiated key-exchange group of QUIC links, shown by
//! the API and counted in metrics, and `[identity] kx = "strict-pq"` refusing a peer
//! that offers only classical groups.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, issue, Api};
use x0tta6bl4_node::{load_config, NodeConfig, NodeHandle};

fn config_with_kx(
    dir: &std::path::Path,
    name: &str,
    peers: &[std::net::SocketAddr],
    kx: &str,
) -> NodeConfig {
    let path = common::write_config(
        dir,
        name,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        peers,
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("kx = \"{kx}\"\n"));
    std::fs::write(&path, text).unwrap();
    load_config(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_negotiate_x25519mlkem768_shown_per_peer_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let b = NodeHandle::start(config_with_kx(dir.path(), "b", &[], "strict-pq"))
        .await
        .unwrap();
    let a = NodeHandle::start(config_with_kx(dir.path(), "a", &[b.quic_addr()], "hybrid"))
        .await
        .unwrap();
    for (api, peer) in [(Api::new(&a), "b"), (Api::new(&b), "a")] {
        eventually(
            Duration::from_secs(10),
            "peer up with its kx_group",
            || async {
                let (_, peers) = api.get("/api/v1/peers").await;
                peers.as_array().is_some_and(|peers| {
                    peers.iter().any(|p| {
                        p["name"] == peer && p["state"] == "up" && p["kx_group"] == "X25519MLKEM768"
                    })
                })
            },
        )
        .await;
        let metrics = api.text("/metrics").await;
        assert!(
            metrics.contains("x0tta6bl4_kx_handshakes_total{group=\"X25519MLKEM768\"} 1"),
            "{metrics}"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_pq_node_refuses_a_classical_only_quic_client() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let b = NodeHandle::start(config_with_kx(dir.path(), "b", &[], "strict-pq"))
        .await
        .unwrap();
    let api = Api::new(&b);

    // A QUIC client with a valid SVID of the trust domain that offers only X25519.
    let result = classical_dial(&dir.path().join("a"), b.quic_addr()).await;
    assert!(
        result.is_err(),
        "a strict-pq node accepted a classical handshake"
    );
    eventually(
        Duration::from_secs(5),
        "failed handshake counted",
        || async {
            api.text("/metrics")
                .await
                .contains("x0tta6bl4_handshakes_total{result=\"failed\"} 1")
        },
    )
    .await;
    let metrics = api.text("/metrics").await;
    assert!(
        !metrics.contains("x0tta6bl4_kx_handshakes_total{group=\"X25519\"}"),
        "{metrics}"
    );
    b.shutdown().await.unwrap();
}

async fn classical_dial(svid: &std::path::Path, addr: std::net::SocketAddr) -> Result<(), String> {
    dial_with(svid, addr, &[rustls::crypto::aws_lc_rs::kx_group::X25519]).await
}

/// A QUIC handshake to `addr` presenting the SVID files in `svid`, offering `groups`.
async fn dial_with(
    svid: &std::path::Path,
    addr: std::net::SocketAddr,
    groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
) -> Result<(), String> {
    let pem = std::fs::read(svid.join("svid.pem")).unwrap();
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let pem = std::fs::read(svid.join("svid_key.pem")).unwrap();
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .unwrap()
        .unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups.to_vec();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![x0tta6bl4_identity::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint
        .connect(addr, "x0tta6bl4")
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        // In TLS 1.3 the client finishes before the server has checked its certificate:
        // a refusal arrives as the connection's close.
        Ok(Ok(conn)) => match tokio::time::timeout(Duration::from_secs(1), conn.closed()).await {
            Ok(reason) => Err(reason.to_string()),
            Err(_) => Ok(()),
        },
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A CA service on a thread, as `x0tta6bl4 ca serve` runs it (the CA directory re-read
/// for every request), issuing `ttl` SVIDs.
fn ca_service(ca_dir: &std::path::Path, ttl: Duration) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ca_dir = ca_dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let ca_dir = ca_dir.clone();
            std::thread::spawn(move || x0tta6bl4_identity::serve_from_dir(&ca_dir, stream, ttl));
        }
    });
    addr
}

fn join(ca_dir: &std::path::Path, server: std::net::SocketAddr, name: &str, out: &std::path::Path) {
    let ca = x0tta6bl4_identity::CertificateAuthority::open(ca_dir).unwrap();
    let name = x0tta6bl4_proto::NodeName::new(name).unwrap();
    let token = ca.create_token(&name, Duration::from_secs(600)).unwrap();
    x0tta6bl4_identity::join(server, &token, out).unwrap();
}

fn serial(dir: &std::path::Path) -> String {
    let report = x0tta6bl4_identity::inspect_certificate(&dir.join("svid.pem"), None).unwrap();
    report.serial
}

/// SVIDs of 4 s renewed at half-life under continuous traffic: no message lost, and a
/// node that joins after the first SVIDs expired links up (new handshakes and new
/// link-state use the renewed SVIDs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_at_half_life_under_traffic_loses_no_message() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[]);
    let ca_dir = dir.path().join("ca");
    let server = ca_service(&ca_dir, Duration::from_secs(4));
    for name in ["a", "b"] {
        join(&ca_dir, server, name, &dir.path().join(name));
    }
    let with_ca = |name: &str, peers: &[std::net::SocketAddr]| {
        let any = "127.0.0.1:0".parse().unwrap();
        let path = common::write_config(dir.path(), name, any, any, peers);
        let mut text = std::fs::read_to_string(&path).unwrap();
        // Link-state refreshed every second, well within the 2 s half-life, so that
        // stored advertisements never carry an expired SVID for long.
        text.push_str(&format!(
            "ca_server = \"{server}\"\n[protocol]\nlsa_refresh_ms = 1000\nlsa_lifetime_ms = 3000\n"
        ));
        std::fs::write(&path, text).unwrap();
        load_config(&path).unwrap()
    };
    let first_serial = serial(&dir.path().join("a"));
    let b = NodeHandle::start(with_ca("b", &[])).await.unwrap();
    let a = NodeHandle::start(with_ca("a", &[b.quic_addr()]))
        .await
        .unwrap();
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    eventually(Duration::from_secs(10), "route a -> b", || async {
        api_a.route("b").await.is_some()
    })
    .await;

    let first_expiry = svid_expiry(&api_a).await;
    let sent = api_a.send_steadily("b", Duration::from_secs(7)).await;
    api_b.wait_delivered(sent).await;
    assert_ne!(
        serial(&dir.path().join("a")),
        first_serial,
        "a's SVID was not renewed"
    );
    assert!(
        svid_expiry(&api_a).await > first_expiry,
        "x0tta6bl4_svid_expiry_timestamp_seconds did not follow the renewal"
    );
    // The link outlived the first SVIDs: each side sent its renewed one on it.
    for api in [&api_a, &api_b] {
        let metrics = api.text("/metrics").await;
        assert!(
            metrics
                .contains("x0tta6bl4_identity_link_closes_total{reason=\"peer_svid_expired\"} 0"),
            "{metrics}"
        );
    }

    // The SVIDs a and b started with have expired: c can only link up and route if
    // they present and sign with renewed ones.
    join(&ca_dir, server, "c", &dir.path().join("c"));
    let c = NodeHandle::start(with_ca("c", &[b.quic_addr()]))
        .await
        .unwrap();
    let api_c = Api::new(&c);
    eventually(Duration::from_secs(10), "c routes to a over b", || async {
        api_c.route("a").await.is_some() && api_a.route("c").await.is_some()
    })
    .await;
    for node in [a, b, c] {
        node.shutdown().await.unwrap();
    }
}

/// Root rotation (prepare, activate, retire) under continuous traffic with 4 s SVIDs:
/// no message lost, the nodes end up with SVIDs of the new root, and a node joining
/// after the old root was retired links and routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_under_traffic_loses_no_message() {
    use x0tta6bl4_identity::{CertificateAuthority, RotationStep};
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[]);
    let ca_dir = dir.path().join("ca");
    let old_root = std::fs::read(ca_dir.join("ca.pem")).unwrap();
    let server = ca_service(&ca_dir, Duration::from_secs(4));
    for name in ["a", "b", "c"] {
        join(&ca_dir, server, name, &dir.path().join(name));
    }
    let with_ca = |name: &str, peers: &[std::net::SocketAddr]| {
        let any = "127.0.0.1:0".parse().unwrap();
        let path = common::write_config(dir.path(), name, any, any, peers);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "ca_server = \"{server}\"\n[protocol]\nlsa_refresh_ms = 1000\nlsa_lifetime_ms = 3000\n"
        ));
        std::fs::write(&path, text).unwrap();
        load_config(&path).unwrap()
    };
    let b = NodeHandle::start(with_ca("b", &[])).await.unwrap();
    let a = NodeHandle::start(with_ca("a", &[b.quic_addr()]))
        .await
        .unwrap();
    let c = NodeHandle::start(with_ca("c", &[b.quic_addr()]))
        .await
        .unwrap();
    let (api_a, api_c) = (Api::new(&a), Api::new(&c));
    eventually(Duration::from_secs(10), "route a -> c", || async {
        api_a.route("c").await.is_some()
    })
    .await;

    let mut sent = 0;
    for step in [
        RotationStep::Prepared,
        RotationStep::Activated,
        RotationStep::Retired,
    ] {
        let phase = std::time::Instant::now();
        while phase.elapsed() < Duration::from_secs(3) {
            let body = format!(r#"{{"to": "c", "payload": "m{sent}"}}"#);
            let (status, answer) = api_a.post("/api/v1/send", &body).await;
            assert_eq!(status, 202, "message {sent} before {step:?}: {answer}");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        CertificateAuthority::rotate_root(&ca_dir, step).unwrap();
    }
    // Let every node renew onto the new root alone.
    let phase = std::time::Instant::now();
    while phase.elapsed() < Duration::from_secs(3) {
        let body = format!(r#"{{"to": "c", "payload": "m{sent}"}}"#);
        assert_eq!(
            api_a.post("/api/v1/send", &body).await.0,
            202,
            "message {sent}"
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(
        Duration::from_secs(5),
        "every message delivered",
        || async {
            let (_, messages) = api_c.get("/api/v1/messages").await;
            messages.as_array().map_or(0, Vec::len) == sent
        },
    )
    .await;
    assert_ne!(std::fs::read(ca_dir.join("ca.pem")).unwrap(), old_root);
    for name in ["a", "b", "c"] {
        let svid = dir.path().join(name).join("svid.pem");
        let report = x0tta6bl4_identity::inspect_certificate(&svid, Some(&ca_dir)).unwrap();
        assert!(
            report.bundle.unwrap().verified,
            "{name} is not on the new root"
        );
    }
    join(&ca_dir, server, "d", &dir.path().join("d"));
    let d = NodeHandle::start(with_ca("d", &[b.quic_addr()]))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "a routes to the new node d",
        || async { api_a.route("d").await.is_some() },
    )
    .await;
    for node in [a, b, c, d] {
        node.shutdown().await.unwrap();
    }
}

/// One HTTP/1.1 request over TLS to the node API, optionally with node `client`'s SVID.
async fn https(
    addr: std::net::SocketAddr,
    client: Option<&std::path::Path>,
    method: &str,
    path: &str,
) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer));
    let config = match client {
        Some(dir) => {
            let pem = std::fs::read(dir.join("svid.pem")).unwrap();
            let chain = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let pem = std::fs::read(dir.join("svid_key.pem")).unwrap();
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("node").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {answer:?}"))
}

/// `[identity] api_mtls`: callers are identified by their SVID and the policy decides
/// per endpoint; probes stay open; plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mutual_tls_identifies_callers_for_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["n", "a", "b"]);
    std::fs::write(
        dir.path().join("api-policy.toml"),
        r#"
default = "deny"

[[rule]]
name = "a-reads"
effect = "allow"
actions = ["api"]
from = "spiffe://mesh.test/node/a"
endpoints = ["GET /api/v1/**"]
"#,
    )
    .unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir.path(), "n", any, any, &[]);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace("[identity]", "standalone = true\n[identity]");
    text.push_str("policy = \"api-policy.toml\"\napi_mtls = true\n");
    std::fs::write(&path, text).unwrap();
    let node = NodeHandle::start(load_config(&path).unwrap())
        .await
        .unwrap();
    let api = node.api_addr();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));

    assert_eq!(https(api, None, "GET", "/health/live").await, Ok(200));
    assert_eq!(https(api, None, "GET", "/metrics").await, Ok(200));
    assert_eq!(https(api, None, "GET", "/api/v1/status").await, Ok(401));
    assert_eq!(https(api, Some(&a), "GET", "/api/v1/status").await, Ok(200));
    assert_eq!(https(api, Some(&a), "POST", "/api/v1/flows").await, Ok(403));
    assert_eq!(https(api, Some(&b), "GET", "/api/v1/status").await, Ok(403));
    // Plain HTTP is not answered.
    let plain = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(api).await.unwrap();
        let request = b"GET /health/live HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n";
        tcp.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .unwrap();
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP answered");
    node.shutdown().await.unwrap();
}

/// Peers whose certificate is not a valid SVID of our trust domain are refused at the
/// handshake, and the refusal is counted: a foreign CA, an expired SVID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_expired_svids_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["n"]);
    let node = NodeHandle::start(config_with_kx(dir.path(), "n", &[], "hybrid"))
        .await
        .unwrap();
    let api = Api::new(&node);
    let groups = &[rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];

    // Same trust domain name, another CA.
    let td = x0tta6bl4_identity::TrustDomain::new("mesh.test").unwrap();
    let other =
        x0tta6bl4_identity::CertificateAuthority::init(&dir.path().join("other"), &td).unwrap();
    let name = x0tta6bl4_proto::NodeName::new("intruder").unwrap();
    other
        .issue_node(
            &name,
            Duration::from_secs(3600),
            &dir.path().join("intruder"),
        )
        .unwrap();
    let refused = dial_with(&dir.path().join("intruder"), node.quic_addr(), groups).await;
    let reason = refused.expect_err("a foreign CA's SVID was accepted");
    assert!(
        reason.contains("certificate") || reason.contains("TLS"),
        "{reason}"
    );

    // Our CA, expired.
    let ca = x0tta6bl4_identity::CertificateAuthority::open(&dir.path().join("ca")).unwrap();
    let name = x0tta6bl4_proto::NodeName::new("stale").unwrap();
    ca.issue_node(&name, Duration::from_secs(1), &dir.path().join("stale"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = dial_with(&dir.path().join("stale"), node.quic_addr(), groups).await;
    let reason = refused.expect_err("an expired SVID was accepted");
    assert!(
        reason.contains("certificate") || reason.contains("TLS"),
        "{reason}"
    );

    // A valid SVID of our CA gets through (the control case).
    issue_more(dir.path(), "friend");
    // (It is not a real node, so the protocol drops it later as "neighbour down".)
    let _ = dial_with(&dir.path().join("friend"), node.quic_addr(), groups).await;
    eventually(
        Duration::from_secs(5),
        "the control handshake counted ok",
        || async {
            api.text("/metrics")
                .await
                .contains("x0tta6bl4_handshakes_total{result=\"ok\"} 1")
        },
    )
    .await;
    eventually(Duration::from_secs(5), "two refusals counted", || async {
        api.text("/metrics")
            .await
            .contains("x0tta6bl4_handshakes_total{result=\"failed\"} 2")
    })
    .await;
    node.shutdown().await.unwrap();
}

fn issue_more(dir: &std::path::Path, name: &str) {
    let ca = x0tta6bl4_identity::CertificateAuthority::open(&dir.join("ca")).unwrap();
    let name = x0tta6bl4_proto::NodeName::new(name).unwrap();
    ca.issue_node(&name, Duration::from_secs(3600), &dir.join(name.as_str()))
        .unwrap();
}

async fn svid_expiry(api: &Api) -> f64 {
    let metrics = api.text("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("x0tta6bl4_svid_expiry_timestamp_seconds"))
        .expect("expiry metric");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A revocation posted to a node is verified, kept in its SVID directory and applied
/// again after a restart; a forged one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_a_restart_and_forgeries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["n"]);
    let ca = x0tta6bl4_identity::CertificateAuthority::open(&dir.path().join("ca")).unwrap();
    let revocation = ca
        .revoke(&x0tta6bl4_proto::NodeName::new("gone").unwrap())
        .unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir.path(), "n", any, any, &[]);
    let node = NodeHandle::start(load_config(&path).unwrap())
        .await
        .unwrap();
    let api = Api::new(&node);
    let mut forged = revocation.clone();
    forged.target = "spiffe://mesh.test/node/innocent".into();
    let body = serde_json::to_string(&forged).unwrap();
    assert_eq!(api.post("/api/v1/revocations", &body).await.0, 403);
    let body = serde_json::to_string(&revocation).unwrap();
    let (status, answer) = api.post("/api/v1/revocations", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        api.get("/api/v1/revocations").await.1,
        serde_json::json!(["gone"])
    );
    node.shutdown().await.unwrap();

    let node = NodeHandle::start(load_config(&path).unwrap())
        .await
        .unwrap();
    let api = Api::new(&node);
    assert_eq!(
        api.get("/api/v1/revocations").await.1,
        serde_json::json!(["gone"])
    );
    node.shutdown().await.unwrap();
}

/// Zero trust on open links: when a neighbour's SVID passes its notAfter, the node
/// closes the link at that instant (logged and counted), the neighbour goes down, and
/// its reconnects are refused while it has no fresh SVID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_closes_when_the_peers_svid_expires_and_stays_closed() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let ca = x0tta6bl4_identity::CertificateAuthority::open(&dir.path().join("ca")).unwrap();
    let b_name = x0tta6bl4_proto::NodeName::new("b").unwrap();
    // Renewal withheld: b has no CA service, so this SVID is its last.
    let b_svid = ca
        .issue_node(&b_name, Duration::from_secs(5), &dir.path().join("b"))
        .unwrap();
    // The verifiers compare whole seconds: the SVID is refused from notAfter + 1 s.
    let expiry = b_svid.not_after + Duration::from_secs(1);
    let b = NodeHandle::start(common::config(dir.path(), "b", &[]))
        .await
        .unwrap();
    let a = NodeHandle::start(common::config(dir.path(), "a", &[b.quic_addr()]))
        .await
        .unwrap();
    let api = Api::new(&a);
    let b_up = || async {
        let (_, peers) = api.get("/api/v1/peers").await;
        peers
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "b" && p["state"] == "up"))
    };
    eventually(Duration::from_secs(4), "b up at a before its expiry", b_up).await;
    assert!(std::time::SystemTime::now() < expiry, "b came up too late");
    let expired_closes = "x0tta6bl4_identity_link_closes_total{reason=\"peer_svid_expired\"} 1";
    assert!(!api.text("/metrics").await.contains(expired_closes));

    let left = expiry
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left).await;
    let closed_after = eventually(Duration::from_secs(2), "expiry close counted", || async {
        api.text("/metrics").await.contains(expired_closes)
    })
    .await;
    assert!(
        closed_after < Duration::from_millis(500),
        "closed {closed_after:?} after the expiry"
    );
    eventually(Duration::from_secs(2), "b down at a", || async {
        !b_up().await
    })
    .await;

    // a keeps redialing its static peer b; every handshake is refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b_up().await, "b got back in with an expired SVID");
    let metrics = api.text("/metrics").await;
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("x0tta6bl4_handshakes_total{result=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "no refused reconnect counted:\n{metrics}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
