//! Data sets for measurement: synthetic clustered vectors and a real document corpus.
//!
//! - Synthetic: `clusters` centres drawn uniformly on the unit sphere, each point a
//!   centre plus Gaussian noise of standard deviation `noise / sqrt(dim)` per
//!   dimension, normalised again. Seeded, so the same arguments give the same vectors.
//! - Corpus: the Linux kernel documentation shipped by Debian's `linux-doc-6.1`
//!   package (3,183 gzipped reStructuredText files under
//!   `/usr/share/doc/linux-doc-6.1/Documentation`), read with [`read_document`].

use std::io::Read;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Where Debian's `linux-doc-6.1` puts the kernel documentation.
pub const LINUX_DOC_DIR: &str = "/usr/share/doc/linux-doc-6.1/Documentation";

/// How to get the corpus, for error messages.
pub const LINUX_DOC_HINT: &str =
    "install it with `apt-get install linux-doc-6.1` (scripts/test.sh does)";

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` normalised `dim`-dimensional vectors around `clusters` centres chosen by
/// `centre_seed`; the points themselves are drawn by `point_seed` (queries use another
/// point seed than the data, same centre seed).
pub fn clustered(
    n: usize,
    dim: usize,
    clusters: usize,
    noise: f32,
    centre_seed: u64,
    point_seed: u64,
) -> Vec<f32> {
    let std = Normal::new(0.0f32, 1.0).expect("valid normal");
    let mut rng = ChaCha8Rng::seed_from_u64(centre_seed);
    let clusters = clusters.max(1);
    let mut centres = Vec::with_capacity(clusters * dim);
    for _ in 0..clusters {
        let mut c: Vec<f32> = (0..dim).map(|_| std.sample(&mut rng)).collect();
        normalise(&mut c);
        centres.extend(c);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(point_seed);
    let sigma = noise / (dim as f32).sqrt();
    let mut out = Vec::with_capacity(n * dim);
    let mut v = vec![0f32; dim];
    for i in 0..n {
        // Cluster sizes vary: cluster of point i is drawn, not round-robin.
        let c = (rand::Rng::random::<u64>(&mut rng) as usize).wrapping_add(i) % clusters;
        for d in 0..dim {
            v[d] = centres[c * dim + d] + sigma * std.sample(&mut rng);
        }
        normalise(&mut v);
        out.extend_from_slice(&v);
    }
    out
}

/// [`clustered`] with the points drawn by `seed + 1`.
pub fn synthetic_clustered(
    n: usize,
    dim: usize,
    clusters: usize,
    noise: f32,
    seed: u64,
) -> Vec<f32> {
    clustered(n, dim, clusters, noise, seed, seed.wrapping_add(1))
}

/// Why a document was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("unreadable: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not text.
    #[error("binary, not text: {0}")]
    Binary(String),
    /// Not a format the chunker reads.
    #[error("unsupported file type (supported: .md, .markdown, .rst, .rest, .html, .htm, .txt, .text, no extension, each optionally .gz)")]
    Unsupported,
}

/// Read a document as text, gunzipping `*.gz`; refuses binary content (NUL bytes or
/// invalid UTF-8) and files whose type the chunker does not read.
pub fn read_document(path: &Path) -> Result<(crate::chunk::Format, String), ReadError> {
    let format = crate::chunk::Format::from_path(path).ok_or(ReadError::Unsupported)?;
    let raw = std::fs::read(path)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| ReadError::Binary(format!("not valid gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.contains(&0) {
        return Err(ReadError::Binary("contains NUL bytes".into()));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        ReadError::Binary(format!(
            "invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok((format, text))
}

/// Every file under `root` (recursively, sorted, symlinks not followed).
pub fn walk(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                todo.push(e?.path());
            }
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The reStructuredText files of the kernel documentation, sorted.
pub fn linux_doc_files() -> Result<Vec<PathBuf>, String> {
    let root = Path::new(LINUX_DOC_DIR);
    if !root.is_dir() {
        return Err(format!("{LINUX_DOC_DIR} does not exist: {LINUX_DOC_HINT}"));
    }
    let files: Vec<PathBuf> = walk(root)
        .map_err(|e| format!("{LINUX_DOC_DIR}: {e}"))?
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().ends_with(".rst.gz") || p.to_string_lossy().ends_with(".rst")
        })
        .collect();
    if files.is_empty() {
        return Err(format!(
            "no .rst files under {LINUX_DOC_DIR}: {LINUX_DOC_HINT}"
        ));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_seeded_normalised_and_clustered() {
        let a = synthetic_clustered(200, 16, 5, 0.3, 9);
        assert_eq!(a, synthetic_clustered(200, 16, 5, 0.3, 9));
        assert_ne!(a, synthetic_clustered(200, 16, 5, 0.3, 10));
        for v in a.chunks(16) {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        // Points near a centre: the nearest other point is much closer than random.
        let q = &a[..16];
        let best = a[16..]
            .chunks(16)
            .map(|v| v.iter().zip(q).map(|(x, y)| x * y).sum::<f32>())
            .fold(f32::MIN, f32::max);
        assert!(best > 0.8, "{best}");
    }

    #[test]
    fn read_document_refuses_binary_and_unknown_files() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("blob.txt");
        std::fs::write(&bin, [b'a', 0, 1, 2]).unwrap();
        assert!(matches!(read_document(&bin), Err(ReadError::Binary(_))));
        let latin1 = dir.path().join("l.md");
        std::fs::write(&latin1, [b'c', b'a', b'f', 0xe9]).unwrap();
        assert!(read_document(&latin1)
            .unwrap_err()
            .to_string()
            .contains("invalid UTF-8"));
        let png = dir.path().join("x.png");
        std::fs::write(&png, b"text").unwrap();
        assert!(matches!(read_document(&png), Err(ReadError::Unsupported)));
        let gz = dir.path().join("doc.rst.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"Title\n=====\n\nBody.\n").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let (format, text) = read_document(&gz).unwrap();
        assert_eq!(format, crate::chunk::Format::Rst);
        assert!(text.contains("Body."));
        assert!(read_document(&dir.path().join("missing.md"))
            .unwrap_err()
            .to_string()
            .starts_with("unreadable"));
    }
}
