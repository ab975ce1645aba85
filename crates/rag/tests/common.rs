//! Shared by the tests that need the embedding model.

use x0tta6bl4_rag::embed::{default_model_dir, Embedder, FETCH_HINT};

/// The model, or `None` (outside CI) when it is not fetched. Under `CI=true` a missing
/// model fails the test, saying how to fetch it.
pub fn embedder() -> Option<Embedder> {
    match Embedder::load(&default_model_dir()) {
        Ok(e) => Some(e),
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true and the embedding model is unavailable: {e}");
            eprintln!("SKIPPED: embedding model unavailable ({e}); {FETCH_HINT}");
            None
        }
    }
}
