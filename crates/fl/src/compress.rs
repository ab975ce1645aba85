//! Update compression: top-k sparsification with error feedback, optional 8-bit
//! quantization of the kept values, and the refinements of Deep Gradient Compression.
//!
//! Error feedback (Stich et al. 2018, Karimireddy et al. 2019): each participant keeps a
//! residual of what it did not send (the coordinates below the top k and the
//! quantization error of those it did) and adds it to its next update, so no part of an
//! update is lost, only delayed.
//!
//! Deep Gradient Compression (Lin et al., ICLR 2018) adds, each optional here:
//! selection per parameter tensor with small tensors sent dense ([`Compression::tensors`],
//! [`Compression::dense_max`]), momentum correction with momentum factor masking
//! ([`Compression::momentum`]) and an exponential warm-up of the sparsity
//! ([`Compression::warmup_rounds`]).

use crate::wire::{Payload, DENSE_CHUNK, SPARSE_CHUNK, SPARSE_Q8_CHUNK};

/// How a participant encodes its update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compression {
    /// Keep only this fraction of coordinates (largest magnitude), with error feedback.
    pub top_k: Option<f64>,
    /// Quantize kept values to 8 bits (only with `top_k`).
    pub q8: bool,
    /// Select the top k within each parameter tensor (the lengths of the model's
    /// tensors in flat order, summing to the model's size) instead of over the whole
    /// model; empty: the whole model is one tensor.
    pub tensors: Vec<usize>,
    /// Tensors of at most this many parameters are sent dense (DGC leaves small layers,
    /// as biases, uncompressed); 0: none.
    pub dense_max: usize,
    /// Momentum correction (DGC) with this factor, 0 for none: the participant keeps a
    /// velocity `u ← m·u + update` across its updates and accumulates `u` (not the
    /// update) into the residual; a sent coordinate's velocity is cleared (momentum
    /// factor masking).
    pub momentum: f64,
    /// Sparsity warm-up (DGC): in rounds 1..=W the kept fraction falls exponentially
    /// from dense towards `top_k`, `top_k^(round / (W + 1))`; 0: `top_k` from round 1.
    pub warmup_rounds: u64,
}

impl Compression {
    /// The fraction of coordinates kept in `round` (1-based), `None` when dense.
    pub fn fraction(&self, round: u64) -> Option<f64> {
        let frac = self.top_k?;
        if round == 0 || round > self.warmup_rounds {
            return Some(frac);
        }
        Some(frac.powf(round as f64 / (self.warmup_rounds + 1) as f64))
    }

    /// A one-line description of the scheme, for reports.
    pub fn describe(&self) -> String {
        let Some(frac) = self.top_k else {
            return "dense".into();
        };
        let mut s = format!("top-k {frac}");
        if !self.tensors.is_empty() {
            s.push_str(" per tensor");
        }
        if self.dense_max > 0 {
            s.push_str(&format!(", tensors of <= {} dense", self.dense_max));
        }
        if self.momentum > 0.0 {
            s.push_str(&format!(", momentum correction {}", self.momentum));
        }
        if self.warmup_rounds > 0 {
            s.push_str(&format!(", warm-up {} rounds", self.warmup_rounds));
        }
        if self.q8 {
            s.push_str(", 8-bit values");
        }
        s.push_str(", error feedback");
        s
    }
}

/// What a participant carries from one update to the next: the error-feedback
/// residual and, with momentum correction, the velocity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feedback {
    /// What was not sent yet.
    pub residual: Vec<f32>,
    /// Momentum correction's velocity (empty without it).
    pub velocity: Vec<f32>,
}

