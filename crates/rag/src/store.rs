//! A knowledge store: a directory holding chunks, their embeddings and a search index.
//!
//! Layout:
//! - `manifest.json`: format version, model, dimension, index spec, chunk count;
//! - `chunks.jsonl`: one [`Chunk`] per line, in index order;
//! - `index.bin`: the search index (see [`crate::index`] for its file format);
//! - `vectors.bin`: the full-precision embeddings as a `flat` index file, kept so a
//!   later ingest or another index kind needs no re-embedding. Queries never load it;
//!   it is not counted in the index's size.
//!
//! Every file is written to a temporary name, fsynced and renamed; the manifest last,
//! so a crash in the middle of an ingest leaves a store whose manifest disagrees with
//! its files, which [`Store::open`] refuses (with the fix) instead of serving
//! mismatched chunks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::{chunk_document, Chunk, ChunkConfig, Format};
use crate::data::{read_document, walk};
use crate::embed::{EmbedError, Embedder, DIM};
use crate::index::{self, Hit, IndexError, IndexSpec, VectorIndex};

/// The store layout version this build reads and writes.
pub const STORE_VERSION: u32 = 1;
/// Model name recorded in manifests.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An index file problem.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// A store file is missing, unreadable or inconsistent.
    #[error("store {path}: {reason}")]
    Bad {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`STORE_VERSION`]).
    pub version: u32,
    /// Embedding model.
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    /// Index spec it was built with.
    pub index: String,
    /// Number of chunks (= vectors).
    pub chunks: usize,
}

/// One retrieved passage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Cosine similarity with the query.
    pub score: f32,
    /// Document it came from.
    pub source: String,
    /// Section titles, outermost first.
    pub headings: Vec<String>,
    /// The passage.
    pub text: String,
}

/// What an ingest did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    /// Documents read and chunked.
    pub files: usize,
    /// Files skipped, with why.
    pub skipped: Vec<(String, String)>,
    /// Chunks added by this ingest.
    pub added: usize,
    /// Chunks of earlier ingests replaced (same source path).
    pub replaced: usize,
    /// Chunks in the store now.
    pub total: usize,
    /// Bytes of `index.bin`.
    pub index_bytes: u64,
}

/// An opened store, ready to answer queries.
pub struct Store {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    index: Box<dyn VectorIndex>,
    chunks: Vec<Chunk>,
}

fn bad(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Bad {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_chunks(path: &Path) -> Result<Vec<Chunk>, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                bad(
                    path,
                    format!(
                        "line {}: {e}; re-ingest the documents to rebuild the store",
                        i + 1
                    ),
                )
            })
        })
        .collect()
}

fn write_chunks(path: &Path, chunks: &[Chunk]) -> Result<(), StoreError> {
    let mut out = String::new();
    for c in chunks {
        out.push_str(&serde_json::to_string(c).expect("chunks serialise"));
        out.push('\n');
    }
    index::write_atomic(path, out.as_bytes())?;
    Ok(())
}

