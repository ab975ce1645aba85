//! Update compression: top-k sparsification with error feedback, optional 8-bit
//! quantization of the kept values.
//!
//! Error feedback (Stich et al. 2018, Karimireddy et al. 2019): each participant keeps a
//! residual of what it did not send (the coordinates below the top k and the
//! quantization error of those it did) and adds it to its next update, so no part of an
//! update is lost, only delayed.

use crate::wire::{Payload, DENSE_CHUNK, SPARSE_CHUNK, SPARSE_Q8_CHUNK};

/// How a participant encodes its update.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Compression {
    /// Keep only this fraction of coordinates (largest magnitude), with error feedback.
    pub top_k: Option<f64>,
    /// Quantize kept values to 8 bits (only with `top_k`).
    pub q8: bool,
}

/// Encode `delta` into payload chunks; `residual` (per participant, same length or
/// empty) carries what was not sent into the next call.
pub fn encode(delta: &[f32], residual: &mut Vec<f32>, c: Compression) -> Vec<Payload> {
    let Some(frac) = c.top_k else {
        return delta
            .chunks(DENSE_CHUNK)
            .enumerate()
            .map(|(i, v)| Payload::Dense {
                offset: (i * DENSE_CHUNK) as u32,
                values: v.to_vec(),
            })
            .collect();
    };
    if residual.len() != delta.len() {
        *residual = vec![0.0; delta.len()];
    }
    let acc: Vec<f32> = delta
        .iter()
        .zip(residual.iter())
        .map(|(d, r)| d + r)
        .collect();
    let k = ((frac * acc.len() as f64).ceil() as usize).clamp(1, acc.len().max(1));
    let mut idx: Vec<u32> = (0..acc.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            acc[b as usize].abs().total_cmp(&acc[a as usize].abs())
        });
        idx.truncate(k);
    }
    idx.sort_unstable();
    // What is not sent stays in the residual; sent coordinates keep their quantization
    // error.
    residual.copy_from_slice(&acc);
    let mut out = Vec::new();
    if c.q8 {
        for chunk in idx.chunks(SPARSE_Q8_CHUNK) {
            let vals = chunk.iter().map(|&i| acc[i as usize]);
            let min = vals.clone().fold(f32::INFINITY, f32::min);
            let max = vals.fold(f32::NEG_INFINITY, f32::max);
            let step = if max > min { (max - min) / 255.0 } else { 0.0 };
            let pairs: Vec<(u32, u8)> = chunk
                .iter()
                .map(|&i| {
                    let v = acc[i as usize];
                    let code = if step > 0.0 {
                        ((v - min) / step).round().clamp(0.0, 255.0) as u8
                    } else {
                        0
                    };
                    residual[i as usize] = v - (min + f32::from(code) * step);
                    (i, code)
                })
                .collect();
            out.push(Payload::SparseQ8 { min, step, pairs });
        }
    } else {
        for chunk in idx.chunks(SPARSE_CHUNK) {
            let pairs: Vec<(u32, f32)> = chunk
                .iter()
                .map(|&i| {
                    residual[i as usize] = 0.0;
                    (i, acc[i as usize])
                })
                .collect();
            out.push(Payload::Sparse(pairs));
        }
    }
    if out.is_empty() {
        out.push(Payload::Sparse(Vec::new()));
    }
    out
}

/// Write a chunk's values into `dense` (of the model's length). Fails on an index or
/// range outside the model, or on a value that is NaN or infinite.
pub fn apply(payload: &Payload, dense: &mut [f32]) -> Result<(), String> {
    let n = dense.len();
    let check = |v: f32| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("value {v} is not finite"))
        }
    };
    match payload {
        Payload::Dense { offset, values } => {
            let start = *offset as usize;
            let end = start
                .checked_add(values.len())
                .filter(|&e| e <= n)
                .ok_or_else(|| {
                    format!(
                        "dense chunk {start}..{} outside a model of {n} parameters",
                        start + values.len()
                    )
                })?;
            for (d, &v) in dense[start..end].iter_mut().zip(values) {
                *d = check(v)?;
            }
        }
        Payload::Sparse(pairs) => {
            for &(i, v) in pairs {
                let slot = dense
                    .get_mut(i as usize)
                    .ok_or_else(|| format!("index {i} outside a model of {n} parameters"))?;
                *slot = check(v)?;
            }
        }
        Payload::SparseQ8 { min, step, pairs } => {
            check(*min)?;
            check(*step)?;
            for &(i, c) in pairs {
                let slot = dense
                    .get_mut(i as usize)
                    .ok_or_else(|| format!("index {i} outside a model of {n} parameters"))?;
                *slot = check(min + f32::from(c) * step)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(payloads: &[Payload], n: usize) -> Vec<f32> {
        let mut d = vec![0.0; n];
        for p in payloads {
            apply(p, &mut d).unwrap();
        }
        d
    }

    #[test]
    fn top_k_sends_the_largest_and_keeps_the_rest() {
        let delta = [0.1f32, -3.0, 0.2, 2.0, 0.0];
        let mut res = Vec::new();
        let c = Compression {
            top_k: Some(0.4),
            q8: false,
        };
        let sent = decode(&encode(&delta, &mut res, c), 5);
        assert_eq!(sent, vec![0.0, -3.0, 0.0, 2.0, 0.0]);
        assert_eq!(res, vec![0.1, 0.0, 0.2, 0.0, 0.0]);
        // Error feedback: the residual joins the next update.
        let sent2 = decode(&encode(&[0.0; 5], &mut res, c), 5);
        assert_eq!(sent2, vec![0.1, 0.0, 0.2, 0.0, 0.0]);
    }

    #[test]
    fn q8_error_stays_in_the_residual() {
        let delta: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut res = Vec::new();
        let c = Compression {
            top_k: Some(1.0),
            q8: true,
        };
        let sent = decode(&encode(&delta, &mut res, c), 100);
        for i in 0..100 {
            assert!((sent[i] + res[i] - delta[i]).abs() < 1e-6);
            assert!(res[i].abs() <= 2.0 / 255.0 / 2.0 + 1e-6);
        }
    }

    #[test]
    fn out_of_range_and_nan_are_refused() {
        let mut d = vec![0.0; 3];
        assert!(apply(&Payload::Sparse(vec![(3, 1.0)]), &mut d).is_err());
        assert!(apply(&Payload::Sparse(vec![(0, f32::NAN)]), &mut d).is_err());
        let dense = Payload::Dense {
            offset: 2,
            values: vec![1.0, 1.0],
        };
        assert!(apply(&dense, &mut d).is_err());
    }
}
