//! Scenario tests: several protocol instances driven in memory, step by step.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{name, Mesh, SECRET};
use proptest::prelude::*;
use x0tta6bl4_proto::wire::{Data, Lsa, LsaLink, Message, SignedLsa};
use x0tta6bl4_proto::{
    Authenticator, Config, DecisionKind, DropReason, Event, SendError, SimAuthenticator,
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn converges_on_random_topologies_without_loops() {
    for seed in 0..8 {
        let mut mesh = Mesh::random_connected(12, 6, Config::default(), seed);
        let took = mesh.run_until(ms(2_000), Mesh::converged);
        assert!(
            took < ms(1_000),
            "seed {seed}: converged only after {took:?}"
        );
        mesh.run_for(ms(500));
        assert!(mesh.converged(), "seed {seed}: stays converged");
        let digest = mesh.nodes[0].lsdb().digest();
        for node in &mesh.nodes {
            assert_eq!(node.lsdb().digest(), digest, "seed {seed}: databases agree");
        }
    }
}

#[test]
fn route_costs_match_the_path_walked() {
    let mut mesh = Mesh::random_connected(10, 5, Config::default(), 42);
    mesh.run_until(ms(2_000), Mesh::converged);
    for i in 0..10 {
        for j in 0..10 {
            if i == j {
                continue;
            }
            let path = mesh.walk(i, j).unwrap();
            let route = mesh.nodes[i].routes().get(&name(j)).unwrap();
            assert_eq!(route.hops as usize, path.len() - 1);
        }
    }
}

#[test]
fn reroutes_around_a_crashed_node() {
    // A ring of 6: every pair has two disjoint paths.
    let mut mesh = Mesh::new(6, Config::default(), 1);
    for i in 0..6 {
        mesh.connect(i, (i + 1) % 6, ms(1));
    }
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh.run_for(ms(300));
    mesh.crash(3);
    let took = mesh.run_until(ms(2_000), Mesh::converged);
    // Detection is bounded by probe_interval * probe_misses_max (150 ms by default)
    // plus jitter, flooding and the route computation delay.
    assert!(took < ms(300), "healed only after {took:?}");
    assert_eq!(mesh.walk(2, 4).unwrap(), vec![2, 1, 0, 5, 4]);
    let withdrawals = mesh
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Healing(d) if d.kind == DecisionKind::Withdraw && d.neighbour == name(3)))
        .count();
    assert_eq!(
        withdrawals, 2,
        "both neighbours of the crashed node withdraw it"
    );
}

#[test]
fn reroutes_around_a_silently_failed_link() {
    let mut mesh = Mesh::new(4, Config::default(), 2);
    // Square 0-1-2-3-0 plus a diagonal 0-2.
    for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)] {
        mesh.connect(a, b, ms(1));
    }
    mesh.run_until(ms(2_000), Mesh::converged);
    assert_eq!(mesh.walk(0, 2).unwrap(), vec![0, 2]);
    mesh.cut(0, 2);
    let took = mesh.run_until(ms(2_000), Mesh::converged);
    assert!(took < ms(300), "healed only after {took:?}");
    assert_eq!(mesh.walk(0, 2).unwrap().len(), 3);
    mesh.repair(0, 2);
    // The link comes back at the next probe: the neighbour is heard again.
    mesh.run_until(ms(2_000), |m| m.walk(0, 2) == Some(vec![0, 2]));
}

#[test]
fn messages_travel_hop_by_hop_and_report_hops() {
    let mut mesh = Mesh::new(4, Config::default(), 3);
    for i in 0..3 {
        mesh.connect(i, i + 1, ms(2));
    }
    mesh.run_until(ms(2_000), Mesh::converged);
    let now = mesh.now;
    let id = mesh.nodes[0]
        .send(now, &name(3), 0, b"hello".to_vec())
        .unwrap();
    mesh.drain(0);
    mesh.run_until(ms(1_000), |m| !m.deliveries.is_empty());
    let (at, delivery, _) = &mesh.deliveries[0];
    assert_eq!(
        (*at, delivery.id, delivery.hops, delivery.payload.as_slice()),
        (3, id, 3, &b"hello"[..])
    );
    assert_eq!(mesh.nodes[1].stats().data_forwarded, 1);
    assert!(matches!(
        mesh.nodes[0].send(now, &name(9), 0, vec![]),
        Err(SendError::UnknownDestination(_))
    ));
    let big = vec![0; Config::default().payload_bytes_max + 1];
    assert!(matches!(
        mesh.nodes[0].send(now, &name(3), 0, big),
        Err(SendError::PayloadTooLarge { .. })
    ));
}

#[test]
fn unreachable_known_node_is_no_route() {
    let mut mesh = Mesh::new(3, Config::default(), 4);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh.crash(1);
    mesh.run_until(ms(2_000), Mesh::converged);
    let now = mesh.now;
    assert!(matches!(
        mesh.nodes[0].send(now, &name(2), 0, vec![1]),
        Err(SendError::NoRoute(_))
    ));
}

