//! The `x0tta6bl4` command: the node daemon, the CA, a person's view of a node, and
//! the self-healing demo.
//!
//! Key design decision: this binary only glues. The protocol lives in
//! `x0tta6bl4-proto`, identity in `x0tta6bl4-identity`, the daemon in `x0tta6bl4-node`;
//! here are the command-line definitions ([`args`]), the error format and exit codes
//! ([`problem`]), and the demo's orchestration ([`demo`]), whose decisions (topology,
//! victims, MTTR) are pure functions tested on their own.
#![forbid(unsafe_code)]
#![deny(unused_must_use)]

mod api;
mod args;
mod ca;
mod dao_cmd;
mod demo;
mod fl_chain_cmd;
mod fl_cmd;
mod fl_run;
mod lab_cmd;
mod node_cmd;
mod problem;
mod rag_cmd;
mod rag_generate;
mod rag_metrics;
mod rag_serve;
mod status;
mod twin_cmd;
mod twin_fl;
mod twin_ppo;
mod twin_predict;

use std::process::ExitCode;

use clap::Parser as _;

use args::{CaCommand, Cli, Command, DemoArgs, LabCommand, TwinCommand};
use problem::{problem, report, Exit};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    // A node is a few timers and a socket: one thread runs it with fewer wake-ups and no
    // cross-thread hand-offs (its API server has its own thread). The rest (twin, fl,
    // rag, lab) use both cores.
    let mut builder = match cli.command {
        Command::Node(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let error = anyhow::Error::new(error).context(problem(
                Exit::Failure,
                "cannot start the async runtime",
                "tokio",
                "check the process limits (threads, file descriptors)",
            ));
            return report(&error);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// A reader that closes the pipe early (`x0tta6bl4 twin topology --json | head`) ends
/// the output, as it does for other Unix tools: exit quietly with 141 (128 + SIGPIPE)
/// instead of a panic and its backtrace. (The standard library ignores SIGPIPE, so that
/// a node writing to a closed socket gets an error instead of dying, which makes
/// `println!` to a closed stdout panic.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        let closed = message.is_some_and(|m| {
            m.starts_with("failed printing to stdout") && m.contains("Broken pipe")
        });
        if closed {
            std::process::exit(141);
        }
        default(info);
    }));
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Node(args) => node_cmd::run(&args).await?,
        Command::Ca(CaCommand::Init(args)) => ca::init(&args)?,
        Command::Ca(CaCommand::Issue(args)) => ca::issue(&args)?,
        Command::Ca(CaCommand::Inspect(args)) => return ca::inspect(&args),
        Command::Ca(CaCommand::Token(args)) => ca::token(&args)?,
        Command::Ca(CaCommand::Serve(args)) => ca::serve(&args).await?,
        Command::Ca(CaCommand::WorkloadApi(args)) => ca::workload_api(&args).await?,
        Command::Ca(CaCommand::Join(args)) => ca::join(&args).await?,
        Command::Ca(CaCommand::Revoke(args)) => ca::revoke(&args).await?,
        Command::Ca(CaCommand::RotateRoot(args)) => ca::rotate_root(&args)?,
        Command::Dao(dao_cmd::DaoCommand::Deploy(args)) => return dao_cmd::deploy(&args).await,
        Command::Dao(dao_cmd::DaoCommand::Execute(args)) => return dao_cmd::execute(&args).await,
        Command::Dao(command) => return dao_cmd::run(&command),
        Command::Status(args) => status::status(&args).await?,
        Command::Send(args) => status::send(&args).await?,
        Command::Demo(args) => return run_demo(&args).await,
        Command::Twin(TwinCommand::Run(args)) => return twin_cmd::run(&args).await,
        Command::Twin(TwinCommand::TrainPredictor(args)) => {
            return twin_predict::train(&args).await
        }
        Command::Twin(TwinCommand::TrainPpo(args)) => return twin_ppo::train(&args).await,
        Command::Twin(TwinCommand::Merge(args)) => return twin_cmd::merge(&args).await,
        Command::Twin(TwinCommand::Fuzz(args)) => return twin_cmd::fuzz(&args).await,
        Command::Twin(TwinCommand::Tune(args)) => return twin_cmd::tune_cmd(&args).await,
        Command::Twin(TwinCommand::Topology(args)) => twin_cmd::topology(&args).await?,
        Command::Twin(TwinCommand::Fl(args)) => return twin_fl::run(&args).await,
        Command::Twin(TwinCommand::FlByzantine(args)) => return twin_fl::byzantine(&args).await,
        Command::Lab(LabCommand::Run(args)) => return lab_cmd::run(&args).await,
        Command::Lab(LabCommand::Soak(args)) => return lab_cmd::soak(&args).await,
        Command::Lab(LabCommand::ProbeAgent(args)) => return lab_cmd::probe_agent(&args),
        Command::Rag(command) => return rag_cmd::run(command).await,
        Command::Fl(fl_cmd::FlCommand::Bench(args)) => return fl_cmd::bench(*args).await,
        Command::Fl(fl_cmd::FlCommand::Run(args)) => return fl_run::run(*args).await,
        Command::Fl(fl_cmd::FlCommand::Agent(args)) => {
            node_cmd::watch_parent();
            return fl_run::agent(*args).await;
        }
        Command::Fl(fl_cmd::FlCommand::CommitteeBench(args)) => {
            return fl_chain_cmd::committee_bench(&args)
        }
        Command::Fl(fl_cmd::FlCommand::Models(args)) => return fl_chain_cmd::models(&args),
        Command::Fl(fl_cmd::FlCommand::Show(args)) => return fl_chain_cmd::show(&args),
        Command::Fl(fl_cmd::FlCommand::Rollback(args)) => return fl_chain_cmd::rollback(&args),
        Command::Fl(fl_cmd::FlCommand::Verify(args)) => return fl_chain_cmd::verify(&args),
    }
    Ok(ExitCode::SUCCESS)
}

/// Run the demo until it ends or Ctrl-C; exit 0 only when the mesh healed.
async fn run_demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let report = tokio::select! {
        report = demo::run(args) => report?,
        _ = node_cmd::shutdown_signal() => {
            return Err(problem(
                Exit::Failure,
                "interrupted",
                "Ctrl-C or SIGTERM",
                "every node was stopped and every file removed",
            )
            .into());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if report.healed {
        return Ok(ExitCode::SUCCESS);
    }
    let replay = format!(
        "x0tta6bl4 demo --nodes {} --kill {} --degree {} --seed {}",
        args.nodes, args.kill, args.degree, report.seed
    );
    Err(problem(
        Exit::Failure,
        "the mesh did not heal",
        format!(
            "{} affected flows never recovered, {} survivor pairs unreachable",
            report.unhealed_flows.len(),
            report.unreachable_pairs_after_heal
        ),
        format!("replay with `{replay} --keep-dir` and read the node logs"),
    )
    .into())
}
