//! `x0tta6bl4 fl committee-bench | models | show | rollback | verify`: the committee
//! that commits model versions and the audit trail it writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use x0tta6bl4_fl::audit::{model_hash, AuditError, AuditTrail, ChainInfo, Member, Record};
use x0tta6bl4_fl::committee::{CommitteeConfig, Decision, Verifier};
use x0tta6bl4_fl::committee_sim::{self, commit_in_process};
use x0tta6bl4_fl::keys::{EcdsaKey, PublicKeys};
use x0tta6bl4_fl::{Authenticator, NodeName, Refusal, RoundSummary};

use crate::problem::{problem, Exit};

/// Directory of the committee's private keys inside an audit directory.
const KEYS_DIR: &str = "keys";
/// Candidates of the in-process committee.
const CANDIDATES: usize = 6;
/// Heights per epoch of the in-process committee.
const EPOCH_LEN: u64 = 5;

/// `fl committee-bench`.
#[derive(Debug, Args)]
pub struct CommitteeBenchArgs {
    /// Seeds per configuration (f = 1 of 4 and f = 2 of 7).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub first_seed: u64,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Where an audit trail lives.
#[derive(Debug, Args)]
pub struct AuditDirArgs {
    /// The audit directory (`fl bench --audit DIR` writes it).
    #[arg(long, value_name = "DIR", default_value = "fl-audit")]
    pub audit: PathBuf,
}

/// `fl show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The version (block height) to show.
    #[arg(value_name = "VERSION")]
    pub model_version: u64,
    #[command(flatten)]
    pub dir: AuditDirArgs,
}

/// `fl rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The version whose model becomes current again.
    #[arg(value_name = "VERSION")]
    pub model_version: u64,
    #[command(flatten)]
    pub dir: AuditDirArgs,
}

/// `fl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dir: AuditDirArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `fl models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub dir: AuditDirArgs,
    /// Print JSON (one array).
    #[arg(long)]
    pub json: bool,
}

fn audit_problem(e: AuditError, fix: &str) -> anyhow::Error {
    let place = match e.block {
        Some(h) => format!("block {h}, {}", e.place.display()),
        None => e.place.display().to_string(),
    };
    problem(Exit::Failure, e.what, place, fix).into()
}

