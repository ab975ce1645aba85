//! Edge RAG guardian: on-device retrieval over operational knowledge.
//!
//! - [`embed`]: all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling, L2
//!   normalisation) run by candle on the CPU.
//! - [`chunk`]: Markdown, reStructuredText, HTML and plain text split into overlapping
//!   chunks that keep their source path and heading path.
//! - [`index`]: vector indexes behind one trait ([`index::VectorIndex`]): exact `flat`,
//!   scalar `int8`, product-quantized `pq` (1- to 8-bit codes, bit-packed) with residual
//!   re-ranking, `pq:pca=1` (a PCA rotation, then one-dimensional sub-spaces whose bit
//!   widths are allocated under a whole-index byte budget), an HNSW `graph` over int8
//!   codes; each persisted to a versioned, checksummed file, each reporting the bytes it
//!   needs. With the crate feature `qdrant` (off by default), also Qdrant Edge with
//!   binary quantization and rescoring (`index::qdrant`, see docs/rag.md).
//! - [`data`]: synthetic clustered vectors and the Linux kernel documentation corpus.
//! - [`store`]: a directory holding chunks, their index and its manifest: ingest (files
//!   or documents in memory), query.
//! - [`advise`]: runbook passages for a fault or healing event name.
//! - [`generate`]: an answer generated from the passages by an OpenAI-compatible
//!   chat-completions endpoint (prompt, request body, response parsing; the caller does
//!   the HTTP), or the extractive answer when none is configured or it fails.
//! - [`bench`]: recall against `flat`, compression, latency and memory of an index on a
//!   data set, and issue 17's targets checked against them ([`bench::targets`]).
//!
//! Field libraries do the heavy lifting: candle and candle-transformers (the BERT
//! encoder), tokenizers (word pieces), pulldown-cmark (Markdown), scraper/html5ever
//! (HTML), nalgebra (the PCA's eigendecomposition and QR), half (f16). Written by hand,
//! because no library fits: the reStructuredText section
//! parser, k-means for PQ codebooks (seeded f32, FAISS-style empty-cluster splitting),
//! the quantizers and their scoring loops (including `pq:pca=1`'s one-dimensional
//! Lloyd-Max codebooks and budgeted bit allocation), the HNSW graph (see [`index::graph`] for why
//! not `hnsw_rs`), and the index file format.

pub mod advise;
pub mod bench;
pub mod chunk;
pub mod data;
pub mod embed;
pub mod generate;
pub mod index;
pub mod store;
