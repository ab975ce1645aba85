//! The audit trail: a hash-chained, append-only log of committed rounds with their
//! quorum certificates, and the models they adopted, stored by content hash.
//!
//! A trail is a directory:
//!
//! ```text
//! chain.json          chain id, f, epoch length, the candidates and their public keys
//! audit.log           one committed block per line: `CRC32 JSON\n`, JSON = {block, qc}
//! models/HASH.f32     a model's parameters, little-endian f32; HASH = SHA-256 of them
//! ```
//!
//! Crash safety follows the node's state files (`crates/node/src/state_log.rs`, which
//! is private to the daemon, so the pattern is repeated here rather than shared): a
//! block counts once its whole line, newline included, has been written and
//! `fsync`ed; [`AuditTrail::open`] cuts a torn last line (a kill during a write) and
//! syncs the cut before anything is appended. Each line carries a CRC32 of its JSON,
//! so damage inside a complete line is told from a torn tail and refused with the
//! block's height, never skipped or repaired. Models and `chain.json` are written to a
//! temporary file, synced and renamed, and the directory synced; a model is written
//! before the block that names it.
//!
//! [`AuditTrail::verify`] re-checks everything: each line's checksum, the heights and
//! the hash chain, every commit signature of every certificate against the committee
//! drawn for the block's epoch, the proposer's signature over each decision (a round
//! result committed over the mesh must carry its coordinator's), rollbacks and
//! coordinator changes against the versions they restore or resume from, and the hash
//! of every stored model. The first failure names its block.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use x0tta6bl4_proto::{Authenticator, NodeName};

use crate::committee::{draw, genesis, Block, Digest, QuorumCertificate, Verifier};

/// File of the chain's settings.
pub const CHAIN_FILE: &str = "chain.json";
/// File of the committed blocks.
pub const LOG_FILE: &str = "audit.log";
/// Directory of the models.
pub const MODELS_DIR: &str = "models";
/// Largest audit log read, in bytes.
pub const LOG_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A candidate of the committee and its public key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Node name.
    pub name: NodeName,
    /// Its credential, hex (a SEC1 ECDSA P-256 public key).
    pub credential: String,
}

/// The chain's settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// Chain id (the genesis hash is derived from it).
    pub chain_id: String,
    /// Byzantine validators tolerated.
    pub f: usize,
    /// Heights per epoch.
    pub epoch_len: u64,
    /// Every candidate.
    pub members: Vec<Member>,
}

impl ChainInfo {
    /// The candidates' names.
    pub fn candidates(&self) -> Vec<NodeName> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// A verifier of the members' signatures with `auth`.
    pub fn verifier(&self, auth: std::sync::Arc<dyn Authenticator>) -> Result<Verifier, String> {
        let mut credentials = std::collections::BTreeMap::new();
        for m in &self.members {
            let key = hex::decode(&m.credential)
                .map_err(|e| format!("credential of {} is not hex: {e}", m.name))?;
            credentials.insert(m.name.clone(), key);
        }
        Ok(Verifier::new(auth, credentials))
    }
}

/// A decision's proposer signature: checked whenever there is one; required of every
/// decision committed over the mesh (one naming a coordinator), and a round result's
/// must be its coordinator's.
fn check_proposer(verifier: &Verifier, d: &crate::committee::Decision) -> Result<(), String> {
    verifier.check_decision(d)?;
    let Some(coordinator) = &d.coordinator else {
        return Ok(());
    };
    match (&d.signed, &d.handover) {
        (None, _) => Err(format!(
            "decision of {coordinator} carries no proposer signature"
        )),
        (Some(s), None) if s.by != *coordinator => Err(format!(
            "round {} of {coordinator} is signed by {}, not by its coordinator",
            d.round, s.by
        )),
        _ => Ok(()),
    }
}

/// One committed block and its certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The block.
    pub block: Block,
    /// Its quorum certificate.
    pub qc: QuorumCertificate,
}

/// An audit-trail failure, naming the block when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{}{what} ({})", .block.map(|h| format!("block {h}: ")).unwrap_or_default(), .place.display())]
pub struct AuditError {
    /// The block (height = version) at fault.
    pub block: Option<u64>,
    /// The file.
    pub place: PathBuf,
    /// What is wrong.
    pub what: String,
}

fn err(block: Option<u64>, place: &Path, what: impl Into<String>) -> AuditError {
    AuditError {
        block,
        place: place.to_path_buf(),
        what: what.into(),
    }
}

fn io_err(place: &Path, what: &str, e: io::Error) -> AuditError {
    err(None, place, format!("{what}: {e}"))
}

