//! The round lifecycle and the refusal of bad input, driven step by step.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use x0tta6bl4_fl::aggregate::AggregatorKind;
use x0tta6bl4_fl::compress::Compression;
use x0tta6bl4_fl::wire::{Message, Payload};
use x0tta6bl4_fl::{
    Behaviour, Coordinator, CoordinatorConfig, Event, Instant, LocalTrainer, NoSignatures,
    NodeName, Participant, Signer,
};

/// Local "training" that moves every parameter by a fixed step (the protocol under test
/// does not depend on what training computes).
struct Step(f32);

impl LocalTrainer for Step {
    fn train(
        &mut self,
        global: &[f32],
        _flip: bool,
        _rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, u64), String> {
        Ok((global.iter().map(|g| g + self.0).collect(), 10))
    }
}

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

const D: usize = 20_000; // three model chunks

fn setup(n: usize, per_round: usize, seed: u64) -> (Coordinator, Vec<Participant>) {
    let names: Vec<NodeName> = (0..n).map(|i| name(&format!("p{i}"))).collect();
    let coord = Coordinator::new(
        CoordinatorConfig {
            participants: names.clone(),
            per_round,
            round_timeout: Duration::from_secs(10),
            min_updates: 1,
            max_rounds: 5,
            dp: None,
        },
        vec![0.0; D],
        AggregatorKind::FedAvg.build(),
        None,
        Arc::new(NoSignatures),
        seed,
    );
    let parts = names
        .iter()
        .enumerate()
        .map(|(i, nm)| {
            Participant::new(
                nm.clone(),
                name("coord"),
                Box::new(Step(1.0 + i as f32)),
                Behaviour::honest(),
                Compression::default(),
                Arc::new(NoSignatures),
                i as u64,
            )
        })
        .collect();
    (coord, parts)
}

fn events(c: &mut Coordinator) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Deliver the coordinator's frames to participants; return their update frames.
fn to_participants(
    c: &mut Coordinator,
    parts: &mut [Participant],
    now: Instant,
) -> Vec<(NodeName, Vec<u8>)> {
    while let Some(t) = c.poll_transmit() {
        let p = parts.iter_mut().find(|p| p.name() == &t.to).unwrap();
        p.handle_message(now, &name("coord"), &t.bytes);
    }
    let mut out = Vec::new();
    for p in parts.iter_mut() {
        while let Some(t) = p.poll_transmit() {
            out.push((p.name().clone(), t.bytes));
        }
    }
    out
}

fn sampled(evs: &[Event]) -> Vec<NodeName> {
    evs.iter()
        .find_map(|e| match e {
            Event::RoundStarted { sampled, .. } => Some(sampled.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_round_samples_collects_aggregates_and_adopts() {
    let (mut c, mut parts) = setup(5, 3, 7);
    let now = Instant::ZERO;
    c.handle_timeout(now);
    let chosen = sampled(&events(&mut c));
    assert_eq!(chosen.len(), 3);
    let frames = to_participants(&mut c, &mut parts, now);
    assert_eq!(
        frames.len(),
        3 * 3,
        "three dense chunks from each sampled participant"
    );
    for (from, f) in &frames {
        c.handle_message(now, from, f);
    }
    let evs = events(&mut c);
    let Some(Event::RoundCompleted(s)) = evs.iter().find(|e| matches!(e, Event::RoundCompleted(_)))
    else {
        panic!("no completed round: {evs:?}")
    };
    assert_eq!(s.aggregated, chosen);
    // Every participant's step is 1 + its index; equal sample counts: the mean step.
    let want: f32 = chosen
        .iter()
        .map(|n| 1.0 + n.as_str()[1..].parse::<f32>().unwrap())
        .sum::<f32>()
        / 3.0;
    assert!(c.global().iter().all(|&g| (g - want).abs() < 1e-5));
    // The next round starts at once, with the adopted model.
    assert_eq!(c.poll_timeout(), Some(now));
    c.handle_timeout(now);
    assert!(matches!(
        events(&mut c)[0],
        Event::RoundStarted { round: 2, .. }
    ));
}

#[test]
fn sampling_is_deterministic_per_seed() {
    let pick = |seed| {
        let (mut c, _) = setup(20, 5, seed);
        c.handle_timeout(Instant::ZERO);
        sampled(&events(&mut c))
    };
    assert_eq!(pick(1), pick(1));
    assert_ne!(pick(1), pick(2));
}

#[test]
fn deadline_closes_a_round_without_stragglers() {
    let (mut c, mut parts) = setup(4, 4, 3);
    c.handle_timeout(Instant::ZERO);
    events(&mut c);
    let frames = to_participants(&mut c, &mut parts, Instant::ZERO);
    // p0 never answers.
    for (from, f) in frames.iter().filter(|(n, _)| n.as_str() != "p0") {
        c.handle_message(Instant::ZERO, from, f);
    }
    assert!(events(&mut c).is_empty());
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(10));
    c.handle_timeout(deadline);
    let evs = events(&mut c);
    let Some(Event::RoundCompleted(s)) = evs.first() else {
        panic!("{evs:?}")
    };
    assert_eq!(s.aggregated.len(), 3);
    assert!(!s.aggregated.contains(&name("p0")));
}

fn update(round: u64, num_params: u32, pairs: Vec<(u32, f32)>) -> Vec<u8> {
    Message::UpdateChunk {
        round,
        num_samples: 10,
        num_params,
        index: 0,
        chunks: 1,
        payload: Payload::Sparse(pairs),
    }
    .encode(&[])
}

fn refusals(evs: &[Event]) -> Vec<&'static str> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason.label()),
            _ => None,
        })
        .collect()
}

