//! `x0tta6bl4 fl agent` and `x0tta6bl4 fl run`: federated learning over the real mesh.
//!
//! An agent is one process per node, attached to its node's HTTP API: it reads the
//! deliveries of the FL channel (`GET /api/v1/channels/2/messages`, a long poll), feeds
//! them to the sans-IO [`MeshRole`] with the wall clock as time, sends what the role
//! sends (`POST /api/v1/channels/2/send`) and prints every event as one JSON line. Frames
//! are signed with the node's SVID key and checked against the senders' SVID
//! certificates; the committee's messages travel on the same channel, signed with the
//! same key and checked against the SEC1 public keys of the SVIDs, which the node's
//! audit trail keeps (`--audit`): every committed block is appended there, with its
//! model, before the model is adopted. Local training runs on a thread of its own, so
//! frames and votes keep being handled meanwhile. `fl run` starts a demo-style mesh (CA,
//! SVIDs, node processes, a random topology), one agent per node, kills a participant
//! and then the coordinator's host (node and agent, SIGKILL) while they train, rolls
//! back to an earlier version when asked (`--rollback-after R --rollback-to VERSION`: a
//! decision the committee commits and every node adopts), and at the end verifies and
//! compares every node's trail; see docs/fl.md.

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
use x0tta6bl4_fl::audit::{AuditTrail, ChainInfo, Member, Record};
use x0tta6bl4_fl::committee::{Block, CommitteeConfig, QuorumCertificate};
use x0tta6bl4_fl::data::{default_data_dir, partition_iid, Dataset};
use x0tta6bl4_fl::keys::PublicKeys;
use x0tta6bl4_fl::mesh::{MeshConfig, MeshEvent, MeshRole, FL_CHANNEL};
use x0tta6bl4_fl::model::{self, ModelKind, ModelSpec, TrainConfig};
use x0tta6bl4_fl::{
    AggregatorKind, AuthSigner, CandleTrainer, Instant, LocalTrainer, NodeName, TrainJob,
};

use crate::api::Api;
use crate::args::DemoArgs;
use crate::demo::keep_or_remove;
use crate::demo::procs::Fleet;
use crate::demo::report::Progress;
use crate::demo::setup::{NodeSetup, Plan};
use crate::problem::{problem, Exit};

/// Longest single wait of an agent's long poll.
const POLL_WAIT_MAX: Duration = Duration::from_millis(500);
/// How long a done agent keeps answering the committee.
const LINGER: Duration = Duration::from_millis(1500);
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
    /// Every node of the federation (the committee's candidates), comma-separated: the
    /// first coordinates first; a node asking the committee to replace a silent
    /// coordinator names the first live node after it. All agents must get the same.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', required = true)]
    pub order: Vec<String>,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Time a round waits for updates, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub round_timeout_ms: u64,
    /// Silence of the committed coordinator after which this node asks the committee
    /// for a coordinator change, in milliseconds (longer than a round).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub failover_ms: u64,
    /// The node's `[protocol] payload_bytes_max`: longer FL envelopes are sent in
    /// fragments.
    #[arg(long, value_name = "BYTES", default_value_t = MESH_PAYLOAD_MAX)]
    pub payload_max: usize,
    /// This node's audit trail: every committed block (with its quorum certificate)
    /// and model is appended to it before the model is adopted (default: DIR/fl-audit
    /// of --identity). An existing trail of the same chain is resumed from.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    #[command(flatten)]
    pub committee: CommitteeArgs,
    #[command(flatten)]
    pub rollback: RollbackPlan,
}

/// A rollback over the mesh, planned: a committed decision like a round's.
#[derive(Clone, Debug, Default, Args)]
pub struct RollbackPlan {
    /// Once round R is committed, the committed coordinator asks the committee to roll
    /// back to --rollback-to before it starts the next round; every node adopts the
    /// restored model once the block is committed and training goes on from it (give
    /// both flags).
    #[arg(long, value_name = "R")]
    pub rollback_after: Option<u64>,
    /// The committed model version (block height of a round or an earlier rollback)
    /// whose model becomes current again (`fl models --audit NODE/fl-audit` lists them).
    #[arg(long, value_name = "VERSION")]
    pub rollback_to: Option<u64>,
}

