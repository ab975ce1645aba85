//! Configuration reload without a restart: on `SIGHUP` and on `POST
//! /api/v1/config/reload` the node reads its configuration file again, validates it as
//! at start ([`crate::load_config`]), and hands the `[protocol]` settings that can change
//! at run time to the protocol core ([`x0tta6bl4_proto::Node::set_config`], through the
//! driver's command queue). A file that does not validate is refused with the reason and
//! the configuration in force stays. Settings read only at start (addresses, peers,
//! identity, discovery, API limits, flows, the link predictor, and the protocol's table sizes and dial
//! timeout) keep their running value and are reported as needing a restart.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeConfig;
use crate::driver::Command;

/// `[protocol]` settings fixed when the node starts: the tables are sized for them, and
/// the dial timeout sets the QUIC handshake's initial RTT of the TLS configuration.
pub const PROTOCOL_RESTART_KEYS: [&str; 3] =
    ["lsdb_entries_max", "revocations_max", "dial_timeout_ms"];

/// How long a reload waits for the driver.
const DRIVER_WAIT: Duration = Duration::from_secs(2);

/// What a reload changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// The file read.
    pub file: String,
    /// Dotted keys whose new value is in force (`protocol.probe_interval_ms`, ...).
    pub applied: Vec<String>,
    /// Dotted keys (or sections) changed in the file that take effect at the next start.
    pub restart_required: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The node was started without a file (embedded with a built configuration).
    #[error("this node was not started from a configuration file: nothing to reload")]
    NoFile,
    /// The file does not read or validate.
    #[error("{0}; the configuration in force is kept")]
    Invalid(String),
    /// The node did not take it (shutting down, or busy).
    #[error("{0}; the configuration in force is kept")]
    Unavailable(String),
}

