//! `x0tta6bl4 twin fl`: federated learning in the digital twin
//! ([`x0tta6bl4_twin::fl`] does the work; this module reads the arguments and the data
//! set and prints the report).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_fl::bench::AggregatorChoice;
use x0tta6bl4_fl::data::{default_data_dir, Dataset};
use x0tta6bl4_twin::fl::{
    byzantine_sweep, run_fl, ByzantineSweep, FlData, FlError, FlOptions, FlReport, Partition,
};
use x0tta6bl4_twin::scenario::parse_params;

use crate::args::{TwinFlArgs, TwinFlByzantineArgs};
use crate::fl_chain_cmd::accuracy_cell;
use crate::problem::{problem, Exit};

fn usage(what: impl Into<String>, place: &str, fix: impl Into<String>) -> anyhow::Error {
    problem(Exit::Usage, what, place, fix).into()
}

fn seconds(v: f64, place: &str) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(usage(
            format!("{v} is not a time in seconds"),
            place,
            "give a number of seconds, 0 or more",
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parse `at=S,for=S[,fraction=F]`.
fn partition(spec: &str) -> anyhow::Result<Partition> {
    let place = format!("--partition {spec}");
    let fix = "give --partition at=SECONDS,for=SECONDS[,fraction=F], e.g. at=5,for=10,fraction=0.3";
    let params = parse_params(spec, spec, &["at", "for", "fraction"])
        .map_err(|e| usage(e.reason, &place, fix))?;
    let (Some(&at), Some(&duration)) = (params.get("at"), params.get("for")) else {
        return Err(usage("a partition needs at= and for=", &place, fix));
    };
    Ok(Partition {
        at: seconds(at, &place)?,
        duration: seconds(duration, &place)?,
        fraction: params.get("fraction").copied().unwrap_or(0.3),
    })
}

fn options(args: &TwinFlArgs, nodes: usize) -> anyhow::Result<FlOptions> {
    let mut o = FlOptions::new(args.seed);
    o.rounds = args.rounds;
    o.participants_per_round = args.participants_per_round;
    o.stragglers = args.stragglers;
    o.straggler_factor = args.straggler_factor;
    o.dropouts = args.dropouts;
    o.compute_per_sample = seconds(args.compute_per_sample_ms / 1e3, "--compute-per-sample-ms")?;
    o.epochs = args.epochs;
    o.batch = args.batch;
    o.lr = args.lr;
    o.round_timeout = Duration::from_millis(args.round_timeout_ms);
    o.failover_after = Duration::from_millis(args.failover_ms);
    o.committee_f = args
        .committee_f
        .unwrap_or_else(|| 2.min(nodes.saturating_sub(1) / 3));
    o.epoch_len = args.epoch_len;
    o.view_timeout = Duration::from_millis(args.view_timeout_ms.max(1));
    o.partition = args.partition.as_deref().map(partition).transpose()?;
    o.crash_coordinator_at = args
        .crash_coordinator_at_s
        .map(|s| seconds(s, "--crash-coordinator-at-s"))
        .transpose()?;
    o.sim_limit = Duration::from_secs(args.sim_limit_s);
    o.byzantine_validators = args.byzantine_validators;
    o.byzantine_mode = args.byzantine_mode.parse().map_err(|e: String| {
        usage(
            e,
            "--byzantine-mode",
            "give equivocate, silent, delay or mixed",
        )
    })?;
    o.crash_leader_at_round = args.crash_leader_at_round;
    o.attack = args.attack.parse().map_err(|e: String| {
        usage(
            e,
            "--attack",
            "give sign-flip, gaussian, label-flip, alie, ipm, inflate-samples or none",
        )
    })?;
    o.attackers = args.attackers;
    let choice: AggregatorChoice = args.aggregator.parse().map_err(|e: String| {
        usage(
            e,
            "--aggregator",
            "give fedavg, median, trimmed-mean, krum, multi-krum or bulyan",
        )
    })?;
    if choice == AggregatorChoice::FlTrust {
        return Err(usage(
            "fltrust needs a clean root set at the coordinator, which the twin's coordinators do not hold",
            "--aggregator",
            "use median, trimmed-mean, krum, multi-krum or bulyan (`fl bench` runs fltrust)",
        ));
    }
    let per_round = args.participants_per_round.max(1);
    let f = ((args.attackers * per_round as f64).ceil() as usize).max(1);
    if choice == AggregatorChoice::Bulyan && per_round < 4 * f + 3 {
        return Err(usage(
            format!(
                "bulyan with f = {f} needs at least {} updates per round",
                4 * f + 3
            ),
            "--aggregator bulyan",
            "sample more participants per round, or use another rule",
        ));
    }
    let beta = (f as f64 / per_round as f64).clamp(0.1, 0.45);
    o.aggregator = choice.with(per_round, f, beta);
    Ok(o)
}

fn load(data_dir: Option<&std::path::Path>) -> anyhow::Result<FlData> {
    let dir = data_dir.map_or_else(default_data_dir, |d| d.to_path_buf());
    let read = |split: &str| {
        Dataset::load(&dir, "digits", split).map_err(|e| {
            usage(
                e.to_string(),
                &dir.display().to_string(),
                "run scripts/fetch-fl-data.py, or give --data-dir / X0TTA6BL4_FL_DATA",
            )
        })
    };
    Ok(FlData {
        train: Arc::new(read("train")?),
        test: Arc::new(read("test")?),
    })
}

/// `x0tta6bl4 twin fl`.
pub async fn run(args: &TwinFlArgs) -> anyhow::Result<ExitCode> {
    let topology = crate::twin_cmd::load_topology(&args.topology, args.nodes, args.seed).await?;
    let opts = options(args, topology.len())?;
    opts.check(topology.len()).map_err(|e| {
        usage(
            e,
            "x0tta6bl4 twin fl",
            "see `x0tta6bl4 twin fl --help` for the options' ranges",
        )
    })?;
    let data = load(args.data_dir.as_deref())?;
    let report = tokio::task::block_in_place(|| run_fl(&topology, &opts, &data)).map_err(
        |e| -> anyhow::Error {
            match e {
                FlError::Options(what) => usage(
                    what,
                    "x0tta6bl4 twin fl",
                    "see `x0tta6bl4 twin fl --help` for the options' ranges",
                ),
                FlError::Mesh(what) => problem(
                    Exit::Failure,
                    what,
                    format!("--topology {}", args.topology),
                    "use a connected topology, or fewer nodes",
                )
                .into(),
            }
        },
    )?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["topology"] = serde_json::Value::String(args.topology.clone());
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(args, &report);
    }
    let complete = report.last_round == report.rounds;
    if !complete || report.conflicting_commits > 0 {
        eprintln!(
            "x0tta6bl4: training {} (twin fl, seed {}): {}",
            if complete {
                "committed conflicting blocks"
            } else {
                "did not finish"
            },
            args.seed,
            if complete {
                "a safety bug: report this seed".to_owned()
            } else {
                format!(
                    "last committed round {} of {}; give a longer --sim-limit-s or milder faults",
                    report.last_round, report.rounds
                )
            }
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `x0tta6bl4 twin fl-byzantine`.
pub async fn byzantine(args: &TwinFlByzantineArgs) -> anyhow::Result<ExitCode> {
    if args.seeds == 0 {
        return Err(usage("--seeds 0", "--seeds", "give at least 1"));
    }
    let data = load(args.data_dir.as_deref())?;
    let started = std::time::Instant::now();
    let sweeps: Vec<ByzantineSweep> = tokio::task::block_in_place(|| {
        [1, 2]
            .into_iter()
            .map(|f| byzantine_sweep(f, args.first_seed, args.seeds, &data))
            .collect()
    });
    let conflicts: u64 = sweeps.iter().map(|s| s.conflicting_commits).sum();
    let within = sweeps
        .iter()
        .all(|s| s.leader_crashes == s.seeds && s.committed_within_1s == s.seeds);
    let complete = sweeps
        .iter()
        .all(|s| s.byzantine_runs_complete == s.seeds && s.crash_runs_complete == s.seeds);
    if args.json {
        let out = serde_json::json!({
            "sweeps": sweeps,
            "conflicting_commits": conflicts,
            "leader_crash_within_1s": within,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{out}");
    } else {
        for s in &sweeps {
            println!(
                "f = {} of {} nodes, {} seeds x {} rounds, f Byzantine validators ({} equivocating, {} silent, {} delaying): {} conflicting commits, {} of {} runs complete; {} conflicting messages forged, {} withheld, {} refused by honest replicas",
                s.f, s.nodes, s.seeds, s.rounds, s.equivocating, s.silent, s.delaying,
                s.conflicting_commits, s.byzantine_runs_complete, s.seeds, s.forged_messages,
                s.withheld_messages, s.refused_by_honest
            );
            println!(
                "f = {} of {} nodes, leader crashed at a round's submission: {} of {} runs complete, {} of {} committed within 1 s of simulated time (mean {:.0} ms, max {:.0} ms)",
                s.f, s.nodes, s.crash_runs_complete, s.seeds, s.committed_within_1s,
                s.leader_crashes, s.commit_ms_mean, s.commit_ms_max
            );
            if !s.failed_seeds.is_empty() {
                println!("failed seeds: {:?}", s.failed_seeds);
            }
        }
        println!(
            "{} seeds in {:.1} s wall clock",
            2 * args.seeds,
            started.elapsed().as_secs_f64()
        );
    }
    if conflicts > 0 || !within || !complete {
        eprintln!(
            "x0tta6bl4: the Byzantine sweep failed (twin fl-byzantine): {} conflicting commits, leader crash within 1 s: {within}, every run complete: {complete}; replay a failed seed with `twin fl --topology ring --nodes 4 --committee-f 1 --byzantine-validators 1 --seed S`",
            conflicts
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(args: &TwinFlArgs, r: &FlReport) {
    println!(
        "federated learning in the twin: {} nodes, {} links ({}), seed {}",
        r.nodes, r.links, args.topology, r.seed
    );
    println!(
        "mesh converged in {:.2} s simulated; {} participants per round, {} stragglers, drop-out probability {}",
        r.converged_s, r.participants_per_round, r.stragglers, args.dropouts
    );
    println!(
        "aggregator {}; attack {} by {} Byzantine participants{}",
        r.aggregator,
        r.attack,
        r.attackers.len(),
        if r.attackers.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.attackers.join(", "))
        }
    );
    println!();
    println!(
        "round  height  coordinator  updates  suspected  accuracy  sim s/round  committed at s"
    );
    for x in &r.round_log {
        println!(
            "{:>5}  {:>6}  {:<11}  {:>7}  {:>9}  {:>8}  {:>11.3}  {:>14.3}",
            x.round,
            x.height,
            x.coordinator,
            x.participants,
            x.suspected,
            accuracy_cell(x.accuracy),
            x.sim_seconds,
            x.committed_at_s
        );
    }
    for h in &r.handovers {
        println!(
            "handover at height {}: {} -> {} (committed at {:.3} s)",
            h.height, h.from, h.to, h.committed_at_s
        );
    }
    println!();
    println!(
        "rounds committed: {} (last round {} of {}; {} failed), committee commits: {}, conflicting commits: {}",
        r.rounds_committed, r.last_round, r.rounds, r.rounds_failed, r.committee_commits, r.conflicting_commits
    );
    println!("final accuracy: {}", accuracy_cell(r.final_accuracy));
    if !r.byzantine_validators.is_empty() {
        println!(
            "Byzantine validators: {}; {} conflicting messages forged, {} withheld, {} delayed; honest replicas refused {} as equivocation, {} as invalid",
            r.byzantine_validators.join(", "),
            r.forged_messages,
            r.withheld_messages,
            r.delayed_messages,
            r.equivocations_refused,
            r.committee_refused
        );
    }
    if let Some(lc) = &r.leader_crash {
        println!(
            "leader {} crashed at {:.3} s (height {}, round {} submitted): {}",
            lc.leader,
            lc.crashed_at_s,
            lc.height,
            lc.round,
            match lc.commit_ms {
                Some(ms) => format!("round committed {ms:.0} ms later"),
                None => "the round was never committed".to_owned(),
            }
        );
    }
    println!(
        "updates: {} sent, {} refused, {} drop-outs; trainings: {}",
        r.updates_sent, r.updates_refused, r.dropouts, r.trainings
    );
    println!(
        "FL messages: {} sent, {} delivered, {} without a route; frames lost on links: {}",
        r.fl_messages_sent, r.fl_messages_delivered, r.fl_unroutable, r.frames_lost
    );
    println!(
        "nodes: {} alive, {} adopted the last round; {:.1} s simulated in {:.2} s wall clock",
        r.nodes_alive, r.nodes_finished, r.sim_seconds, r.wall_seconds
    );
}
