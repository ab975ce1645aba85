//! `x0tta6bl4 fl bench`'s training flags (local epochs, momentum, server optimizer),
//! run as a user would on scikit-learn's digits.

mod common;

use common::{code, path, run, stderr, stdout};

fn bench(data: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "fl",
        "bench",
        "--dataset",
        "digits",
        "--data-dir",
        data,
        "--participants",
        "10",
        "--per-round",
        "5",
        "--model",
        "logreg",
        "--lr",
        "0.1",
        "--batch",
        "16",
        "--rounds",
        "3",
        "--json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn training_flags_reach_the_run_and_the_report() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let d = path(&data);
    let out = bench(
        d,
        &[
            "--local-epochs",
            "2",
            "--momentum",
            "0.9",
            "--server-lr",
            "0.8",
            "--server-momentum",
            "0.5",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["local_epochs"], 2);
    assert_eq!(r["momentum"], 0.9);
    assert_eq!(r["server_lr"], 0.8);
    assert_eq!(r["server_momentum"], 0.5);
    assert_eq!(r["accuracy_per_round"].as_array().unwrap().len(), 3);
    assert!(r["final_accuracy"].as_f64().unwrap() > 0.5, "{r}");
    // The defaults are plain FedAvg with plain local SGD, one epoch.
    let plain = bench(d, &[]);
    assert_eq!(code(&plain), 0, "{}", stderr(&plain));
    let p: serde_json::Value = serde_json::from_str(&stdout(&plain)).unwrap();
    assert_eq!(p["local_epochs"], 1);
    assert_eq!(p["momentum"], 0.0);
    assert_eq!(p["server_lr"], 1.0);
    assert_eq!(p["server_momentum"], 0.0);
    assert_ne!(p["accuracy_per_round"], r["accuracy_per_round"]);
}

#[test]
fn out_of_range_training_flags_are_usage_errors() {
    // Checked before any data is read.
    for (flag, value) in [
        ("--momentum", "1"),
        ("--server-momentum", "=-0.1"),
        ("--server-lr", "0"),
        ("--local-epochs", "0"),
    ] {
        let arg = if let Some(v) = value.strip_prefix('=') {
            vec![format!("{flag}={v}")]
        } else {
            vec![flag.to_string(), value.to_string()]
        };
        let arg: Vec<&str> = arg.iter().map(String::as_str).collect();
        let out = bench("/nonexistent", &arg);
        assert_eq!(code(&out), 2, "{flag} {value}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("x0tta6bl4: "), "{err}");
        assert!(
            err.contains(flag) || err.contains("--epochs"),
            "{flag}: {err}"
        );
    }
}

/// `--model cnn`: a real convolution (3x3 on digits' 8x8 images, 8 filters by default)
/// trains through the binary, the report names it, and its update is the CNN's size.
#[test]
fn the_cnn_model_trains_and_is_named_in_the_report() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let out = run(&[
        "fl",
        "bench",
        "--dataset",
        "digits",
        "--data-dir",
        path(&data),
        "--participants",
        "10",
        "--per-round",
        "5",
        "--model",
        "cnn",
        "--channels",
        "6",
        "--lr",
        "0.3",
        "--local-epochs",
        "5",
        "--rounds",
        "5",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["model"], "cnn(6)", "{r}");
    let acc: Vec<f64> = r["accuracy_per_round"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .collect();
    assert_eq!(acc.len(), 5);
    // 6 x 3x3 filters and biases, then 6 x 3x3 pooled values to 10 classes.
    let params = 6 * 9 + 6 + 54 * 10 + 10;
    let dense = r["dense_bytes_per_round"].as_f64().unwrap();
    assert!(
        dense >= (5 * params * 4) as f64,
        "{dense} for {params} parameters"
    );
    // It learns: 34 % after round 1, 77 % after round 5 at seed 1.
    assert!(acc[4] > acc[0] + 0.2 && acc[4] > 0.6, "{acc:?}");
}

/// Deep Gradient Compression's refinements of top-k reach the run and the report, and
/// `--plot-with` draws an earlier run's curve (here the dense one) next to this run's.
#[test]
fn top_k_refinements_reach_the_report_and_plot_with_draws_the_dense_run() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let d = path(&data);
    let dir = tempfile::tempdir().unwrap();
    let dense = bench(d, &[]);
    assert_eq!(code(&dense), 0, "{}", stderr(&dense));
    let dense_json = dir.path().join("dense.json");
    std::fs::write(&dense_json, stdout(&dense)).unwrap();
    let dense: serde_json::Value = serde_json::from_str(&stdout(&dense)).unwrap();
    assert_eq!(dense["compression"], "dense");
    let svg = dir.path().join("top-k.svg");
    let out = bench(
        d,
        &[
            "--top-k",
            "0.05",
            "--top-k-per-tensor",
            "--top-k-dense-max",
            "10",
            "--top-k-momentum",
            "0.5",
            "--top-k-warmup",
            "1",
            "--plot",
            path(&svg),
            "--plot-with",
            path(&dense_json),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let scheme = "top-k 0.05 per tensor, tensors of <= 10 dense, momentum correction 0.5, \
                  warm-up 1 rounds, error feedback";
    assert_eq!(r["compression"], scheme, "{r}");
    // logreg on digits: a 64x10 weight (top 5 %: 32 values) and 10 biases (dense).
    let (bytes, dense_bytes) = (
        r["bytes_per_round"].as_f64().unwrap(),
        r["dense_bytes_per_round"].as_f64().unwrap(),
    );
    assert!(bytes * 2.0 < dense_bytes, "{bytes} of {dense_bytes}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    // Each run's curve and its legend line, in its colour, and both labels.
    assert_eq!(drawn.matches(r##"stroke="#0000FF""##).count(), 2, "{drawn}");
    assert_eq!(drawn.matches(r##"stroke="#FF0000""##).count(), 2, "{drawn}");
    assert!(
        drawn.contains("\ntop-k 0.05 per tensor, tensors of &lt;= 10 dense"),
        "{drawn}"
    );
    assert!(drawn.contains("\ndense\n"), "{drawn}");
}

#[test]
fn bad_top_k_refinements_and_plot_with_files_are_usage_errors() {
    // Checked before any data is read.
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "round 1: 90 %").unwrap();
    let no_curve = dir.path().join("no-curve.json");
    std::fs::write(&no_curve, r#"{"accuracy_per_round": []}"#).unwrap();
    let svg = dir.path().join("x.svg");
    for (args, names) in [
        (
            vec!["--top-k", "0.01", "--top-k-momentum", "1"],
            "--top-k-momentum",
        ),
        (vec!["--top-k-warmup", "3"], "--top-k"),
        (
            vec!["--top-k", "0.01", "--top-k-dense-max", "9"],
            "--top-k-per-tensor",
        ),
        (
            vec!["--plot", path(&svg), "--plot-with", path(&not_json)],
            "not.json",
        ),
        (
            vec!["--plot", path(&svg), "--plot-with", path(&no_curve)],
            "no-curve.json",
        ),
    ] {
        let out = bench("/nonexistent", &args);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
    assert!(!svg.exists());
}
