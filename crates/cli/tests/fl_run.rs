//! `x0tta6bl4 fl run`: federated learning over real node processes on loopback, with a
//! participant and then the coordinator's host killed (SIGKILL) mid-training; every
//! round, a planned rollback and the coordinator change are committed by the PBFT
//! committee, and every node's audit trail verifies and agrees with the others.

mod common;

use std::collections::BTreeMap;

use common::{code, path, run, stderr, stdout};

/// Removes the kept run directory when the test ends, passed or not.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ten nodes, six rounds of digits/logreg: after round 3 the coordinator asks for a
/// rollback to version 2, which the committee commits and every live node adopts;
/// after the coordinator's host is killed the committee commits a coordinator change,
/// the rounds go on under the coordinator it chose, every node's trail verifies (`fl
/// verify`, the rollback checked against version 2's model) and all trails hold the
/// same block at every common height, and the model is good.
#[test]
fn training_continues_under_the_coordinator_the_committee_chose() {
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
        "--rollback-after",
        "3",
        "--rollback-to",
        "2",
        "--json",
        "--keep-dir",
    ]);
    let text = stdout(&output);
    let report: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("one JSON object ({e}): {text}\n{}", stderr(&output)));
    let dir = std::path::PathBuf::from(report["dir"].as_str().expect("--keep-dir names it"));
    let _cleanup = RemoveOnDrop(dir.clone());
    assert_eq!(code(&output), 0, "{report:#}\n{}", stderr(&output));
    assert_eq!(report["continued"], true, "{report:#}");
    let kills = report["kills"].as_array().unwrap();
    assert_eq!(kills.len(), 2, "{report:#}");
    assert_eq!(kills[0]["role"], "participant");
    assert_eq!(kills[1]["role"], "coordinator's host");
    let host = kills[1]["node"].as_str().unwrap();
    let killed_after = kills[1]["after_round"].as_u64().unwrap();
    // The committee committed the coordinator change.
    let handovers = report["handovers"].as_array().unwrap();
    assert_eq!(handovers.len(), 1, "{report:#}");
    let change = &handovers[0];
    assert_eq!(change["replaces"], host, "{report:#}");
    let chosen = change["node"].as_str().unwrap();
    assert_ne!(chosen, host);
    let change_height = change["height"].as_u64().unwrap();
    // After the failover silence (4 s, counted from the last delivery before the kill).
    assert!(
        report["handover_ms"].as_u64().unwrap() >= 3000,
        "{report:#}"
    );
    let rounds = report["rounds_run"].as_array().unwrap();
    for r in rounds {
        let (round, height) = (r["round"].as_u64().unwrap(), r["height"].as_u64().unwrap());
        let by = r["coordinator"].as_str().unwrap();
        if round <= killed_after {
            assert_eq!(by, host, "{report:#}");
        } else {
            assert!(height > change_height, "{report:#}");
            assert_eq!(
                by, chosen,
                "rounds after the change come from the chosen node"
            );
        }
    }
    assert!(
        rounds.iter().any(|r| r["coordinator"] == chosen),
        "{report:#}"
    );
    assert!(
        rounds.last().unwrap()["round"].as_u64().unwrap() >= 6,
        "{report:#}"
    );
    // The change resumed from the last committed model: the version of the last round
    // committed before it.
    let last_before = rounds
        .iter()
        .filter(|r| r["height"].as_u64().unwrap() < change_height)
        .map(|r| r["height"].as_u64().unwrap())
        .max();
    assert_eq!(change["model_version"].as_u64(), last_before, "{report:#}");
    // The rollback: committed once, after round 3 (or, when round 3 timed out on a busy
    // host, after the first round committed past it), asked by the coordinator in charge
    // then (the first, or the chosen one when it came after the change), naming version
    // 2's model, adopted by every node alive then (the participant victim was killed
    // after round 2, the first coordinator's host after round 4).
    assert_eq!(report["rolled_back"], true, "{report:#}");
    let rollbacks = report["rollbacks"].as_array().unwrap();
    assert_eq!(rollbacks.len(), 1, "{report:#}");
    let rollback = &rollbacks[0];
    assert_eq!(rollback["to"], 2, "{report:#}");
    let rollback_height = rollback["height"].as_u64().unwrap();
    let after_change = rollback_height > change_height;
    let asker = if after_change { chosen } else { host };
    assert_eq!(rollback["coordinator"], asker, "{report:#}");
    let mut adopted: Vec<&str> = rollback["adopted_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    adopted.sort_unstable();
    adopted.dedup();
    let alive = if after_change { 8 } else { 9 };
    assert_eq!(
        adopted.len(),
        alive,
        "every node alive at the rollback: {report:#}"
    );
    assert!(!adopted.contains(&kills[0]["node"].as_str().unwrap()));
    if after_change {
        assert!(!adopted.contains(&host), "{report:#}");
    }
    let round_before = rounds
        .iter()
        .filter(|r| r["height"].as_u64().unwrap() < rollback_height)
        .max_by_key(|r| r["height"].as_u64().unwrap())
        .map(|r| r["round"].as_u64().unwrap());
    assert!(
        round_before.is_some_and(|round| round >= 3),
        "the rollback follows round 3 or a later one: {report:#}"
    );
    assert!(
        rounds
            .iter()
            .any(|r| r["height"].as_u64().unwrap() > rollback_height),
        "rounds go on after the rollback: {report:#}"
    );
    // Every node's trail, the killed ones' included, verifies with `fl verify`, and
    // all hold the same block hash (model) at every common version.
    let trails = report["trails"].as_array().unwrap();
    assert_eq!(trails.len(), 10, "{report:#}");
    assert_eq!(report["trail_conflicts"], 0, "{report:#}");
    let mut models: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let top = report["heights"].as_u64().unwrap();
    for t in trails {
        let node = t["node"].as_str().unwrap();
        assert_eq!(t["verified"], true, "{t}");
        let audit = dir.join(node).join("fl-audit");
        let verified = run(&["fl", "verify", "--audit", path(&audit)]);
        assert_eq!(code(&verified), 0, "{node}: {}", stderr(&verified));
        if node == host {
            // `fl rollback` runs the in-process committee; a mesh trail has no keys.
            let refused = run(&["fl", "rollback", "1", "--audit", path(&audit)]);
            assert_eq!(code(&refused), 2, "{}", stderr(&refused));
            assert!(
                stderr(&refused).contains("--rollback-after"),
                "{}",
                stderr(&refused)
            );
        }
        let listed = run(&["fl", "models", "--json", "--audit", path(&audit)]);
        let versions: serde_json::Value = serde_json::from_str(stdout(&listed).trim()).unwrap();
        let versions = versions.as_array().unwrap();
        if node != host && node != kills[0]["node"] {
            assert_eq!(
                versions.len() as u64,
                top,
                "survivor {node} holds every block"
            );
        }
        for v in versions {
            // Every decision carries its proposer's signature; a round's is its
            // coordinator's (`fl verify` above checked the signatures).
            assert!(v["signed_by"].is_string(), "{node}: {v}");
            if v["handover"].is_null() {
                assert_eq!(v["signed_by"], v["coordinator"], "{node}: {v}");
            }
            let version = v["version"].as_u64().unwrap();
            let model = v["model"].as_str().unwrap().to_owned();
            if version == rollback_height {
                assert_eq!(v["rollback_to"], 2, "{node}: {v}");
                assert_eq!(
                    v["model"], versions[1]["model"],
                    "{node}: version 2's model"
                );
                assert_eq!(v["model"].as_str(), rollback["model_hash"].as_str());
            }
            match models.get(&version) {
                Some((other, first)) => assert_eq!(
                    &model, first,
                    "version {version}: {node} and {other} disagree"
                ),
                None => {
                    models.insert(version, (node.to_owned(), model));
                }
            }
        }
    }
    let accuracy = report["final_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "final accuracy {accuracy}: {report:#}");
    eprintln!(
        "fl run: {} committed rounds, {} blocks, handover {} ms after the kill, final accuracy {accuracy:.3}, {:.1} s",
        rounds.len(),
        top,
        report["handover_ms"],
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["fl", "run", "--nodes", "3"][..],
        &["fl", "run", "--nodes", "6"][..],
        &["fl", "run", "--committee-f", "1"][..],
        &["fl", "run", "--committee-f", "3", "--nodes", "9"][..],
        &["fl", "run", "--epoch-len", "0"][..],
        &["fl", "run", "--rounds", "2"][..],
        &["fl", "run", "--rollback-after", "3"][..],
        &["fl", "run", "--rollback-after", "0", "--rollback-to", "1"][..],
        &["fl", "run", "--rollback-after", "12", "--rollback-to", "1"][..],
        &["fl", "run", "--rollback-after", "3", "--rollback-to", "0"][..],
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
