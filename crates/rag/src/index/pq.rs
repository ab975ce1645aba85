//! Product quantization with asymmetric distance computation (ADC) and optional
//! re-ranking by a residual quantizer.
//!
//! The vector is cut into `m` sub-vectors; each is replaced by the index of its nearest
//! of `2^bits` centroids (`bits` = 8 by default: one byte), trained by k-means on a
//! sample. A query is not quantized: per sub-space it is scored against the centroids
//! once (a table of `m * 2^bits` inner products), and a stored code's score is the sum
//! of `m` table entries. With `refine = R > 0`, a second product quantizer with `R`
//! sub-spaces of `2^rbits` centroids is trained on the residuals `x - decode(code)`;
//! the `cand` best by the first code are re-scored with both (`q · (x̂ + r̂)`, again by
//! tables) and the best `k` returned. Codes narrower than a byte are bit-packed, in
//! memory as on disk (`m * bits` bits per vector, rounded up to whole bytes). Both
//! codes and both codebooks count in [`VectorIndex::memory_bytes`].
//!
//! Many small sub-spaces with few centroids (`refine=384,rbits=3`: a 3-bit k-means
//! quantizer per dimension of the residual) keep the codebooks tiny (384 × 8 floats),
//! which matters on small corpora where 256-centroid codebooks (393 KB each for 384
//! dimensions) outweigh the codes.

use super::kmeans::{kmeans, nearest};
use super::{put_f32s, put_u32, Hit, IndexError, IndexKind, Reader, TopK, VectorIndex};

/// Most centroids per sub-space (codes of 8 bits).
pub const KSUB: usize = 256;

/// Build parameters of a [`PqIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PqParams {
    /// Sub-spaces of the first quantizer (bytes per vector); must divide the dimension.
    pub m: usize,
    /// Bits per sub-space code of the first quantizer (1-8; `2^bits` centroids).
    pub bits: usize,
    /// Sub-spaces of the residual quantizer used to re-rank (0 = no re-ranking).
    pub refine: usize,
    /// Bits per sub-space code of the residual quantizer (1-8).
    pub rbits: usize,
    /// Keep one f32 per vector, `1 / |x̂|` of its reconstruction, and score
    /// `q · x̂ / |x̂|`: the embeddings have unit norm, their reconstructions do not, and
    /// the norm's error otherwise shifts every score of the vector alike. Counted.
    pub renorm: bool,
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
            bits: 8,
            refine: 0,
            rbits: 8,
            renorm: false,
            candidates: 100,
            train: 16_384,
            iters: 16,
            seed: 1,
        }
    }
}

/// One product quantizer: `m` codebooks of `2^bits` centroids of `dim / m` floats.
struct Quantizer {
    m: usize,
    dsub: usize,
    bits: usize,
    centroids: Vec<f32>,
}

impl Quantizer {
    fn train(sample: &[f32], dim: usize, m: usize, bits: usize, iters: usize, seed: u64) -> Self {
        let dsub = dim / m;
        let ksub = 1 << bits;
        let n = sample.len() / dim;
        let mut centroids = Vec::with_capacity(m * ksub * dsub);
        let mut sub = Vec::with_capacity(n * dsub);
        for j in 0..m {
            sub.clear();
            for row in sample.chunks_exact(dim) {
                sub.extend_from_slice(&row[j * dsub..(j + 1) * dsub]);
            }
            centroids.extend(kmeans(&sub, dsub, ksub, iters, seed.wrapping_add(j as u64)));
        }
        Self {
            m,
            dsub,
            bits,
            centroids,
        }
    }

    fn ksub(&self) -> usize {
        1 << self.bits
    }

    /// Bytes of one vector's packed code.
    fn code_len(&self) -> usize {
        (self.m * self.bits).div_ceil(8)
    }

    fn book(&self, j: usize) -> &[f32] {
        let size = self.ksub() * self.dsub;
        &self.centroids[j * size..(j + 1) * size]
    }

