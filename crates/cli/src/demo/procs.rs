//! The demo's node processes. [`Fleet`] owns every child: dropping it (on success, on
//! error, on Ctrl-C, on panic) kills and reaps each one that is still running.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::Context as _;

use crate::node_cmd::PARENT_PID_ENV;

/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 15;

/// One node process.
pub struct NodeProcess {
    /// The node's name.
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Option<Child>,
}

/// Every node process the demo started.
#[derive(Default)]
pub struct Fleet {
    nodes: Vec<NodeProcess>,
}

impl Fleet {
    /// Start `x0tta6bl4 node --config CONFIG` (this very executable) as node `name`,
    /// its output appended to `log`.
    pub fn spawn(&mut self, name: &str, config: &Path, log: &Path) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the path of this executable")?;
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("cannot reopen {}", log.display()))?;
        let child = Command::new(&exe)
            .arg("node")
            .arg("--config")
            .arg(config)
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} node --config {}",
                    exe.display(),
                    config.display()
                )
            })?;
        self.nodes.push(NodeProcess {
            name: name.to_owned(),
            log: log.to_owned(),
            child: Some(child),
        });
        Ok(())
    }

    /// SIGKILL node `name` and reap it.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))?;
        if let Some(mut child) = node.child.take() {
            child
                .kill()
                .with_context(|| format!("cannot kill node {name}"))?;
            child
                .wait()
                .with_context(|| format!("cannot reap node {name}"))?;
        }
        Ok(())
    }

    /// The first node that is supposed to run but has exited, with its status.
    pub fn first_exited(&mut self) -> Option<(&NodeProcess, ExitStatus)> {
        let index = self.nodes.iter_mut().position(|n| {
            n.child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        })?;
        let node = &mut self.nodes[index];
        let status = node.child.take()?.wait().ok()?;
        Some((&self.nodes[index], status))
    }

    /// Kill and reap every node still running.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The last lines of a log file, indented, for an error message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    if lines.is_empty() {
        return "(the log is empty)".to_owned();
    }
    lines[start..].join("\n")
}
