//! `lab run`: build the namespaces once, then for each router start its processes, run
//! the fault's iterations and measure; finally run the twin on the same topology.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use x0tta6bl4_proto::measure::{relative_error, MttrSummary};
use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::{RunOptions, Topology, TopologySpec};

use crate::fault::{Calibration, Fault, Plan};
use crate::net::{cmd, have_tool, remove_stale, Net};
use crate::paths::{self, Routes};
use crate::probe::unix_now_us;
use crate::report::{IdentityEffect, LabReport, RouterReport, RoutingFigures, TwinSide};
use crate::resources::{Phase, Usage};
use crate::routers::{metric_value, Fleet, Kind, Routing};
use crate::LabError;
use x0tta6bl4_twin::predict::Routing as TwinRouting;
use x0tta6bl4_twin::scenario::RampEnd;

/// Interval of the probe flows.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Flows run this long before the fault.
const BASELINE: Duration = Duration::from_millis(600);
/// Flows run this long after the routes healed.
const SETTLE: Duration = Duration::from_millis(800);
/// A probe past the failed element may still arrive this long after the fault (µs).
const IN_FLIGHT_US: u64 = 2_000;
/// Shortest interval between route polls (a poll of a large mesh takes longer, and
/// the next waits as long again: the lab's polling takes at most half of its own time).
const POLL: Duration = Duration::from_millis(20);
/// How long the nodes are watched idle (converged, no flows, no polling) for the report.
const IDLE_WINDOW: Duration = Duration::from_secs(2);
/// The nodes' counter of link-state advertisements they originated.
const LSA_ORIGINATED: &str = "x0tta6bl4_lsa_originated_total";
/// The nodes' counter of link costs their link-failure predictor raised.
const RISK_RAISES: &str = "x0tta6bl4_link_risk_raises_total";
/// The nodes' counter of degraded-link reroutes of their healing loop.
const REROUTES: &str = "x0tta6bl4_healing_decisions_total{kind=\"reroute\"}";

/// Cumulative predictor raises and healing reroutes of every node, by node index (see
/// `Lab::reroute_counts`); `None` for a node that did not answer.
#[derive(Clone, Debug, Default, PartialEq)]
struct RerouteCounts(Vec<Option<(u64, u64)>>);

impl RerouteCounts {
    /// Raises, reroutes, and both at the nodes other than `ends`, from `before` to these
    /// counts. Node by node, as Prometheus' `increase`: a node that did not answer either
    /// time adds nothing (a killed node), and a count below its earlier one is a
    /// restarted node's, counted from 0 (never a subtraction below zero).
    fn since(&self, before: &RerouteCounts, ends: &[usize]) -> (u64, u64, u64) {
        let increase = |was: u64, now: u64| now.checked_sub(was).unwrap_or(now);
        let (mut raises, mut reroutes, mut elsewhere) = (0, 0, 0);
        for (v, (was, now)) in before.0.iter().zip(&self.0).enumerate() {
            let (Some(was), Some(now)) = (was, now) else {
                continue;
            };
            let (raised, rerouted) = (increase(was.0, now.0), increase(was.1, now.1));
            raises += raised;
            reroutes += rerouted;
            if !ends.contains(&v) {
                elsewhere += raised + rerouted;
            }
        }
        (raises, reroutes, elsewhere)
    }
}
/// Hello interval of babeld matched to our probe interval (protocol default 50 ms).
pub(crate) const MATCHED_HELLO_S: f64 = 0.05;

/// Which routers run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouterChoice {
    /// x0tta6bl4 only.
    X0tta6bl4,
    /// babeld with matched timers.
    Babeld,
    /// babeld at its default timers.
    BabeldDefault,
    /// x0tta6bl4, babeld matched and babeld default, one after the other.
    Both,
}

impl std::str::FromStr for RouterChoice {
    type Err = LabError;

    fn from_str(s: &str) -> Result<Self, LabError> {
        Ok(match s {
            "x0tta6bl4" => RouterChoice::X0tta6bl4,
            "babeld" => RouterChoice::Babeld,
            "babeld-default" => RouterChoice::BabeldDefault,
            "both" => RouterChoice::Both,
            other => {
                return Err(LabError::usage(
                    format!("unknown router {other:?}"),
                    "use x0tta6bl4, babeld, babeld-default or both",
                ))
            }
        })
    }
}

impl RouterChoice {
    /// The routers run, x0tta6bl4 once per routing (`--routing`; none: cost).
    fn kinds(self, routings: &[TwinRouting]) -> Vec<Kind> {
        // `prepare` refuses ppo (the lab does not run the PPO agents yet).
        let mut x0: Vec<Kind> = routings
            .iter()
            .filter_map(|r| match r {
                TwinRouting::Cost => Some(Routing::Cost),
                TwinRouting::Etx => Some(Routing::Etx),
                TwinRouting::Predict(_) => Some(Routing::Predict),
                TwinRouting::Ppo(_) => None,
            })
            .map(Kind::X0tta6bl4)
            .collect();
        if x0.is_empty() {
            x0.push(Kind::X0tta6bl4(Routing::Cost));
        }
        match self {
            RouterChoice::X0tta6bl4 => x0,
            RouterChoice::Babeld => vec![Kind::Babeld(Some(MATCHED_HELLO_S))],
            RouterChoice::BabeldDefault => vec![Kind::Babeld(None)],
            RouterChoice::Both => {
                x0.extend([Kind::Babeld(Some(MATCHED_HELLO_S)), Kind::Babeld(None)]);
                x0
            }
        }
    }
}

/// A lab run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// `KIND[:params]`, the twin's topology names.
    pub topology: String,
    /// Nodes of generated topologies.
    pub nodes: usize,
    /// `FAULT[:params]`.
    pub scenario: String,
    /// Iterations per router.
    pub iterations: usize,
    /// Seed of topology and faults.
    pub seed: u64,
    /// Which routers.
    pub router: RouterChoice,
    /// The `x0tta6bl4` executable (nodes and probe agents are started from it).
    pub exe: PathBuf,
    /// Run the x0tta6bl4 nodes from this root filesystem (a container image's, exported)
    /// with `chroot ROOT /usr/local/bin/x0tta6bl4`; the nodes' files go under ROOT/tmp.
    pub node_root: Option<PathBuf>,
    /// At most this many probe flows per iteration, drawn among the survivor pairs whose
    /// path crosses the fault (None: a flow between every ordered pair of survivors).
    pub flows_sample: Option<usize>,
    /// CPU and memory limits of every node process (cgroups).
    pub budget: crate::budget::Budget,
    /// `[protocol]` settings of every x0tta6bl4 node (see [`parse_protocol`]).
    pub protocol: toml::Table,
    /// How the x0tta6bl4 nodes cost their links (`--routing`, as `twin run --routing`):
    /// each routing runs as a router of its own, one after the other, on the same
    /// faults. Empty: cost. A predictor's model (checked by whoever loaded it) is
    /// written into the lab's directory and named in every node's `[predictor] model`.
    pub routings: Vec<TwinRouting>,
}