impl RollbackPlan {
    fn plan(&self) -> Option<(u64, u64)> {
        self.rollback_after.zip(self.rollback_to)
    }

    fn check(&self, rounds: u64) -> anyhow::Result<()> {
        let fix =
            "give --rollback-after R (1 <= R < --rounds) and --rollback-to VERSION (1 <= VERSION)";
        let Some((after, to)) = self.plan() else {
            if self.rollback_after.is_some() || self.rollback_to.is_some() {
                return Err(problem(
                    Exit::Usage,
                    "--rollback-after and --rollback-to go together",
                    "x0tta6bl4 fl",
                    fix,
                )
                .into());
            }
            return Ok(());
        };
        if after == 0 || after >= rounds || to == 0 {
            return Err(problem(
                Exit::Usage,
                format!("--rollback-after {after} --rollback-to {to} with --rounds {rounds}"),
                "x0tta6bl4 fl",
                fix,
            )
            .into());
        }
        Ok(())
    }

    fn push_args(&self, command: &mut Command) {
        if let Some((after, to)) = self.plan() {
            command
                .arg("--rollback-after")
                .arg(after.to_string())
                .arg("--rollback-to")
                .arg(to.to_string());
        }
    }
}

/// The committee's settings: every agent of one federation must get the same.
#[derive(Clone, Debug, Args)]
pub struct CommitteeArgs {
    /// The chain's name (its genesis hash is derived from it).
    #[arg(long, value_name = "NAME", default_value = "x0tta6bl4-fl")]
    pub chain_id: String,
    /// Byzantine (or crashed) validators the committee tolerates: it has 3f+1 members
    /// drawn from the nodes per epoch (default: 2, at most (nodes - 1) / 3).
    #[arg(long, value_name = "F")]
    pub committee_f: Option<usize>,
    /// Heights per epoch: the committee is drawn anew at each epoch.
    #[arg(long, value_name = "H", default_value_t = 4)]
    pub epoch_len: u64,
    /// First view-change timeout of the committee, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub view_timeout_ms: u64,
}

impl CommitteeArgs {
    /// f for a federation of `nodes`.
    fn f(&self, nodes: usize) -> usize {
        self.committee_f
            .unwrap_or_else(|| 2.min(nodes.saturating_sub(1) / 3))
    }

    fn config(&self, candidates: Vec<NodeName>) -> CommitteeConfig {
        let view_timeout = Duration::from_millis(self.view_timeout_ms.max(1));
        CommitteeConfig {
            chain_id: self.chain_id.clone(),
            f: self.f(candidates.len()),
            candidates,
            epoch_len: self.epoch_len,
            view_timeout,
            resend: view_timeout / 2,
        }
    }

