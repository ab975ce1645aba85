//! `x0tta6bl4 twin`: the digital twin's commands. The twin crate does the work; this
//! module fetches live topologies (a node's API, Prometheus), shows progress and writes
//! the outputs (JSON, CSV, SVG).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::fuzz::{run_case, FuzzCase};
use x0tta6bl4_twin::tune::{tune, TuneOptions};
use x0tta6bl4_twin::{
    plot, prometheus, LinkParams, Part, RunOptions, Scenario, Shard, Topology, TopologySpec,
};

use crate::api::Api;
use crate::args::{TwinFuzzArgs, TwinMergeArgs, TwinRunArgs, TwinTopologyArgs, TwinTuneArgs};
use crate::problem::{problem, Exit};

pub(crate) fn usage(
    what: impl Into<String>,
    place: impl std::fmt::Display,
    fix: impl Into<String>,
) -> anyhow::Error {
    problem(Exit::Usage, what, place, fix).into()
}

pub(crate) fn progress_bar(len: u64, hidden: bool, message: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed} elapsed, about {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The scenario `--scenario` names.
pub(crate) fn parse_scenario(text: &str) -> anyhow::Result<Scenario> {
    text.parse().map_err(|e| {
        usage(
            format!("{e}"),
            format!("--scenario {text}"),
            "see `x0tta6bl4 twin run --help` for names and parameters",
        )
    })
}

/// The topology `--topology` names, checked against the scenario that will run on it
/// (`fix` says what to do when the scenario fails more elements than the mesh has).
pub(crate) async fn scenario_topology(
    topology: &str,
    nodes: usize,
    seed: u64,
    scenario: &Scenario,
    scenario_text: &str,
    fix: &str,
) -> anyhow::Result<Topology> {
    let built = load_topology(topology, nodes, seed).await?;
    scenario
        .validate(built.len(), built.links.len())
        .map_err(|e| usage(e.reason, format!("--scenario {scenario_text}"), fix))?;
    Ok(built)
}

/// One `twin run` of `options`, with a progress bar labelled `label` unless `hidden`.
pub(crate) fn run_with_progress(
    topology: &Topology,
    (topology_spec, scenario_spec): (&str, &str),
    scenario: &Scenario,
    options: &RunOptions,
    hidden: bool,
    label: &str,
) -> Result<x0tta6bl4_twin::Report, x0tta6bl4_twin::RunError> {
    let bar = progress_bar(options.iterations as u64, hidden, label);
    let report = x0tta6bl4_twin::run(
        topology,
        topology_spec,
        scenario,
        scenario_spec,
        options,
        &mut |done| bar.set_position(done as u64),
    );
    bar.finish_and_clear();
    report
}

/// Build the topology a spec names, fetching live ones.
pub async fn load_topology(spec_text: &str, nodes: usize, seed: u64) -> anyhow::Result<Topology> {
    let spec: TopologySpec = spec_text.parse().map_err(|e| {
        usage(
            format!("{e}"),
            format!("--topology {spec_text}"),
            "see `x0tta6bl4 twin run --help` for names and parameters",
        )
    })?;
    let mut rng = Rng::seed(seed ^ 0x7070);
    match &spec {
        TopologySpec::Node(url) => {
            let api = Api::new(url)?;
            let doc: serde_json::Value = api
                .get("/api/v1/topology")
                .await
                .context(format!("reading the live topology of {url}"))?;
            Topology::from_json(&doc.to_string(), &LinkParams::default()).map_err(|e| {
                usage(
                    format!("{e}"),
                    url,
                    "point node: at a running x0tta6bl4 node's API",
                )
            })
        }
        TopologySpec::Prometheus(url) => topology_from_prometheus(url).await,
        _ => spec.build(nodes, &mut rng).map_err(|e| {
            usage(
                format!("{e}"),
                format!("--topology {spec_text}"),
                "see `x0tta6bl4 twin run --help`",
            )
        }),
    }
}

async fn topology_from_prometheus(url: &str) -> anyhow::Result<Topology> {
    let api = Api::new(url)?;
    let mut answers = Vec::new();
    for query in prometheus::QUERIES {
        let answer: serde_json::Value = api
            .get(&format!("/api/v1/query?query={query}"))
            .await
            .map_err(|e| {
                usage(
                    format!("cannot query Prometheus: {e:#}"),
                    url,
                    "check the URL and that Prometheus runs",
                )
            })?;
        answers.push(answer.to_string());
    }
    prometheus::topology_from_prometheus(&answers[0], &answers[1], &answers[2]).map_err(|e| {
        usage(
            format!("{e}"),
            url,
            "make Prometheus scrape every node's /metrics",
        )
    })
}

/// `twin run`.
pub async fn run(args: &TwinRunArgs) -> anyhow::Result<ExitCode> {
    let scenario = parse_scenario(&args.scenario)?;
    if args.iterations == 0 {
        return Err(usage(
            "--iterations 0",
            "--iterations",
            "run at least one iteration",
        ));
    }
    let shard = args
        .shard
        .as_deref()
        .map(|text| shard_of(args, text))
        .transpose()?;
    let topology = scenario_topology(
        &args.topology,
        args.nodes,
        args.seed,
        &scenario,
        &args.scenario,
        "fail fewer elements than the mesh has",
    )
    .await?;
    let mut options = RunOptions::new(args.seed);
    options.iterations = args.iterations;
    options.measurement.flows_max = args.flows;
    options.sim.protocol.probe_interval_ms = args.probe_interval_ms;
    options.sim.protocol.probe_misses_max = args.probe_misses;
    options.sim.protocol.suspect_probe_interval_ms = args.suspect_probe_interval_ms;
    options.sim.protocol.validate().map_err(|e| {
        usage(
            e.to_string(),
            "--probe-interval-ms / --probe-misses / --suspect-probe-interval-ms",
            "use values the node accepts",
        )
    })?;
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    options.start = args.start;
    let routings = crate::twin_predict::routings(
        &args.routing,
        args.predictor.as_deref(),
        args.policy.as_deref(),
    )?;
    if shard.is_some() && (routings.len() > 1 || routings[0].name() != "cost") {
        return Err(usage(
            "--shard runs the default routing only",
            format!("--shard with --routing {}", args.routing),
            "drop --shard, or --routing",
        ));
    }
    if routings.len() > 1 {
        return compare(topology, scenario, options, args, routings).await;
    }
    crate::twin_predict::apply(&mut options, &routings[0]);
    if let Some(shard) = shard {
        let out = args.out.clone().unwrap_or_default();
        return run_shard(topology, scenario, options, args, shard, &out).await;
    }
    let hidden = args.json;
    let (topology_spec, scenario_spec) = (args.topology.clone(), args.scenario.clone());
    let report = tokio::task::spawn_blocking(move || {
        let specs = (topology_spec.as_str(), scenario_spec.as_str());
        run_with_progress(&topology, specs, &scenario, &options, hidden, "iterations")
    })
    .await?
    .map_err(run_failed)?;
    let outputs = Outputs {
        json: args.json,
        no_wall_clock: args.no_wall_clock,
        json_out: None,
        csv: args.csv.clone(),
        plot: args.plot.clone(),
        metrics_out: args.metrics_out.clone(),
    };
    write_outputs(&report, &outputs)
}

/// `twin run --routing a,b,...`: the same iterations once per routing, side by side.
async fn compare(
    topology: Topology,
    scenario: Scenario,
    options: RunOptions,
    args: &TwinRunArgs,
    routings: Vec<x0tta6bl4_twin::predict::Routing>,
) -> anyhow::Result<ExitCode> {
    let single_only = [
        (args.csv.is_some(), "--csv"),
        (args.plot.is_some(), "--plot"),
        (args.metrics_out.is_some(), "--metrics-out"),
    ];
    if let Some((_, flag)) = single_only.iter().find(|(given, _)| *given) {
        return Err(usage(
            format!(
                "{flag} describes one run, --routing {} makes several",
                args.routing
            ),
            flag,
            "run one routing at a time with that flag",
        ));
    }
    let hidden = args.json;
    let (topology_spec, scenario_spec) = (args.topology.clone(), args.scenario.clone());
    let reports = tokio::task::spawn_blocking(move || {
        let mut reports = Vec::new();
        for routing in &routings {
            let mut options = options.clone();
            crate::twin_predict::apply(&mut options, routing);
            let specs = (topology_spec.as_str(), scenario_spec.as_str());
            let report = run_with_progress(
                &topology,
                specs,
                &scenario,
                &options,
                hidden,
                routing.name(),
            );
            reports.push((routing.name().to_owned(), report?));
        }
        Ok::<_, x0tta6bl4_twin::RunError>(reports)
    })
    .await?
    .map_err(run_failed)?;
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(name, r)| {
                Ok((
                    name.clone(),
                    serde_json::from_str(&report_json(r, args.no_wall_clock)?)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        println!("{}", serde_json::Value::Object(map));
    } else {
        print!("{}", crate::twin_predict::comparison(&reports));
    }
    for (name, report) in &reports {
        if let Some(failure) = failure(report, &report.scenario) {
            eprintln!("routing {name}:");
            return Err(failure.into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_failed(error: x0tta6bl4_twin::RunError) -> anyhow::Error {
    problem(
        Exit::Failure,
        format!("{error}"),
        "twin run",
        "replay with the same --seed and inspect the topology",
    )
    .into()
}

/// The `--shard I/N` of a run, checked against its flags.
fn shard_of(args: &TwinRunArgs, text: &str) -> anyhow::Result<Shard> {
    let shard: Shard = text.parse().map_err(|e: String| {
        usage(
            e,
            format!("--shard {text}"),
            "write --shard I/N with 0 <= I < N, e.g. --shard 0/4 to --shard 3/4",
        )
    })?;
    if shard.count > args.iterations {
        return Err(usage(
            format!(
                "{} shards for {} iterations: some shards would run nothing",
                shard.count, args.iterations
            ),
            format!("--shard {text}"),
            "use at most as many shards as --iterations",
        ));
    }
    let merge_only = [
        (args.json, "--json"),
        (args.csv.is_some(), "--csv"),
        (args.plot.is_some(), "--plot"),
        (args.metrics_out.is_some(), "--metrics-out"),
        (args.no_wall_clock, "--no-wall-clock"),
    ];
    if let Some((_, flag)) = merge_only.iter().find(|(given, _)| *given) {
        return Err(usage(
            format!("{flag} describes the whole run, a shard only writes its part"),
            format!("--shard {text} {flag}"),
            format!("drop {flag} here and give it to `x0tta6bl4 twin merge`"),
        ));
    }
    Ok(shard)
}

/// `twin run --shard I/N --out PART.json`: run the shard's iterations, write the part.
async fn run_shard(
    topology: Topology,
    scenario: Scenario,
    options: RunOptions,
    args: &TwinRunArgs,
    shard: Shard,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let range = shard.range(options.iterations);
    let (topology_spec, scenario_spec) = (args.topology.clone(), args.scenario.clone());
    let hidden = !std::io::stderr().is_terminal();
    let part = tokio::task::spawn_blocking(move || {
        let bar = progress_bar(range.len() as u64, hidden, "shard iterations");
        let part = x0tta6bl4_twin::run_shard(
            &topology,
            &topology_spec,
            &scenario,
            &scenario_spec,
            &options,
            shard,
            &mut |done| bar.set_position(done as u64),
        );
        bar.finish_and_clear();
        part
    })
    .await?
    .map_err(run_failed)?;
    write_atomically(out, &part.encode()).map_err(|e| {
        usage(
            format!("cannot write the part: {e}"),
            out.display(),
            "choose a writable path (a directory shared by every shard)",
        )
    })?;
    let range = shard.range(args.iterations);
    println!(
        "twin: shard {shard}: iterations {}..{} of {} ({} samples, {:.1} s) written to {}; \
         merge all {} parts with `x0tta6bl4 twin merge`",
        range.start,
        range.end,
        args.iterations,
        part.iterations
            .iter()
            .map(|r| r.outages.len())
            .sum::<usize>(),
        part.wall_seconds,
        out.display(),
        shard.count,
    );
    Ok(ExitCode::SUCCESS)
}

/// Write `bytes` to `path` so that `path` is either absent, the old file, or the whole
/// new one: a temporary file in the same directory, synced, renamed, directory synced.
/// The directory is created when missing (one directory per study on a shared volume).
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(&dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Where a finished report goes.
struct Outputs {
    json: bool,
    no_wall_clock: bool,
    json_out: Option<std::path::PathBuf>,
    csv: Option<std::path::PathBuf>,
    plot: Option<std::path::PathBuf>,
    metrics_out: Option<std::path::PathBuf>,
}

/// The report as `--json` prints it.
fn report_json(report: &x0tta6bl4_twin::Report, no_wall_clock: bool) -> anyhow::Result<String> {
    if !no_wall_clock {
        return Ok(serde_json::to_string(report)?);
    }
    // Through a map (keys then sorted): the same bytes for the same figures.
    let mut value = serde_json::to_value(report)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("wall_seconds");
        map.remove("sim_seconds_per_wall_second");
    }
    Ok(serde_json::to_string(&value)?)
}

/// Write a finished report where `outputs` say; the exit code is the run's verdict.
fn write_outputs(report: &x0tta6bl4_twin::Report, outputs: &Outputs) -> anyhow::Result<ExitCode> {
    let cannot = |what: &str, path: &std::path::Path, e: std::io::Error| {
        usage(
            format!("cannot write {what}: {e}"),
            path.display(),
            "choose a writable path",
        )
    };
    if let Some(path) = &outputs.csv {
        let mut csv = String::from("iteration,source,destination,outage_ms\n");
        for (k, s, d, ms) in &report.samples {
            csv.push_str(&format!("{k},{s},{d},{ms:.3}\n"));
        }
        std::fs::write(path, csv).map_err(|e| cannot("CSV", path, e))?;
    }
    if let Some(path) = &outputs.plot {
        let samples: Vec<f64> = report.samples.iter().map(|s| s.3).collect();
        let title = format!(
            "twin MTTR: {} nodes, {}, {} iterations, seed {}",
            report.nodes, report.scenario, report.iterations, report.seed
        );
        std::fs::write(path, plot::mttr_svg(&title, &[("twin", &samples)]))
            .map_err(|e| cannot("plot", path, e))?;
    }
    if let Some(path) = &outputs.metrics_out {
        std::fs::write(path, metrics_text(report)).map_err(|e| cannot("metrics", path, e))?;
    }
    let json = report_json(report, outputs.no_wall_clock)?;
    if let Some(path) = &outputs.json_out {
        write_atomically(path, format!("{json}\n").as_bytes())
            .map_err(|e| cannot("the JSON report", path, e))?;
    }
    if outputs.json {
        println!("{json}");
    } else {
        print!("{}", summary(report));
    }
    if let Some(failure) = failure(report, &report.scenario) {
        return Err(failure.into());
    }
    Ok(ExitCode::SUCCESS)
}

/// `twin merge`.
pub async fn merge(args: &TwinMergeArgs) -> anyhow::Result<ExitCode> {
    wait_for_parts(&args.parts, Duration::from_secs(args.wait_s)).await?;
    let mut parts = Vec::with_capacity(args.parts.len());
    for path in &args.parts {
        parts.push((path.display().to_string(), read_part(path)?));
    }
    let report = x0tta6bl4_twin::merge(&parts).map_err(|e| {
        usage(
            format!("{e}"),
            "twin merge",
            "give exactly one part of every shard of one run (all shards run with the same \
             flags and the same x0tta6bl4 version)",
        )
    })?;
    let outputs = Outputs {
        json: args.json,
        no_wall_clock: args.no_wall_clock,
        json_out: args.json_out.clone(),
        csv: args.csv.clone(),
        plot: args.plot.clone(),
        metrics_out: args.metrics_out.clone(),
    };
    write_outputs(&report, &outputs)
}

/// Read and check one part file.
fn read_part(path: &std::path::Path) -> anyhow::Result<Part> {
    let bytes = std::fs::read(path).map_err(|e| {
        usage(
            format!("cannot read the part: {e}"),
            path.display(),
            "give the files written by `twin run --shard I/N --out PART.json`",
        )
    })?;
    Part::decode(&bytes).map_err(|e| {
        usage(
            format!("{e}"),
            path.display(),
            "re-run that shard (same flags) to write the part again",
        )
    })
}

/// Wait until every part exists, polling every second, for at most `bound`.
async fn wait_for_parts(paths: &[std::path::PathBuf], bound: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let missing: Vec<_> = paths.iter().filter(|p| !p.exists()).collect();
        if missing.is_empty() || bound.is_zero() {
            return Ok(());
        }
        if started.elapsed() >= bound {
            let names: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
            return Err(problem(
                Exit::Failure,
                format!(
                    "{} parts did not appear within {} s",
                    missing.len(),
                    bound.as_secs()
                ),
                names.join(", "),
                "check that every shard ran and wrote its part (kubectl get pods; a shard's log \
                 says why it failed), or wait longer with --wait-s",
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why a finished run failed, if it did: a run that hides routing failures or
/// unhealed flows is not a measurement.
fn failure(report: &x0tta6bl4_twin::Report, scenario: &str) -> Option<crate::problem::Problem> {
    let place = format!("twin run --scenario {scenario} --seed {}", report.seed);
    if report.baseline_undelivered_flows > 0 {
        return Some(problem(
            Exit::Failure,
            format!(
                "{} flows did not deliver before the fault (no route, a loop, or a path longer than the hop limit): the converged mesh does not route",
                report.baseline_undelivered_flows
            ),
            place,
            "replay with the same --seed; a path longer than protocol.ttl_default needs a larger hop limit",
        ));
    }
    if report.unhealed_flows > 0 || report.unreachable_pairs_after_heal > 0 {
        return Some(problem(
            Exit::Failure,
            format!(
                "the mesh did not heal: {} flows never delivered again and {} connected pairs had no working path after the scenario",
                report.unhealed_flows, report.unreachable_pairs_after_heal
            ),
            place,
            "replay with the same --seed and --json to see which iteration failed",
        ));
    }
    (report.mttr_ms.samples == 0).then(|| no_flow_measured(scenario))
}

/// A run whose fault broke no flow that could heal measured nothing: its MTTR figures
/// are zeros that mean nothing, so the run fails and says why.
fn no_flow_measured(scenario: &str) -> crate::problem::Problem {
    problem(
        Exit::Failure,
        "no flow was measured: no probe flow crossed the failed elements and could heal \
         (a fault that splits the mesh, e.g. any link of a line, leaves no path to heal to; \
         the MTTR figures above are empty)",
        format!("twin run --scenario {scenario}"),
        "use a topology with alternative paths (grid, ring, random-geometric, or a live mesh \
         where nodes have several neighbours), or more --iterations",
    )
}

fn summary(r: &x0tta6bl4_twin::Report) -> String {
    let m = &r.mttr_ms;
    let mttr = if m.samples == 0 {
        "not measured: no flow crossed the failed elements and could heal (0 flows)".to_owned()
    } else {
        format!(
            "mean {:.1} ms  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  ({} flows)",
            m.mean, m.p50, m.p95, m.p99, m.max, m.samples
        )
    };
    format!(
        "twin: {} nodes, {} links ({}), scenario {}, {} iterations, seed {}\n\
         converged after      {:.0} ms (simulated)\n\
         MTTR                 {}\n\
         reconverged          p50 {:.0} ms  p95 {:.0} ms after the fault ({} iterations changed no route)\n\
         bystander outage     max {:.1} ms over {} flows that crossed nothing the fault broke\n\
         unhealed flows       {}\n\
         undelivered before   {} flows (routing failures before the fault)\n\
         unreachable pairs    {} after the scenario\n\
         false neighbour-down {}\n\
         control plane        {:.1} messages, {:.0} bytes per node per second\n\
         routing              {}\n\
         speed                {:.1} simulated s in {:.1} s wall ({:.2} simulated s per wall s)\n",
        r.nodes,
        r.links,
        r.topology,
        r.scenario,
        r.iterations,
        r.seed,
        r.converged_ms,
        mttr,
        r.reconverged_ms.p50,
        r.reconverged_ms.p95,
        r.iterations_without_route_change,
        r.bystander_outage_max_ms,
        r.bystander_flows,
        r.unhealed_flows,
        r.baseline_undelivered_flows,
        r.unreachable_pairs_after_heal,
        r.false_down_events,
        r.control_messages_per_node_per_second,
        r.control_bytes_per_node_per_second,
        crate::twin_predict::routing_line(r),
        r.sim_seconds,
        r.wall_seconds,
        r.sim_seconds_per_wall_second,
    )
}

/// `twin fuzz`.
pub async fn fuzz(args: &TwinFuzzArgs) -> anyhow::Result<ExitCode> {
    if args.seeds == 0 {
        return Err(usage("--seeds 0", "--seeds", "fuzz at least one seed"));
    }
    let (start, count, hidden) = (args.seed, args.seeds, args.json);
    let failures = tokio::task::spawn_blocking(move || {
        let bar = progress_bar(count, hidden, "seeds");
        let mut failures = Vec::new();
        for seed in start..start.saturating_add(count) {
            let case = FuzzCase::from_seed(seed);
            if let Err(reason) = run_case(&case) {
                bar.suspend(|| {
                    eprintln!(
                        "seed {seed} failed: {reason}\n  replay: {}",
                        case.replay_command()
                    )
                });
                failures.push((case, reason));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        failures
    })
    .await?;
    if args.json {
        let list: Vec<_> = failures
            .iter()
            .map(|(c, reason)| serde_json::json!({"seed": c.seed, "nodes": c.nodes, "topology": c.topology, "scenario": c.scenario, "extra": format!("{:?}", c.extra), "reason": reason, "replay": c.replay_command()}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"seeds": count, "first_seed": start, "failed": list})
        );
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "twin fuzz: {} of {count} seeds failed (seeds {start}..{})",
            failures.len(),
            start.saturating_add(count)
        )?;
        for (case, reason) in &failures {
            writeln!(
                out,
                "FAIL seed {} ({} nodes, {}, {}, {:?}): {reason}\n  replay: {}",
                case.seed,
                case.nodes,
                case.topology,
                case.scenario,
                case.extra,
                case.replay_command()
            )?;
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `twin tune`.
pub async fn tune_cmd(args: &TwinTuneArgs) -> anyhow::Result<ExitCode> {
    let loss_text = args.loss.trim();
    let loss = match loss_text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => loss_text.parse::<f64>(),
    }
    .map_err(|_| {
        usage(
            format!("--loss {loss_text:?} is not a loss rate"),
            "--loss",
            "write a percentage like 5% or a fraction like 0.05",
        )
    })?;
    if !(0.0..0.9).contains(&loss) {
        return Err(usage(
            format!("--loss {loss_text}: out of range"),
            "--loss",
            "use 0% to 90%",
        ));
    }
    let topology = load_topology(&args.topology, args.nodes, args.seed).await?;
    if args.intervals_ms.is_empty()
        || args.misses.is_empty()
        || args
            .intervals_ms
            .iter()
            .any(|&i| !(5..=60_000).contains(&i))
        || args.misses.iter().any(|&m| !(2..=100).contains(&m))
    {
        return Err(usage(
            "timer values out of range",
            "--intervals-ms / --misses",
            "use probe intervals of 5 to 60000 ms and miss thresholds of 2 to 100",
        ));
    }
    // Each suspicion pace against each probe interval, by the node's own check.
    for &probe_interval_ms in &args.intervals_ms {
        for &suspect_probe_interval_ms in &args.suspect_ms {
            let protocol = x0tta6bl4_proto::Config {
                probe_interval_ms,
                suspect_probe_interval_ms,
                ..Default::default()
            };
            protocol.validate().map_err(|e| {
                usage(
                    e.to_string(),
                    "--suspect-ms",
                    "use 0 (off) or 2 up to the shortest of --intervals-ms",
                )
            })?;
        }
    }
    let options = TuneOptions {
        loss,
        iterations: args.iterations.max(1),
        soak: Duration::from_secs(args.soak_s.max(1)),
        seed: args.seed,
        intervals_ms: args.intervals_ms.clone(),
        misses: args.misses.clone(),
        suspect_ms: args.suspect_ms.clone(),
        ..TuneOptions::default()
    };
    let hidden = args.json;
    let total = options.intervals_ms.len() * options.misses.len() * options.suspect_ms.len();
    if !hidden {
        eprintln!(
            "twin tune: {total} timer combinations ({} probe intervals x {} miss thresholds x {} \
             suspicion paces) on {} nodes, each a {} s simulated soak and {} node-failure \
             iterations; progress and an estimate of the time left follow each combination",
            options.intervals_ms.len(),
            options.misses.len(),
            options.suspect_ms.len(),
            topology.len(),
            options.soak.as_secs(),
            options.iterations,
        );
    }
    // On a terminal a progress bar; otherwise one line per combination on stderr.
    let lines = !hidden && !std::io::stderr().is_terminal();
    let (rows, best) = tokio::task::spawn_blocking(move || {
        let bar = progress_bar(total as u64, hidden || lines, "timer combinations");
        let started = std::time::Instant::now();
        let result = tune(&topology, &options, &mut |done, total| {
            bar.set_position(done as u64);
            if lines {
                let elapsed = started.elapsed().as_secs_f64();
                let left = elapsed / done as f64 * (total - done) as f64;
                eprintln!(
                    "twin tune: {done}/{total} combinations in {elapsed:.0} s, about {left:.0} s left"
                );
            }
        });
        bar.finish_and_clear();
        result
    })
    .await?
    .map_err(|e| {
        problem(
            Exit::Failure,
            format!("{e}"),
            "twin tune",
            "try a smaller --nodes or another --seed",
        )
    })?;
    let chosen = &rows[best];
    if args.json {
        println!(
            "{}",
            serde_json::json!({"loss": loss, "rows": rows, "recommended": chosen})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "twin tune: loss {:.1}% on every link, {} iterations of node-failure per row, {} s soak",
        loss * 100.0,
        args.iterations,
        args.soak_s
    )?;
    writeln!(
        out,
        "{:>9} {:>7} {:>10} {:>10} {:>10} {:>18} {:>12}",
        "probe_ms",
        "misses",
        "suspect_ms",
        "MTTR p50",
        "MTTR p95",
        "false down/link/h",
        "ctrl B/node/s"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:>9} {:>7} {:>10} {:>10.1} {:>10.1} {:>18.2} {:>12.0}",
            r.probe_interval_ms,
            r.probe_misses_max,
            r.suspect_probe_interval_ms,
            r.mttr_p50_ms,
            r.mttr_p95_ms,
            r.false_down_per_link_hour,
            r.control_bytes_per_node_per_second
        )?;
    }
    writeln!(
        out,
        "recommended: [protocol] probe_interval_ms = {}, probe_misses_max = {}, suspect_probe_interval_ms = {} (MTTR p95 {:.1} ms, {:.2} false neighbour-down per link per hour)",
        chosen.probe_interval_ms,
        chosen.probe_misses_max,
        chosen.suspect_probe_interval_ms,
        chosen.mttr_p95_ms,
        chosen.false_down_per_link_hour
    )?;
    if let Some(note) = flat_p50_note(&rows) {
        writeln!(out, "{note}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the median MTTR of one probe interval stops growing with the miss threshold,
/// when the rows show it (same p50 within 2 % at two thresholds).
fn flat_p50_note(rows: &[x0tta6bl4_twin::tune::TuneRow]) -> Option<String> {
    let flat: Vec<String> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, a)| rows[i + 1..].iter().map(move |b| (a, b)))
        .filter(|(a, b)| {
            a.probe_interval_ms == b.probe_interval_ms
                && a.suspect_probe_interval_ms == b.suspect_probe_interval_ms
                && a.samples > 0
                && b.samples > 0
                && (a.mttr_p50_ms - b.mttr_p50_ms).abs() <= 0.02 * a.mttr_p50_ms
        })
        .map(|(a, b)| {
            format!(
                "{} ms at {} and {} misses",
                a.probe_interval_ms, a.probe_misses_max, b.probe_misses_max
            )
        })
        .collect();
    (!flat.is_empty()).then(|| {
        format!(
            "note: same MTTR p50 for {}: {FLAT_P50_REASON}",
            flat.join(", ")
        )
    })
}

/// Why MTTR p50 stops growing with `probe_misses_max` (also in `twin tune --help`).
const FLAT_P50_REASON: &str = "before a silent neighbour's dead interval \
(probe_interval_ms x probe_misses_max) runs out, each unanswered probe raises the link's loss \
estimate; the link's cost rises with it and, past healing.degraded_loss (20 %), the link is \
marked degraded (cost x10) and re-advertised, so most flows move off a failed node after about \
6 probe intervals whatever the miss threshold. Above that many misses the threshold sets only \
the tail (p95: flows from the failed node's own neighbours) and the false alarms.";

/// `twin topology`.
pub async fn topology(args: &TwinTopologyArgs) -> anyhow::Result<()> {
    let topology = load_topology(&args.topology, args.nodes, args.seed).await?;
    if args.json {
        let links: Vec<_> = topology
            .links
            .iter()
            .map(|l| {
                serde_json::json!({
                    "source": topology.names[l.a as usize],
                    "target": topology.names[l.b as usize],
                    "latency_ms": l.params.latency.as_secs_f64() * 1e3,
                    "loss": l.params.loss,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"nodes": topology.names, "links": links})
        );
    } else {
        let components = topology.components().len();
        println!(
            "{} nodes, {} links, {components} connected component(s) ({})",
            topology.len(),
            topology.links.len(),
            args.topology
        );
    }
    Ok(())
}

/// The run's results in Prometheus text format (`deploy/monitoring/twin-metrics.txt`
/// lists the names the digital-twin dashboard reads).
pub fn metrics_text(r: &x0tta6bl4_twin::Report) -> String {
    let labels = format!(
        "scenario=\"{}\",topology=\"{}\"",
        escape_label(&r.scenario),
        escape_label(&r.topology)
    );
    let mut out = String::new();
    out.push_str("# HELP x0tta6bl4_twin_mttr_seconds Data-plane outage of measured flows in the twin, by quantile.\n# TYPE x0tta6bl4_twin_mttr_seconds gauge\n");
    for (q, v) in [
        ("0.5", r.mttr_ms.p50),
        ("0.95", r.mttr_ms.p95),
        ("0.99", r.mttr_ms.p99),
    ] {
        out.push_str(&format!(
            "x0tta6bl4_twin_mttr_seconds{{{labels},quantile=\"{q}\"}} {}\n",
            v / 1e3
        ));
    }
    let single = [
        (
            "converged_seconds",
            "Simulated time until the mesh first converged.",
            r.converged_ms / 1e3,
        ),
        (
            "unreachable_pairs",
            "Connected pairs without a working path after the scenario, summed over iterations.",
            r.unreachable_pairs_after_heal as f64,
        ),
        ("nodes", "Simulated nodes.", r.nodes as f64),
        (
            "sim_seconds_per_wall_second",
            "Simulated seconds per wall-clock second of the run.",
            r.sim_seconds_per_wall_second,
        ),
    ];
    for (name, help, value) in single {
        out.push_str(&format!("# HELP x0tta6bl4_twin_{name} {help}\n# TYPE x0tta6bl4_twin_{name} gauge\nx0tta6bl4_twin_{name}{{{labels}}} {value}\n"));
    }
    out
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_twin::tune::TuneRow;

    fn row(interval: u64, misses: u32, p50: f64) -> TuneRow {
        TuneRow {
            probe_interval_ms: interval,
            probe_misses_max: misses,
            suspect_probe_interval_ms: 0,
            mttr_p50_ms: p50,
            mttr_p95_ms: p50 * 1.2,
            samples: 100,
            false_down_per_link_hour: 0.0,
            control_bytes_per_node_per_second: 3000.0,
        }
    }

    /// `twin tune` explains a median that does not move with the miss threshold, and
    /// only then.
    #[test]
    fn a_flat_p50_is_explained() {
        let rows = [
            row(50, 3, 160.1),
            row(50, 6, 292.1),
            row(50, 8, 292.1),
            row(100, 6, 559.9),
            row(100, 8, 600.0),
        ];
        let note = flat_p50_note(&rows).unwrap();
        assert!(
            note.starts_with("note: same MTTR p50 for 50 ms at 6 and 8 misses: ")
                && note.contains("healing.degraded_loss"),
            "{note}"
        );
        assert!(!note.contains("100 ms"), "{note}");
        assert_eq!(flat_p50_note(&rows[..2]), None);
    }
}
