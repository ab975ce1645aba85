//! PCA-rotated product quantization with a learned bit allocation (`pq:pca=1`).
//!
//! Transform coding in the OPQ family: the vectors are centred and rotated onto their
//! principal axes (the eigenvectors of their covariance), so that the variance, spread
//! over all 384 dimensions of the raw embedding, is packed into the first components.
//! Each component is then a sub-space of one dimension with its own Lloyd-Max
//! (one-dimensional k-means) codebook of `2^b_i` levels, `b_i` from 0 to 8.
//!
//! **`bytes` is the whole index's size per vector**, everything a search holds counted:
//! `pq:pca=1,bytes=192` is 8× by construction (1,536 raw bytes / 192). The mean and,
//! with `renorm=1`, the norms are paid first; the rest is spent greedily, one bit of
//! one component at a time, on the step that removes the most *expected score error
//! per bit it costs*. For a query `q` the score error of a stored vector is `Σ_i q_i
//! e_i`; with the queries distributed like the data, its expected square is `Σ_i E[x_i²]
//! D_i(b_i)` in the rotated basis, `D_i(b)` being the measured mean squared error of
//! component `i`'s `b`-bit codebook: the allocation weights each component's distortion
//! by its second moment (score-aware, not plain MSE). A step costs one bit per vector
//! plus its codebook's growth and, for a component's first bit, its rotation row: so on
//! a small corpus, where a row is dear per vector, fewer components get more bits, and
//! the components left without bits cost nothing (no row, no codebook).
//!
//! Scoring is asymmetric: the query is rotated once (`P q`, `k × dim` multiply-adds
//! for the `k` components that have bits), a table `t_i[c] = (P q)_i · level_i[c]` is
//! built per component, and a stored vector's score is `q · μ + Σ_i t_i[c_i]`, μ the
//! data mean. With `renorm=1` it is multiplied by the stored `1 / |x̂|` of the vector's
//! reconstruction `x̂ = μ + Pᵀ ŷ` (4 bytes per vector; measured not to pay for itself
//! on the kernel documentation at 8×, so off by default). With `cand=C`, a first pass
//! scores every vector on the components that carry the first half of the bits and
//! re-scores the best `C` with all of them (the same recall on the real corpus at half
//! the scan time).
//!
//! Storage: the rotation rows are 4-bit entries with one f32 scale per row, and are
//! re-orthonormalised (QR) after dequantizing, at build and at load alike, so the
//! rows that encoded the codes are exactly the rows a loaded index scores with; the
//! codebook levels are IEEE half floats. Size accounting ([`VectorIndex::memory_bytes`])
//! counts the packed codes, the packed rows and their scales, the mean (f32), every
//! codebook level (f16), the per-component bit widths and the norms (f32). Nothing is
//! kept in full precision.
//!
//! Libraries: the eigendecomposition is nalgebra's `SymmetricEigen` (f64) and the
//! re-orthonormalisation its QR; half floats are the `half` crate's. By hand, because
//! no crate does them: the one-dimensional Lloyd-Max quantizer (sorted values and
//! prefix sums, each iteration `O(levels · log n)`), the budgeted allocation, the
//! 4-bit row packing and the bit-packed scan.

use half::f16;
use nalgebra::{DMatrix, SymmetricEigen};

use super::{put_f32s, put_u32, Hit, IndexError, IndexKind, Reader, TopK, VectorIndex};

/// Most bits one component's code may take.
pub const MAX_BITS: usize = 8;

/// Build parameters of a [`PcaPqIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcaPqParams {
    /// Code bytes per vector (`8 * bytes` bits spread over the components).
    pub bytes: usize,
    /// Keep `1 / |x̂|` per vector (f32, counted) and score `q · x̂ / |x̂|`.
    pub renorm: bool,
    /// Candidates of the first (partial-code) pass re-scored in full; 0 = one pass.
    pub candidates: usize,
    /// Vectors sampled to train the rotation and the codebooks.
    pub train: usize,
    /// Lloyd iterations per codebook.
    pub iters: usize,
}

impl Default for PcaPqParams {
    fn default() -> Self {
        Self {
            bytes: 192,
            renorm: false,
            candidates: 0,
            // Enough for a 384 × 384 covariance; bounds the build's f64 copies (2 ×
            // 16,384 × 384 × 8 bytes = 100 MB) on a large corpus.
            train: 16_384,
            iters: 30,
        }
    }
}