#[test]
fn ttl_expiry_and_garbage_are_counted_not_fatal() {
    let mut mesh = Mesh::new(3, Config::default(), 5);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    let data = Data {
        source: name(0),
        destination: name(2),
        ttl: 1,
        channel: 0,
        id: 7,
        payload: vec![],
    };
    mesh.inject(0, 1, Message::Data(data).to_bytes());
    assert_eq!(mesh.nodes[1].stats().dropped(DropReason::TtlExpired), 1);
    for garbage in [
        vec![],
        vec![1],
        vec![9, 1, 2],
        vec![1, 5, 200],
        vec![0xff; 70_000],
    ] {
        mesh.inject(0, 1, garbage);
    }
    let stats = mesh.nodes[1].stats();
    assert_eq!(stats.dropped(DropReason::Malformed), 3);
    assert_eq!(stats.dropped(DropReason::UnknownVersion), 1);
    assert_eq!(stats.dropped(DropReason::Oversized), 1);
    mesh.run_for(ms(200));
    assert!(mesh.converged());
}

#[test]
fn forged_advertisements_are_refused() {
    let mut mesh = Mesh::new(3, Config::default(), 6);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    let routes_before = mesh.nodes[1].routes().clone();
    // Node 0 claims, in node 2's name, that 2 has a link to a fake node.
    let forged = Lsa {
        origin: name(2),
        sequence: u64::MAX / 2,
        links: vec![LsaLink {
            neighbour: name(9),
            cost: 1,
        }],
    };
    let attacker = SimAuthenticator::new(SECRET, name(0));
    let signature = attacker.sign(&forged.signed_bytes());
    let lsa = SignedLsa {
        lsa: forged,
        credential: std::sync::Arc::from(attacker.credential()),
        signature,
    };
    let frame = Message::LsUpdate {
        lsas: vec![(60_000, std::sync::Arc::new(lsa))],
    }
    .to_bytes();
    mesh.inject(0, 1, frame);
    assert_eq!(mesh.nodes[1].stats().dropped(DropReason::BadSignature), 1);
    mesh.run_for(ms(100));
    assert_eq!(mesh.nodes[1].routes(), &routes_before);
}

#[test]
fn a_restarted_node_outranks_its_old_advertisements() {
    // Refresh every second so the first incarnation's sequence number climbs.
    let config = Config {
        lsa_refresh_ms: 1_000,
        lsa_lifetime_ms: 2_000,
        ..Config::default()
    };
    let mut mesh = Mesh::new(3, config, 7);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh.run_for(ms(3_500));
    let old_sequence = mesh.nodes[2].sequence();
    assert!(old_sequence >= 4);
    mesh.crash(2);
    mesh.run_for(ms(50));
    mesh.restart(2);
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh.run_for(ms(200));
    assert!(
        mesh.nodes[2].sequence() > old_sequence,
        "fought back above its former incarnation: {} vs {old_sequence}",
        mesh.nodes[2].sequence()
    );
    let held = &mesh.nodes[0].lsdb().get(&name(2)).unwrap().lsa;
    assert_eq!(
        held.lsa,
        mesh.nodes[2].lsdb().get(&name(2)).unwrap().lsa.lsa,
        "everyone holds the new incarnation's links"
    );
}

#[test]
fn a_flapping_link_is_damped() {
    let mut mesh = common::damped_triangle();
    // While damped, 0 reaches 2 through 1 even though the direct link works.
    assert_eq!(mesh.walk(0, 2).unwrap(), vec![0, 1, 2]);
    // After the damping period the direct link is used again.
    mesh.run_until(ms(70_000), |m| m.walk(0, 2) == Some(vec![0, 2]));
}

