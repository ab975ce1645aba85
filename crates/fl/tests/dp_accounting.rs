//! Differential test: the RDP accountant gives Google's dp-accounting epsilon to 1e-6
//! relative on a grid of (q, sigma, steps).

mod common;

use x0tta6bl4_fl::dp::{default_orders, epsilon_from_rdp, rdp_subsampled_gaussian, RdpAccountant};

#[test]
fn accountant_matches_dp_accounting() {
    let delta = 1e-5;
    let mut cases = Vec::new();
    for q in [0.001, 0.02, 0.2, 1.0] {
        for sigma in [0.6, 1.1, 3.0, 8.0] {
            for steps in [1u64, 100, 10000] {
                cases.push((q, sigma, steps));
            }
        }
    }
    let input = serde_json::json!({ "delta": delta, "cases": cases });
    let Some(reference) = common::reference("dp", &input, "dp-accounting") else {
        return;
    };
    let theirs: Vec<f64> = serde_json::from_value(reference["epsilon"].clone()).unwrap();
    assert_eq!(theirs.len(), cases.len());
    let orders = default_orders();
    let mut step = (f64::NAN, f64::NAN, Vec::new());
    for (&(q, sigma, steps), &want) in cases.iter().zip(&theirs) {
        // One step's RDP per (q, sigma), composed linearly over steps, exactly as the
        // accountant's compose does (checked on the first case of each pair).
        if (step.0, step.1) != (q, sigma) {
            step = (q, sigma, rdp_subsampled_gaussian(q, sigma, &orders));
            let mut acc = RdpAccountant::new();
            acc.compose(q, sigma, steps);
            let direct = acc.epsilon(delta);
            let rdp: Vec<f64> = step.2.iter().map(|r| r * steps as f64).collect();
            assert_eq!(direct, epsilon_from_rdp(&orders, &rdp, delta).0);
        }
        let rdp: Vec<f64> = step.2.iter().map(|r| r * steps as f64).collect();
        let got = epsilon_from_rdp(&orders, &rdp, delta).0;
        let rel = (got - want).abs() / want.abs().max(1e-12);
        assert!(
            rel <= 1e-6 || (got - want).abs() < 1e-12,
            "q={q} sigma={sigma} steps={steps}: ours {got}, dp-accounting {want}"
        );
    }
}
