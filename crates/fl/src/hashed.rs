//! Model files that carry the SHA-256 of their model: `{"format", "model", "sha256"}`,
//! the hash over the model's canonical JSON (`serde_json::to_vec`). The link-failure
//! predictor ([`crate::linkpredict::PredictorFile`]) and the PPO policy
//! ([`crate::ppo::PolicyFile`]) are written and checked through here.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    format: String,
    model: T,
    sha256: String,
}

/// SHA-256 (hex) of `model`'s canonical JSON.
pub(crate) fn digest<T: Serialize>(model: &T) -> String {
    let bytes = serde_json::to_vec(model).expect("a model serializes");
    hex::encode(Sha256::digest(&bytes))
}

/// The model in `bytes`, or why it is refused: not a `kind` file, another format, a
/// hash that does not match, or what `check` finds wrong with the model.
pub(crate) fn open<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    format: &str,
    kind: &str,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, String> {
    let file: Envelope<T> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a {kind} file ({e})"))?;
    if file.format != format {
        return Err(format!(
            "format {:?}, this build reads {format:?}",
            file.format
        ));
    }
    let actual = digest(&file.model);
    if actual != file.sha256 {
        return Err(format!(
            "hash check failed (file says {}, the {kind} hashes to {actual}): the file was altered or damaged",
            file.sha256
        ));
    }
    check(&file.model)?;
    Ok(file.model)
}

/// Write `model` with its hash to `path` atomically (a crash leaves the old file or the
/// new one).
pub(crate) fn save<T: Serialize>(model: &T, format: &str, path: &Path) -> std::io::Result<()> {
    let file = Envelope {
        format: format.to_owned(),
        sha256: digest(model),
        model,
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("a model serializes");
    crate::audit::write_atomic(path, &bytes)
}