/// The sections of every x0tta6bl4 node's configuration beyond the lab's own for
/// `routing`: `[protocol]` (`--node-protocol`, and `link_cost = "etx"` for etx) and,
/// for predict, `[predictor] model`, its file written under `dir` (seen by the nodes
/// through `root`).
pub fn node_sections(
    options: &Options,
    routing: Routing,
    dir: &std::path::Path,
    root: Option<&std::path::Path>,
) -> Result<toml::Table, LabError> {
    let mut protocol = options.protocol.clone();
    let mut sections = toml::Table::new();
    match routing {
        Routing::Cost => {}
        Routing::Etx => {
            protocol.insert("link_cost".into(), "etx".into());
        }
        Routing::Predict => {
            let Some(model) = options.routings.iter().find_map(|r| match r {
                TwinRouting::Predict(model) => Some(model),
                _ => None,
            }) else {
                return Err(LabError::usage(
                    "--routing predict needs a link-failure predictor",
                    "give --predictor MODEL.json",
                ));
            };
            let path = dir.join("predictor.json");
            x0tta6bl4_fl::linkpredict::PredictorFile::save(model, &path)
                .map_err(|e| LabError::failed(format!("{e}")))?;
            let mut predictor = toml::Table::new();
            let seen = crate::routers::inside(root, &path);
            predictor.insert("model".into(), seen.display().to_string().into());
            sections.insert("predictor".into(), predictor.into());
        }
    }
    if !protocol.is_empty() {
        sections.insert("protocol".into(), protocol.into());
    }
    Ok(sections)
}

/// `--node-protocol KEY=VALUE,...`: settings of the nodes' `[protocol]` section (as
/// in `node.toml`), checked here against the protocol's own validation so a typo is a
/// usage error, not 100 nodes that fail to start.
pub fn parse_protocol(text: &str) -> Result<toml::Table, LabError> {
    let fix = "give KEY=VALUE pairs of the node's [protocol] section, comma-separated, \
               e.g. cost_update_interval_ms=5000,cost_change_percent=100";
    let mut table = toml::Table::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            LabError::usage(format!("--node-protocol: {pair:?} is not KEY=VALUE"), fix)
        })?;
        let value: toml::Value = format!("v = {}", value.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| {
                LabError::usage(format!("--node-protocol: {pair:?}: not a TOML value"), fix)
            })?;
        table.insert(key.trim().to_owned(), value);
    }
    protocol_config(&table)
        .map_err(|e| LabError::usage(format!("--node-protocol {text:?}: {e}"), fix))?;
    Ok(table)
}

/// The protocol configuration a node builds from `[protocol]` settings `table`, checked.
fn protocol_config(table: &toml::Table) -> Result<x0tta6bl4_proto::Config, String> {
    let config: x0tta6bl4_proto::Config = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e| format!("{e}"))?;
    config.validate().map_err(|e| format!("{e}"))?;
    Ok(config)
}

/// Check the arguments and build the topology (no side effects).
pub fn prepare(options: &Options) -> Result<(Fault, Topology), LabError> {
    let fault: Fault = options.scenario.parse()?;
    if options.protocol.contains_key("link_cost") && !options.routings.is_empty() {
        return Err(LabError::usage(
            "--node-protocol link_cost and --routing both set how links are costed",
            "use --routing cost,etx,... alone",
        ));
    }
    if options
        .routings
        .iter()
        .any(|r| matches!(r, TwinRouting::Ppo(_)))
    {
        return Err(LabError::usage(
            "--routing ppo is not available yet in the lab (the nodes do not run the PPO agents)",
            "run it in the twin: `x0tta6bl4 twin run --routing etx,ppo --policy POLICY.json`",
        ));
    }
    if options.flows_sample == Some(0) {
        return Err(LabError::usage(
            "--flows-sample 0",
            "sample at least one flow, or leave the flag out to run every pair",
        ));
    }
    if options.iterations == 0 {
        return Err(LabError::usage(
            "--iterations 0",
            "run at least one iteration",
        ));
    }
    let spec: TopologySpec = options.topology.parse().map_err(|e| {
        LabError::usage(
            format!("{e}"),
            "see `x0tta6bl4 lab run --help` for topologies",
        )
    })?;
    if matches!(spec, TopologySpec::Node(_) | TopologySpec::Prometheus(_)) {
        return Err(LabError::usage(
            "the lab builds its own topology",
            "use a generated topology or file:PATH",
        ));
    }
    if options.nodes > crate::net::NODES_MAX {
        return Err(LabError::usage(
            format!("--nodes {} is more than the lab can hold", options.nodes),
            format!(
                "use at most {} nodes (each is a process and a namespace)",
                crate::net::NODES_MAX
            ),
        ));
    }
    // The twin CLI seeds topologies the same way, so `twin run` draws the same graph.
    let mut rng = Rng::seed(options.seed ^ 0x7070);
    let topology = spec
        .build(options.nodes, &mut rng)
        .map_err(|e| LabError::usage(format!("{e}"), "see `x0tta6bl4 lab run --help`"))?;
    if topology.len() > crate::net::NODES_MAX {
        return Err(LabError::usage(
            format!("{} nodes is more than the lab can hold", topology.len()),
            format!("use at most {} nodes", crate::net::NODES_MAX),
        ));
    }
    Ok((fault, topology))
}

fn check_environment(kinds: &[Kind], fault: &Fault) -> Result<(), LabError> {
    if let Some(e) = crate::not_root_message(crate::effective_uid()) {
        return Err(e);
    }
    let mut tools = vec!["ip", "nft"];
    if matches!(fault, Fault::CpuStress { .. } | Fault::MemStress { .. }) {
        tools.push("stress-ng");
    }
    if matches!(fault, Fault::Bandwidth { .. }) {
        tools.push("tc");
    }
    if kinds.iter().any(|k| matches!(k, Kind::Babeld(_))) {
        tools.push("babeld");
    }
    for tool in tools {
        if !have_tool(tool) {
            return Err(crate::missing_tool_message(tool));
        }
    }
    Ok(())
}

/// The checked, absolute `--node-root`, with its `tmp` directory made.
fn node_root(options: &Options) -> Result<Option<PathBuf>, LabError> {
    let Some(root) = &options.node_root else {
        return Ok(None);
    };
    let shown = root.display();
    let root = std::fs::canonicalize(root).map_err(|e| {
        LabError::usage(
            format!("--node-root {shown}: {e}"),
            "give the directory of an image's exported root filesystem",
        )
    })?;
    if !root
        .join(crate::routers::EXE_IN_ROOT.trim_start_matches('/'))
        .is_file()
    {
        return Err(LabError::usage(
            format!("--node-root {shown} has no {}", crate::routers::EXE_IN_ROOT),
            "give the root filesystem of the x0tta6bl4 image (see Containerfile)",
        ));
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)
        .map_err(|e| LabError::failed(format!("cannot create {}: {e}", tmp.display())))?;
    Ok(Some(root))
}

