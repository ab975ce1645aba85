//! The node's authorization policy (`[identity] policy`): the decisions of
//! [`x0tta6bl4_identity::Policy`], logged with their reason and counted, and reloaded
//! without a restart on `SIGHUP` or when the file changes. A file that does not
//! validate is rejected with the rule and the reason, and the policy in force stays.
//!
//! Hooks: a new link whose peer may not be a neighbour is closed (transport); an
//! application message a source may not send to this node is dropped on delivery and a
//! send from this node's API to a forbidden destination is refused (403); API calls
//! other than `/health/*` and `/metrics` are checked (callers are `anonymous` unless
//! `[identity] api_mtls` identifies them by their client SVID).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use x0tta6bl4_identity::{
    Action, Decision, NameBindings, Policy, PolicyError, SpiffeId, TrustDomain, Verdict,
};
use x0tta6bl4_proto::NodeName;

/// How often the policy file's modification time is checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The policy in force, its file and its counters. Shared by transport, driver and API.
#[derive(Debug)]
pub struct NodePolicy {
    file: Option<PathBuf>,
    trust_domain: TrustDomain,
    /// Node name → trust domain (federation), shared with the link-state authenticator.
    bindings: Arc<NameBindings>,
    current: RwLock<Arc<Policy>>,
    /// `[decision][action]`, in the order of `Decision::ALL` and `Action::ALL`.
    decisions: [[AtomicU64; 3]; 2],
    /// Reloads by result: `[ok, rejected]`.
    reloads: [AtomicU64; 2],
    /// Bumped by every successful reload, so the driver re-checks its links.
    generation: AtomicU64,
    /// Nodes revoked by a verified CA revocation: denied every action, until restart.
    revoked: RwLock<std::collections::BTreeSet<NodeName>>,
}

impl NodePolicy {
    /// Load `file` (or the default policy without one) for a node of `trust_domain`,
    /// whose node names are bound to trust domains in `bindings`.
    pub fn load(
        file: Option<&Path>,
        trust_domain: &TrustDomain,
        bindings: Arc<NameBindings>,
    ) -> Result<Self, PolicyError> {
        let policy = match file {
            Some(path) => Policy::load(path, trust_domain)?,
            None => Policy::default_for(trust_domain),
        };
        if let Some(path) = file {
            tracing::info!(file = %path.display(), rules = policy.rules(), "authorization policy loaded");
        }
        Ok(NodePolicy {
            file: file.map(Path::to_path_buf),
            trust_domain: trust_domain.clone(),
            bindings,
            current: RwLock::new(Arc::new(policy)),
            decisions: Default::default(),
            reloads: Default::default(),
            revoked: RwLock::default(),
            generation: AtomicU64::new(0),
        })
    }