/// SHA-256 of a model's parameters (little-endian f32): its content address.
pub fn model_hash(params: &[f32]) -> Digest {
    Digest::of(&[&model_bytes(params)])
}

fn model_bytes(params: &[f32]) -> Vec<u8> {
    params.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` to `path` atomically: temporary file, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A bare file name's parent is "", which cannot be opened: it is the current directory.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// The log's lines as read: complete records and the torn tail's length.
struct Lines {
    /// (line number from 1, bytes without the newline)
    lines: Vec<(usize, Vec<u8>)>,
    torn: u64,
    complete_len: u64,
}

fn read_lines(path: &Path) -> Result<Lines, AuditError> {
    let mut file = File::open(path).map_err(|e| io_err(path, "cannot open the audit log", e))?;
    let len = file
        .metadata()
        .map_err(|e| io_err(path, "cannot stat", e))?
        .len();
    if len > LOG_BYTES_MAX {
        return Err(err(
            None,
            path,
            format!("{len} bytes; an audit log holds at most {LOG_BYTES_MAX}"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| io_err(path, "cannot read", e))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let body = &bytes[..complete];
    let lines = match body.split_last() {
        Some((_, rest)) => rest
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_vec()))
            .collect(),
        None => Vec::new(),
    };
    Ok(Lines {
        lines,
        torn: (bytes.len() - complete) as u64,
        complete_len: complete as u64,
    })
}

/// Parse one line: `CRC32 JSON`, checksum checked.
fn parse_line(path: &Path, height: u64, line: &[u8]) -> Result<Record, AuditError> {
    let bad = |what: String| err(Some(height), path, what);
    if line.len() < 10 || line[8] != b' ' {
        return Err(bad(format!("line {height} is not `CRC32 JSON`")));
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| bad(format!("line {height} has no checksum")))?;
    let json = &line[9..];
    if crc32fast::hash(json) != crc {
        return Err(bad(format!(
            "line {height} fails its checksum (damaged on disk)"
        )));
    }
    serde_json::from_slice(json).map_err(|e| bad(format!("line {height} does not parse: {e}")))
}

fn encode_line(record: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(record).unwrap_or_default();
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend(json);
    line.push(b'\n');
    line
}

/// An open audit trail.
pub struct AuditTrail {
    dir: PathBuf,
    info: ChainInfo,
    records: Vec<Record>,
    log: File,
}

/// What [`AuditTrail::open`] found besides the records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Opened {
    /// Bytes of a torn last line that were cut (a kill during a write).
    pub torn_bytes: u64,
}

impl AuditTrail {
    /// Create a trail in `dir` (created if missing); refuses when one exists there.
    pub fn create(dir: &Path, info: ChainInfo) -> Result<AuditTrail, AuditError> {
        let chain = dir.join(CHAIN_FILE);
        if chain.exists() {
            return Err(err(None, &chain, "an audit trail already exists here"));
        }
        fs::create_dir_all(dir.join(MODELS_DIR))
            .map_err(|e| io_err(dir, "cannot create the directory", e))?;
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        write_atomic(&chain, &json).map_err(|e| io_err(&chain, "cannot write", e))?;
        let path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_err(&path, "cannot create", e))?;
        sync_dir(dir).map_err(|e| io_err(dir, "cannot sync", e))?;
        Ok(AuditTrail {
            dir: dir.to_path_buf(),
            info,
            records: Vec::new(),
            log,
        })
    }

    fn read_info(dir: &Path) -> Result<ChainInfo, AuditError> {
        let chain = dir.join(CHAIN_FILE);
        let bytes = fs::read(&chain).map_err(|e| {
            io_err(
                &chain,
                "no audit trail (run `x0tta6bl4 fl bench --audit DIR` first)",
                e,
            )
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| err(None, &chain, format!("does not parse: {e}")))
    }

    /// Read the blocks without changing anything; the torn tail's length besides.
    fn read(dir: &Path) -> Result<(ChainInfo, Vec<Record>, Lines), AuditError> {
        Self::read_checked(dir, true)
    }

    /// [`AuditTrail::read`], checking the hash chain or not ([`AuditTrail::verify`]
    /// checks it block by block with the certificates, so that a forged block is named
    /// rather than the next one's link).
    fn read_checked(
        dir: &Path,
        check_links: bool,
    ) -> Result<(ChainInfo, Vec<Record>, Lines), AuditError> {
        let info = Self::read_info(dir)?;
        let path = dir.join(LOG_FILE);
        let lines = read_lines(&path)?;
        let mut records: Vec<Record> = Vec::with_capacity(lines.lines.len());
        let mut prev = genesis(&info.chain_id);
        for (n, line) in &lines.lines {
            let height = *n as u64;
            let record = parse_line(&path, height, line)?;
            if record.block.height != height {
                return Err(err(
                    Some(height),
                    &path,
                    format!("line {height} holds height {}", record.block.height),
                ));
            }
            if check_links && record.block.prev != prev {
                return Err(err(
                    Some(height),
                    &path,
                    format!(
                        "previous-block hash {} is not the hash {prev} of block {}",
                        record.block.prev,
                        height - 1
                    ),
                ));
            }
            prev = record.block.hash();
            records.push(record);
        }
        Ok((info, records, lines))
    }

    /// Open the trail in `dir`: read every block (checksums, heights and the hash chain
    /// checked; damage refused with the block's height) and cut a torn last line.
    pub fn open(dir: &Path) -> Result<(AuditTrail, Opened), AuditError> {
        let (info, records, lines) = Self::read(dir)?;
        let path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_err(&path, "cannot open", e))?;
        if lines.torn > 0 {
            log.set_len(lines.complete_len)
                .and_then(|()| log.sync_all())
                .map_err(|e| io_err(&path, "cannot cut the torn last line", e))?;
        }
        let mut log = log;
        log.seek(SeekFrom::End(0))
            .map_err(|e| io_err(&path, "cannot seek", e))?;
        Ok((
            AuditTrail {
                dir: dir.to_path_buf(),
                info,
                records,
                log,
            },
            Opened {
                torn_bytes: lines.torn,
            },
        ))
    }

    /// Read the trail in `dir` without changing anything (a torn last line is left
    /// for the next writer to cut); [`AuditTrail::append`] then fails.
    pub fn read_only(dir: &Path) -> Result<AuditTrail, AuditError> {
        let (info, records, _) = Self::read(dir)?;
        let path = dir.join(LOG_FILE);
        let log = File::open(&path).map_err(|e| io_err(&path, "cannot open", e))?;
        Ok(AuditTrail {
            dir: dir.to_path_buf(),
            info,
            records,
            log,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The chain's settings.
    pub fn info(&self) -> &ChainInfo {
        &self.info
    }
    /// Every committed block, oldest first.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
    /// The last block.
    pub fn tip(&self) -> Option<&Block> {
        self.records.last().map(|r| &r.block)
    }
    /// Every committed block, oldest first (what a [`crate::committee::Replica`]
    /// restarts from).
    pub fn blocks(&self) -> Vec<Block> {
        self.records.iter().map(|r| r.block.clone()).collect()
    }
    /// The block of `version` (= height).
    pub fn get(&self, version: u64) -> Option<&Record> {
        version
            .checked_sub(1)
            .and_then(|i| self.records.get(i as usize))
    }

    fn model_path(&self, hash: &Digest) -> PathBuf {
        self.dir
            .join(MODELS_DIR)
            .join(format!("{}.f32", hash.hex()))
    }

    /// Store a model under its hash (atomically; nothing to do if it is there).
    pub fn store_model(&self, params: &[f32]) -> Result<Digest, AuditError> {
        let hash = model_hash(params);
        let path = self.model_path(&hash);
        if fs::read(&path).is_ok_and(|b| Digest::of(&[&b]) == hash) {
            return Ok(hash);
        }
        write_atomic(&path, &model_bytes(params)).map_err(|e| io_err(&path, "cannot write", e))?;
        Ok(hash)
    }

    /// The model with this hash, checked against it.
    pub fn model(&self, hash: &Digest) -> Result<Vec<f32>, AuditError> {
        AuditTrail::read_model(&self.dir, hash)
    }

    /// The model with this hash in the trail of `dir`, checked against it, without
    /// opening the trail (for a reader next to the writer, as a node's model store).
    pub fn read_model(dir: &Path, hash: &Digest) -> Result<Vec<f32>, AuditError> {
        let path = dir.join(MODELS_DIR).join(format!("{}.f32", hash.hex()));
        let bytes = fs::read(&path).map_err(|e| io_err(&path, "cannot read the model", e))?;
        if Digest::of(&[&bytes]) != *hash || bytes.len() % 4 != 0 {
            return Err(err(None, &path, "model does not match its hash (damaged)"));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Append a committed block, durable when this returns. Refuses a block that does
    /// not extend the chain, or whose model (unless a rollback) is not stored.
    pub fn append(&mut self, record: Record) -> Result<(), AuditError> {
        let path = self.dir.join(LOG_FILE);
        let height = self.records.len() as u64 + 1;
        let prev = self
            .tip()
            .map_or_else(|| genesis(&self.info.chain_id), Block::hash);
        if record.block.height != height || record.block.prev != prev {
            return Err(err(
                Some(record.block.height),
                &path,
                format!("does not extend the chain at height {height}"),
            ));
        }
        if !self.model_path(&record.block.decision.model_hash).exists() {
            return Err(err(
                Some(height),
                &path,
                format!(
                    "model {} is not stored; store it before its block",
                    record.block.decision.model_hash
                ),
            ));
        }
        self.log
            .write_all(&encode_line(&record))
            .and_then(|()| self.log.sync_data())
            .map_err(|e| io_err(&path, "cannot append", e))?;
        self.records.push(record);
        Ok(())
    }

    /// Re-check the trail in `dir` without changing it: checksums, heights, hash
    /// chain, every certificate's signatures against the drawn committee, rollbacks and
    /// every model's hash. `auth` checks the signatures ([`crate::keys::PublicKeys`]
    /// for a trail of public keys). Returns the number of blocks.
    pub fn verify(dir: &Path, auth: std::sync::Arc<dyn Authenticator>) -> Result<u64, AuditError> {
        let (info, records, lines) = Self::read_checked(dir, false)?;
        let path = dir.join(LOG_FILE);
        if lines.torn > 0 {
            return Err(err(
                Some(records.len() as u64 + 1),
                &path,
                format!(
                    "{} bytes after the last complete line (a write cut by a crash, or a damaged line end); opening the trail for writing cuts them",
                    lines.torn
                ),
            ));
        }
        let verifier = info
            .verifier(auth)
            .map_err(|e| err(None, &dir.join(CHAIN_FILE), e))?;
        let candidates = info.candidates();
        let size = 3 * info.f + 1;
        if info.epoch_len == 0 || candidates.len() < size {
            return Err(err(
                None,
                &dir.join(CHAIN_FILE),
                "epoch_len is 0 or fewer candidates than 3f+1",
            ));
        }
        let mut seed = genesis(&info.chain_id);
        let mut prev = seed;
        let mut committee = Vec::new();
        let trail = AuditTrail {
            dir: dir.to_path_buf(),
            info: info.clone(),
            records: Vec::new(),
            log: File::open(&path).map_err(|e| io_err(&path, "cannot open", e))?,
        };
        for (i, r) in records.iter().enumerate() {
            let height = i as u64 + 1;
            let b = &r.block;
            let epoch = (height - 1) / info.epoch_len;
            if (height - 1) % info.epoch_len == 0 {
                committee = draw(&candidates, &seed, epoch, size);
            }
            if b.prev != prev {
                return Err(err(
                    Some(height),
                    &path,
                    format!(
                        "previous-block hash {} is not the hash {prev} of block {}",
                        b.prev,
                        height - 1
                    ),
                ));
            }
            prev = b.hash();
            if b.epoch != epoch {
                return Err(err(
                    Some(height),
                    &path,
                    format!("says epoch {}, not {epoch}", b.epoch),
                ));
            }
            b.decision
                .check()
                .map_err(|e| err(Some(height), &path, e))?;
            // Before the certificate: a changed signature changes the block's hash
            // too, and the proposer's is the more telling failure.
            check_proposer(&verifier, &b.decision).map_err(|e| err(Some(height), &path, e))?;
            verifier
                .check_qc(&r.qc, b, &committee)
                .map_err(|e| err(Some(height), &path, format!("certificate: {e}")))?;
            if let Some(to) = b.decision.rollback_to {
                let target = to
                    .checked_sub(1)
                    .and_then(|j| records.get(j as usize))
                    .filter(|_| to < height)
                    .ok_or_else(|| {
                        err(
                            Some(height),
                            &path,
                            format!("rolls back to unknown version {to}"),
                        )
                    })?;
                if target.block.decision.model_hash != b.decision.model_hash {
                    return Err(err(
                        Some(height),
                        &path,
                        format!("rollback to {to} names another model than version {to}'s"),
                    ));
                }
            }
            if let Some(h) = &b.decision.handover {
                let resumed = match h.model_version {
                    0 => None,
                    v if v < height => records.get(v as usize - 1),
                    v => {
                        return Err(err(
                            Some(height),
                            &path,
                            format!("coordinator change resumes from version {v}, not before it"),
                        ))
                    }
                };
                if resumed.is_some_and(|t| t.block.decision.model_hash != b.decision.model_hash) {
                    return Err(err(
                        Some(height),
                        &path,
                        format!(
                            "coordinator change names another model than version {}'s",
                            h.model_version
                        ),
                    ));
                }
            }
            trail
                .model(&b.decision.model_hash)
                .map_err(|e| err(Some(height), &e.place, e.what))?;
            if height % info.epoch_len == 0 {
                seed = b.hash();
            }
        }
        Ok(records.len() as u64)
    }
}
