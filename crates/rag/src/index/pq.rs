//! Product quantization with asymmetric distance computation (ADC) and optional
//! re-ranking by a residual quantizer.
//!
//! The vector is cut into `m` sub-vectors; each is replaced by the index (one byte) of
//! its nearest of 256 centroids, trained by k-means on a sample. A query is not
//! quantized: per sub-space it is scored against the 256 centroids once (a table of
//! `m * 256` inner products), and a stored code's score is the sum of `m` table
//! entries. With `refine = R > 0`, a second product quantizer with `R` sub-spaces is
//! trained on the residuals `x - decode(code)`; the `cand` best by the first code are
//! re-scored with both (`q · (x̂ + r̂)`, again by tables) and the best `k` returned. Both
//! codes and both codebooks count in [`VectorIndex::memory_bytes`].

use super::kmeans::{kmeans, nearest};
use super::{put_f32s, put_u32, Hit, IndexError, IndexKind, Reader, TopK, VectorIndex};

/// Centroids per sub-space (codes are one byte).
pub const KSUB: usize = 256;

/// Build parameters of a [`PqIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PqParams {
    /// Sub-spaces of the first quantizer (bytes per vector); must divide the dimension.
    pub m: usize,
    /// Sub-spaces of the residual quantizer used to re-rank (0 = no re-ranking).
    pub refine: usize,
    /// Candidates re-ranked per query (at least `k`).
    pub candidates: usize,
    /// Vectors sampled to train the codebooks.
    pub train: usize,
    /// k-means iterations.
    pub iters: usize,
    /// Seed of the sampling and k-means initialisation.
    pub seed: u64,
}

impl Default for PqParams {
    fn default() -> Self {
        Self {
            m: 48,
            refine: 0,
            candidates: 100,
            train: 16_384,
            iters: 16,
            seed: 1,
        }
    }
}

/// One product quantizer: `m` codebooks of [`KSUB`] centroids of `dim / m` floats.
struct Quantizer {
    m: usize,
    dsub: usize,
    centroids: Vec<f32>,
}

impl Quantizer {
    fn train(sample: &[f32], dim: usize, m: usize, iters: usize, seed: u64) -> Self {
        let dsub = dim / m;
        let n = sample.len() / dim;
        let mut centroids = Vec::with_capacity(m * KSUB * dsub);
        let mut sub = Vec::with_capacity(n * dsub);
        for j in 0..m {
            sub.clear();
            for row in sample.chunks_exact(dim) {
                sub.extend_from_slice(&row[j * dsub..(j + 1) * dsub]);
            }
            centroids.extend(kmeans(&sub, dsub, KSUB, iters, seed.wrapping_add(j as u64)));
        }
        Self { m, dsub, centroids }
    }

    fn book(&self, j: usize) -> &[f32] {
        &self.centroids[j * KSUB * self.dsub..(j + 1) * KSUB * self.dsub]
    }

    fn encode(&self, x: &[f32], out: &mut Vec<u8>) {
        for j in 0..self.m {
            out.push(nearest(&x[j * self.dsub..(j + 1) * self.dsub], self.book(j)) as u8);
        }
    }

    fn decode(&self, code: &[u8], out: &mut [f32]) {
        for (j, &c) in code.iter().enumerate() {
            let c = &self.book(j)[c as usize * self.dsub..(c as usize + 1) * self.dsub];
            out[j * self.dsub..(j + 1) * self.dsub].copy_from_slice(c);
        }
    }

    /// `table[j * 256 + c] = q_j · centroid_{j,c}`.
    fn table(&self, q: &[f32]) -> Vec<f32> {
        let mut t = Vec::with_capacity(self.m * KSUB);
        for j in 0..self.m {
            let qs = &q[j * self.dsub..(j + 1) * self.dsub];
            for c in self.book(j).chunks_exact(self.dsub) {
                t.push(qs.iter().zip(c).map(|(a, b)| a * b).sum());
            }
        }
        t
    }

    fn bytes(&self) -> usize {
        self.centroids.len() * 4
    }
}

