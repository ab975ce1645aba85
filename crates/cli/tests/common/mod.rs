//! Helpers shared by the CLI integration tests: run the real binary, start a small mesh
//! of real node processes, talk HTTP without a client library.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `x0tta6bl4` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_x0tta6bl4"))
}

/// Run the binary with `args` and capture everything.
pub fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit code (-1 when killed by a signal).
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Create a CA for `trust_domain` in `dir` with the binary.
pub fn ca_init(dir: &Path, trust_domain: &str) {
    let output = run(&[
        "ca",
        "init",
        "--trust-domain",
        trust_domain,
        "--dir",
        path(dir),
    ]);
    assert_eq!(code(&output), 0, "ca init failed: {}", stderr(&output));
}

/// Issue node `name`'s SVID into `out` with the binary.
pub fn ca_issue(dir: &Path, name: &str, out: &Path) {
    let output = run(&[
        "ca",
        "issue",
        "--dir",
        path(dir),
        "--name",
        name,
        "--out",
        path(out),
    ]);
    assert_eq!(code(&output), 0, "ca issue failed: {}", stderr(&output));
}

/// A path as `&str` (test paths are UTF-8).
pub fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A plain HTTP/1.1 request to `addr`; returns the status code and the body.
pub fn http(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let (_, rest) = answer.split_once("\r\n\r\n").expect("headers end");
    (status, rest.to_owned())
}

/// Node processes started by a test; killed when dropped.
pub struct Mesh {
    /// Holds the CA, SVIDs, configs and logs.
    pub dir: tempfile::TempDir,
    /// (name, api address, child, log path).
    pub nodes: Vec<(String, SocketAddr, Child, PathBuf)>,
}

impl Mesh {
    /// Start one node per name; node `i` dials the nodes listed in `dials[i]`.
    pub fn start(names: &[&str], dials: &[&[usize]]) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        ca_init(&ca, "test.x0tta6bl4.mesh");
        let ports = free_ports(names.len());
        let mut nodes = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let node_dir = dir.path().join(name);
            ca_issue(&ca, name, &node_dir);
            let peers: Vec<String> = dials[index]
                .iter()
                .map(|&p| format!("\"{}\"", ports[p].0))
                .collect();
            let config = format!(
                "listen = \"{}\"\napi_listen = \"{}\"\npeers = [{}]\nstandalone = false\n\
                 [identity]\ndir = \"{}\"\n",
                ports[index].0,
                ports[index].1,
                peers.join(", "),
                path(&node_dir)
            );
            let config_path = node_dir.join("node.toml");
            std::fs::write(&config_path, config).expect("write config");
            let log = node_dir.join("node.log");
            let out = std::fs::File::create(&log).expect("log");
            let child = bin()
                .args(["node", "--config", path(&config_path)])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .expect("spawn node");
            nodes.push((name.to_string(), ports[index].1, child, log));
        }
        Mesh { dir, nodes }
    }

    /// The API URL of node `index`.
    pub fn api(&self, index: usize) -> String {
        format!("http://{}", self.nodes[index].1)
    }

    /// Wait until every node has a route to every other, or panic with the logs.
    pub fn wait_converged(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let wanted = self.nodes.len() - 1;
        loop {
            let complete = self.nodes.iter().all(|(_, api, _, _)| {
                TcpStream::connect_timeout(api, Duration::from_millis(200)).is_ok() && {
                    let (status, body) = http(*api, "GET", "/api/v1/routes", None);
                    let routes: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    status == 200 && routes.as_array().is_some_and(|r| r.len() == wanted)
                }
            });
            if complete {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mesh did not converge:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|(name, _, _, log)| {
                format!(
                    "--- {name}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, _, child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Free loopback ports: (QUIC/UDP, API/TCP) per node.
pub fn free_ports(count: usize) -> Vec<(SocketAddr, SocketAddr)> {
    let held: Vec<(UdpSocket, TcpListener)> = (0..count)
        .map(|_| {
            (
                UdpSocket::bind("127.0.0.1:0").expect("udp"),
                TcpListener::bind("127.0.0.1:0").expect("tcp"),
            )
        })
        .collect();
    held.iter()
        .map(|(u, t)| (u.local_addr().expect("addr"), t.local_addr().expect("addr")))
        .collect()
}

/// scikit-learn's digits for the federated-learning tests, or `None` to skip (a failure
/// under `CI=true`, where the data must be there).
pub fn digits_data() -> Option<PathBuf> {
    let dir = x0tta6bl4_fl::data::default_data_dir();
    if dir.join("digits-train.bin").exists() && dir.join("digits-test.bin").exists() {
        return Some(dir);
    }
    let msg = "digits data missing: run `python3 scripts/fetch-fl-data.py` (scripts/test.sh does)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}