    /// Append the packed code of `x` (sub-codes little-endian bit order).
    fn encode(&self, x: &[f32], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.code_len(), 0);
        let code = &mut out[start..];
        for j in 0..self.m {
            let c = nearest(&x[j * self.dsub..(j + 1) * self.dsub], self.book(j));
            let off = j * self.bits;
            let v = (c as u16) << (off % 8);
            code[off / 8] |= v as u8;
            if off % 8 + self.bits > 8 {
                code[off / 8 + 1] |= (v >> 8) as u8;
            }
        }
    }

    fn decode(&self, code: &[u8], out: &mut [f32]) {
        for j in 0..self.m {
            let c = sub_code(code, j, self.bits);
            let c = &self.book(j)[c * self.dsub..(c + 1) * self.dsub];
            out[j * self.dsub..(j + 1) * self.dsub].copy_from_slice(c);
        }
    }

    /// `table[j * 2^bits + c] = q_j · centroid_{j,c}`.
    fn table(&self, q: &[f32]) -> Vec<f32> {
        let mut t = Vec::with_capacity(self.m * self.ksub());
        for j in 0..self.m {
            let qs = &q[j * self.dsub..(j + 1) * self.dsub];
            for c in self.book(j).chunks_exact(self.dsub) {
                t.push(qs.iter().zip(c).map(|(a, b)| a * b).sum());
            }
        }
        t
    }

    /// The score of a packed code against a [`Self::table`].
    #[inline]
    fn score(&self, table: &[f32], code: &[u8]) -> f32 {
        match self.bits {
            8 => adc8(table, code),
            4 => adc4(table, code, self.m),
            bits => {
                let ksub = self.ksub();
                (0..self.m)
                    .map(|j| table[j * ksub + sub_code(code, j, bits)])
                    .sum()
            }
        }
    }

    fn bytes(&self) -> usize {
        self.centroids.len() * 4
    }
}

/// Sub-code `j` of `bits` bits from a packed code.
#[inline]
fn sub_code(code: &[u8], j: usize, bits: usize) -> usize {
    let off = j * bits;
    let mut v = u16::from(code[off / 8]) >> (off % 8);
    if off % 8 + bits > 8 {
        v |= u16::from(code[off / 8 + 1]) << (8 - off % 8);
    }
    usize::from(v & ((1 << bits) - 1))
}

/// ADC of one-byte sub-codes, four running sums.
#[inline]
fn adc8(table: &[f32], code: &[u8]) -> f32 {
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

/// ADC of 4-bit sub-codes, two per byte (low nibble first).
#[inline]
fn adc4(table: &[f32], code: &[u8], m: usize) -> f32 {
    let (mut a, mut b) = (0f32, 0f32);
    for (i, &c) in code.iter().enumerate() {
        let j = 2 * i;
        a += table[j * 16 + usize::from(c & 15)];
        if j + 1 < m {
            b += table[(j + 1) * 16 + usize::from(c >> 4)];
        }
    }
    a + b
}

/// A product-quantized index, optionally with a residual re-ranking code.
pub struct PqIndex {
    dim: usize,
    params: PqParams,
    pq: Quantizer,
    codes: Vec<u8>,
    refine: Option<(Quantizer, Vec<u8>)>,
    /// `1 / |x̂|` per vector when `renorm` (x̂ with the residual code when there is one).
    inv_norms: Vec<f32>,
}

pub(crate) fn sample_rows(data: &[f32], dim: usize, count: usize) -> Vec<f32> {
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
        for (name, b) in [("bits", p.bits), ("rbits", p.rbits)] {
            if !(1..=8).contains(&b) {
                return Err(IndexError::Invalid(format!(
                    "pq {name}={b} must be 1 to 8 (bits per sub-space code)"
                )));
            }
        }
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
        let pq = Quantizer::train(&sample, dim, p.m, p.bits, p.iters, p.seed);
        let n = data.len() / dim;
        let mut codes = Vec::with_capacity(n * pq.code_len());
        for row in data.chunks_exact(dim) {
            pq.encode(row, &mut codes);
        }
        let refine = if p.refine > 0 {
            let mut residuals = Vec::with_capacity(data.len());
            let mut recon = vec![0f32; dim];
            for (row, code) in data
                .chunks_exact(dim)
                .zip(codes.chunks_exact(pq.code_len()))
            {
                pq.decode(code, &mut recon);
                residuals.extend(row.iter().zip(&recon).map(|(x, r)| x - r));
            }
            let rsample = sample_rows(&residuals, dim, p.train);
            let rq = Quantizer::train(&rsample, dim, p.refine, p.rbits, p.iters, p.seed ^ 0x5eed);
            let mut rcodes = Vec::with_capacity(n * rq.code_len());
            for row in residuals.chunks_exact(dim) {
                rq.encode(row, &mut rcodes);
            }
            Some((rq, rcodes))
        } else {
            None
        };
        let mut inv_norms = Vec::new();
        if p.renorm {
            let (mut recon, mut res) = (vec![0f32; dim], vec![0f32; dim]);
            for i in 0..n {
                pq.decode(
                    &codes[i * pq.code_len()..(i + 1) * pq.code_len()],
                    &mut recon,
                );
                if let Some((rq, rc)) = &refine {
                    rq.decode(&rc[i * rq.code_len()..(i + 1) * rq.code_len()], &mut res);
                    recon.iter_mut().zip(&res).for_each(|(a, b)| *a += b);
                }
                let norm = recon.iter().map(|x| x * x).sum::<f32>().sqrt();
                inv_norms.push(if norm > 0.0 { 1.0 / norm } else { 1.0 });
            }
        }
        Ok(Self {
            dim,
            params: p.clone(),
            pq,
            codes,
            refine,
            inv_norms,
        })
    }

    /// Read a payload written by [`VectorIndex::encode`]; format version 1 had no bit
    /// widths (every code one byte).
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        dim: usize,
        n: usize,
        version: u32,
    ) -> Result<Self, String> {
        let m = r.u32()? as usize;
        let refine_m = r.u32()? as usize;
        let candidates = r.u32()? as usize;
        let train = r.u32()? as usize;
        let iters = r.u32()? as usize;
        let seed = r.u64()?;
        let (bits, rbits, renorm) = if version >= 2 {
            (r.u32()? as usize, r.u32()? as usize, r.u32()? != 0)
        } else {
            (8, 8, false)
        };
        let quantizer = |r: &mut Reader<'_>, m: usize, bits: usize| -> Result<Quantizer, String> {
            if m == 0 || dim % m != 0 {
                return Err(format!("{m} sub-spaces do not divide dimension {dim}"));
            }
            if !(1..=8).contains(&bits) {
                return Err(format!("{bits} bits per code (must be 1 to 8)"));
            }
            Ok(Quantizer {
                m,
                dsub: dim / m,
                bits,
                centroids: r.f32s((1 << bits) * dim)?,
            })
        };
        let codes = |r: &mut Reader<'_>, q: &Quantizer| -> Result<Vec<u8>, String> {
            Ok(
                r.bytes(n.checked_mul(q.code_len()).ok_or("size overflow")?)?
                    .to_vec(),
            )
        };
        let pq = quantizer(r, m, bits)?;
        let pq_codes = codes(r, &pq)?;
        let refine = if refine_m > 0 {
            let rq = quantizer(r, refine_m, rbits)?;
            let rc = codes(r, &rq)?;
            Some((rq, rc))
        } else {
            None
        };
        let inv_norms = if renorm { r.f32s(n)? } else { Vec::new() };
        Ok(Self {
            dim,
            params: PqParams {
                m,
                bits,
                refine: refine_m,
                rbits,
                renorm,
                candidates,
                train,
                iters,
                seed,
            },
            pq,
            codes: pq_codes,
            refine,
            inv_norms,
        })
    }
}

