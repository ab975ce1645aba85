//! Data-plane MTTR, measured the same way everywhere (demo, twin, chaos lab).
//!
//! A probe flow sends a small message from one node to another every few milliseconds.
//! For a flow whose path crossed a failed element, the outage is the time between the
//! last probe delivered before the fault and the first delivered after it. Detection
//! time alone is not MTTR.

use serde::{Deserialize, Serialize};

/// The outage of one flow around a fault at `fault_at_us`, given the arrival times of
/// its probes in microseconds, sorted ascending: the longest gap between consecutive
/// arrivals that ends after the fault. For a single disruption that is the gap between
/// the last probe delivered before the path broke and the first delivered after it.
/// (The gap spanning the fault instant alone is not enough: probes already past the
/// failed element when it failed still arrive just after the fault instant.)
/// `None` when no probe arrived after the fault (the flow never recovered) or none
/// arrived before it (no baseline).
pub fn flow_outage_us(arrivals_us: &[u64], fault_at_us: u64) -> Option<u64> {
    debug_assert!(
        arrivals_us.windows(2).all(|w| w[0] <= w[1]),
        "arrivals must be sorted"
    );
    let after = arrivals_us.partition_point(|&t| t <= fault_at_us);
    if after == 0 || after == arrivals_us.len() {
        return None;
    }
    arrivals_us[after - 1..]
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
}

/// Summary statistics of outage samples, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MttrSummary {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub samples: usize,
}

impl MttrSummary {
    /// Summarise samples given in milliseconds (any order). Percentiles use the
    /// nearest-rank method, so every reported figure is an observed sample.
    pub fn from_ms(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return MttrSummary::default();
        }
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return MttrSummary::default();
        }
        let rank = |q: f64| {
            let index = (q * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        MttrSummary {
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            samples: sorted.len(),
        }
    }
}

/// Relative error of a prediction against a measurement, as a fraction
/// (`|predicted - measured| / measured`); `None` when the measurement is zero.
pub fn relative_error(predicted: f64, measured: f64) -> Option<f64> {
    (measured != 0.0).then(|| (predicted - measured).abs() / measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_gap_around_fault() {
        let arrivals = [0, 10, 20, 30, 250, 260];
        assert_eq!(flow_outage_us(&arrivals, 35), Some(220));
        // A probe in flight at the fault arrives just after it: the outage follows it.
        assert_eq!(flow_outage_us(&[0, 10, 20, 37, 250, 260], 35), Some(213));
        assert_eq!(
            flow_outage_us(&arrivals, 30),
            Some(220),
            "an arrival at the fault instant counts as before"
        );
        assert_eq!(flow_outage_us(&arrivals, 300), None, "never recovered");
        assert_eq!(flow_outage_us(&arrivals[4..], 35), None, "no baseline");
        assert_eq!(flow_outage_us(&[], 5), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = MttrSummary::from_ms(&samples);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max, s.samples),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert!((s.mean - 50.5).abs() < 1e-9);
        let one = MttrSummary::from_ms(&[7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(MttrSummary::from_ms(&[]).samples, 0);
    }

    #[test]
    fn relative_errors() {
        assert_eq!(relative_error(110.0, 100.0), Some(0.1));
        assert_eq!(relative_error(1.0, 0.0), None);
    }
}
