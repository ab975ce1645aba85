//! `x0tta6bl4 fl bench --audit`, `fl models`, `fl show`, `fl rollback`, `fl verify` and
//! `fl committee-bench`, run as a user would.

mod common;

use common::{code, path, run, stderr, stdout};

fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
    stdout(&output)
}

#[test]
fn committed_versions_list_show_roll_back_and_verify() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let a = path(&audit);
    let bench = [
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
        "logreg",
        "--rounds",
        "3",
        "--seed",
        "2",
        "--audit",
        a,
        "--json",
    ];
    let report: serde_json::Value = serde_json::from_str(&ok(&bench)).unwrap();
    let acc = report["accuracy_per_round"].as_array().unwrap().clone();
    assert_eq!(acc.len(), 3);
    let models: serde_json::Value =
        serde_json::from_str(&ok(&["fl", "models", "--audit", a, "--json"])).unwrap();
    let rows = models.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (row, acc) in rows.iter().zip(&acc) {
        assert_eq!(row["accuracy"], *acc, "{row}");
        assert!(row["signers"].as_array().unwrap().len() >= 3, "{row}");
    }
    let table = ok(&["fl", "models", "--audit", a]);
    assert!(
        table.contains("version") && table.lines().count() == 4,
        "{table}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["fl", "show", "2", "--audit", a])).unwrap();
    assert_eq!(shown["block"]["height"], 2);
    assert_eq!(shown["parameters"], 64 * 10 + 10);
    let out = ok(&["fl", "rollback", "1", "--audit", a]);
    assert!(
        out.contains("version 4 committed: rollback to version 1"),
        "{out}"
    );
    let models: serde_json::Value =
        serde_json::from_str(&ok(&["fl", "models", "--audit", a, "--json"])).unwrap();
    let rows = models.as_array().unwrap();
    assert_eq!(rows[3]["rollback_to"], 1);
    assert_eq!(rows[3]["model"], rows[0]["model"]);
    let out = ok(&["fl", "verify", "--audit", a]);
    assert!(out.starts_with("4 blocks verified"), "{out}");
    // A second bench run extends the same chain.
    ok(&bench);
    assert!(ok(&["fl", "verify", "--audit", a]).starts_with("7 blocks verified"));
    // Bad input: an unknown version, a flipped byte in block 5.
    let output = run(&["fl", "show", "99", "--audit", a]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("no version 99"),
        "{}",
        stderr(&output)
    );
    let log = audit.join("audit.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let line5 = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(3)
        .map(|(i, _)| i + 1)
        .unwrap();
    bytes[line5 + 60] ^= 0x04;
    std::fs::write(&log, &bytes).unwrap();
    let output = run(&["fl", "verify", "--audit", a]);
    assert_eq!(code(&output), 1);
    let err = stderr(&output);
    assert!(
        err.starts_with("x0tta6bl4: ") && err.contains("block 5"),
        "{err}"
    );
    let output = run(&["fl", "rollback", "1", "--audit", a]);
    assert_eq!(code(&output), 1, "a damaged trail is not extended");
    assert!(stderr(&output).contains("block 5"), "{}", stderr(&output));
}

#[test]
fn committee_bench_prints_safety_and_crash_figures() {
    let out = ok(&["fl", "committee-bench", "--seeds", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["conflicting_commits"], 0, "{v}");
    assert_eq!(v["leader_crash_within_1s"], true, "{v}");
    let safety = v["safety"].as_array().unwrap();
    assert_eq!(safety.len(), 2);
    assert_eq!(safety[0]["committee"], 4);
    assert_eq!(safety[1]["committee"], 7);
    assert_eq!(safety[1]["seeds"], 3);
    let output = run(&["fl", "committee-bench", "--seeds", "0"]);
    assert_eq!(code(&output), 2);
}
