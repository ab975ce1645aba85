//! Address records: nodes learn where the others listen from the mesh itself, and
//! redial a peer that came back elsewhere at its learnt address, the handshake's proven
//! name deciding whether the link counts.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{name, Mesh, SECRET};
use x0tta6bl4_proto::wire::{AddressRecord, Message};
use x0tta6bl4_proto::{Authenticator, Config, DropReason, Event, Instant, Node, SimAuthenticator};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn record(signer: usize, origin: usize, sequence: u64, addresses: Vec<SocketAddr>) -> Message {
    let auth = SimAuthenticator::new(SECRET, name(signer));
    let signature = auth.sign(&AddressRecord::signed_bytes(
        &name(origin),
        sequence,
        &addresses,
    ));
    Message::Addresses {
        records: vec![Arc::new(AddressRecord {
            origin: name(origin),
            sequence,
            addresses,
            credential: Arc::from(auth.credential()),
            signature,
        })],
    }
}

#[test]
fn records_flood_the_newest_wins_and_forgeries_are_dropped() {
    let mut mesh = Mesh::new(4, Config::default(), 3);
    for i in 0..3 {
        mesh.connect(i, i + 1, ms(1));
    }
    mesh.run_until(ms(2_000), Mesh::converged);
    let first = vec![addr("10.0.0.1:4433"), addr("[fd00::1]:4433")];
    assert!(mesh.nodes[0].set_addresses(mesh.now, &first));
    assert!(!mesh.nodes[0].set_addresses(mesh.now, &first), "unchanged");
    mesh.drain(0);
    mesh.run_until(ms(100), |m| m.nodes[3].learnt_addresses(&name(0)) == first);
    assert_eq!(mesh.nodes[3].learnt_addresses(&name(0)), first.as_slice());

    // Node 0 comes back elsewhere: the newer record replaces the old one everywhere.
    let moved = vec![addr("10.0.0.9:4433")];
    mesh.nodes[0].set_addresses(mesh.now, &moved);
    mesh.drain(0);
    mesh.run_until(ms(100), |m| {
        (1..4).all(|i| m.nodes[i].learnt_addresses(&name(0)) == moved)
    });
    assert_eq!(mesh.nodes[3].learnt_addresses(&name(0)), moved.as_slice());

    // Node 1 claims node 0's name with its own key: dropped, not installed or flooded.
    let before = mesh.nodes[2].stats().dropped(DropReason::BadSignature);
    let forged = record(1, 0, u64::MAX, vec![addr("192.0.2.66:4433")]);
    mesh.inject(1, 2, forged.to_bytes());
    mesh.run_for(ms(50));
    assert_eq!(
        mesh.nodes[2].stats().dropped(DropReason::BadSignature),
        before + 1
    );
    assert_eq!(mesh.nodes[2].learnt_addresses(&name(0)), moved.as_slice());
    assert_eq!(mesh.nodes[3].learnt_addresses(&name(0)), moved.as_slice());

    // A node cut off while the record flooded gets it with the database when its link
    // comes back.
    let mut late = Mesh::new(5, Config::default(), 4);
    for i in 0..4 {
        late.connect(i, i + 1, ms(1));
    }
    late.run_until(ms(2_000), Mesh::converged);
    late.cut(3, 4);
    late.run_for(ms(3_000));
    late.nodes[0].set_addresses(late.now, &first);
    late.drain(0);
    late.run_for(ms(100));
    assert_eq!(late.nodes[3].learnt_addresses(&name(0)), first.as_slice());
    assert!(late.nodes[4].learnt_addresses(&name(0)).is_empty());
    late.repair(3, 4);
    late.run_until(ms(5_000), |m| {
        m.nodes[4].learnt_addresses(&name(0)) == first
    });
    assert_eq!(late.nodes[4].learnt_addresses(&name(0)), first.as_slice());
}

/// Run `node`'s timers at `now`; the addresses it asks to dial.
fn dials(node: &mut Node, now: Instant) -> Vec<SocketAddr> {
    node.handle_timeout(now);
    while node.poll_transmit().is_some() {}
    let mut dialed = Vec::new();
    while let Some(event) = node.poll_event() {
        if let Event::Dial { addr } = event {
            dialed.push(addr);
        }
    }
    dialed
}

#[test]
fn a_peer_that_moved_is_redialed_at_its_learnt_address_and_must_prove_its_name() {
    let me = name(0);
    let mut now = Instant::from_micros(1_000_000);
    let auth = SimAuthenticator::new(SECRET, me.clone());
    let mut node = Node::new(me, Config::default(), auth, now).unwrap();
    let (configured, moved) = (addr("10.0.0.1:7001"), addr("10.0.0.2:7001"));
    node.add_peer(now, configured);
    assert_eq!(dials(&mut node, now), vec![configured]);
    assert!(node.handle_link_up(now, name(1), Some(configured)));
    // Node 1 says where it listens (its new pod's address, learnt through the mesh).
    let said = record(1, 1, 5, vec![moved, configured]);
    node.handle_datagram(now, &name(1), &said.to_bytes());
    assert_eq!(node.learnt_addresses(&name(1)), &[moved, configured]);
    node.handle_link_down(now, &name(1));

    // The configured address is redialed, and the learnt one next to it (the
    // configured one is not dialed twice).
    let mut redialed = Vec::new();
    while redialed.is_empty() {
        now = node.poll_timeout().unwrap().max(now + ms(1));
        redialed = dials(&mut node, now);
    }
    assert_eq!(redialed, vec![configured, moved]);
    assert_eq!(node.stats().learnt_dials, 1);

    // Someone else answers at the learnt address: refused.
    assert!(!node.handle_link_up(now, name(2), Some(moved)));
    assert_eq!(node.stats().dropped(DropReason::UnexpectedPeer), 1);
    node.handle_dial_failed(now, configured);

    // Next round node 1 itself answers there: the link counts, and the configured
    // address is not dialed while it is up.
    let mut redialed = Vec::new();
    while redialed.is_empty() {
        now = node.poll_timeout().unwrap().max(now + ms(1));
        redialed = dials(&mut node, now);
    }
    assert_eq!(redialed, vec![configured, moved]);
    node.handle_dial_failed(now, configured);
    assert!(node.handle_link_up(now, name(1), Some(moved)));
    let until = now + Duration::from_secs(30);
    while now < until {
        now = node.poll_timeout().unwrap().max(now + ms(1));
        let redialed = dials(&mut node, now);
        assert!(redialed.is_empty(), "redialed {redialed:?} while linked");
    }
}

#[test]
fn a_revoked_node_is_forgotten_and_its_records_are_refused() {
    let me = name(0);
    let now = Instant::from_micros(1_000_000);
    let auth = SimAuthenticator::new(SECRET, me.clone());
    let mut node = Node::new(me, Config::default(), auth.clone(), now).unwrap();
    assert!(node.handle_link_up(now, name(1), None));
    node.handle_datagram(
        now,
        &name(1),
        &record(2, 2, 1, vec![addr("10.0.0.2:1")]).to_bytes(),
    );
    assert_eq!(node.learnt_addresses(&name(2)), &[addr("10.0.0.2:1")]);
    node.revoke(now, &auth.revocation(&name(2))).unwrap();
    assert!(node.learnt_addresses(&name(2)).is_empty());
    node.handle_datagram(
        now,
        &name(1),
        &record(2, 2, 2, vec![addr("10.0.0.2:2")]).to_bytes(),
    );
    assert!(node.learnt_addresses(&name(2)).is_empty());
    assert_eq!(node.stats().dropped(DropReason::Revoked), 1);
}
