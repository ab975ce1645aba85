//! `x0tta6bl4 lab`: the chaos lab's commands. The lab crate does the work; this module
//! maps its errors to exit codes, shows progress and writes the outputs (JSON, SVG).

use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use x0tta6bl4_lab::{LabError, LabReport, Options, RouterChoice};

use crate::args::{LabProbeAgentArgs, LabRunArgs, LabSoakArgs};
use crate::node_cmd::shutdown_signal;
use crate::problem::{problem, Exit};

/// Turn a lab error into a `x0tta6bl4: what (where): fix` problem with its exit code.
pub fn lab_problem(error: LabError, place: &str) -> anyhow::Error {
    match error {
        LabError::Usage { what, fix } => problem(Exit::Usage, what, place, fix).into(),
        LabError::Environment { what, fix } => problem(Exit::Usage, what, place, fix).into(),
        LabError::Failed(what) => problem(
            Exit::Failure,
            "the lab run failed",
            place,
            "everything it created was removed; see the cause below",
        )
        .context_of(what),
    }
}

trait ContextOf {
    fn context_of(self, cause: String) -> anyhow::Error;
}

impl ContextOf for crate::problem::Problem {
    fn context_of(self, cause: String) -> anyhow::Error {
        anyhow::anyhow!(cause).context(self)
    }
}

