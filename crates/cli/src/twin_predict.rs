//! `twin train-predictor` and the routings of `twin run --routing` (`twin train-ppo`
//! is in `twin_ppo`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use x0tta6bl4_fl::linkpredict::{FedTrainConfig, PredictorFile};
use x0tta6bl4_fl::ppo::PolicyFile;
use x0tta6bl4_proto::LinkCost;
use x0tta6bl4_twin::predict::{self, Routing};
use x0tta6bl4_twin::{Report, RunOptions};

use crate::args::TwinTrainPredictorArgs;
use crate::problem::{problem, Exit};
use crate::twin_cmd::{parse_scenario, scenario_topology, usage};

/// The routings `--routing` names (`twin run`, `lab run`), each checked (a predictor
/// file is loaded and its hash checked here: a file that fails is refused before
/// anything runs).
pub fn routings(
    spec: &str,
    predictor: Option<&Path>,
    policy: Option<&Path>,
) -> anyhow::Result<Vec<Routing>> {
    let mut out = Vec::new();
    for name in spec.split(',').map(str::trim) {
        let routing = match name {
            "cost" => Routing::Cost,
            "etx" => Routing::Etx,
            "predict" => {
                let Some(path) = predictor else {
                    return Err(usage(
                        "--routing predict needs a link-failure predictor",
                        "--routing predict",
                        "give --predictor MODEL.json (train one with `x0tta6bl4 twin train-predictor --out MODEL.json`)",
                    ));
                };
                let model = PredictorFile::load(path).map_err(|e| {
                    usage(
                        format!("{e}"),
                        format!("--predictor {}", path.display()),
                        "the model is refused; retrain it with `x0tta6bl4 twin train-predictor`",
                    )
                })?;
                Routing::Predict(Arc::new(model))
            }
            "ppo" => {
                let Some(path) = policy else {
                    return Err(usage(
                        "--routing ppo needs a PPO policy",
                        "--routing ppo",
                        "give --policy POLICY.json (train one with `x0tta6bl4 twin train-ppo --out POLICY.json`)",
                    ));
                };
                let model = PolicyFile::load(path).map_err(|e| {
                    usage(
                        format!("{e}"),
                        format!("--policy {}", path.display()),
                        "the policy is refused; retrain it with `x0tta6bl4 twin train-ppo`",
                    )
                })?;
                Routing::Ppo(Arc::new(model))
            }
            other => return Err(usage(
                format!("unknown routing {other:?}"),
                format!("--routing {spec}"),
                "use cost, etx, predict or ppo, or several comma-separated (cost,etx,predict,ppo)",
            )),
        };
        if out.iter().any(|r: &Routing| r.name() == routing.name()) {
            return Err(usage(
                format!("{name} given twice"),
                format!("--routing {spec}"),
                "name each routing once",
            ));
        }
        out.push(routing);
    }
    if predictor.is_some() && !out.iter().any(|r| matches!(r, Routing::Predict(_))) {
        return Err(usage(
            "--predictor without --routing predict",
            "--predictor",
            "add predict to --routing, or drop --predictor",
        ));
    }
    if policy.is_some() && !out.iter().any(|r| matches!(r, Routing::Ppo(_))) {
        return Err(usage(
            "--policy without --routing ppo",
            "--policy",
            "add ppo to --routing, or drop --policy",
        ));
    }
    Ok(out)
}

/// `options` set up for `routing`.
pub fn apply(options: &mut RunOptions, routing: &Routing) {
    options.sim.protocol.link_cost = match routing {
        Routing::Etx | Routing::Ppo(_) => LinkCost::Etx,
        Routing::Cost | Routing::Predict(_) => LinkCost::Measured,
    };
    options.measurement.routing = routing.clone();
}

/// One line of routing figures for a report.
pub fn routing_line(r: &Report) -> String {
    let g = &r.routing;
    format!(
        "delivery {:.4}  latency p95 {:.1} ms  unneeded reroutes {:.1}/link-hour ({:.1} on links never ramped; \
         by the predictor {:.1})  reroutes needed {}  predictions {} ({} ignored as NaN/out of range)",
        g.delivery_ratio,
        g.latency_p95_ms,
        g.unneeded_reroutes_per_link_hour,
        g.unneeded_steady_reroutes_per_link_hour,
        g.unneeded_predictor_reroutes_per_link_hour,
        g.needed_reroutes,
        g.predictions,
        g.invalid_predictions,
    )
}

