//! The measurement loop of `x0tta6bl4 rag bench` without the rest of the binary, for
//! building only this crate: `cargo run -p x0tta6bl4-rag --example rag_bench --
//! DATASET [--export DIR] [--queries N] [--no-model] INDEX...`. Prints one JSON object per index
//! (the same [`bench::BenchReport`] the command prints with `--json`).

use x0tta6bl4_rag::bench::{self, DatasetName};
use x0tta6bl4_rag::embed::Embedder;
use x0tta6bl4_rag::index::IndexSpec;

fn main() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let no_model = args.iter().any(|a| a == "--no-model");
    args.retain(|a| a != "--no-model");
    let export = args.iter().position(|a| a == "--export").map(|i| {
        let dir = args.get(i + 1).cloned().unwrap_or_default();
        args.drain(i..(i + 2).min(args.len()));
        std::path::PathBuf::from(dir)
    });
    let queries = args.iter().position(|a| a == "--queries").map(|i| {
        let n = args.get(i + 1).cloned().unwrap_or_default();
        args.drain(i..(i + 2).min(args.len()));
        n
    });
    let queries = queries
        .map(|n| match n.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--queries `{n}` is not a positive number")),
        })
        .transpose()?;
    let (dataset, specs) = args
        .split_first()
        .ok_or("usage: rag_bench DATASET [--export DIR] [--queries N] [--no-model] INDEX...")?;
    let name = DatasetName::parse(dataset)?;
    let specs = specs
        .iter()
        .map(|s| IndexSpec::parse(s).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let model = if no_model && !matches!(name, DatasetName::LinuxDoc { .. }) {
        None
    } else {
        Some(Embedder::load_default().map_err(|e| e.to_string())?)
    };
    let mut data = match name {
        DatasetName::Synthetic { n } => bench::synthetic(n),
        DatasetName::LinuxDoc { max } => bench::linux_doc(
            max,
            model.as_ref().expect("loaded"),
            &bench::default_cache_dir(),
            &mut |l| eprintln!("{l}"),
        )?,
    };
    if let Some(n) = queries {
        data.keep_queries(n);
    }
    let truth = bench::ground_truth(&data, 10);
    if let Some(dir) = export {
        bench::export(&data, &truth, &dir)?;
    }
    let scratch = std::env::temp_dir();
    for spec in &specs {
        // --no-model: no end-to-end figures (the model is still needed to embed an
        // uncached linux-doc data set).
        let e2e = if no_model { None } else { model.as_ref() };
        let r = bench::run(&data, &truth, spec, e2e, &scratch)?;
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    }
    Ok(())
}
