//! `twin train-ppo`: the PPO routing agents trained in the twin (`x0tta6bl4_twin::ppo`).

use std::process::ExitCode;

use x0tta6bl4_fl::ppo::{PolicyFile, PpoConfig};
use x0tta6bl4_twin::ppo::{self, EpisodeReport};
use x0tta6bl4_twin::RunOptions;

use crate::args::TwinTrainPpoArgs;
use crate::problem::{problem, Exit};
use crate::twin_cmd::{parse_scenario, scenario_topology, usage};

/// `twin train-ppo`.
pub async fn train(args: &TwinTrainPpoArgs) -> anyhow::Result<ExitCode> {
    let scenario = parse_scenario(&args.scenario)?;
    if args.episodes == 0 {
        return Err(usage(
            "--episodes 0",
            "twin train-ppo",
            "train at least one episode, e.g. --episodes 100",
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0 && args.lr < 1.0) {
        return Err(usage(
            format!("--lr {} is not a learning rate in (0, 1)", args.lr),
            "--lr",
            "use e.g. 0.01",
        ));
    }
    let mut topologies = Vec::new();
    for (k, spec) in args.topology.iter().enumerate() {
        let built = scenario_topology(
            spec,
            args.nodes,
            args.seed.wrapping_add(k as u64),
            &scenario,
            &args.scenario,
            "ramp fewer links than the mesh has",
        )
        .await?;
        topologies.push((spec.clone(), built));
    }
    let policy = match &args.resume {
        Some(path) => PolicyFile::load(path).map_err(|e| {
            usage(
                format!("{e}"),
                format!("--resume {}", path.display()),
                "give a policy written by `x0tta6bl4 twin train-ppo`, or drop --resume",
            )
        })?,
        None => ppo::new_policy(args.seed),
    };
    if policy.inputs != ppo::INPUTS {
        return Err(usage(
            format!(
                "the policy takes {} inputs, the twin's agents give {}",
                policy.inputs,
                ppo::INPUTS
            ),
            "--resume",
            "start a fresh policy (drop --resume)",
        ));
    }
    let mut options = RunOptions::new(args.seed);
    options.iterations = args.episodes;
    options.sim.protocol.link_cost = x0tta6bl4_proto::LinkCost::Etx;
    let cfg = PpoConfig {
        lr: args.lr,
        ..PpoConfig::default()
    };
    let (episodes, json) = (args.episodes, args.json);
    let bar = crate::twin_cmd::progress_bar(episodes as u64, json, "episodes");
    let progress_bar = bar.clone();
    let (policy, reports) = tokio::task::spawn_blocking(move || {
        ppo::train(
            &topologies,
            &scenario,
            &options,
            episodes,
            policy,
            cfg,
            &mut |r: &EpisodeReport| {
                if json {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
                progress_bar.set_message(format!(
                    "delivery {:.3} reward {:.3} entropy {:.2}",
                    r.delivery_ratio, r.mean_reward, r.entropy
                ));
                progress_bar.inc(1);
            },
        )
    })
    .await?
    .map_err(|e| {
        problem(
            Exit::Failure,
            format!("{e}"),
            "twin train-ppo",
            "check the topologies and scenario with `x0tta6bl4 twin run` first",
        )
    })?;
    bar.finish_and_clear();
    PolicyFile::save(&policy, &args.out)
        .map_err(|e| usage(format!("{e}"), args.out.display(), "choose a writable path"))?;
    let summary = summarise(&reports);
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "twin train-ppo: {} episodes over {} topologies ({}), scenario {}, seed {}\n\
             first tenth of the episodes: delivery {:.4}, reward {:.4}, entropy {:.3}\n\
             last tenth: delivery {:.4}, reward {:.4}, entropy {:.3}; {} agent steps in all\n\
             policy written to {}",
            episodes,
            args.topology.len(),
            args.topology.join(", "),
            args.scenario,
            args.seed,
            summary.first.0,
            summary.first.1,
            summary.first.2,
            summary.last.0,
            summary.last.1,
            summary.last.2,
            summary.steps,
            args.out.display(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Mean (delivery, reward, entropy) over the first and the last tenth of the episodes.
#[derive(serde::Serialize)]
struct Summary {
    first: (f64, f64, f64),
    last: (f64, f64, f64),
    steps: usize,
}

fn summarise(reports: &[EpisodeReport]) -> Summary {
    let tenth = (reports.len() / 10).max(1);
    let mean = |rs: &[EpisodeReport]| {
        let n = rs.len().max(1) as f64;
        (
            rs.iter().map(|r| r.delivery_ratio).sum::<f64>() / n,
            rs.iter().map(|r| r.mean_reward).sum::<f64>() / n,
            rs.iter().map(|r| r.entropy).sum::<f64>() / n,
        )
    };
    Summary {
        first: mean(&reports[..tenth.min(reports.len())]),
        last: mean(&reports[reports.len().saturating_sub(tenth)..]),
        steps: reports.iter().map(|r| r.steps).sum(),
    }
}
