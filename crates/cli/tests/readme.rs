//! The README's commands, run as written: every ```sh block of README.md, in order, in
//! one bash session in a fresh directory, so an example that drifts from the tool fails
//! here.
//!
//! The directory looks like a fresh clone after `cargo build`: `target/release/x0tta6bl4`
//! and `target/debug/x0tta6bl4` are the binary under test, and a `cargo` shell function
//! stands in for `cargo build` (already done by `cargo test`) and `cargo run ... --`
//! (runs the binary under test). A block is skipped only when the README marks it with
//! `<!-- readme-test: skip (REASON) -->` on a line before it; the test prints every
//! skipped block with its reason. Background jobs (`node ... &`, Prometheus) are killed
//! when the session ends, and the whole process group when the test gives up.
//!
//! Prerequisites: bash, curl and Prometheus (Debian's `prometheus`, which
//! `scripts/test.sh` installs). Missing ones fail the test under `CI=true` and skip it
//! otherwise, with a message.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest time the whole README may take.
const TIMEOUT: Duration = Duration::from_secs(240);
/// The marker that skips the next block.
const SKIP_MARKER: &str = "<!-- readme-test: skip (";

/// One fenced ```sh block of the README.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The heading the block is under.
    section: String,
    /// The commands.
    text: String,
    /// Why the block is skipped, if it is.
    skip: Option<String>,
    /// The fenced block right after this one, when it is JSON (an output shown).
    shown_json: Option<String>,
}

/// Every ```sh block of `readme`, with its skip marker.
fn sh_blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks: Vec<Block> = Vec::new();
    let mut section = String::new();
    let mut skip: Option<String> = None;
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if let Some(rest) = line.trim().strip_prefix(SKIP_MARKER) {
            let reason = rest.strip_suffix(") -->").unwrap_or_else(|| {
                panic!(
                    "README.md:{}: a marker reads {SKIP_MARKER}REASON) -->",
                    index + 1
                )
            });
            skip = Some(reason.to_owned());
        } else if line.starts_with('#') {
            section = line.trim_start_matches('#').trim().to_owned();
        }
        let Some(language) = line.strip_prefix("```") else {
            index += 1;
            continue;
        };
        let start = index;
        let end = (start + 1..lines.len())
            .find(|&i| lines[i].starts_with("```"))
            .unwrap_or_else(|| panic!("README.md:{}: unclosed code block", start + 1));
        let text = lines[start + 1..end].join("\n");
        match language.trim() {
            "sh" => blocks.push(Block {
                line: start + 1,
                section: section.clone(),
                text,
                skip: skip.take(),
                shown_json: None,
            }),
            other => {
                assert!(
                    skip.is_none(),
                    "README.md:{}: a skip marker stands before a ```{other} block, not ```sh",
                    start + 1
                );
                // An output shown right after a command (only blank lines between).
                let adjacent = blocks.last().is_some_and(|b| {
                    let closing = b.line + b.text.lines().count() + 1;
                    lines[closing..start].iter().all(|l| l.trim().is_empty())
                });
                if other == "json" && adjacent {
                    if let Some(previous) = blocks.last_mut() {
                        previous.shown_json = Some(text);
                    }
                }
            }
        }
        index = end + 1;
    }
    blocks
}

/// The bash session: the `cargo` stand-in, cleanup of background jobs, then each block
/// with its stdout in `readme-out/LINE.out` and a banner on stderr.
fn script(blocks: &[Block]) -> String {
    let mut script = String::from(
        r#"set -euo pipefail
mkdir -p readme-out
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
cargo() {
    case "$1" in
    build) echo "readme-test: cargo $* (built by cargo test: target/*/x0tta6bl4 is the binary under test)" >&2 ;;
    run)
        while (($# > 0)) && [[ $1 != -- ]]; do shift; done
        shift
        target/debug/x0tta6bl4 "$@" ;;
    *) echo "readme-test: the README runs cargo $*, which this test does not stand in for" >&2; return 1 ;;
    esac
}
"#,
    );
    for block in blocks.iter().filter(|b| b.skip.is_none()) {
        let _ = write!(
            script,
            "echo '== README.md:{line} ({section})' >&2\nset -x\n{{\n{text}\n}} > readme-out/{line}.out\nset +x\n",
            line = block.line,
            section = block.section.replace('\'', ""),
            text = block.text,
        );
    }
    script.push_str("echo '== README.md: every block ran' >&2\n");
    script
}

/// Whether `tool` is on the PATH.
fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills the session's whole process group when dropped (nodes started with `&`
/// included), so a failing or hanging run leaves nothing behind.
struct Session(std::process::Child);

