//! The committee: safety under Byzantine validators, loss and partitions; view change
//! after a leader crash; SVID-signed messages; the verifiable draw; refused messages.
//! (`x0tta6bl4 fl committee-bench` runs the same sweeps over 1,000 seeds.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_fl::committee::{
    draw, genesis, Block, CommitteeConfig, CommitteeEvent, Decision, Digest, Drop, Message,
    PrePrepare, Replica, Sig, Verifier,
};
use x0tta6bl4_fl::committee_sim::{
    self, commit_in_process, crash_sweep, run, safety_sweep, Byzantine, SimConfig,
};
use x0tta6bl4_fl::keys::{EcdsaKey, PublicKeys};
use x0tta6bl4_fl::{Authenticator, Instant, NodeName};
use x0tta6bl4_identity::{CertificateAuthority, NodeIdentity, TrustDomain};

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

#[test]
fn no_conflicting_commits_with_f_byzantine_loss_and_partitions() {
    for (f, seeds) in [(1, 30), (2, 15)] {
        let r = safety_sweep(f, 0, seeds);
        assert_eq!(r.conflicting_commits, 0, "{r:?}");
        // Every run commits every height once partitions heal.
        assert_eq!(r.runs_completed, seeds, "{r:?}");
        assert!(
            r.runs_with_equivocation > 0 && r.runs_with_partition > 0,
            "{r:?}"
        );
        assert!(r.view_changes > 0 && r.forged_messages > 0, "{r:?}");
    }
}

#[test]
fn an_equivocating_leader_never_splits_the_committee() {
    let mut cfg = SimConfig::random(1, 7);
    cfg.extra_candidates = 0; // everyone is in the committee and leads a height
    cfg.byzantine = vec![Byzantine::Equivocate];
    cfg.loss = 0.0;
    cfg.partition = None;
    let mut forged = 0;
    for seed in 0..8 {
        let o = run(&cfg, seed);
        assert_eq!(o.conflicts, 0, "seed {seed}: {o:?}");
        assert!(o.complete, "seed {seed}: {o:?}");
        forged += o.forged;
    }
    assert!(
        forged > 0,
        "the equivocator never sent a conflicting message"
    );
}

#[test]
fn more_than_f_equivocators_are_beyond_the_guarantee_and_the_checker_sees_it() {
    // The checker is not vacuous: with 2 colluding equivocators in a committee of 4
    // (f = 1, outside the assumption), some seed makes the two honest validators
    // commit different blocks.
    let mut conflicts = 0;
    for seed in 0..40 {
        let mut cfg = SimConfig::random(1, seed);
        cfg.extra_candidates = 0;
        cfg.f = 1;
        cfg.loss = 0.0;
        cfg.partition = None;
        cfg.time_limit = Duration::from_secs(5);
        cfg.byzantine = vec![Byzantine::Equivocate; 2];
        conflicts += run(&cfg, seed).conflicts;
    }
    assert!(
        conflicts > 0,
        "2 equivocators of 4 never split the honest validators"
    );
}

#[test]
fn a_crashed_leader_is_replaced_within_a_second_of_simulated_time() {
    for f in [1, 2] {
        let r = crash_sweep(f, 0, 20);
        assert_eq!(r.committed, 20, "{r:?}");
        assert!(r.first_commit_ms_max < 1000.0, "{r:?}");
        // The view change waits for the timeout: the crash was really felt.
        assert!(r.first_commit_ms_p50 >= r.view_timeout_ms as f64, "{r:?}");
    }
}

#[test]
fn the_draw_is_deterministic_per_seed_and_epoch_and_picks_3f_plus_1() {
    let candidates: Vec<NodeName> = (0..10).map(|i| name(&format!("n{i}"))).collect();
    let seed = genesis("test");
    let a = draw(&candidates, &seed, 0, 4);
    assert_eq!(a.len(), 4);
    assert_eq!(a, draw(&candidates, &seed, 0, 4));
    let mut shuffled = candidates.clone();
    shuffled.reverse();
    assert_eq!(
        a,
        draw(&shuffled, &seed, 0, 4),
        "order of candidates matters"
    );
    let other: Vec<_> = (1..20)
        .map(|e| draw(&candidates, &seed, e, 4))
        .filter(|c| *c != a)
        .collect();
    assert!(!other.is_empty(), "every epoch drew the same committee");
    assert_ne!(a, draw(&candidates, &Digest::of(&[b"x"]), 0, 4));
}

