//! Client-level differential privacy: clipping, Gaussian noise at the aggregate, and an
//! RDP accountant for the Poisson-subsampled Gaussian mechanism.
//!
//! The accountant is a line-by-line port of Google's `dp-accounting`
//! (`dp_accounting.rdp.RdpAccountant`, the accountant Flower's DP strategies and
//! TensorFlow Privacy use): log A_alpha for integer and fractional orders (Mironov,
//! Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism",
//! Sec. 3.3), the default orders, and the RDP to (epsilon, delta) conversion of Balle et
//! al. 2020 (Prop. 12). No Rust crate implements this accountant, so it is written here;
//! `tests/dp_accounting.rs` checks it against the Python package to 1e-6 relative.

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// dp-accounting's `DEFAULT_RDP_ORDERS`: 1.1..=10.9 by 0.1, 11..=63, 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((11..64).map(|x| x as f64));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

fn log_add(logx: f64, logy: f64) -> f64 {
    let (a, b) = (logx.min(logy), logx.max(logy));
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

fn lgamma(x: f64) -> f64 {
    libm::lgamma(x)
}

fn log_comb(n: f64, k: f64) -> f64 {
    lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0)
}

/// log(erfc(x)), accurate in the far tail (as dp-accounting's `_log_erfc` fallback).
fn log_erfc(x: f64) -> f64 {
    let r = libm::erfc(x);
    if x < 25.0 && r > 0.0 {
        return r.ln();
    }
    -std::f64::consts::PI.ln() / 2.0 - x.ln() - x * x - 0.5 * x.powi(-2) + 0.625 * x.powi(-4)
        - 37.0 / 24.0 * x.powi(-6)
        + 353.0 / 64.0 * x.powi(-8)
}

fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let log1mq = (-q).ln_1p();
    for i in 0..=alpha {
        let i_f = i as f64;
        let log_coef_i = log_comb(alpha as f64, i_f) + i_f * q.ln() + (alpha as f64 - i_f) * log1mq;
        let s = log_coef_i + (i_f * i_f - i_f) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log1mq = (-q).ln_1p();
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..1000 {
        let i = i as f64;
        let log_coef = log_comb(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * log1mq;
        let log_t1 = log_coef + j * q.ln() + i * log1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// RDP of one step of the Poisson-subsampled Gaussian mechanism at each order
/// (dp-accounting's `_compute_rdp_poisson_subsampled_gaussian`).
pub fn rdp_subsampled_gaussian(q: f64, noise_multiplier: f64, orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|&alpha| {
            if q == 0.0 {
                0.0
            } else if alpha.is_infinite() || noise_multiplier == 0.0 {
                f64::INFINITY
            } else if q == 1.0 {
                alpha / (2.0 * noise_multiplier * noise_multiplier)
            } else if alpha.fract() == 0.0 {
                log_a_int(q, noise_multiplier, alpha as u64) / (alpha - 1.0)
            } else {
                log_a_frac(q, noise_multiplier, alpha) / (alpha - 1.0)
            }
        })
        .collect()
}

/// The smallest epsilon over the orders for `delta` (dp-accounting's `compute_epsilon`),
/// with the optimal order.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    if delta <= 0.0 {
        return if rdp.iter().all(|&r| r == 0.0) {
            (0.0, 0.0)
        } else {
            (f64::INFINITY, 0.0)
        };
    }
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(0.0));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// Accumulated RDP of a sequence of subsampled Gaussian steps.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant over dp-accounting's default orders, with nothing spent.
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, rdp }
    }

    /// Compose `steps` steps with sampling rate `q` and noise multiplier `sigma`.
    pub fn compose(&mut self, q: f64, sigma: f64, steps: u64) {
        let step = rdp_subsampled_gaussian(q, sigma, &self.orders);
        for (acc, s) in self.rdp.iter_mut().zip(step) {
            *acc += steps as f64 * s;
        }
    }

    /// Epsilon spent so far for `delta`.
    pub fn epsilon(&self, delta: f64) -> f64 {
        epsilon_from_rdp(&self.orders, &self.rdp, delta).0
    }

    /// Epsilon after `steps` more steps, without composing them.
    pub fn epsilon_after(&self, q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
        let mut next = self.clone();
        next.compose(q, sigma, steps);
        next.epsilon(delta)
    }
}

/// The smallest noise multiplier (to 0.1 %) whose `rounds` steps at rate `q` spend at
/// most `epsilon` for `delta`; `None` when even a multiplier of 10^4 cannot.
pub fn noise_multiplier_for(q: f64, rounds: u64, epsilon: f64, delta: f64) -> Option<f64> {
    let spends = |sigma: f64| RdpAccountant::new().epsilon_after(q, sigma, rounds, delta);
    let (mut lo, mut hi) = (0.01, 1.0);
    while spends(hi) > epsilon {
        lo = hi;
        hi *= 2.0;
        if hi > 1e4 {
            return None;
        }
    }
    while (hi - lo) / hi > 1e-3 {
        let mid = 0.5 * (lo + hi);
        if spends(mid) > epsilon {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Client-level DP settings: each update is clipped to L2 norm `clip`, and the mean of
/// the clipped updates gets Gaussian noise of standard deviation
/// `noise_multiplier * clip / expected_participants`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpConfig {
    /// L2 clipping norm of each participant's update.
    pub clip: f64,
    /// Noise standard deviation over the sensitivity `clip`.
    pub noise_multiplier: f64,
    /// The privacy budget's delta.
    pub delta: f64,
    /// The privacy budget's epsilon: a round whose spend would exceed it is refused.
    pub epsilon_budget: f64,
}

/// Clip `update` to L2 norm at most `clip`; returns the norm before clipping.
pub fn clip_l2(update: &mut [f32], clip: f64) -> f64 {
    let norm = update
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if norm > clip {
        let scale = (clip / norm) as f32;
        update.iter_mut().for_each(|v| *v *= scale);
    }
    norm
}

/// Add N(0, std^2) noise to every coordinate.
pub fn add_gaussian_noise(values: &mut [f32], std: f64, rng: &mut impl Rng) {
    if std <= 0.0 {
        return;
    }
    let normal = Normal::new(0.0, std).expect("std is finite and positive");
    for v in values.iter_mut() {
        *v += normal.sample(rng) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batch_gaussian_matches_closed_form() {
        // q = 1: RDP(alpha) = alpha / (2 sigma^2) exactly.
        let rdp = rdp_subsampled_gaussian(1.0, 2.0, &[2.0, 10.0]);
        assert_eq!(rdp, vec![0.25, 1.25]);
    }

    #[test]
    fn epsilon_grows_with_steps_and_shrinks_with_noise() {
        let mut acc = RdpAccountant::new();
        acc.compose(0.01, 1.1, 100);
        let e100 = acc.epsilon(1e-5);
        acc.compose(0.01, 1.1, 900);
        let e1000 = acc.epsilon(1e-5);
        assert!(e100 > 0.0 && e1000 > e100, "{e100} {e1000}");
        assert!(RdpAccountant::new().epsilon_after(0.01, 2.0, 1000, 1e-5) < e1000);
    }

    #[test]
    fn calibrated_noise_meets_budget() {
        let sigma = noise_multiplier_for(0.2, 50, 1.0, 1e-5).unwrap();
        let eps = RdpAccountant::new().epsilon_after(0.2, sigma, 50, 1e-5);
        assert!(eps <= 1.0 && eps > 0.99, "{sigma} {eps}");
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut u = vec![3.0f32, 4.0];
        assert_eq!(clip_l2(&mut u, 1.0), 5.0);
        assert!((u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6);
    }
}