/// Run `fl committee-bench`: exit 1 when a configuration saw a conflicting commit or a
/// leader crash took more than 1 s of simulated time to commit.
pub fn committee_bench(args: &CommitteeBenchArgs) -> anyhow::Result<ExitCode> {
    if args.seeds == 0 {
        return Err(problem(Exit::Usage, "--seeds 0", "--seeds", "give at least 1").into());
    }
    let started = std::time::Instant::now();
    let mut safety = Vec::new();
    let mut crash = Vec::new();
    for f in [1, 2] {
        safety.push(committee_sim::safety_sweep(f, args.first_seed, args.seeds));
        crash.push(committee_sim::crash_sweep(f, args.first_seed, args.seeds));
    }
    let conflicts: u64 = safety.iter().map(|s| s.conflicting_commits).sum();
    let slow = crash.iter().any(|c| {
        c.committed < c.seeds || c.first_commit_ms_max.is_nan() || c.first_commit_ms_max > 1000.0
    });
    if args.json {
        let out = serde_json::json!({
            "safety": safety,
            "leader_crash": crash,
            "conflicting_commits": conflicts,
            "leader_crash_within_1s": !slow,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{out}");
    } else {
        for s in &safety {
            println!(
                "f = {} of {} ({} candidates), {} seeds x {} heights: {} conflicting commits; {} runs completed; {} with equivocation, {} with a partition; {} view changes, {} conflicting messages forged by equivocators, {} refused as equivocation",
                s.f, s.committee, s.candidates, s.seeds, s.heights_per_run, s.conflicting_commits,
                s.runs_completed, s.runs_with_equivocation, s.runs_with_partition, s.view_changes,
                s.forged_messages, s.equivocations_refused
            );
        }
        for c in &crash {
            println!(
                "f = {}: leader crash, {} seeds: committed in {}; crash to first commit p50 {:.0} ms, max {:.0} ms; to every live replica p50 {:.0} ms, max {:.0} ms (view timeout {} ms)",
                c.f, c.seeds, c.committed, c.first_commit_ms_p50, c.first_commit_ms_max,
                c.all_committed_ms_p50, c.all_committed_ms_max, c.view_timeout_ms
            );
        }
        println!("{:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(if conflicts == 0 && !slow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The in-process committee of an audit directory: its chain settings and the keys
/// stored in DIR/keys.
pub struct LocalCommittee {
    trail: AuditTrail,
    keys: Vec<(NodeName, Arc<dyn Authenticator>)>,
}

impl LocalCommittee {
    /// Open the trail in `dir`, or create it with fresh keys for [`CANDIDATES`]
    /// validators (f = 1).
    pub fn open_or_create(dir: &Path) -> anyhow::Result<LocalCommittee> {
        let fix =
            "check the directory, or run `x0tta6bl4 fl verify --audit DIR` to see what is wrong";
        let trail = if dir.join(x0tta6bl4_fl::audit::CHAIN_FILE).exists() {
            let (trail, opened) = AuditTrail::open(dir).map_err(|e| audit_problem(e, fix))?;
            if opened.torn_bytes > 0 {
                eprintln!(
                    "x0tta6bl4: cut {} bytes of a block whose write was interrupted ({})",
                    opened.torn_bytes,
                    dir.display()
                );
            }
            trail
        } else {
            let keys_dir = dir.join(KEYS_DIR);
            std::fs::create_dir_all(&keys_dir).map_err(|e| {
                problem(
                    Exit::Usage,
                    format!("cannot create the audit directory: {e}"),
                    keys_dir.display(),
                    "choose a directory you can write to",
                )
            })?;
            let mut members = Vec::new();
            for i in 0..CANDIDATES {
                let name = NodeName::new(&format!("validator-{i}")).expect("valid name");
                let (key, pkcs8) = EcdsaKey::generate().map_err(anyhow::Error::msg)?;
                let path = keys_dir.join(format!("{name}.pk8"));
                write_private(&path, &pkcs8)?;
                members.push(Member {
                    name,
                    credential: hex::encode(key.public_key()),
                });
            }
            let info = ChainInfo {
                chain_id: format!("x0tta6bl4-fl-{}", std::process::id()),
                f: 1,
                epoch_len: EPOCH_LEN,
                members,
            };
            AuditTrail::create(dir, info).map_err(|e| audit_problem(e, fix))?
        };
        let mut keys = Vec::new();
        for m in &trail.info().members {
            let path = dir.join(KEYS_DIR).join(format!("{}.pk8", m.name));
            let Ok(der) = std::fs::read(&path) else {
                continue; // a validator whose key is elsewhere
            };
            let key = EcdsaKey::from_pkcs8(&der)
                .map_err(|e| problem(Exit::Failure, e, path.display(), "restore the key file"))?;
            if hex::encode(key.public_key()) != m.credential {
                return Err(problem(
                    Exit::Failure,
                    format!("key of {} does not match chain.json", m.name),
                    path.display(),
                    "restore the key file that belongs to this trail",
                )
                .into());
            }
            keys.push((m.name.clone(), Arc::new(key) as Arc<dyn Authenticator>));
        }
        Ok(LocalCommittee { trail, keys })
    }

    /// The trail.
    pub fn trail(&self) -> &AuditTrail {
        &self.trail
    }

    /// Commit `decision` (its model stored first) and append the block.
    pub fn commit(&mut self, decision: Decision) -> Result<Record, String> {
        let info = self.trail.info().clone();
        let cfg = CommitteeConfig {
            chain_id: info.chain_id.clone(),
            candidates: info.candidates(),
            f: info.f,
            epoch_len: info.epoch_len,
            view_timeout: Duration::from_millis(200),
            resend: Duration::from_millis(100),
        };
        let verifier: Verifier = info.verifier(Arc::new(PublicKeys))?;
        let (block, qc) =
            commit_in_process(&cfg, &self.keys, &verifier, &self.trail.blocks(), decision)?;
        let record = Record { block, qc };
        self.trail
            .append(record.clone())
            .map_err(|e| e.to_string())?;
        Ok(record)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            problem(
                Exit::Usage,
                format!("cannot write a committee key: {e}"),
                path.display(),
                "use an empty directory for a new audit trail",
            )
        })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Commits each adopted round of `fl bench --audit` and logs refused updates.
pub struct AuditObserver {
    pub committee: LocalCommittee,
    pub committed: u64,
}

impl x0tta6bl4_fl::bench::Observer for AuditObserver {
    fn refused(&mut self, round: u64, from: &NodeName, reason: &Refusal) {
        crate::fl_cmd::log_refusal(round, from, reason);
    }

    fn adopted(
        &mut self,
        s: &RoundSummary,
        model: &[f32],
        accuracy: f64,
        aggregator: &str,
    ) -> Result<(), String> {
        let hash = self
            .committee
            .trail
            .store_model(model)
            .map_err(|e| e.to_string())?;
        debug_assert_eq!(hash, model_hash(model));
        let decision = Decision {
            round: s.round,
            model_hash: hash,
            participants: s.aggregated.clone(),
            aggregator: aggregator.to_string(),
            suspected: s.suspected.clone(),
            epsilon: s.epsilon,
            accuracy: Some(accuracy),
            rollback_to: None,
            coordinator: None,
            handover: None,
            signed: None,
        };
        self.committee.commit(decision)?;
        self.committed += 1;
        Ok(())
    }
}

fn open_trail(dir: &Path) -> anyhow::Result<AuditTrail> {
    // Read only: a torn tail is reported by `fl verify` and cut by the next writer.
    let trail = AuditTrail::read_only(dir).map_err(|e| {
        audit_problem(
            e,
            "run `x0tta6bl4 fl verify --audit DIR`; restore the directory from a copy if it is damaged",
        )
    })?;
    Ok(trail)
}

/// Version `number` of `trail` (stored in `dir`), or the usage error naming the versions
/// there are.
fn version<'t>(trail: &'t AuditTrail, number: u64, dir: &Path) -> anyhow::Result<&'t Record> {
    trail.get(number).ok_or_else(|| {
        problem(
            Exit::Usage,
            format!("no version {number}"),
            dir.display(),
            format!(
                "versions are 1 to {} (`x0tta6bl4 fl models`)",
                trail.records().len()
            ),
        )
        .into()
    })
}

fn row(r: &Record) -> serde_json::Value {
    let d = &r.block.decision;
    serde_json::json!({
        "version": r.block.height,
        "round": d.round,
        "model": d.model_hash,
        "accuracy": d.accuracy,
        "epsilon": d.epsilon,
        "aggregator": d.aggregator,
        "participants": d.participants.len(),
        "suspected": d.suspected.len(),
        "rollback_to": d.rollback_to,
        "coordinator": d.coordinator,
        "handover": d.handover,
        "signed_by": d.signed.as_ref().map(|s| s.by.to_string()),
        "epoch": r.block.epoch,
        "view": r.qc.view,
        "signers": r.qc.commits.iter().map(|v| v.from.to_string()).collect::<Vec<_>>(),
    })
}

/// A version's note: a rollback, or a coordinator change committed over the mesh.
fn note(d: &Decision) -> String {
    match (&d.rollback_to, &d.handover, &d.coordinator) {
        (Some(v), _, _) => format!("rollback to {v}"),
        (None, Some(h), Some(to)) => format!(
            "coordinator change: {to} after silent {}, from version {}",
            h.replaces, h.model_version
        ),
        _ => String::new(),
    }
}

/// `fl models`.
pub fn models(args: &ModelsArgs) -> anyhow::Result<ExitCode> {
    let trail = open_trail(&args.dir.audit)?;
    if args.json {
        let rows: Vec<_> = trail.records().iter().map(row).collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>7}  {:>5}  {:<12}  {:>8}  {:>8}  {:<12}  {:>5}  {:>4}  note",
        "version", "round", "model", "accuracy", "epsilon", "aggregator", "parts", "susp"
    );
    for r in trail.records() {
        let d = &r.block.decision;
        println!(
            "{:>7}  {:>5}  {:<12}  {:>8}  {:>8}  {:<12}  {:>5}  {:>4}  {}",
            r.block.height,
            d.round,
            &d.model_hash.hex()[..12],
            accuracy_cell(d.accuracy),
            d.epsilon
                .map(|e| format!("{e:.3}"))
                .unwrap_or_else(|| "-".into()),
            d.aggregator,
            d.participants.len(),
            d.suspected.len(),
            note(d)
        );
    }
    if trail.records().is_empty() {
        println!("(no committed versions yet)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `fl show VERSION`.
pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let trail = open_trail(&args.dir.audit)?;
    let r = version(&trail, args.model_version, &args.dir.audit)?;
    let params = trail
        .model(&r.block.decision.model_hash)
        .map(|m| m.len())
        .map_err(|e| audit_problem(e, "the model file is missing or damaged; run `fl verify`"))?;
    let out = serde_json::json!({
        "version": r.block.height,
        "block_hash": r.block.hash(),
        "block": r.block,
        "certificate": r.qc,
        "parameters": params,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// `fl rollback VERSION`: commit a decision that re-adopts VERSION's model.
pub fn rollback(args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    if !args
        .dir
        .audit
        .join(x0tta6bl4_fl::audit::CHAIN_FILE)
        .exists()
    {
        return Err(problem(
            Exit::Usage,
            "no audit trail",
            args.dir.audit.display(),
            "run `x0tta6bl4 fl bench --audit DIR` first",
        )
        .into());
    }
    if !args.dir.audit.join(KEYS_DIR).is_dir() {
        return Err(problem(
            Exit::Usage,
            "no committee keys: this trail was written over the mesh (by `fl agent`)",
            args.dir.audit.display(),
            "over the mesh a rollback is the nodes' committee's decision: plan it with \
             `x0tta6bl4 fl run --rollback-after R --rollback-to VERSION` (or the same flags \
             on every `fl agent`)",
        )
        .into());
    }
    let mut committee = LocalCommittee::open_or_create(&args.dir.audit)?;
    let target = version(committee.trail(), args.model_version, &args.dir.audit)?.clone();
    committee
        .trail()
        .model(&target.block.decision.model_hash)
        .map_err(|e| {
            audit_problem(
                e,
                "the model to roll back to is damaged; pick another version",
            )
        })?;
    let last_round = committee.trail().tip().map_or(0, |b| b.decision.round);
    let d = &target.block.decision;
    let decision = Decision {
        round: last_round,
        model_hash: d.model_hash,
        participants: Vec::new(),
        aggregator: d.aggregator.clone(),
        suspected: Vec::new(),
        epsilon: committee.trail().tip().and_then(|b| b.decision.epsilon),
        accuracy: d.accuracy,
        rollback_to: Some(args.model_version),
        coordinator: None,
        handover: None,
        signed: None,
    };
    let record = committee.commit(decision).map_err(|e| {
        problem(
            Exit::Failure,
            format!("the committee did not commit the rollback: {e}"),
            args.dir.audit.display(),
            "check that the keys in DIR/keys belong to this trail",
        )
    })?;
    println!(
        "version {} committed: rollback to version {} (model {}), certificate of {} signatures",
        record.block.height,
        args.model_version,
        d.model_hash,
        record.qc.commits.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `fl verify`.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    match AuditTrail::verify(&args.dir.audit, Arc::new(PublicKeys)) {
        Ok(blocks) => {
            if args.json {
                println!("{}", serde_json::json!({"ok": true, "blocks": blocks}));
            } else {
                println!(
                    "{blocks} blocks verified: checksums, hash chain, every certificate's signatures against its epoch's committee, proposer signatures, rollbacks and model hashes ({})",
                    args.dir.audit.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "block": e.block, "file": e.place, "error": e.what})
                );
                return Ok(ExitCode::from(1));
            }
            Err(audit_problem(
                e,
                "the trail is damaged or forged; restore it from a copy (nothing was changed)",
            ))
        }
    }
}

/// An accuracy in a table: a percentage, or `-` where none was measured.
pub(crate) fn accuracy_cell(accuracy: Option<f64>) -> String {
    accuracy.map_or_else(|| "-".to_owned(), |a| format!("{:.2} %", 100.0 * a))
}