/// Four validators with real SVIDs from a test CA.
fn svid_committee(root: &std::path::Path) -> Vec<NodeIdentity> {
    let td: TrustDomain = "mesh.test".parse().unwrap();
    let ca = CertificateAuthority::init(&root.join("ca"), &td).unwrap();
    (0..4)
        .map(|i| {
            let n = format!("v{i}");
            ca.issue_node(&name(&n), Duration::from_secs(3600), &root.join(&n))
                .unwrap();
            NodeIdentity::load(&root.join(&n)).unwrap()
        })
        .collect()
}

fn decision(round: u64) -> Decision {
    committee_sim::decision(round)
}

#[test]
fn svid_signed_messages_commit_and_certificates_verify() {
    let root = tempfile::tempdir().unwrap();
    let ids = svid_committee(root.path());
    let keys: Vec<(NodeName, Arc<dyn Authenticator>)> = ids
        .iter()
        .map(|id| (id.name().clone(), Arc::from(id.authenticator())))
        .collect();
    let credentials: BTreeMap<NodeName, Vec<u8>> = ids
        .iter()
        .map(|id| (id.name().clone(), id.certificate().to_vec()))
        .collect();
    let verifier = Verifier::new(keys[0].1.clone(), credentials);
    let cfg = CommitteeConfig {
        chain_id: "svid".into(),
        candidates: keys.iter().map(|(n, _)| n.clone()).collect(),
        f: 1,
        epoch_len: 10,
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
    };
    let (b1, qc1) = commit_in_process(&cfg, &keys, &verifier, &[], decision(1)).unwrap();
    let committee = draw(&cfg.candidates, &genesis("svid"), 0, 4);
    verifier.check_qc(&qc1, &b1, &committee).unwrap();
    assert!(qc1.commits.len() >= 3);
    // A flipped signature byte is caught.
    let mut bad = qc1.clone();
    bad.commits[0].signature.0[10] ^= 1;
    let e = verifier.check_qc(&bad, &b1, &committee).unwrap_err();
    assert!(e.contains("commit of"), "{e}");
    // The chain goes on from the tip.
    let (b2, qc2) = commit_in_process(
        &cfg,
        &keys,
        &verifier,
        std::slice::from_ref(&b1),
        decision(2),
    )
    .unwrap();
    assert_eq!(b2.prev, b1.hash());
    verifier.check_qc(&qc2, &b2, &committee).unwrap();
    // Only three of four keys: still a quorum (after the missing one's views time out).
    let (b3, _) = commit_in_process(
        &cfg,
        &keys[..3],
        &verifier,
        &[b1.clone(), b2.clone()],
        decision(3),
    )
    .unwrap();
    assert_eq!(b3.height, 3);
    // Two of four: no quorum, no commit.
    assert!(commit_in_process(&cfg, &keys[..2], &verifier, &[b1, b2, b3], decision(4)).is_err());
}

