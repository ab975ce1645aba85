//! Link-failure prediction in the twin: the degrade-then-fail scenario is deterministic
//! per seed and has both kinds of ramp; a predictor trained federatedly on its
//! iterations moves flows before the cut (lower MTTR than the measured cost alone); a
//! predictor whose outputs are NaN is ignored, counted, and leaves routing exactly as
//! without one.

use std::sync::Arc;

use x0tta6bl4_fl::linkpredict::{spec, FedTrainConfig, PredictorModel};
use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::predict::{self, Routing};
use x0tta6bl4_twin::runner::converge;
use x0tta6bl4_twin::scenario::Action;
use x0tta6bl4_twin::topology::LinkParams;
use x0tta6bl4_twin::{Report, RunOptions, Scenario, SimConfig, Topology};

fn grid() -> Topology {
    Topology::grid(16, None, &LinkParams::default()).unwrap()
}

#[test]
fn degrade_then_fail_ramps_fail_or_recover_deterministically() {
    let scenario: Scenario = "degrade-then-fail:recover=0.5".parse().unwrap();
    assert!("degrade-then-fail:recover=2".parse::<Scenario>().is_err());
    assert!("degrade-then-fail:ramp_min_ms=900,ramp_max_ms=500"
        .parse::<Scenario>()
        .is_err());
    let (sim, _) = converge(
        &grid(),
        &SimConfig::new(3),
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let (mut failed, mut recovered) = (0, 0);
    for seed in 0..12 {
        let plan = scenario.plan(&sim, &mut Rng::seed(seed));
        let again = scenario.plan(&sim, &mut Rng::seed(seed));
        assert_eq!(
            format!("{:?}", plan.actions),
            format!("{:?}", again.actions)
        );
        let ramp: Vec<f64> = plan
            .actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Ramp(_, loss, _) => Some(*loss),
                _ => None,
            })
            .collect();
        assert!(ramp.len() >= 20, "a ramp of at least 1 s in 50 ms steps");
        let peak = ramp.iter().copied().fold(0.0, f64::max);
        assert!((0.2 - 1e-9..=0.6 + 1e-9).contains(&peak), "peak {peak}");
        match plan.actions.last().unwrap().1 {
            Action::LinkDown(_) => failed += 1,
            Action::Ramp(_, loss, _) => {
                assert_eq!(loss, 0.0, "back to the link's own loss");
                recovered += 1;
            }
            ref other => panic!("ends with {other:?}"),
        }
        assert_eq!(
            predict::cut_offsets(&plan).len(),
            usize::from(matches!(
                plan.actions.last().unwrap().1,
                Action::LinkDown(_)
            ))
        );
    }
    assert!(
        failed > 0 && recovered > 0,
        "{failed} failed, {recovered} recovered"
    );
}

fn options(routing: Routing) -> RunOptions {
    let mut options = RunOptions::new(7);
    options.iterations = 4;
    options.threads = 2;
    options.measurement.flows_max = 40;
    options.measurement.routing = routing;
    options
}

/// A twin run of `scenario` on the grid with `routing`.
fn run_on(topology: &Topology, scenario: &Scenario, routing: Routing) -> Report {
    x0tta6bl4_twin::run(
        topology,
        "grid",
        scenario,
        "dtf",
        &options(routing),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn a_trained_predictor_moves_flows_before_the_cut() {
    let topology = grid();
    let scenario: Scenario = "degrade-then-fail:recover=0".parse().unwrap();
    let mut train_options = RunOptions::new(1);
    train_options.threads = 2;
    let cfg = FedTrainConfig {
        rounds: 10,
        ..FedTrainConfig::default()
    };
    let (model, report) =
        predict::train(&topology, &scenario, &train_options, 0..8, 8..10, cfg).unwrap();
    assert_eq!(report.participants, 16, "every node is a participant");
    assert!(report.recall > 0.3, "{report:?}");
    let run = |routing| run_on(&topology, &scenario, routing);
    let cost = run(Routing::Cost);
    let predicted = run(Routing::Predict(Arc::new(model)));
    for r in [&cost, &predicted] {
        assert_eq!(r.unhealed_flows, 0);
        assert!(r.mttr_ms.samples > 0);
        assert!(r.routing.delivery_ratio > 0.5, "{:?}", r.routing);
        assert!(r.routing.latency_p95_ms > 0.0);
    }
    assert_eq!(cost.routing.predictions, 0);
    assert!(
        predicted.routing.needed_reroutes > 0,
        "{:?}",
        predicted.routing
    );
    assert!(
        predicted.mttr_ms.p95 < cost.mttr_ms.p95,
        "predict {:?} vs cost {:?}",
        predicted.mttr_ms,
        cost.mttr_ms
    );
}

#[test]
fn nan_predictions_are_ignored_counted_and_change_nothing() {
    let topology = grid();
    let scenario: Scenario = "degrade-then-fail:recover=0.5".parse().unwrap();
    let model = PredictorModel {
        horizon_ms: 2_000,
        sample_interval_ms: 100,
        window: 10,
        threshold: 0.5,
        params: vec![f32::NAN; spec().num_params()],
    };
    let run = |routing| run_on(&topology, &scenario, routing);
    let cost = run(Routing::Cost);
    let nan = run(Routing::Predict(Arc::new(model)));
    assert!(nan.routing.predictions > 0);
    assert_eq!(nan.routing.invalid_predictions, nan.routing.predictions);
    assert_eq!(
        nan.mttr_ms, cost.mttr_ms,
        "routing exactly as without a predictor"
    );
    assert_eq!(nan.routing.sent, cost.routing.sent);
    assert_eq!(nan.routing.needed_reroutes, cost.routing.needed_reroutes);
}
