//! Byzantine participant behaviours.
//!
//! A Byzantine participant trains like everyone else (on flipped labels for the
//! label-flip attack), then replaces what it sends:
//!
//! | attack | sends |
//! |---|---|
//! | sign flip | `-scale` × its honest update (default scale 4, as Li et al. 2019 / RSA) |
//! | Gaussian noise | N(0, σ²) in every coordinate (default σ = 0.1) |
//! | label flip | its honest update on labels c → classes − 1 − c |
//! | ALIE | mean − z·std of the colluders' honest updates, per coordinate (Baruch et al. 2019, "A Little Is Enough"), z from n and f as in the paper |
//! | IPM | −ε × mean of the colluders' honest updates (Xie et al. 2020, inner-product manipulation; default ε = 0.5) |
//! | inflated samples | its sign-flipped update, claiming `factor` × its sample count (default 100) |
//!
//! ALIE and IPM collude: every Byzantine participant sampled in a round deposits its
//! honest update in a shared [`Collusion`] pool and sends the crafted update at half the
//! round's deadline, when the pool is complete. Like the papers, the colluders estimate
//! the benign statistics from their own honest updates, not from other participants'.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Attack kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttackKind {
    /// Honest.
    None,
    /// Negated, scaled update.
    SignFlip,
    /// Pure Gaussian noise.
    GaussianNoise,
    /// Trains on flipped labels.
    LabelFlip,
    /// A Little Is Enough.
    Alie,
    /// Inner-product manipulation.
    Ipm,
    /// Sign-flipped update with an inflated sample count.
    InflateSamples,
}

impl AttackKind {
    /// Every kind, with its command-line name.
    pub const ALL: [(AttackKind, &'static str); 7] = [
        (AttackKind::None, "none"),
        (AttackKind::SignFlip, "sign-flip"),
        (AttackKind::GaussianNoise, "gaussian"),
        (AttackKind::LabelFlip, "label-flip"),
        (AttackKind::Alie, "alie"),
        (AttackKind::Ipm, "ipm"),
        (AttackKind::InflateSamples, "inflate-samples"),
    ];

    /// Whether the attack needs the colluders' pool.
    pub fn colludes(self) -> bool {
        matches!(self, AttackKind::Alie | AttackKind::Ipm)
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL.iter().find(|(k, _)| k == self).map(|(_, n)| *n);
        f.write_str(name.unwrap_or("?"))
    }
}

impl FromStr for AttackKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(&Self::ALL, s, "attack")
    }
}

/// The entry of `table` named `name`, or an error listing every name (`what` names the
/// kind of thing, e.g. "attack"). Parses the CLI's kind arguments.
pub(crate) fn by_name<K: Copy>(table: &[(K, &str)], name: &str, what: &str) -> Result<K, String> {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(k, _)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(_, n)| *n).collect();
            format!("unknown {what} {name:?}; one of {}", names.join(", "))
        })
}

/// Attack strengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackParams {
    /// Sign flip: sent = -scale × honest.
    pub sign_flip_scale: f32,
    /// Gaussian noise: standard deviation per coordinate.
    pub noise_std: f64,
    /// IPM: sent = -epsilon × mean.
    pub ipm_epsilon: f32,
    /// Inflated samples: claimed = factor × actual.
    pub inflate_factor: u64,
}

impl Default for AttackParams {
    fn default() -> Self {
        AttackParams {
            sign_flip_scale: 4.0,
            noise_std: 0.1,
            ipm_epsilon: 0.5,
            inflate_factor: 100,
        }
    }
}

/// The colluders' shared pool: honest updates per round.
#[derive(Debug, Default)]
pub struct Collusion {
    pool: BTreeMap<u64, Vec<Vec<f32>>>,
}

impl Collusion {
    /// Deposit an honest update for `round` (older rounds are dropped).
    pub fn deposit(&mut self, round: u64, update: Vec<f32>) {
        self.pool.retain(|&r, _| r >= round);
        self.pool.entry(round).or_default().push(update);
    }

    /// The crafted update for `round`, given `sampled` participants in the round.
    pub fn craft(
        &self,
        kind: AttackKind,
        round: u64,
        sampled: usize,
        p: &AttackParams,
    ) -> Option<Vec<f32>> {
        let ups = self.pool.get(&round)?;
        let f = ups.len();
        let d = ups.first()?.len();
        let mean: Vec<f64> = (0..d)
            .map(|j| ups.iter().map(|u| f64::from(u[j])).sum::<f64>() / f as f64)
            .collect();
        match kind {
            AttackKind::Ipm => Some(
                mean.iter()
                    .map(|m| (-f64::from(p.ipm_epsilon) * m) as f32)
                    .collect(),
            ),
            AttackKind::Alie => {
                let z = alie_z(sampled.max(f), f);
                Some(
                    (0..d)
                        .map(|j| {
                            let var = if f > 1 {
                                ups.iter()
                                    .map(|u| (f64::from(u[j]) - mean[j]).powi(2))
                                    .sum::<f64>()
                                    / (f - 1) as f64
                            } else {
                                0.0
                            };
                            (mean[j] - z * var.sqrt()) as f32
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

/// ALIE's z: s = floor(n/2 + 1) − f supporters are needed, z = Φ⁻¹((n − s)/n).
pub fn alie_z(n: usize, f: usize) -> f64 {
    let s = (n / 2 + 1) as f64 - f as f64;
    let p = ((n as f64 - s) / n as f64).clamp(0.5, 0.999);
    inverse_normal_cdf(p)
}

/// Φ⁻¹(p) by Acklam's rational approximation (relative error < 1.15e-9), enough for
/// an attack strength; written here to avoid a statistics dependency for one function.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p_low = 0.02425;
    if p < p_low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - p_low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inverse_normal_cdf(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (k, n) in AttackKind::ALL {
            assert_eq!(n.parse::<AttackKind>().unwrap(), k);
            assert_eq!(k.to_string(), n);
        }
        assert!("nope".parse::<AttackKind>().unwrap_err().contains("alie"));
    }

    #[test]
    fn inverse_cdf_matches_tables() {
        assert!(inverse_normal_cdf(0.5).abs() < 1e-9);
        assert!((inverse_normal_cdf(0.975) - 1.959963985).abs() < 1e-8);
        assert!((inverse_normal_cdf(0.01) + 2.326347874).abs() < 1e-8);
    }

    #[test]
    fn alie_and_ipm_shift_the_mean() {
        let mut c = Collusion::default();
        c.deposit(1, vec![1.0, 0.0]);
        c.deposit(1, vec![3.0, 0.0]);
        let p = AttackParams::default();
        let ipm = c.craft(AttackKind::Ipm, 1, 10, &p).unwrap();
        assert_eq!(ipm, vec![-1.0, 0.0]);
        let alie = c.craft(AttackKind::Alie, 1, 10, &p).unwrap();
        // n = 10, f = 2: s = 4, z = Φ⁻¹(0.6) ≈ 0.2533; std = sqrt(2).
        assert!(
            (alie[0] - (2.0 - 0.2533 * 2f32.sqrt())).abs() < 1e-3,
            "{alie:?}"
        );
        assert!(c.craft(AttackKind::Alie, 2, 10, &p).is_none());
    }
}
