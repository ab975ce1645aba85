//! `x0tta6bl4 twin fl`: federated learning in the twin through the real binary, and its
//! refusals of bad arguments.

mod common;

use common::{code, run, stderr, stdout};

fn twin_fl(data: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "twin",
        "fl",
        "--topology",
        "ring:loss=0.01",
        "--nodes",
        "12",
        "--rounds",
        "3",
        "--seed",
        "2",
        "--data-dir",
        data,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn reports_rounds_accuracy_and_commits_as_json() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let data = data.to_str().unwrap();
    let out = twin_fl(
        data,
        &[
            "--participants-per-round",
            "5",
            "--stragglers",
            "0.2",
            "--dropouts",
            "0.1",
            "--json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["topology"], "ring:loss=0.01");
    assert_eq!(r["nodes"], 12);
    assert_eq!(r["last_round"], 3);
    assert_eq!(r["conflicting_commits"], 0);
    assert_eq!(r["stragglers"], 2);
    let rounds = r["round_log"].as_array().unwrap();
    assert_eq!(rounds.len() as u64, r["rounds_committed"].as_u64().unwrap());
    assert_eq!(
        r["accuracy_per_round"].as_array().unwrap().len(),
        rounds.len()
    );
    assert!(r["final_accuracy"].as_f64().unwrap() > 0.3, "{r}");
    for key in [
        "committee_commits",
        "handovers",
        "sim_seconds_per_round",
        "frames_lost",
        "fl_messages_sent",
        "wall_seconds",
    ] {
        assert!(r.get(key).is_some(), "missing {key}: {r}");
    }
    // The text report names the same figures.
    let text = twin_fl(data, &["--participants-per-round", "5"]);
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    assert!(
        stdout(&text).contains("conflicting commits: 0"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn bad_arguments_exit_2_with_what_where_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().to_str().unwrap();
    for (extra, says) in [
        (vec!["--partition", "at=5"], "--partition"),
        (vec!["--partition", "at=5,for=2,side=3"], "--partition"),
        (
            vec!["--participants-per-round", "12"],
            "participants per round",
        ),
        (
            vec!["--participants-per-round", "5", "--dropouts", "1.5"],
            "drop-outs",
        ),
        (
            vec!["--participants-per-round", "5", "--byzantine-mode", "loud"],
            "--byzantine-mode",
        ),
        (
            vec![
                "--participants-per-round",
                "5",
                "--committee-f",
                "1",
                "--byzantine-validators",
                "2",
            ],
            "guarantees safety for at most 1",
        ),
    ] {
        let out = twin_fl(empty, &extra);
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{extra:?}: {}", stderr(&out));
    }
    // Missing data: named, with the script that writes it.
    let out = twin_fl(empty, &["--participants-per-round", "5"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fetch-fl-data.py"),
        "{}",
        stderr(&out)
    );
}

/// Byzantine validators and a leader crash through the binary: the run reports what
/// they did, and `twin fl-byzantine` sweeps seeds and exits 0 only without conflicts.
#[test]
fn byzantine_validators_and_a_leader_crash_are_reported() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let data = data.to_str().unwrap();
    let out = twin_fl(
        data,
        &[
            "--participants-per-round",
            "5",
            "--committee-f",
            "2",
            "--byzantine-validators",
            "2",
            "--byzantine-mode",
            "equivocate",
            "--json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["conflicting_commits"], 0, "{r}");
    assert_eq!(r["last_round"], 3, "{r}");
    assert_eq!(
        r["byzantine_validators"].as_array().unwrap().len(),
        2,
        "{r}"
    );
    assert!(r["forged_messages"].as_u64().unwrap() > 0, "{r}");
    let out = twin_fl(
        data,
        &[
            "--participants-per-round",
            "5",
            "--view-timeout-ms",
            "250",
            "--crash-leader-at-round",
            "2",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("crashed at"), "{}", stdout(&out));
    let out = run(&[
        "twin",
        "fl-byzantine",
        "--seeds",
        "2",
        "--data-dir",
        data,
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(r["conflicting_commits"], 0, "{r}");
    assert_eq!(r["leader_crash_within_1s"], true, "{r}");
    assert_eq!(r["sweeps"].as_array().unwrap().len(), 2, "{r}");
}