impl VectorIndex for PqIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Pq
    }

    fn spec(&self) -> String {
        let p = &self.params;
        let mut s = format!("pq:m={}", p.m);
        if p.bits != 8 {
            s += &format!(",bits={}", p.bits);
        }
        if p.refine > 0 {
            s += &format!(",refine={}", p.refine);
            if p.rbits != 8 {
                s += &format!(",rbits={}", p.rbits);
            }
            s += &format!(",cand={}", p.candidates);
        }
        if p.renorm {
            s += ",renorm=1";
        }
        s
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.codes.len() / self.pq.code_len()
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let q = &query[..self.dim];
        let table = self.pq.table(q);
        let width = self.pq.code_len();
        let first = match &self.refine {
            Some(_) => self.params.candidates.max(k),
            None => k,
        };
        let mut top = TopK::new(first);
        for (i, code) in self.codes.chunks_exact(width).enumerate() {
            top.push(i as u32, self.pq.score(&table, code));
        }
        let hits = top.into_sorted();
        let Some((rq, rcodes)) = &self.refine else {
            if self.inv_norms.is_empty() {
                return hits;
            }
            let mut top = TopK::new(k);
            for h in hits {
                top.push(h.id, h.score * self.inv_norms[h.id as usize]);
            }
            return top.into_sorted();
        };
        let rtable = rq.table(q);
        let mut top = TopK::new(k);
        for h in hits {
            let i = h.id as usize;
            let w = rq.code_len();
            let score = h.score + rq.score(&rtable, &rcodes[i * w..(i + 1) * w]);
            top.push(h.id, self.inv_norms.get(i).map_or(score, |s| score * s));
        }
        top.into_sorted()
    }

    fn memory_bytes(&self) -> usize {
        let refine = self.refine.as_ref().map_or(0, |(q, c)| q.bytes() + c.len());
        self.codes.len() + self.pq.bytes() + refine + self.inv_norms.len() * 4
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        for v in [p.m, p.refine, p.candidates, p.train, p.iters] {
            put_u32(out, v as u32);
        }
        out.extend_from_slice(&p.seed.to_le_bytes());
        put_u32(out, p.bits as u32);
        put_u32(out, p.rbits as u32);
        put_u32(out, u32::from(p.renorm));
        put_f32s(out, &self.pq.centroids);
        out.extend_from_slice(&self.codes);
        if let Some((rq, rc)) = &self.refine {
            put_f32s(out, &rq.centroids);
            out.extend_from_slice(rc);
        }
        put_f32s(out, &self.inv_norms);
    }
}
