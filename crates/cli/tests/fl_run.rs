//! `x0tta6bl4 fl run`: federated learning over real node processes on loopback, with a
//! participant and then the coordinator's host killed (SIGKILL) mid-training.

mod common;

use common::{code, path, run, stderr, stdout};

/// Ten nodes, six rounds of digits/logreg: the coordinator role passes to the next node
/// after its host is killed, the last round is reached and the model is good.
#[test]
fn training_continues_after_a_participant_and_the_coordinator_are_killed() {
    let Some(data) = common::digits_data() else {
        return;
    };
    let started = std::time::Instant::now();
    let output = run(&[
        "fl",
        "run",
        "--nodes",
        "10",
        "--rounds",
        "6",
        "--seed",
        "3",
        "--dataset",
        "digits",
        "--data-dir",
        path(&data),
        "--round-timeout-ms",
        "1500",
        "--failover-ms",
        "4000",
        "--json",
    ]);
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "{text}\n{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(report["continued"], true, "{report:#}");
    let kills = report["kills"].as_array().unwrap();
    assert_eq!(kills.len(), 2, "{report:#}");
    assert_eq!(kills[0]["role"], "participant");
    assert_eq!(kills[1]["role"], "coordinator's host");
    let host = kills[1]["node"].as_str().unwrap();
    let killed_after = kills[1]["after_round"].as_u64().unwrap();
    let rounds = report["rounds_run"].as_array().unwrap();
    let before: Vec<_> = rounds
        .iter()
        .filter(|r| r["round"].as_u64().unwrap() <= killed_after)
        .collect();
    let after: Vec<_> = rounds
        .iter()
        .filter(|r| r["round"].as_u64().unwrap() > killed_after)
        .collect();
    assert!(
        before.iter().all(|r| r["coordinator"] == host),
        "{report:#}"
    );
    assert!(!after.is_empty(), "{report:#}");
    assert!(after.iter().all(|r| r["coordinator"] != host), "{report:#}");
    assert_eq!(rounds.last().unwrap()["round"], 6, "{report:#}");
    // The successor came from the handover, and said why.
    let handovers = report["handovers"].as_array().unwrap();
    assert!(handovers.len() >= 2, "{report:#}");
    assert!(
        handovers[1]["reason"].as_str().unwrap().contains("silent"),
        "{report:#}"
    );
    let accuracy = report["final_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "final accuracy {accuracy}: {report:#}");
    eprintln!(
        "fl run: {} rounds, final accuracy {accuracy:.3}, {:.1} s",
        rounds.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["fl", "run", "--nodes", "3"][..],
        &["fl", "run", "--rounds", "2"][..],
        &[
            "fl",
            "run",
            "--failover-ms",
            "1000",
            "--round-timeout-ms",
            "2000",
        ][..],
    ] {
        let output = run(args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("x0tta6bl4: "),
            "{}",
            stderr(&output)
        );
    }
}
