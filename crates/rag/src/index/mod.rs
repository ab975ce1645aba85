//! Vector indexes behind one trait, each persisted to one checksummed file.
//!
//! All indexes score by inner product (the embeddings are L2-normalised, so this is
//! cosine similarity). Kinds:
//! - [`flat::FlatIndex`]: every vector in f32, exhaustive scan; the ground truth.
//! - [`int8::Int8Index`]: scalar quantization to one byte per dimension with a
//!   per-dimension range calibrated on percentiles (outliers clipped): 4x smaller.
//! - [`pq::PqIndex`]: product quantization with k-means-trained codebooks, asymmetric
//!   distance computation (the query stays in f32), optionally re-ranking a candidate
//!   list with a second, residual product quantizer whose codes are counted in its size.
//! - [`pcapq::PcaPqIndex`] (`pq:pca=1`): product quantization after a PCA rotation,
//!   with one-dimensional sub-spaces whose bit widths (0-8) are allocated from a
//!   budget by score-weighted distortion; the most accurate per byte.
//! - [`graph::GraphIndex`]: an HNSW proximity graph over int8 codes: a search scores a
//!   few hundred vectors instead of all of them.
//! - `qdrant::QdrantIndex` (crate feature `qdrant`, off by default): Qdrant Edge with
//!   1- or 2-bit binary quantization and rescoring. Without the feature the spec still
//!   parses, and building or loading one says how to get it.
//!
//! Size accounting ([`VectorIndex::memory_bytes`], and the file size on disk) counts
//! every byte a search needs: codes, codebooks, calibration tables.
//!
//! # File format
//! `b"X0RAGIDX"`, format version (u32 LE), kind (u32 LE), dimension (u32 LE), vector
//! count (u64 LE), payload length (u64 LE), CRC-32 of the payload (u32 LE), payload.
//! Files are written to a temporary name, fsynced and renamed, so a crash leaves either
//! the old or the new file. A file with another magic, another version, a wrong length
//! or a wrong checksum is refused with an error saying so; nothing rebuilds over it.

pub mod flat;
pub mod graph;
pub mod int8;
mod kernels;
pub mod kmeans;
pub mod pcapq;
pub mod pq;
#[cfg(feature = "qdrant")]
pub mod qdrant;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use kernels::{dot, dot_rows_f32, dot_rows_u8, scan_top_k, top_k, Hit, TopK};

/// The magic bytes that start every index file.
pub const MAGIC: &[u8; 8] = b"X0RAGIDX";
/// The index file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build still reads (version 1: `pq` codes one byte).
pub const FORMAT_VERSION_MIN: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 4 + 8 + 8 + 4;

/// Why an index could not be built, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index spec or its data is invalid.
    #[error("{0}")]
    Invalid(String),
    /// An index file cannot be read or written.
    #[error("index file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An index file is not one this build can use; it is left untouched.
    #[error("index file {path} refused: {reason}; it was left untouched: rebuild the index with `x0tta6bl4 rag ingest` (or delete the file) if it cannot be restored")]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The index kinds, as written in files and specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Exact f32.
    Flat,
    /// Scalar int8.
    Int8,
    /// Product quantization.
    Pq,
    /// HNSW graph over int8 codes.
    Graph,
    /// PCA-rotated product quantization with allocated bit widths (`pq:pca=1`).
    #[serde(rename = "pq-pca")]
    PcaPq,
    /// Qdrant Edge with binary quantization and rescoring (feature `qdrant`).
    Qdrant,
}

impl IndexKind {
    fn code(self) -> u32 {
        match self {
            Self::Flat => 1,
            Self::Int8 => 2,
            Self::Pq => 3,
            Self::Graph => 4,
            Self::PcaPq => 5,
            Self::Qdrant => 6,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Flat),
            2 => Some(Self::Int8),
            3 => Some(Self::Pq),
            4 => Some(Self::Graph),
            5 => Some(Self::PcaPq),
            6 => Some(Self::Qdrant),
            _ => None,
        }
    }
}

