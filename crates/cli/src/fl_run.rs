//! `x0tta6bl4 fl agent` and `x0tta6bl4 fl run`: federated learning over the real mesh.
//!
//! An agent is one process per node, attached to its node's HTTP API: it reads the
//! deliveries of the FL channel (`GET /api/v1/channels/2/messages`, a long poll), feeds
//! them to the sans-IO [`MeshRole`] with the wall clock as time, sends what the role
//! sends (`POST /api/v1/channels/2/send`) and prints every event as one JSON line. Frames
//! are signed with the node's SVID key and checked against the senders' SVID
//! certificates. `fl run` starts a demo-style mesh (CA, SVIDs, node processes, a random
//! topology), one agent per node, and kills a participant and then the coordinator's
//! host (node and agent, SIGKILL) while they train; see docs/fl.md.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};
use x0tta6bl4_fl::data::{default_data_dir, partition_iid, Dataset};
use x0tta6bl4_fl::mesh::{MeshConfig, MeshEvent, MeshRole, FL_CHANNEL};
use x0tta6bl4_fl::model::{self, ModelKind, ModelSpec, TrainConfig};
use x0tta6bl4_fl::{AggregatorKind, AuthSigner, CandleTrainer, Instant, NodeName};

use crate::api::Api;
use crate::args::DemoArgs;
use crate::demo::keep_or_remove;
use crate::demo::procs::Fleet;
use crate::demo::report::Progress;
use crate::demo::setup::{NodeSetup, Plan};
use crate::problem::{problem, Exit};

/// Longest single wait of an agent's long poll.
const POLL_WAIT_MAX: Duration = Duration::from_millis(500);
/// `payload_bytes_max` of the nodes `fl run` starts (the protocol's largest).
const MESH_PAYLOAD_MAX: usize = 16_384;

/// `x0tta6bl4 fl agent`.
#[derive(Debug, Args)]
pub struct FlAgentArgs {
    /// The HTTP API of this agent's node (`https://...` for an API with mutual TLS:
    /// the agent then presents the SVID of --identity).
    #[arg(long, value_name = "URL")]
    pub api: String,
    /// This node's SVID directory (svid.pem, svid_key.pem, bundle.pem): frames are
    /// signed with its key.
    #[arg(long, value_name = "DIR")]
    pub identity: PathBuf,
    /// Directory holding NAME/svid.pem for every node of --order: the certificates
    /// frames are checked against.
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
    /// Every node of the federation, comma-separated, in the order the coordinator
    /// role passes on (the first coordinates first). All agents must get the same.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', required = true)]
    pub order: Vec<String>,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Time a round waits for updates, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub round_timeout_ms: u64,
    /// Silence of the coordinator after which the next node of --order takes over, in
    /// milliseconds (longer than a round).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub failover_ms: u64,
    /// The node's `[protocol] payload_bytes_max`: longer FL envelopes are sent in
    /// fragments.
    #[arg(long, value_name = "BYTES", default_value_t = MESH_PAYLOAD_MAX)]
    pub payload_max: usize,
}

/// What every agent of one federation must agree on.
#[derive(Clone, Debug, Args)]
pub struct TrainingArgs {
    /// Rounds of the whole training.
    #[arg(long, value_name = "R", default_value_t = 12)]
    pub rounds: u64,
    /// Seed of the data split, the initial model, sampling and training.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Data set: digits (scikit-learn, 8x8) or mnist (28x28).
    #[arg(long, value_name = "NAME", default_value = "digits", value_parser = ["digits", "mnist"])]
    pub dataset: String,
    /// Directory of the converted data (scripts/fetch-fl-data.py writes it).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_FL_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Local epochs per round.
    #[arg(long, value_name = "E", default_value_t = 2)]
    pub epochs: usize,
    /// Local minibatch size.
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub batch: usize,
    /// Local SGD learning rate.
    #[arg(long, value_name = "LR", default_value_t = 0.1)]
    pub lr: f64,
}