fn spinner(hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `lab run`.
pub async fn run(args: &LabRunArgs) -> anyhow::Result<ExitCode> {
    let place = "x0tta6bl4 lab run";
    let router: RouterChoice = args
        .router
        .parse()
        .map_err(|e| lab_problem(e, "--router"))?;
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the path of this executable: {e}"))?;
    let budget = x0tta6bl4_lab::Budget {
        cpu: args
            .node_cpu
            .as_deref()
            .map(x0tta6bl4_lab::Budget::parse_cpu)
            .transpose()
            .map_err(|e| lab_problem(e, "--node-cpu"))?,
        memory_bytes: args
            .node_memory
            .as_deref()
            .map(x0tta6bl4_lab::Budget::parse_memory)
            .transpose()
            .map_err(|e| lab_problem(e, "--node-memory"))?,
    };
    let routing = args.routing.as_deref().unwrap_or("cost");
    if routing.split(',').any(|r| r.trim() == "ppo") {
        return Err(crate::twin_cmd::usage(
            "--routing ppo is not available yet in the lab (the nodes do not run the PPO agents)",
            format!("--routing {routing}"),
            "run it in the twin: `x0tta6bl4 twin run --routing etx,ppo --policy POLICY.json`",
        ));
    }
    let options = Options {
        topology: args.topology.clone(),
        nodes: args.nodes,
        scenario: args.scenario.clone(),
        iterations: args.iterations,
        seed: args.seed,
        router,
        exe,
        node_root: args.node_root.clone(),
        flows_sample: args.flows_sample,
        budget,
        protocol: node_protocol(args.node_protocol.as_deref())?,
        routings: match (&args.routing, &args.predictor) {
            (None, None) => Vec::new(),
            (routing, predictor) => crate::twin_predict::routings(
                routing.as_deref().unwrap_or("cost"),
                predictor.as_deref(),
                None,
            )?,
        },
    };
    let bar = spinner(args.json);
    let progress_bar = bar.clone();
    let mut progress = move |line: &str| progress_bar.set_message(line.to_owned());
    let report = tokio::select! {
        report = x0tta6bl4_lab::run(&options, &mut progress) => report.map_err(|e| lab_problem(e, place))?,
        _ = shutdown_signal() => {
            bar.finish_and_clear();
            return Err(problem(
                Exit::Failure,
                "interrupted",
                "Ctrl-C or SIGTERM",
                "every namespace, process and file of the lab was removed",
            )
            .into());
        }
    };
    bar.finish_and_clear();
    if let Some(path) = &args.plot {
        write_plot(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if report.healed() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(problem(
        Exit::Failure,
        "the mesh did not heal",
        place,
        format!(
            "replay with `x0tta6bl4 lab run --topology {} --nodes {} --scenario {} --seed {} --router {}`",
            args.topology, args.nodes, args.scenario, args.seed, args.router
        ),
    )
    .into())
}

fn write_plot(path: &std::path::Path, report: &LabReport) -> anyhow::Result<()> {
    let mut series: Vec<(&str, &[f64])> = Vec::new();
    for (name, r) in &report.routers {
        series.push((name.as_str(), &r.samples));
    }
    if report.twin.mttr_ms.is_some() {
        series.push(("twin", &report.twin.samples));
    }
    let title = format!(
        "chaos lab MTTR: {} nodes ({}), {}",
        report.nodes, report.topology, report.scenario
    );
    std::fs::write(path, x0tta6bl4_twin::plot::mttr_svg(&title, &series)).map_err(|e| {
        anyhow::Error::new(e).context(problem(
            Exit::Failure,
            "cannot write the plot",
            path.display(),
            "check that the directory exists and is writable",
        ))
    })
}

/// The nodes' `[protocol]` settings of `--node-protocol` (none: the defaults).
fn node_protocol(text: Option<&str>) -> anyhow::Result<toml::Table> {
    Ok(match text {
        Some(text) => x0tta6bl4_lab::run::parse_protocol(text)
            .map_err(|e| lab_problem(e, "--node-protocol"))?,
        None => toml::Table::new(),
    })
}

/// `lab soak`.
pub async fn soak(args: &LabSoakArgs) -> anyhow::Result<ExitCode> {
    let place = "x0tta6bl4 lab soak";
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        return Err(problem(
            Exit::Usage,
            format!("--minutes {} is not a duration", args.minutes),
            place,
            "give a positive number of minutes, e.g. 60 or 0.5",
        )
        .into());
    }
    let router: RouterChoice = args
        .router
        .parse()
        .map_err(|e| lab_problem(e, "--router"))?;
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the path of this executable: {e}"))?;
    let options = x0tta6bl4_lab::soak::SoakOptions {
        router,
        topology: args.topology.clone(),
        nodes: args.nodes,
        loss: args.loss.clone(),
        duration: Duration::from_secs_f64((args.minutes * 60.0).clamp(1.0, 7.0 * 86_400.0)),
        exe,
        api_abuse: args.api_abuse,
        protocol: node_protocol(args.node_protocol.as_deref())?,
    };
    let bar = spinner(args.json);
    let progress_bar = bar.clone();
    let mut progress = move |line: &str| progress_bar.set_message(line.to_owned());
    let report = tokio::select! {
        report = x0tta6bl4_lab::soak::soak(&options, &mut progress) => report.map_err(|e| lab_problem(e, place))?,
        _ = shutdown_signal() => {
            bar.finish_and_clear();
            return Err(problem(Exit::Failure, "interrupted", "Ctrl-C or SIGTERM", "everything the lab made was removed").into());
        }
    };
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if let Some(abuse) = report
        .api_abuse
        .as_ref()
        .filter(|a| !a.wedged_nodes.is_empty() || a.unreachable_pairs > 0)
    {
        let what = format!(
            "under API abuse {} nodes wedged ({}) and {} pairs stayed unreachable",
            abuse.wedged_nodes.len(),
            abuse.wedged_nodes.join(", "),
            abuse.unreachable_pairs
        );
        return Err(problem(
            Exit::Failure,
            what,
            place,
            "see the report above and the node logs",
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab probe-agent`: runs inside a namespace until standard input closes.
pub fn probe_agent(args: &LabProbeAgentArgs) -> anyhow::Result<ExitCode> {
    let json = x0tta6bl4_lab::probe::run_agent(
        &args.name,
        &args.targets,
        Duration::from_millis(args.interval_ms.max(1)),
        std::io::stdin(),
    )
    .map_err(|e| lab_problem(e, "x0tta6bl4 lab probe-agent"))?;
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{exit_of, render};

    #[test]
    fn lab_errors_map_to_exit_codes() {
        let e = lab_problem(x0tta6bl4_lab::not_root_message(1000).unwrap(), "lab run");
        assert_eq!(exit_of(&e), Exit::Usage);
        assert!(render(&e).contains("needs root"), "{}", render(&e));
        let e = lab_problem(LabError::failed("boom"), "lab run");
        assert_eq!(exit_of(&e), Exit::Failure);
        assert!(render(&e).contains("boom"));
    }
}