impl fmt::Display for IndexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flat => "flat",
            Self::Int8 => "int8",
            Self::Pq => "pq",
            Self::Graph => "graph",
            Self::PcaPq => "pq-pca",
            Self::Qdrant => "qdrant",
        })
    }
}

/// A searchable set of vectors.
pub trait VectorIndex: Send + Sync {
    /// Which kind it is.
    fn kind(&self) -> IndexKind;
    /// The parameters it was built with, as in a spec (`pq:m=48,refine=96,cand=100`).
    fn spec(&self) -> String;
    /// Vector width.
    fn dim(&self) -> usize;
    /// Number of vectors.
    fn len(&self) -> usize;
    /// Whether it holds no vectors.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` vectors with the highest inner product with `query`, best first.
    fn search(&self, query: &[f32], k: usize) -> Vec<Hit>;
    /// Bytes held in memory to answer searches (codes, codebooks, tables).
    fn memory_bytes(&self) -> usize;
    /// The payload of its file (everything after the header).
    fn encode(&self, out: &mut Vec<u8>);
}

/// Parameters of `qdrant[:bits=B,over=O,ef=E,m=M,efc=C]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QdrantParams {
    /// Bits per dimension of the binary quantization: 1 or 2.
    pub bits: usize,
    /// Oversampling: candidates taken by the quantized codes per result, then rescored.
    pub oversampling: usize,
    /// HNSW beam width at search (`hnsw_ef`).
    pub ef: usize,
    /// HNSW links per node.
    pub m: usize,
    /// HNSW beam width at construction.
    pub ef_construct: usize,
}

impl Default for QdrantParams {
    fn default() -> Self {
        Self {
            bits: 2,
            oversampling: 8,
            ef: 128,
            m: 16,
            ef_construct: 100,
        }
    }
}

impl QdrantParams {
    /// Refuse values Qdrant would reject or that make no sense.
    pub fn check(&self) -> Result<(), IndexError> {
        if !(1..=2).contains(&self.bits) {
            return Err(IndexError::Invalid(format!(
                "qdrant bits={} must be 1 or 2 (bits per dimension of the binary quantization)",
                self.bits
            )));
        }
        if self.oversampling == 0 || self.ef == 0 || self.m < 2 || self.ef_construct < 4 {
            return Err(IndexError::Invalid(format!(
                "qdrant needs over >= 1, ef >= 1, m >= 2, efc >= 4 (got over={}, ef={}, m={}, efc={})",
                self.oversampling, self.ef, self.m, self.ef_construct
            )));
        }
        Ok(())
    }

    /// The spec string these parameters parse from.
    pub fn spec(&self) -> String {
        format!(
            "qdrant:bits={},over={},ef={},m={},efc={}",
            self.bits, self.oversampling, self.ef, self.m, self.ef_construct
        )
    }
}

/// What to build: a kind and its parameters, parsed from `KIND[:key=value,...]`.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexSpec {
    /// `flat`.
    Flat,
    /// `int8[:clip=Q]`: clip each dimension to its [Q, 1-Q] quantiles (default 0.0001).
    Int8 {
        /// Lower clipping quantile.
        clip: f32,
    },
    /// `pq[:m=M,bits=B,refine=R,rbits=RB,renorm=0|1,cand=C,train=T,iters=I,seed=S]`.
    Pq(pq::PqParams),
    /// `pq:pca=1[,bytes=B,cand=C,renorm=0|1,train=T,iters=I]`.
    PcaPq(pcapq::PcaPqParams),
    /// `graph[:m=M,efc=E,ef=S,clip=Q,seed=S]`.
    Graph(graph::GraphParams),
    /// `qdrant[:bits=B,over=O,ef=E,m=M,efc=C]` (needs the crate feature `qdrant`).
    Qdrant(QdrantParams),
}

