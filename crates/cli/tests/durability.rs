//! State files survive `kill -9` at any point: a real node process is killed while it
//! takes revocations over its API, again and again at varying instants; after every
//! restart it still holds every revocation it acknowledged (HTTP 200), which it only
//! does once the record is on disk. (The byte-exact version, a crash after each byte
//! of the file, is the unit test of `state_log`.)

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bin, ca_init, ca_issue, free_ports, path};

/// POST `body` to `target`; `None` when the node died mid-request.
fn post(addr: SocketAddr, target: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

fn start(config: &std::path::Path, log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    bin()
        .args(["node", "--config", path(config)])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

fn wait_api(addr: SocketAddr, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "node API did not come up:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn no_acknowledged_revocation_is_lost_to_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    ca_init(&ca_dir, "durability.test");
    let node_dir = dir.path().join("n1");
    ca_issue(&ca_dir, "n1", &node_dir);
    let ca = x0tta6bl4_identity::CertificateAuthority::open(&ca_dir).unwrap();
    let bodies: Vec<(String, String)> = (0..400)
        .map(|i| {
            let name = format!("r{i:03}");
            let revocation = ca
                .revoke(&x0tta6bl4_proto::NodeName::new(&name).unwrap())
                .unwrap();
            (name, serde_json::to_string(&revocation).unwrap())
        })
        .collect();
    let ports = free_ports(1);
    let api = ports[0].1;
    let config = node_dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\napi_listen = \"{api}\"\npeers = []\nstandalone = true\n\
             [identity]\ndir = \"{}\"\n",
            ports[0].0,
            path(&node_dir)
        ),
    )
    .unwrap();
    let log = node_dir.join("node.log");
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut next = 0usize;
    let rounds = 12;
    for round in 0..rounds {
        let mut child = start(&config, &log);
        wait_api(api, &log);
        // Everything acknowledged before any earlier kill is still there.
        let (status, body) = common::http(api, "GET", "/api/v1/revocations", None);
        assert_eq!(status, 200);
        let held: Vec<String> = serde_json::from_str(&body).unwrap();
        for name in acknowledged.lock().unwrap().iter() {
            assert!(
                held.contains(name),
                "round {round}: acknowledged revocation of {name} lost after kill -9"
            );
        }
        // Post revocations back to back; kill -9 at an instant that varies per round.
        let posting = {
            let (bodies, acknowledged) = (bodies.clone(), acknowledged.clone());
            let start_at = next;
            std::thread::spawn(move || {
                let mut index = start_at;
                while index < bodies.len() {
                    let (name, body) = &bodies[index];
                    match post(api, "/api/v1/revocations", body) {
                        Some(200) => acknowledged.lock().unwrap().push(name.clone()),
                        Some(status) => panic!("revocation of {name}: HTTP {status}"),
                        None => break, // killed mid-request: not acknowledged
                    }
                    index += 1;
                }
                index
            })
        };
        std::thread::sleep(Duration::from_millis(3 + 7 * round as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        next = posting.join().unwrap();
        if next >= bodies.len() {
            break;
        }
    }
    let mut child = start(&config, &log);
    wait_api(api, &log);
    let (_, body) = common::http(api, "GET", "/api/v1/revocations", None);
    let held: Vec<String> = serde_json::from_str(&body).unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "{} revocations acknowledged over {rounds} kill -9 rounds; {} held after the last \
         restart",
        acknowledged.len(),
        held.len()
    );
    assert!(
        acknowledged.len() >= rounds,
        "too few acknowledged to test anything"
    );
    for name in &acknowledged {
        assert!(held.contains(name), "{name} lost");
    }
}
