//! `qdrant`: Qdrant Edge (`qdrant-edge` 0.7) as an embedded index, with binary
//! quantization (2 bits per dimension by default) and rescoring by the original vectors.
//!
//! **Status:** tested with the feature (`cargo test -p x0tta6bl4-rag --features qdrant`)
//! and measured on the real corpus (docs/rag.md, "`qdrant`"); clippy-clean with it.
//!
//! Only compiled with the crate feature `qdrant` (off by default: `qdrant-edge` is most
//! of the Qdrant server in one crate, about 390 crates to build; see docs/rag.md).
//!
//! The index is an [`EdgeShard`] in a private temporary directory: one dense vector per
//! point (the row number is the point id), dot-product distance (the embeddings are
//! L2-normalised), original vectors stored on disk (mmap), binary-quantized codes kept
//! in RAM, an HNSW graph built by the shard's own optimizer. A search asks Qdrant for
//! `k` points with `oversampling = over` (default 8): it takes `over × k` candidates by the quantized
//! codes, rescores them with the original vectors and returns the best `k`.
//!
//! Persistence fits the one-file model of the other indexes: the payload of the index
//! file is the parameters plus an archive of the shard's files (its segments and its
//! `edge_config.json`; the write-ahead log is left out, it is empty of anything the
//! segments do not hold after the final flush). Loading unpacks them into a new private
//! directory and opens the shard there.
//!
//! Size accounting: `memory_bytes` counts the files a search keeps in RAM, the
//! quantized codes and the HNSW graph; not the original f32 vectors, which Qdrant
//! memory-maps from disk and reads only to rescore candidates, nor the id tracker and
//! payload files (Qdrant preallocates some at a fixed size: tens of MB for any shard).
//! The disk figure (the index file) holds all of it, so its ratio is far below 1 for
//! small shards.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use qdrant_edge::{
    BinaryQuantizationConfig, BinaryQuantizationEncoding, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParams, HnswIndexConfig, NamedQuery, PointId, PointInsertOperations, PointOperations,
    PointStructPersisted, QuantizationSearchParams, QueryEnum, SearchParams, SearchRequest,
    UpdateOperation, VectorInternal, VectorStructPersisted, DEFAULT_VECTOR_NAME,
};

use super::{put_u32, Hit, IndexError, IndexKind, QdrantParams, Reader, VectorIndex};

/// Qdrant Edge with binary quantization and rescoring.
pub struct QdrantIndex {
    params: QdrantParams,
    dim: usize,
    n: usize,
    // Dropped before `dir`: the shard flushes into its directory when dropped.
    shard: Mutex<EdgeShard>,
    dir: tempfile::TempDir,
}

fn qerr(what: &str, e: impl std::fmt::Display) -> IndexError {
    IndexError::Invalid(format!("qdrant-edge: {what}: {e}"))
}

