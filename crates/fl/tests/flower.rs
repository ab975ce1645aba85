//! Differential test: every aggregation rule Flower has gives Flower's result to 1e-6
//! on the same updates (Flower's own `flwr.server.strategy.aggregate` functions).

mod common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use x0tta6bl4_fl::aggregate::{AggregatorKind, Context, Update};

fn updates(seed: u64, n: usize, d: usize) -> Vec<Update> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            // Honest updates around a common direction, the last three far off.
            let offset = if i + 3 >= n { 5.0 } else { 0.0 };
            Update {
                values: (0..d)
                    .map(|j| (j as f32 * 0.01).sin() + offset + rng.random_range(-0.5f32..0.5))
                    .collect(),
                num_samples: rng.random_range(10..500),
            }
        })
        .collect()
}

#[test]
fn aggregators_match_flower() {
    for (seed, n, d) in [(1u64, 11usize, 40usize), (2, 12, 25), (3, 15, 7)] {
        let ups = updates(seed, n, d);
        let (f, beta, m) = (2usize, 0.2f64, n - 2);
        let input = serde_json::json!({
            "updates": ups.iter().map(|u| u.values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "num_samples": ups.iter().map(|u| u.num_samples).collect::<Vec<_>>(),
            "f": f, "beta": beta, "m": m,
        });
        let Some(reference) = common::reference("flower", &input, "flwr") else {
            return;
        };
        let rules = [
            ("fedavg", AggregatorKind::FedAvg),
            ("median", AggregatorKind::Median),
            ("trimmed_mean", AggregatorKind::TrimmedMean { beta }),
            ("krum", AggregatorKind::Krum { f }),
            ("multi_krum", AggregatorKind::MultiKrum { f, m }),
            ("bulyan", AggregatorKind::Bulyan { f }),
        ];
        for (key, kind) in rules {
            let ours = kind
                .build()
                .aggregate(&ups, &Context::default())
                .unwrap()
                .values;
            let theirs: Vec<f64> = serde_json::from_value(reference[key].clone()).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{key}");
            for (j, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
                let err = (f64::from(a) - b).abs() / b.abs().max(1.0);
                assert!(
                    err <= 1e-6,
                    "{key} (seed {seed}) coordinate {j}: ours {a}, Flower {b}"
                );
            }
        }
    }
}
