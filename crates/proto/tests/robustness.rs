//! Regression tests of "Robustness under attack and faults": a damped neighbour that
//! dies must not wedge the node, revocations reach nodes that missed their flood, and a
//! peer that keeps refusing us is redialed with a growing delay.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{damped_triangle, name, Mesh, SECRET};
use x0tta6bl4_proto::{Config, DropReason, Event, Instant, Node, RevokeOutcome, SimAuthenticator};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn a_damped_neighbour_that_dies_does_not_wedge_the_node() {
    let mut mesh = damped_triangle();
    mesh.crash(2);
    // Past the longest damping period: before the fix, node 0's damping timer stayed
    // armed at an instant in the past once node 2 was down, and the harness's liveness
    // check (no timer due again right after `handle_timeout`) failed.
    let events_before = mesh.events.len();
    mesh.run_for(ms(70_000));
    let per_second = (mesh.events.len() - events_before) as f64 / 70.0;
    assert!(
        per_second < 50.0,
        "{per_second:.0} events per simulated second on a quiet 2-node mesh"
    );
    assert!(mesh.nodes[0].routes().get(&name(2)).is_none());
    assert_eq!(mesh.walk(0, 1), Some(vec![0, 1]));
    // Node 2 returns long after its damping ended: it is used again at once.
    mesh.restart(2);
    mesh.run_until(ms(2_000), |m| m.walk(0, 2) == Some(vec![0, 2]));
}

#[test]
fn a_neighbour_restarted_before_its_silence_was_noticed_gets_the_database() {
    let mut mesh = Mesh::new(3, Config::default(), 7);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    assert!(mesh.converged());
    // Killed and back within one probe interval: node 1 still holds the old link as
    // up when the new one arrives. Before the fix node 1 offered its database only on
    // a neighbour's first sign of life after down, so the new node 2 held nothing
    // but its own advertisement until node 1 happened to take the link down and up again (here its
    // outage detection, ~80 ms later; in the twin's fuzz, seeds 319, 594 and 780, never).
    // Now the new link brings the database within a few round trips.
    mesh.crash(2);
    mesh.run_for(ms(20));
    mesh.restart_unnoticed(2);
    mesh.run_until(ms(40), |m| m.walk(2, 0) == Some(vec![2, 1, 0]));
}

fn revocation_of(target: usize) -> Vec<u8> {
    SimAuthenticator::new(SECRET, name(0)).revocation(&name(target))
}

/// Nobody but `revoked` routes to `revoked`, and no one holds its advertisement.
fn cut_off_everywhere(mesh: &Mesh, revoked: usize) -> bool {
    (0..mesh.nodes.len())
        .filter(|&i| i != revoked && mesh.alive[i])
        .all(|i| {
            let node = &mesh.nodes[i];
            node.is_revoked(&name(revoked))
                && node.routes().get(&name(revoked)).is_none()
                && node.lsdb().get(&name(revoked)).is_none()
                && node
                    .routes()
                    .iter()
                    .all(|(_, route)| route.next_hop != name(revoked))
        })
}

#[test]
fn a_revocation_floods_and_cuts_the_node_off() {
    // A ring of 6: node 3 is revoked at node 0, three hops away.
    let mut mesh = Mesh::new(6, Config::default(), 21);
    for i in 0..6 {
        mesh.connect(i, (i + 1) % 6, ms(2));
    }
    mesh.run_until(ms(3_000), Mesh::converged);
    let now = mesh.now;
    let outcome = mesh.nodes[0].revoke(now, &revocation_of(3)).unwrap();
    assert_eq!(outcome, RevokeOutcome::New(name(3)));
    mesh.drain(0);
    let took = mesh.run_until(ms(1_000), |m| cut_off_everywhere(m, 3));
    println!("revocation flooded and applied at every node in {took:?}");
    // The ring is now a line through 0: 2 and 4 reach each other the long way.
    mesh.run_for(ms(500));
    assert_eq!(mesh.walk(2, 4), Some(vec![2, 1, 0, 5, 4]));
    // The revoked node keeps probing its old neighbours: they refuse it, counted.
    assert!(mesh.nodes[2].stats().dropped(DropReason::Revoked) > 0);
    // A second copy is known, not news; a forged one is refused.
    let again = mesh.nodes[1].revoke(mesh.now, &revocation_of(3)).unwrap();
    assert_eq!(again, RevokeOutcome::Known(name(3)));
    let mut forged = revocation_of(4);
    forged[28] ^= 0x20;
    assert!(mesh.nodes[1].revoke(mesh.now, &forged).is_err());
    assert!(!mesh.nodes[1].is_revoked(&name(4)));
}