impl IndexSpec {
    /// Parse `KIND[:key=value,...]`.
    pub fn parse(s: &str) -> Result<Self, IndexError> {
        let (kind, params) = s.split_once(':').unwrap_or((s, ""));
        let mut pairs = Vec::new();
        for p in params.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                IndexError::Invalid(format!(
                    "index parameter `{p}` in `{s}` is not key=value (e.g. pq:m=48,refine=96)"
                ))
            })?;
            pairs.push((k.trim(), v.trim()));
        }
        let num = |k: &str, v: &str| -> Result<f64, IndexError> {
            v.parse::<f64>().map_err(|_| {
                IndexError::Invalid(format!("index parameter {k}={v} in `{s}` is not a number"))
            })
        };
        let whole = |k: &str, v: &str| -> Result<usize, IndexError> {
            let n = num(k, v)?;
            if n < 0.0 || n.fract() != 0.0 {
                return Err(IndexError::Invalid(format!(
                    "{kind} {k}={v} must be a non-negative integer"
                )));
            }
            Ok(n as usize)
        };
        let unknown = |k: &str, known: &str| {
            IndexError::Invalid(format!(
                "unknown parameter `{k}` for index `{kind}` (known: {known})"
            ))
        };
        match kind {
            "flat" => match pairs.first() {
                None => Ok(Self::Flat),
                Some((k, _)) => Err(unknown(k, "none")),
            },
            "int8" => {
                let mut clip = 0.0001f32;
                for (k, v) in pairs {
                    match k {
                        "clip" => clip = num(k, v)? as f32,
                        _ => return Err(unknown(k, "clip")),
                    }
                }
                if !(0.0..0.5).contains(&clip) {
                    return Err(IndexError::Invalid(format!(
                        "int8 clip={clip} must be in [0, 0.5) (a quantile, e.g. 0.001)"
                    )));
                }
                Ok(Self::Int8 { clip })
            }
            "pq" if pairs.iter().any(|&(k, v)| k == "pca" && v != "0") => {
                let mut p = pcapq::PcaPqParams::default();
                for (k, v) in pairs {
                    let n = whole(k, v)?;
                    match k {
                        "pca" => {}
                        "bytes" => p.bytes = n,
                        "renorm" => p.renorm = n != 0,
                        "cand" => p.candidates = n,
                        "train" => p.train = n,
                        "iters" => p.iters = n,
                        _ => {
                            return Err(unknown(k, "with pca=1: bytes, cand, renorm, train, iters"))
                        }
                    }
                }
                if p.bytes == 0 || p.iters == 0 || p.train == 0 {
                    return Err(IndexError::Invalid(format!(
                        "pq:pca=1 bytes, train and iters must be positive (e.g. pq:pca=1,bytes=144), got `{s}`"
                    )));
                }
                Ok(Self::PcaPq(p))
            }
            "pq" => {
                let mut p = pq::PqParams::default();
                for (k, v) in pairs {
                    let n = whole(k, v)?;
                    match k {
                        "m" => p.m = n,
                        "bits" => p.bits = n,
                        "refine" => p.refine = n,
                        "rbits" => p.rbits = n,
                        "renorm" => p.renorm = n != 0,
                        "cand" => p.candidates = n,
                        "train" => p.train = n,
                        "iters" => p.iters = n,
                        "seed" => p.seed = n as u64,
                        "pca" => {}
                        _ => {
                            return Err(unknown(
                                k,
                                "m, bits, refine, rbits, renorm, cand, train, iters, seed, pca",
                            ))
                        }
                    }
                }
                for (name, b) in [("bits", p.bits), ("rbits", p.rbits)] {
                    if !(1..=8).contains(&b) {
                        return Err(IndexError::Invalid(format!(
                            "pq {name}={b} must be 1 to 8 (bits per sub-space code)"
                        )));
                    }
                }
                Ok(Self::Pq(p))
            }
            "graph" => {
                let mut p = graph::GraphParams::default();
                for (k, v) in pairs {
                    match k {
                        "m" => p.m = whole(k, v)?,
                        "efc" => p.ef_construction = whole(k, v)?,
                        "ef" => p.ef_search = whole(k, v)?,
                        "seed" => p.seed = whole(k, v)? as u64,
                        "clip" => p.clip = num(k, v)? as f32,
                        _ => return Err(unknown(k, "m, efc, ef, clip, seed")),
                    }
                }
                p.check()?;
                Ok(Self::Graph(p))
            }
            "qdrant" => {
                let mut p = QdrantParams::default();
                for (k, v) in pairs {
                    let n = whole(k, v)?;
                    match k {
                        "bits" => p.bits = n,
                        "over" => p.oversampling = n,
                        "ef" => p.ef = n,
                        "m" => p.m = n,
                        "efc" => p.ef_construct = n,
                        _ => return Err(unknown(k, "bits, over, ef, m, efc")),
                    }
                }
                p.check()?;
                Ok(Self::Qdrant(p))
            }
            other => Err(IndexError::Invalid(format!(
                "unknown index kind `{other}` (known: flat, int8, pq, graph, qdrant)"
            ))),
        }
    }

    /// Build over `data` (`n * dim` floats, row-major).
    pub fn build(&self, data: &[f32], dim: usize) -> Result<Box<dyn VectorIndex>, IndexError> {
        if dim == 0 || data.len() % dim != 0 {
            return Err(IndexError::Invalid(format!(
                "{} floats do not make whole {dim}-dimensional vectors",
                data.len()
            )));
        }
        if data.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Invalid(
                "vectors contain NaN or infinite values".into(),
            ));
        }
        Ok(match self {
            Self::Flat => Box::new(flat::FlatIndex::new(data.to_vec(), dim)),
            Self::Int8 { clip } => Box::new(int8::Int8Index::build(data, dim, *clip)),
            Self::Pq(p) => Box::new(pq::PqIndex::build(data, dim, p)?),
            Self::PcaPq(p) => Box::new(pcapq::PcaPqIndex::build(data, dim, p)?),
            Self::Graph(p) => Box::new(graph::GraphIndex::build(data, dim, p)?),
            #[cfg(feature = "qdrant")]
            Self::Qdrant(p) => Box::new(qdrant::QdrantIndex::build(data, dim, p)?),
            #[cfg(not(feature = "qdrant"))]
            Self::Qdrant(_) => return Err(IndexError::Invalid(NO_QDRANT.into())),
        })
    }
}

