//! Sharded twin runs through the real binary: `twin run --shard I/N --out PART.json` in
//! separate processes, then `twin merge`, against the unsharded `twin run` (issue 13,
//! item 6).

mod common;

use std::path::{Path, PathBuf};

use common::{code, path, run, stderr, stdout};

/// A small study: 16-node grid, 8 node failures, so 8 shards still get one each.
const STUDY: [&str; 10] = [
    "--topology",
    "grid",
    "--nodes",
    "16",
    "--scenario",
    "node-failure",
    "--iterations",
    "8",
    "--seed",
    "11",
];

fn twin_run(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["twin", "run"];
    args.extend(STUDY);
    args.extend(extra);
    run(&args)
}

/// Run the study as `count` shards, each in its own process; returns the part files.
fn shards(dir: &Path, count: usize, study: &[&str]) -> Vec<PathBuf> {
    (0..count)
        .map(|index| {
            let part = dir.join(format!("part-{index}-of-{count}.json"));
            let shard = format!("{index}/{count}");
            let mut args = vec!["twin", "run"];
            args.extend(study);
            args.extend(["--shard", &shard, "--out", path(&part)]);
            let out = run(&args);
            assert_eq!(code(&out), 0, "shard {shard}: {}", stderr(&out));
            assert!(
                stdout(&out).contains(&format!("shard {shard}")),
                "{}",
                stdout(&out)
            );
            part
        })
        .collect()
}

fn merge(parts: &[&Path], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["twin", "merge"];
    args.extend(parts.iter().map(|p| path(p)));
    args.extend(extra);
    run(&args)
}