/// Run the lab; `progress` gets one line per step. Everything created is removed
/// before this returns, and when the future is dropped.
pub async fn run(
    options: &Options,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<LabReport, LabError> {
    let (fault, topology) = prepare(options)?;
    let kinds = options.router.kinds(&options.routings);
    if let Some(why) = fault.x0tta6bl4_only() {
        if kinds.iter().any(|k| matches!(k, Kind::Babeld(_))) {
            return Err(LabError::usage(
                format!("not applicable to babeld: {why}"),
                "run it with --router x0tta6bl4",
            ));
        }
    }
    check_environment(&kinds, &fault)?;
    let root = node_root(options)?;
    remove_stale();
    // Declared before the net and fleets, so it is removed after them.
    let workspace = tempfile::Builder::new()
        .prefix("x0tta6bl4-lab-")
        .tempdir_in(
            root.as_ref()
                .map_or_else(std::env::temp_dir, |r| r.join("tmp")),
        )
        .map_err(|e| LabError::failed(format!("cannot create a temporary directory: {e}")))?;
    progress(&format!(
        "building {} namespaces and {} veth pairs",
        topology.len(),
        topology.links.len()
    ));
    let net = Net::build(&topology)?;
    // Declared after the net and before the fleets: removed once their processes are gone.
    let cgroups = match options.budget.is_set() {
        true => Some(crate::budget::Cgroups::create(
            options.budget,
            topology.len(),
        )?),
        false => None,
    };
    let mut report = LabReport {
        topology: options.topology.clone(),
        nodes: topology.len(),
        scenario: options.scenario.clone(),
        iterations: options.iterations,
        seed: options.seed,
        routers: Default::default(),
        twin: TwinSide::default(),
        lab_cpu_s: 0.0,
    };
    // Every router, and the twin, get the same faults on the same elements.
    let mut rng = Rng::seed(options.seed ^ 0x006c_6162);
    let plans = (0..options.iterations)
        .map(|_| fault.plan(&topology, &mut rng))
        .collect::<Result<Vec<Plan>, LabError>>()?;
    let mut calibration = Calibration::default();
    for kind in kinds {
        let sections = match kind {
            Kind::X0tta6bl4(routing) => {
                node_sections(options, routing, workspace.path(), root.as_deref())?
            }
            Kind::Babeld(_) => toml::Table::new(),
        };
        let mut fleet = Fleet::with_root(
            kind,
            &options.exe,
            workspace.path(),
            &net,
            &topology,
            root.as_deref(),
            &sections,
        )?;
        if let Some(cgroups) = &cgroups {
            fleet.use_cgroups(cgroups);
        }
        let mut lab = Lab {
            net: &net,
            topology: &topology,
            fault: &fault,
            kind,
            fleet: &mut fleet,
            stress: Vec::new(),
            usage: Usage::new(topology.len()),
        };
        let mut result = lab
            .run_router(options, progress, &plans, &mut calibration)
            .await;
        if let (Ok(out), Some(cgroups)) = (&mut result, &cgroups) {
            out.budget = Some(cgroups.report(topology.len()));
        }
        drop(lab);
        fleet.stop_all();
        reset(&net, &topology);
        report.routers.insert(kind.key().to_owned(), result?);
    }
    report.lab_cpu_s =
        crate::resources::sample(std::process::id(), crate::resources::clock_ticks())
            .map_or(0.0, |s| s.cpu_s);
    report.twin = twin_side(
        options,
        &fault,
        &topology,
        &plans,
        &calibration,
        report.routers.get("x0tta6bl4"),
        progress,
    );
    Ok(report)
}

/// Every ordered pair of `nodes`.
fn every_pair(nodes: &[usize]) -> Vec<(usize, usize)> {
    nodes
        .iter()
        .flat_map(|&s| nodes.iter().filter(move |&&d| d != s).map(move |&d| (s, d)))
        .collect()
}

/// Keep `k` of `items` drawn at random without replacement (all when fewer), in their
/// original order (a partial Fisher-Yates shuffle of the indices).
fn sample_in_place<T: Copy>(items: &mut Vec<T>, k: usize, rng: &mut Rng) {
    if items.len() <= k {
        return;
    }
    let mut index: Vec<usize> = (0..items.len()).collect();
    for i in 0..k {
        let j = i + rng.below((index.len() - i) as u64) as usize;
        index.swap(i, j);
    }
    let mut keep = index[..k].to_vec();
    keep.sort_unstable();
    *items = keep.iter().map(|&i| items[i]).collect();
}

/// What a router's iterations measured for the twin's models.
#[derive(Default)]
struct Measured {
    /// RTTs the nodes measured to their neighbours just before each fault.
    rtts_ms: Vec<f64>,
    /// Rise of a stressed node's median RTT under the load.
    slowdowns_ms: Vec<f64>,
    /// Time a restarted node took to serve its API again.
    restarts_ms: Vec<f64>,
}

impl Measured {
    /// Set what was measured in `calibration` (medians).
    fn calibrate(mut self, calibration: &mut Calibration) {
        // The twin's link latency: half the median round trip the nodes measured just
        // before each fault, under the same load (flows running) as the iterations.
        if let Some(median) = median(&mut self.rtts_ms) {
            calibration.latency_ms = Some(median / 2.0);
        }
        if let Some(median) = median(&mut self.slowdowns_ms) {
            calibration.processing_delay_ms = Some(median.max(0.0));
        }
        if let Some(median) = median(&mut self.restarts_ms) {
            calibration.restart_ms = Some(median);
        }
    }
}

/// The RTTs of `nodes` among `rtts`, in one list.
fn of_nodes(rtts: &BTreeMap<usize, Vec<f64>>, nodes: &[usize]) -> Vec<f64> {
    nodes
        .iter()
        .filter_map(|v| rtts.get(v))
        .flatten()
        .copied()
        .collect()
}

/// The median of `values` (sorted in place), if any.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Undo every fault so the next router starts on a clean network.
pub(crate) fn reset(net: &Net, topology: &Topology) {
    net.clear_link_faults();
    for l in 0..topology.links.len() {
        let _ = net.set_link(l, true);
    }
    for i in 0..topology.len() {
        let _ = net.unisolate(i);
        let _ = cmd(
            "ip",
            &["-n", &net.nodes[i].ns, "route", "flush", "proto", "babel"],
        );
    }
}

struct Lab<'a> {
    net: &'a Net,
    topology: &'a Topology,
    fault: &'a Fault,
    kind: Kind,
    fleet: &'a mut Fleet,
    /// stress-ng processes of a running stress fault.
    stress: Vec<std::process::Child>,
    /// What the router's processes use, phase by phase.
    usage: Usage,
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        self.stop_stress();
    }
}