impl Drop for Session {
    fn drop(&mut self) {
        let group = self.0.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

fn link_binary(dir: &Path) {
    for profile in ["release", "debug"] {
        let target = dir.join("target").join(profile);
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_x0tta6bl4"), target.join("x0tta6bl4"))
            .unwrap();
    }
}

#[test]
fn every_readme_command_block_runs_as_written() {
    let missing: Vec<&str> = ["bash", "curl", "prometheus"]
        .into_iter()
        .filter(|tool| !have(tool))
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "the README's commands need {} (scripts/test.sh installs Debian's prometheus)",
            missing.join(", ")
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let blocks = sh_blocks(&readme);
    for block in &blocks {
        if let Some(reason) = &block.skip {
            eprintln!(
                "README.md:{} ({}): skipped: {reason}",
                block.line, block.section
            );
        }
    }
    let runnable = blocks.iter().filter(|b| b.skip.is_none()).count();
    assert!(
        runnable >= 8,
        "only {runnable} runnable blocks found: {blocks:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    link_binary(dir.path());
    std::fs::write(dir.path().join("readme.sh"), script(&blocks)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().join("target/release").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = {
        use std::os::unix::process::CommandExt as _;
        Command::new("bash")
            .arg("readme.sh")
            .current_dir(dir.path())
            .env("PATH", path)
            .env_remove("X0TTA6BL4_API")
            .env_remove("X0TTA6BL4_SVID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("readme.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("bash runs")
    };
    let mut session = Session(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = session.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(session);
    let log = std::fs::read_to_string(dir.path().join("readme.log")).unwrap_or_default();
    let outputs = |line: usize| {
        std::fs::read_to_string(dir.path().join(format!("readme-out/{line}.out")))
            .unwrap_or_default()
    };
    let mut transcript = String::new();
    for block in blocks.iter().filter(|b| b.skip.is_none()) {
        let _ = writeln!(
            transcript,
            "--- README.md:{} stdout\n{}",
            block.line,
            outputs(block.line)
        );
    }
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("the README's commands failed ({status}):\n{log}\n{transcript}"),
        None => panic!("the README's commands took over {TIMEOUT:?}:\n{log}\n{transcript}"),
    }
    eprintln!(
        "{runnable} README blocks ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_shown_outputs(&blocks, outputs);
}

/// A command shown with its JSON output: what the seed decides must match (the
/// measured times may differ).
fn check_shown_outputs(blocks: &[Block], outputs: impl Fn(usize) -> String) {
    let mut checked = 0;
    for block in blocks.iter().filter(|b| b.skip.is_none()) {
        let Some(shown) = &block.shown_json else {
            continue;
        };
        let shown: serde_json::Value = serde_json::from_str(shown)
            .unwrap_or_else(|e| panic!("README.md:{}: the shown JSON: {e}", block.line));
        if !block.text.contains(" demo ") {
            continue;
        }
        let output = outputs(block.line);
        let ran: serde_json::Value = serde_json::from_str(output.trim())
            .unwrap_or_else(|e| panic!("README.md:{}: not JSON ({e}): {output}", block.line));
        for key in ["nodes", "seed", "links", "killed"] {
            assert_eq!(
                ran[key], shown[key],
                "README.md:{}: `{key}` differs from the README's output: {ran}",
                block.line
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "no demo run with a shown output was checked");
}

#[test]
fn blocks_markers_and_shown_outputs_are_parsed() {
    let readme = "# A\n\n```sh\necho one\n```\n\n```json\n{\"a\":1}\n```\n\n## B\n\n\
                  <!-- readme-test: skip (needs root) -->\n\n```sh\nsudo true\n```\n\n\
                  ```toml\nx = 1\n```\n";
    let blocks = sh_blocks(readme);
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].line, blocks[0].section.as_str()), (3, "A"));
    assert_eq!(blocks[0].text, "echo one");
    assert_eq!(blocks[0].shown_json.as_deref(), Some("{\"a\":1}"));
    assert_eq!(blocks[0].skip, None);
    assert_eq!(blocks[1].skip.as_deref(), Some("needs root"));
    assert_eq!(blocks[1].section, "B");
    assert_eq!(blocks[1].shown_json, None);
    let script = script(&blocks);
    assert!(
        script.contains("echo one") && !script.contains("sudo true"),
        "{script}"
    );
}

/// What the README's examples write, were they run from the repository root, is ignored
/// by git: above all a CA's private key.
#[test]
fn files_the_examples_write_are_ignored_by_git() {
    if !have("git") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "git is needed to check .gitignore"
        );
        eprintln!("skipped: git is not installed");
        return;
    }
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for file in [
        "demo-mesh/ca/ca_key.pem",
        "demo-mesh/n1.toml",
        "demo-mesh/mesh.json",
        "ca/ca_key.pem",
        "ca/n1/svid_key.pem",
        "n1.toml",
        "n12.toml",
        "state/n3/revocations.jsonl",
        "mesh.json",
        "mttr.svg",
        "samples.csv",
    ] {
        let status = Command::new("git")
            .args(["-C", repo, "check-ignore", "--quiet", "--no-index", file])
            .status()
            .expect("git runs");
        assert!(status.success(), "{file} is not ignored by .gitignore");
    }
    // Tracked examples stay visible.
    let status = Command::new("git")
        .args([
            "-C",
            repo,
            "check-ignore",
            "--quiet",
            "--no-index",
            "examples/node.toml",
        ])
        .status()
        .expect("git runs");
    assert!(!status.success(), "examples/node.toml must not be ignored");
}
