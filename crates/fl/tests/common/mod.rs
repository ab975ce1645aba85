//! Shared by the differential and data tests: prerequisites that fail under CI=true.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The repository's scripts directory.
pub fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A missing prerequisite: fail under CI=true, skip with a message otherwise.
pub fn missing(what: &str) -> Option<()> {
    let msg = format!("{what} (scripts/test.sh installs it)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Run `scripts/fl-reference.py MODE` on `input`; `None` when Python or the package is
/// missing outside CI.
pub fn reference(
    mode: &str,
    input: &serde_json::Value,
    package: &str,
) -> Option<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.json");
    std::fs::write(&path, serde_json::to_vec(input).unwrap()).unwrap();
    let out = match Command::new("python3")
        .arg(scripts().join("fl-reference.py"))
        .arg(mode)
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            missing(&format!("python3 cannot run: {e}"))?;
            unreachable!()
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("ModuleNotFoundError") {
            missing(&format!(
                "the Python package {package} is not installed: {stderr}"
            ))?;
        }
        panic!("fl-reference.py {mode} failed: {stderr}");
    }
    Some(serde_json::from_slice(&out.stdout).expect("reference prints JSON"))
}

/// The FL data directory, or `None` (skip) / panic (CI) when `name` is not there.
pub fn data_dir(name: &str) -> Option<PathBuf> {
    let dir = x0tta6bl4_fl::data::default_data_dir();
    if dir.join(format!("{name}-train.bin")).exists()
        && dir.join(format!("{name}-test.bin")).exists()
    {
        return Some(dir);
    }
    missing(&format!(
        "{name} data is not in {}: run `python3 scripts/fetch-fl-data.py`",
        dir.display()
    ))?;
    None
}