fn io_err(path: &Path, source: std::io::Error) -> IndexError {
    IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn private_dir() -> Result<tempfile::TempDir, IndexError> {
    tempfile::Builder::new()
        .prefix("x0tta6bl4-qdrant-")
        .tempdir()
        .map_err(|e| io_err(&std::env::temp_dir(), e))
}

impl QdrantIndex {
    /// Build over `data` (`n * dim` floats): create the shard, insert every vector,
    /// run the optimizer until the HNSW graph and the quantized codes are built.
    pub fn build(data: &[f32], dim: usize, params: &QdrantParams) -> Result<Self, IndexError> {
        params.check()?;
        let n = data.len() / dim;
        let dir = private_dir()?;
        let encoding = if params.bits == 2 {
            BinaryQuantizationEncoding::TwoBits
        } else {
            BinaryQuantizationEncoding::OneBit
        };
        let vector = EdgeVectorParams::builder(dim, Distance::Dot)
            .on_disk(true)
            .quantization_config(
                BinaryQuantizationConfig {
                    always_ram: Some(true),
                    encoding: Some(encoding),
                    query_encoding: None,
                }
                .into(),
            )
            .build();
        let config = EdgeConfigBuilder::new()
            .vector(DEFAULT_VECTOR_NAME, vector)
            .hnsw_config(HnswIndexConfig {
                m: params.m,
                ef_construct: params.ef_construct,
                max_indexing_threads: 1,
                ..HnswIndexConfig::default()
            })
            .optimizers(qdrant_edge::EdgeOptimizersConfig {
                default_segment_number: Some(1),
                // KB of vectors above which a segment gets its HNSW graph (and its
                // quantized codes): 1 KB, so every shard is indexed.
                indexing_threshold: Some(1),
                ..Default::default()
            })
            .build();
        let shard = EdgeShard::new(dir.path(), config).map_err(|e| qerr("create shard", e))?;
        // Batches of 256 points (384 KB of f32 at 384-d): each is one WAL record, well
        // inside the WAL's default 32 MiB segments.
        for (b, batch) in data.chunks(dim * 256).enumerate() {
            let points = batch
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, v)| PointStructPersisted {
                    id: PointId::NumId((b * 256 + i) as u64),
                    vector: VectorStructPersisted::Single(v.to_vec()),
                    payload: None,
                })
                .collect();
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(|e| qerr("insert vectors", e))?;
        }
        shard.optimize().map_err(|e| qerr("optimize", e))?;
        shard.flush();
        let index = Self {
            params: params.clone(),
            dim,
            n,
            shard: Mutex::new(shard),
            dir,
        };
        index.check_built()?;
        Ok(index)
    }

    /// Refuse a shard whose vectors are not all there or not quantized: a search over
    /// it would silently be exact and its figures meaningless.
    fn check_built(&self) -> Result<(), IndexError> {
        let info = self.shard().info();
        if info.points_count != self.n {
            return Err(IndexError::Invalid(format!(
                "qdrant-edge shard holds {} points, {} were inserted",
                info.points_count, self.n
            )));
        }
        let files = shard_files(self.dir.path())?;
        if self.n > 0 && !files.iter().any(|(p, _)| is_quantized(p)) {
            return Err(IndexError::Invalid(
                "qdrant-edge built no quantized vectors (no quantized.* file in the shard)".into(),
            ));
        }
        Ok(())
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, EdgeShard> {
        self.shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn decode(r: &mut Reader<'_>, dim: usize, n: usize) -> Result<Self, String> {
        let mut field = || r.u32().map(|v| v as usize);
        let params = QdrantParams {
            bits: field()?,
            oversampling: field()?,
            ef: field()?,
            m: field()?,
            ef_construct: field()?,
        };
        params.check().map_err(|e| e.to_string())?;
        let count = r.u32()? as usize;
        let dir = private_dir().map_err(|e| e.to_string())?;
        for _ in 0..count {
            let len = r.u32()? as usize;
            let name = std::str::from_utf8(r.bytes(len)?)
                .map_err(|_| "a file name is not UTF-8".to_string())?;
            let rel = safe_relative(name)?;
            let size = usize::try_from(r.u64()?).map_err(|_| "file size overflow")?;
            let bytes = r.bytes(size)?;
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let shard = EdgeShard::load(dir.path(), None)
            .map_err(|e| format!("qdrant-edge refused the shard: {e}"))?;
        let index = Self {
            params,
            dim,
            n,
            shard: Mutex::new(shard),
            dir,
        };
        index.check_built().map_err(|e| e.to_string())?;
        Ok(index)
    }
}

/// A relative path inside the archive, refusing `..`, absolute paths and the like.
fn safe_relative(name: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(name);
    if name.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "archive entry `{name}` is not a plain relative path"
        ));
    }
    Ok(p)
}

/// Whether a shard file holds quantized codes.
fn is_quantized(rel: &Path) -> bool {
    rel.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("quantized"))
}

/// Whether a shard file is what a search keeps in RAM: the quantized codes
/// (`always_ram`) and the HNSW graph (under `vector_index/`). The original vectors
/// (memory-mapped, read only to rescore), the id tracker, payload storage and the
/// files Qdrant preallocates at a fixed size are not counted.
fn is_resident(rel: &Path) -> bool {
    is_quantized(rel) || rel.components().any(|c| c.as_os_str() == "vector_index")
}

