//! The chaos lab: real node processes, each in its own Linux network namespace, broken
//! on purpose and measured on the data plane.
//!
//! Key design decision: the lab measures every router the same way. x0tta6bl4 nodes
//! carry probe flows over their own mesh data plane (the flows API); babeld moves
//! packets by kernel forwarding, so a tiny UDP prober (`x0tta6bl4 lab probe-agent`)
//! runs in each namespace. Both feed arrival times into `x0tta6bl4_proto::measure`,
//! the code the twin and the demo use, so the numbers compare. Everything the lab
//! creates (namespaces, veths, nftables tables, processes, files) is owned by guards
//! whose `Drop` removes it, so success, error and Ctrl-C (a dropped future) all clean up.
//!
//! Every run also measures what the routers cost the host ([`resources`]: CPU, memory,
//! link bytes and disk per node, idle, under flows and during heals, with the load
//! average), can sample the probe flows (`--flows-sample`) for meshes of up to 128
//! nodes, and can hold each node to a CPU and memory budget in its own cgroup
//! ([`budget`]). Per-process figures are read from /proc by hand: no crate reads a
//! foreign process's `stat`/`status`/`net/dev` without pulling in far more than three
//! small parsers (procfs would; it also needs features for net namespaces).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod abuse;
pub mod budget;
pub mod fault;
pub mod net;
pub mod paths;
pub mod probe;
pub mod report;
pub mod resources;
pub mod routers;
pub mod run;
pub mod soak;

pub use budget::Budget;
pub use fault::{Fault, FAULT_HELP};
pub use report::{FlowsReport, IdentityEffect, LabReport, RouterReport, RoutingFigures, TwinSide};
pub use run::{run, Options, RouterChoice};

/// Why the lab could not run or finish, split by who has to act.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The arguments are wrong (exit 2).
    #[error("{what}: {fix}")]
    Usage {
        /// What is wrong.
        what: String,
        /// How to fix it.
        fix: String,
    },
    /// The machine lacks something: root, a tool, kernel support (exit 2).
    #[error("{what}: {fix}")]
    Environment {
        /// What is missing.
        what: String,
        /// How to get it.
        fix: String,
    },
    /// The lab ran but something failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl LabError {
    /// A usage error.
    pub fn usage(what: impl Into<String>, fix: impl Into<String>) -> Self {
        LabError::Usage {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// An environment error.
    pub fn environment(what: impl Into<String>, fix: impl Into<String>) -> Self {
        LabError::Environment {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// A failure.
    pub fn failed(what: impl Into<String>) -> Self {
        LabError::Failed(what.into())
    }
}

/// The message given when the lab does not run as root.
pub fn not_root_message(euid: u32) -> Option<LabError> {
    (euid != 0).then(|| {
        LabError::environment(
            format!("the chaos lab needs root (running as uid {euid})"),
            "it creates network namespaces, veth pairs and nftables rules: run it with sudo, \
             or as root in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN",
        )
    })
}

/// The message given when an external tool is missing, naming the package.
pub fn missing_tool_message(tool: &str) -> LabError {
    let package = match tool {
        "nft" => "nftables",
        "ip" | "tc" => "iproute2",
        other => other,
    };
    LabError::environment(
        format!("`{tool}` is not installed"),
        format!("install it with `apt-get install -y {package}` (Debian/Ubuntu)"),
    )
}

/// Effective user id, from /proc (no unsafe libc call).
pub fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        assert!(not_root_message(0).is_none());
        let text = not_root_message(1000).unwrap().to_string();
        assert!(
            text.contains("needs root") && text.contains("sudo"),
            "{text}"
        );
        let text = missing_tool_message("nft").to_string();
        assert!(text.contains("apt-get install -y nftables"), "{text}");
        let text = missing_tool_message("babeld").to_string();
        assert!(text.contains("apt-get install -y babeld"), "{text}");
    }
}
