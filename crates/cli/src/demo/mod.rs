//! `x0tta6bl4 demo`: a throwaway mesh on loopback that is broken on purpose and
//! measured while it heals.
//!
//! The orchestrator owns control flow and the clock; [`topology`] and [`analysis`] are
//! pure and unit-tested. Every wait has a deadline. The [`procs::Fleet`] guard kills
//! every node and the [`tempfile::TempDir`] removes every file when the run ends, fails
//! or is interrupted (the future is dropped).

mod analysis;
pub(crate) mod procs;
pub(crate) mod report;
pub(crate) mod setup;
mod topology;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::task::JoinSet;
use x0tta6bl4_proto::Rng;

use analysis::{Arrivals, Measurement, RouteSnapshot};
use procs::{log_tail, Fleet};
pub use report::DemoReport;
use report::Progress;
use setup::{NodeSetup, Plan};

use crate::args::DemoArgs;
use crate::problem::{problem, Exit};

/// Longest wait for the first convergence.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the survivors' routes to avoid the victims.
const HEAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Flows run this long before the fault, and after the routes healed.
const SETTLE: Duration = Duration::from_secs(1);
/// Interval between two polls of every node's routes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long a probe already past a victim may still travel to its target, in µs.
const IN_FLIGHT_US: u64 = 2_000;
/// Interval of the probe flows.
const PROBE_INTERVAL_MS: u64 = 10;
/// Steps shown by the progress display.
const STEPS: usize = 7;