#[test]
fn bad_updates_are_refused_counted_and_never_aggregated() {
    let (mut c, mut parts) = setup(6, 6, 5);
    let t0 = Instant::ZERO;
    c.handle_timeout(t0);
    events(&mut c);
    let round1 = to_participants(&mut c, &mut parts, t0);
    for (from, f) in &round1 {
        c.handle_message(t0, from, f);
    }
    events(&mut c);
    let after1 = c.global().to_vec();
    c.handle_timeout(t0);
    events(&mut c);
    let round2 = to_participants(&mut c, &mut parts, t0);
    let (p0, p1, p2, p3, p4) = (name("p0"), name("p1"), name("p2"), name("p3"), name("p4"));

    // Wrong shape, NaN, infinity, a stranger, a replay of round 1, a future round,
    // garbage, a signature where none is expected.
    c.handle_message(t0, &p0, &update(2, D as u32 + 1, vec![(0, 1.0)]));
    c.handle_message(t0, &p1, &update(2, D as u32, vec![(7, f32::NAN)]));
    let mut inf = Message::UpdateChunk {
        round: 2,
        num_samples: 10,
        num_params: D as u32,
        index: 0,
        chunks: 1,
        payload: Payload::Sparse(vec![(3, f32::INFINITY)]),
    };
    c.handle_message(t0, &p2, &inf.encode(&[]));
    c.handle_message(t0, &name("stranger"), &update(2, D as u32, vec![(1, 1.0)]));
    let (replay_from, replayed) = round1.iter().find(|(n, _)| n == &p3).unwrap();
    c.handle_message(t0, replay_from, replayed);
    c.handle_message(t0, &p3, &update(9, D as u32, vec![(1, 1.0)]));
    c.handle_message(t0, &p3, b"\x01\x03garbage");
    if let Message::UpdateChunk { payload, .. } = &mut inf {
        *payload = Payload::Sparse(vec![(3, 1.0)]);
    }
    c.handle_message(t0, &p4, &inf.encode(b"forged"));
    let labels = refusals(&events(&mut c));
    assert_eq!(
        labels,
        vec![
            "shape",
            "non-finite",
            "non-finite",
            "not-sampled",
            "stale-round",
            "future-round",
            "malformed",
            "bad-signature"
        ]
    );
    for l in [
        "shape",
        "non-finite",
        "not-sampled",
        "stale-round",
        "malformed",
        "bad-signature",
    ] {
        assert!(c.refusals()[l] >= 1, "{l} not counted");
    }

    // The honest frames of round 2: p0, p1 and p2 sent bad chunks this round, so their
    // whole updates are out; the others are aggregated.
    for (from, f) in &round2 {
        c.handle_message(t0, from, f);
    }
    let evs = events(&mut c);
    let Some(Event::RoundCompleted(s)) = evs.iter().find(|e| matches!(e, Event::RoundCompleted(_)))
    else {
        panic!("{evs:?}")
    };
    assert_eq!(s.aggregated, vec![p3.clone(), p4.clone(), name("p5")]);
    assert_eq!(s.refused, 3);
    assert!(refusals(&evs).iter().all(|&l| l == "duplicate"));
    // Steps 4, 5, 6 (p3, p4, p5): the model moved by their mean only.
    for (a, b) in c.global().iter().zip(&after1) {
        assert!((a - b - 5.0).abs() < 1e-4, "{a} {b}");
    }
}

