//! Crash-safe append-only state files: one record per line.
//!
//! A record counts only once its line is complete (ends with `\n`) and has reached the
//! disk: [`AppendLog::append`] writes the whole line in one call and `fsync`s the file
//! before it returns, so a caller acknowledges a record only after it is durable. A crash
//! can only tear the last line; [`AppendLog::open`] cuts such a torn tail off (and syncs
//! the cut) before anything is appended, so the next record never lands on a torn line.
//! A file created by `open` also has its directory synced, so the file itself survives.
//!
//! Records are opaque single-line byte strings (the node writes JSON); what they mean, and
//! whether one that reads back is genuine, is the caller's business (revocations are
//! verified again when loaded).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest state file read back, in bytes: beyond it the file is refused, not loaded in
/// part.
pub(crate) const STATE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// An open append-only record file.
#[derive(Debug)]
pub(crate) struct AppendLog {
    file: File,
}

/// What [`AppendLog::open`] found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub log: AppendLog,
    /// Every complete record, oldest first.
    pub records: Vec<Vec<u8>>,
    /// Bytes of a torn last line that were cut off (a crash during a write).
    pub torn_bytes: u64,
}

impl AppendLog {
    /// Open (or create) `path`, read its complete records and cut a torn tail.
    pub(crate) fn open(path: &Path) -> io::Result<Opened> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > STATE_FILE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{len} bytes; a state file holds at most {STATE_FILE_BYTES_MAX}"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn_bytes = (bytes.len() - complete) as u64;
        if torn_bytes > 0 {
            file.set_len(complete as u64)?;
            file.sync_all()?;
        }
        if !existed {
            sync_parent(path)?;
        }
        let records = bytes[..complete]
            .split(|&b| b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect();
        Ok(Opened {
            log: AppendLog { file },
            records,
            torn_bytes,
        })
    }

    /// Append one record (no `\n` inside) and make it durable before returning.
    pub(crate) fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if record.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a record may not contain a newline",
            ));
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<Vec<u8>> {
        AppendLog::open(path).unwrap().records
    }

    #[test]
    fn a_crash_at_any_byte_loses_only_the_record_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full");
        let written: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"record\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 7)).into_bytes())
            .collect();
        let mut log = AppendLog::open(&full).unwrap().log;
        for record in &written {
            log.append(record).unwrap();
        }
        let bytes = std::fs::read(&full).unwrap();
        let ends: Vec<usize> = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        // The writer killed after `cut` bytes of the file reached the disk.
        for cut in 0..=bytes.len() {
            let path = dir.path().join(format!("cut{cut}"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let durable = ends.iter().filter(|&&end| end <= cut).count();
            let opened = AppendLog::open(&path).unwrap();
            assert_eq!(opened.records, written[..durable], "cut at {cut}");
            let expected_torn = cut - ends.get(durable.wrapping_sub(1)).copied().unwrap_or(0);
            assert_eq!(opened.torn_bytes as usize, expected_torn, "cut at {cut}");
            // The next record lands on a clean line and reads back with the others.
            let mut log = opened.log;
            log.append(b"{\"after\":\"restart\"}").unwrap();
            let mut expected = written[..durable].to_vec();
            expected.push(b"{\"after\":\"restart\"}".to_vec());
            assert_eq!(records(&path), expected, "cut at {cut}");
        }
    }

    #[test]
    fn refuses_newlines_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = AppendLog::open(&path).unwrap().log;
        assert!(log.append(b"two\nlines").is_err());
        assert!(records(&path).is_empty());
        let big = dir.path().join("big");
        let file = File::create(&big).unwrap();
        file.set_len(STATE_FILE_BYTES_MAX + 1).unwrap();
        let error = AppendLog::open(&big).unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
    }
}
