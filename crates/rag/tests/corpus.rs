//! The real corpus: Debian's linux-doc-6.1 kernel documentation is found and chunked.

use x0tta6bl4_rag::chunk::{chunk_document, ChunkConfig};
use x0tta6bl4_rag::data::{linux_doc_files, read_document};

#[test]
fn kernel_documentation_is_read_and_chunked_with_heading_paths() {
    let files = match linux_doc_files() {
        Ok(f) => f,
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true and the corpus is missing: {e}");
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    assert_eq!(files.len(), 3183, "linux-doc-6.1 ships 3,183 .rst files");
    let cfg = ChunkConfig::default();
    let (mut chunks, mut with_headings) = (0, 0);
    for f in files.iter().step_by(100) {
        let (format, text) = read_document(f).unwrap();
        for c in chunk_document(&f.display().to_string(), &text, format, cfg) {
            assert!(c.text.chars().count() <= cfg.max_chars, "{}", c.text);
            assert!(!c.text.trim().is_empty());
            chunks += 1;
            with_headings += usize::from(!c.headings.is_empty());
        }
    }
    assert!(chunks > 200, "{chunks} chunks from 32 files");
    assert!(
        with_headings * 10 >= chunks * 9,
        "{with_headings} of {chunks} chunks have a heading path"
    );
}