#[inline]
fn adc(table: &[f32], code: &[u8]) -> f32 {
    let mut acc = [0f32; 4];
    let chunks = code.chunks_exact(4);
    let rest = chunks.remainder();
    let mut base = 0;
    for c in chunks {
        for l in 0..4 {
            acc[l] += table[(base + l) * KSUB + c[l] as usize];
        }
        base += 4;
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for (l, &c) in rest.iter().enumerate() {
        s += table[(base + l) * KSUB + c as usize];
    }
    s
}

/// A product-quantized index, optionally with a residual re-ranking code.
pub struct PqIndex {
    dim: usize,
    params: PqParams,
    pq: Quantizer,
    codes: Vec<u8>,
    refine: Option<(Quantizer, Vec<u8>)>,
}

fn sample_rows(data: &[f32], dim: usize, count: usize) -> Vec<f32> {
    let n = data.len() / dim;
    let step = n.div_ceil(count.max(1)).max(1);
    data.chunks_exact(dim)
        .step_by(step)
        .flatten()
        .copied()
        .collect()
}

impl PqIndex {
    /// Train the codebooks on a sample of `data` and encode all of it.
    pub fn build(data: &[f32], dim: usize, p: &PqParams) -> Result<Self, IndexError> {
        for (name, m) in [("m", p.m), ("refine", p.refine)] {
            if (name == "m" || m > 0) && (m == 0 || dim % m != 0) {
                return Err(IndexError::Invalid(format!(
                    "pq {name}={m} must divide the dimension {dim} (e.g. {})",
                    if dim % 48 == 0 {
                        "48 or 96"
                    } else {
                        "a divisor"
                    }
                )));
            }
        }
        let sample = sample_rows(data, dim, p.train);
        let pq = Quantizer::train(&sample, dim, p.m, p.iters, p.seed);
        let n = data.len() / dim;
        let mut codes = Vec::with_capacity(n * p.m);
        for row in data.chunks_exact(dim) {
            pq.encode(row, &mut codes);
        }
        let refine = if p.refine > 0 {
            let mut residuals = Vec::with_capacity(data.len());
            let mut recon = vec![0f32; dim];
            for (row, code) in data.chunks_exact(dim).zip(codes.chunks_exact(p.m)) {
                pq.decode(code, &mut recon);
                residuals.extend(row.iter().zip(&recon).map(|(x, r)| x - r));
            }
            let rsample = sample_rows(&residuals, dim, p.train);
            let rq = Quantizer::train(&rsample, dim, p.refine, p.iters, p.seed ^ 0x5eed);
            let mut rcodes = Vec::with_capacity(n * p.refine);
            for row in residuals.chunks_exact(dim) {
                rq.encode(row, &mut rcodes);
            }
            Some((rq, rcodes))
        } else {
            None
        };
        Ok(Self {
            dim,
            params: p.clone(),
            pq,
            codes,
            refine,
        })
    }

    pub(crate) fn decode(r: &mut Reader<'_>, dim: usize, n: usize) -> Result<Self, String> {
        let m = r.u32()? as usize;
        let refine_m = r.u32()? as usize;
        let candidates = r.u32()? as usize;
        let train = r.u32()? as usize;
        let iters = r.u32()? as usize;
        let seed = r.u64()?;
        let quantizer = |r: &mut Reader<'_>, m: usize| -> Result<Quantizer, String> {
            if m == 0 || dim % m != 0 {
                return Err(format!("{m} sub-spaces do not divide dimension {dim}"));
            }
            Ok(Quantizer {
                m,
                dsub: dim / m,
                centroids: r.f32s(KSUB * dim)?,
            })
        };
        let pq = quantizer(r, m)?;
        let codes = r.bytes(n.checked_mul(m).ok_or("size overflow")?)?.to_vec();
        let refine = if refine_m > 0 {
            let rq = quantizer(r, refine_m)?;
            let rc = r
                .bytes(n.checked_mul(refine_m).ok_or("size overflow")?)?
                .to_vec();
            Some((rq, rc))
        } else {
            None
        };
        Ok(Self {
            dim,
            params: PqParams {
                m,
                refine: refine_m,
                candidates,
                train,
                iters,
                seed,
            },
            pq,
            codes,
            refine,
        })
    }
}

impl VectorIndex for PqIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Pq
    }

    fn spec(&self) -> String {
        let p = &self.params;
        if p.refine > 0 {
            format!("pq:m={},refine={},cand={}", p.m, p.refine, p.candidates)
        } else {
            format!("pq:m={}", p.m)
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.codes.len() / self.params.m
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let q = &query[..self.dim];
        let table = self.pq.table(q);
        let m = self.params.m;
        let first = match &self.refine {
            Some(_) => self.params.candidates.max(k),
            None => k,
        };
        let mut top = TopK::new(first);
        for (i, code) in self.codes.chunks_exact(m).enumerate() {
            top.push(i as u32, adc(&table, code));
        }
        let hits = top.into_sorted();
        let Some((rq, rcodes)) = &self.refine else {
            return hits;
        };
        let rtable = rq.table(q);
        let mut top = TopK::new(k);
        for h in hits {
            let i = h.id as usize;
            let code = &rcodes[i * rq.m..(i + 1) * rq.m];
            top.push(h.id, h.score + adc(&rtable, code));
        }
        top.into_sorted()
    }

    fn memory_bytes(&self) -> usize {
        let refine = self.refine.as_ref().map_or(0, |(q, c)| q.bytes() + c.len());
        self.codes.len() + self.pq.bytes() + refine
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        for v in [p.m, p.refine, p.candidates, p.train, p.iters] {
            put_u32(out, v as u32);
        }
        out.extend_from_slice(&p.seed.to_le_bytes());
        put_f32s(out, &self.pq.centroids);
        out.extend_from_slice(&self.codes);
        if let Some((rq, rc)) = &self.refine {
            put_f32s(out, &rq.centroids);
            out.extend_from_slice(rc);
        }
    }
}