#[test]
fn a_lossy_link_is_rerouted_around() {
    let mut mesh = Mesh::new(4, Config::default(), 9);
    // 0-1 direct (cheap) and 0-2-3-1 detour.
    mesh.connect(0, 1, ms(1));
    mesh.connect(0, 2, ms(1));
    mesh.connect(2, 3, ms(1));
    mesh.connect(3, 1, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    assert_eq!(mesh.walk(0, 1).unwrap(), vec![0, 1]);
    mesh.set_loss(0, 1, 0.4);
    mesh.run_until(ms(20_000), |m| m.walk(0, 1).is_some_and(|p| p.len() == 4));
    let reroute = mesh
        .events
        .iter()
        .any(|(_, _, e)| matches!(e, Event::Healing(d) if d.kind == DecisionKind::Reroute));
    assert!(reroute);
}

#[test]
fn a_hubs_loss_estimate_sees_each_links_own_loss() {
    // A hub probes six neighbours each interval. Only the link to 1 loses frames (20 %
    // each way, so 36 % of probe round trips); the hub must see that loss on that link
    // alone, however many other neighbours its probes go to (a probe sequence shared by
    // all neighbours once made every answer look like the end of an outage, and the
    // estimate stayed at 0).
    let mut mesh = Mesh::new(7, Config::default(), 5);
    for leaf in 1..7 {
        mesh.connect(0, leaf, ms(1));
    }
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh.set_loss(0, 1, 0.2);
    mesh.run_for(ms(5_000));
    // The estimate is an average over 16 probes: sample it over 30 s of probes.
    let mut sums = [0.0; 7];
    for _ in 0..300 {
        mesh.run_for(ms(100));
        for view in mesh.nodes[0].neighbours() {
            let leaf = (1..7).find(|&l| view.name == name(l)).unwrap();
            sums[leaf] += view.loss / 300.0;
        }
    }
    assert!(
        (0.25..0.5).contains(&sums[1]),
        "the lossy link's estimate averaged {}",
        sums[1]
    );
    for (leaf, loss) in sums.iter().enumerate().skip(2) {
        assert!(*loss < 0.02, "leaf {leaf}: {loss}");
    }
}

#[test]
fn same_seed_same_history() {
    let trace = |seed| {
        let mut mesh = Mesh::random_connected(8, 4, Config::default(), seed);
        mesh.run_for(ms(400));
        mesh.crash(3);
        mesh.run_for(ms(600));
        mesh.events
            .iter()
            .map(|(t, i, e)| format!("{t:?} {i} {e:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(trace(11), trace(11));
    assert_ne!(trace(11), trace(12));
}

#[test]
fn beacons_lead_to_one_dial_from_the_smaller_name() {
    let config = Config::default();
    let auth = SimAuthenticator::new(SECRET, name(1));
    let now = x0tta6bl4_proto::Instant::from_micros(1);
    let mut small = x0tta6bl4_proto::Node::new(name(1), config.clone(), auth, now).unwrap();
    let auth = SimAuthenticator::new(SECRET, name(2));
    let mut large = x0tta6bl4_proto::Node::new(name(2), config, auth, now).unwrap();
    small.enable_beacons(now, 7001);
    large.enable_beacons(now, 7002);
    small.handle_timeout(now);
    large.handle_timeout(now);
    let beacon_of = |node: &mut x0tta6bl4_proto::Node| loop {
        let t = node.poll_transmit().expect("a beacon");
        if t.destination == x0tta6bl4_proto::Destination::Beacon {
            break t.message.to_bytes();
        }
    };
    let (b_small, b_large) = (beacon_of(&mut small), beacon_of(&mut large));
    let from = "10.0.0.9:5000".parse().unwrap();
    large.handle_beacon(now, from, &b_small);
    small.handle_beacon(now, from, &b_large);
    large.handle_timeout(now);
    small.handle_timeout(now);
    let dials = |node: &mut x0tta6bl4_proto::Node| {
        std::iter::from_fn(|| node.poll_event())
            .filter(|e| matches!(e, Event::Dial { .. }))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        dials(&mut small),
        vec![Event::Dial {
            addr: "10.0.0.9:7002".parse().unwrap()
        }]
    );
    assert!(dials(&mut large).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any connected topology converges, loop-free, and after any single node crash the
    /// survivors converge again to exactly what they can still reach.
    #[test]
    fn any_topology_heals_after_a_crash(seed in any::<u64>(), n in 3usize..10, extra in 0usize..6, victim in any::<usize>()) {
        let mut mesh = Mesh::random_connected(n, extra.min(n * (n - 1) / 2 - (n - 1)), Config::default(), seed);
        mesh.run_until(ms(3_000), Mesh::converged);
        mesh.crash(victim % n);
        mesh.run_until(ms(3_000), Mesh::converged);
        let alive: BTreeSet<usize> = (0..n).filter(|&i| mesh.alive[i]).collect();
        for &i in &alive {
            for j in mesh.truly_reachable(i) {
                if j != i {
                    prop_assert!(mesh.walk(i, j).is_some());
                }
            }
        }
    }
}

#[test]
fn advertisements_wait_a_slow_links_round_trip_before_they_are_sent_again() {
    // Link 0-1 takes 200 ms each way (a slow radio hop, or a neighbour too busy to answer
    // sooner). An advertisement sent over it is acknowledged 400 ms later at best, so a
    // retransmission timer of 100 ms sent it twice more for nothing; with the link's RTT
    // in the timer, a change costs one copy per advertisement.
    let mut mesh = Mesh::new(3, Config::default(), 11);
    mesh.connect(0, 1, ms(200));
    mesh.connect(1, 2, ms(1));
    mesh.run_for(ms(20_000));
    assert!(mesh.converged(), "the line converges over the slow link");
    let before = mesh.nodes[1].stats().lsa_retransmitted;
    let sent_before = mesh.nodes[1].stats().lsa_sent;
    mesh.cut(1, 2);
    mesh.run_for(ms(10_000));
    let retransmitted = mesh.nodes[1].stats().lsa_retransmitted - before;
    let sent = mesh.nodes[1].stats().lsa_sent - sent_before;
    assert!(sent >= 1, "node 1 floods its changed links to node 0");
    assert_eq!(
        retransmitted, 0,
        "{sent} advertisements sent, {retransmitted} of them again"
    );
}