/// The side-by-side table of several routings' reports on the same iterations.
pub fn comparison(reports: &[(String, Report)]) -> String {
    let mut out = String::new();
    if let Some((_, first)) = reports.first() {
        out.push_str(&format!(
            "twin: {} nodes, {} links ({}), scenario {}, {} iterations, seed {}; the same draws per routing\n",
            first.nodes, first.links, first.topology, first.scenario, first.iterations, first.seed
        ));
    }
    out.push_str(&format!(
        "{:<8} {:>9} {:>14} {:>12} {:>12} {:>8} {:>20} {:>22} {:>14} {:>22} {:>8}\n",
        "routing",
        "delivery",
        "latency p95",
        "MTTR p50",
        "MTTR p95",
        "flows",
        "unneeded/link-hour",
        "(links never ramped)",
        "(by predictor)",
        "(predictor, never ramped)",
        "unhealed"
    ));
    for (name, r) in reports {
        out.push_str(&format!(
            "{:<8} {:>9.4} {:>11.1} ms {:>9.1} ms {:>9.1} ms {:>8} {:>20.1} {:>22.1} {:>14.1} {:>22.1} {:>8}\n",
            name,
            r.routing.delivery_ratio,
            r.routing.latency_p95_ms,
            r.mttr_ms.p50,
            r.mttr_ms.p95,
            r.mttr_ms.samples,
            r.routing.unneeded_reroutes_per_link_hour,
            r.routing.unneeded_steady_reroutes_per_link_hour,
            r.routing.unneeded_predictor_reroutes_per_link_hour,
            r.routing.unneeded_steady_predictor_reroutes_per_link_hour,
            r.unhealed_flows,
        ));
    }
    let find = |n: &str| reports.iter().find(|(name, _)| name == n).map(|(_, r)| r);
    if let (Some(cost), Some(pred)) = (find("cost"), find("predict")) {
        if cost.mttr_ms.p95 > 0.0 {
            out.push_str(&format!(
                "predict / cost MTTR p95: {:.0} % (target <= 50 %); predict's unneeded reroutes: {:.1}/link-hour \
                 ({:.1} on links never ramped; by the predictor {:.1}, {:.1} on links never ramped; target <= 1)\n",
                100.0 * pred.mttr_ms.p95 / cost.mttr_ms.p95,
                pred.routing.unneeded_reroutes_per_link_hour,
                pred.routing.unneeded_steady_reroutes_per_link_hour,
                pred.routing.unneeded_predictor_reroutes_per_link_hour,
                pred.routing.unneeded_steady_predictor_reroutes_per_link_hour,
            ));
        }
    }
    if let (Some(etx), Some(ppo)) = (find("etx"), find("ppo")) {
        let (d, l) = (&ppo.routing, &etx.routing);
        out.push_str(&format!(
            "ppo vs etx: delivery {:.4} vs {:.4} ({}), latency p95 {:.1} vs {:.1} ms ({}); target: delivery >= and p95 <= etx's; \
             {} PPO decisions ({} ignored as NaN)\n",
            d.delivery_ratio,
            l.delivery_ratio,
            if d.delivery_ratio >= l.delivery_ratio { "met" } else { "NOT met" },
            d.latency_p95_ms,
            l.latency_p95_ms,
            if d.latency_p95_ms <= l.latency_p95_ms { "met" } else { "NOT met" },
            d.predictions,
            d.invalid_predictions,
        ));
    }
    out
}

/// `twin train-predictor`.
pub async fn train(args: &TwinTrainPredictorArgs) -> anyhow::Result<ExitCode> {
    let scenario = parse_scenario(&args.scenario)?;
    if !(0.0..1.0).contains(&args.false_positive_rate) {
        return Err(usage(
            format!(
                "--false-positive-rate {} is not a fraction below 1",
                args.false_positive_rate
            ),
            "--false-positive-rate",
            "use e.g. 0.01 (1 %)",
        ));
    }
    if args.iterations == 0 || args.eval_iterations == 0 || args.rounds == 0 {
        return Err(usage(
            "--iterations, --eval-iterations and --rounds must be at least 1",
            "twin train-predictor",
            "e.g. --iterations 40 --eval-iterations 10 --rounds 30",
        ));
    }
    let topology = scenario_topology(
        &args.topology,
        args.nodes,
        args.seed,
        &scenario,
        &args.scenario,
        "ramp fewer links than the mesh has",
    )
    .await?;
    let mut options = RunOptions::new(args.seed);
    options.iterations = args.iterations + args.eval_iterations;
    let cfg = FedTrainConfig {
        rounds: args.rounds,
        seed: args.seed,
        false_positive_rate: args.false_positive_rate,
        ..FedTrainConfig::default()
    };
    let (n, e) = (args.iterations, args.eval_iterations);
    let (model, report) = tokio::task::spawn_blocking(move || {
        predict::train(&topology, &scenario, &options, 0..n, n..n + e, cfg)
    })
    .await?
    .map_err(|e| {
        problem(
            Exit::Failure,
            format!("{e}"),
            "twin train-predictor",
            "run more iterations, or a scenario that cuts links (degrade-then-fail)",
        )
    })?;
    PredictorFile::save(&model, &args.out)
        .map_err(|e| usage(format!("{e}"), args.out.display(), "choose a writable path"))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "twin train-predictor: {} nodes federated (FedAvg, {} rounds) on {} samples ({} positive: cut within 2 s) from {} iterations of {}\n\
             threshold {:.3}; on {} held-out iterations: recall {:.3}, false-positive rate {:.4}, precision {:.3}\n\
             model written to {}",
            report.participants,
            args.rounds,
            report.samples,
            report.positives,
            args.iterations,
            args.scenario,
            report.threshold,
            args.eval_iterations,
            report.recall,
            report.false_positive_rate,
            report.precision,
            args.out.display(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