#[test]
fn unsigned_forged_and_misdirected_messages_are_dropped_with_a_reason() {
    let keys: Vec<(NodeName, Arc<EcdsaKey>)> = (0..4)
        .map(|i| {
            (
                name(&format!("k{i}")),
                Arc::new(EcdsaKey::generate().unwrap().0),
            )
        })
        .collect();
    let credentials: BTreeMap<NodeName, Vec<u8>> = keys
        .iter()
        .map(|(n, k)| (n.clone(), k.public_key().to_vec()))
        .collect();
    let verifier = Verifier::new(Arc::new(PublicKeys), credentials);
    let cfg = CommitteeConfig {
        chain_id: "drops".into(),
        candidates: keys.iter().map(|(n, _)| n.clone()).collect(),
        f: 1,
        epoch_len: 10,
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
    };
    let mut replicas: Vec<Replica> = keys
        .iter()
        .map(|(n, k)| {
            Replica::new(
                n.clone(),
                cfg.clone(),
                k.clone(),
                verifier.clone(),
                &[],
                Instant::ZERO,
            )
            .unwrap()
        })
        .collect();
    let leader = replicas[0].leader().clone();
    let li = keys.iter().position(|(n, _)| *n == leader).unwrap();
    let other = (li + 1) % 4;
    let target = (li + 2) % 4;
    let block = x0tta6bl4_fl::committee::Block {
        height: 1,
        epoch: 0,
        prev: genesis("drops"),
        decision: decision(1),
    };
    let mut pp = PrePrepare {
        view: 0,
        block,
        from: leader.clone(),
        signature: Sig::default(),
    };
    let now = Instant::ZERO;
    let drops = |r: &mut Replica| -> Vec<Drop> {
        std::iter::from_fn(|| r.poll_event())
            .filter_map(|e| match e {
                CommitteeEvent::Dropped { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    };
    // Unsigned.
    replicas[target].handle_message(now, &leader, &Message::PrePrepare(pp.clone()).encode());
    let d = drops(&mut replicas[target]);
    assert!(
        matches!(&d[..], [Drop::Invalid(e)] if e.contains("signature")),
        "{d:?}"
    );
    // Signed by a validator that is not the leader, claiming to be it.
    pp.signature = Sig(keys[other].1.sign(&pp.signed_bytes()));
    replicas[target].handle_message(now, &leader, &Message::PrePrepare(pp.clone()).encode());
    let d = drops(&mut replicas[target]);
    assert!(matches!(&d[..], [Drop::Invalid(_)]), "{d:?}");
    // From a non-leader, as itself.
    let mut from_other = pp.clone();
    from_other.from = keys[other].0.clone();
    from_other.signature = Sig(keys[other].1.sign(&from_other.signed_bytes()));
    replicas[target].handle_message(
        now,
        &keys[other].0,
        &Message::PrePrepare(from_other).encode(),
    );
    let d = drops(&mut replicas[target]);
    assert!(
        matches!(&d[..], [Drop::Invalid(e)] if e.contains("leader")),
        "{d:?}"
    );
    // Garbage.
    replicas[target].handle_message(now, &leader, b"{not json");
    let d = drops(&mut replicas[target]);
    assert!(matches!(&d[..], [Drop::Malformed(_)]), "{d:?}");
    // The real one is accepted (a prepare goes out) and a conflicting second one from
    // the same leader in the same view is refused as equivocation.
    pp.signature = Sig(keys[li].1.sign(&pp.signed_bytes()));
    replicas[target].handle_message(now, &leader, &Message::PrePrepare(pp.clone()).encode());
    assert!(drops(&mut replicas[target]).is_empty());
    assert!(replicas[target].poll_transmit().is_some());
    let mut twin = pp.clone();
    twin.block.decision.model_hash = Digest::of(&[b"other"]);
    twin.signature = Sig(keys[li].1.sign(&twin.signed_bytes()));
    replicas[target].handle_message(now, &leader, &Message::PrePrepare(twin).encode());
    let d = drops(&mut replicas[target]);
    assert!(
        matches!(&d[..], [Drop::Equivocation(n)] if *n == leader),
        "{d:?}"
    );
}

/// A committee judging blocks by the federation's rules (`FedState`): a leader's
/// correctly signed pre-prepare of a round result from a node that does not coordinate
/// is refused by every honest validator, a submitted decision the rules refuse is not
/// even queued, and after the valid round commits, a pending decision it made invalid
/// (the same round again) is dropped, so nothing more is committed.
#[test]
fn the_block_rules_refuse_what_the_chain_does_not_allow() {
    use x0tta6bl4_fl::committee::Handover;
    use x0tta6bl4_fl::mesh::FedState;
    let keys: Vec<(NodeName, Arc<EcdsaKey>)> = (0..4)
        .map(|i| {
            (
                name(&format!("r{i}")),
                Arc::new(EcdsaKey::generate().unwrap().0),
            )
        })
        .collect();
    let names: Vec<NodeName> = keys.iter().map(|(n, _)| n.clone()).collect();
    let credentials: BTreeMap<NodeName, Vec<u8>> = keys
        .iter()
        .map(|(n, k)| (n.clone(), k.public_key().to_vec()))
        .collect();
    let verifier = Verifier::new(Arc::new(PublicKeys), credentials);
    let cfg = CommitteeConfig {
        chain_id: "rules".into(),
        candidates: names.clone(),
        f: 1,
        epoch_len: 10,
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
    };
    let initial = Digest::of(&[b"initial model"]);
    let mut replicas: Vec<Replica> = keys
        .iter()
        .map(|(n, k)| {
            Replica::new(
                n.clone(),
                cfg.clone(),
                k.clone(),
                verifier.clone(),
                &[],
                Instant::ZERO,
            )
            .unwrap()
            .with_rules(Box::new(FedState::new(&names, names[0].clone(), initial)))
        })
        .collect();
    let key_of = |by: &NodeName| keys.iter().find(|(n, _)| n == by).unwrap().1.clone();
    let round = |r: u64, by: &NodeName| {
        Decision {
            coordinator: Some(by.clone()),
            ..decision(r)
        }
        .sign(by, &*key_of(by))
    };
    let dropped = |r: &mut Replica| -> Vec<String> {
        std::iter::from_fn(|| r.poll_event())
            .filter_map(|e| match e {
                CommitteeEvent::Dropped { reason, .. } => Some(format!("{reason:?}")),
                _ => None,
            })
            .collect()
    };
    let now = Instant::ZERO;
    // The leader (whoever it is) proposes, correctly signed, a round of r1, who does not
    // coordinate (r0 does).
    let leader = replicas[0].leader().clone();
    let li = names.iter().position(|n| *n == leader).unwrap();
    let mut pp = PrePrepare {
        view: 0,
        block: Block {
            height: 1,
            epoch: 0,
            prev: genesis("rules"),
            decision: round(1, &names[1]),
        },
        from: leader.clone(),
        signature: Sig::default(),
    };
    pp.signature = Sig(keys[li].1.sign(&pp.signed_bytes()));
    for (i, r) in replicas.iter_mut().enumerate() {
        if i != li {
            r.handle_message(now, &leader, &Message::PrePrepare(pp.clone()).encode());
            let d = dropped(r);
            assert!(
                matches!(&d[..], [e] if e.contains("but r0 coordinates")),
                "{d:?}"
            );
        }
    }
    // A submission the rules refuse is not queued.
    replicas[0].propose(now, round(1, &names[2]));
    assert_eq!(replicas[0].pending(), 0);
    assert!(dropped(&mut replicas[0])[0].contains("submitted decision"));
    // The valid round commits everywhere; a coordinator change at the wrong model
    // version, queued before, is dropped by the commit (it no longer fits the chain).
    let change = Decision {
        participants: Vec::new(),
        model_hash: initial,
        coordinator: Some(names[1].clone()),
        handover: Some(Handover {
            replaces: names[0].clone(),
            model_version: 0,
        }),
        ..decision(0)
    }
    .sign(&names[1], &*keys[1].1);
    let valid = round(1, &names[0]);
    let mut queue = std::collections::VecDeque::new();
    for r in &mut replicas {
        r.propose(now, valid.clone());
        r.propose(now, change.clone());
        assert_eq!(r.pending(), 2);
    }
    let mut committed = vec![Vec::new(); 4];
    for _ in 0..10_000 {
        for (i, r) in replicas.iter_mut().enumerate() {
            while let Some(t) = r.poll_transmit() {
                let to = names.iter().position(|n| *n == t.to).unwrap();
                queue.push_back((to, names[i].clone(), t.bytes));
            }
            while let Some(e) = r.poll_event() {
                if let CommitteeEvent::Committed { block, .. } = e {
                    committed[i].push(block);
                }
            }
        }
        let Some((to, from, bytes)) = queue.pop_front() else {
            break;
        };
        replicas[to].handle_message(now, &from, &bytes);
    }
    for (i, c) in committed.iter().enumerate() {
        assert_eq!(c.len(), 1, "replica {i}: {c:?}");
        assert_eq!(c[0].decision, valid);
        assert_eq!(replicas[i].pending(), 0, "the change was dropped");
    }
}

/// Four replicas under the federation's rules, r0 the coordinator; every message
/// delivered in order, timers run, for `for_ms` of simulated time. Returns the blocks
/// each committed and the reasons each dropped messages for.
fn run_federation(
    keys: &[(NodeName, Arc<EcdsaKey>)],
    replicas: &mut [Replica],
    for_ms: u64,
) -> (Vec<Vec<Block>>, Vec<Vec<String>>) {
    let names: Vec<NodeName> = keys.iter().map(|(n, _)| n.clone()).collect();
    let mut committed = vec![Vec::new(); replicas.len()];
    let mut dropped = vec![Vec::new(); replicas.len()];
    let mut queue = std::collections::VecDeque::new();
    let mut now = Instant::ZERO;
    let end = Instant::ZERO + Duration::from_millis(for_ms);
    loop {
        for (i, r) in replicas.iter_mut().enumerate() {
            while let Some(t) = r.poll_transmit() {
                let to = names.iter().position(|n| *n == t.to).unwrap();
                queue.push_back((to, names[i].clone(), t.bytes));
            }
            while let Some(e) = r.poll_event() {
                match e {
                    CommitteeEvent::Committed { block, .. } => committed[i].push(block),
                    CommitteeEvent::Dropped { reason, .. } => {
                        dropped[i].push(format!("{reason:?}"))
                    }
                    CommitteeEvent::ViewChanged { .. } => {}
                }
            }
        }
        if let Some((to, from, bytes)) = queue.pop_front() {
            replicas[to].handle_message(now, &from, &bytes);
            continue;
        }
        let Some(next) = replicas.iter().filter_map(Replica::poll_timeout).min() else {
            break;
        };
        if next > end {
            break;
        }
        now = now.max(next);
        for r in replicas.iter_mut() {
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
        }
    }
    (committed, dropped)
}

/// A validator prepares a coordinator change only when it suspects the coordinator
/// itself (`Replica::watch`: over the mesh, half the failover time after it last
/// heard from it). The height's leader, Byzantine, proposes a correctly signed change
/// replacing the live coordinator r0: no honest validator prepares it, so it gets no
/// quorum, the leader is replaced by a view change and the coordinator's round is
/// committed instead. The same change when the validators do suspect r0 is committed
/// (the check is not vacuous).
#[test]
fn a_byzantine_leader_cannot_depose_a_live_coordinator() {
    use x0tta6bl4_fl::committee::Handover;
    use x0tta6bl4_fl::mesh::FedState;
    let keys: Vec<(NodeName, Arc<EcdsaKey>)> = (0..4)
        .map(|i| {
            (
                name(&format!("r{i}")),
                Arc::new(EcdsaKey::generate().unwrap().0),
            )
        })
        .collect();
    let names: Vec<NodeName> = keys.iter().map(|(n, _)| n.clone()).collect();
    let credentials: BTreeMap<NodeName, Vec<u8>> = keys
        .iter()
        .map(|(n, k)| (n.clone(), k.public_key().to_vec()))
        .collect();
    let verifier = Verifier::new(Arc::new(PublicKeys), credentials);
    let cfg = CommitteeConfig {
        chain_id: "live-coordinator".into(),
        candidates: names.clone(),
        f: 1,
        epoch_len: 10,
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
    };
    let initial = Digest::of(&[b"initial model"]);
    let replicas = || -> Vec<Replica> {
        keys.iter()
            .map(|(n, k)| {
                Replica::new(
                    n.clone(),
                    cfg.clone(),
                    k.clone(),
                    verifier.clone(),
                    &[],
                    Instant::ZERO,
                )
                .unwrap()
                .with_rules(Box::new(FedState::new(
                    &names,
                    names[0].clone(),
                    initial,
                )))
            })
            .collect()
    };
    let leader = replicas()[0].leader().clone();
    let li = names.iter().position(|n| *n == leader).unwrap();
    // The change names a successor other than r0 and the leader.
    let successor = names
        .iter()
        .find(|n| **n != names[0] && **n != leader)
        .unwrap()
        .clone();
    let change = Decision {
        participants: Vec::new(),
        model_hash: initial,
        coordinator: Some(successor.clone()),
        handover: Some(Handover {
            replaces: names[0].clone(),
            model_version: 0,
        }),
        ..decision(0)
    }
    .sign(&leader, &*keys[li].1);
    let round1 = Decision {
        coordinator: Some(names[0].clone()),
        ..decision(1)
    }
    .sign(&names[0], &*keys[0].1);

    // r0 is live: every validator heard from it just now and would suspect it only
    // 10 s later. The Byzantine leader proposes only the change; the others hold the
    // coordinator's round.
    let mut live = replicas();
    for (i, r) in live.iter_mut().enumerate() {
        r.watch(names[0].clone(), Instant::ZERO + Duration::from_secs(10));
        if i == li {
            r.propose(Instant::ZERO, change.clone());
        } else {
            r.propose(Instant::ZERO, round1.clone());
        }
    }
    let (committed, dropped) = run_federation(&keys, &mut live, 3_000);
    for (i, c) in committed.iter().enumerate() {
        assert_eq!(c.len(), 1, "replica {i}: {c:?}");
        assert_eq!(
            c[0].decision, round1,
            "replica {i} committed the round, not the change"
        );
        if i != li {
            assert!(
                dropped[i]
                    .iter()
                    .any(|d| d.contains("which this validator still hears")),
                "replica {i} refused the change: {:?}",
                dropped[i]
            );
        }
    }
    assert!(live.iter().all(|r| r.view() == 0 && r.height() == 2));

    // r0 silent long enough: the same change is prepared and committed at once.
    let mut silent = replicas();
    for (i, r) in silent.iter_mut().enumerate() {
        r.watch(names[0].clone(), Instant::ZERO);
        if i == li {
            r.propose(Instant::ZERO, change.clone());
        }
    }
    let (committed, _) = run_federation(&keys, &mut silent, 3_000);
    for (i, c) in committed.iter().enumerate() {
        assert_eq!(c.len(), 1, "replica {i}: {c:?}");
        assert_eq!(c[0].decision, change);
        assert_eq!(c[0].decision.coordinator.as_ref(), Some(&successor));
    }
}
