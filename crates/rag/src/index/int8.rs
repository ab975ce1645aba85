//! Scalar quantization: one byte per dimension, ranges calibrated per dimension.
//!
//! For each dimension the range `[lo, hi]` is the `[clip, 1 - clip]` quantile of the
//! data (at most 20,000 rows sampled evenly), so a few outliers do not stretch the grid
//! for everyone; values outside are clipped. `x ≈ lo + scale * code` with
//! `scale = (hi - lo) / 255`. A query `q` is scored as
//! `q·lo + Σ (q_d * scale_d) * code_d`: one inner product against the byte codes.

use super::{dot_rows_u8, put_f32s, put_u32, scan_top_k, Hit, IndexKind, Reader, VectorIndex};

const CALIBRATION_ROWS: usize = 20_000;

/// int8 scalar-quantized vectors.
pub struct Int8Index {
    dim: usize,
    clip: f32,
    lo: Vec<f32>,
    scale: Vec<f32>,
    codes: Vec<u8>,
}

impl Int8Index {
    /// Calibrate on `data` and quantize it.
    pub fn build(data: &[f32], dim: usize, clip: f32) -> Self {
        let n = data.len() / dim;
        let step = n.div_ceil(CALIBRATION_ROWS).max(1);
        let rows: Vec<&[f32]> = data.chunks_exact(dim).step_by(step).collect();
        let mut lo = vec![0f32; dim];
        let mut scale = vec![0f32; dim];
        let mut column = Vec::with_capacity(rows.len());
        for d in 0..dim {
            column.clear();
            column.extend(rows.iter().map(|r| r[d]));
            column.sort_by(f32::total_cmp);
            let at = |q: f32| {
                let i = ((column.len() - 1) as f32 * q).round() as usize;
                column[i.min(column.len() - 1)]
            };
            let (l, h) = if column.is_empty() {
                (0.0, 0.0)
            } else {
                (at(clip), at(1.0 - clip))
            };
            lo[d] = l;
            scale[d] = if h > l { (h - l) / 255.0 } else { 1.0 };
        }
        let mut codes = Vec::with_capacity(data.len());
        for row in data.chunks_exact(dim) {
            for d in 0..dim {
                let c = ((row[d] - lo[d]) / scale[d]).round().clamp(0.0, 255.0);
                codes.push(c as u8);
            }
        }
        Self {
            dim,
            clip,
            lo,
            scale,
            codes,
        }
    }

    /// The clipping quantile it was calibrated with.
    pub(crate) fn clip(&self) -> f32 {
        self.clip
    }

    /// The query terms of the score: `q ∘ scale` and `q · lo`.
    pub(crate) fn prepare(&self, query: &[f32]) -> (Vec<f32>, f32) {
        let q = &query[..self.dim];
        let scaled = q.iter().zip(&self.scale).map(|(a, s)| a * s).collect();
        let base = q.iter().zip(&self.lo).map(|(a, l)| a * l).sum();
        (scaled, base)
    }

    /// The score of row `id` for a query [`Self::prepare`]d.
    #[inline]
    pub(crate) fn score(&self, prepared: &(Vec<f32>, f32), id: u32) -> f32 {
        let start = id as usize * self.dim;
        let mut out = [0f32];
        dot_rows_u8(&prepared.0, &self.codes[start..start + self.dim], &mut out);
        out[0] + prepared.1
    }

    pub(crate) fn decode(r: &mut Reader<'_>, dim: usize, n: usize) -> Result<Self, String> {
        let clip = f32::from_bits(r.u32()?);
        let lo = r.f32s(dim)?;
        let scale = r.f32s(dim)?;
        let codes = r
            .bytes(n.checked_mul(dim).ok_or("size overflow")?)?
            .to_vec();
        Ok(Self {
            dim,
            clip,
            lo,
            scale,
            codes,
        })
    }
}

impl VectorIndex for Int8Index {
    fn kind(&self) -> IndexKind {
        IndexKind::Int8
    }

    fn spec(&self) -> String {
        format!("int8:clip={}", self.clip)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.codes.len() / self.dim
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let (scaled, base) = self.prepare(query);
        let dim = self.dim;
        let mut hits = scan_top_k(self.len(), k, |start, out| {
            dot_rows_u8(
                &scaled,
                &self.codes[start * dim..(start + out.len()) * dim],
                out,
            )
        });
        for h in &mut hits {
            h.score += base;
        }
        hits
    }

    fn memory_bytes(&self) -> usize {
        self.codes.len() + (self.lo.len() + self.scale.len()) * 4
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.clip.to_bits());
        put_f32s(out, &self.lo);
        put_f32s(out, &self.scale);
        out.extend_from_slice(&self.codes);
    }
}