#[test]
fn a_node_down_during_the_flood_learns_the_revocation_on_its_first_link() {
    // Line 0 - 1 - 2 - 3 with 4 hanging off 2 and 3: node 2 is down while node 4 is
    // revoked; when 2 returns, its first link (to 1) hands it the revocation, so 4 cannot
    // re-enter the mesh through it.
    let mut mesh = Mesh::new(5, Config::default(), 5);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.connect(2, 3, ms(1));
    mesh.connect(2, 4, ms(1));
    mesh.connect(3, 4, ms(1));
    mesh.run_until(ms(3_000), Mesh::converged);
    mesh.crash(2);
    mesh.run_for(ms(500));
    mesh.nodes[0].revoke(mesh.now, &revocation_of(4)).unwrap();
    mesh.drain(0);
    mesh.run_for(ms(500));
    assert!(mesh.nodes[1].is_revoked(&name(4)));
    // 3 and 4 are cut off from 0 and 1 while 2 is down: only 2's return carries it over.
    assert!(!mesh.nodes[3].is_revoked(&name(4)));
    let restarted_at = mesh.now;
    mesh.restart(2);
    assert!(
        !mesh.nodes[2].is_revoked(&name(4)),
        "a fresh process holds nothing"
    );
    let took = mesh.run_until(ms(1_000), |m| m.nodes[2].is_revoked(&name(4)));
    println!("the returning node held the revocation {took:?} after its links came up");
    assert!(took <= ms(100), "learnt within one link-up, took {took:?}");
    mesh.run_for(ms(1_000));
    assert!(cut_off_everywhere(&mesh, 4));
    assert!(mesh.nodes[2].stats().revocations_installed == 1);
    assert!(mesh.now > restarted_at);
}

#[test]
fn anti_entropy_repairs_a_lost_flood() {
    // Node 1 misses the flood (its link to 0 drops frames for a while); the periodic
    // digest exchange delivers the revocation without any link going down.
    let config = Config {
        revocation_sync_ms: 1_000,
        ..Config::default()
    };
    let mut mesh = Mesh::new(3, config, 77);
    mesh.connect(0, 1, ms(1));
    mesh.connect(0, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh.cut(0, 1);
    mesh.nodes[0].revoke(mesh.now, &revocation_of(2)).unwrap();
    mesh.drain(0);
    mesh.run_for(ms(60)); // shorter than the dead interval: the link stays up
    mesh.repair(0, 1);
    assert!(!mesh.nodes[1].is_revoked(&name(2)));
    let took = mesh.run_until(ms(3_000), |m| m.nodes[1].is_revoked(&name(2)));
    println!("anti-entropy delivered the lost revocation after {took:?}");
}

#[test]
fn a_peer_that_keeps_refusing_us_is_redialed_with_a_growing_delay() {
    let config = Config::default();
    let me = name(0);
    let auth = SimAuthenticator::new(SECRET, me.clone());
    let mut now = Instant::from_micros(1_000_000);
    let mut node = Node::new(me, config.clone(), auth, now).unwrap();
    let addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    node.add_peer(now, addr);
    let mut dial_times = Vec::new();
    let end = now + Duration::from_secs(30);
    while now < end && dial_times.len() < 40 {
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        let mut dialed = false;
        while let Some(event) = node.poll_event() {
            dialed |= matches!(event, Event::Dial { .. });
        }
        if dialed {
            dial_times.push(now);
            // The handshake completes, then the peer closes: it does not trust us.
            node.handle_link_up(now, name(1), Some(addr));
            node.handle_link_down(now, &name(1));
        }
        now = node
            .poll_timeout()
            .unwrap()
            .max(now + Duration::from_micros(1));
    }
    let gaps: Vec<u64> = dial_times
        .windows(2)
        .map(|w| w[1].saturating_since(w[0]).as_millis() as u64)
        .collect();
    println!("redial gaps (ms): {gaps:?}");
    assert!(
        dial_times.len() <= 25,
        "{} dials in 30 s: no backoff",
        dial_times.len()
    );
    assert!(
        gaps.iter()
            .rev()
            .take(3)
            .all(|&g| g >= config.dial_backoff_max_ms / 2),
        "the delay grows to the maximum: {gaps:?}"
    );
}

#[test]
fn a_removed_peer_address_is_not_redialed() {
    let me = name(0);
    let auth = SimAuthenticator::new(SECRET, me.clone());
    let mut now = Instant::from_micros(1_000_000);
    let mut node = Node::new(me, Config::default(), auth, now).unwrap();
    let (old, new): (SocketAddr, SocketAddr) = (
        "10.0.0.1:7001".parse().unwrap(),
        "10.0.0.2:7001".parse().unwrap(),
    );
    node.add_peer(now, old);
    let dials = |node: &mut Node, now: Instant| {
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        let mut dialed = Vec::new();
        while let Some(event) = node.poll_event() {
            if let Event::Dial { addr } = event {
                dialed.push(addr);
            }
        }
        dialed
    };
    assert_eq!(dials(&mut node, now), vec![old]);
    node.handle_link_up(now, name(1), Some(old));
    // The peer's name now resolves elsewhere (a recreated pod): the old address is
    // taken back while its link is still open, the new one added.
    node.remove_peer(old);
    node.add_peer(now, new);
    assert_eq!(dials(&mut node, now), vec![new]);
    node.handle_link_down(now, &name(1));
    let end = now + Duration::from_secs(30);
    let mut redialed = Vec::new();
    while now < end {
        now = node
            .poll_timeout()
            .unwrap()
            .max(now + Duration::from_micros(1));
        redialed.extend(dials(&mut node, now));
    }
    assert!(!redialed.contains(&old), "the removed address was redialed");
}
