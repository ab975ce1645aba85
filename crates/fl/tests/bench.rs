//! End-to-end runs on scikit-learn's digits (real data, tiny and fast): convergence,
//! an attack against FedAvg and a robust rule, DP accounting and budget, top-k bytes.

mod common;

use std::sync::Arc;

use x0tta6bl4_fl::bench::{self, AggregatorChoice, BenchConfig, BenchReport, DpTarget};
use x0tta6bl4_fl::data::Dataset;
use x0tta6bl4_fl::model::{ModelKind, TrainConfig};
use x0tta6bl4_fl::{AttackKind, AttackParams, ServerOptimizer};

fn base() -> BenchConfig {
    BenchConfig {
        dataset: "digits".into(),
        participants: 10,
        per_round: 10,
        byzantine: 0.0,
        attack: AttackKind::None,
        attack_params: AttackParams::default(),
        aggregator: AggregatorChoice::FedAvg,
        assumed_f: None,
        dp: None,
        top_k: None,
        q8: false,
        non_iid: None,
        rounds: 8,
        seed: 1,
        model: ModelKind::LogReg,
        train: TrainConfig {
            epochs: 1,
            batch: 16,
            lr: 0.2,
            momentum: 0.0,
        },
        server: ServerOptimizer::default(),
        target: 0.85,
        root_size: 100,
    }
}

fn run(cfg: &BenchConfig) -> Option<BenchReport> {
    let dir = common::data_dir("digits")?;
    let train = Arc::new(Dataset::load(&dir, "digits", "train").unwrap());
    let test = Dataset::load(&dir, "digits", "test").unwrap();
    Some(bench::run(cfg, train, &test, &mut |_| {}).unwrap())
}

#[test]
fn fedavg_learns_digits_and_is_deterministic() {
    let Some(a) = run(&base()) else { return };
    assert!(a.final_accuracy > 0.85, "{:?}", a.accuracy_per_round);
    assert!(a.rounds_to_target.is_some());
    assert_eq!(a.accuracy_per_round.len(), 8);
    let b = run(&base()).unwrap();
    assert_eq!(a.accuracy_per_round, b.accuracy_per_round);
    assert!(a.refusals.is_empty());
}

#[test]
fn sign_flip_breaks_fedavg_not_median() {
    let mut cfg = base();
    cfg.byzantine = 0.3;
    cfg.attack = AttackKind::SignFlip;
    let Some(fedavg) = run(&cfg) else { return };
    cfg.aggregator = AggregatorChoice::Median;
    let median = run(&cfg).unwrap();
    assert!(
        median.final_accuracy > 0.8,
        "median {:?}",
        median.accuracy_per_round
    );
    assert!(
        fedavg.final_accuracy + 0.3 < median.final_accuracy,
        "fedavg {} median {}",
        fedavg.final_accuracy,
        median.final_accuracy
    );
}

#[test]
fn colluding_attackers_run_against_multi_krum() {
    for attack in [AttackKind::Alie, AttackKind::Ipm] {
        let mut cfg = base();
        cfg.byzantine = 0.3;
        cfg.attack = attack;
        cfg.aggregator = AggregatorChoice::MultiKrum;
        cfg.rounds = 4;
        let Some(r) = run(&cfg) else { return };
        assert_eq!(r.rounds, 4);
        assert!(
            r.final_accuracy > 0.7,
            "{attack}: {:?}",
            r.accuracy_per_round
        );
    }
}

#[test]
fn dp_reports_epsilon_within_budget_and_stops_at_it() {
    let mut cfg = base();
    cfg.participants = 20;
    cfg.per_round = 10;
    cfg.rounds = 5;
    cfg.dp = Some(DpTarget {
        epsilon: 2.0,
        delta: 1e-5,
        clip: 1.0,
    });
    let Some(r) = run(&cfg) else { return };
    let eps = r.epsilon.unwrap();
    assert!(eps <= 2.0 && eps > 1.9, "{eps}");
    assert_eq!(r.epsilon_per_round.len(), 5);
    assert!(r.epsilon_per_round.windows(2).all(|w| w[0] < w[1]));
    assert!(!r.budget_exhausted);
}

#[test]
fn top_k_sends_far_fewer_bytes() {
    let mut cfg = base();
    cfg.top_k = Some(0.05);
    let Some(sparse) = run(&cfg) else { return };
    assert!(
        sparse.bytes_per_round * 5.0 < sparse.dense_bytes_per_round,
        "{sparse:?}"
    );
    assert!(
        sparse.final_accuracy > 0.6,
        "{:?}",
        sparse.accuracy_per_round
    );
    cfg.q8 = true;
    let q8 = run(&cfg).unwrap();
    assert!(q8.bytes_per_round < sparse.bytes_per_round);
    let mut mlp = base();
    mlp.model = ModelKind::Mlp { hidden: 32 };
    mlp.non_iid = Some(0.5);
    mlp.rounds = 4;
    assert!(run(&mlp).unwrap().final_accuracy > 0.5);
}
