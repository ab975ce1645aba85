//! `twin train-predictor` and `twin run --routing`: a model is trained and used, a model
//! file that fails its hash check is refused with exit code 2 before anything runs, and
//! routings that do not exist or lack their model are usage errors.

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
    assert!(
        stderr(&ppo).contains("not available yet"),
        "{}",
        stderr(&ppo)
    );
    let missing = twin_run(&["--routing", "cost,predict"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("--predictor"),
        "{}",
        stderr(&missing)
    );
    let unknown = twin_run(&["--routing", "ospf"]);
    assert_eq!(code(&unknown), 2);
    assert!(stderr(&unknown).contains("use cost, etx or predict"));

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

    // One weight changed, the hash left as written: refused, nothing runs.
    let text = std::fs::read_to_string(&model).unwrap();
    let at = text.find("\"params\"").unwrap();
    let digit = text[at..].find(|c: char| c.is_ascii_digit()).unwrap() + at;
    let mut tampered = text.clone().into_bytes();
    tampered[digit] = if tampered[digit] == b'7' { b'3' } else { b'7' };
    std::fs::write(&model, tampered).unwrap();
    let refused = twin_run(&["--routing", "cost,predict", "--predictor", path(&model)]);
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
