//! End-to-end runs on scikit-learn's digits (real data, tiny and fast): convergence,
//! an attack against FedAvg and a robust rule, DP accounting and budget, top-k bytes.

mod common;

use std::sync::Arc;

use x0tta6bl4_fl::bench::{self, AggregatorChoice, BenchConfig, BenchReport, DpTarget};
use x0tta6bl4_fl::compress::Compression;
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
        compression: Compression::default(),
        top_k_per_tensor: false,
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
        signed: false,
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
    cfg.compression.top_k = Some(0.05);
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
    cfg.compression.q8 = true;
    let q8 = run(&cfg).unwrap();
    assert!(q8.bytes_per_round < sparse.bytes_per_round);
    let mut mlp = base();
    mlp.model = ModelKind::Mlp { hidden: 32 };
    mlp.non_iid = Some(0.5);
    mlp.rounds = 4;
    assert!(run(&mlp).unwrap().final_accuracy > 0.5);
}

/// Every party signs with its own ECDSA P-256 key and checks the sender's: the same
/// training (signatures do not touch the models), every frame signed once and checked
/// by each receiver, nothing refused, and the cost reported.
#[test]
fn signed_frames_train_alike_and_their_cost_is_reported() {
    let mut cfg = base();
    cfg.rounds = 3;
    let Some(unsigned) = run(&cfg) else { return };
    assert!(unsigned.signing.is_none());
    cfg.signed = true;
    let signed = run(&cfg).unwrap();
    assert_eq!(signed.accuracy_per_round, unsigned.accuracy_per_round);
    assert!(signed.refusals.is_empty(), "{:?}", signed.refusals);
    let cost = signed.signing.expect("a signed run reports its cost");
    assert_eq!(cost.keys, 11);
    // Per round the coordinator signs a round start and one model chunk (the same
    // frames go to all 10), each participant signs its one-chunk update; each of the
    // 10 checks both coordinator frames, the coordinator checks the 10 updates.
    assert_eq!(cost.signatures, 3 * (2 + 10), "{cost:?}");
    assert_eq!(cost.verifications, 3 * (10 * 2 + 10), "{cost:?}");
    assert!(
        cost.sign_seconds > 0.0 && cost.verify_seconds > 0.0,
        "{cost:?}"
    );
    // DER ECDSA P-256 signatures are 70-72 bytes.
    let per = cost.signature_bytes as f64 / cost.signatures as f64;
    assert!((68.0..=72.0).contains(&per), "{per}");
    assert!(signed.bytes_per_round > unsigned.bytes_per_round);
}