#[test]
fn merged_shards_print_the_unsharded_report_byte_for_byte() {
    let whole = twin_run(&["--json", "--no-wall-clock"]);
    assert_eq!(code(&whole), 0, "{}", stderr(&whole));
    let whole = stdout(&whole);
    let report: serde_json::Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(report["iterations"], 8);
    assert!(
        report["mttr_ms"]["samples"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report.get("wall_seconds").is_none(), "--no-wall-clock");
    let dir = tempfile::tempdir().unwrap();
    for count in [1, 3, 8] {
        let mut parts = shards(dir.path(), count, &STUDY);
        parts.reverse(); // any order
        let refs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
        let merged = merge(&refs, &["--json", "--no-wall-clock"]);
        assert_eq!(code(&merged), 0, "N = {count}: {}", stderr(&merged));
        assert_eq!(stdout(&merged), whole, "N = {count}: merged report differs");
    }
    // The other outputs match too: the CSV of every sample, and the report's figures
    // with wall-clock time (the merge's is the shards' sum).
    let parts = shards(dir.path(), 3, &STUDY);
    let refs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    let (whole_csv, merged_csv) = (dir.path().join("whole.csv"), dir.path().join("merged.csv"));
    let json_out = dir.path().join("report.json");
    let out = twin_run(&["--csv", path(&whole_csv)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = merge(
        &refs,
        &["--csv", path(&merged_csv), "--json-out", path(&json_out)],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("MTTR"), "a summary: {}", stdout(&out));
    assert_eq!(
        std::fs::read(&whole_csv).unwrap(),
        std::fs::read(&merged_csv).unwrap()
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    assert!(written["wall_seconds"].as_f64().unwrap() > 0.0, "{written}");
    assert_eq!(written["mttr_ms"], report["mttr_ms"]);
}

/// Exit code and message of `out`, checked: 2 and every needle in stderr.
fn refused(out: &std::process::Output, needles: &[&str]) {
    let text = stderr(out);
    assert_eq!(code(out), 2, "{text}");
    assert!(text.starts_with("x0tta6bl4: "), "{text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

#[test]
fn bad_shards_are_refused_before_anything_runs() {
    for (shard, needle) in [
        ("3/3", "0-based, 0 to 2"),
        ("5/3", "out of range"),
        ("0/0", "0 shards"),
        ("1", "is not I/N"),
        ("a/3", "not a whole number"),
        ("1/-2", "not a whole number"),
        ("0/9", "9 shards for 8 iterations"),
    ] {
        let out = twin_run(&["--shard", shard, "--out", "/nonexistent/p.json"]);
        refused(&out, &[needle, &format!("--shard {shard}")]);
    }
    let out = twin_run(&["--shard", "0/2", "--out", "p.json", "--json"]);
    refused(&out, &["--json", "twin merge"]);
    let out = twin_run(&["--shard", "0/2"]);
    assert_eq!(code(&out), 2, "--shard needs --out: {}", stderr(&out));
}

#[test]
fn merge_refuses_other_runs_missing_or_duplicated_shards_and_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let parts = shards(dir.path(), 3, &STUDY);
    let [p0, p1, p2] = [&parts[0], &parts[1], &parts[2]].map(PathBuf::as_path);

    refused(&merge(&[p0, p2], &[]), &["shards [1] of 3 are missing"]);
    refused(
        &merge(&[p0, p1, p1, p2], &[]),
        &["shard 1 is given twice", path(p1)],
    );

    // Another seed, another scenario, another shard count: another run.
    let other = tempfile::tempdir().unwrap();
    let mut seeded = STUDY;
    seeded[9] = "12";
    let q1 = &shards(other.path(), 3, &seeded)[1];
    refused(
        &merge(&[p0, q1, p2], &[]),
        &["another run", "seed", path(q1)],
    );
    let mut scenario = STUDY;
    scenario[5] = "link-failure";
    let q1 = &shards(other.path(), 3, &scenario)[1];
    refused(&merge(&[p0, q1, p2], &[]), &["another run", "scenario"]);
    let q0 = &shards(other.path(), 2, &STUDY)[0];
    refused(&merge(&[p0, p1, p2, q0], &[]), &["another run", "shards"]);
    // A setting that is not in the spec strings (flows per iteration) counts too.
    let mut flows = STUDY.to_vec();
    flows.extend(["--flows", "50"]);
    let q1 = &shards(other.path(), 3, &flows)[1];
    refused(&merge(&[p0, q1, p2], &[]), &["another run", "settings"]);

    // Damaged files name the file and what is wrong with it.
    let bytes = std::fs::read(p1).unwrap();
    let truncated = dir.path().join("truncated.json");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &merge(&[p0, &truncated, p2], &[]),
        &[path(&truncated), "damaged"],
    );
    let flipped = dir.path().join("flipped.json");
    let mut altered = bytes.clone();
    let at = altered.len() - 20;
    altered[at] ^= 1;
    std::fs::write(&flipped, &altered).unwrap();
    refused(
        &merge(&[p0, &flipped, p2], &[]),
        &[path(&flipped), "SHA-256"],
    );
    let stranger = dir.path().join("stranger.json");
    std::fs::write(&stranger, "{\"nodes\": 16}\n").unwrap();
    refused(
        &merge(&[p0, &stranger, p2], &[]),
        &[path(&stranger), "not a twin part file"],
    );
    let absent = dir.path().join("absent.json");
    refused(
        &merge(&[p0, &absent, p2], &[]),
        &[path(&absent), "cannot read"],
    );
}

/// `twin merge` fails as `twin run` does: the same study with no flow measured exits 1
/// either way, with the same message.
#[test]
fn merge_exits_like_run_on_a_failed_study() {
    let mut study = STUDY.to_vec();
    study.extend(["--flows", "0"]);
    let mut args = vec!["twin", "run"];
    args.extend(&study);
    let whole = run(&args);
    assert_eq!(code(&whole), 1, "{}", stderr(&whole));
    let dir = tempfile::tempdir().unwrap();
    let parts = shards(dir.path(), 2, &study);
    let refs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    let merged = merge(&refs, &[]);
    assert_eq!(code(&merged), 1, "{}", stderr(&merged));
    assert!(stderr(&merged).contains("no flow was measured"));
    assert_eq!(stderr(&merged), stderr(&whole));
}

/// A merge started before its shards finish waits for their parts (the Kubernetes merge
/// job), and gives up with exit 1 naming what is missing.
#[test]
fn merge_waits_for_parts_and_names_the_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late.json");
    let started = std::time::Instant::now();
    let out = merge(&[&late], &["--wait-s", "2"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        stderr(&out).contains("did not appear within 2 s") && stderr(&out).contains(path(&late)),
        "{}",
        stderr(&out)
    );
    let waiting = common::bin()
        .args(["twin", "merge", path(&late), "--wait-s", "60", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let parts = shards(dir.path(), 1, &STUDY);
    std::fs::rename(&parts[0], &late).unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("\"iterations\":8"));
}
