//! The off-chain state file of `x0tta6bl4 dao`: the [`Ledger`] as JSON, written crash-safely
//! (temporary file in the same directory, fsync, rename over the old file, fsync of the
//! directory), so a `kill -9` at any byte leaves either the old or the new state.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::signed::Ledger;

/// Reads a state file.
pub fn load(path: &Path) -> Result<Ledger, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut ledger: Ledger = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a DAO state file: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    ledger.reindex();
    Ok(ledger)
}

/// Replaces the state file atomically.
pub fn save(path: &Path, ledger: &Ledger) -> Result<(), String> {
    let mut text =
        serde_json::to_string_pretty(ledger).map_err(|e| format!("cannot serialise: {e}"))?;
    text.push('\n');
    write_atomically(path, text.as_bytes())
}

/// Replaces `path` with `bytes`: a temporary file in the same directory, fsync, rename over
/// the old file, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rules;

    #[test]
    fn save_load_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dao.json");
        let ledger = Ledger::new(Rules::default(), "admin").unwrap();
        save(&path, &ledger).unwrap();
        assert_eq!(load(&path).unwrap(), ledger);
        // no temporary file left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(&path, "{\"engine\": 3").unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            err.contains("dao.json:1:") && err.contains("not a DAO state file"),
            "{err}"
        );
        assert!(load(&dir.path().join("missing.json"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
