//! `Node::set_link_risk` (the healing loop's input from a link-failure predictor) and
//! the `etx` link cost: a raised link is routed around at once and given back when the
//! factor returns to 1; bad factors change nothing; without either, costs are as before.

mod common;

use std::time::Duration;

use common::{name, Mesh};
use x0tta6bl4_proto::{Config, LinkCost};

fn triangle(config: Config) -> Mesh {
    let mut mesh = Mesh::new(3, config, 7);
    for (a, b) in [(0, 1), (1, 2), (0, 2)] {
        mesh.connect(a, b, Duration::from_millis(1));
    }
    mesh.run_until(Duration::from_secs(5), |m| m.converged());
    mesh
}

fn next_hop(mesh: &Mesh, from: usize, to: usize) -> usize {
    let route = mesh.nodes[from].routes().get(&name(to)).expect("a route");
    mesh.index(&route.next_hop)
}

#[test]
fn a_raised_link_is_routed_around_and_given_back() {
    let mut mesh = triangle(Config::default());
    assert_eq!(next_hop(&mesh, 0, 1), 1, "direct before");
    let measured = mesh.nodes[0].neighbours()[0].cost;
    let before = mesh.nodes[0].stats().lsa_originated;

    let now = mesh.now;
    assert!(mesh.nodes[0].set_link_risk(now, &name(1), 20.0));
    assert!(
        !mesh.nodes[0].set_link_risk(now, &name(1), 20.0),
        "no change"
    );
    mesh.drain(0);
    // Well within cost_update_interval_ms (1 s): the raise floods at once.
    mesh.run_for(Duration::from_millis(30));
    assert!(mesh.nodes[0].stats().lsa_originated > before);
    assert_eq!(next_hop(&mesh, 0, 1), 2, "around the raised link");
    let features = mesh.nodes[0].link_features(&name(1)).unwrap();
    assert!(features.up && features.risk_factor == 20.0);
    assert!(features.srtt.is_some());

    let now = mesh.now;
    for bad in [f64::NAN, f64::INFINITY, 0.5, 0.0, -3.0, 1e9] {
        assert!(!mesh.nodes[0].set_link_risk(now, &name(1), bad), "{bad}");
    }
    assert!(!mesh.nodes[0].set_link_risk(now, &name(9), 2.0), "unknown");
    assert_eq!(
        mesh.nodes[0].link_features(&name(1)).unwrap().risk_factor,
        20.0,
        "a refused factor changes nothing"
    );

    assert!(mesh.nodes[0].set_link_risk(now, &name(1), 1.0));
    mesh.drain(0);
    mesh.run_for(Duration::from_millis(30));
    assert_eq!(next_hop(&mesh, 0, 1), 1, "direct again");
    assert_eq!(mesh.nodes[0].stats().risk_cost_changes, 2);
    let cost = mesh.nodes[0].neighbours()[0].cost;
    assert!(cost.abs_diff(measured) <= 1, "{cost} vs {measured}");
}

#[test]
fn etx_costs_ten_per_expected_transmission() {
    let config = Config {
        link_cost: LinkCost::Etx,
        ..Config::default()
    };
    let mut mesh = triangle(config);
    assert!(mesh.nodes[0].neighbours().iter().all(|n| n.cost == 10));
    mesh.set_loss(0, 1, 0.3);
    mesh.run_for(Duration::from_secs(3));
    let lossy = mesh.nodes[0].neighbours()[0].clone();
    assert_eq!(lossy.name, name(1));
    // Round trip delivery (0.7 * 0.7 = 0.49): ETX near 2, cost near 20, times 10 as
    // the healing loop marks a link losing more than 20 % degraded.
    assert!(lossy.loss > 0.2, "{lossy:?}");
    let expected = (10.0 / (1.0 - lossy.loss) * 10.0).round() as u32;
    assert_eq!(lossy.cost, expected, "loss {}", lossy.loss);
    // The default keeps the measured cost: 10 per hop plus RTT, never plain ETX.
    assert_eq!(Config::default().link_cost, LinkCost::Measured);
}
