//! Identity commands run as real processes: `ca inspect`.

mod common;

use common::{ca_init, ca_issue, code, path, run, stderr, stdout};

#[test]
fn ca_inspect_shows_the_svid_and_whether_a_bundle_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (dir.path().join("ca"), dir.path().join("other"));
    ca_init(&ca, "example.org");
    ca_init(&other, "other.org");
    let svid = dir.path().join("a");
    ca_issue(&ca, "a", &svid);
    let cert = svid.join("svid.pem");

    let output = run(&["ca", "inspect", path(&cert), "--bundle", path(&ca)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "spiffe_id   spiffe://example.org/node/a",
        "key_type    ECDSA P-256",
        "issuer      O=x0tta6bl4, CN=x0tta6bl4 CA",
        "validity    valid",
        "is_ca       false",
        "(spiffe://example.org): verified",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // A foreign bundle does not verify it: exit 1, with the reason.
    let output = run(&["ca", "inspect", path(&cert), "--bundle", path(&other)]);
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    assert!(
        stdout(&output).contains(
            "NOT verified: SPIFFE ID spiffe://example.org/node/a is not in trust domain other.org"
        ),
        "{}",
        stdout(&output)
    );

    // JSON, and a CA certificate checked against a bundle file.
    let bundle_file = svid.join("bundle.pem");
    let ca_cert = ca.join("ca.pem");
    let output = run(&[
        "ca",
        "inspect",
        path(&ca_cert),
        "--bundle",
        path(&bundle_file),
        "--json",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["spiffe_id"], "spiffe://example.org");
    assert_eq!(report["is_ca"], true);
    assert_eq!(report["bundle"]["verified"], true);
    assert!(report["expires_in_seconds"].as_i64().unwrap() > 0);

    // Without --bundle: no verdict.
    let output = run(&["ca", "inspect", path(&cert), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(report["bundle"].is_null());
}

#[test]
fn ca_inspect_names_the_file_of_a_malformed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let output = run(&["ca", "inspect", path(&junk)]);
    assert_eq!(code(&output), 1);
    let error = stderr(&output);
    assert!(
        error.contains("junk.pem") && error.contains("holds no CERTIFICATE"),
        "{error}"
    );

    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let output = run(&["ca", "inspect", path(&broken)]);
    assert_eq!(code(&output), 1);
    let error = stderr(&output);
    assert!(
        error.contains("broken.pem") && error.contains("X.509"),
        "{error}"
    );

    let output = run(&["ca", "inspect", path(&dir.path().join("missing.pem"))]);
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).contains("missing.pem"),
        "{}",
        stderr(&output)
    );
}

/// `ca serve` as a real process on a free port; killed on drop.
struct Service(std::process::Child, String);

impl Service {
    fn start(ca: &std::path::Path) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = common::bin()
            .args(["ca", "serve", "--dir", path(ca), "--listen", &addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let service = Service(child, addr);
        for _ in 0..100 {
            if std::net::TcpStream::connect(&service.1).is_ok() {
                return service;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("ca serve did not listen on {}", service.1);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token(ca: &std::path::Path, name: &str, ttl: &str) -> String {
    let output = run(&[
        "ca",
        "token",
        "--dir",
        path(ca),
        "--name",
        name,
        "--ttl",
        ttl,
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

#[test]
fn a_reusable_token_re_enrols_a_recreated_pod_until_revoked() {
    // A StatefulSet pod recreated with an empty identity directory joins again with the
    // token of its Secret; a one-time token would be refused as "already used".
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    let output = run(&[
        "ca",
        "token",
        "--dir",
        path(&ca),
        "--name",
        "pod-0",
        "--ttl",
        "10m",
        "--reusable",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("reusable token"),
        "{}",
        stderr(&output)
    );
    let reusable = stdout(&output).trim().to_owned();
    let service = Service::start(&ca);
    let join = |out: &str| {
        let out = dir.path().join(out);
        run(&[
            "ca",
            "join",
            "--server",
            &service.1,
            "--token",
            &reusable,
            "--out",
            path(&out),
        ])
    };
    for attempt in ["first", "recreated", "recreated-again"] {
        let output = join(attempt);
        assert_eq!(code(&output), 0, "{attempt}: {}", stderr(&output));
        assert!(stdout(&output).contains("joined as spiffe://example.org/node/pod-0"));
    }
    // Revoked, the name gets nothing, reusable token or not.
    let output = run(&["ca", "revoke", "--dir", path(&ca), "--name", "pod-0"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let output = join("after-revocation");
    assert_ne!(code(&output), 0);
    assert!(stderr(&output).contains("revoked"), "{}", stderr(&output));
    assert!(!dir
        .path()
        .join("after-revocation")
        .join("svid.pem")
        .exists());
}

#[test]
fn ca_serve_joins_with_one_time_tokens_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    let first = token(&ca, "n1", "10m");
    let second = token(&ca, "n2", "10m");
    let short = token(&ca, "n3", "1s");
    let service = Service::start(&ca);
    let join = |token: &str, out: &str| {
        let out = dir.path().join(out);
        run(&[
            "ca",
            "join",
            "--server",
            &service.1,
            "--token",
            token,
            "--out",
            path(&out),
        ])
    };

    let output = join(&first, "n1");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).contains("joined as spiffe://example.org/node/n1"));
    let svid = dir.path().join("n1").join("svid.pem");
    let output = run(&[
        "ca",
        "inspect",
        path(&svid),
        "--bundle",
        path(&ca),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["bundle"]["verified"], true);
    let ttl = report["expires_in_seconds"].as_i64().unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "default SVID TTL is 1h, got {ttl}s"
    );

    // Reused and expired tokens are refused, saying so.
    let output = join(&first, "again");
    assert_ne!(code(&output), 0);
    assert!(
        stderr(&output).contains("already used"),
        "{}",
        stderr(&output)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let output = join(&short, "n3");
    assert_ne!(code(&output), 0);
    assert!(stderr(&output).contains("expired"), "{}", stderr(&output));
    let output = join("x0t1.nonsense", "bad");
    assert_ne!(code(&output), 0);
    assert!(
        stderr(&output).contains("malformed join token"),
        "{}",
        stderr(&output)
    );

    // A restarted service still knows the outstanding and the used tokens.
    drop(service);
    let service = Service::start(&ca);
    let join = |token: &str, out: &str| {
        let out = dir.path().join(out);
        run(&[
            "ca",
            "join",
            "--server",
            &service.1,
            "--token",
            token,
            "--out",
            path(&out),
        ])
    };
    let output = join(&second, "n2");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let output = join(&first, "again");
    assert!(
        stderr(&output).contains("already used"),
        "{}",
        stderr(&output)
    );

    // A token of another CA is refused by the pin before anything is sent.
    let other = dir.path().join("other");
    ca_init(&other, "other.org");
    let foreign = token(&other, "n9", "10m");
    let output = join(&foreign, "n9");
    assert_ne!(code(&output), 0);
    assert!(stderr(&output).contains("pinned CA"), "{}", stderr(&output));
}

/// Revocation in a running 16-process mesh: every node acts on it within 1 s, the
/// revoked node loses every link and route, and its reconnects are refused.
#[test]
fn revocation_cuts_a_node_off_a_16_process_mesh_within_a_second() {
    let names: Vec<String> = (0..16).map(|i| format!("n{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // A ring plus chords: node i dials i+1, and even nodes also dial i+5.
    let dials: Vec<Vec<usize>> = (0..16)
        .map(|i| {
            let mut d = vec![(i + 1) % 16];
            if i % 2 == 0 {
                d.push((i + 5) % 16);
            }
            d
        })
        .collect();
    let dials: Vec<&[usize]> = dials.iter().map(Vec::as_slice).collect();
    let mesh = common::Mesh::start(&names, &dials);
    mesh.wait_converged(std::time::Duration::from_secs(60));
    let target = "n05";

    let ca = mesh.dir.path().join("ca");
    let output = run(&["ca", "revoke", "--dir", path(&ca), "--name", target]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let revocation = stdout(&output);
    let start = std::time::Instant::now();
    let (status, body) = common::http(
        mesh.nodes[0].1,
        "POST",
        "/api/v1/revocations",
        Some(revocation.trim()),
    );
    assert_eq!(status, 200, "{body}");

    let holds = |i: usize| {
        let (_, body) = common::http(mesh.nodes[i].1, "GET", "/api/v1/revocations", None);
        body.contains(target)
    };
    // Every node but the revoked one (its links are dropped before the flood).
    let mut pending: Vec<usize> = (0..16).filter(|&i| names[i] != target).collect();
    while !pending.is_empty() && start.elapsed() < std::time::Duration::from_secs(5) {
        pending.retain(|&i| !holds(i));
    }
    let acted = start.elapsed();
    assert!(
        pending.is_empty(),
        "nodes {pending:?} never got the revocation"
    );
    eprintln!("revocation: all 15 other nodes acted within {acted:?}");
    assert!(acted < std::time::Duration::from_secs(1), "took {acted:?}");

    // Cut off everywhere: no link up with it, no route to it, and it stays so.
    let cut_off = || {
        (0..16).filter(|&i| names[i] != target).all(|i| {
            let (_, peers) = common::http(mesh.nodes[i].1, "GET", "/api/v1/peers", None);
            let (_, routes) = common::http(mesh.nodes[i].1, "GET", "/api/v1/routes", None);
            let peers: serde_json::Value = serde_json::from_str(&peers).unwrap();
            let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
            let linked = peers
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == target && p["state"] == "up");
            let routed = routes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["destination"] == target);
            !linked && !routed
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cut_off() {
        assert!(
            std::time::Instant::now() < deadline,
            "still linked or routed\n{}",
            mesh.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!(
        "revocation: links and routes gone after {:?}",
        start.elapsed()
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(cut_off(), "the revoked node got back in");
    // Its redials (n05 dials n06) were refused by policy at n06. (n00 and n04, which
    // dialed n05, stop dialing a revoked node altogether.)
    let (_, metrics) = common::http(mesh.nodes[6].1, "GET", "/metrics", None);
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "x0tta6bl4_policy_decisions_total{decision=\"deny\",action=\"neighbour\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        refused >= 1,
        "no refused reconnect counted on n06:\n{metrics}"
    );
}

#[test]
fn ca_rotate_root_runs_its_three_steps_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    let old = dir.path().join("old");
    ca_issue(&ca, "old", &old);
    let rotate = |flag: Option<&str>| {
        let mut args = vec!["ca", "rotate-root", "--dir", path(&ca)];
        args.extend(flag);
        run(&args)
    };
    let output = rotate(Some("--retire"));
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("--activate` first"),
        "{}",
        stderr(&output)
    );

    let output = rotate(None);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("--activate"),
        "{}",
        stdout(&output)
    );
    assert_eq!(code(&rotate(None)), 2, "a second prepare is refused");
    let output = rotate(Some("--activate"));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // Both roots trusted: the old SVID and a new one verify.
    let new = dir.path().join("new");
    ca_issue(&ca, "new", &new);
    for svid in [&old, &new] {
        let output = run(&[
            "ca",
            "inspect",
            path(&svid.join("svid.pem")),
            "--bundle",
            path(&ca),
        ]);
        assert_eq!(code(&output), 0, "{}", stdout(&output));
    }
    let output = rotate(Some("--retire"));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let output = run(&[
        "ca",
        "inspect",
        path(&old.join("svid.pem")),
        "--bundle",
        path(&ca),
    ]);
    assert_eq!(
        code(&output),
        1,
        "the retired root still verifies: {}",
        stdout(&output)
    );
    let output = run(&[
        "ca",
        "inspect",
        path(&new.join("svid.pem")),
        "--bundle",
        path(&ca),
    ]);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
}

/// `status`, `send` and `ca revoke --api` reach a node whose API requires mutual TLS
/// when given an SVID directory (`--svid`); the policy decides per caller.
#[test]
fn status_and_send_present_an_svid_to_an_api_that_requires_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    for name in ["n", "op", "guest"] {
        ca_issue(&ca, name, &dir.path().join(name));
    }
    std::fs::write(
        dir.path().join("policy.toml"),
        r#"
default = "deny"

[[rule]]
name = "operator"
effect = "allow"
actions = ["api"]
from = "spiffe://example.org/node/op"
endpoints = ["GET /api/v1/**", "POST /api/v1/send", "POST /api/v1/revocations"]

[[rule]]
name = "n-sends"
effect = "allow"
actions = ["send"]
from = "spiffe://example.org/node/n"
"#,
    )
    .unwrap();
    let ports = common::free_ports(1);
    let (quic, api) = ports[0];
    let config = dir.path().join("n.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{quic}\"\napi_listen = \"{api}\"\nstandalone = true\n[identity]\n\
             dir = \"n\"\npolicy = \"policy.toml\"\napi_mtls = true\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("n.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut node = common::bin()
        .args(["node", "--config", path(&config)])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let url = format!("https://{api}");
    let op = dir.path().join("op");
    let status = || run(&["status", "--api", &url, "--svid", path(&op), "--json"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let output = loop {
        let output = status();
        if code(&output) == 0 || std::time::Instant::now() > deadline {
            break output;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code(&output), 0, "{}\n{}", stderr(&output), logs());
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["status"]["name"], "n", "{report}");

    // The policy allows the operator to send (here to an unknown node: 404, not 403).
    let output = run(&[
        "send",
        "--api",
        &url,
        "--svid",
        path(&op),
        "--to",
        "nobody",
        "hi",
    ]);
    assert_eq!(code(&output), 1);
    assert!(stderr(&output).contains("404"), "{}", stderr(&output));

    // Another SVID of the domain is identified and refused by the policy.
    let guest = dir.path().join("guest");
    let output = run(&["status", "--api", &url, "--svid", path(&guest)]);
    assert_eq!(code(&output), 1);
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));

    // Without an SVID there is no answer over plain HTTP; an SVID with http:// is refused
    // before any request.
    let output = run(&["status", "--api", &format!("http://{api}")]);
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    let output = run(&[
        "status",
        "--api",
        &format!("http://{api}"),
        "--svid",
        path(&op),
    ]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("use https://"),
        "{}",
        stderr(&output)
    );

    // A revocation posted with the operator's SVID is taken.
    let output = run(&[
        "ca",
        "revoke",
        "--dir",
        path(&ca),
        "--name",
        "guest",
        "--api",
        &url,
        "--svid",
        path(&op),
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let _ = node.kill();
    let _ = node.wait();
}

/// `ca workload-api` and a node in Workload API mode, as real processes over a real unix
/// socket; the node finds the socket through `SPIFFE_ENDPOINT_SOCKET`.
#[test]
fn a_node_gets_its_svid_from_ca_workload_api() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    let socket = dir.path().join("workload.sock");
    let server_log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut server = common::bin()
        .args([
            "ca",
            "workload-api",
            "--dir",
            path(&ca),
            "--socket",
            path(&socket),
        ])
        .args(["--name", "w1", "--ttl", "1h"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(server_log)
        .spawn()
        .unwrap();
    let ports = common::free_ports(1);
    let config = dir.path().join("node.toml");
    let text = format!(
        "listen = \"{}\"\napi_listen = \"{}\"\nstandalone = true\n[identity]\ndir = \"state\"\nsource = \"workload-api\"\n",
        ports[0].0, ports[0].1
    );
    std::fs::write(&config, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let node_log = dir.path().join("node.log");
    let mut node = common::bin()
        .args(["node", "--config", path(&config)])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&node_log).unwrap())
        .spawn()
        .unwrap();
    let mut status = String::new();
    while Instant::now() < deadline + Duration::from_secs(10) {
        if std::net::TcpStream::connect(ports[0].1).is_ok() {
            let (code, body) = common::http(ports[0].1, "GET", "/api/v1/status", None);
            if code == 200 {
                status = body;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = node.kill();
    let _ = node.wait();
    let _ = server.kill();
    let _ = server.wait();
    let logs = std::fs::read_to_string(&node_log).unwrap_or_default();
    assert!(
        status.contains("\"spiffe_id\":\"spiffe://example.org/node/w1\""),
        "status {status:?}\nnode log:\n{logs}"
    );
}

#[test]
fn ca_workload_api_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    let socket = dir.path().join("s.sock");
    let output = run(&[
        "ca",
        "workload-api",
        "--dir",
        path(&ca),
        "--socket",
        path(&socket),
        "--name",
        "n",
        "--federate",
        "partner.example",
    ]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid --federate"),
        "{}",
        stderr(&output)
    );

    let missing = dir.path().join("nope.pem");
    let federate = format!("partner.example={}", missing.display());
    let output = run(&[
        "ca",
        "workload-api",
        "--dir",
        path(&ca),
        "--socket",
        path(&socket),
        "--name",
        "n",
        "--federate",
        &federate,
    ]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert!(
        stderr(&output).contains(path(&missing)),
        "{}",
        stderr(&output)
    );
    assert!(
        !socket.exists(),
        "the socket was created although the server refused to start"
    );
}

/// Issue 11, item 5: `ca issue` of a revoked name is refused (exit 2, no file written),
/// like `ca token`; other names are still issued.
#[test]
fn ca_issue_refuses_a_revoked_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    ca_issue(&ca, "gone", &dir.path().join("gone"));
    let output = run(&["ca", "revoke", "--dir", path(&ca), "--name", "gone"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    let out = dir.path().join("again");
    let output = run(&[
        "ca",
        "issue",
        "--dir",
        path(&ca),
        "--name",
        "gone",
        "--out",
        path(&out),
    ]);
    assert_eq!(code(&output), 2, "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.starts_with("x0tta6bl4: cannot issue the SVID"),
        "{message}"
    );
    assert!(message.contains("node gone is revoked"), "{message}");
    assert!(message.contains("use a new name"), "{message}");
    assert!(!out.join("svid.pem").exists(), "a revoked name got an SVID");

    let output = run(&["ca", "token", "--dir", path(&ca), "--name", "gone"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    ca_issue(&ca, "fresh", &dir.path().join("fresh"));
}
