//! FL frames signed with ECDSA P-256 keys through [`AuthSigner`]: unsigned updates,
//! updates signed with another node's key, replayed signed updates and updates from
//! non-sampled nodes are refused with their reason, counted, and never aggregated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use x0tta6bl4_fl::aggregate::AggregatorKind;
use x0tta6bl4_fl::compress::Compression;
use x0tta6bl4_fl::keys::EcdsaKey;
use x0tta6bl4_fl::wire::{Message, Payload};
use x0tta6bl4_fl::{
    AuthSigner, Authenticator, Behaviour, Coordinator, CoordinatorConfig, Event, Instant,
    LocalTrainer, NodeName, Participant,
};

struct Step;

impl LocalTrainer for Step {
    fn train(
        &mut self,
        global: &[f32],
        _flip: bool,
        _rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, u64), String> {
        Ok((global.iter().map(|g| g + 1.0).collect(), 10))
    }
}

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

#[test]
fn unsigned_foreign_replayed_and_unsampled_updates_are_refused() {
    let all = ["coord", "a", "b", "c", "outsider"];
    let keys: BTreeMap<NodeName, Arc<EcdsaKey>> = all
        .iter()
        .map(|n| (name(n), Arc::new(EcdsaKey::generate().unwrap().0)))
        .collect();
    let credentials: BTreeMap<NodeName, Vec<u8>> = keys
        .iter()
        .map(|(n, k)| (n.clone(), k.public_key().to_vec()))
        .collect();
    let signer = |n: &str| -> Arc<AuthSigner> {
        Arc::new(AuthSigner::new(keys[&name(n)].clone(), credentials.clone()))
    };
    let participants = vec![name("a"), name("b"), name("c")];
    let mut c = Coordinator::new(
        CoordinatorConfig {
            participants: participants.clone(),
            per_round: 3,
            round_timeout: Duration::from_secs(10),
            min_updates: 1,
            max_rounds: 2,
            dp: None,
        },
        vec![0.0; 10],
        AggregatorKind::FedAvg.build(),
        None,
        signer("coord"),
        1,
    );
    let mut parts: Vec<Participant> = participants
        .iter()
        .map(|n| {
            Participant::new(
                n.clone(),
                name("coord"),
                Box::new(Step),
                Behaviour::honest(),
                Compression::default(),
                signer(n.as_str()),
                0,
            )
        })
        .collect();
    let t0 = Instant::ZERO;
    c.handle_timeout(t0);
    let mut updates = Vec::new();
    while let Some(t) = c.poll_transmit() {
        let p = parts.iter_mut().find(|p| p.name() == &t.to).unwrap();
        p.handle_message(t0, &name("coord"), &t.bytes);
    }
    for p in &mut parts {
        while let Some(t) = p.poll_transmit() {
            updates.push((p.name().clone(), t.bytes));
        }
    }
    assert_eq!(updates.len(), 3);
    let body = |round: u64| Message::UpdateChunk {
        round,
        num_samples: 10,
        num_params: 10,
        index: 0,
        chunks: 1,
        payload: Payload::Sparse(vec![(0, 100.0)]),
    };
    let events =
        |c: &mut Coordinator| -> Vec<Event> { std::iter::from_fn(|| c.poll_event()).collect() };
    let refused = |evs: &[Event]| -> Vec<String> {
        evs.iter()
            .filter_map(|e| match e {
                Event::Refused { reason, .. } => Some(format!("{}: {reason}", reason.label())),
                _ => None,
            })
            .collect()
    };
    events(&mut c);
    // Unsigned, claiming to be a.
    c.handle_message(t0, &name("a"), &body(1).encode(&[]));
    // Signed with b's key, claiming to be a.
    let m = body(1);
    c.handle_message(
        t0,
        &name("a"),
        &m.encode(&keys[&name("b")].sign(&m.encode_body())),
    );
    // Properly signed by a node that was not sampled.
    let m = body(1);
    c.handle_message(
        t0,
        &name("outsider"),
        &m.encode(&keys[&name("outsider")].sign(&m.encode_body())),
    );
    let evs = events(&mut c);
    let r = refused(&evs);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(
        r[0].starts_with("bad-signature") && r[0].contains("unsigned"),
        "{r:?}"
    );
    assert!(r[1].starts_with("bad-signature"), "{r:?}");
    assert!(r[2].starts_with("not-sampled"), "{r:?}");
    // The genuine updates complete the round, unharmed by the forgeries.
    for (from, bytes) in &updates {
        c.handle_message(t0, from, bytes);
    }
    let evs = events(&mut c);
    let Some(Event::RoundCompleted(s)) = evs.iter().find(|e| matches!(e, Event::RoundCompleted(_)))
    else {
        panic!("{evs:?}")
    };
    assert_eq!(s.aggregated.len(), 3);
    assert!(
        c.global().iter().all(|g| (g - 1.0).abs() < 1e-6),
        "{:?}",
        c.global()
    );
    // Round 2 opens; a's signed round-1 update replayed is refused as stale.
    c.handle_timeout(t0 + Duration::from_millis(1));
    events(&mut c);
    let (from, bytes) = &updates[0];
    c.handle_message(t0, from, bytes);
    let r = refused(&events(&mut c));
    assert!(
        matches!(&r[..], [one] if one.starts_with("stale-round")),
        "{r:?}"
    );
    assert_eq!(c.refusals().get("bad-signature"), Some(&2));
    assert_eq!(c.refusals().get("not-sampled"), Some(&1));
    assert_eq!(c.refusals().get("stale-round"), Some(&1));
}
