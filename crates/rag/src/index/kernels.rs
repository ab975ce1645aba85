//! Scoring loops: inner products of one query against many rows, and top-k selection.
//!
//! Written by hand because they are a few lines each; they use several independent
//! accumulators so the compiler vectorises them, and on x86-64 CPUs with AVX2 and FMA
//! the same code is compiled a second time for those features and chosen at run time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One search result: the vector's id (its insertion order) and its score (inner
/// product with the query; higher is closer).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    /// Row number of the vector.
    pub id: u32,
    /// Inner product with the query (cosine for normalised vectors).
    pub score: f32,
}

const LANES: usize = 16;

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, ar) = a.split_at(a.len() - a.len() % LANES);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn dot_u8_generic(a: &[f32], b: &[u8]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, ar) = a.split_at(a.len() - a.len() % LANES);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * f32::from(y[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * f32::from(*y);
    }
    s
}

#[inline(always)]
fn rows_f32_generic(q: &[f32], data: &[f32], out: &mut [f32]) {
    let dim = q.len();
    for (row, o) in data.chunks_exact(dim).zip(out.iter_mut()) {
        *o = dot_generic(q, row);
    }
}

#[inline(always)]
fn rows_u8_generic(q: &[f32], data: &[u8], out: &mut [f32]) {
    let dim = q.len();
    for (row, o) in data.chunks_exact(dim).zip(out.iter_mut()) {
        *o = dot_u8_generic(q, row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_f32_avx2(q: &[f32], data: &[f32], out: &mut [f32]) {
    rows_f32_generic(q, data, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_u8_avx2(q: &[f32], data: &[u8], out: &mut [f32]) {
    rows_u8_generic(q, data, out)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Inner product of two equally long slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0f32];
    dot_rows_f32(a, &b[..a.len()], &mut out);
    out[0]
}

/// `out[i] = q · data[i*dim..(i+1)*dim]` with `dim = q.len()`.
pub fn dot_rows_f32(q: &[f32], data: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { rows_f32_avx2(q, data, out) };
    }
    rows_f32_generic(q, data, out)
}

/// `out[i] = q · codes[i*dim..(i+1)*dim]` (codes read as 0..=255) with `dim = q.len()`.
pub fn dot_rows_u8(q: &[f32], codes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { rows_u8_avx2(q, codes, out) };
    }
    rows_u8_generic(q, codes, out)
}

#[derive(PartialEq)]
struct MinScore(Hit);

impl Eq for MinScore {}

impl PartialOrd for MinScore {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MinScore {
    // Reversed, so the heap's top is the worst kept hit; ties broken by id.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.id.cmp(&other.0.id))
    }
}

/// The `k` best of a stream of hits.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<MinScore>,
}

impl TopK {
    /// Keep the best `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offer one hit.
    #[inline]
    pub fn push(&mut self, id: u32, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(MinScore(Hit { id, score }));
        } else if let Some(worst) = self.heap.peek() {
            if score > worst.0.score {
                self.heap.pop();
                self.heap.push(MinScore(Hit { id, score }));
            }
        }
    }

    /// The kept hits, best first (ties: lower id first).
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().map(|m| m.0).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        v
    }
}

/// Rows scored per block by [`scan_top_k`]: 4 KB of scores, kept in L1.
const SCAN_BLOCK: usize = 1024;

/// The `k` best of `n` rows, best first, scoring them a block at a time:
/// `fill(start, out)` writes the scores of rows `start..start + out.len()`. The scores
/// live in a 4 KB buffer on the stack, so a scan allocates nothing per row (a
/// `vec![0f32; n]` per query is 4 MB at a million rows: page faults and zeroing on
/// every search) and the heap offer reads them from L1.
pub fn scan_top_k(n: usize, k: usize, mut fill: impl FnMut(usize, &mut [f32])) -> Vec<Hit> {
    let mut buf = [0f32; SCAN_BLOCK];
    let mut top = TopK::new(k);
    let mut start = 0;
    while start < n {
        let len = SCAN_BLOCK.min(n - start);
        let block = &mut buf[..len];
        fill(start, block);
        for (i, &s) in block.iter().enumerate() {
            top.push((start + i) as u32, s);
        }
        start += len;
    }
    top.into_sorted()
}

/// The `k` best of `scores` (index = id), best first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<Hit> {
    let mut top = TopK::new(k);
    for (i, &s) in scores.iter().enumerate() {
        top.push(i as u32, s);
    }
    top.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive_sums() {
        let q: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows: Vec<f32> = (0..37 * 5).map(|i| (i as f32 * 0.11).cos()).collect();
        let codes: Vec<u8> = (0..37 * 5).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = [0f32; 5];
        dot_rows_f32(&q, &rows, &mut out);
        for (r, o) in rows.chunks(37).zip(out) {
            let naive: f32 = q.iter().zip(r).map(|(a, b)| a * b).sum();
            assert!((naive - o).abs() < 1e-4, "{naive} vs {o}");
        }
        dot_rows_u8(&q, &codes, &mut out);
        for (r, o) in codes.chunks(37).zip(out) {
            let naive: f32 = q.iter().zip(r).map(|(a, &b)| a * f32::from(b)).sum();
            assert!((naive - o).abs() < 1e-2, "{naive} vs {o}");
        }
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let scores = [0.1, 0.9, -1.0, 0.5, 0.9, 0.3];
        let got: Vec<u32> = top_k(&scores, 3).iter().map(|h| h.id).collect();
        assert_eq!(got, vec![1, 4, 3]);
        assert_eq!(top_k(&scores, 10).len(), 6);
        assert!(top_k(&scores, 0).is_empty());
        // Scanning in blocks finds the same as over the whole array, across blocks.
        let many: Vec<f32> = (0..2500u32)
            .map(|i| ((i * 7919) % 2503) as f32 / 2503.0)
            .collect();
        for k in [1, 10, 3000] {
            let scanned = scan_top_k(many.len(), k, |start, out| {
                out.copy_from_slice(&many[start..start + out.len()])
            });
            assert_eq!(scanned, top_k(&many, k), "k={k}");
        }
    }
}
