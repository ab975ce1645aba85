//! Helpers shared by the integration tests: a CA in a tempdir, configuration files,
//! an HTTP client for the node API, and polling with a deadline.
#![allow(dead_code)] // each test file uses a subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use x0tta6bl4_identity::{CertificateAuthority, TrustDomain};
use x0tta6bl4_node::{load_config, NodeConfig, NodeHandle};
use x0tta6bl4_proto::NodeName;

/// Show the nodes' logs when `RUST_LOG` is set (e.g. `RUST_LOG=x0tta6bl4_node=debug`).
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::from_default_env();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A CA and SVIDs for `names` under `dir`.
pub fn issue(dir: &Path, names: &[&str]) {
    logs();
    let trust_domain = TrustDomain::new("mesh.test").unwrap();
    let ca = CertificateAuthority::init(&dir.join("ca"), &trust_domain).unwrap();
    for name in names {
        let name = NodeName::new(name).unwrap();
        ca.issue_node(&name, Duration::from_secs(3600), &dir.join(name.as_str()))
            .unwrap();
    }
}

/// Write a configuration file for node `name` (ports picked by the OS) and load it as
/// the CLI would.
pub fn config(dir: &Path, name: &str, peers: &[SocketAddr]) -> NodeConfig {
    config_with(dir, name, peers, "")
}

/// [`config`] with `extra` TOML appended: tables after `[identity]`, the last table
/// [`write_config`] writes (e.g. `"[protocol]\nprobe_interval_ms = 200\n"`).
pub fn config_with(dir: &Path, name: &str, peers: &[SocketAddr], extra: &str) -> NodeConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    load_config(&write_config_with(dir, name, any, any, peers, extra)).unwrap()
}

/// Write the configuration file of node `name`; returns its path.
pub fn write_config(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    api_listen: SocketAddr,
    peers: &[SocketAddr],
) -> PathBuf {
    write_config_with(dir, name, listen, api_listen, peers, "")
}

/// [`write_config`] with `extra` TOML appended (see [`config_with`]).
pub fn write_config_with(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    api_listen: SocketAddr,
    peers: &[SocketAddr],
    extra: &str,
) -> PathBuf {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let text = format!(
        "listen = \"{listen}\"\napi_listen = \"{api_listen}\"\npeers = [{}]\n[identity]\ndir = \"{name}\"\n{extra}",
        peers.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Start node `name` again on `quic`, retrying while the old socket is released.
pub async fn restart(dir: &Path, name: &str, quic: std::net::SocketAddr) -> NodeHandle {
    let mut config = config(dir, name, &[]);
    config.listen = quic;
    let start = Instant::now();
    loop {
        match NodeHandle::start(config.clone()).await {
            Ok(node) => return node,
            Err(error) if start.elapsed() < Duration::from_secs(2) => {
                eprintln!("restart: {error:#}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("restart failed: {error:#}"),
        }
    }
}

pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(node: &NodeHandle) -> Api {
        Api::at(node.api_addr())
    }

    pub fn at(addr: SocketAddr) -> Api {
        x0tta6bl4_identity::install_default_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Api {
            client,
            base: format!("http://{addr}"),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Send messages `m0`, `m1`, ... to `to` every 20 ms for `span`, each accepted (202);
    /// returns how many were sent.
    pub async fn send_steadily(&self, to: &str, span: Duration) -> usize {
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < span {
            let body = format!(r#"{{"to": "{to}", "payload": "m{sent}"}}"#);
            let (status, answer) = self.post("/api/v1/send", &body).await;
            assert_eq!(status, 202, "message {sent}: {answer}");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    }

    /// Wait until this node has received exactly `sent` messages: none lost.
    pub async fn wait_delivered(&self, sent: usize) {
        eventually(
            Duration::from_secs(5),
            "every message delivered",
            || async {
                let (_, messages) = self.get("/api/v1/messages").await;
                messages.as_array().map_or(0, Vec::len) == sent
            },
        )
        .await;
    }

    pub async fn route(&self, destination: &str) -> Option<Value> {
        let (_, routes) = self.get("/api/v1/routes").await;
        routes
            .as_array()?
            .iter()
            .find(|r| r["destination"] == destination)
            .cloned()
    }
}

/// Poll `check` every 20 ms until it holds or `limit` passes; returns the time it took.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not true within {limit:?}");
}