/// A keyed signer for the hook: frames must carry the sender's tag.
struct Tagged(&'static str);

impl Signer for Tagged {
    fn sign(&self, body: &[u8]) -> Vec<u8> {
        let mut s = self.0.as_bytes().to_vec();
        s.push(body.len() as u8);
        s
    }
    fn verify(&self, from: &NodeName, body: &[u8], sig: &[u8]) -> Result<(), String> {
        let want_from = if from.as_str() == "coord" {
            "coord"
        } else {
            "part"
        };
        let mut want = want_from.as_bytes().to_vec();
        want.push(body.len() as u8);
        if sig == want {
            Ok(())
        } else {
            Err(format!("tag of {from} does not verify"))
        }
    }
}

#[test]
fn the_signer_hook_signs_and_checks_every_frame() {
    let names = vec![name("a"), name("b")];
    let mut c = Coordinator::new(
        CoordinatorConfig {
            participants: names.clone(),
            per_round: 2,
            round_timeout: Duration::from_secs(1),
            min_updates: 1,
            max_rounds: 1,
            dp: None,
        },
        vec![0.0; 10],
        AggregatorKind::Median.build(),
        None,
        Arc::new(Tagged("coord")),
        1,
    );
    let mut parts: Vec<Participant> = names
        .iter()
        .map(|n| {
            let tag = if n.as_str() == "a" { "part" } else { "evil" };
            Participant::new(
                n.clone(),
                name("coord"),
                Box::new(Step(1.0)),
                Behaviour::honest(),
                Compression::default(),
                Arc::new(Tagged(tag)),
                0,
            )
        })
        .collect();
    c.handle_timeout(Instant::ZERO);
    events(&mut c);
    for (from, f) in to_participants(&mut c, &mut parts, Instant::ZERO) {
        c.handle_message(Instant::ZERO, &from, &f);
    }
    let evs = events(&mut c);
    assert_eq!(refusals(&evs), vec!["bad-signature"]);
    c.handle_timeout(Instant::ZERO + Duration::from_secs(1));
    let evs = events(&mut c);
    let Some(Event::RoundCompleted(s)) = evs.first() else {
        panic!("{evs:?}")
    };
    assert_eq!(s.aggregated, vec![name("a")]);
}

#[test]
fn rounds_past_the_privacy_budget_are_refused() {
    use x0tta6bl4_fl::dp::{DpConfig, RdpAccountant};
    let names: Vec<NodeName> = (0..4).map(|i| name(&format!("p{i}"))).collect();
    // Budget for exactly two rounds at q = 0.5, sigma = 2.
    let mut acc = RdpAccountant::new();
    acc.compose(0.5, 2.0, 2);
    let budget = acc.epsilon(1e-5) * 1.0001;
    let mut c = Coordinator::new(
        CoordinatorConfig {
            participants: names.clone(),
            per_round: 2,
            round_timeout: Duration::from_secs(1),
            min_updates: 1,
            max_rounds: 10,
            dp: Some(DpConfig {
                clip: 1.0,
                noise_multiplier: 2.0,
                delta: 1e-5,
                epsilon_budget: budget,
            }),
        },
        vec![0.0; 10],
        AggregatorKind::FedAvg.build(),
        None,
        Arc::new(NoSignatures),
        1,
    );
    let mut parts: Vec<Participant> = names
        .iter()
        .map(|n| {
            Participant::new(
                n.clone(),
                name("coord"),
                Box::new(Step(100.0)),
                Behaviour::honest(),
                Compression::default(),
                Arc::new(NoSignatures),
                0,
            )
        })
        .collect();
    let mut completed = Vec::new();
    for _ in 0..3 {
        c.handle_timeout(Instant::ZERO);
        for (from, f) in to_participants(&mut c, &mut parts, Instant::ZERO) {
            c.handle_message(Instant::ZERO, &from, &f);
        }
        for e in events(&mut c) {
            match e {
                Event::RoundCompleted(s) => completed.push(s.epsilon.unwrap()),
                Event::BudgetExhausted { epsilon, next } => {
                    assert!(epsilon <= budget && next > budget);
                    assert_eq!(completed.len(), 2);
                    // Clipped to norm 1 per update: the noisy mean stays near norm 1,
                    // far from the unclipped step of 100 per coordinate.
                    assert!(
                        c.global().iter().all(|g| g.abs() < 50.0),
                        "{:?}",
                        c.global()
                    );
                    return;
                }
                _ => {}
            }
        }
    }
    panic!("the budget was never enforced: {completed:?}");
}

#[test]
fn the_server_optimizer_steps_with_learning_rate_and_momentum() {
    let (c, mut parts) = setup(2, 2, 9);
    let mut c = c.with_server_optimizer(x0tta6bl4_fl::ServerOptimizer {
        lr: 0.5,
        momentum: 0.5,
    });
    // Steps 1 and 2: every round's aggregate is 1.5 per coordinate. Velocity 1.5,
    // 2.25, 2.625; the model moves by half of it: 0.75, 1.875, 3.1875.
    let now = Instant::ZERO;
    for want in [0.75f32, 1.875, 3.1875] {
        c.handle_timeout(now);
        events(&mut c);
        for (from, f) in to_participants(&mut c, &mut parts, now) {
            c.handle_message(now, &from, &f);
        }
        assert!(events(&mut c)
            .iter()
            .any(|e| matches!(e, Event::RoundCompleted(_))));
        let g = c.global();
        assert!(
            g.iter().all(|&v| (v - want).abs() < 1e-5),
            "{} != {want}",
            g[0]
        );
    }
}
