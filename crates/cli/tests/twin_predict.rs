//! `twin train-predictor`, `twin train-ppo` and `twin run --routing`: a model (and a PPO
//! policy) is trained and used, a file that fails its hash check is refused with exit
//! code 2 before anything runs, and routings that do not exist or lack their model are
//! usage errors.

mod common;

use common::{code, path, run, stderr, stdout};

const RUN: [&str; 8] = [
    "twin",
    "run",
    "--topology",
    "grid",
    "--nodes",
    "9",
    "--scenario",
    "degrade-then-fail",
];

fn twin_run(extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = RUN.to_vec();
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn bad_routings_and_tampered_models_are_refused() {
    let ppo = twin_run(&["--routing", "ppo"]);
    assert_eq!(code(&ppo), 2, "{}", stderr(&ppo));
    assert!(stderr(&ppo).contains("--policy"), "{}", stderr(&ppo));
    let missing = twin_run(&["--routing", "cost,predict"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("--predictor"),
        "{}",
        stderr(&missing)
    );
    let unknown = twin_run(&["--routing", "ospf"]);
    assert_eq!(code(&unknown), 2);
    assert!(stderr(&unknown).contains("use cost, etx, predict or ppo"));

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    let trained = run(&[
        "twin",
        "train-predictor",
        "--topology",
        "grid",
        "--nodes",
        "9",
        "--iterations",
        "4",
        "--eval-iterations",
        "1",
        "--rounds",
        "3",
        "--out",
        path(&model),
    ]);
    assert_eq!(code(&trained), 0, "{}", stderr(&trained));
    assert!(
        stdout(&trained).contains("9 nodes federated"),
        "{}",
        stdout(&trained)
    );

    let used = twin_run(&[
        "--iterations",
        "2",
        "--routing",
        "predict",
        "--predictor",
        path(&model),
    ]);
    assert_eq!(code(&used), 0, "{}", stderr(&used));
    assert!(stdout(&used).contains("predictions"), "{}", stdout(&used));

    refused_once_tampered(&model, &["--routing", "cost,predict", "--predictor"]);
}

/// One parameter of the file at `model` changed, the hash left as written: `twin run`
/// with `args` and the file is refused with exit code 2 and nothing runs.
fn refused_once_tampered(model: &std::path::Path, args: &[&str]) {
    let text = std::fs::read_to_string(model).unwrap();
    let at = text.find("\"params\"").unwrap();
    let digit = text[at..].find(|c: char| c.is_ascii_digit()).unwrap() + at;
    let mut tampered = text.clone().into_bytes();
    tampered[digit] = if tampered[digit] == b'7' { b'3' } else { b'7' };
    std::fs::write(model, tampered).unwrap();
    let mut args = args.to_vec();
    args.push(path(model));
    let refused = twin_run(&args);
    assert_eq!(code(&refused), 2, "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("hash check failed"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stdout(&refused).is_empty(),
        "nothing ran: {}",
        stdout(&refused)
    );
}

#[test]
fn a_ppo_policy_is_trained_used_next_to_etx_and_refused_when_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    let trained = run(&[
        "twin",
        "train-ppo",
        "--topology",
        "grid:loss=0.05",
        "--topology",
        "ring:loss=0.05",
        "--nodes",
        "9",
        "--episodes",
        "2",
        "--out",
        path(&policy),
        "--json",
    ]);
    assert_eq!(code(&trained), 0, "{}", stderr(&trained));
    let lines: Vec<serde_json::Value> = stdout(&trained)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "two episodes and the summary");
    assert_eq!(lines[1]["topology"], "ring:loss=0.05");
    assert_eq!(lines[0]["participants"], 9);
    assert!(lines[2]["steps"].as_u64() > Some(0));

    let used = twin_run(&[
        "--iterations",
        "2",
        "--routing",
        "etx,ppo",
        "--policy",
        path(&policy),
    ]);
    assert_eq!(code(&used), 0, "{}", stderr(&used));
    assert!(stdout(&used).contains("ppo vs etx"), "{}", stdout(&used));

    let without = twin_run(&["--routing", "etx", "--policy", path(&policy)]);
    assert_eq!(code(&without), 2);
    assert!(
        stderr(&without).contains("--routing ppo"),
        "{}",
        stderr(&without)
    );

    refused_once_tampered(&policy, &["--routing", "etx,ppo", "--policy"]);
    let bad = run(&[
        "twin",
        "train-ppo",
        "--episodes",
        "0",
        "--out",
        path(&policy),
    ]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
}