    fn push_args(&self, command: &mut Command, nodes: usize) {
        command
            .arg("--chain-id")
            .arg(&self.chain_id)
            .arg("--committee-f")
            .arg(self.f(nodes).to_string())
            .arg("--epoch-len")
            .arg(self.epoch_len.to_string())
            .arg("--view-timeout-ms")
            .arg(self.view_timeout_ms.to_string());
    }
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

/// The SEC1 public key of a DER certificate (an SVID's ECDSA P-256 key): what the
/// committee's signatures and the audit trail are checked against.
fn public_key(der: &[u8], path: &Path) -> anyhow::Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("{} does not parse as X.509: {e}", path.display()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Open the trail in `dir`, or create it for `info` with the initial model stored.
fn open_trail(
    dir: &Path,
    info: &ChainInfo,
    initial: &[f32],
) -> anyhow::Result<(AuditTrail, Vec<f32>)> {
    let fix = "give another --audit directory, or remove the trail of another federation";
    if !dir.join(x0tta6bl4_fl::audit::CHAIN_FILE).exists() {
        let trail = AuditTrail::create(dir, info.clone())
            .map_err(|e| problem(Exit::Failure, e.what, e.place.display(), fix))?;
        trail
            .store_model(initial)
            .map_err(|e| problem(Exit::Failure, e.what, e.place.display(), fix))?;
        return Ok((trail, initial.to_vec()));
    }
    let (trail, _) = AuditTrail::open(dir).map_err(|e| {
        let place = match e.block {
            Some(h) => format!("block {h}, {}", e.place.display()),
            None => e.place.display().to_string(),
        };
        problem(Exit::Failure, e.what, place, fix)
    })?;
    if trail.info() != info {
        return Err(problem(
            Exit::Usage,
            "the audit trail is of another chain (chain id, f, epoch length or members differ)",
            dir.display(),
            fix,
        )
        .into());
    }
    let model = match trail
        .records()
        .iter()
        .rev()
        .find(|r| r.block.decision.handover.is_none())
    {
        Some(r) => trail
            .model(&r.block.decision.model_hash)
            .map_err(|e| problem(Exit::Failure, e.what, e.place.display(), fix))?,
        None => initial.to_vec(),
    };
    Ok((trail, model))
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
    args.rollback.check(args.training.rounds)?;
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
    let mut keys = BTreeMap::new();
    for name in &order {
        let path = args.certs.join(name.as_str()).join("svid.pem");
        let der = leaf_certificate(&path)
            .and_then(|der| Ok((public_key(&der, &path)?, der)))
            .map_err(|e| {
                usage(
                    format!("{e:#}"),
                    "--certs must hold NAME/svid.pem for every node of --order",
                )
            })?;
        keys.insert(name.clone(), der.0);
        credentials.insert(name.clone(), der.1);
    }
    let auth: Arc<dyn x0tta6bl4_fl::Authenticator> = Arc::from(identity.authenticator());
    let signer = Arc::new(AuthSigner::new(auth.clone(), credentials));
    let committee = args.committee.config(order.clone());
    committee.check().map_err(|e| {
        usage(
            e,
            "give --committee-f with 3f+1 at most the number of nodes",
        )
    })?;
    let info = ChainInfo {
        chain_id: committee.chain_id.clone(),
        f: committee.f,
        epoch_len: committee.epoch_len,
        members: keys
            .iter()
            .map(|(name, key)| Member {
                name: name.clone(),
                credential: hex::encode(key),
            })
            .collect(),
    };
    let verifier = info
        .verifier(Arc::new(PublicKeys))
        .map_err(|e| usage(e, "check the SVIDs in --certs"))?;
    let dir = args.training.data_dir();
    let train = Arc::new(load(&dir, &args.training.dataset, "train")?);
    let test = Arc::new(load(&dir, &args.training.dataset, "test")?);
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
    let mut trainer = CandleTrainer {
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
        committee,
        train_outside: true,
    };
    let audit_dir = args
        .audit
        .clone()
        .unwrap_or_else(|| args.identity.join("fl-audit"));
    let (mut trail, model) = open_trail(&audit_dir, &info, &initial)?;
    // An API with mutual TLS (`https://`) is reached with this node's own SVID.
    let svid = args
        .api
        .starts_with("https://")
        .then_some(args.identity.as_path());
    let api = Api::with_svid(&args.api, svid)?;
    let clock = std::time::Instant::now();
    let now = || Instant::from_micros(clock.elapsed().as_micros() as u64);
    let evaluated = test.clone();
    let mut role = MeshRole::new(
        cfg,
        model,
        Box::new(x0tta6bl4_fl::mesh::Outside),
        signer,
        auth,
        verifier,
        &trail.blocks(),
        now(),
    )
    .map_err(|e| usage(e, "check --order, the timeouts and the audit trail"))?
    .with_evaluator(Box::new(move |m| model::accuracy(spec, m, &evaluated).ok()))
    .with_model_store({
        // Every committed model is in the trail (stored before its block).
        let dir = audit_dir.clone();
        Box::new(move |hash| AuditTrail::read_model(&dir, hash).ok())
    });
    if let Some((after, to)) = args.rollback.plan() {
        role = role.with_rollback(after, to, &trail.blocks());
    }
    emit(
        &me,
        0,
        "started",
        json!({
            "rank": rank,
            "rows": parts[rank].len(),
            "audit": audit_dir.display().to_string(),
            "committee": role.replica().committee().iter().map(NodeName::as_str).collect::<Vec<_>>(),
        }),
    );
    // Local training runs on its own thread: the loop below keeps handling frames
    // (committee votes among them) while a round's model trains.
    let (jobs, job_queue) = std::sync::mpsc::channel::<TrainJob>();
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for job in job_queue {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(job.seed);
            let result = trainer.train(&job.model, job.flip_labels, &mut rng);
            if results_tx.send((job.round, result)).is_err() {
                break;
            }
        }
    });
    let mut after = 0u64;
    let mut dropped = 0u64;
    let mut done_at: Option<std::time::Instant> = None;
    let mut send_failures: BTreeMap<NodeName, u64> = BTreeMap::new();
    loop {
        while let Some(job) = role.poll_train() {
            let _ = jobs.send(job);
        }
        while let Some(t) = role.poll_transmit() {
            if let Err(e) = api.channel_send(FL_CHANNEL, t.to.as_str(), t.bytes).await {
                // Sends to a dead node fail until the committee stops drawing it: one
                // line per destination, then every 100th failure.
                let count = send_failures.entry(t.to.clone()).or_insert(0u64);
                *count += 1;
                if *count % 100 == 1 {
                    let t_ms = clock.elapsed().as_millis() as u64;
                    emit(
                        &me,
                        t_ms,
                        "send_failed",
                        json!({ "to": t.to.as_str(), "failures": *count, "error": format!("{e:#}") }),
                    );
                }
            }
        }
        while let Some(event) = role.poll_event() {
            let t_ms = clock.elapsed().as_millis() as u64;
            if let MeshEvent::Committed { block, qc, model } = event {
                append(&mut trail, block.clone(), qc.clone(), &model)?;
                emit(&me, t_ms, "committed", committed_fields(&block, qc.view));
            } else {
                report(&me, t_ms, event, spec, &test);
            }
        }
        if role.is_done() && done_at.is_none() {
            emit(
                &me,
                clock.elapsed().as_millis() as u64,
                "done",
                json!({ "round": role.adopted().0, "height": role.state().height }),
            );
            done_at = Some(std::time::Instant::now());
        }
        // Done: stay a moment for the validators still committing the last block.
        if done_at.is_some_and(|t| t.elapsed() >= LINGER) {
            return Ok(ExitCode::SUCCESS);
        }
        let wait = role
            .poll_timeout()
            .map_or(POLL_WAIT_MAX, |t| t.saturating_since(now()))
            .min(POLL_WAIT_MAX);
        let polled = tokio::select! {
            polled = api.channel_messages(FL_CHANNEL, after, wait.as_millis() as u64) => polled,
            Some((round, result)) = results.recv() => {
                role.trained(now(), round, result);
                continue;
            }
        };
        match polled {
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

/// Store a committed block's model and append the block, durable before the model is
/// used.
fn append(
    trail: &mut AuditTrail,
    block: Block,
    qc: QuorumCertificate,
    model: &[f32],
) -> anyhow::Result<()> {
    let fail = |e: x0tta6bl4_fl::audit::AuditError| -> anyhow::Error {
        problem(
            Exit::Failure,
            e.what,
            e.place.display(),
            "check the disk (space, permissions); the committed blocks are safe at the other nodes",
        )
        .into()
    };
    trail.store_model(model).map_err(fail)?;
    trail.append(Record { block, qc }).map_err(fail)
}

fn committed_fields(block: &Block, view: u64) -> Value {
    let d = &block.decision;
    json!({
        "height": block.height,
        "round": d.round,
        "model_hash": d.model_hash.hex(),
        "coordinator": d.coordinator.as_ref().map(NodeName::as_str),
        "participants": d.participants.len(),
        "accuracy": d.accuracy,
        "view": view,
        "rollback_to": d.rollback_to,
        "handover": d.handover.as_ref().map(|h| json!({
            "replaces": h.replaces.as_str(),
            "model_version": h.model_version,
        })),
    })
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
        MeshEvent::RollbackProposed { to, model } => emit(
            me,
            t_ms,
            "rollback_proposed",
            json!({ "to": to, "model_hash": model.hex() }),
        ),
        MeshEvent::RollbackRefused { to, reason } => emit(
            me,
            t_ms,
            "rollback_refused",
            json!({ "to": to, "reason": reason }),
        ),
        MeshEvent::HandoverProposed { silent, successor } => emit(
            me,
            t_ms,
            "handover_proposed",
            json!({ "silent": silent.as_str(), "successor": successor.as_str() }),
        ),
        MeshEvent::ViewChanged { height, view } => emit(
            me,
            t_ms,
            "view_changed",
            json!({ "height": height, "view": view }),
        ),
        MeshEvent::Committed { block, qc, .. } => {
            emit(me, t_ms, "committed", committed_fields(&block, qc.view))
        }
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
    /// Node processes (and agents) to start (7 to 100: the committee, f = 2, outlives
    /// both kills).
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
    /// Silence of the coordinator after which the nodes ask the committee for a
    /// coordinator change, in milliseconds (default 5000 on digits, 60000 on mnist:
    /// longer than a round).
    #[arg(long, value_name = "MS")]
    pub failover_ms: Option<u64>,
    /// Print one JSON object instead of the round lines and summary.
    ///
    /// Keys: nodes, dataset, rounds, seed, order, committee_f, kills [{node, role,
    /// after_round, at_ms}], rounds_run [{round, height, coordinator, accuracy,
    /// updates, at_ms}] (committed rounds), accuracy_per_round, coordinator_per_round,
    /// final_accuracy, handovers [{node, replaces, height, model_version, first_round,
    /// at_ms, ms_after_kill}] (committed coordinator changes), handover_ms (coordinator
    /// kill to the committed change), resumed_ms (kill to the first round committed
    /// under the new coordinator), aborted_rounds (started, never committed),
    /// view_changes, heights, trails [{node, blocks, verified, torn_bytes, error}],
    /// trail_conflicts (heights where two trails hold different blocks), trails_agree,
    /// rollbacks [{height, to, model_hash, coordinator, at_ms, adopted_by}] (committed
    /// rollbacks and the nodes that adopted each), rollback_refused (coordinators that
    /// would not ask for the planned rollback, and why), rolled_back (the planned
    /// rollback committed and adopted by every node up; null when none was planned),
    /// continued (false also when rolled_back is false), seconds.
    #[arg(long)]
    pub json: bool,
    /// Keep the temporary directory (CA, SVIDs, configs, node and agent logs, every
    /// node's audit trail in NODE/fl-audit).
    #[arg(long)]
    pub keep_dir: bool,
    #[command(flatten)]
    pub committee: CommitteeArgs,
    #[command(flatten)]
    pub rollback: RollbackPlan,
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

/// One committed round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRun {
    round: u64,
    height: u64,
    coordinator: String,
    accuracy: Option<f64>,
    updates: usize,
    at_ms: u64,
}

/// A committed coordinator change.
#[derive(Clone, Debug, Serialize)]
pub struct Handover {
    node: String,
    replaces: String,
    height: u64,
    model_version: u64,
    first_round: u64,
    at_ms: u64,
    ms_after_kill: Option<u64>,
}

/// A committed rollback and the nodes that adopted it.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackRun {
    height: u64,
    to: u64,
    model_hash: String,
    coordinator: String,
    at_ms: u64,
    adopted_by: Vec<String>,
}

/// One node's audit trail after the run.
#[derive(Clone, Debug, Serialize)]
pub struct TrailCheck {
    node: String,
    blocks: usize,
    verified: bool,
    torn_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What `fl run` reports.
#[derive(Debug, Serialize)]
pub struct RunReport {
    nodes: usize,
    dataset: String,
    rounds: u64,
    seed: u64,
    order: Vec<String>,
    committee_f: usize,
    kills: Vec<Kill>,
    rounds_run: Vec<RoundRun>,
    accuracy_per_round: Vec<Option<f64>>,
    coordinator_per_round: Vec<String>,
    final_accuracy: Option<f64>,
    handovers: Vec<Handover>,
    handover_ms: Option<u64>,
    resumed_ms: Option<u64>,
    aborted_rounds: Vec<u64>,
    view_changes: u64,
    heights: u64,
    trails: Vec<TrailCheck>,
    trail_conflicts: u64,
    trails_agree: bool,
    rollbacks: Vec<RollbackRun>,
    /// Nodes that would not ask for the planned rollback, and why.
    rollback_refused: Vec<String>,
    /// Whether the planned rollback was committed and adopted by every node up (`None`:
    /// none was planned).
    rolled_back: Option<bool>,
    continued: bool,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
}

/// Start a mesh, train over it, kill a participant and the coordinator's host.
pub async fn run(args: FlRunArgs) -> anyhow::Result<ExitCode> {
    args.training.check()?;
    args.rollback.check(args.training.rounds)?;
    if !(7..=crate::demo::setup::NODES_MAX).contains(&args.nodes) {
        return Err(problem(
            Exit::Usage,
            format!("--nodes {} is out of range", args.nodes),
            "x0tta6bl4 fl run",
            "use 7 to 100 nodes: the committee (3f+1 = 7 for f = 2) must outlive both kills",
        )
        .into());
    }
    let f = args.committee.f(args.nodes);
    if f < 2 || 3 * f + 1 > args.nodes {
        return Err(problem(
            Exit::Usage,
            format!("--committee-f {f} for {} nodes", args.nodes),
            "x0tta6bl4 fl run",
            "give f >= 2 (two nodes are killed) with 3f+1 at most --nodes",
        )
        .into());
    }
    if args.committee.epoch_len == 0 || args.committee.view_timeout_ms == 0 {
        return Err(problem(
            Exit::Usage,
            "--epoch-len and --view-timeout-ms must be at least 1",
            "x0tta6bl4 fl run",
            "give e.g. --epoch-len 4 --view-timeout-ms 1000",
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
        "{} rounds of {} committed over {} node processes (committee f = {}, {} blocks), final accuracy {accuracy}\n",
        r.rounds_run.len(),
        r.dataset,
        r.nodes,
        r.committee_f,
        r.heights
    ));
    for k in &r.kills {
        out.push_str(&format!(
            "killed {} ({}) after round {}\n",
            k.node, k.role, k.after_round
        ));
    }
    for h in &r.handovers {
        let after = h
            .ms_after_kill
            .map_or(String::new(), |ms| format!(", {ms} ms after the kill"));
        out.push_str(&format!(
            "committee committed block {}: {} coordinates from round {} at model version {} ({} silent{after})\n",
            h.height, h.node, h.first_round, h.model_version, h.replaces
        ));
    }
    if let Some(ms) = r.resumed_ms {
        out.push_str(&format!(
            "first round under the new coordinator committed {ms} ms after the kill\n"
        ));
    }
    for b in &r.rollbacks {
        out.push_str(&format!(
            "committee committed block {}: rollback to version {} (model {}), asked by {}, adopted by {} nodes\n",
            b.height,
            b.to,
            b.model_hash.get(..12).unwrap_or(&b.model_hash),
            b.coordinator,
            b.adopted_by.len()
        ));
    }
    for why in &r.rollback_refused {
        out.push_str(&format!("planned rollback not asked for by {why}\n"));
    }
    let verified = r.trails.iter().filter(|t| t.verified).count();
    out.push_str(&format!(
        "audit trails: {verified} of {} verify, {} conflicting heights\n",
        r.trails.len(),
        r.trail_conflicts
    ));
    for t in r.trails.iter().filter(|t| !t.verified) {
        out.push_str(&format!(
            "  {}: {}\n",
            t.node,
            t.error.as_deref().unwrap_or("")
        ));
    }
    out.push_str(if r.continued {
        "training continued after both kills"
    } else if r.rolled_back == Some(false) {
        "the planned rollback was NOT committed and adopted by every node up"
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
    let mut started_rounds = std::collections::BTreeSet::new();
    let mut heights = std::collections::BTreeSet::new();
    let mut done: std::collections::BTreeSet<String> = Default::default();
    let mut view_changes = 0u64;
    let mut rollbacks: Vec<RollbackRun> = Vec::new();
    let mut rollback_refused: Vec<String> = Vec::new();
    let mut finished_at: Option<tokio::time::Instant> = None;
    loop {
        // After the last round: wait a moment for every live agent to commit it too.
        let until = finished_at.map_or(deadline, |t| (t + Duration::from_secs(8)).min(deadline));
        let live = nodes.len() - kills.len();
        if finished_at.is_some() && done.len() >= live {
            break;
        }
        let line = match tokio::time::timeout_at(until, lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(_) => {
                if !args.json && finished_at.is_none() {
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
            Some("round_started") => {
                started_rounds.insert(event["round"].as_u64().unwrap_or(0));
            }
            Some("view_changed") => view_changes += 1,
            Some("rollback_refused") => {
                let reason = event["reason"].as_str().unwrap_or("");
                rollback_refused.push(format!("{node}: {reason}"));
            }
            Some("done") => {
                done.insert(node.clone());
            }
            Some("committed") => {
                let height = event["height"].as_u64().unwrap_or(0);
                let coordinator = event["coordinator"].as_str().unwrap_or("").to_owned();
                if let Some(to) = event["rollback_to"].as_u64() {
                    // Each node reports the blocks it adopted: count them all.
                    match rollbacks.iter_mut().find(|r| r.height == height) {
                        Some(r) => r.adopted_by.push(node.clone()),
                        None => {
                            if !args.json {
                                println!(
                                    "block {height:>3}  rollback to version {to}, asked by coordinator {coordinator}"
                                );
                            }
                            rollbacks.push(RollbackRun {
                                height,
                                to,
                                model_hash: event["model_hash"].as_str().unwrap_or("").to_owned(),
                                coordinator,
                                at_ms,
                                adopted_by: vec![node.clone()],
                            });
                        }
                    }
                    heights.insert(height);
                    continue;
                }
                if !heights.insert(height) {
                    continue;
                }
                let round = event["round"].as_u64().unwrap_or(0);
                if let Some(h) = event["handover"].as_object() {
                    let kill = kills
                        .iter()
                        .rev()
                        .find(|k| Some(k.node.as_str()) == h["replaces"].as_str());
                    let handover = Handover {
                        node: coordinator.clone(),
                        replaces: h["replaces"].as_str().unwrap_or("").to_owned(),
                        height,
                        model_version: h["model_version"].as_u64().unwrap_or(0),
                        first_round: round + 1,
                        at_ms,
                        ms_after_kill: kill.map(|k| at_ms.saturating_sub(k.at_ms)),
                    };
                    if !args.json {
                        println!(
                            "block {height:>3}  the committee chose {} to coordinate after silent {}, from model version {}",
                            handover.node, handover.replaces, handover.model_version
                        );
                    }
                    handovers.push(handover);
                    continue;
                }
                let r = RoundRun {
                    round,
                    height,
                    coordinator: coordinator.clone(),
                    accuracy: event["accuracy"].as_f64(),
                    updates: event["participants"].as_u64().unwrap_or(0) as usize,
                    at_ms,
                };
                if !args.json {
                    let acc = r
                        .accuracy
                        .map_or("n/a".into(), |a| format!("{:.1} %", a * 100.0));
                    println!(
                        "block {height:>3}  round {:>3}  coordinator {}  accuracy {acc}  updates {}",
                        r.round, r.coordinator, r.updates
                    );
                }
                rounds_run.push(r);
                let victim = if round >= kill_participant_after && kills.is_empty() {
                    Some((participant_victim.clone(), "participant"))
                } else if round >= kill_coordinator_after && kills.len() == 1 {
                    Some((coordinator, "coordinator's host"))
                } else {
                    None
                };
                if let Some((victim, role)) = victim {
                    fleet.kill(&victim)?;
                    if let Some(a) = agents.iter_mut().find(|a| a.name == victim) {
                        a.kill();
                    }
                    done.remove(&victim);
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
                if round >= rounds && finished_at.is_none() {
                    finished_at = Some(tokio::time::Instant::now());
                }
            }
            Some("round_failed") if !args.json => println!(
                "round {:>3}  coordinator {node}  failed: {}",
                event["round"],
                event["reason"].as_str().unwrap_or("")
            ),
            _ => {}
        }
    }
    // Every agent stops; then each node's trail is opened (a torn last line of a
    // killed agent is cut), verified and compared with the others.
    for a in agents.iter_mut() {
        a.kill();
    }
    let (trails, trail_conflicts) = check_trails(dir, &plan.names);
    let trails_agree = trail_conflicts == 0 && trails.iter().all(|t| t.verified);
    let committed: std::collections::BTreeSet<u64> = rounds_run.iter().map(|r| r.round).collect();
    let aborted: Vec<u64> = started_rounds
        .into_iter()
        .filter(|r| !committed.contains(r))
        .collect();
    for h in &mut handovers {
        if let Some(r) = rounds_run.iter().find(|r| r.height > h.height) {
            h.first_round = r.round;
        }
    }
    let coordinator_kill = kills.get(1).cloned();
    let handover = coordinator_kill
        .as_ref()
        .and_then(|k| handovers.iter().find(|h| h.replaces == k.node));
    let resumed = handover.and_then(|h| {
        rounds_run
            .iter()
            .find(|r| r.height > h.height && r.coordinator == h.node)
    });
    // A planned rollback counts once committed and adopted by every node still up.
    let survivors = nodes.len() - kills.len();
    let rolled_back = args.rollback.plan().map(|(_, to)| {
        rollbacks.iter().any(|r| {
            let alive = r
                .adopted_by
                .iter()
                .filter(|n| !kills.iter().any(|k| &k.node == *n))
                .count();
            r.to == to && alive >= survivors
        })
    });
    let continued = kills.len() == 2
        && rounds_run.last().is_some_and(|r| r.round >= rounds)
        && resumed.is_some()
        && trails_agree
        && rolled_back != Some(false);
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunReport {
        nodes: nodes.len(),
        dataset: args.training.dataset.clone(),
        rounds,
        seed: args.training.seed,
        order,
        committee_f: args.committee.f(nodes.len()),
        accuracy_per_round: rounds_run.iter().map(|r| r.accuracy).collect(),
        coordinator_per_round: rounds_run.iter().map(|r| r.coordinator.clone()).collect(),
        final_accuracy: rounds_run.last().and_then(|r| r.accuracy),
        handover_ms: handover.and_then(|h| h.ms_after_kill),
        resumed_ms: resumed
            .zip(coordinator_kill.as_ref())
            .map(|(r, k)| r.at_ms.saturating_sub(k.at_ms)),
        kills,
        rounds_run,
        handovers,
        aborted_rounds: aborted,
        view_changes,
        heights: heights.last().copied().unwrap_or(0),
        trails,
        trail_conflicts,
        trails_agree,
        rollbacks,
        rollback_refused,
        rolled_back,
        continued,
        seconds,
        dir: None,
    })
}

/// Open, verify and compare every node's audit trail (DIR/NODE/fl-audit): the checks,
/// and the number of heights at which two trails hold different blocks.
fn check_trails(dir: &Path, names: &[String]) -> (Vec<TrailCheck>, u64) {
    let mut by_height: BTreeMap<u64, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut checks = Vec::new();
    for node in names {
        let path = dir.join(node).join("fl-audit");
        let mut check = TrailCheck {
            node: node.clone(),
            blocks: 0,
            verified: false,
            torn_bytes: 0,
            error: None,
        };
        match AuditTrail::open(&path) {
            Ok((trail, opened)) => {
                check.torn_bytes = opened.torn_bytes;
                check.blocks = trail.records().len();
                for r in trail.records() {
                    by_height
                        .entry(r.block.height)
                        .or_default()
                        .insert(r.block.hash().hex());
                }
                drop(trail);
                match AuditTrail::verify(&path, Arc::new(PublicKeys)) {
                    Ok(_) => check.verified = true,
                    Err(e) => check.error = Some(e.to_string()),
                }
            }
            Err(e) => check.error = Some(e.to_string()),
        }
        checks.push(check);
    }
    let conflicts = by_height.values().filter(|h| h.len() > 1).count() as u64;
    (checks, conflicts)
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
        .arg(MESH_PAYLOAD_MAX.to_string())
        .arg("--audit")
        .arg(dir.join(&node.name).join("fl-audit"));
    args.training.push_args(&mut command);
    args.committee.push_args(&mut command, order.len());
    args.rollback.push_args(&mut command);
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
