//! The candle embedder agrees with sentence-transformers on the same weights.

mod common;

use x0tta6bl4_rag::embed::{EmbedError, Embedder, DIM};
use x0tta6bl4_rag::index::dot;

#[derive(serde::Deserialize)]
struct Reference {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

#[test]
fn matches_reference_vectors_batched_and_deterministic() {
    let Some(model) = common::embedder() else {
        return;
    };
    let reference: Reference =
        serde_json::from_str(include_str!("data/minilm-reference.json")).unwrap();
    let got = model.embed(&reference.texts).unwrap();
    assert_eq!(got.len(), reference.texts.len());
    for ((text, want), have) in reference.texts.iter().zip(&reference.vectors).zip(&got) {
        assert_eq!(have.len(), DIM);
        let norm = dot(have, have).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not normalised: {norm}");
        let cos = dot(have, want) / dot(want, want).sqrt();
        let max_diff = have
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(cos > 0.9999, "cosine {cos} for {text:.40}");
        assert!(max_diff < 2e-4, "max difference {max_diff} for {text:.40}");
    }
    // Deterministic: the same batch twice gives the same bits; one at a time (other
    // padding) agrees to float precision.
    assert_eq!(model.embed(&reference.texts).unwrap(), got);
    let alone = model.embed_one(&reference.texts[0]).unwrap();
    let cos = dot(&alone, &got[0]);
    assert!(cos > 0.99999, "{cos}");
    // Different texts are told apart; related ones are closer than unrelated ones.
    let v = model
        .embed(&[
            "the route to the gateway was lost",
            "the link to the gateway went down",
            "a recipe for apple pie",
        ])
        .unwrap();
    assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2);
}

#[test]
fn a_missing_model_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = Embedder::load(dir.path()).unwrap_err();
    assert!(matches!(e, EmbedError::Missing { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("fetch-model.sh"),
        "{msg}"
    );
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), "").unwrap();
    let msg = Embedder::load(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("unusable") && msg.contains("config.json"),
        "{msg}"
    );
}