impl TrainingArgs {
    /// (round timeout, failover) in ms: the given ones, else the data set's defaults.
    fn timeouts(&self, round: Option<u64>, failover: Option<u64>) -> (u64, u64) {
        let mnist = self.dataset == "mnist";
        (
            round.unwrap_or(if mnist { 20_000 } else { 2000 }),
            failover.unwrap_or(if mnist { 60_000 } else { 5000 }),
        )
    }

    fn check(&self) -> anyhow::Result<()> {
        let bad =
            |what: String, fix: &str| Err(problem(Exit::Usage, what, "x0tta6bl4 fl", fix).into());
        if self.rounds < 3 {
            return bad(
                format!("--rounds {} is too few", self.rounds),
                "give at least 3 rounds",
            );
        }
        if self.epochs == 0 || self.batch == 0 {
            return bad(
                "--epochs and --batch must be at least 1".into(),
                "give positive values",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(
                format!("--lr {} must be > 0", self.lr),
                "give a positive learning rate",
            );
        }
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    fn push_args(&self, command: &mut Command) {
        command
            .arg("--rounds")
            .arg(self.rounds.to_string())
            .arg("--seed")
            .arg(self.seed.to_string())
            .arg("--dataset")
            .arg(&self.dataset)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--epochs")
            .arg(self.epochs.to_string())
            .arg("--batch")
            .arg(self.batch.to_string())
            .arg("--lr")
            .arg(self.lr.to_string());
    }
}

fn load(dir: &Path, name: &str, split: &str) -> anyhow::Result<Dataset> {
    Dataset::load(dir, name, split).map_err(|e| {
        problem(
            Exit::Usage,
            e.to_string(),
            dir.display(),
            format!(
                "run `python3 scripts/fetch-fl-data.py --dir {}`",
                dir.display()
            ),
        )
        .into()
    })
}

/// The leaf certificate of `path` (PEM), DER.
fn leaf_certificate(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))?
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(first.to_vec())
}

/// Print one event line: `{"node", "t_ms", "event", ...}`.
fn emit(me: &NodeName, t_ms: u64, event: &str, mut fields: Value) {
    fields["node"] = json!(me.as_str());
    fields["t_ms"] = json!(t_ms);
    fields["event"] = json!(event);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{fields}");
    let _ = out.flush();
}

