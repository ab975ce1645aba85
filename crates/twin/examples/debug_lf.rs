use std::time::Duration;
use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::check::walk;
use x0tta6bl4_twin::runner::{converge, iteration_seed};
use x0tta6bl4_twin::scenario::affected_flows;
use x0tta6bl4_twin::{Scenario, SimConfig, TopologySpec};
fn main() {
    let spec: TopologySpec = "random-geometric".parse().unwrap();
    let mut rng = Rng::seed(1 ^ 0x7070);
    let t = spec.build(100, &mut rng).unwrap();
    let (base, _) = converge(&t, &SimConfig::new(1), Duration::from_secs(10)).unwrap();
    let scenario: Scenario = "link-failure".parse().unwrap();
    let k = 1;
    let mut rng = Rng::seed(iteration_seed(1, k));
    let mut sim = base.clone();
    sim.reseed(rng.next_u64());
    let plan = scenario.plan(&sim, &mut rng);
    let flows = affected_flows(&sim, &plan, 100, &mut rng);
    println!("plan {:?}", plan.actions);
    for &l in &plan.disturbed_links {
        let link = &sim.links()[l as usize];
        println!("link {} {}-{}", l, sim.name(link.a), sim.name(link.b));
    }
    for &(s, d) in flows.iter().take(3) {
        println!("{} -> {}: {:?}", sim.name(s), sim.name(d), walk(&sim, s, d));
    }
}
