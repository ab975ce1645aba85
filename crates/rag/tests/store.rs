//! Ingest real files into a store, query it, reopen it, and refuse a damaged one.

mod common;

use std::path::PathBuf;

use x0tta6bl4_rag::chunk::ChunkConfig;
use x0tta6bl4_rag::index::IndexSpec;
use x0tta6bl4_rag::store::{ingest, Store};

#[test]
fn ingest_query_reopen_and_skip_bad_files() {
    let Some(model) = common::embedder() else {
        return;
    };
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(
        d.join("runbook.md"),
        "# Runbooks\n\n## Partition\n\nWhen the mesh splits into two partitions, wait for the link to return; routes are repaired automatically within seconds.\n\n## Certificate expired\n\nRenew the SVID with `x0tta6bl4 ca issue` and restart the node.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("pci.rst"),
        "PCI\n===\n\nsysfs exposes PCI device resources under /sys/bus/pci/devices.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("page.html"),
        "<h1>Cooking</h1><p>Bake the apple pie for forty minutes.</p>",
    )
    .unwrap();
    std::fs::write(d.join("blob.txt"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(d.join("image.png"), [137u8, 80, 78, 71]).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let report = ingest(
        store_dir.path(),
        &[d.to_path_buf(), PathBuf::from("/nonexistent/file.md")],
        &IndexSpec::parse("int8").unwrap(),
        &model,
        ChunkConfig::default(),
        &mut |l| lines.push(l),
    )
    .unwrap();
    assert_eq!(report.files, 3, "{report:?}");
    assert_eq!(report.added, 4);
    assert_eq!(report.skipped.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("blob.txt") && l.contains("binary")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("image.png") && l.contains("unsupported")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("nonexistent") && l.contains("unreadable")),
        "{lines:?}"
    );

    let store = Store::open(store_dir.path()).unwrap();
    assert_eq!(store.manifest.chunks, 4);
    let answers = store
        .query(&model, "the certificate of a node has expired", 2)
        .unwrap();
    assert_eq!(answers[0].headings, vec!["Runbooks", "Certificate expired"]);
    assert!(answers[0].source.ends_with("runbook.md"));
    assert!(answers[0].score > answers[1].score);
    let answers = store
        .query(&model, "network split into partitions", 1)
        .unwrap();
    assert_eq!(answers[0].headings, vec!["Runbooks", "Partition"]);

    // Re-ingesting a file replaces its chunks, and another index kind can be chosen.
    std::fs::write(
        d.join("pci.rst"),
        "PCI\n===\n\nNothing here about devices any more.\n\nSecond paragraph.\n",
    )
    .unwrap();
    let report = ingest(
        store_dir.path(),
        &[d.join("pci.rst")],
        &IndexSpec::Flat,
        &model,
        ChunkConfig::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((report.replaced, report.added, report.total), (1, 1, 4));
    let store = Store::open(store_dir.path()).unwrap();
    assert_eq!(store.manifest.index, "flat");

    // A damaged index file is refused, not rebuilt over.
    let idx = store_dir.path().join("index.bin");
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&idx, &bytes).unwrap();
    let e = Store::open(store_dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    assert_eq!(std::fs::read(&idx).unwrap(), bytes);
}