impl Lab<'_> {
    /// How long routes may take to converge: 30 s, and 0.3 s more per node beyond 64
    /// (starting 100 processes and their handshakes takes the host a while).
    fn timeout(&self) -> Duration {
        let extra = Duration::from_millis(300) * self.topology.len().saturating_sub(64) as u32;
        match self.kind {
            Kind::Babeld(None) => Duration::from_secs(120) + extra,
            _ => Duration::from_secs(30) + extra,
        }
    }

    async fn run_router(
        &mut self,
        options: &Options,
        progress: &mut (dyn FnMut(&str) + Send),
        plans: &[Plan],
        calibration: &mut Calibration,
    ) -> Result<RouterReport, LabError> {
        let key = self.kind.key();
        progress(&format!("{key}: starting {} routers", self.topology.len()));
        let all: Vec<usize> = (0..self.topology.len()).collect();
        for &i in &all {
            self.fleet.start(i, self.net)?;
        }
        let started = Instant::now();
        self.wait_routes(&all, &[]).await?;
        progress(&format!(
            "{key}: converged in {} ms; watching it idle",
            started.elapsed().as_millis()
        ));
        let idle_start = self.usage.snapshot(&self.fleet.pids());
        tokio::time::sleep(IDLE_WINDOW).await;
        let idle_end = self.usage.snapshot(&self.fleet.pids());
        self.usage.add(Phase::Idle, &idle_start, &idle_end);
        let mut out = RouterReport::default();
        out.flows.sample = options.flows_sample;
        let mut measured = Measured::default();
        for (k, plan) in plans.iter().enumerate() {
            progress(&format!(
                "{key}: iteration {}/{} ({})",
                k + 1,
                plans.len(),
                options.scenario
            ));
            let seed = options.seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            self.iteration(plan, &mut out, &mut measured, (options.flows_sample, seed))
                .await?;
        }
        let last = self.usage.snapshot(&self.fleet.pids());
        let disk: Vec<u64> = (0..self.topology.len())
            .map(|i| self.fleet.disk_bytes(i))
            .collect();
        out.resources = self.usage.report(&last, &disk);
        if self.kind.calibrates_twin() {
            measured.calibrate(calibration);
        }
        out.mttr_ms = MttrSummary::from_ms(&out.samples);
        Ok(out)
    }

    async fn iteration(
        &mut self,
        plan: &Plan,
        out: &mut RouterReport,
        measured: &mut Measured,
        (sample, seed): (Option<usize>, u64),
    ) -> Result<(), LabError> {
        let all: Vec<usize> = (0..self.topology.len()).collect();
        let survivors: Vec<usize> = all
            .iter()
            .copied()
            .filter(|v| !plan.nodes.contains(v))
            .collect();
        let expiry = self.arm_expiry(plan).await?;
        let pairs = match sample {
            None => every_pair(&survivors),
            Some(k) => {
                // The routes are converged here: the pairs they lead across the fault.
                let now = self.fleet.routes(self.net, &all).await;
                let mut crossing = paths::affected(&now, self.topology, plan);
                let mut rng = Rng::seed(seed);
                sample_in_place(&mut crossing, k, &mut rng);
                crossing
            }
        };
        out.flows.started += pairs.len();
        let reroutes_before = self.reroute_counts().await;
        let flows_start = self.usage.snapshot(&self.fleet.pids());
        let since_us = unix_now_us();
        self.fleet
            .start_flows(self.net, &survivors, &pairs, PROBE_INTERVAL)
            .await?;
        tokio::time::sleep(BASELINE).await;
        // Every node's table, or the flows through a node that did not answer (a busy
        // machine) would go unmeasured.
        let mut before: Routes = self.fleet.routes(self.net, &all).await;
        for _ in 0..10 {
            if before.len() == all.len() {
                break;
            }
            tokio::time::sleep(POLL).await;
            before = self.fleet.routes(self.net, &all).await;
        }
        let stressed_rtt_ms = if matches!(self.kind, Kind::X0tta6bl4(_)) {
            let rtts = self.fleet.rtts_ms(self.net, &all).await;
            measured.rtts_ms.extend(rtts.values().flatten());
            median(&mut of_nodes(&rtts, &plan.stressed))
        } else {
            None
        };
        let mut flows = paths::affected(&before, self.topology, plan);
        if sample.is_some() {
            flows.retain(|pair| pairs.contains(pair));
        }
        out.flows.affected += flows.len();
        let downs_before = self.fleet.neighbour_downs(self.net, &survivors).await;
        let identity_before = self.identity_counts(plan).await;
        let heal_start = self.usage.snapshot(&self.fleet.pids());
        self.usage.add(Phase::Flows, &flows_start, &heal_start);
        let fault_us = match expiry {
            Some(expiry) => Self::until_expiry(expiry).await?,
            None if plan.ramp.is_some() => self.ramp(plan).await?,
            None if *self.fault == Fault::Revoke => {
                let fault_us = unix_now_us() + IN_FLIGHT_US;
                self.apply(plan)?;
                fault_us
            }
            None => {
                let applied_us = self.apply(plan)?.unwrap_or_else(unix_now_us);
                applied_us + IN_FLIGHT_US
            }
        };
        if let (Fault::NodeRestart, Kind::X0tta6bl4(_)) = (self.fault, self.kind) {
            // How long a restarted node takes to serve again (its API answers): the
            // twin starts it again after as long.
            let deadline = Instant::now() + self.timeout();
            for &v in &plan.nodes {
                while !self.fleet.serves(self.net, v).await {
                    if Instant::now() > deadline {
                        return Err(LabError::failed(format!(
                            "{} did not serve its API within {} s of its restart",
                            self.topology.names[v],
                            self.timeout().as_secs()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let ms = unix_now_us().saturating_sub(fault_us) as f64 / 1e3;
                measured.restarts_ms.push(ms);
            }
        }
        let hold = self.fault.hold();
        let heal_us = if hold.is_zero() {
            fault_us
        } else {
            // A stressed node's smoothed RTT (an average over ~8 probes, 400 ms) has
            // settled at its loaded level near the end of the hold.
            let sample_at = hold.saturating_sub(Duration::from_millis(200));
            tokio::time::sleep(sample_at).await;
            if let (Some(before), true) = (stressed_rtt_ms, self.fault.stresses_host()) {
                let rtts = self.fleet.rtts_ms(self.net, &plan.stressed).await;
                if let Some(during) = median(&mut of_nodes(&rtts, &plan.stressed)) {
                    measured.slowdowns_ms.push(during - before);
                }
            }
            tokio::time::sleep(hold - sample_at).await;
            self.lift_held(plan)?.unwrap_or_else(unix_now_us)
        };
        let avoid = if self.fault.removes_nodes() {
            plan.nodes.clone()
        } else {
            Vec::new()
        };
        self.wait_routes(&survivors, &avoid).await?;
        tokio::time::sleep(SETTLE).await;
        let heal_end = self.usage.snapshot(&self.fleet.pids());
        self.usage.add(Phase::Heal, &heal_start, &heal_end);
        let after = self.fleet.routes(self.net, &all).await;
        let (arrivals, sent) = self.fleet.collect(self.net, &survivors, since_us).await?;
        if let (Some(sent), Some(before)) = (sent, reroutes_before) {
            let ran_h = unix_now_us().saturating_sub(since_us) as f64 / 3.6e9;
            let after = self.reroute_counts().await.unwrap_or_default();
            let (raises, reroutes, elsewhere) = after.since(&before, &self.link_ends(plan));
            let mut figures = RoutingFigures {
                probes_sent: sent,
                probes_delivered: arrivals.values().map(|a| a.len() as u64).sum(),
                predictor_raises: raises,
                healing_reroutes: reroutes,
                unneeded_reroutes: elsewhere,
                link_hours: self.topology.links.len() as f64 * ran_h,
                ..RoutingFigures::default()
            };
            if !self.cuts(plan) {
                figures.unneeded_reroutes = figures.predictor_raises + figures.healing_reroutes;
            }
            out.routing
                .get_or_insert_with(Default::default)
                .add(&figures);
        }
        let downs_after = self.fleet.neighbour_downs(self.net, &survivors).await;
        let (samples, unhealed) = paths::outages(&flows, &arrivals, plan, fault_us, heal_us);
        out.samples.extend(samples);
        out.unhealed_flows += unhealed;
        out.unreachable_pairs_after_heal +=
            paths::unreachable_pairs(&after, &survivors, &avoid).len();
        let expected = self.expected_downs(plan);
        out.false_down_events += downs_after
            .saturating_sub(downs_before)
            .saturating_sub(expected);
        if let Some(before) = identity_before {
            let effect = self.identity_effect(plan, &after, &survivors, before).await;
            out.identity
                .get_or_insert_with(Default::default)
                .add(&effect);
        }
        self.recover(plan)?;
        self.wait_routes(&all, &[]).await
    }

    /// degrade-then-fail: step the ramped link's loss (both directions) along the plan's
    /// ramp, then cut the link (`ip link set down`, as link-down) or lift the loss.
    /// Returns the ramp's start (Unix µs): MTTR counts from there, as in the twin.
    async fn ramp(&mut self, plan: &Plan) -> Result<u64, LabError> {
        let (Some(ramp), Some(&l)) = (&plan.ramp, plan.links.first()) else {
            return Err(LabError::failed("degrade-then-fail drew no ramp"));
        };
        let start = tokio::time::Instant::now();
        let mut start_us = None;
        for &(at, level) in &ramp.steps {
            tokio::time::sleep_until(start + at).await;
            let (loss, _) = ramp.at_level(level, 0.0, Duration::ZERO);
            let at_us = self.net.set_link_loss(l, loss)?;
            start_us.get_or_insert(at_us);
        }
        match ramp.end {
            RampEnd::Cut(at) => {
                tokio::time::sleep_until(start + at).await;
                self.net.set_link(l, false)?;
            }
            RampEnd::Rest(at) => {
                tokio::time::sleep_until(start + at).await;
                self.net.lift_link_faults(&[l])?;
            }
        }
        Ok(start_us.unwrap_or_else(unix_now_us))
    }

    /// Whether the iteration cuts a link for good (a ramp that recovers cuts none).
    fn cuts(&self, plan: &Plan) -> bool {
        match &plan.ramp {
            Some(ramp) => matches!(ramp.end, RampEnd::Cut(_)),
            None => *self.fault == Fault::LinkDown,
        }
    }

    /// x0tta6bl4: predictor raises and healing reroutes of every node (None for babeld).
    async fn reroute_counts(&self) -> Option<RerouteCounts> {
        if !matches!(self.kind, Kind::X0tta6bl4(_)) {
            return None;
        }
        let mut counts = Vec::with_capacity(self.topology.len());
        for v in 0..self.topology.len() {
            // One scrape per node for both series.
            let text = self.fleet.metrics_text(self.net, v).await;
            counts.push(text.map(|t| (metric_value(&t, RISK_RAISES), metric_value(&t, REROUTES))));
        }
        Some(RerouteCounts(counts))
    }

    /// The ends of the faulted links.
    fn link_ends(&self, plan: &Plan) -> Vec<usize> {
        plan.links
            .iter()
            .flat_map(|&l| {
                let link = &self.topology.links[l];
                [link.a as usize, link.b as usize]
            })
            .collect()
    }

    /// svid-expiry: give the victims an SVID that expires in the fault's `ttl`, with no
    /// renewal, and restart them with it. Returns when the verifiers refuse it.
    async fn arm_expiry(&mut self, plan: &Plan) -> Result<Option<SystemTime>, LabError> {
        let Fault::SvidExpiry { ttl } = *self.fault else {
            return Ok(None);
        };
        let mut expiry = None;
        for &v in &plan.nodes {
            let not_after = self.fleet.issue_svid(v, ttl)?;
            // The verifiers compare whole seconds: refused from notAfter + 1 s (as
            // `x0tta6bl4_identity::peer_svid_expiry` says).
            expiry = Some(not_after + Duration::from_secs(1));
            self.fleet.kill(v);
            self.start_again(v)?;
        }
        let all: Vec<usize> = (0..self.topology.len()).collect();
        self.wait_routes(&all, &[]).await?;
        let left = expiry
            .and_then(|e| e.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let needed = BASELINE + Duration::from_millis(500);
        if left < needed {
            return Err(LabError::usage(
                format!(
                    "svid-expiry:ttl_s={} is too short: after the node restarted with its \
                     short SVID and the mesh converged, {} ms were left, the baseline needs {} ms",
                    ttl.as_secs(),
                    left.as_millis(),
                    needed.as_millis()
                ),
                "raise ttl_s",
            ));
        }
        Ok(expiry)
    }

    /// Wait for the SVID's expiry; it is the fault instant (Unix µs, with the in-flight
    /// allowance).
    async fn until_expiry(expiry: SystemTime) -> Result<u64, LabError> {
        let left = expiry
            .duration_since(SystemTime::now())
            .map_err(|_| LabError::failed("the SVID expired before the baseline ended"))?;
        tokio::time::sleep(left).await;
        let expiry_us = expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        Ok(u64::try_from(expiry_us).unwrap_or(u64::MAX) + IN_FLIGHT_US)
    }

    /// Topology neighbours of the fault's nodes that survive it.
    fn victim_neighbours(&self, plan: &Plan) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for link in &self.topology.links {
            let (a, b) = (link.a as usize, link.b as usize);
            for (v, n) in [(a, b), (b, a)] {
                if plan.nodes.contains(&v) && !plan.nodes.contains(&n) && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Identity faults: the series counting the links closed because of the fault, and
    /// the reconnects refused after it.
    fn identity_series(&self) -> Option<(&'static str, &'static str)> {
        match self.fault {
            Fault::SvidExpiry { .. } => Some((
                "x0tta6bl4_identity_link_closes_total{reason=\"peer_svid_expired\"}",
                "x0tta6bl4_handshakes_total{result=\"failed\"}",
            )),
            Fault::Revoke => Some((
                "x0tta6bl4_identity_link_closes_total{reason=\"revoked\"}",
                "x0tta6bl4_policy_decisions_total{decision=\"deny\",action=\"neighbour\"}",
            )),
            _ => None,
        }
    }

    /// Identity faults: (links closed, reconnects refused) at the victims' neighbours.
    async fn identity_counts(&self, plan: &Plan) -> Option<(u64, u64)> {
        let (closes, refusals) = self.identity_series()?;
        let neighbours = self.victim_neighbours(plan);
        Some((
            self.fleet.metric_sum(self.net, &neighbours, closes).await,
            self.fleet.metric_sum(self.net, &neighbours, refusals).await,
        ))
    }

    /// What an identity fault did: links closed, reconnects refused, and whether a
    /// survivor still links or routes to a victim after the heal.
    async fn identity_effect(
        &self,
        plan: &Plan,
        after: &Routes,
        survivors: &[usize],
        before: (u64, u64),
    ) -> IdentityEffect {
        let now = self.identity_counts(plan).await.unwrap_or(before);
        let mut readmitted = false;
        for &v in &plan.nodes {
            let routed = survivors
                .iter()
                .any(|s| after.get(s).is_some_and(|table| table.contains_key(&v)));
            let linked = !self
                .fleet
                .linked_to(self.net, survivors, v)
                .await
                .is_empty();
            readmitted |= routed || linked;
        }
        IdentityEffect {
            links_closed: now.0.saturating_sub(before.0),
            reconnects_refused: now.1.saturating_sub(before.1),
            readmitted: u64::from(readmitted),
        }
    }

    /// Neighbour-down events the fault itself causes.
    fn expected_downs(&self, plan: &Plan) -> u64 {
        let degree = |v: usize| {
            self.topology
                .links
                .iter()
                .filter(|l| l.a as usize == v || l.b as usize == v)
                .count()
        };
        let nodes: usize = plan.nodes.iter().map(|&v| degree(v)).sum();
        (nodes + 2 * plan.links.len()) as u64
    }

    /// Inject the fault; returns the instant it took effect (Unix µs) when that is not
    /// the instant this returns.
    fn apply(&mut self, plan: &Plan) -> Result<Option<u64>, LabError> {
        match self.fault {
            Fault::NodeKill => {
                for &v in &plan.nodes {
                    self.net.isolate(v)?;
                    self.fleet.kill(v);
                }
            }
            Fault::NodePause { .. } => {
                for &v in &plan.nodes {
                    self.fleet.signal(v, true)?;
                }
            }
            Fault::NodeRestart => {
                for &v in &plan.nodes {
                    self.fleet.kill(v);
                    self.start_again(v)?;
                }
            }
            Fault::LinkDown => {
                for &l in &plan.links {
                    self.net.set_link(l, false)?;
                }
            }
            Fault::Partition { .. } => {
                let cut: Vec<_> = plan.links.iter().map(|&l| (l, true, true)).collect();
                return self.net.drop_on_links(&cut, 1.0).map(Some);
            }
            Fault::AsymPartition { .. } => {
                let groups = plan.groups.as_deref().unwrap_or(&[]);
                // Drop only what flows from group 0 to group 1.
                let cut: Vec<_> = plan
                    .links
                    .iter()
                    .map(|&l| {
                        let a_first = groups.get(self.topology.links[l].a as usize) == Some(&0);
                        (l, a_first, !a_first)
                    })
                    .collect();
                return self.net.drop_on_links(&cut, 1.0).map(Some);
            }
            Fault::Delay {
                delay_ms,
                jitter_ms,
            } => {
                for &l in &plan.links {
                    let link = &self.topology.links[l];
                    let (a, b) = (link.a as usize, link.b as usize);
                    self.fleet.set_delay(a, b, *delay_ms, *jitter_ms)?;
                    self.fleet.set_delay(b, a, *delay_ms, *jitter_ms)?;
                }
            }
            Fault::Byzantine { .. } => {
                for &v in &plan.stressed {
                    self.fleet.set_byzantine(v, true)?;
                }
            }
            Fault::Bandwidth { mbps } => {
                for &l in &plan.links {
                    self.net.set_bandwidth(l, Some(*mbps))?;
                }
            }
            Fault::CpuStress { hold } | Fault::MemStress { hold } => {
                let load: &[&str] = if matches!(self.fault, Fault::CpuStress { .. }) {
                    &["--cpu", "1", "--cpu-load", "90"]
                } else {
                    &["--vm", "1", "--vm-bytes", "25%"]
                };
                let timeout = format!("{}s", hold.as_secs() + 5);
                for &v in &plan.stressed {
                    let child = std::process::Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            &self.net.nodes[v].ns,
                            "stress-ng",
                            "--quiet",
                            "--timeout",
                            &timeout,
                        ])
                        .args(load)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .map_err(|e| LabError::failed(format!("cannot start stress-ng: {e}")))?;
                    self.stress.push(child);
                }
            }
            Fault::Loss { rate } => {
                for &l in &plan.links {
                    self.net.drop_on_link(l, true, true, *rate)?;
                }
            }
            Fault::Revoke => {
                for &v in &plan.nodes {
                    let via = self
                        .victim_neighbours(plan)
                        .first()
                        .copied()
                        .ok_or_else(|| {
                            LabError::failed("the revoked node has no neighbour to hand it to")
                        })?;
                    self.fleet.revoke(self.net, v, via)?;
                }
            }
            // Armed before the baseline; it fires by itself at the SVID's notAfter.
            Fault::SvidExpiry { .. } => {}
            // Stepped by `ramp`, which the iteration awaits instead.
            Fault::DegradeThenFail { .. } => {}
        }
        Ok(None)
    }

    /// SIGTERM, so stress-ng stops its workers too (SIGKILL would orphan them).
    fn stop_stress(&mut self) {
        for mut child in self.stress.drain(..) {
            let _ = cmd("kill", &["-TERM", &child.id().to_string()]);
            let _ = child.wait();
        }
    }

    /// Lift a fault that holds for a while (pause, partitions, stress).
    /// Lift a fault that holds for a while; returns the instant it was lifted (Unix µs)
    /// when that is not the instant this returns.
    fn lift_held(&mut self, plan: &Plan) -> Result<Option<u64>, LabError> {
        match self.fault {
            Fault::NodePause { .. } => {
                for &v in &plan.nodes {
                    self.fleet.signal(v, false)?;
                }
            }
            Fault::Partition { .. } | Fault::AsymPartition { .. } => {
                return self.net.lift_link_faults(&plan.links).map(Some)
            }
            Fault::CpuStress { .. } | Fault::MemStress { .. } => self.stop_stress(),
            Fault::Byzantine { .. } => {
                for &v in &plan.stressed {
                    self.fleet.set_byzantine(v, false)?;
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// Start node `v` again; for babeld, first flush the kernel routes its killed
    /// process left behind.
    fn start_again(&mut self, v: usize) -> Result<(), LabError> {
        if matches!(self.kind, Kind::Babeld(_)) {
            let _ = cmd(
                "ip",
                &[
                    "-n",
                    &self.net.nodes[v].ns,
                    "route",
                    "flush",
                    "proto",
                    "babel",
                ],
            );
        }
        self.fleet.start(v, self.net)
    }

    /// Bring the mesh back to full strength for the next iteration.
    fn recover(&mut self, plan: &Plan) -> Result<(), LabError> {
        match self.fault {
            Fault::NodeKill => {
                for &v in &plan.nodes {
                    self.net.unisolate(v)?;
                    self.start_again(v)?;
                }
            }
            Fault::LinkDown => {
                for &l in &plan.links {
                    self.net.set_link(l, true)?;
                }
            }
            Fault::Loss { .. } => self.net.clear_link_faults(),
            Fault::DegradeThenFail { .. } => {
                self.net.clear_link_faults();
                for &l in &plan.links {
                    self.net.set_link(l, true)?;
                }
            }
            Fault::Bandwidth { .. } => {
                for &l in &plan.links {
                    self.net.set_bandwidth(l, None)?;
                }
            }
            Fault::Delay { .. } => {
                for &l in &plan.links {
                    let link = &self.topology.links[l];
                    let (a, b) = (link.a as usize, link.b as usize);
                    self.fleet.set_delay(a, b, 0, 0)?;
                    self.fleet.set_delay(b, a, 0, 0)?;
                }
            }
            // An expired SVID cannot renew itself (renewal authenticates with it): the
            // node is re-enrolled with a fresh SVID and restarted.
            Fault::SvidExpiry { .. } => {
                for &v in &plan.nodes {
                    self.fleet.issue_svid(v, crate::routers::SVID_TTL)?;
                    self.fleet.kill(v);
                    self.start_again(v)?;
                }
            }
            // A revocation is permanent and every node keeps it: the lab rebuilds the
            // mesh's identities (new CA, fresh SVIDs) and restarts every node.
            Fault::Revoke => {
                self.fleet.stop_all();
                self.fleet.rebuild_identities(self.net)?;
                for v in 0..self.topology.len() {
                    self.fleet.start(v, self.net)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// For a mesh that did not converge: the first forwarding loop among `lacking`, and
    /// whether its nodes hold the same view of the mesh (a loop between nodes that agree
    /// is a route-computation bug; one between nodes that differ, flooding in progress).
    async fn loop_views(&self, routes: &Routes, lacking: &[(usize, usize)]) -> String {
        let Some((cycle, d)) = lacking
            .iter()
            .find_map(|&(s, d)| paths::loop_on_way(routes, s, d).map(|c| (c, d)))
        else {
            return String::new();
        };
        let names: Vec<String> = cycle
            .iter()
            .map(|&v| self.topology.names[v].to_string())
            .collect();
        let mut views = Vec::new();
        for &v in &cycle {
            views.push(self.fleet.topology_view(self.net, v).await);
        }
        // The routes were polled before the views: poll the loop's nodes again, so a loop
        // that was repaired meanwhile is not reported next to views it was not built from.
        let again = self.fleet.routes(self.net, &cycle).await;
        let still = cycle.iter().all(|&v| {
            let next = |r: &crate::paths::Routes| r.get(&v).and_then(|t| t.get(&d)).copied();
            next(&again) == next(routes)
        });
        let answered = views.iter().flatten().count();
        let first = views.iter().flatten().next();
        let same = views.iter().flatten().all(|v| Some(v) == first);
        let agree = match (answered, same) {
            (0, _) => "did not answer for their views".to_owned(),
            (n, true) => {
                format!("({n} answered) hold identical views of the mesh (links and costs)")
            }
            (n, false) => format!("({n} answered) hold different views of the mesh"),
        };
        let persists = if still {
            "persists after the views were read"
        } else {
            "was repaired while the views were read"
        };
        format!(
            "the loop {} toward {} {persists} and its nodes {agree} (x0tta6bl4_route_audit_mismatches_total \
             counts a route computation that disagrees with its view); ",
            names.join(" -> "),
            self.topology.names[d]
        )
    }

    /// Link-state advertisements the nodes originated so far (x0tta6bl4; 0 for babeld).
    async fn originated(&self) -> u64 {
        let all: Vec<usize> = (0..self.topology.len()).collect();
        match self.kind {
            Kind::X0tta6bl4(_) => self.fleet.metric_sum(self.net, &all, LSA_ORIGINATED).await,
            Kind::Babeld(_) => 0,
        }
    }

    /// Wait until every node of `nodes` routes to every other of `nodes` along a
    /// loop-free path avoiding `avoid`.
    async fn wait_routes(&mut self, nodes: &[usize], avoid: &[usize]) -> Result<(), LabError> {
        let started = Instant::now();
        let deadline = started + self.timeout();
        let originated_before = self.originated().await;
        loop {
            if let Some(exited) = self.fleet.first_exited() {
                return Err(LabError::failed(exited));
            }
            let all: Vec<usize> = (0..self.topology.len()).collect();
            let polled = Instant::now();
            let routes = self.fleet.routes(self.net, &all).await;
            let lacking = paths::unreachable_pairs(&routes, nodes, avoid);
            if lacking.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let name = |v: usize| self.topology.names[v].to_string();
                let names: Vec<String> = lacking
                    .iter()
                    .take(8)
                    .map(|&(s, d)| {
                        let why = paths::why_unreachable(&routes, s, d, avoid).unwrap_or_default();
                        format!("{}->{} ({why})", name(s), name(d))
                    })
                    .collect();
                let mut destinations: Vec<usize> = lacking.iter().map(|&(_, d)| d).collect();
                destinations.sort_unstable();
                destinations.dedup();
                let loop_views = self.loop_views(&routes, &lacking).await;
                let load = crate::resources::load_average();
                let churn = self.originated().await.saturating_sub(originated_before) as f64
                    / started.elapsed().as_secs_f64();
                return Err(LabError::failed(format!(
                    "{}: routes did not converge within {} s; missing {} paths to {} destinations, e.g. {}; \
                     {loop_views}{} of {} nodes answered the last poll; the nodes originated {churn:.1} link-state \
                     advertisements/s meanwhile; host load average {:.1} (see docs/edge-resources.md)",
                    self.kind.key(),
                    self.timeout().as_secs(),
                    lacking.len(),
                    destinations.len(),
                    names.join(", "),
                    routes.len(),
                    self.topology.len(),
                    load[0],
                )));
            }
            tokio::time::sleep(POLL.max(polled.elapsed())).await;
        }
    }
}

/// Run the twin on the same topology (links at the measured latency), timers and fault.
fn twin_side(
    options: &Options,
    fault: &Fault,
    topology: &Topology,
    plans: &[Plan],
    calibration: &Calibration,
    lab: Option<&RouterReport>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> TwinSide {
    let (scenario, scenario_spec) = match fault.twin_scenario(calibration) {
        Ok(scenario) => scenario,
        Err(e) => {
            progress(&format!("twin: not run: {e}"));
            return TwinSide::default();
        }
    };
    let model = format!(
        "links {} one way, scenario {scenario_spec}, the lab's own fault targets",
        calibration
            .latency_ms
            .map_or("at their default latency".to_owned(), |ms| format!(
                "{ms:.3} ms"
            ))
    );
    progress(&format!("twin: {model}"));
    let mut twin_topology = topology.clone();
    for link in &mut twin_topology.links {
        if let Some(ms) = calibration.latency_ms {
            link.params.latency = Duration::from_secs_f64(ms.max(0.0) / 1e3);
        }
        link.params.jitter = Duration::ZERO;
    }
    let mut run_options = RunOptions::new(options.seed);
    // The nodes' own timers: `--node-protocol` settings (checked when parsed).
    match protocol_config(&options.protocol) {
        Ok(config) => run_options.sim.protocol = config,
        Err(e) => {
            progress(&format!("twin: not run: --node-protocol: {e}"));
            return TwinSide::default();
        }
    }
    run_options.iterations = options.iterations;
    run_options.measurement.flow_interval = PROBE_INTERVAL;
    // Flows run on as long after the heal as the lab lets them.
    run_options.measurement.tail = SETTLE;
    run_options.targets = plans.iter().map(Plan::twin_targets).collect();
    let Ok(twin) = x0tta6bl4_twin::run(
        &twin_topology,
        &options.topology,
        &scenario,
        &scenario_spec,
        &run_options,
        &mut |_| {},
    ) else {
        return TwinSide::default();
    };
    let samples: Vec<f64> = twin.samples.iter().map(|s| s.3).collect();
    let (error_p50, error_p95) = match lab {
        Some(lab) if lab.mttr_ms.samples > 0 => (
            relative_error(twin.mttr_ms.p50, lab.mttr_ms.p50),
            relative_error(twin.mttr_ms.p95, lab.mttr_ms.p95),
        ),
        _ => (None, None),
    };
    TwinSide {
        mttr_ms: Some(twin.mttr_ms),
        error_p50,
        error_p95,
        samples,
        model: Some(model),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(topology: &str, nodes: usize, scenario: &str) -> Options {
        Options {
            topology: topology.into(),
            nodes,
            scenario: scenario.into(),
            iterations: 1,
            seed: 1,
            router: RouterChoice::X0tta6bl4,
            exe: PathBuf::from("/bin/false"),
            node_root: None,
            flows_sample: None,
            budget: Default::default(),
            protocol: toml::Table::new(),
            routings: Vec::new(),
        }
    }

    #[test]
    fn bad_input_is_refused_before_touching_the_machine() {
        assert!(prepare(&options("ring", 4, "node-kill")).is_ok());
        for (topology, nodes, scenario) in [
            ("ring", 4, "meteor"),
            ("torus", 4, "node-kill"),
            ("ring", 500, "node-kill"),
            ("node:http://x", 4, "node-kill"),
            ("ring", 4, "svid-expiry:ttl_s=0"),
        ] {
            let e = prepare(&options(topology, nodes, scenario)).unwrap_err();
            assert!(
                matches!(e, LabError::Usage { .. }),
                "{topology} {scenario}: {e}"
            );
        }
        assert!("babel".parse::<RouterChoice>().is_err());
        let table = parse_protocol("cost_update_interval_ms=5000, adaptive_timeout=true").unwrap();
        assert_eq!(table["cost_update_interval_ms"].as_integer(), Some(5000));
        for bad in [
            "cost_update_interval_ms",
            "nonsense_key=1",
            "probe_interval_ms=1",
            "x==",
        ] {
            assert!(
                matches!(parse_protocol(bad), Err(LabError::Usage { .. })),
                "{bad}"
            );
        }
        assert_eq!("both".parse::<RouterChoice>().unwrap().kinds(&[]).len(), 3);
        let routings = [TwinRouting::Cost, TwinRouting::Etx];
        let keys: Vec<&str> = RouterChoice::Both
            .kinds(&routings)
            .iter()
            .map(Kind::key)
            .collect();
        assert_eq!(
            keys,
            ["x0tta6bl4", "x0tta6bl4-etx", "babeld", "babeld-default"]
        );
        let mut etx = options("ring", 4, "node-kill");
        etx.routings = vec![TwinRouting::Etx];
        let dir = std::path::Path::new("/nonexistent");
        let sections = node_sections(&etx, Routing::Etx, dir, None).unwrap();
        assert_eq!(sections["protocol"]["link_cost"].as_str(), Some("etx"));
        assert!(node_sections(&etx, Routing::Predict, dir, None).is_err());
        etx.protocol.insert("link_cost".into(), "etx".into());
        assert!(matches!(prepare(&etx), Err(LabError::Usage { .. })));
    }

    #[test]
    fn only_the_router_the_twin_is_compared_with_calibrates_it() {
        // The twin runs the protocol's cost routing and is compared with `x0tta6bl4`:
        // the etx and predict runs (later, under other loads) must not recalibrate it.
        let kinds = RouterChoice::Both.kinds(&[TwinRouting::Etx, TwinRouting::Cost]);
        let calibrating: Vec<&str> = kinds
            .iter()
            .filter(|k| k.calibrates_twin())
            .map(Kind::key)
            .collect();
        assert_eq!(calibrating, ["x0tta6bl4"]);
    }

    #[test]
    fn reroute_figures_count_a_killed_or_restarted_node_from_zero_never_below() {
        // Node 0 is killed during the fault (it answers no more), node 1 is restarted
        // (its counters start again), node 2 raises once more, node 3 answered only
        // after; node 2 is an end of the cut link.
        let before = RerouteCounts(vec![Some((5, 2)), Some((4, 3)), Some((1, 1)), None]);
        let after = RerouteCounts(vec![None, Some((1, 0)), Some((2, 1)), Some((7, 7))]);
        // Raises: 1 (node 1) + 1 (node 2); reroutes: 0; elsewhere: node 1's 1.
        assert_eq!(after.since(&before, &[2]), (2, 0, 1));
        // Nothing answered after: nothing counted (babeld-like or a dead fleet).
        assert_eq!(RerouteCounts::default().since(&before, &[]), (0, 0, 0));
    }
}