impl Store {
    /// Open the store in `dir`, checking its files agree with the manifest.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| {
            bad(
                &mpath,
                format!(
                    "{e}; create the store with `x0tta6bl4 rag ingest --index {} PATH...`",
                    dir.display()
                ),
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| bad(&mpath, format!("malformed manifest: {e}")))?;
        if manifest.version != STORE_VERSION {
            return Err(bad(
                &mpath,
                format!(
                    "store layout version {}, this build reads {STORE_VERSION}; re-ingest into a new directory",
                    manifest.version
                ),
            ));
        }
        let index = index::load(&dir.join("index.bin"))?;
        let chunks = read_chunks(&dir.join("chunks.jsonl"))?;
        if index.len() != manifest.chunks
            || chunks.len() != manifest.chunks
            || index.dim() != manifest.dim
        {
            return Err(bad(
                dir,
                format!(
                    "manifest says {} chunks of dimension {}, index.bin has {} of dimension {}, chunks.jsonl has {} (an interrupted ingest?); re-run the ingest",
                    manifest.chunks,
                    manifest.dim,
                    index.len(),
                    index.dim(),
                    chunks.len()
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            index,
            chunks,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The search index.
    pub fn index(&self) -> &dyn VectorIndex {
        self.index.as_ref()
    }

    /// The chunks, in index order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The `k` passages nearest to an embedded query.
    pub fn search_vector(&self, query: &[f32], k: usize) -> Vec<Answer> {
        self.index
            .search(query, k)
            .into_iter()
            .filter_map(|Hit { id, score }| {
                self.chunks.get(id as usize).map(|c| Answer {
                    score,
                    source: c.source.clone(),
                    headings: c.headings.clone(),
                    text: c.text.clone(),
                })
            })
            .collect()
    }

    /// Embed `text` and return the `k` nearest passages.
    pub fn query(
        &self,
        embedder: &Embedder,
        text: &str,
        k: usize,
    ) -> Result<Vec<Answer>, StoreError> {
        let q = embedder.embed_one(text)?;
        Ok(self.search_vector(&q, k))
    }
}

/// Expand `paths` (files and directories) into the files to read, sorted, deduplicated.
fn expand(paths: &[PathBuf], report: &mut IngestReport) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    for p in paths {
        if p.is_dir() {
            match walk(p) {
                Ok(found) => files.extend(found),
                Err(e) => report.skipped.push((
                    p.display().to_string(),
                    format!("unreadable directory: {e}"),
                )),
            }
        } else {
            files.insert(p.clone());
        }
    }
    files.into_iter().collect()
}

/// A document handed over in memory (the service's ingest endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// The name it is stored and replaced under (a path or any label).
    pub source: String,
    /// How to chunk it.
    pub format: Format,
    /// Its text.
    pub text: String,
}

/// Read, chunk and embed `paths` (files or directories, recursively) into the store in
/// `dir` (created if missing), replacing chunks of the same source paths, and rebuild
/// its index with `spec`. Unreadable, binary and unsupported files are skipped; `log`
/// gets one line for each, saying which and why.
pub fn ingest(
    dir: &Path,
    paths: &[PathBuf],
    spec: &IndexSpec,
    embedder: &Embedder,
    cfg: ChunkConfig,
    log: &mut dyn FnMut(String),
) -> Result<IngestReport, StoreError> {
    let mut report = IngestReport::default();
    let mut documents = Vec::new();
    for file in expand(paths, &mut report) {
        match read_document(&file) {
            Ok((format, text)) => {
                let source = file.display().to_string();
                documents.push(Document {
                    source,
                    format,
                    text,
                });
                report.files += 1;
            }
            Err(e) => {
                log(format!("skipped {}: {e}", file.display()));
                report
                    .skipped
                    .push((file.display().to_string(), e.to_string()));
            }
        }
    }
    ingest_into(dir, documents, spec, embedder, cfg, report)
}

/// Chunk and embed `documents` into the store in `dir` (created if missing), replacing
/// chunks of the same sources, and rebuild its index with `spec`.
pub fn ingest_documents(
    dir: &Path,
    documents: Vec<Document>,
    spec: &IndexSpec,
    embedder: &Embedder,
    cfg: ChunkConfig,
) -> Result<IngestReport, StoreError> {
    let report = IngestReport {
        files: documents.len(),
        ..IngestReport::default()
    };
    ingest_into(dir, documents, spec, embedder, cfg, report)
}

/// The chunks and full-precision vectors of the store in `dir`, if it has one.
fn previous_contents(dir: &Path) -> Result<(Vec<Chunk>, Vec<f32>), StoreError> {
    if !dir.join("manifest.json").exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let old = Store::open(dir)?;
    let vpath = dir.join("vectors.bin");
    let flat = index::load(&vpath)?;
    if flat.len() != old.chunks.len() {
        return Err(bad(
            &vpath,
            "holds another number of vectors than chunks.jsonl; re-ingest into a new directory",
        ));
    }
    let mut raw = Vec::new();
    flat.encode(&mut raw);
    let vectors: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok((old.chunks, vectors))
}

fn ingest_into(
    dir: &Path,
    documents: Vec<Document>,
    spec: &IndexSpec,
    embedder: &Embedder,
    cfg: ChunkConfig,
    mut report: IngestReport,
) -> Result<IngestReport, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| bad(dir, format!("cannot create: {e}")))?;
    let (chunks, vectors) = previous_contents(dir)?;
    let mut new_chunks = Vec::new();
    let mut sources = BTreeSet::new();
    for d in documents {
        new_chunks.extend(chunk_document(&d.source, &d.text, d.format, cfg));
        sources.insert(d.source);
    }
    // Drop replaced chunks (same source), keeping vectors aligned.
    let before = chunks.len();
    let mut kept_vectors = Vec::with_capacity(vectors.len());
    let mut kept = Vec::with_capacity(chunks.len());
    for (c, v) in chunks.into_iter().zip(vectors.chunks_exact(DIM)) {
        if !sources.contains(&c.source) {
            kept_vectors.extend_from_slice(v);
            kept.push(c);
        }
    }
    report.replaced = before - kept.len();
    let (mut chunks, mut vectors) = (kept, kept_vectors);
    let texts: Vec<String> = new_chunks.iter().map(Chunk::embedding_text).collect();
    for v in embedder.embed(&texts)? {
        vectors.extend(v);
    }
    report.added = new_chunks.len();
    chunks.extend(new_chunks);
    report.total = chunks.len();
    write_store(dir, chunks, vectors, spec, &mut report)?;
    Ok(report)
}

/// Build the index and write the store's files, the manifest last.
fn write_store(
    dir: &Path,
    chunks: Vec<Chunk>,
    vectors: Vec<f32>,
    spec: &IndexSpec,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    let built = spec.build(&vectors, DIM)?;
    index::save(
        &index::flat::FlatIndex::new(vectors, DIM),
        &dir.join("vectors.bin"),
    )?;
    write_chunks(&dir.join("chunks.jsonl"), &chunks)?;
    report.index_bytes = index::save(built.as_ref(), &dir.join("index.bin"))?;
    let manifest = Manifest {
        version: STORE_VERSION,
        model: MODEL_NAME.into(),
        dim: DIM,
        index: built.spec(),
        chunks: chunks.len(),
    };
    index::write_atomic(
        &dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)
            .expect("manifest serialises")
            .as_bytes(),
    )?;
    Ok(())
}
