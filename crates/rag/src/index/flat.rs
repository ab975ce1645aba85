//! Exact search over full-precision vectors: the ground truth.

use super::{dot_rows_f32, put_f32s, scan_top_k, Hit, IndexKind, Reader, VectorIndex};

/// Every vector in f32, scanned exhaustively.
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
}

impl FlatIndex {
    /// Wrap `data` (`n * dim` floats).
    pub fn new(data: Vec<f32>, dim: usize) -> Self {
        Self { dim, data }
    }

    /// The stored vectors, row-major.
    pub fn vectors(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn decode(r: &mut Reader<'_>, dim: usize, n: usize) -> Result<Self, String> {
        let count = n.checked_mul(dim).ok_or("size overflow")?;
        Ok(Self {
            dim,
            data: r.f32s(count)?,
        })
    }
}

impl VectorIndex for FlatIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Flat
    }

    fn spec(&self) -> String {
        "flat".into()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let (q, dim) = (&query[..self.dim], self.dim);
        scan_top_k(self.len(), k, |start, out| {
            dot_rows_f32(q, &self.data[start * dim..(start + out.len()) * dim], out)
        })
    }

    fn memory_bytes(&self) -> usize {
        self.data.len() * 4
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_f32s(out, &self.data);
    }
}
