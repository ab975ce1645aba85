//! `Node::set_config`: a running node takes new settings (a configuration reload) and
//! refuses invalid ones and those fixed at construction, keeping the old.

mod common;

use std::time::Duration;

use common::{name, Mesh};
use x0tta6bl4_proto::Config;

/// Frames node 0 sent over `duration` (its probes and its answers to node 1's).
fn frames_sent(mesh: &mut Mesh, duration: Duration) -> u64 {
    let before = mesh.nodes[0].stats().frames_sent;
    mesh.run_for(duration);
    mesh.nodes[0].stats().frames_sent - before
}

#[test]
fn a_running_node_takes_a_new_probe_interval_and_refuses_bad_settings() {
    let mut mesh = Mesh::new(2, Config::default(), 3);
    mesh.connect(0, 1, Duration::from_millis(1));
    mesh.run_until(Duration::from_secs(5), |m| m.converged());
    let fast = frames_sent(&mut mesh, Duration::from_secs(10));

    let mut slow = mesh.nodes[0].config().clone();
    slow.probe_interval_ms = 1_000;
    let now = mesh.now;
    for node in &mut mesh.nodes {
        let mut slow = slow.clone();
        slow.rng_seed = node.config().rng_seed;
        slow.initial_sequence = node.config().initial_sequence;
        node.set_config(slow, now).unwrap();
    }
    assert_eq!(mesh.nodes[0].config().probe_interval_ms, 1_000);
    mesh.run_for(Duration::from_secs(2));
    let slowed = frames_sent(&mut mesh, Duration::from_secs(10));
    // 50 ms: ~200 probes and ~200 answers in 10 s; 1 s: ~10 and ~10.
    assert!(
        slowed * 5 < fast,
        "frames in 10 s: {fast} at 50 ms probes, {slowed} at 1000 ms"
    );
    assert!(
        mesh.nodes[0].routes().get(&name(1)).is_some(),
        "still linked"
    );

    // Faster again: the next probe round is brought forward, not left 1 s away.
    let mut fast_again = mesh.nodes[0].config().clone();
    fast_again.probe_interval_ms = 20;
    let now = mesh.now;
    mesh.nodes[0].set_config(fast_again, now).unwrap();
    assert!(mesh.nodes[0].poll_timeout().unwrap() <= now + Duration::from_millis(20));

    let before = mesh.nodes[0].config().clone();
    let mut invalid = before.clone();
    invalid.probe_interval_ms = 1;
    let e = mesh.nodes[0].set_config(invalid, now).unwrap_err();
    assert_eq!(e.key, "probe_interval_ms");
    let mut fixed = before.clone();
    fixed.lsdb_entries_max += 1;
    let e = mesh.nodes[0].set_config(fixed, now).unwrap_err();
    assert_eq!(e.key, "lsdb_entries_max");
    assert!(e.fix.contains("restart"), "{}", e.fix);
    assert_eq!(
        mesh.nodes[0].config(),
        &before,
        "a refused config changes nothing"
    );
}
