//! Signed routing (identity issue, item 8): a node holding a valid key still cannot
//! advertise links on another node's behalf, replay an old advertisement, or claim a
//! link its neighbour does not confirm. Each attack is rejected or ignored and changes
//! no route anywhere.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{name, Mesh, SECRET};
use x0tta6bl4_proto::wire::{Lsa, LsaLink, Message, SignedLsa};
use x0tta6bl4_proto::{Authenticator, Config, DropReason, RoutingTable, SimAuthenticator};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// 0 - 1 - 2 - 3, plus 1 - 3: converged.
fn mesh(seed: u64) -> Mesh {
    let mut mesh = Mesh::new(4, Config::default(), seed);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.connect(2, 3, ms(1));
    mesh.connect(1, 3, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    mesh
}

fn routes(mesh: &Mesh) -> Vec<RoutingTable> {
    mesh.nodes.iter().map(|n| n.routes().clone()).collect()
}

fn signed(lsa: Lsa, signer: usize) -> SignedLsa {
    let key = SimAuthenticator::new(SECRET, name(signer));
    let signature = key.sign(&lsa.signed_bytes());
    SignedLsa {
        lsa,
        credential: Arc::from(key.credential()),
        signature,
    }
}

fn update(lsa: SignedLsa) -> Vec<u8> {
    Message::LsUpdate {
        lsas: vec![(60_000, Arc::new(lsa))],
    }
    .to_bytes()
}

fn links(to: &[usize]) -> Vec<LsaLink> {
    to.iter()
        .map(|&i| LsaLink {
            neighbour: name(i),
            cost: 1,
        })
        .collect()
}

#[test]
fn a_valid_key_cannot_advertise_for_another_node() {
    let mut mesh = mesh(21);
    let before = routes(&mesh);
    // Node 3 signs, with its own valid key, an advertisement in node 2's name.
    let forged = Lsa {
        origin: name(2),
        sequence: u64::MAX / 2,
        links: links(&[3]),
    };
    mesh.inject(3, 1, update(signed(forged, 3)));
    assert_eq!(mesh.nodes[1].stats().dropped(DropReason::BadSignature), 1);
    mesh.run_for(ms(200));
    assert_eq!(routes(&mesh), before);
}

#[test]
fn a_replayed_old_advertisement_is_stale_and_changes_nothing() {
    let mut mesh = mesh(22);
    // Keep node 2's advertisement (links to 1 and 3), properly signed by node 2.
    let old = mesh.nodes[1].lsdb().get(&name(2)).unwrap().lsa.clone();
    assert_eq!(old.lsa.links.len(), 2);
    // Node 2 loses its link to 3 and re-originates.
    mesh.cut(2, 3);
    mesh.run_until(ms(5_000), Mesh::converged);
    mesh.run_for(ms(200));
    let current = mesh.nodes[1].lsdb().get(&name(2)).unwrap().lsa.clone();
    assert!(current.lsa.sequence > old.lsa.sequence);
    let before = routes(&mesh);
    let stale_before = mesh.nodes[1]
        .stats()
        .dropped(DropReason::StaleAdvertisement);
    // Node 0 replays the old one to node 1.
    mesh.inject(0, 1, update((*old).clone()));
    assert_eq!(
        mesh.nodes[1]
            .stats()
            .dropped(DropReason::StaleAdvertisement),
        stale_before + 1
    );
    mesh.run_for(ms(200));
    assert_eq!(routes(&mesh), before);
    assert_eq!(
        mesh.nodes[1].lsdb().get(&name(2)).unwrap().lsa.lsa,
        current.lsa
    );
}

#[test]
fn a_link_only_one_end_reports_carries_no_traffic() {
    let mut mesh = mesh(23);
    let before = routes(&mesh);
    let hops_before = mesh.nodes[3].routes().get(&name(0)).unwrap().hops;
    assert_eq!(hops_before, 2, "3 -> 1 -> 0");
    // Node 2, with its own valid key, claims a cheap link to 0 that 0 never reports
    // (keeping its real links, so only the claim differs).
    let sequence = mesh.nodes[2].sequence() + 1_000;
    let claim = Lsa {
        origin: name(2),
        sequence,
        links: links(&[0, 1, 3]),
    };
    mesh.inject(2, 1, update(signed(claim, 2)));
    mesh.inject(
        2,
        3,
        update(signed(
            Lsa {
                origin: name(2),
                sequence,
                links: links(&[0, 1, 3]),
            },
            2,
        )),
    );
    // The claim is accepted as node 2's advertisement (its signature is valid)...
    let held = &mesh.nodes[1].lsdb().get(&name(2)).unwrap().lsa.lsa;
    assert_eq!(held.sequence, sequence);
    mesh.run_for(ms(50));
    // ...but no one routes over the one-sided link 2 - 0.
    for (i, node) in mesh.nodes.iter().enumerate() {
        for (destination, route) in node.routes().iter() {
            if i == 2 {
                assert_ne!(
                    (destination, &route.next_hop),
                    (&name(0), &name(0)),
                    "node 2 routes to 0 directly over an unconfirmed link"
                );
            }
        }
    }
    assert_eq!(mesh.nodes[3].routes().get(&name(0)).unwrap().hops, 2);
    mesh.run_for(ms(500));
    assert_eq!(routes(&mesh), before);
}

#[test]
fn a_snapshot_passes_the_same_checks_as_a_flood() {
    let mut mesh = mesh(24);
    let held = |mesh: &Mesh, origin: usize| {
        let entry = mesh.nodes[0].lsdb().get(&name(origin)).unwrap();
        entry.lsa.lsa.clone()
    };
    // Node 3, properly signed, newer: it no longer lists node 1.
    let mut genuine = held(&mesh, 3);
    genuine.sequence += 1;
    genuine.links.retain(|l| l.neighbour != name(1));
    // Node 2's advertisement, newer, but signed with node 3's key.
    let mut forged = held(&mesh, 2);
    forged.sequence += 1;
    forged.links.clear();
    let installed_before = mesh.nodes[0].stats().lsa_installed;
    let bad_before = mesh.nodes[0].stats().dropped(DropReason::BadSignature);
    let mut lsas: Vec<Arc<SignedLsa>> = (0..4)
        .map(|i| mesh.nodes[0].lsdb().get(&name(i)).unwrap().lsa.clone())
        .collect();
    lsas.push(Arc::new(signed(genuine.clone(), 3)));
    lsas.push(Arc::new(signed(forged, 3)));
    let snapshot = x0tta6bl4_proto::LinkStateSnapshot::new(lsas);
    assert_eq!(
        snapshot.len(),
        4,
        "one advertisement per origin, the newest"
    );
    let now = mesh.now;
    let queued_before = mesh.nodes[0].transmits_queued();
    mesh.nodes[0].handle_link_state_snapshot(now, &snapshot);
    let node = &mesh.nodes[0];
    assert_eq!(node.stats().lsa_installed, installed_before + 1);
    assert_eq!(
        node.stats().dropped(DropReason::BadSignature),
        bad_before + 1
    );
    assert_eq!(node.lsdb().get(&name(3)).unwrap().lsa.lsa, genuine);
    assert_eq!(node.lsdb().get(&name(2)).unwrap().lsa.lsa, held(&mesh, 2));
    // Routes were recomputed at once: 3 is now reached over 1 - 2 - 3.
    let route = node.routes().get(&name(3)).unwrap();
    assert_eq!((route.next_hop.clone(), route.hops), (name(1), 3));
    assert_eq!(node.transmits_queued(), queued_before, "nothing flooded");
}