    fn policy(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-read the file. On error the policy in force stays, and the error (naming the
    /// rule and the reason) is logged, counted and returned.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        match Policy::load(file, &self.trust_domain) {
            Ok(policy) => {
                tracing::info!(file = %file.display(), rules = policy.rules(), "authorization policy reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
                self.reloads[0].fetch_add(1, Ordering::Relaxed);
                self.generation.fetch_add(1, Ordering::Release);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "policy file rejected: the previous policy stays in force");
                self.reloads[1].fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Changes with every policy that took effect.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Deny `name` everything from now on; false if it already was.
    pub fn revoke(&self, name: &NodeName) -> bool {
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        revoked.insert(name.clone())
    }

    /// The revoked nodes, sorted.
    pub fn revoked(&self) -> Vec<NodeName> {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        revoked.iter().cloned().collect()
    }

    /// Whether `name` was revoked.
    pub fn is_revoked(&self, name: &NodeName) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        revoked.contains(name)
    }

    fn revoked_verdict(&self, name: &NodeName) -> Option<Verdict> {
        self.is_revoked(name).then(|| Verdict {
            decision: Decision::Deny,
            reason: format!("node {name} is revoked"),
        })
    }

    /// May `peer` become a neighbour? Checks revocation, the policy, and that no node
    /// of another trust domain holds its name (binding the name when it is free).
    pub fn neighbour(&self, peer: &SpiffeId) -> bool {
        let revoked = peer
            .node_name()
            .filter(|_| peer.trust_domain() == &self.trust_domain)
            .and_then(|n| self.revoked_verdict(&n));
        let mut verdict = revoked.unwrap_or_else(|| self.policy().neighbour(peer));
        if verdict.allowed() {
            if let Err(reason) = self.bindings.bind(peer) {
                verdict = Verdict {
                    decision: Decision::Deny,
                    reason,
                };
            }
        }
        self.record(Action::Neighbour, &verdict, || format!("neighbour {peer}"))
    }

    /// May node `from` send an application message to node `to`? Each name stands for
    /// the SPIFFE ID it is bound to (our trust domain when unbound).
    pub fn send(&self, from: &NodeName, to: &NodeName) -> bool {
        let (Some(from_id), Some(to_id)) =
            (self.bindings.spiffe_id(from), self.bindings.spiffe_id(to))
        else {
            let verdict = Verdict {
                decision: Decision::Deny,
                reason: "node name is not a SPIFFE path segment".into(),
            };
            return self.record(Action::Send, &verdict, || format!("send {from} -> {to}"));
        };
        let revoked_local = |id: &SpiffeId, name: &NodeName| {
            (id.trust_domain() == &self.trust_domain)
                .then(|| self.revoked_verdict(name))
                .flatten()
        };
        let revoked = revoked_local(&from_id, from).or_else(|| revoked_local(&to_id, to));
        let verdict = revoked.unwrap_or_else(|| self.policy().send(&from_id, &to_id));
        self.record(Action::Send, &verdict, || {
            format!("send {from_id} -> {to_id}")
        })
    }

    /// May `caller` (`None`: anonymous) call `method path`?
    pub fn api(&self, caller: Option<&SpiffeId>, method: &str, path: &str) -> bool {
        let verdict = self.policy().api(caller, method, path);
        self.record(Action::Api, &verdict, || {
            let caller = caller.map_or("anonymous".to_owned(), ToString::to_string);
            format!("api {caller} {method} {path}")
        })
    }

    /// Count and log a decision; denials at `info`, allows at `debug`.
    fn record(&self, action: Action, verdict: &Verdict, what: impl FnOnce() -> String) -> bool {
        let d = Decision::ALL
            .iter()
            .position(|d| *d == verdict.decision)
            .unwrap_or(1);
        let a = Action::ALL.iter().position(|a| *a == action).unwrap_or(0);
        self.decisions[d][a].fetch_add(1, Ordering::Relaxed);
        if verdict.allowed() {
            tracing::debug!(action = action.as_str(), reason = %verdict.reason, "policy allows {}", what());
        } else {
            tracing::info!(action = action.as_str(), reason = %verdict.reason, "policy denies {}", what());
        }
        verdict.allowed()
    }

    /// `(decision, action, count)` for every pair.
    pub fn decisions(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut all = Vec::with_capacity(6);
        for (d, decision) in Decision::ALL.iter().enumerate() {
            for (a, action) in Action::ALL.iter().enumerate() {
                let count = self.decisions[d][a].load(Ordering::Relaxed);
                all.push((decision.as_str(), action.as_str(), count));
            }
        }
        all
    }

    /// `(result, count)` of reloads: `ok` and `rejected`.
    pub fn reloads(&self) -> [(&'static str, u64); 2] {
        [
            ("ok", self.reloads[0].load(Ordering::Relaxed)),
            ("rejected", self.reloads[1].load(Ordering::Relaxed)),
        ]
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload the policy on `SIGHUP` and whenever the file's modification time or size
/// changes, until `stop` turns true.
pub(crate) async fn watch(policy: Arc<NodePolicy>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(file) = policy.file.clone() else {
        return;
    };
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stamp = |path: &Path| {
        (
            modified(path),
            std::fs::metadata(path).map(|m| m.len()).ok(),
        )
    };
    let mut seen = stamp(&file);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        #[cfg(unix)]
        let hangup_signal = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_signal = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = crate::state::stopped(&mut stop) => return,
            _ = hangup_signal => {
                tracing::info!("SIGHUP: reloading the authorization policy");
                seen = stamp(&file);
                let _ = policy.reload();
            }
            _ = tick.tick() => {
                let now = stamp(&file);
                if now != seen {
                    seen = now;
                    let _ = policy.reload();
                }
            }
        }
    }
}