/// The node's configuration in force and the way to change it.
pub(crate) struct Reloader {
    path: Option<PathBuf>,
    shared: std::sync::Arc<crate::state::Shared>,
    running: Mutex<NodeConfig>,
    commands: mpsc::Sender<Command>,
    /// One reload at a time (a SIGHUP and an API call may come together).
    turn: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(
        config: &NodeConfig,
        shared: std::sync::Arc<crate::state::Shared>,
        commands: mpsc::Sender<Command>,
    ) -> Reloader {
        Reloader {
            path: config.source.clone(),
            shared,
            running: Mutex::new(config.clone()),
            commands,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The `[protocol]` settings in force.
    pub(crate) fn protocol(&self) -> x0tta6bl4_proto::Config {
        self.lock().protocol.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeConfig> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read the file again and apply what can change at run time; counted in
    /// `config_reloads_total{result}`.
    pub(crate) async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let outcome = self.reload_once().await;
        let counters = &self.shared.counters;
        let counter = match outcome {
            Ok(_) => &counters.config_reloads_ok,
            Err(_) => &counters.config_reloads_rejected,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        outcome
    }

    async fn reload_once(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let _turn = self.turn.lock().await;
        let file = path.display().to_string();
        let read = tokio::task::spawn_blocking(move || crate::load_config(&path))
            .await
            .map_err(|e| ReloadError::Unavailable(format!("the reload task failed: {e}")))?;
        let new = read.map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let running = self.lock().clone();
        let (protocol, applied, restart_required) = plan(&running, &new);
        if !applied.is_empty() {
            let (reply, answer) = oneshot::channel();
            let command = Command::Reconfigure {
                config: Box::new(protocol.clone()),
                reply,
            };
            let unavailable = |why: &str| ReloadError::Unavailable(why.to_owned());
            self.commands
                .try_send(command)
                .map_err(|_| unavailable("the node is busy or shutting down: retry shortly"))?;
            tokio::time::timeout(DRIVER_WAIT, answer)
                .await
                .map_err(|_| unavailable("the node did not answer within 2 s: retry shortly"))?
                .map_err(|_| unavailable("the node is shutting down"))?
                .map_err(ReloadError::Invalid)?;
            self.lock().protocol = protocol;
        }
        Ok(ReloadReport {
            file,
            applied,
            restart_required,
        })
    }
}

/// The `[protocol]` settings to put in force (the new file's, with those fixed at start
/// kept), the keys that change now, and those that wait for a restart.
pub(crate) fn plan(
    running: &NodeConfig,
    new: &NodeConfig,
) -> (x0tta6bl4_proto::Config, Vec<String>, Vec<String>) {
    let mut restart = Vec::new();
    let sections = [
        ("listen", json(&running.listen), json(&new.listen)),
        (
            "api_listen",
            json(&running.api_listen),
            json(&new.api_listen),
        ),
        ("peers", json(&running.peers), json(&new.peers)),
        ("advertise", json(&running.advertise), json(&new.advertise)),
        (
            "standalone",
            json(&running.standalone),
            json(&new.standalone),
        ),
        ("identity", json(&running.identity), json(&new.identity)),
        ("discovery", json(&running.discovery), json(&new.discovery)),
        ("api", json(&running.api), json(&new.api)),
        ("transport", json(&running.transport), json(&new.transport)),
        ("flows", json(&running.flows), json(&new.flows)),
        ("predictor", json(&running.predictor), json(&new.predictor)),
    ];
    for (key, old, new) in sections {
        if old != new {
            restart.push(key.to_owned());
        }
    }
    let mut protocol = new.protocol.clone();
    let old = &running.protocol;
    // Read only when the node starts: the running value stays until a restart.
    fn keep<T: PartialEq + Copy>(new: &mut T, old: T, key: &str, restart: &mut Vec<String>) {
        if *new != old {
            *new = old;
            restart.push(key.to_owned());
        }
    }
    keep(
        &mut protocol.lsdb_entries_max,
        old.lsdb_entries_max,
        "protocol.lsdb_entries_max",
        &mut restart,
    );
    keep(
        &mut protocol.revocations_max,
        old.revocations_max,
        "protocol.revocations_max",
        &mut restart,
    );
    keep(
        &mut protocol.dial_timeout_ms,
        old.dial_timeout_ms,
        "protocol.dial_timeout_ms",
        &mut restart,
    );
    let mut applied = Vec::new();
    differing_keys("protocol", &json(old), &json(&protocol), &mut applied);
    (protocol, applied, restart)
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Dotted keys under `prefix` whose values differ, nested tables walked.
fn differing_keys(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                let path = format!("{prefix}.{key}");
                differing_keys(&path, a.get(key).unwrap_or(&Value::Null), value, out);
            }
        }
        (a, b) if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// Reload on every `SIGHUP` until `stop` turns true; each outcome is logged.
pub(crate) async fn on_hangup(
    reloader: std::sync::Arc<Reloader>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload through the API instead");
            return;
        };
        loop {
            tokio::select! {
                _ = crate::state::stopped(&mut stop) => return,
                _ = hangup.recv() => log(reloader.reload().await),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        crate::state::stopped(&mut stop).await;
    }
}

fn log(outcome: Result<ReloadReport, ReloadError>) {
    match outcome {
        Ok(report) => tracing::info!(
            file = %report.file,
            applied = ?report.applied,
            restart_required = ?report.restart_required,
            "SIGHUP: configuration reloaded"
        ),
        Err(ReloadError::NoFile) => {}
        Err(error) => tracing::warn!(%error, "SIGHUP: configuration not reloaded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> NodeConfig {
        let text = format!(
            "listen = \"127.0.0.1:7001\"\napi_listen = \"127.0.0.1:8001\"\n[identity]\n\
             dir = \"svid\"\n{extra}"
        );
        NodeConfig::from_toml(&text, std::path::Path::new("/etc/x0/node.toml")).unwrap()
    }

    #[test]
    fn runtime_settings_apply_and_start_settings_wait_for_a_restart() {
        let running = config("");
        let new = config(
            "[api]\nconnections_max = 9\n[protocol]\nprobe_interval_ms = 200\n\
             lsdb_entries_max = 99\n[protocol.healing]\nflap_threshold = 9\n",
        );
        let (protocol, applied, restart) = plan(&running, &new);
        assert_eq!(
            applied,
            [
                "protocol.healing.flap_threshold",
                "protocol.probe_interval_ms"
            ]
        );
        assert_eq!(restart, ["api", "protocol.lsdb_entries_max"]);
        assert_eq!(protocol.probe_interval_ms, 200);
        assert_eq!(protocol.lsdb_entries_max, running.protocol.lsdb_entries_max);
        let (_, applied, restart) = plan(&running, &running);
        assert!(applied.is_empty() && restart.is_empty());
    }
}