/// The files a shard needs to be opened again: `edge_config.json` and everything under
/// `segments/`, as (path relative to `root`, size), sorted.
fn shard_files(root: &Path) -> Result<Vec<(PathBuf, u64)>, IndexError> {
    let mut out = Vec::new();
    let config = root.join("edge_config.json");
    if config.is_file() {
        let len = std::fs::metadata(&config)
            .map_err(|e| io_err(&config, e))?
            .len();
        out.push((PathBuf::from("edge_config.json"), len));
    }
    let mut stack = vec![root.join("segments")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io_err(&d, e))? {
            let entry = entry.map_err(|e| io_err(&d, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| io_err(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.push((rel, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl VectorIndex for QdrantIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Qdrant
    }

    fn spec(&self) -> String {
        self.params.spec()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.n
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery {
                query: VectorInternal::from(query[..self.dim].to_vec()),
                using: None,
            }),
            filter: None,
            params: Some(SearchParams {
                hnsw_ef: Some(self.params.ef.max(k)),
                exact: false,
                quantization: Some(QuantizationSearchParams {
                    ignore: false,
                    rescore: Some(true),
                    oversampling: Some(self.params.oversampling as f64),
                }),
                indexed_only: false,
                acorn: None,
            }),
            limit: k,
            offset: 0,
            with_payload: None,
            with_vector: None,
            score_threshold: None,
        };
        // The trait has no error path: a failed search (an I/O error reading the
        // memory-mapped vectors) answers nothing rather than something wrong.
        let Ok(points) = self.shard().search(request) else {
            return Vec::new();
        };
        points
            .into_iter()
            .filter_map(|p| match p.id {
                PointId::NumId(id) => u32::try_from(id).ok().map(|id| Hit { id, score: p.score }),
                PointId::Uuid(_) => None,
            })
            .collect()
    }

    fn memory_bytes(&self) -> usize {
        shard_files(self.dir.path())
            .map(|files| {
                files
                    .iter()
                    .filter(|(p, _)| is_resident(p))
                    .map(|(_, len)| *len as usize)
                    .sum()
            })
            .unwrap_or(0)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.params.bits,
            self.params.oversampling,
            self.params.ef,
            self.params.m,
            self.params.ef_construct,
        ] {
            put_u32(out, v as u32);
        }
        self.shard().flush();
        // The trait's encode cannot fail: an unreadable shard file is written as an
        // empty archive, which the loader then refuses (no quantized vectors).
        let files = shard_files(self.dir.path()).unwrap_or_default();
        let mut entries = Vec::with_capacity(files.len());
        for (rel, _) in &files {
            match std::fs::read(self.dir.path().join(rel)) {
                Ok(bytes) => entries.push((rel.to_string_lossy().into_owned(), bytes)),
                Err(_) => {
                    entries.clear();
                    break;
                }
            }
        }
        put_u32(out, entries.len() as u32);
        for (name, bytes) in entries {
            put_u32(out, name.len() as u32);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{load, recall, save, IndexSpec};

    #[test]
    fn qdrant_two_bit_recalls_like_flat_and_round_trips_through_its_file() {
        // Binary codes of low-dimensional vectors rank coarsely (0.71 recall@10 with
        // over=4 here): 16 candidates per result are rescored.
        let dim = 64;
        let data = crate::data::clustered(3000, dim, 30, 0.4, 3, 4);
        let queries = crate::data::clustered(30, dim, 30, 0.4, 3, 5);
        let flat = IndexSpec::Flat.build(&data, dim).unwrap();
        let spec = IndexSpec::parse("qdrant:bits=2,over=16").unwrap();
        let q = spec.build(&data, dim).unwrap();
        assert_eq!(q.kind(), IndexKind::Qdrant);
        assert_eq!(q.len(), 3000);
        // 2 bits per dimension in RAM plus the graph: well under the f32 bytes; the
        // file holds the original vectors too.
        let raw = data.len() * 4;
        assert!(
            q.memory_bytes() > 0 && q.memory_bytes() < raw / 2,
            "{}",
            q.memory_bytes()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.bin");
        let disk = save(q.as_ref(), &path).unwrap() as usize;
        assert!(
            disk > raw,
            "the file holds the original vectors: {disk} <= {raw}"
        );
        let back = load(&path).unwrap();
        assert_eq!(back.spec(), q.spec());
        let mut r = 0.0;
        for qv in queries.chunks(dim) {
            let truth = flat.search(qv, 10);
            let got = back.search(qv, 10);
            assert_eq!(got.len(), 10);
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
            assert_eq!(got, q.search(qv, 10));
            r += recall(&truth, &got);
        }
        let r = r / 30.0;
        assert!(r >= 0.9, "qdrant 2-bit recall@10 {r}");
    }

    #[test]
    fn archive_paths_that_escape_are_refused() {
        for bad in ["../x", "/etc/passwd", "", "a/../../b"] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert!(safe_relative("segments/abc/vector_storage/x.dat").is_ok());
        assert!(!is_resident(Path::new(
            "segments/u/vector_storage/vectors/chunk_0.mmap"
        )));
        assert!(is_resident(Path::new(
            "segments/u/vector_storage/quantized.data"
        )));
        assert!(is_resident(Path::new("segments/u/vector_index/graph.bin")));
    }
}