/// Run one node's FL role until the training is done.
pub async fn agent(args: FlAgentArgs) -> anyhow::Result<ExitCode> {
    args.training.check()?;
    let usage = |what: String, fix: &str| -> anyhow::Error {
        problem(Exit::Usage, what, "x0tta6bl4 fl agent", fix).into()
    };
    x0tta6bl4_identity::install_default_crypto_provider();
    let identity = x0tta6bl4_identity::NodeIdentity::load(&args.identity).map_err(|e| {
        usage(
            e.to_string(),
            "give the node's SVID directory with --identity",
        )
    })?;
    let me = identity.name().clone();
    let order: Vec<NodeName> = args
        .order
        .iter()
        .map(|n| {
            NodeName::new(n).map_err(|e| usage(format!("--order: {n:?}: {e}"), "give node names"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut credentials = BTreeMap::new();
    for name in &order {
        let path = args.certs.join(name.as_str()).join("svid.pem");
        let der = leaf_certificate(&path).map_err(|e| {
            usage(
                format!("{e:#}"),
                "--certs must hold NAME/svid.pem for every node of --order",
            )
        })?;
        credentials.insert(name.clone(), der);
    }
    let signer = Arc::new(AuthSigner::new(
        Arc::from(identity.authenticator()),
        credentials,
    ));
    let dir = args.training.data_dir();
    let train = Arc::new(load(&dir, &args.training.dataset, "train")?);
    let test = load(&dir, &args.training.dataset, "test")?;
    let spec = ModelSpec {
        kind: ModelKind::LogReg,
        inputs: train.features,
        classes: train.classes,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.training.seed);
    let initial = spec.init(&mut rng);
    let parts = partition_iid(train.len(), order.len(), &mut rng);
    let rank = order.iter().position(|n| n == &me).ok_or_else(|| {
        usage(
            format!("this node ({me}) is not in --order"),
            "list every node of the federation",
        )
    })?;
    let trainer = CandleTrainer {
        spec,
        data: train.clone(),
        rows: parts[rank].clone(),
        cfg: TrainConfig {
            epochs: args.training.epochs,
            batch: args.training.batch,
            lr: args.training.lr,
            momentum: 0.0,
        },
    };
    let cfg = MeshConfig {
        me: me.clone(),
        order,
        rounds: args.training.rounds,
        round_timeout: Duration::from_millis(args.round_timeout_ms),
        failover_after: Duration::from_millis(args.failover_ms),
        min_updates: 1,
        aggregator: AggregatorKind::FedAvg,
        seed: args.training.seed,
        payload_max: args.payload_max,
    };
    // An API with mutual TLS (`https://`) is reached with this node's own SVID.
    let svid = args
        .api
        .starts_with("https://")
        .then_some(args.identity.as_path());
    let api = Api::with_svid(&args.api, svid)?;
    let clock = std::time::Instant::now();
    let now = || Instant::from_micros(clock.elapsed().as_micros() as u64);
    let mut role = MeshRole::new(cfg, initial, Box::new(trainer), signer, now())
        .map_err(|e| usage(e, "check --order and the timeouts"))?;
    emit(
        &me,
        0,
        "started",
        json!({ "rank": rank, "rows": parts[rank].len() }),
    );
    let mut after = 0u64;
    let mut dropped = 0u64;
    loop {
        while let Some(t) = role.poll_transmit() {
            if let Err(e) = api.channel_send(FL_CHANNEL, t.to.as_str(), t.bytes).await {
                let t_ms = clock.elapsed().as_millis() as u64;
                emit(
                    &me,
                    t_ms,
                    "send_failed",
                    json!({ "to": t.to.as_str(), "error": format!("{e:#}") }),
                );
            }
        }
        while let Some(event) = role.poll_event() {
            report(&me, clock.elapsed().as_millis() as u64, event, spec, &test);
        }
        if role.is_done() {
            emit(
                &me,
                clock.elapsed().as_millis() as u64,
                "done",
                json!({ "round": role.adopted().0 }),
            );
            return Ok(ExitCode::SUCCESS);
        }
        let wait = role
            .poll_timeout()
            .map_or(POLL_WAIT_MAX, |t| t.saturating_since(now()))
            .min(POLL_WAIT_MAX);
        match api
            .channel_messages(FL_CHANNEL, after, wait.as_millis() as u64)
            .await
        {
            Ok(batch) => {
                if batch.dropped > dropped {
                    let t_ms = clock.elapsed().as_millis() as u64;
                    emit(
                        &me,
                        t_ms,
                        "node_dropped",
                        json!({ "deliveries": batch.dropped - dropped }),
                    );
                    dropped = batch.dropped;
                }
                for m in batch.messages {
                    after = after.max(m.seq);
                    let (Ok(from), Ok(payload)) =
                        (NodeName::new(&m.from), hex::decode(&m.payload_hex))
                    else {
                        continue;
                    };
                    role.handle_message(now(), &from, &payload);
                }
            }
            Err(e) => {
                let t_ms = clock.elapsed().as_millis() as u64;
                emit(
                    &me,
                    t_ms,
                    "api_failed",
                    json!({ "error": format!("{e:#}") }),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if role.poll_timeout().is_some_and(|t| t <= now()) {
            role.handle_timeout(now());
        }
    }
}

fn report(me: &NodeName, t_ms: u64, event: MeshEvent, spec: ModelSpec, test: &Dataset) {
    let names = |v: &[NodeName]| v.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>();
    match event {
        MeshEvent::Following {
            coordinator,
            reason,
        } => emit(
            me,
            t_ms,
            "following",
            json!({ "coordinator": coordinator.as_str(), "reason": reason }),
        ),
        MeshEvent::Coordinating {
            first_round,
            model_round,
            reason,
        } => emit(
            me,
            t_ms,
            "coordinating",
            json!({ "first_round": first_round, "model_round": model_round, "reason": reason }),
        ),
        MeshEvent::RoundStarted { round, sampled } => emit(
            me,
            t_ms,
            "round_started",
            json!({ "round": round, "sampled": names(&sampled) }),
        ),
        MeshEvent::RoundCompleted { summary, model } => {
            let accuracy = model::accuracy(spec, &model, test).ok();
            emit(
                me,
                t_ms,
                "round_completed",
                json!({
                    "round": summary.round,
                    "accuracy": accuracy,
                    "aggregated": names(&summary.aggregated),
                    "refused": summary.refused,
                    "update_bytes": summary.update_bytes,
                }),
            );
        }
        MeshEvent::RoundFailed { round, reason } => emit(
            me,
            t_ms,
            "round_failed",
            json!({ "round": round, "reason": reason }),
        ),
        MeshEvent::Refused {
            round,
            from,
            reason,
        } => emit(
            me,
            t_ms,
            "refused",
            json!({ "round": round, "from": from.as_str(), "reason": reason }),
        ),
        MeshEvent::Adopted { round, from } => emit(
            me,
            t_ms,
            "adopted",
            json!({ "round": round, "from": from.as_str() }),
        ),
        MeshEvent::Participant(e) => emit(
            me,
            t_ms,
            "participant",
            json!({ "detail": format!("{e:?}") }),
        ),
        MeshEvent::Ignored { from, reason } => emit(
            me,
            t_ms,
            "ignored",
            json!({ "from": from.as_str(), "reason": reason }),
        ),
        MeshEvent::Finished => emit(me, t_ms, "finished", json!({})),
        MeshEvent::NoCoordinatorLeft => emit(me, t_ms, "no_coordinator_left", json!({})),
    }
}

/// `x0tta6bl4 fl run`.
#[derive(Debug, Args)]
pub struct FlRunArgs {
    /// Node processes (and agents) to start (4 to 100).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub nodes: usize,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Mean number of links per node in the random topology.
    #[arg(long, value_name = "D", default_value_t = 3.0)]
    pub degree: f64,
    /// Time a round waits for updates, in milliseconds (default 2000 on digits, 20000
    /// on mnist, whose local training takes seconds).
    #[arg(long, value_name = "MS")]
    pub round_timeout_ms: Option<u64>,
    /// Silence of the coordinator after which the next node takes over, in
    /// milliseconds (default 5000 on digits, 60000 on mnist: longer than a round and
    /// than a participant's local training, during which its agent does not listen).
    #[arg(long, value_name = "MS")]
    pub failover_ms: Option<u64>,
    /// Print one JSON object instead of the round lines and summary.
    ///
    /// Keys: nodes, dataset, rounds, seed, order, kills [{node, role, after_round,
    /// at_ms}], rounds_run [{round, coordinator, accuracy, updates, at_ms}],
    /// accuracy_per_round, coordinator_per_round, final_accuracy, handovers [{node,
    /// first_round, reason, at_ms}], aborted_rounds (started by a coordinator that was
    /// killed before it ended them), continued, seconds.
    #[arg(long)]
    pub json: bool,
    /// Keep the temporary directory (CA, SVIDs, configs, node and agent logs).
    #[arg(long)]
    pub keep_dir: bool,
}

/// One agent process; killed and reaped when dropped.
struct AgentProcess {
    name: String,
    child: Option<Child>,
}

impl AgentProcess {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One killed node.
#[derive(Clone, Debug, Serialize)]
pub struct Kill {
    node: String,
    role: &'static str,
    after_round: u64,
    at_ms: u64,
}

/// One round that ended with a new model.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRun {
    round: u64,
    coordinator: String,
    accuracy: Option<f64>,
    updates: usize,
    at_ms: u64,
}

/// A node that took the coordinator role.
#[derive(Clone, Debug, Serialize)]
pub struct Handover {
    node: String,
    first_round: u64,
    reason: String,
    at_ms: u64,
}

/// What `fl run` reports.
#[derive(Debug, Serialize)]
pub struct RunReport {
    nodes: usize,
    dataset: String,
    rounds: u64,
    seed: u64,
    order: Vec<String>,
    kills: Vec<Kill>,
    rounds_run: Vec<RoundRun>,
    accuracy_per_round: Vec<Option<f64>>,
    coordinator_per_round: Vec<String>,
    final_accuracy: Option<f64>,
    handovers: Vec<Handover>,
    aborted_rounds: Vec<u64>,
    continued: bool,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
}

/// Start a mesh, train over it, kill a participant and the coordinator's host.
pub async fn run(args: FlRunArgs) -> anyhow::Result<ExitCode> {
    args.training.check()?;
    if !(4..=crate::demo::setup::NODES_MAX).contains(&args.nodes) {
        return Err(problem(
            Exit::Usage,
            format!("--nodes {} is out of range", args.nodes),
            "x0tta6bl4 fl run",
            "use 4 to 100 nodes: a coordinator, its successor, a victim and a participant",
        )
        .into());
    }
    let (round_timeout_ms, failover_ms) = args
        .training
        .timeouts(args.round_timeout_ms, args.failover_ms);
    if failover_ms <= round_timeout_ms {
        return Err(problem(
            Exit::Usage,
            "--failover-ms must be longer than --round-timeout-ms",
            "x0tta6bl4 fl run",
            "a coordinator is heard once a round; give e.g. --failover-ms 5000 --round-timeout-ms 2000",
        )
        .into());
    }
    let dir = args.training.data_dir();
    load(&dir, &args.training.dataset, "test")?;
    let demo = DemoArgs {
        nodes: args.nodes,
        kill: 2,
        seed: Some(args.training.seed),
        degree: args.degree,
        json: args.json,
        keep_dir: args.keep_dir,
    };
    let mut plan = Plan::new(&demo, args.training.seed)?;
    plan.payload_bytes_max = Some(MESH_PAYLOAD_MAX);
    let workspace = tempfile::Builder::new()
        .prefix("x0tta6bl4-fl-run-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let mut fleet = Fleet::default();
    let mut agents = Vec::new();
    let result = run_in(&args, &plan, workspace.path(), &mut fleet, &mut agents).await;
    agents.clear();
    fleet.stop_all();
    let (mut report, kept) = keep_or_remove(workspace, args.keep_dir, result, "configs")?;
    report.dir = kept;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", summary(&report));
    }
    Ok(if report.continued {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Failure as u8)
    })
}

fn summary(r: &RunReport) -> String {
    let mut out = String::new();
    let accuracy = r
        .final_accuracy
        .map_or("n/a".to_owned(), |a| format!("{:.1} %", a * 100.0));
    out.push_str(&format!(
        "{} rounds of {} over {} node processes, final accuracy {accuracy}\n",
        r.rounds_run.len(),
        r.dataset,
        r.nodes
    ));
    for k in &r.kills {
        out.push_str(&format!(
            "killed {} ({}) after round {}\n",
            k.node, k.role, k.after_round
        ));
    }
    for h in &r.handovers {
        out.push_str(&format!(
            "{} coordinated from round {} ({})\n",
            h.node, h.first_round, h.reason
        ));
    }
    out.push_str(if r.continued {
        "training continued after both kills"
    } else {
        "training did NOT continue after the kills"
    });
    if let Some(dir) = &r.dir {
        out.push_str(&format!("\nconfigs and logs: {dir}"));
    }
    out
}

async fn run_in(
    args: &FlRunArgs,
    plan: &Plan,
    dir: &Path,
    fleet: &mut Fleet,
    agents: &mut Vec<AgentProcess>,
) -> anyhow::Result<RunReport> {
    let started = std::time::Instant::now();
    let mut progress = Progress::new(3, args.json);
    let (nodes, _) = crate::demo::start_and_converge(plan, dir, fleet, &mut progress).await?;
    progress.done();
    // The coordinator's host is the node the plan would kill first (the survivors stay
    // connected without both victims); the participant victim comes last in the order,
    // so that it is never the successor.
    let (coordinator_victim, participant_victim) = (
        plan.names[plan.victims[0]].clone(),
        plan.names[plan.victims[1]].clone(),
    );
    let mut order = vec![coordinator_victim.clone()];
    order.extend(
        plan.names
            .iter()
            .filter(|n| **n != coordinator_victim && **n != participant_victim)
            .cloned(),
    );
    order.push(participant_victim.clone());
    let (round_timeout_ms, failover_ms) = args
        .training
        .timeouts(args.round_timeout_ms, args.failover_ms);
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    for node in &nodes {
        let timeouts = (round_timeout_ms, failover_ms);
        agents.push(spawn_agent(
            args,
            node,
            dir,
            &order,
            timeouts,
            lines_tx.clone(),
        )?);
    }
    drop(lines_tx);
    if !args.json {
        println!(
            "{} nodes up; coordinator order {}; will kill {participant_victim} (participant) and \
             then {coordinator_victim} (the coordinator's host)",
            nodes.len(),
            order.join(",")
        );
    }
    let rounds = args.training.rounds;
    let kill_participant_after = (rounds / 3).max(1);
    let kill_coordinator_after = (2 * rounds / 3).max(kill_participant_after + 1);
    let budget = Duration::from_millis((rounds + 4) * (round_timeout_ms + 1500) + 3 * failover_ms)
        + Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + budget;
    let mut kills: Vec<Kill> = Vec::new();
    let mut rounds_run: Vec<RoundRun> = Vec::new();
    let mut handovers: Vec<Handover> = Vec::new();
    let mut aborted: Vec<u64> = Vec::new();
    let mut current = coordinator_victim.clone();
    loop {
        let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(_) => {
                if !args.json {
                    println!("stopping: no end of training within {} s", budget.as_secs());
                }
                break;
            }
        };
        let (node, text) = line;
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let at_ms = started.elapsed().as_millis() as u64;
        match event["event"].as_str() {
            Some("coordinating") => {
                let h = Handover {
                    node: node.clone(),
                    first_round: event["first_round"].as_u64().unwrap_or(0),
                    reason: event["reason"].as_str().unwrap_or("").to_owned(),
                    at_ms,
                };
                let last = rounds_run.last().map_or(0, |r| r.round);
                if !handovers.is_empty() && h.first_round > last + 1 {
                    let lost: Vec<u64> = (last + 1..h.first_round).collect();
                    if !args.json {
                        let list: Vec<String> = lost.iter().map(u64::to_string).collect();
                        println!(
                            "round {} aborted: started by {current}, whose host was killed",
                            list.join(", ")
                        );
                    }
                    aborted.extend(lost);
                }
                if !args.json {
                    println!(
                        "{} coordinates from round {} ({})",
                        h.node, h.first_round, h.reason
                    );
                }
                current = node.clone();
                handovers.push(h);
            }
            Some("round_completed") => {
                let r = RoundRun {
                    round: event["round"].as_u64().unwrap_or(0),
                    coordinator: node.clone(),
                    accuracy: event["accuracy"].as_f64(),
                    updates: event["aggregated"].as_array().map_or(0, Vec::len),
                    at_ms,
                };
                if !args.json {
                    let acc = r
                        .accuracy
                        .map_or("n/a".into(), |a| format!("{:.1} %", a * 100.0));
                    println!(
                        "round {:>3}  coordinator {}  accuracy {acc}  updates {}",
                        r.round, r.coordinator, r.updates
                    );
                }
                let round = r.round;
                rounds_run.push(r);
                let victim = if round >= kill_participant_after && kills.is_empty() {
                    Some((participant_victim.clone(), "participant"))
                } else if round >= kill_coordinator_after && kills.len() == 1 {
                    Some((current.clone(), "coordinator's host"))
                } else {
                    None
                };
                if let Some((victim, role)) = victim {
                    fleet.kill(&victim)?;
                    if let Some(a) = agents.iter_mut().find(|a| a.name == victim) {
                        a.kill();
                    }
                    if !args.json {
                        println!("killed {victim} ({role}): node and agent, SIGKILL");
                    }
                    kills.push(Kill {
                        node: victim,
                        role,
                        after_round: round,
                        at_ms,
                    });
                }
                if round >= rounds {
                    break;
                }
            }
            // The coordinator ran its last round (even a failed one): nothing follows.
            Some("finished") if node == current => break,
            Some("round_failed") if !args.json => println!(
                "round {:>3}  coordinator {node}  failed: {}",
                event["round"],
                event["reason"].as_str().unwrap_or("")
            ),
            _ => {}
        }
    }
    let coordinator_kill = kills.get(1).cloned();
    let continued = kills.len() == 2
        && rounds_run.last().is_some_and(|r| r.round >= rounds)
        && coordinator_kill.as_ref().is_some_and(|k| {
            rounds_run
                .iter()
                .any(|r| r.round > k.after_round && r.coordinator != k.node)
        });
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunReport {
        nodes: nodes.len(),
        dataset: args.training.dataset.clone(),
        rounds,
        seed: args.training.seed,
        order,
        accuracy_per_round: rounds_run.iter().map(|r| r.accuracy).collect(),
        coordinator_per_round: rounds_run.iter().map(|r| r.coordinator.clone()).collect(),
        final_accuracy: rounds_run.last().and_then(|r| r.accuracy),
        kills,
        rounds_run,
        handovers,
        aborted_rounds: aborted,
        continued,
        seconds,
        dir: None,
    })
}

fn spawn_agent(
    args: &FlRunArgs,
    node: &NodeSetup,
    dir: &Path,
    order: &[String],
    (round_timeout_ms, failover_ms): (u64, u64),
    lines: tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> anyhow::Result<AgentProcess> {
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let log_path = dir.join(&node.name).join("agent.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(&exe);
    command
        .args(["fl", "agent", "--api", node.api.base()])
        .arg("--identity")
        .arg(dir.join(&node.name))
        .arg("--certs")
        .arg(dir)
        .arg("--order")
        .arg(order.join(","))
        .arg("--round-timeout-ms")
        .arg(round_timeout_ms.to_string())
        .arg("--failover-ms")
        .arg(failover_ms.to_string())
        .arg("--payload-max")
        .arg(MESH_PAYLOAD_MAX.to_string());
    args.training.push_args(&mut command);
    let mut child = command
        .env(
            crate::node_cmd::PARENT_PID_ENV,
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone().context("cannot reopen the agent log")?)
        .spawn()
        .with_context(|| format!("cannot start {} fl agent", exe.display()))?;
    let stdout = child.stdout.take().context("no agent stdout")?;
    let name = node.name.clone();
    std::thread::spawn(move || {
        let mut log = log;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if lines.send((name.clone(), line)).is_err() {
                break;
            }
        }
    });
    Ok(AgentProcess {
        name: node.name.clone(),
        child: Some(child),
    })
}