impl PcaPqParams {
    /// Check the parameters against a vector width.
    pub fn check(&self, dim: usize) -> Result<(), IndexError> {
        if self.bytes == 0 || self.bytes * 8 > dim * MAX_BITS {
            return Err(IndexError::Invalid(format!(
                "pq:pca=1 bytes={} must be 1 to {} (at most {MAX_BITS} bits for each of {dim} dimensions)",
                self.bytes,
                dim * MAX_BITS / 8
            )));
        }
        if self.iters == 0 || self.train == 0 {
            return Err(IndexError::Invalid(
                "pq:pca=1 train and iters must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// A one-dimensional Lloyd-Max quantizer: sorted levels and the midpoints between them.
#[derive(Clone, Debug, PartialEq)]
struct Scalar {
    levels: Vec<f32>,
    bounds: Vec<f32>,
}

impl Scalar {
    fn new(levels: Vec<f32>) -> Self {
        let bounds = levels.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        Self { levels, bounds }
    }

    /// Index of the level nearest `v`.
    #[inline]
    fn encode(&self, v: f32) -> usize {
        self.bounds.partition_point(|&b| b < v)
    }
}

/// Lloyd-Max on sorted values with prefix sums: `(levels, mean squared error)`.
fn lloyd(sorted: &[f64], prefix: &[f64], prefix2: &[f64], k: usize, iters: usize) -> Scalar1d {
    let n = sorted.len();
    let at = |q: f64| sorted[((q * n as f64) as usize).min(n - 1)];
    let mut c: Vec<f64> = (0..k).map(|j| at((j as f64 + 0.5) / k as f64)).collect();
    let cuts = |c: &[f64]| -> Vec<usize> {
        let mut cuts = Vec::with_capacity(k + 1);
        cuts.push(0);
        for w in c.windows(2) {
            let mid = 0.5 * (w[0] + w[1]);
            cuts.push(sorted.partition_point(|&v| v < mid));
        }
        cuts.push(n);
        cuts
    };
    for _ in 0..iters {
        let cut = cuts(&c);
        let mut moved = false;
        for j in 0..k {
            let (lo, hi) = (cut[j], cut[j + 1]);
            if hi > lo {
                let m = (prefix[hi] - prefix[lo]) / (hi - lo) as f64;
                moved |= (m - c[j]).abs() > 1e-12;
                c[j] = m;
            }
        }
        c.sort_by(f64::total_cmp);
        if !moved {
            break;
        }
    }
    let cut = cuts(&c);
    let mut sse = 0.0;
    for j in 0..k {
        let (lo, hi) = (cut[j], cut[j + 1]);
        let cnt = (hi - lo) as f64;
        let (s, s2) = (prefix[hi] - prefix[lo], prefix2[hi] - prefix2[lo]);
        // Σ (v - c)² = Σv² - 2cΣv + n c²
        sse += s2 - 2.0 * c[j] * s + cnt * c[j] * c[j];
    }
    Scalar1d {
        levels: c.iter().map(|&x| x as f32).collect(),
        mse: (sse / n as f64).max(0.0),
    }
}

struct Scalar1d {
    levels: Vec<f32>,
    mse: f64,
}

/// What one step of the allocation costs, in bits over the whole index: one bit per
/// vector, the codebook's growth from `2^b` to `2^(b+1)` levels (f16 each) and, for a
/// component's first bit, its rotation row (`dim` 4-bit entries, an f32 scale) and its
/// width byte.
fn step_cost(n: usize, dim: usize, b: usize) -> f64 {
    let levels = if b == 0 { 2 } else { 1 << b };
    let row = if b == 0 { row_bytes(dim) + 4 + 1 } else { 0 };
    (n + 8 * (2 * levels + row)) as f64
}

/// Greedy bit allocation under a budget of `budget` bits for the whole index: each
/// step goes to the component whose weighted distortion falls most per bit it costs
/// ([`step_cost`]). `mse[i][b]` is component `i`'s error at `b` bits.
fn allocate(weight: &[f64], mse: &[Vec<f64>], n: usize, mut budget: f64) -> Vec<u8> {
    let dim = weight.len();
    let mut bits = vec![0u8; dim];
    loop {
        let mut best: Option<(usize, f64, f64)> = None;
        for i in 0..dim {
            let b = usize::from(bits[i]);
            if b >= MAX_BITS {
                continue;
            }
            let cost = step_cost(n, dim, b);
            if cost > budget {
                continue;
            }
            let gain = weight[i] * (mse[i][b] - mse[i][b + 1]) / cost;
            if best.is_none_or(|(_, g, _)| gain > g) {
                best = Some((i, gain, cost));
            }
        }
        match best {
            Some((i, _, cost)) => {
                bits[i] += 1;
                budget -= cost;
            }
            None => return bits,
        }
    }
}

/// Orthonormalise the rows of `rows` (`k × dim`, f64) with nalgebra's QR: the columns
/// of `Q` of the transposed matrix. Deterministic, so build and load get the same basis.
fn orthonormal_rows(rows: &[f64], k: usize, dim: usize) -> Vec<f32> {
    let m = DMatrix::from_row_slice(k, dim, rows).transpose();
    let q = m.qr().q();
    let mut out = Vec::with_capacity(k * dim);
    for j in 0..k {
        out.extend(q.column(j).iter().map(|&x| x as f32));
    }
    out
}

/// Levels of a stored rotation entry: -7..=7, 4 bits.
const ROW_LEVELS: f64 = 7.0;

/// Bytes of one stored rotation row of `dim` entries (two 4-bit entries a byte).
fn row_bytes(dim: usize) -> usize {
    dim.div_ceil(2)
}

/// Rows as stored: 4-bit entries (`-7..=7` times the row's f32 scale, packed two a
/// byte, low nibble first, offset by 8) and the scales. The rows are re-orthonormalised
/// after dequantizing ([`orthonormal_rows`]), so the coarse entries cost only a little
/// of the principal axes' energy compaction, not orthogonality.
fn quantize_rows(rows: &[f64], dim: usize) -> (Vec<u8>, Vec<f32>) {
    let mut packed = Vec::with_capacity(rows.len() / dim * row_bytes(dim));
    let mut scales = Vec::with_capacity(rows.len() / dim);
    for row in rows.chunks_exact(dim) {
        let max = row.iter().fold(0f64, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 {
            (max / ROW_LEVELS) as f32
        } else {
            1.0
        };
        scales.push(scale);
        let q: Vec<u8> = row
            .iter()
            .map(|&x| {
                let v = (x / f64::from(scale))
                    .round()
                    .clamp(-ROW_LEVELS, ROW_LEVELS);
                (v as i8 + 8) as u8
            })
            .collect();
        packed.extend(
            q.chunks(2)
                .map(|p| p[0] | (p.get(1).copied().unwrap_or(8) << 4)),
        );
    }
    (packed, scales)
}

fn dequantize_rows(packed: &[u8], scales: &[f32], dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(scales.len() * dim);
    for (row, &s) in packed.chunks_exact(row_bytes(dim)).zip(scales) {
        for d in 0..dim {
            let nibble = (row[d / 2] >> (4 * (d % 2))) & 15;
            out.push(f64::from(i16::from(nibble) - 8) * f64::from(s));
        }
    }
    out
}

/// A PCA-rotated, bit-allocated scalar product quantizer. See the module docs.
pub struct PcaPqIndex {
    dim: usize,
    params: PcaPqParams,
    /// Bits of each kept component (all ≥ 1), in descending order of bits.
    bits: Vec<u8>,
    /// Rotation rows of the kept components as stored: 4-bit entries, packed.
    rot_codes: Vec<u8>,
    /// One scale per stored row.
    rot_scales: Vec<f32>,
    /// The stored rows dequantized and orthonormalised (what encodes and scores).
    rot: Vec<f32>,
    /// Data mean.
    mean: Vec<f32>,
    /// Codebook levels of each kept component as stored (f16 bits).
    levels16: Vec<u16>,
    /// Codebook of each kept component (the stored levels, widened).
    books: Vec<Scalar>,
    /// Bit offset of each component's code inside a vector's code.
    offsets: Vec<usize>,
    /// Bytes per vector's code.
    code_len: usize,
    /// Components scored in the first pass (those carrying the first half of the bits).
    first: usize,
    /// Packed codes, `n * code_len` bytes plus one byte of padding for unaligned reads.
    codes: Vec<u8>,
    /// `1 / |x̂|` per vector when `renorm`.
    inv_norms: Vec<f32>,
}

fn layout(bits: &[u8]) -> (Vec<usize>, usize, usize) {
    let mut offsets = Vec::with_capacity(bits.len());
    let mut off = 0;
    for &b in bits {
        offsets.push(off);
        off += usize::from(b);
    }
    let total = off;
    let mut acc = 0;
    let first = bits
        .iter()
        .position(|&b| {
            acc += usize::from(b);
            2 * acc >= total
        })
        .map_or(bits.len(), |p| p + 1);
    (offsets, total.div_ceil(8).max(1), first)
}

#[inline]
fn read_bits(code: &[u8], off: usize, bits: u8) -> usize {
    let v = u16::from_le_bytes([code[off / 8], code[off / 8 + 1]]) >> (off % 8);
    usize::from(v & ((1u16 << bits) - 1))
}

/// `values` sorted, with prefix sums of values and squares.
fn sorted_sums(mut values: Vec<f64>) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let mut prefix = Vec::with_capacity(values.len() + 1);
    let mut prefix2 = Vec::with_capacity(values.len() + 1);
    let (mut s, mut s2) = (0.0, 0.0);
    prefix.push(0.0);
    prefix2.push(0.0);
    for &y in &values {
        s += y;
        s2 += y * y;
        prefix.push(s);
        prefix2.push(s2);
    }
    (values, prefix, prefix2)
}

/// Coordinates of the centred sample rows on `axis`.
fn project(centred: &[f64], axis: &[f64]) -> Vec<f64> {
    centred
        .chunks_exact(axis.len())
        .map(|row| row.iter().zip(axis).map(|(a, b)| a * b).sum())
        .collect()
}

impl PcaPqIndex {
    /// Learn the rotation on a sample of `data`, allocate the bit budget, train the
    /// codebooks, and encode all of it.
    pub fn build(data: &[f32], dim: usize, p: &PcaPqParams) -> Result<Self, IndexError> {
        p.check(dim)?;
        let n = data.len() / dim;
        if n < 2 {
            return Err(IndexError::Invalid(format!(
                "pq:pca=1 needs at least 2 vectors to learn a rotation, got {n}"
            )));
        }
        // Fixed costs first: the mean, the norms; the rest of `bytes * n` is the budget
        // of the allocation (codes, rows, codebooks), one byte kept for rounding.
        let fixed = dim * 4 + if p.renorm { 4 * n } else { 0 } + n + 1;
        let total = p.bytes * n;
        if total <= fixed {
            return Err(IndexError::Invalid(format!(
                "pq:pca=1 bytes={} leaves nothing for codes over {n} vectors of {dim} dimensions (the mean and norms alone take {:.1} bytes per vector): raise bytes",
                p.bytes,
                fixed as f64 / n as f64
            )));
        }
        let budget = ((total - fixed) * 8) as f64;
        let sample = super::pq::sample_rows(data, dim, p.train);
        let ns = sample.len() / dim;
        let mut mean = vec![0f64; dim];
        for row in sample.chunks_exact(dim) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &x)| *m += f64::from(x));
        }
        mean.iter_mut().for_each(|m| *m /= ns as f64);
        let centred: Vec<f64> = sample
            .chunks_exact(dim)
            .flat_map(|row| row.iter().zip(&mean).map(|(&x, m)| f64::from(x) - m))
            .collect();
        let xc = DMatrix::from_row_slice(ns, dim, &centred);
        let eig = SymmetricEigen::new((xc.transpose() * &xc) / ns as f64);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let axes: Vec<f64> = order
            .iter()
            .flat_map(|&c| {
                eig.eigenvectors
                    .column(c)
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        // Per principal axis: weight E[(a·x)²] and the error at 0..=8 bits.
        let (mut weight, mut mse) = (Vec::with_capacity(dim), Vec::with_capacity(dim));
        for axis in axes.chunks_exact(dim) {
            let am: f64 = axis.iter().zip(&mean).map(|(a, m)| a * m).sum();
            let (ys, prefix, prefix2) = sorted_sums(project(&centred, axis));
            let (s, s2) = (prefix[ns], prefix2[ns]);
            weight.push(s2 / ns as f64 + 2.0 * am * s / ns as f64 + am * am);
            let mut errs = vec![s2 / ns as f64];
            for b in 1..=MAX_BITS {
                errs.push(lloyd(&ys, &prefix, &prefix2, 1 << b, p.iters).mse);
            }
            mse.push(errs);
        }
        let alloc = allocate(&weight, &mse, n, budget);
        // Kept components, most bits first (principal order within a width).
        let mut kept: Vec<usize> = (0..dim).filter(|&i| alloc[i] > 0).collect();
        if kept.is_empty() {
            return Err(IndexError::Invalid(format!(
                "pq:pca=1 bytes={} is too small to code a single component over {n} vectors: raise bytes",
                p.bytes
            )));
        }
        kept.sort_by(|&a, &b| alloc[b].cmp(&alloc[a]));
        let bits: Vec<u8> = kept.iter().map(|&i| alloc[i]).collect();
        let rows: Vec<f64> = kept
            .iter()
            .flat_map(|&i| axes[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let (rot_codes, rot_scales) = quantize_rows(&rows, dim);
        let rot = orthonormal_rows(
            &dequantize_rows(&rot_codes, &rot_scales, dim),
            kept.len(),
            dim,
        );
        // Codebooks on the coordinates along the rows as stored.
        let mut levels16 = Vec::new();
        for (j, &b) in bits.iter().enumerate() {
            let axis: Vec<f64> = rot[j * dim..(j + 1) * dim]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let (ys, prefix, prefix2) = sorted_sums(project(&centred, &axis));
            let q = lloyd(&ys, &prefix, &prefix2, 1 << b, p.iters);
            let mut l: Vec<u16> = q
                .levels
                .iter()
                .map(|&x| f16::from_f32(x).to_bits())
                .collect();
            l.sort_by(|a, b| f16::from_bits(*a).total_cmp(&f16::from_bits(*b)));
            levels16.extend(l);
        }
        let mut index = Self::assemble(
            dim,
            p.clone(),
            bits,
            (rot_codes, rot_scales, rot),
            mean.iter().map(|&m| m as f32).collect(),
            levels16,
            Vec::new(),
        );
        let mut codes = Vec::with_capacity(n * index.code_len + 1);
        let mut y = vec![0f32; index.bits.len()];
        for row in data.chunks_exact(dim) {
            index.rotate(row, &mut y, true);
            let start = codes.len();
            codes.resize(start + index.code_len, 0);
            let code = &mut codes[start..];
            for (j, book) in index.books.iter().enumerate() {
                let c = book.encode(y[j]) as u16;
                let off = index.offsets[j];
                let v = c << (off % 8);
                code[off / 8] |= v as u8;
                if off % 8 + usize::from(index.bits[j]) > 8 {
                    code[off / 8 + 1] |= (v >> 8) as u8;
                }
            }
        }
        codes.push(0);
        index.codes = codes;
        if p.renorm {
            let mut inv = Vec::with_capacity(n);
            let mut x = vec![0f32; dim];
            for i in 0..n {
                index.reconstruct(i, &mut x);
                let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
                inv.push(if norm > 0.0 { 1.0 / norm } else { 1.0 });
            }
            index.inv_norms = inv;
        }
        Ok(index)
    }

    fn assemble(
        dim: usize,
        params: PcaPqParams,
        bits: Vec<u8>,
        (rot_codes, rot_scales, rot): (Vec<u8>, Vec<f32>, Vec<f32>),
        mean: Vec<f32>,
        levels16: Vec<u16>,
        codes: Vec<u8>,
    ) -> Self {
        let mut books = Vec::with_capacity(bits.len());
        let mut at = 0;
        for &b in &bits {
            let k = 1usize << b;
            books.push(Scalar::new(
                levels16[at..at + k]
                    .iter()
                    .map(|&h| f16::from_bits(h).to_f32())
                    .collect(),
            ));
            at += k;
        }
        let (offsets, code_len, first) = layout(&bits);
        Self {
            dim,
            params,
            bits,
            rot_codes,
            rot_scales,
            rot,
            mean,
            levels16,
            books,
            offsets,
            code_len,
            first,
            codes,
            inv_norms: Vec::new(),
        }
    }

    /// `y = P (x - μ)` when `centre`, else `y = P x`.
    fn rotate(&self, x: &[f32], y: &mut [f32], centre: bool) {
        for (j, out) in y.iter_mut().enumerate() {
            let row = &self.rot[j * self.dim..(j + 1) * self.dim];
            *out = if centre {
                row.iter()
                    .zip(x.iter().zip(&self.mean))
                    .map(|(a, (x, m))| a * (x - m))
                    .sum()
            } else {
                super::dot(row, x)
            };
        }
    }

    /// `x̂ = μ + Pᵀ ŷ` of stored vector `i`.
    fn reconstruct(&self, i: usize, x: &mut [f32]) {
        x.copy_from_slice(&self.mean);
        let code = &self.codes[i * self.code_len..];
        for (j, book) in self.books.iter().enumerate() {
            let v = book.levels[read_bits(code, self.offsets[j], self.bits[j])];
            let row = &self.rot[j * self.dim..(j + 1) * self.dim];
            x.iter_mut().zip(row).for_each(|(x, a)| *x += a * v);
        }
    }

    /// Read a payload written by [`VectorIndex::encode`].
    pub(crate) fn decode(r: &mut Reader<'_>, dim: usize, n: usize) -> Result<Self, String> {
        let bytes = r.u32()? as usize;
        let renorm = r.u32()? != 0;
        let candidates = r.u32()? as usize;
        let train = r.u32()? as usize;
        let iters = r.u32()? as usize;
        let kept = r.u32()? as usize;
        if kept == 0 || kept > dim {
            return Err(format!("{kept} components for dimension {dim}"));
        }
        let bits = r.bytes(kept)?.to_vec();
        if let Some(b) = bits.iter().find(|&&b| b == 0 || usize::from(b) > MAX_BITS) {
            return Err(format!("a component of {b} bits (must be 1 to {MAX_BITS})"));
        }
        if bits.windows(2).any(|w| w[0] < w[1]) {
            return Err("component bit widths not in descending order".into());
        }
        let rot_codes = r.bytes(kept * row_bytes(dim))?.to_vec();
        let rot_scales = r.f32s(kept)?;
        if rot_scales.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err("a rotation row scale that is not a positive number".into());
        }
        let mean = r.f32s(dim)?;
        let nlevels: usize = bits.iter().map(|&b| 1usize << b).sum();
        let levels16: Vec<u16> = r
            .bytes(nlevels * 2)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut at = 0;
        for &b in &bits {
            let l: Vec<f16> = levels16[at..at + (1 << b)]
                .iter()
                .map(|&h| f16::from_bits(h))
                .collect();
            if l.iter().any(|x| !x.is_finite()) || l.windows(2).any(|w| w[0] > w[1]) {
                return Err("a codebook with non-finite or unsorted levels".into());
            }
            at += 1 << b;
        }
        let code_len = layout(&bits).1;
        let len = n
            .checked_mul(code_len)
            .and_then(|l| l.checked_add(1))
            .ok_or("size overflow")?;
        let codes = r.bytes(len)?.to_vec();
        let rot = orthonormal_rows(&dequantize_rows(&rot_codes, &rot_scales, dim), kept, dim);
        let params = PcaPqParams {
            bytes,
            renorm,
            candidates,
            train,
            iters,
        };
        let mut index = Self::assemble(
            dim,
            params,
            bits,
            (rot_codes, rot_scales, rot),
            mean,
            levels16,
            codes,
        );
        if renorm {
            index.inv_norms = r.f32s(n)?;
        }
        Ok(index)
    }

    /// Per-component score tables for `q` and the constant `q · μ`.
    fn tables(&self, q: &[f32]) -> (Vec<f32>, Vec<usize>, f32) {
        let mut y = vec![0f32; self.bits.len()];
        self.rotate(q, &mut y, false);
        let mut table = Vec::new();
        let mut starts = Vec::with_capacity(self.books.len());
        for (book, &yj) in self.books.iter().zip(&y) {
            starts.push(table.len());
            table.extend(book.levels.iter().map(|l| l * yj));
        }
        (table, starts, super::dot(q, &self.mean))
    }

    #[inline]
    fn partial(&self, table: &[f32], starts: &[usize], code: &[u8], from: usize, to: usize) -> f32 {
        let mut acc = [0f32; 4];
        for j in from..to {
            acc[j & 3] += table[starts[j] + read_bits(code, self.offsets[j], self.bits[j])];
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3])
    }

    fn finish(&self, i: usize, base: f32, partial: f32) -> f32 {
        let s = base + partial;
        self.inv_norms.get(i).map_or(s, |inv| s * inv)
    }

    /// Components kept (coded with at least one bit) and code bytes per vector.
    pub fn layout(&self) -> (usize, usize) {
        (self.bits.len(), self.code_len)
    }
}

impl VectorIndex for PcaPqIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::PcaPq
    }

    fn spec(&self) -> String {
        let p = &self.params;
        let mut s = format!("pq:pca=1,bytes={}", p.bytes);
        if p.candidates > 0 {
            s += &format!(",cand={}", p.candidates);
        }
        s += &format!(",renorm={}", u8::from(p.renorm));
        s
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        // The codes end with one byte of padding.
        (self.codes.len() - 1) / self.code_len
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let q = &query[..self.dim];
        let (table, starts, base) = self.tables(q);
        let all = self.books.len();
        let n = self.len();
        let w = self.code_len;
        if self.params.candidates == 0 || self.params.candidates.max(k) >= n {
            let mut top = TopK::new(k);
            for i in 0..n {
                let s = self.partial(&table, &starts, &self.codes[i * w..], 0, all);
                top.push(i as u32, self.finish(i, base, s));
            }
            return top.into_sorted();
        }
        let mut first = TopK::new(self.params.candidates.max(k));
        for i in 0..n {
            let s = self.partial(&table, &starts, &self.codes[i * w..], 0, self.first);
            first.push(i as u32, s);
        }
        let mut top = TopK::new(k);
        for h in first.into_sorted() {
            let i = h.id as usize;
            let rest = self.partial(&table, &starts, &self.codes[i * w..], self.first, all);
            top.push(h.id, self.finish(i, base, h.score + rest));
        }
        top.into_sorted()
    }

    fn memory_bytes(&self) -> usize {
        self.codes.len()
            + self.bits.len()
            + self.rot_codes.len()
            + self.rot_scales.len() * 4
            + self.mean.len() * 4
            + self.levels16.len() * 2
            + self.inv_norms.len() * 4
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        for v in [
            p.bytes,
            usize::from(p.renorm),
            p.candidates,
            p.train,
            p.iters,
            self.bits.len(),
        ] {
            put_u32(out, v as u32);
        }
        out.extend_from_slice(&self.bits);
        out.extend_from_slice(&self.rot_codes);
        put_f32s(out, &self.rot_scales);
        put_f32s(out, &self.mean);
        for h in &self.levels16 {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out.extend_from_slice(&self.codes);
        put_f32s(out, &self.inv_norms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lloyd_finds_the_levels_of_a_two_valued_axis() {
        let mut v: Vec<f64> = (0..100).map(|i| if i < 50 { -1.0 } else { 2.0 }).collect();
        v.sort_by(f64::total_cmp);
        let mut p = vec![0.0];
        let mut p2 = vec![0.0];
        for &x in &v {
            p.push(p.last().unwrap() + x);
            p2.push(p2.last().unwrap() + x * x);
        }
        let q = lloyd(&v, &p, &p2, 2, 10);
        assert_eq!(q.levels, vec![-1.0, 2.0]);
        assert!(q.mse.abs() < 1e-12);
        let one = lloyd(&v, &p, &p2, 1, 10);
        assert!((one.levels[0] - 0.5).abs() < 1e-6);
        assert!((one.mse - 2.25).abs() < 1e-9, "{}", one.mse);
        let s = Scalar::new(vec![-1.0, 0.0, 3.0]);
        assert_eq!(
            [-5.0, -0.6, -0.4, 1.4, 1.6, 9.0].map(|x| s.encode(x)),
            [0, 0, 1, 1, 2, 2]
        );
    }

    #[test]
    fn bits_go_where_the_weighted_error_falls_most() {
        // Component 0 has 100x the weight of component 1: it gets bits first; a
        // component with zero weight gets none.
        let mse: Vec<Vec<f64>> = (0..3)
            .map(|_| (0..=MAX_BITS).map(|b| 0.25f64.powi(b as i32)).collect())
            .collect();
        // With n = 1000 vectors a bit costs about 1000 bits of the index; a first bit
        // also pays for a row of 3 4-bit entries, its scale and its width byte.
        let step = |b| step_cost(1000, 3, b);
        let budget: f64 = (0..4).map(step).sum::<f64>() + (0..2).map(step).sum::<f64>();
        let bits = allocate(&[100.0, 1.0, 0.0], &mse, 1000, budget);
        assert_eq!(
            bits.iter().map(|&b| usize::from(b)).sum::<usize>(),
            6,
            "{bits:?}"
        );
        assert!(bits[0] > bits[1], "{bits:?}");
        assert_eq!(bits[2], 0);
        // A budget beyond every component's maximum stops at the maximum.
        assert_eq!(allocate(&[1.0, 1.0], &mse[..2], 10, 1e12), vec![8, 8]);
        // A budget below one step's cost allocates nothing.
        assert_eq!(
            allocate(&[1.0], &mse[..1], 1000, step_cost(1000, 1, 0) - 1.0),
            vec![0]
        );
    }

    #[test]
    fn packed_codes_of_mixed_widths_read_back() {
        let bits = [8u8, 5, 3, 3, 1];
        let (offsets, len, first) = layout(&bits);
        assert_eq!(layout(&[1]).1, 1);
        assert_eq!(
            (offsets.clone(), len, first),
            (vec![0, 8, 13, 16, 19], 3, 2)
        );
        let vals = [200usize, 17, 5, 2, 1];
        let mut code = vec![0u8; len + 1];
        for (j, &v) in vals.iter().enumerate() {
            let w = (v as u16) << (offsets[j] % 8);
            code[offsets[j] / 8] |= w as u8;
            if offsets[j] % 8 + usize::from(bits[j]) > 8 {
                code[offsets[j] / 8 + 1] |= (w >> 8) as u8;
            }
        }
        for (j, &v) in vals.iter().enumerate() {
            assert_eq!(read_bits(&code, offsets[j], bits[j]), v);
        }
    }

    #[test]
    fn the_budget_holds_everything_and_buys_recall() {
        use crate::index::{flat::FlatIndex, recall};
        let dim = 64;
        let data = crate::data::clustered(3000, dim, 40, 0.5, 11, 12);
        let queries = crate::data::clustered(30, dim, 40, 0.5, 11, 13);
        let flat = FlatIndex::new(data.clone(), dim);
        let mut last = 0.0;
        let mut at32 = 0.0;
        for bytes in [8, 32, 64] {
            let p = PcaPqParams {
                bytes,
                ..PcaPqParams::default()
            };
            let index = PcaPqIndex::build(&data, dim, &p).unwrap();
            // Everything a search holds, within `bytes` per vector.
            assert!(
                index.memory_bytes() <= bytes * 3000,
                "{}",
                index.memory_bytes()
            );
            assert!(index.memory_bytes() >= bytes * 3000 * 3 / 4);
            let (kept, code_len) = index.layout();
            assert!(
                kept >= 1 && kept <= dim && code_len < bytes,
                "{kept} {code_len}"
            );
            let r: f64 = queries
                .chunks(dim)
                .map(|q| recall(&flat.search(q, 10), &index.search(q, 10)))
                .sum::<f64>()
                / 30.0;
            assert!(r > last, "recall {r} at {bytes} bytes, {last} below");
            last = r;
            if bytes == 32 {
                at32 = r;
            }
        }
        assert!(last >= 0.9, "recall {last} at 64 of 256 bytes per vector");
        // Two passes (cand) over the same codes find what one pass finds, near enough.
        let p = PcaPqParams {
            bytes: 32,
            candidates: 200,
            ..PcaPqParams::default()
        };
        let two = PcaPqIndex::build(&data, dim, &p).unwrap();
        let r: f64 = queries
            .chunks(dim)
            .map(|q| recall(&flat.search(q, 10), &two.search(q, 10)))
            .sum::<f64>()
            / 30.0;
        assert!(r >= at32 - 0.05, "two-pass recall {r}, one-pass {at32}");
    }

    #[test]
    fn a_budget_too_small_for_the_fixed_costs_is_refused() {
        let dim = 16;
        let data = crate::data::clustered(50, dim, 4, 0.5, 1, 2);
        let p = PcaPqParams {
            bytes: 5,
            renorm: true,
            ..PcaPqParams::default()
        };
        // 50 vectors: the mean (64 bytes) and the norms (4 each) leave nothing.
        let e = PcaPqIndex::build(&data, dim, &p).err().unwrap().to_string();
        assert!(e.contains("raise bytes"), "{e}");
        let e = PcaPqParams {
            bytes: 17,
            ..PcaPqParams::default()
        }
        .check(16)
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be 1 to 16"), "{e}");
    }

    #[test]
    fn stored_rows_come_back_orthonormal_and_near_the_axes() {
        // Three orthonormal rows in 8 dimensions (a rotation of the first axes).
        let (c, s) = (0.8f64, 0.6f64);
        let rows: Vec<f64> = [
            [c, s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [-s, c, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0],
        ]
        .concat();
        let (packed, scales) = quantize_rows(&rows, 8);
        assert_eq!(packed.len(), 3 * row_bytes(8));
        let back = orthonormal_rows(&dequantize_rows(&packed, &scales, 8), 3, 8);
        for i in 0..3 {
            for j in 0..3 {
                let d: f32 = (0..8).map(|k| back[i * 8 + k] * back[j * 8 + k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-5, "row {i}·row {j} = {d}");
            }
            // Each row still points along its axis (the sign may flip in QR).
            let d: f64 = (0..8)
                .map(|k| f64::from(back[i * 8 + k]) * rows[i * 8 + k])
                .sum();
            assert!(d.abs() > 0.99, "row {i}: {d}");
        }
    }
}
