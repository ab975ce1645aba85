//! `x0tta6bl4 node`: load the configuration, set up logging, run the daemon until
//! Ctrl-C or SIGTERM.

use std::io::IsTerminal as _;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::args::NodeArgs;
use crate::problem::{problem, Exit, ProblemExt};

/// When set (by `x0tta6bl4 demo`) to the pid of the process that started the node, the
/// node exits as soon as that process is gone, so a killed demo leaves no orphans.
pub const PARENT_PID_ENV: &str = "X0TTA6BL4_PARENT_PID";

/// How often an orphan check looks at the parent pid.
const PARENT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Run `node`.
pub async fn run(args: &NodeArgs) -> anyhow::Result<()> {
    let file = args.config.display();
    let mut config = x0tta6bl4_node::load_config(&args.config).problem(
        Exit::Usage,
        "invalid node configuration",
        &file,
        "fix the key named below; examples/node.toml shows and explains every key",
    )?;
    if args.check_config {
        check_policy(&config)?;
        println!("ok");
        return Ok(());
    }
    config.chaos.clone_from(&args.chaos);
    init_logging(args.log_level.as_deref())?;
    watch_parent();
    x0tta6bl4_node::run(config, shutdown_signal())
        .await
        .map_err(|error| {
            // The identity, its bundles or the policy named by the file: a configuration
            // error (exit 2), unlike a port in use or an unreachable Workload API.
            let (exit, what, fix) = match error.downcast_ref::<x0tta6bl4_node::ConfigProblem>() {
                Some(_) => (
                    Exit::Usage,
                    "the node cannot start with this configuration",
                    "fix the file or key named below; examples/node.toml explains every key",
                ),
                None => (Exit::Failure, "the node failed", "see the cause below"),
            };
            error.context(problem(exit, what, &file, fix))
        })
}

/// `--check-config`: the authorization policy the file names must exist and be valid.
fn check_policy(config: &x0tta6bl4_node::NodeConfig) -> anyhow::Result<()> {
    let Some(policy) = &config.identity.policy else {
        return Ok(());
    };
    // Parsing does not depend on the trust domain (the SVID's, not read here).
    let domain = x0tta6bl4_identity::TrustDomain::new("config-check")?;
    x0tta6bl4_identity::Policy::load(policy, &domain).problem(
        Exit::Usage,
        "invalid authorization policy",
        policy.display(),
        "fix the file (examples/policy.toml explains it) or `[identity] policy`",
    )?;
    Ok(())
}

/// The filter when neither `--log-level` nor $RUST_LOG gives one. quinn's spans stay
/// off: entered on every packet, they cost an idle node a few per cent of its CPU.
const DEFAULT_LOG_FILTER: &str = "info,quinn=warn";

/// Log to standard error, filtered by `--log-level`, else $RUST_LOG, else
/// [`DEFAULT_LOG_FILTER`].
pub fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).problem(
            Exit::Usage,
            "invalid --log-level",
            level,
            "use error, warn, info, debug, trace or directives like x0tta6bl4_node=debug,info",
        )?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| {
            problem(
                Exit::Failure,
                "cannot set up logging",
                "stderr",
                e.to_string(),
            )
        })?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}

/// Exit when the parent named by [`PARENT_PID_ENV`] is gone (we get re-parented).
pub(crate) fn watch_parent() {
    let Some(parent) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    #[cfg(unix)]
    tokio::spawn(async move {
        loop {
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!(
                    parent,
                    "the process that started this node is gone: exiting"
                );
                std::process::exit(1);
            }
            tokio::time::sleep(PARENT_CHECK_INTERVAL).await;
        }
    });
}