/// Encode the update `delta` of `round` into payload chunks; `feedback` (per
/// participant) carries what was not sent into the next call.
pub fn encode(delta: &[f32], feedback: &mut Feedback, c: &Compression, round: u64) -> Vec<Payload> {
    let Some(frac) = c.fraction(round) else {
        return dense_chunks(delta, 0);
    };
    let n = delta.len();
    if feedback.residual.len() != n {
        feedback.residual = vec![0.0; n];
    }
    let acc: Vec<f32> = if c.momentum > 0.0 {
        if feedback.velocity.len() != n {
            feedback.velocity = vec![0.0; n];
        }
        let m = c.momentum as f32;
        for (u, d) in feedback.velocity.iter_mut().zip(delta) {
            *u = m * *u + d;
        }
        feedback
            .residual
            .iter()
            .zip(&feedback.velocity)
            .map(|(r, u)| r + u)
            .collect()
    } else {
        delta
            .iter()
            .zip(&feedback.residual)
            .map(|(d, r)| d + r)
            .collect()
    };
    // What is not sent stays in the residual; sent coordinates keep their quantization
    // error (zero unless 8-bit).
    feedback.residual.copy_from_slice(&acc);
    let mut out = Vec::new();
    let mut idx: Vec<u32> = Vec::new();
    let whole = [n];
    let tensors = if c.tensors.iter().sum::<usize>() == n && !c.tensors.is_empty() {
        c.tensors.as_slice()
    } else {
        &whole
    };
    let mut start = 0;
    for &len in tensors {
        let range = start..start + len;
        start += len;
        if len <= c.dense_max {
            out.extend(dense_chunks(&acc[range.clone()], range.start));
            feedback.residual[range.clone()].fill(0.0);
            if !feedback.velocity.is_empty() {
                feedback.velocity[range].fill(0.0);
            }
            continue;
        }
        idx.extend(top_k(&acc[range.clone()], frac).map(|i| i + range.start as u32));
    }
    idx.sort_unstable();
    if !feedback.velocity.is_empty() {
        // Momentum factor masking: a sent coordinate's momentum is spent.
        for &i in &idx {
            feedback.velocity[i as usize] = 0.0;
        }
    }
    let residual = &mut feedback.residual;
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

/// `values` as dense chunks, the first at model offset `offset`.
fn dense_chunks(values: &[f32], offset: usize) -> Vec<Payload> {
    values
        .chunks(DENSE_CHUNK)
        .enumerate()
        .map(|(i, v)| Payload::Dense {
            offset: (offset + i * DENSE_CHUNK) as u32,
            values: v.to_vec(),
        })
        .collect()
}

/// Indices of the `ceil(fraction × len)` (at least one) largest magnitudes of `values`.
fn top_k(values: &[f32], fraction: f64) -> impl Iterator<Item = u32> {
    let k = ((fraction * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1));
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            values[b as usize]
                .abs()
                .total_cmp(&values[a as usize].abs())
        });
        idx.truncate(k);
    }
    idx.into_iter()
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
        let mut fb = Feedback::default();
        let c = Compression {
            top_k: Some(0.4),
            ..Compression::default()
        };
        let sent = decode(&encode(&delta, &mut fb, &c, 1), 5);
        assert_eq!(sent, vec![0.0, -3.0, 0.0, 2.0, 0.0]);
        assert_eq!(fb.residual, vec![0.1, 0.0, 0.2, 0.0, 0.0]);
        // Error feedback: the residual joins the next update.
        let sent2 = decode(&encode(&[0.0; 5], &mut fb, &c, 2), 5);
        assert_eq!(sent2, vec![0.1, 0.0, 0.2, 0.0, 0.0]);
        assert!(fb.velocity.is_empty());
    }

    #[test]
    fn q8_error_stays_in_the_residual() {
        let delta: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut fb = Feedback::default();
        let c = Compression {
            top_k: Some(1.0),
            q8: true,
            ..Compression::default()
        };
        let sent = decode(&encode(&delta, &mut fb, &c, 1), 100);
        let res = &fb.residual;
        for i in 0..100 {
            assert!((sent[i] + res[i] - delta[i]).abs() < 1e-6);
            assert!(res[i].abs() <= 2.0 / 255.0 / 2.0 + 1e-6);
        }
    }

    #[test]
    fn per_tensor_selection_sends_small_tensors_dense_and_keeps_k_in_each() {
        // Tensors of 6, 2 and 4: the large last tensor would take every slot of a
        // selection over the whole model.
        let delta = [
            0.1f32, 0.5, -0.2, 0.3, 0.0, 0.05, 0.01, -0.02, 9.0, -8.0, 7.0, 6.0,
        ];
        let whole = Compression {
            top_k: Some(0.25),
            ..Compression::default()
        };
        let sent = decode(&encode(&delta, &mut Feedback::default(), &whole, 1), 12);
        assert_eq!(sent.iter().filter(|v| **v != 0.0).count(), 3);
        assert!(sent[..8].iter().all(|v| *v == 0.0));
        let per = Compression {
            tensors: vec![6, 2, 4],
            dense_max: 2,
            ..whole
        };
        let mut fb = Feedback::default();
        let sent = decode(&encode(&delta, &mut fb, &per, 1), 12);
        // ceil(0.25 × 6) = 2 of the first, all of the second (dense), 1 of the last.
        let want = [
            0.0, 0.5, 0.0, 0.3, 0.0, 0.0, 0.01, -0.02, 9.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(sent, want);
        for i in 0..12 {
            assert_eq!(sent[i] + fb.residual[i], delta[i], "coordinate {i}");
        }
        // Lengths that do not add up to the model fall back to one tensor.
        let wrong = Compression {
            tensors: vec![6, 2],
            dense_max: 0,
            ..per
        };
        let sent = decode(&encode(&delta, &mut Feedback::default(), &wrong, 1), 12);
        assert!(sent[..8].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn momentum_correction_accumulates_velocity_and_masks_what_was_sent() {
        let c = Compression {
            top_k: Some(0.5),
            momentum: 0.5,
            ..Compression::default()
        };
        let mut fb = Feedback::default();
        let sent = decode(&encode(&[4.0, 1.0], &mut fb, &c, 1), 2);
        assert_eq!(sent, vec![4.0, 0.0]);
        assert_eq!(fb.velocity, vec![0.0, 1.0]);
        assert_eq!(fb.residual, vec![0.0, 1.0]);
        // u = 0.5·u + g = [2, 2.5]; v = residual + u = [2, 3.5]: the second goes.
        let sent = decode(&encode(&[2.0, 2.0], &mut fb, &c, 2), 2);
        assert_eq!(sent, vec![0.0, 3.5]);
        assert_eq!(fb.velocity, vec![2.0, 0.0]);
        assert_eq!(fb.residual, vec![2.0, 0.0]);
    }

    #[test]
    fn warm_up_falls_exponentially_to_the_fraction() {
        let c = Compression {
            top_k: Some(0.01),
            warmup_rounds: 3,
            ..Compression::default()
        };
        let f: Vec<f64> = (1..=5).map(|r| c.fraction(r).unwrap()).collect();
        let want = [0.01f64.powf(0.25), 0.1, 0.01f64.powf(0.75), 0.01, 0.01];
        for (got, want) in f.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{f:?}");
        }
        assert_eq!(Compression::default().fraction(1), None);
        let delta: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let sent = decode(&encode(&delta, &mut Feedback::default(), &c, 2), 100);
        let kept = sent.iter().filter(|v| **v != 0.0).count();
        assert_eq!(kept, (c.fraction(2).unwrap() * 100.0).ceil() as usize);
        assert!((10..=11).contains(&kept), "{kept}");
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
