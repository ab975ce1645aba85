//! PPO routing agents in the twin: training is deterministic per seed and changes the
//! policy; a policy whose outputs are NaN is ignored, counted, and routes exactly as
//! ETX; the agents act through the protocol's link-risk hook (a policy that always
//! picks the largest multiplier raises links, and routes stay loop-free: every flow
//! heals).

use std::sync::Arc;

use x0tta6bl4_fl::ppo::PpoConfig;
use x0tta6bl4_proto::LinkCost;
use x0tta6bl4_twin::ppo;
use x0tta6bl4_twin::predict::Routing;
use x0tta6bl4_twin::topology::LinkParams;
use x0tta6bl4_twin::{Report, RunOptions, Scenario, Topology};

fn lossy_grid() -> Topology {
    let params = LinkParams {
        loss: 0.05,
        ..LinkParams::default()
    };
    Topology::grid(9, None, &params).unwrap()
}

fn options(routing: Routing) -> RunOptions {
    let mut options = RunOptions::new(5);
    options.iterations = 3;
    options.threads = 2;
    options.measurement.flows_max = 30;
    options.sim.protocol.link_cost = LinkCost::Etx;
    options.measurement.routing = routing;
    options
}

fn run(routing: Routing) -> Report {
    let scenario: Scenario = "degrade-then-fail:recover=0.5".parse().unwrap();
    x0tta6bl4_twin::run(
        &lossy_grid(),
        "grid:loss=0.05",
        &scenario,
        "degrade-then-fail:recover=0.5",
        &options(routing),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn training_is_deterministic_per_seed_and_learns_from_every_node() {
    let scenario: Scenario = "degrade-then-fail".parse().unwrap();
    let topologies = vec![("grid:loss=0.05".to_owned(), lossy_grid())];
    let train = |seed: u64| {
        let mut options = options(Routing::Etx);
        options.sim.seed = seed;
        let mut seen = 0;
        let (policy, reports) = ppo::train(
            &topologies,
            &scenario,
            &options,
            3,
            ppo::new_policy(seed),
            PpoConfig::default(),
            &mut |_| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, 3);
        (policy, reports)
    };
    let (policy, reports) = train(1);
    assert_ne!(policy, ppo::new_policy(1), "training changed the policy");
    for r in &reports {
        assert_eq!(r.participants, 9, "every node's update is averaged: {r:?}");
        assert!(r.steps > 0 && r.changes > 0, "{r:?}");
        assert!((0.0..=1.0).contains(&r.delivery_ratio), "{r:?}");
    }
    let (again, again_reports) = train(1);
    assert_eq!(again, policy, "same seed, same policy bit for bit");
    assert_eq!(format!("{again_reports:?}"), format!("{reports:?}"));
    assert_ne!(train(2).0.params, policy.params);
}

#[test]
fn nan_policy_outputs_are_ignored_counted_and_route_as_etx() {
    let mut policy = ppo::new_policy(1);
    policy.params.iter_mut().for_each(|p| *p = f32::NAN);
    let etx = run(Routing::Etx);
    let nan = run(Routing::Ppo(Arc::new(policy)));
    assert!(nan.routing.predictions > 0);
    assert_eq!(nan.routing.invalid_predictions, nan.routing.predictions);
    assert_eq!(nan.mttr_ms, etx.mttr_ms, "routing exactly as ETX");
    assert_eq!(nan.routing.sent, etx.routing.sent);
    assert_eq!(nan.routing.delivery_ratio, etx.routing.delivery_ratio);
    assert_eq!(nan.routing.needed_reroutes, etx.routing.needed_reroutes);
    assert_eq!(nan.routing.unneeded_predictor_reroutes_per_link_hour, 0.0);
}

#[test]
fn agents_raise_links_through_the_protocol_and_routes_stay_loop_free() {
    // Every action's logit is the bias: the last action (multiplier 8) always wins.
    let mut policy = ppo::new_policy(1);
    policy.params.iter_mut().for_each(|p| *p = 0.0);
    let actions = policy.multipliers.len();
    let hidden = policy.hidden;
    let bias_at = policy.inputs * hidden + hidden + hidden * hidden + hidden + hidden * actions;
    policy.params[bias_at + actions - 1] = 1.0;
    let raised = run(Routing::Ppo(Arc::new(policy)));
    assert_eq!(raised.routing.invalid_predictions, 0);
    assert!(raised.routing.predictions > 0);
    // Raises from 1 are observed as reroutes by the agents (the predictor's column).
    assert!(
        raised.routing.unneeded_predictor_reroutes_per_link_hour > 0.0,
        "{:?}",
        raised.routing
    );
    assert_eq!(raised.unhealed_flows, 0, "{raised:?}");
    assert_eq!(raised.unreachable_pairs_after_heal, 0, "{raised:?}");
}