/// Why a `qdrant` index cannot be built or loaded by this build.
#[cfg(not(feature = "qdrant"))]
const NO_QDRANT: &str = "index `qdrant` (Qdrant Edge) is not in this build: rebuild with \
     `cargo build --release -p x0tta6bl4-cli --features qdrant` (about 390 more crates, see docs/rag.md)";

/// Write `index` to `path` atomically (temporary file, fsync, rename, fsync of the
/// directory). Returns the file's size in bytes.
pub fn save(index: &dyn VectorIndex, path: &Path) -> Result<u64, IndexError> {
    let mut payload = Vec::new();
    index.encode(&mut payload);
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&index.kind().code().to_le_bytes());
    bytes.extend_from_slice(&(index.dim() as u32).to_le_bytes());
    bytes.extend_from_slice(&(index.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Write `bytes` to `path` via a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let io = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("index"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Load an index file written by [`save`], refusing anything it cannot trust.
pub fn load(path: &Path) -> Result<Box<dyn VectorIndex>, IndexError> {
    let bytes = std::fs::read(path).map_err(|source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let refuse = |reason: String| IndexError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(refuse(
            "not an x0tta6bl4 index file (bad magic or shorter than the header)".into(),
        ));
    }
    let mut r = Reader::new(&bytes[8..HEADER_LEN]);
    let version = r.u32().unwrap_or(0);
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(refuse(format!(
            "format version {version}, this build reads versions {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"
        )));
    }
    let code = r.u32().unwrap_or(0);
    let kind = IndexKind::from_code(code)
        .ok_or_else(|| refuse(format!("unknown index kind code {code}")))?;
    let dim = r.u32().unwrap_or(0) as usize;
    let n = r.u64().unwrap_or(0) as usize;
    let len = r.u64().unwrap_or(0) as usize;
    let crc = r.u32().unwrap_or(0);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(refuse(format!(
            "payload is {} bytes, the header says {len} (truncated or appended to)",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(refuse("checksum mismatch (the file is corrupt)".into()));
    }
    let mut r = Reader::new(payload);
    let index: Result<Box<dyn VectorIndex>, String> = match kind {
        IndexKind::Flat => flat::FlatIndex::decode(&mut r, dim, n).map(|i| Box::new(i) as _),
        IndexKind::Int8 => int8::Int8Index::decode(&mut r, dim, n).map(|i| Box::new(i) as _),
        IndexKind::Pq => pq::PqIndex::decode(&mut r, dim, n, version).map(|i| Box::new(i) as _),
        IndexKind::Graph => graph::GraphIndex::decode(&mut r, dim, n).map(|i| Box::new(i) as _),
        IndexKind::PcaPq => pcapq::PcaPqIndex::decode(&mut r, dim, n).map(|i| Box::new(i) as _),
        #[cfg(feature = "qdrant")]
        IndexKind::Qdrant => qdrant::QdrantIndex::decode(&mut r, dim, n).map(|i| Box::new(i) as _),
        #[cfg(not(feature = "qdrant"))]
        IndexKind::Qdrant => return Err(refuse(NO_QDRANT.into())),
    };
    let index = index.map_err(|e| refuse(format!("malformed {kind} payload: {e}")))?;
    if r.remaining() != 0 {
        return Err(refuse(format!(
            "{} unexpected bytes after the {kind} payload",
            r.remaining()
        )));
    }
    Ok(index)
}

/// Little-endian payload writer helpers.
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.reserve(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Bounds-checked little-endian reader over a payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("needs {n} more bytes, {} left", self.buf.len()));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn f32s(&mut self, n: usize) -> Result<Vec<f32>, String> {
        let len = n.checked_mul(4).ok_or("length overflow")?;
        Ok(self
            .bytes(len)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

/// Recall of `got` against `truth`: the fraction of `truth`'s ids found in `got`.
pub fn recall(truth: &[Hit], got: &[Hit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let found = truth
        .iter()
        .filter(|t| got.iter().any(|g| g.id == t.id))
        .count();
    found as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic_clustered;

    fn built(spec: &str, data: &[f32], dim: usize) -> Box<dyn VectorIndex> {
        IndexSpec::parse(spec).unwrap().build(data, dim).unwrap()
    }

    #[test]
    fn specs_parse_and_bad_specs_say_why() {
        assert_eq!(IndexSpec::parse("flat").unwrap(), IndexSpec::Flat);
        assert_eq!(
            IndexSpec::parse("int8:clip=0.01").unwrap(),
            IndexSpec::Int8 { clip: 0.01 }
        );
        match IndexSpec::parse("pq:m=48,refine=96,cand=200").unwrap() {
            IndexSpec::Pq(p) => assert_eq!((p.m, p.refine, p.candidates), (48, 96, 200)),
            other => panic!("{other:?}"),
        }
        match IndexSpec::parse("pq:pca=1,bytes=160,cand=300").unwrap() {
            IndexSpec::PcaPq(p) => {
                assert_eq!((p.bytes, p.candidates, p.renorm), (160, 300, false))
            }
            other => panic!("{other:?}"),
        }
        // pca=0 is the plain product quantizer.
        assert!(matches!(
            IndexSpec::parse("pq:pca=0,m=48").unwrap(),
            IndexSpec::Pq(_)
        ));
        for (bad, needle) in [
            ("hnsw", "unknown index kind"),
            ("graph:m=1", "m=1 must be"),
            ("graph:ef=1.5", "non-negative integer"),
            ("graph:ef2=1", "unknown parameter"),
            ("pq:m", "not key=value"),
            ("pq:m=x", "not a number"),
            ("pq:q=1", "unknown parameter"),
            ("pq:bits=9", "bits=9 must be 1 to 8"),
            ("pq:refine=8,rbits=0", "rbits=0 must be 1 to 8"),
            ("pq:pca=1,m=48", "with pca=1: bytes"),
            ("pq:pca=1,bytes=0", "must be positive"),
            ("pq:pca=1,bytes=-3", "non-negative integer"),
            ("int8:clip=0.7", "must be in"),
            ("flat:x=1", "unknown parameter"),
            ("qdrant:bits=3", "must be 1 or 2"),
            ("qdrant:over=0", "over >= 1"),
            ("qdrant:nbits=2", "unknown parameter"),
        ] {
            let e = IndexSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn qdrant_spec_parses_and_without_the_feature_says_how_to_get_it() {
        match IndexSpec::parse("qdrant:bits=1,over=8,ef=64").unwrap() {
            IndexSpec::Qdrant(p) => {
                assert_eq!((p.bits, p.oversampling, p.ef), (1, 8, 64));
                assert_eq!(p.spec(), "qdrant:bits=1,over=8,ef=64,m=16,efc=100");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            IndexSpec::parse("qdrant").unwrap(),
            IndexSpec::Qdrant(QdrantParams::default())
        );
        #[cfg(not(feature = "qdrant"))]
        {
            let data = synthetic_clustered(20, 8, 2, 0.3, 1);
            let e = IndexSpec::parse("qdrant")
                .unwrap()
                .build(&data, 8)
                .err()
                .expect("no qdrant in this build")
                .to_string();
            assert!(e.contains("--features qdrant"), "{e}");
            // A qdrant index file (kind 6) is refused with the same advice, untouched.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.bin");
            let payload = [0u8; 4];
            let mut bytes = MAGIC.to_vec();
            for v in [FORMAT_VERSION, IndexKind::Qdrant.code(), 8] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            bytes.extend_from_slice(&20u64.to_le_bytes());
            bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
            std::fs::write(&path, &bytes).unwrap();
            let e = load(&path).err().expect("refused").to_string();
            assert!(
                e.contains("--features qdrant") && e.contains("left untouched"),
                "{e}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_file() {
        let dim = 32;
        let data = synthetic_clustered(600, dim, 12, 0.3, 7);
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            "flat",
            "int8",
            "pq:m=8,train=600,iters=6",
            "pq:m=4,refine=16,cand=40,train=600,iters=6",
            "pq:m=8,bits=4,refine=32,rbits=3,cand=40,renorm=1,train=600,iters=6",
            "pq:m=32,bits=5,renorm=1,train=600,iters=6",
            "pq:pca=1,bytes=12",
            "pq:pca=1,bytes=16,cand=50,renorm=0,iters=8",
            "graph:m=6,efc=32,ef=24",
        ] {
            let index = built(spec, &data, dim);
            let path = dir.path().join("idx.bin");
            let size = save(index.as_ref(), &path).unwrap();
            assert_eq!(size, std::fs::metadata(&path).unwrap().len());
            let back = load(&path).unwrap();
            assert_eq!(back.kind(), index.kind());
            assert_eq!(back.spec(), index.spec());
            assert_eq!((back.len(), back.dim()), (600, dim));
            assert_eq!(back.memory_bytes(), index.memory_bytes());
            for q in data.chunks(dim).step_by(97) {
                assert_eq!(back.search(q, 5), index.search(q, 5), "{spec}");
            }
        }
    }

    #[test]
    fn packed_pq_codes_are_counted_at_their_bit_width() {
        let dim = 48;
        let data = synthetic_clustered(300, dim, 6, 0.3, 2);
        // 48 sub-spaces of 3 bits = 18 bytes, 48 of 5 bits = 30 bytes; codebooks of
        // 8 and 32 centroids of the whole width; one f32 norm each.
        let pq = built(
            "pq:m=48,bits=3,refine=48,rbits=5,renorm=1,train=300,iters=4",
            &data,
            dim,
        );
        assert_eq!(pq.memory_bytes(), 300 * (18 + 30 + 4) + (8 + 32) * dim * 4);
        // Packed codes decode to the same scores as a search over them finds: the best
        // hit of a stored vector is itself or one of its cluster.
        let hits = pq.search(&data[..dim], 5);
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn version_1_pq_files_are_still_read() {
        let dim = 16;
        let data = synthetic_clustered(200, dim, 4, 0.3, 5);
        let index = built("pq:m=4,refine=8,cand=30,train=200,iters=4", &data, dim);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.bin");
        // A version-1 payload: the same without the bit widths and renorm flag (the 12
        // bytes after the 28 of m, refine, cand, train, iters and seed).
        let mut payload = Vec::new();
        index.encode(&mut payload);
        payload.drain(28..40);
        let mut bytes = MAGIC.to_vec();
        for v in [1u32, IndexKind::Pq.code(), dim as u32] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&200u64.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        std::fs::write(&path, &bytes).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.spec(), index.spec());
        assert_eq!(back.search(&data[..dim], 5), index.search(&data[..dim], 5));
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_refused_and_left_alone() {
        let dim = 16;
        let data = synthetic_clustered(100, dim, 4, 0.3, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx.bin");
        save(built("int8", &data, dim).as_ref(), &path).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let mut wrong_version = good.clone();
        wrong_version[8] = 9;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (flipped, "checksum mismatch"),
            (good[..good.len() - 3].to_vec(), "truncated"),
            (wrong_version, "format version 9"),
            (
                b"hello world, not an index at all".to_vec(),
                "not an x0tta6bl4 index",
            ),
        ];
        for (bytes, needle) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = load(&path).err().expect("must be refused").to_string();
            assert!(e.contains(needle), "{e}");
            assert!(e.contains("left untouched"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "file was modified");
        }
    }

    #[test]
    fn flat_is_exact_and_quantized_indexes_recall_well_on_clustered_data() {
        let dim = 32;
        let data = crate::data::clustered(2000, dim, 30, 0.35, 3, 4);
        let queries = crate::data::clustered(40, dim, 30, 0.35, 3, 5);
        let flat = built("flat", &data, dim);
        let int8 = built("int8", &data, dim);
        let pq = built("pq:m=8,refine=16,cand=60,train=2000,iters=6", &data, dim);
        let (mut r_int8, mut r_pq) = (0.0, 0.0);
        for q in queries.chunks(dim) {
            let truth = flat.search(q, 10);
            // Flat is the exhaustive scan.
            let mut scores: Vec<(u32, f32)> = data
                .chunks(dim)
                .enumerate()
                .map(|(i, v)| (i as u32, v.iter().zip(q).map(|(a, b)| a * b).sum()))
                .collect();
            scores.sort_by(|a, b| b.1.total_cmp(&a.1));
            assert_eq!(truth[0].id, scores[0].0);
            r_int8 += recall(&truth, &int8.search(q, 10));
            r_pq += recall(&truth, &pq.search(q, 10));
        }
        let n = (queries.len() / dim) as f64;
        assert!(r_int8 / n >= 0.95, "int8 recall {}", r_int8 / n);
        assert!(r_pq / n >= 0.8, "pq recall {}", r_pq / n);
        // Sizes: int8 ~4x, pq far smaller than flat.
        let raw = data.len() * 4;
        assert_eq!(flat.memory_bytes(), raw);
        let c8 = raw as f64 / int8.memory_bytes() as f64;
        assert!(c8 > 3.5 && c8 <= 4.0, "int8 compression {c8}");
        // PQ holds 8 + 16 code bytes per vector and two codebooks of 256 x 32 floats.
        assert_eq!(pq.memory_bytes(), 2000 * (8 + 16) + 2 * 256 * dim * 4);
    }
}
