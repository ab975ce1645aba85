//! The revocations a node has accepted, kept across restarts in
//! [`REVOCATIONS_FILE`] (one JSON revocation per line, as `x0tta6bl4 ca revoke` prints
//! them) through a crash-safe [`AppendLog`].
//!
//! The protocol core decides which revocations are genuine and new (it verifies each
//! with the SVID authenticator and floods it); the driver hands every new one to
//! [`RevocationStore::persist`], which returns only once the record is on disk. A write
//! that fails is kept in memory, counted, retried every [`RETRY_INTERVAL`] and reported
//! (the node is not ready while a revocation is unwritten), never just logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use x0tta6bl4_proto::NodeName;

use crate::state::Shared;
use crate::state_log::AppendLog;

/// The file in the node's identity (state) directory where accepted revocations are kept.
pub const REVOCATIONS_FILE: &str = "revocations.jsonl";
/// Revocations read back at start (the protocol core holds at most `revocations_max`).
const REVOCATIONS_READ_MAX: usize = 1_000_000;
/// Delay between two attempts to write revocations that could not be written.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The revocation file and what could not be written to it yet.
#[derive(Debug)]
pub(crate) struct RevocationStore {
    path: PathBuf,
    /// `None` after a failure that lost the handle; reopened on retry.
    log: Option<AppendLog>,
    /// Revoked node → the JSON line not written yet, and the last error.
    pending: BTreeMap<NodeName, (String, String)>,
}

impl RevocationStore {
    /// Open the file in `dir`; returns the store and the revocations it holds (as the
    /// bytes the core verifies). A torn last line (a crash during a write) is cut and
    /// logged; a line that is not a revocation is logged and skipped.
    pub(crate) fn open(dir: &Path) -> Result<(RevocationStore, Vec<Vec<u8>>), String> {
        let path = dir.join(REVOCATIONS_FILE);
        let opened = AppendLog::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if opened.torn_bytes > 0 {
            tracing::warn!(file = %path.display(), bytes = opened.torn_bytes,
                "cut a torn last line (the node stopped while writing it); it was never acknowledged");
        }
        let mut revocations = Vec::new();
        for (index, line) in opened.records.iter().take(REVOCATIONS_READ_MAX).enumerate() {
            match serde_json::from_slice::<x0tta6bl4_identity::Revocation>(line) {
                Ok(revocation) => revocations.push(revocation.to_bytes()),
                Err(error) => tracing::warn!(file = %path.display(), line = index + 1, %error,
                    "kept revocation is not readable; skipped"),
            }
        }
        let store = RevocationStore {
            path,
            log: Some(opened.log),
            pending: BTreeMap::new(),
        };
        Ok((store, revocations))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Write the revocation of `node` (bytes the core accepted) durably. On failure it is
    /// kept for [`RevocationStore::retry`] and the error is returned.
    pub(crate) fn persist(
        &mut self,
        node: &NodeName,
        revocation: &[u8],
        shared: &Shared,
    ) -> Result<(), String> {
        let line = x0tta6bl4_identity::Revocation::from_bytes(revocation)
            .map_err(|e| format!("not a CA revocation: {e}"))
            .and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string()))?;
        let result = self.write(&line);
        if let Err(error) = &result {
            shared
                .counters
                .state_write_failures
                .fetch_add(1, Ordering::Relaxed);
            self.pending.insert(node.clone(), (line, error.clone()));
            shared
                .counters
                .state_writes_pending
                .store(self.pending.len() as u64, Ordering::Relaxed);
        }
        result
    }

    /// Whether the revocation of `node` still waits to be written, and why.
    pub(crate) fn pending_error(&self, node: &NodeName) -> Option<&str> {
        self.pending.get(node).map(|(_, error)| error.as_str())
    }

    /// Whether any revocation waits to be written.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Try again to write every pending revocation.
    pub(crate) fn retry(&mut self, shared: &Shared) {
        let pending = std::mem::take(&mut self.pending);
        for (node, (line, _)) in pending {
            match self.write(&line) {
                Ok(()) => tracing::info!(file = %self.path.display(), %node,
                    "revocation written after an earlier failure"),
                Err(error) => {
                    shared
                        .counters
                        .state_write_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.pending.insert(node, (line, error));
                }
            }
        }
        shared
            .counters
            .state_writes_pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    fn write(&mut self, line: &str) -> Result<(), String> {
        if self.log.is_none() {
            let opened = AppendLog::open(&self.path).map_err(|e| e.to_string())?;
            self.log = Some(opened.log);
        }
        let Some(log) = self.log.as_mut() else {
            return Err("the file is not open".into());
        };
        let written = log.append(line.as_bytes()).map_err(|e| e.to_string());
        if written.is_err() {
            // Reopen next time: a failed write may have left a torn line, which the
            // reopening cuts before appending again.
            self.log = None;
        }
        written
    }
}
