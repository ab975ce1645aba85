//! Lloyd's k-means for training product-quantizer codebooks.
//!
//! Written by hand: the Rust clustering crates (linfa-clustering) pull in ndarray and
//! train in f64; PQ needs a small, seeded, f32 k-means over low-dimensional
//! sub-vectors, k-means++ initialisation and FAISS's treatment of empty clusters (split
//! the largest one).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Squared L2 distance.
#[inline]
fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of the centroid nearest to `x` (centroids row-major, `x.len()` wide).
#[inline]
pub fn nearest(x: &[f32], centroids: &[f32]) -> usize {
    let dim = x.len();
    let mut best = (f32::INFINITY, 0);
    for (j, c) in centroids.chunks_exact(dim).enumerate() {
        let d = l2(x, c);
        if d < best.0 {
            best = (d, j);
        }
    }
    best.1
}

/// Train `k` centroids on `data` (`n * dim`, row-major) with `iters` Lloyd iterations
/// after a k-means++ initialisation. With at most `k` rows, the rows are the centroids
/// (repeated). Deterministic for a given seed.
pub fn kmeans(data: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Vec<f32> {
    let n = data.len() / dim;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if n <= k {
        // Every row is a centroid; the rest repeat rows (or are zero without rows).
        let mut centroids = Vec::with_capacity(k * dim);
        for j in 0..k {
            match n {
                0 => centroids.extend(std::iter::repeat_n(0.0, dim)),
                _ => centroids.extend_from_slice(&data[(j % n) * dim..(j % n + 1) * dim]),
            }
        }
        return centroids;
    }
    // k-means++ initialisation: each next centroid drawn with probability proportional
    // to its squared distance from the nearest centroid chosen so far.
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut dist: Vec<f32> = data
        .chunks_exact(dim)
        .map(|x| l2(x, &centroids[..dim]))
        .collect();
    for _ in 1..k {
        let total: f64 = dist.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in dist.iter().enumerate() {
                target -= f64::from(d);
                if target <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.random_range(0..n)
        };
        let c = data[pick * dim..(pick + 1) * dim].to_vec();
        for (d, x) in dist.iter_mut().zip(data.chunks_exact(dim)) {
            *d = d.min(l2(x, &c));
        }
        centroids.extend(c);
    }
    let mut assign = vec![0usize; n];
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for _ in 0..iters {
        for (i, x) in data.chunks_exact(dim).enumerate() {
            assign[i] = nearest(x, &centroids);
        }
        sums.iter_mut().for_each(|s| *s = 0.0);
        counts.iter_mut().for_each(|c| *c = 0);
        for (i, x) in data.chunks_exact(dim).enumerate() {
            let a = assign[i];
            counts[a] += 1;
            for (s, v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(x) {
                *s += f64::from(*v);
            }
        }
        for j in 0..k {
            if counts[j] > 0 {
                for d in 0..dim {
                    centroids[j * dim + d] = (sums[j * dim + d] / counts[j] as f64) as f32;
                }
            }
        }
        // Empty clusters: split the largest cluster in two, as FAISS does.
        for j in 0..k {
            if counts[j] > 0 {
                continue;
            }
            let big = (0..k).max_by_key(|&c| counts[c]).unwrap_or(0);
            for d in 0..dim {
                let v = centroids[big * dim + d];
                let eps = 1e-4 * (rng.random::<f32>() - 0.5).max(1e-7);
                centroids[j * dim + d] = v * (1.0 + eps);
                centroids[big * dim + d] = v * (1.0 - eps);
            }
            counts[j] = counts[big] / 2;
            counts[big] -= counts[j];
        }
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_separated_clusters() {
        // Three tight blobs in 2-d.
        let centres = [(0.0f32, 0.0f32), (10.0, 0.0), (0.0, 10.0)];
        let mut data = Vec::new();
        for i in 0..300 {
            let (x, y) = centres[i % 3];
            let jitter = (i as f32 * 0.618).fract() - 0.5;
            data.extend_from_slice(&[x + jitter * 0.2, y - jitter * 0.2]);
        }
        let c = kmeans(&data, 2, 3, 10, 5);
        for (x, y) in centres {
            let j = nearest(&[x, y], &c);
            assert!(l2(&[x, y], &c[j * 2..j * 2 + 2]) < 0.1, "{c:?}");
        }
        assert_eq!(kmeans(&data, 2, 3, 10, 5), c, "same seed, same centroids");
    }

    #[test]
    fn fewer_rows_than_centroids_is_fine() {
        let data = [1.0f32, 2.0, 3.0, 4.0];
        let c = kmeans(&data, 2, 5, 3, 1);
        assert_eq!(c.len(), 10);
        assert_eq!(nearest(&[3.0, 4.0], &c) % 2, nearest(&[3.0, 4.0], &c) % 2);
        assert!(l2(&[3.0, 4.0], &c[nearest(&[3.0, 4.0], &c) * 2..][..2]) == 0.0);
    }
}