/// Run the demo; the report says whether the mesh healed.
pub async fn run(args: &DemoArgs) -> anyhow::Result<DemoReport> {
    let seed = args.seed.unwrap_or_else(draw_seed);
    let plan = Plan::new(args, seed)?;
    let mut progress = Progress::new(STEPS, args.json);
    // Declared before the fleet so that it is dropped after it: nodes die first, then
    // their files go.
    let workspace = tempfile::Builder::new()
        .prefix("x0tta6bl4-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let mut fleet = Fleet::default();
    let result = run_in(args, &plan, workspace.path(), &mut fleet, &mut progress).await;
    fleet.stop_all();
    if result.is_ok() {
        progress.done();
    }
    let (mut report, dir) = keep_or_remove(workspace, args.keep_dir, result, "node configs")?;
    report.dir = dir;
    Ok(report)
}

/// The end of a run of local node processes: keep `workspace` (returning its path) when
/// `keep` is set, or let it be removed; an error says where its `what` and logs are, or
/// how to keep them.
pub(crate) fn keep_or_remove<T>(
    workspace: tempfile::TempDir,
    keep: bool,
    result: anyhow::Result<T>,
    what: &str,
) -> anyhow::Result<(T, Option<String>)> {
    let dir = keep.then(|| workspace.keep().display().to_string());
    let value = result.map_err(|error| match &dir {
        Some(dir) => error.context(format!("{what} and logs are kept in {dir}")),
        None => error.context(format!("rerun with --keep-dir to keep the {what} and logs")),
    })?;
    Ok((value, dir))
}

async fn run_in(
    args: &DemoArgs,
    plan: &Plan,
    dir: &Path,
    fleet: &mut Fleet,
    progress: &mut Progress,
) -> anyhow::Result<DemoReport> {
    let (nodes, converged_ms) = start_and_converge(plan, dir, fleet, progress).await?;
    let pairs = nodes.len() * (nodes.len() - 1);
    progress.step(format!(
        "starting probe flows between all {pairs} ordered pairs"
    ));
    start_flows(&nodes).await?;
    tokio::time::sleep(SETTLE).await;
    let snapshot = snapshot_routes(&nodes).await?;

    let victims = plan.names_of(&plan.victims);
    let killed = if victims.is_empty() {
        "nobody".to_owned()
    } else {
        victims.join(", ")
    };
    progress.step(format!("killing {killed} with SIGKILL"));
    let fault_at = Instant::now();
    for victim in &victims {
        fleet.kill(victim)?;
    }
    // The fault is in effect once every victim is reaped. A probe that passed a victim
    // just before it died may still arrive a moment later: it was delivered before the
    // outage, so it must not count as the first probe after it.
    let fault_us = unix_now_us() + IN_FLIGHT_US;
    progress.step("waiting until the survivors route around the killed nodes");
    let survivors: Vec<NodeSetup> = nodes
        .iter()
        .filter(|n| !victims.contains(&n.name))
        .cloned()
        .collect();
    wait_for_routes(&survivors, &victims, fleet, progress, HEAL_TIMEOUT).await?;
    let routes_healed_ms = fault_at.elapsed().as_millis() as u64;
    tokio::time::sleep(SETTLE).await;

    progress.step("collecting probe-flow arrivals");
    let (arrivals, fetched_us) = fetch_arrivals(&survivors).await?;
    let survivor_names = plan.names_except(&plan.victims);
    let outcome = analysis::analyse(&Measurement {
        survivors: &survivor_names,
        victims: &victims,
        snapshot: &snapshot,
        arrivals: &arrivals,
        fault_us,
        fetched_us: &fetched_us,
    });
    let flow_names =
        |pairs: &[(String, String)]| pairs.iter().map(|(s, t)| format!("{s}->{t}")).collect();
    Ok(DemoReport {
        nodes: args.nodes,
        killed: victims,
        converged_ms,
        healed: outcome.healed(),
        mttr_ms: outcome.mttr(),
        unreachable_pairs_after_heal: outcome.unreachable.len(),
        seed: plan.seed,
        links: plan.topology.edges.len(),
        survivor_flows: survivor_names.len() * (survivor_names.len() - 1),
        affected_flows: outcome.affected.len(),
        unhealed_flows: flow_names(&outcome.unhealed),
        unreachable_pairs: flow_names(&outcome.unreachable),
        routes_healed_ms,
        probe_interval_ms: PROBE_INTERVAL_MS,
        dir: None,
    })
}

/// Write the CA, SVIDs and configs, start every node and wait for convergence; returns
/// the nodes and the milliseconds from the first spawn to convergence.
pub(crate) async fn start_and_converge(
    plan: &Plan,
    dir: &Path,
    fleet: &mut Fleet,
    progress: &mut Progress,
) -> anyhow::Result<(Vec<NodeSetup>, u64)> {
    let count = plan.names.len();
    progress.step(format!(
        "creating a CA and {count} SVIDs in {}",
        dir.display()
    ));
    let nodes = setup::prepare(dir, plan)?;
    let links = plan.topology.edges.len();
    progress.step(format!(
        "starting {count} nodes, {links} links (seed {})",
        plan.seed
    ));
    let started = Instant::now();
    for node in &nodes {
        fleet.spawn(&node.name, &node.config, &node.log)?;
    }
    progress.step("waiting until every node has a route to every other (convergence)");
    wait_for_routes(&nodes, &[], fleet, progress, CONVERGE_TIMEOUT).await?;
    Ok((nodes, started.elapsed().as_millis() as u64))
}

/// Wait until every node of `nodes` has a route to every other node of `nodes`, none
/// of them via a node of `avoid`. Fails when a node process exits or at `timeout`.
async fn wait_for_routes(
    nodes: &[NodeSetup],
    avoid: &[String],
    fleet: &mut Fleet,
    progress: &Progress,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_alive(fleet)?;
        let tables = fetch_routes(nodes).await;
        let lacking = lacking_routes(nodes, avoid, &tables);
        if lacking.is_empty() {
            return Ok(());
        }
        progress.update(format!(
            "{}/{} nodes complete",
            nodes.len() - lacking.len(),
            nodes.len()
        ));
        if Instant::now() >= deadline {
            return Err(routes_timeout(nodes, &lacking, timeout));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Nodes whose table misses a destination or uses a node of `avoid`, with why.
fn lacking_routes(
    nodes: &[NodeSetup],
    avoid: &[String],
    tables: &BTreeMap<String, anyhow::Result<BTreeMap<String, String>>>,
) -> Vec<(String, String)> {
    let mut lacking = Vec::new();
    for node in nodes {
        let table = match tables.get(&node.name) {
            Some(Ok(table)) => table,
            Some(Err(error)) => {
                lacking.push((node.name.clone(), format!("API not answering: {error:#}")));
                continue;
            }
            None => continue,
        };
        let missing: Vec<&str> = nodes
            .iter()
            .filter(|other| other.name != node.name)
            .filter(|other| table.get(&other.name).is_none_or(|hop| avoid.contains(hop)))
            .map(|other| other.name.as_str())
            .collect();
        if !missing.is_empty() {
            lacking.push((
                node.name.clone(),
                format!("no usable route to {}", missing.join(", ")),
            ));
        }
    }
    lacking
}

fn routes_timeout(
    nodes: &[NodeSetup],
    lacking: &[(String, String)],
    timeout: Duration,
) -> anyhow::Error {
    let details: Vec<String> = lacking
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    let first = nodes
        .iter()
        .find(|n| n.name == lacking[0].0)
        .expect("lacking nodes are nodes");
    anyhow::anyhow!(
        "{}\nlast lines of {}:\n{}",
        details.join("\n"),
        first.log.display(),
        log_tail(&first.log)
    )
    .context(problem(
        Exit::Failure,
        format!("routes did not converge within {} s", timeout.as_secs()),
        format!("{} of {} nodes incomplete", lacking.len(), nodes.len()),
        "see which routes are missing and the node log below",
    ))
}

fn check_alive(fleet: &mut Fleet) -> anyhow::Result<()> {
    match fleet.first_exited() {
        None => Ok(()),
        Some((node, status)) => Err(anyhow::anyhow!(
            "last lines of {}:\n{}",
            node.log.display(),
            log_tail(&node.log)
        )
        .context(problem(
            Exit::Failure,
            format!("node {} exited unexpectedly ({status})", node.name),
            node.log.display(),
            "see the node log below",
        ))),
    }
}

/// Every node's routes (destination -> next hop), fetched concurrently.
async fn fetch_routes(
    nodes: &[NodeSetup],
) -> BTreeMap<String, anyhow::Result<BTreeMap<String, String>>> {
    let mut tasks = JoinSet::new();
    for node in nodes {
        let (name, api) = (node.name.clone(), node.api.clone());
        tasks.spawn(async move {
            let routes = api.routes().await;
            (
                name,
                routes.map(|rows| {
                    rows.into_iter()
                        .map(|r| (r.destination, r.next_hop))
                        .collect()
                }),
            )
        });
    }
    let mut tables = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((name, table)) = joined {
            tables.insert(name, table);
        }
    }
    tables
}

async fn snapshot_routes(nodes: &[NodeSetup]) -> anyhow::Result<RouteSnapshot> {
    let mut snapshot = RouteSnapshot::new();
    for (name, table) in fetch_routes(nodes).await {
        let table =
            table.with_context(|| format!("cannot read the routes of {name} before the fault"))?;
        snapshot.insert(name, table);
    }
    Ok(snapshot)
}

async fn start_flows(nodes: &[NodeSetup]) -> anyhow::Result<()> {
    for node in nodes {
        let targets: Vec<String> = nodes
            .iter()
            .filter(|n| n.name != node.name)
            .map(|n| n.name.clone())
            .collect();
        node.api
            .start_flows(&targets, PROBE_INTERVAL_MS)
            .await
            .map_err(|error| {
                error.context(problem(
                    Exit::Failure,
                    format!("cannot start probe flows on {}", node.name),
                    node.api.base(),
                    "the node must serve POST /api/v1/flows (docs/api.md)",
                ))
            })?;
    }
    Ok(())
}

/// Every survivor's probe arrivals, keyed (source, target), and when each was fetched.
async fn fetch_arrivals(
    survivors: &[NodeSetup],
) -> anyhow::Result<(Arrivals, BTreeMap<String, u64>)> {
    let mut arrivals = Arrivals::new();
    let mut fetched_us = BTreeMap::new();
    for node in survivors {
        fetched_us.insert(node.name.clone(), unix_now_us());
        let report = node.api.flows().await.map_err(|error| {
            error.context(problem(
                Exit::Failure,
                format!("cannot read the probe flows of {}", node.name),
                node.api.base(),
                "the node must serve GET /api/v1/flows (docs/api.md)",
            ))
        })?;
        for flow in report.received {
            arrivals.insert((flow.source, node.name.clone()), flow.arrivals_us);
        }
    }
    Ok((arrivals, fetched_us))
}

fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A seed from the clock and the pid, for runs without `--seed`.
fn draw_seed() -> u64 {
    let mut rng = Rng::seed(unix_now_us() ^ (u64::from(std::process::id()) << 32));
    rng.next_u64() % 1_000_000
}
