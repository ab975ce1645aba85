//! Diagnostic: time the phases of a twin run (convergence, one iteration).
use std::time::Duration;
use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::scenario::{affected_flows, run_iteration, Measurement};
use x0tta6bl4_twin::{LinkParams, Scenario, SimConfig, Topology};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut rng = Rng::seed(1);
    let t =
        Topology::erdos_renyi(n, 4.0 / (n as f64 - 1.0), &mut rng, &LinkParams::default()).unwrap();
    let w = std::time::Instant::now();
    let (base, took) =
        x0tta6bl4_twin::runner::converge(&t, &SimConfig::new(1), Duration::from_secs(10)).unwrap();
    println!(
        "converged in {took:?} simulated, wall {:?}, events {}",
        w.elapsed(),
        base.stats().events
    );
    let scenario: Scenario = "node-failure".parse().unwrap();
    for k in 0..4 {
        let w = std::time::Instant::now();
        let mut sim = base.clone();
        let t_clone = w.elapsed();
        let plan = scenario.plan(&sim, &mut rng);
        let flows = affected_flows(&sim, &plan, 100, &mut rng);
        let t_flows = w.elapsed();
        let before = sim.stats().events;
        let r = run_iteration(&mut sim, &plan, &flows, &Measurement::default(), &mut rng);
        println!("iteration {k}: clone {t_clone:?} flows {t_flows:?} total {:?} sim {:?} events {} outages {} unhealed {}", w.elapsed(), r.sim_time, sim.stats().events - before, r.outages.len(), r.unhealed_flows);
    }
}
