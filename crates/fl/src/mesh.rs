//! Federated learning over the mesh: the role one node plays, sans-IO.
//!
//! A [`MeshRole`] holds a [`Participant`] and, while this node coordinates, a
//! [`Coordinator`]; it adds what a federation of real nodes needs on top of them: an
//! envelope for the mesh's FL channel ([`FL_CHANNEL`]), the broadcast of every adopted
//! model, and the handover of the coordinator role when its host goes silent. Like the
//! machines it holds, it takes time and bytes as arguments and gives back frames,
//! deadlines and events; `x0tta6bl4 fl agent` drives it against a node daemon.
//!
//! ## The envelope
//!
//! Every payload on the FL channel is `tag u8 | frame`, the frame an [`crate::wire`]
//! frame signed by its sender (the node's SVID key in the agent):
//!
//! - tag 1: a coordinator/participant frame (`RoundStart`, `ModelChunk`,
//!   `UpdateChunk`), as between a [`Coordinator`] and a [`Participant`];
//! - tag 2: a `ModelChunk` of the model the coordinator adopted at the end of the
//!   frame's round, sent to every node: the state a successor resumes from;
//! - tag 3: a fragment, `id u32 | index u16 | count u16 | bytes`, of an envelope longer
//!   than the mesh's largest payload (`payload_max`, the node's `payload_bytes_max`;
//!   an FL frame is up to 64 KiB, a mesh payload at most 16 KiB). Fragments are
//!   reassembled per sender and id, at most [`REASSEMBLIES_MAX`] at once.
//!
//! ## Handover
//!
//! Every node has the same `order` of the federation's nodes. The node of rank 0
//! coordinates first. A coordinator is heard at least once a round (a `RoundStart`,
//! then the adopted model at the round's end), so a node that hears nothing from the
//! current coordinator for `failover_after` moves to the next rank: if that is itself
//! it coordinates, resuming after the last round it saw (started or adopted) from the
//! last model it adopted; otherwise it takes rounds from that node. A signed frame of
//! a coordinator of a higher rank moves a node (and a coordinator of a lower rank,
//! which steps down) to that rank at once; frames of a lower rank are ignored. The
//! nodes ranked before the new coordinator, presumed dead, are no longer sampled.
//!
//! This is a deterministic handover from the last adopted round's signed broadcast, not
//! a decision of the PBFT committee ([`crate::committee`]): the committee is not yet
//! carried over the mesh. Two nodes that time out at different moments agree again as
//! soon as the higher-ranked one sends its first frame; a coordinator that was only
//! slow, not dead, steps down when it hears its successor.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_proto::{Instant, NodeName};

use crate::aggregate::AggregatorKind;
use crate::coordinator::{Coordinator, CoordinatorConfig, Event, RoundSummary};
use crate::participant::{Behaviour, LocalTrainer, Participant, ParticipantEvent};
use crate::wire::{self, Message};
use crate::{Signer, Transmit};

/// The mesh application channel of federated learning (0 is messages, 1 probe flows).
pub const FL_CHANNEL: u8 = 2;
/// Envelope tag of a coordinator/participant frame.
pub const TAG_FRAME: u8 = 1;
/// Envelope tag of a chunk of an adopted model.
pub const TAG_ADOPTED: u8 = 2;
/// Envelope tag of a fragment of a longer envelope.
pub const TAG_FRAGMENT: u8 = 3;
/// Bytes of a fragment's header: tag, id u32, index u16, count u16.
const FRAGMENT_HEADER: usize = 1 + 4 + 2 + 2;
/// Most fragments of one envelope.
const FRAGMENTS_MAX: usize = 256;
/// Envelopes being reassembled at once (the oldest is given up).
const REASSEMBLIES_MAX: usize = 256;

/// The federation as one node sees it.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// This node.
    pub me: NodeName,
    /// Every node of the federation, in the order the coordinator role passes on.
    pub order: Vec<NodeName>,
    /// Rounds of the whole training.
    pub rounds: u64,
    /// Time a round waits for updates.
    pub round_timeout: Duration,
    /// Silence of the coordinator after which the next node in `order` takes over;
    /// longer than a round.
    pub failover_after: Duration,
    /// Fewest updates a round needs.
    pub min_updates: usize,
    /// Aggregation rule.
    pub aggregator: AggregatorKind,
    /// Seed of the sampling and training randomness (mixed with the rank).
    pub seed: u64,
    /// Largest payload the mesh carries (the node's `payload_bytes_max`); longer
    /// envelopes go in fragments.
    pub payload_max: usize,
}

/// What happened at this node.
#[derive(Clone, Debug, PartialEq)]
pub enum MeshEvent {
    /// This node takes rounds from `coordinator` now.
    Following {
        /// The coordinator.
        coordinator: NodeName,
        /// Why the role moved.
        reason: String,
    },
    /// This node coordinates now.
    Coordinating {
        /// The first round it starts.
        first_round: u64,
        /// The round of the model it resumes from (0: the initial model).
        model_round: u64,
        /// Why.
        reason: String,
    },
    /// A round started here.
    RoundStarted {
        /// Round.
        round: u64,
        /// Sampled participants.
        sampled: Vec<NodeName>,
    },
    /// A round here ended with a new model.
    RoundCompleted {
        /// What was aggregated.
        summary: RoundSummary,
        /// The adopted model.
        model: Vec<f32>,
    },
    /// A round here ended without a new model.
    RoundFailed {
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// An update refused here (coordinator).
    Refused {
        /// Round.
        round: u64,
        /// Sender.
        from: NodeName,
        /// Why.
        reason: String,
    },
    /// The model a coordinator adopted at the end of `round` arrived.
    Adopted {
        /// Round.
        round: u64,
        /// The coordinator.
        from: NodeName,
    },
    /// What the participant did.
    Participant(ParticipantEvent),
    /// A frame this role did not act on.
    Ignored {
        /// Sender.
        from: NodeName,
        /// Why.
        reason: String,
    },
    /// Every round is done (this node coordinated the last one).
    Finished,
    /// Every node of the order has been given up on.
    NoCoordinatorLeft,
}

struct Reassembly {
    from: NodeName,
    id: u32,
    parts: Vec<Option<Vec<u8>>>,
}

struct Adopting {
    round: u64,
    got: Vec<bool>,
    model: Vec<f32>,
}

/// One node's part in a federation over the mesh.
pub struct MeshRole {
    cfg: MeshConfig,
    me_rank: usize,
    coord_rank: usize,
    last_heard: Instant,
    adopted_round: u64,
    adopted: Vec<f32>,
    adopting: Option<Adopting>,
    highest_round: u64,
    participant: Participant,
    coordinator: Option<Coordinator>,
    signer: Arc<dyn Signer>,
    done: bool,
    next_fragment_id: u32,
    reassembly: VecDeque<Reassembly>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MeshEvent>,
}

impl MeshRole {
    /// This node's role from `now`, every node starting from `initial`; `trainer`
    /// trains on this node's data when it participates.
    pub fn new(
        cfg: MeshConfig,
        initial: Vec<f32>,
        trainer: Box<dyn LocalTrainer>,
        signer: Arc<dyn Signer>,
        now: Instant,
    ) -> Result<MeshRole, String> {
        let distinct: BTreeSet<&NodeName> = cfg.order.iter().collect();
        if distinct.len() != cfg.order.len() {
            return Err("the coordinator order names a node twice".into());
        }
        let me_rank = cfg
            .order
            .iter()
            .position(|n| n == &cfg.me)
            .ok_or_else(|| format!("{} is not in the coordinator order", cfg.me))?;
        if cfg.failover_after <= cfg.round_timeout {
            return Err(format!(
                "the failover time ({} ms) must be longer than a round ({} ms)",
                cfg.failover_after.as_millis(),
                cfg.round_timeout.as_millis()
            ));
        }
        if cfg.payload_max <= FRAGMENT_HEADER
            || cfg.payload_max * FRAGMENTS_MAX < wire::MAX_FRAME + FRAGMENTS_MAX * FRAGMENT_HEADER
        {
            return Err(format!(
                "a mesh payload of at most {} bytes is too small to carry FL frames",
                cfg.payload_max
            ));
        }
        if initial.is_empty() || initial.len() > wire::MAX_PARAMS as usize {
            return Err(format!("a model of {} parameters", initial.len()));
        }
        let participant = Participant::new(
            cfg.me.clone(),
            cfg.order[0].clone(),
            trainer,
            Behaviour::honest(),
            Default::default(),
            signer.clone(),
            cfg.seed ^ (me_rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let mut role = MeshRole {
            cfg,
            me_rank,
            coord_rank: 0,
            last_heard: now,
            adopted_round: 0,
            adopted: initial,
            adopting: None,
            highest_round: 0,
            participant,
            coordinator: None,
            signer,
            done: false,
            next_fragment_id: 0,
            reassembly: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if me_rank == 0 {
            role.coordinate(now, "first in the coordinator order".into());
        } else {
            role.events.push_back(MeshEvent::Following {
                coordinator: role.cfg.order[0].clone(),
                reason: "first in the coordinator order".into(),
            });
        }
        Ok(role)
    }

    /// The node rounds are taken from (this node while it coordinates).
    pub fn coordinator(&self) -> &NodeName {
        &self.cfg.order[self.coord_rank]
    }

    /// Whether this node coordinates.
    pub fn is_coordinating(&self) -> bool {
        self.coordinator.is_some()
    }

    /// The round of the last model adopted here, and the model.
    pub fn adopted(&self) -> (u64, &[f32]) {
        (self.adopted_round, &self.adopted)
    }

    /// Every round is done, as far as this node knows.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn rank_of(&self, name: &NodeName) -> Option<usize> {
        self.cfg.order.iter().position(|n| n == name)
    }

    fn ignore(&mut self, from: &NodeName, reason: String) {
        self.events.push_back(MeshEvent::Ignored {
            from: from.clone(),
            reason,
        });
    }

    /// Feed a payload delivered on [`FL_CHANNEL`] from `from`.
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, payload: &[u8]) {
        self.message(now, from, payload);
        self.drain();
    }

    fn message(&mut self, now: Instant, from: &NodeName, payload: &[u8]) {
        let Some((&tag, frame)) = payload.split_first() else {
            return self.ignore(from, "an empty payload".into());
        };
        if tag == TAG_FRAGMENT {
            match self.reassemble(from, frame) {
                Ok(Some(whole)) if whole.first() == Some(&TAG_FRAGMENT) => {
                    self.ignore(from, "a fragment inside a fragment".into())
                }
                Ok(Some(whole)) => self.message(now, from, &whole),
                Ok(None) => {}
                Err(e) => self.ignore(from, e),
            }
            return;
        }
        if tag != TAG_FRAME && tag != TAG_ADOPTED {
            return self.ignore(from, format!("unknown envelope tag {tag}"));
        }
        let (msg, body, signature) = match Message::decode(frame) {
            Ok(m) => m,
            Err(e) => return self.ignore(from, format!("malformed frame: {e}")),
        };
        if let Err(e) = self.signer.verify(from, body, signature) {
            return self.ignore(from, format!("bad signature: {e}"));
        }
        let Some(rank) = self.rank_of(from) else {
            return self.ignore(from, "not a node of the federation".into());
        };
        if let Message::UpdateChunk { .. } = msg {
            if tag != TAG_FRAME {
                return self.ignore(from, "an update in an adopted-model envelope".into());
            }
            match self.coordinator.as_mut() {
                Some(c) => c.handle_message(now, from, frame),
                None => self.ignore(from, "an update, and this node does not coordinate".into()),
            }
            return;
        }
        // A frame only a coordinator sends.
        if rank == self.me_rank {
            return self.ignore(from, "a coordinator frame from this very node".into());
        }
        if rank < self.coord_rank {
            return self.ignore(
                from,
                format!(
                    "a coordinator frame from {from}, whose turn ended ({} coordinates)",
                    self.coordinator()
                ),
            );
        }
        if rank > self.coord_rank {
            self.coordinator = None;
            self.coord_rank = rank;
            self.participant.set_coordinator(from.clone());
            self.events.push_back(MeshEvent::Following {
                coordinator: from.clone(),
                reason: format!("{from} sent a signed coordinator frame"),
            });
        }
        self.last_heard = now;
        match (tag, msg) {
            (TAG_FRAME, Message::RoundStart { round, .. }) => {
                self.highest_round = self.highest_round.max(round);
                self.participant.handle_message(now, from, frame);
            }
            (TAG_FRAME, _) => self.participant.handle_message(now, from, frame),
            (
                _,
                Message::ModelChunk {
                    round,
                    index,
                    offset,
                    values,
                },
            ) => self.adopt_chunk(from, round, index, offset, &values),
            (_, _) => self.ignore(
                from,
                "an adopted-model envelope without a model chunk".into(),
            ),
        }
    }

    /// Keep a fragment; the whole envelope once every fragment is in.
    fn reassemble(&mut self, from: &NodeName, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if bytes.len() < FRAGMENT_HEADER - 1 {
            return Err("a fragment shorter than its header".into());
        }
        let id = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        let index = usize::from(u16::from_le_bytes([bytes[4], bytes[5]]));
        let count = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
        if !(2..=FRAGMENTS_MAX).contains(&count) || index >= count {
            return Err(format!("fragment {index} of {count}"));
        }
        let at = match self
            .reassembly
            .iter()
            .position(|r| r.id == id && &r.from == from)
        {
            Some(at) => at,
            None => {
                if self.reassembly.len() >= REASSEMBLIES_MAX {
                    self.reassembly.pop_front();
                }
                self.reassembly.push_back(Reassembly {
                    from: from.clone(),
                    id,
                    parts: vec![None; count],
                });
                self.reassembly.len() - 1
            }
        };
        let r = &mut self.reassembly[at];
        if r.parts.len() != count {
            return Err(format!("fragment count {count} changed for id {id}"));
        }
        r.parts[index] = Some(bytes[8..].to_vec());
        if r.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let r = self.reassembly.remove(at).expect("present");
        let whole: Vec<u8> = r.parts.into_iter().flatten().flatten().collect();
        if whole.len() > wire::MAX_FRAME + 1 {
            return Err(format!("a reassembled envelope of {} bytes", whole.len()));
        }
        Ok(Some(whole))
    }

    /// Queue `envelope` for `to`, in fragments if it is longer than a mesh payload.
    fn send(&mut self, to: NodeName, envelope: Vec<u8>) {
        if envelope.len() <= self.cfg.payload_max {
            return self.transmits.push_back(Transmit {
                to,
                bytes: envelope,
            });
        }
        let id = self.next_fragment_id;
        self.next_fragment_id = self.next_fragment_id.wrapping_add(1);
        let pieces: Vec<&[u8]> = envelope
            .chunks(self.cfg.payload_max - FRAGMENT_HEADER)
            .collect();
        for (index, piece) in pieces.iter().enumerate() {
            let mut bytes = Vec::with_capacity(FRAGMENT_HEADER + piece.len());
            bytes.push(TAG_FRAGMENT);
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&(index as u16).to_le_bytes());
            bytes.extend_from_slice(&(pieces.len() as u16).to_le_bytes());
            bytes.extend_from_slice(piece);
            self.transmits.push_back(Transmit {
                to: to.clone(),
                bytes,
            });
        }
    }

    fn adopt_chunk(
        &mut self,
        from: &NodeName,
        round: u64,
        index: u16,
        offset: u32,
        values: &[f32],
    ) {
        if round <= self.adopted_round {
            return self.ignore(
                from,
                format!(
                    "adopted model of round {round}, round {} is adopted",
                    self.adopted_round
                ),
            );
        }
        let n = self.adopted.len();
        let chunks = wire::dense_chunk_count(n);
        let (i, offset) = (usize::from(index), offset as usize);
        let fits = i < chunks
            && offset == i * wire::DENSE_CHUNK
            && offset + values.len() <= n
            && (i + 1 < chunks || offset + values.len() == n)
            && values.iter().all(|v| v.is_finite());
        if !fits {
            return self.ignore(
                from,
                format!("adopted-model chunk {index} does not fit a model of {n}"),
            );
        }
        if self.adopting.as_ref().is_none_or(|a| a.round != round) {
            self.adopting = Some(Adopting {
                round,
                got: vec![false; chunks],
                model: self.adopted.clone(),
            });
        }
        let a = self.adopting.as_mut().expect("set above");
        a.model[offset..offset + values.len()].copy_from_slice(values);
        a.got[i] = true;
        if a.got.iter().all(|&g| g) {
            let a = self.adopting.take().expect("present");
            self.adopted_round = a.round;
            self.adopted = a.model;
            self.highest_round = self.highest_round.max(a.round);
            self.done = a.round >= self.cfg.rounds;
            self.events.push_back(MeshEvent::Adopted {
                round: a.round,
                from: from.clone(),
            });
        }
    }

    fn coordinate(&mut self, now: Instant, reason: String) {
        let participants: Vec<NodeName> = self.cfg.order[self.me_rank + 1..].to_vec();
        let after = self.adopted_round.max(self.highest_round);
        self.coord_rank = self.me_rank;
        self.participant.set_coordinator(self.cfg.me.clone());
        self.events.push_back(MeshEvent::Coordinating {
            first_round: after + 1,
            model_round: self.adopted_round,
            reason,
        });
        if participants.is_empty() {
            self.done = true;
            self.events.push_back(MeshEvent::NoCoordinatorLeft);
            return;
        }
        let cfg = CoordinatorConfig {
            per_round: participants.len(),
            participants,
            round_timeout: self.cfg.round_timeout,
            min_updates: self.cfg.min_updates,
            max_rounds: self.cfg.rounds,
            dp: None,
        };
        let coordinator = Coordinator::new(
            cfg,
            self.adopted.clone(),
            self.cfg.aggregator.build(),
            None,
            self.signer.clone(),
            self.cfg.seed ^ (self.me_rank as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03),
        )
        .resume_after(after);
        self.coordinator = Some(coordinator);
        if let Some(c) = self.coordinator.as_mut() {
            c.handle_timeout(now);
        }
        self.drain();
    }

    /// Advance time: the coordinator's and participant's timers, and the handover when
    /// the coordinator has been silent for `failover_after`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(c) = self.coordinator.as_mut() {
            c.handle_timeout(now);
        }
        self.participant.handle_timeout(now);
        if self.coordinator.is_none()
            && !self.done
            && now >= self.last_heard + self.cfg.failover_after
        {
            let silent = self.coordinator().clone();
            let reason = format!(
                "{silent} was silent for {} ms",
                self.cfg.failover_after.as_millis()
            );
            self.last_heard = now;
            self.coord_rank += 1;
            if self.coord_rank >= self.cfg.order.len() {
                self.coord_rank = self.cfg.order.len() - 1;
                self.done = true;
                self.events.push_back(MeshEvent::NoCoordinatorLeft);
            } else if self.coord_rank == self.me_rank {
                self.coordinate(now, reason);
            } else {
                let next = self.cfg.order[self.coord_rank].clone();
                self.participant.set_coordinator(next.clone());
                self.events.push_back(MeshEvent::Following {
                    coordinator: next,
                    reason,
                });
            }
        }
        self.drain();
    }

    /// When [`MeshRole::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let failover = (self.coordinator.is_none() && !self.done)
            .then(|| self.last_heard + self.cfg.failover_after);
        [
            self.coordinator
                .as_ref()
                .and_then(Coordinator::poll_timeout),
            self.participant.poll_timeout(),
            failover,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next payload to send on [`FL_CHANNEL`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MeshEvent> {
        self.events.pop_front()
    }

    fn envelope(tag: u8, frame: Vec<u8>) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(frame.len() + 1);
        bytes.push(tag);
        bytes.extend_from_slice(&frame);
        bytes
    }

    /// Send the adopted model of `round` to every other node.
    fn broadcast_adopted(&mut self, round: u64) {
        let frames: Vec<Vec<u8>> = wire::model_chunks(round, &self.adopted)
            .iter()
            .map(|m| {
                let frame = m.encode(&self.signer.sign(&m.encode_body()));
                MeshRole::envelope(TAG_ADOPTED, frame)
            })
            .collect();
        let others: Vec<NodeName> = self
            .cfg
            .order
            .iter()
            .filter(|n| **n != self.cfg.me)
            .cloned()
            .collect();
        for to in others {
            for bytes in &frames {
                self.send(to.clone(), bytes.clone());
            }
        }
    }

    /// The frames the coordinator and the participant queued, enveloped.
    fn collect_frames(&mut self) {
        let mut out = Vec::new();
        if let Some(c) = self.coordinator.as_mut() {
            while let Some(t) = c.poll_transmit() {
                out.push(t);
            }
        }
        while let Some(t) = self.participant.poll_transmit() {
            out.push(t);
        }
        for t in out {
            self.send(t.to, MeshRole::envelope(TAG_FRAME, t.bytes));
        }
    }

    fn drain(&mut self) {
        self.collect_frames();
        let mut coordinator_events = Vec::new();
        if let Some(c) = self.coordinator.as_mut() {
            while let Some(e) = c.poll_event() {
                coordinator_events.push((e, c.global().to_vec()));
            }
        }
        for (event, global) in coordinator_events {
            match event {
                Event::RoundStarted { round, sampled } => {
                    self.highest_round = self.highest_round.max(round);
                    self.events
                        .push_back(MeshEvent::RoundStarted { round, sampled });
                }
                Event::Refused {
                    round,
                    from,
                    reason,
                } => self.events.push_back(MeshEvent::Refused {
                    round,
                    from,
                    reason: reason.to_string(),
                }),
                Event::RoundCompleted(summary) => {
                    let round = summary.round;
                    self.adopted_round = round;
                    self.adopted = global.clone();
                    self.broadcast_adopted(round);
                    self.events.push_back(MeshEvent::RoundCompleted {
                        summary,
                        model: global,
                    });
                }
                Event::RoundFailed { round, reason } => {
                    // The model stays; its broadcast tells every node the round is over
                    // and that this coordinator is alive.
                    self.adopted_round = round;
                    self.broadcast_adopted(round);
                    self.events
                        .push_back(MeshEvent::RoundFailed { round, reason });
                }
                Event::BudgetExhausted { .. } | Event::Finished => {
                    self.done = true;
                    self.events.push_back(MeshEvent::Finished);
                }
            }
        }
        self.collect_frames();
        while let Some(e) = self.participant.poll_event() {
            self.events.push_back(MeshEvent::Participant(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoSignatures;
    use rand_chacha::ChaCha8Rng;

    /// Moves every parameter half way to 1.0: a federation whose model converges to all
    /// ones, so a round's effect is visible in the adopted model.
    struct TowardsOne;

    impl LocalTrainer for TowardsOne {
        fn train(
            &mut self,
            global: &[f32],
            _flip: bool,
            _rng: &mut ChaCha8Rng,
        ) -> Result<(Vec<f32>, u64), String> {
            Ok((global.iter().map(|g| g + (1.0 - g) / 2.0).collect(), 10))
        }
    }

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    /// `n` roles over a lossless network with 1 ms hops; `dead` nodes (by index) stop
    /// at their kill time: nothing is delivered to or from them after it.
    struct Net {
        roles: Vec<MeshRole>,
        kills: Vec<(usize, Instant)>,
        now: Instant,
        queue: VecDeque<(Instant, NodeName, NodeName, Vec<u8>)>,
        log: Vec<(usize, MeshEvent)>,
    }

    impl Net {
        fn new(n: usize, rounds: u64) -> Net {
            let order: Vec<NodeName> = (0..n).map(|i| name(&format!("n{i}"))).collect();
            let roles = order
                .iter()
                .map(|me| {
                    let cfg = MeshConfig {
                        me: me.clone(),
                        order: order.clone(),
                        rounds,
                        round_timeout: Duration::from_millis(200),
                        failover_after: Duration::from_millis(500),
                        min_updates: 1,
                        aggregator: AggregatorKind::FedAvg,
                        seed: 7,
                        payload_max: 1024,
                    };
                    MeshRole::new(
                        cfg,
                        vec![0.0; 1000],
                        Box::new(TowardsOne),
                        Arc::new(NoSignatures),
                        Instant::ZERO,
                    )
                    .unwrap()
                })
                .collect();
            Net {
                roles,
                kills: Vec::new(),
                now: Instant::ZERO,
                queue: VecDeque::new(),
                log: Vec::new(),
            }
        }

        fn dead(&self, i: usize) -> bool {
            self.kills.iter().any(|&(k, at)| k == i && self.now >= at)
        }

        fn index(&self, n: &NodeName) -> usize {
            self.roles.iter().position(|r| &r.cfg.me == n).unwrap()
        }

        fn run_until(&mut self, end: Instant) {
            while self.now < end {
                for i in 0..self.roles.len() {
                    if self.dead(i) {
                        continue;
                    }
                    if self.roles[i].poll_timeout().is_some_and(|t| t <= self.now) {
                        self.roles[i].handle_timeout(self.now);
                    }
                    while let Some(t) = self.roles[i].poll_transmit() {
                        let from = self.roles[i].cfg.me.clone();
                        let at = self.now + Duration::from_millis(1);
                        self.queue.push_back((at, from, t.to, t.bytes));
                    }
                    while let Some(e) = self.roles[i].poll_event() {
                        self.log.push((i, e));
                    }
                }
                while self.queue.front().is_some_and(|m| m.0 <= self.now) {
                    let (_, from, to, bytes) = self.queue.pop_front().unwrap();
                    let (f, t) = (self.index(&from), self.index(&to));
                    if !self.dead(f) && !self.dead(t) {
                        self.roles[t].handle_message(self.now, &from, &bytes);
                    }
                }
                self.now = self.now + Duration::from_millis(1);
            }
        }

        fn completed(&self) -> Vec<(u64, usize)> {
            self.log
                .iter()
                .filter_map(|(i, e)| match e {
                    MeshEvent::RoundCompleted { summary, .. } => Some((summary.round, *i)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn rounds_run_and_every_node_adopts_the_model() {
        let mut net = Net::new(4, 3);
        net.run_until(Instant::ZERO + Duration::from_secs(3));
        assert_eq!(net.completed(), vec![(1, 0), (2, 0), (3, 0)]);
        for r in &net.roles {
            assert_eq!(r.adopted().0, 3, "{}", r.cfg.me);
            assert!((r.adopted().1[0] - 0.875).abs() < 1e-6);
            assert!(r.is_done());
        }
    }

    #[test]
    fn the_next_node_takes_over_from_the_last_adopted_model() {
        let mut net = Net::new(5, 12);
        // A participant dies early (every round then waits for its deadline, 200 ms);
        // the coordinator dies during round 6 or so.
        net.kills
            .push((4, Instant::ZERO + Duration::from_millis(10)));
        net.kills
            .push((0, Instant::ZERO + Duration::from_millis(700)));
        net.run_until(Instant::ZERO + Duration::from_secs(10));
        let done = net.completed();
        let before: Vec<u64> = done.iter().filter(|d| d.1 == 0).map(|d| d.0).collect();
        let after: Vec<u64> = done.iter().filter(|d| d.1 == 1).map(|d| d.0).collect();
        assert!(!before.is_empty(), "{done:?}");
        assert!(!after.is_empty(), "{done:?}");
        assert_eq!(after.last(), Some(&12), "{done:?}");
        assert!(after[0] > *before.last().unwrap());
        assert!(done.iter().all(|d| d.1 <= 1), "{done:?}");
        // The successor resumed from the model its predecessor adopted: every round
        // moved the model half way to 1, so it is 1 - 2^-(completed rounds).
        let rounds = done.len() as i32;
        let model = net.roles[1].adopted().1[0];
        assert!(
            (model - (1.0 - 0.5f32.powi(rounds))).abs() < 1e-5,
            "{model} after {rounds}"
        );
        for i in [2, 3] {
            assert_eq!(net.roles[i].coordinator(), &name("n1"));
            assert_eq!(net.roles[i].adopted().0, 12);
        }
    }

    #[test]
    fn a_frame_from_a_later_coordinator_moves_the_role_at_once() {
        let mut net = Net::new(3, 50);
        net.run_until(Instant::ZERO + Duration::from_millis(30));
        // n1 believes n0 is gone (a partition only it saw) and starts coordinating.
        let t = net.now;
        net.roles[1].handle_timeout(t + Duration::from_millis(600));
        assert!(net.roles[1].is_coordinating());
        net.run_until(t + Duration::from_millis(100));
        assert!(!net.roles[0].is_coordinating(), "n0 stepped down");
        assert_eq!(net.roles[2].coordinator(), &name("n1"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let cfg = |order: Vec<&str>, failover: u64| MeshConfig {
            me: name("a"),
            order: order.into_iter().map(name).collect(),
            rounds: 1,
            round_timeout: Duration::from_millis(100),
            failover_after: Duration::from_millis(failover),
            min_updates: 1,
            aggregator: AggregatorKind::FedAvg,
            seed: 1,
            payload_max: 16_384,
        };
        let role = |c| {
            MeshRole::new(
                c,
                vec![0.0; 3],
                Box::new(TowardsOne),
                Arc::new(NoSignatures),
                Instant::ZERO,
            )
            .err()
            .unwrap_or_default()
        };
        assert!(role(cfg(vec!["b"], 500)).contains("not in the coordinator order"));
        assert!(role(cfg(vec!["a", "a"], 500)).contains("twice"));
        assert!(role(cfg(vec!["a", "b"], 100)).contains("longer than a round"));
        let mut small = cfg(vec!["a", "b"], 500);
        small.payload_max = 200;
        assert!(role(small).contains("too small"));
    }

    fn ignored(role: &mut MeshRole) -> Vec<String> {
        std::iter::from_fn(|| role.poll_event())
            .filter_map(|e| match e {
                MeshEvent::Ignored { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    /// Frames signed with ECDSA keys: a forged signature, an outsider and bad
    /// fragments are ignored with their reason, and nothing is adopted from them.
    #[test]
    fn forged_outsider_and_malformed_payloads_are_ignored() {
        use crate::keys::EcdsaKey;
        use crate::{AuthSigner, Authenticator};
        let key = || Arc::new(EcdsaKey::generate().unwrap().0);
        let (a, b, mallory) = (key(), key(), key());
        let credentials: std::collections::BTreeMap<NodeName, Vec<u8>> = [
            (name("a"), a.public_key().to_vec()),
            (name("b"), b.public_key().to_vec()),
        ]
        .into();
        let cfg = MeshConfig {
            me: name("b"),
            order: vec![name("a"), name("b")],
            rounds: 3,
            round_timeout: Duration::from_millis(100),
            failover_after: Duration::from_millis(500),
            min_updates: 1,
            aggregator: AggregatorKind::FedAvg,
            seed: 1,
            payload_max: 1024,
        };
        let signer = |k: Arc<EcdsaKey>| -> Arc<dyn Signer> {
            Arc::new(AuthSigner::new(k, credentials.clone()))
        };
        let mut role_b = MeshRole::new(
            cfg,
            vec![0.0; 4],
            Box::new(TowardsOne),
            signer(b),
            Instant::ZERO,
        )
        .unwrap();
        let adopted = |k: Arc<EcdsaKey>| {
            let m = &wire::model_chunks(1, &[1.0; 4])[0];
            let frame = m.encode(&k.sign(&m.encode_body()));
            MeshRole::envelope(TAG_ADOPTED, frame)
        };
        let now = Instant::ZERO + Duration::from_millis(1);
        role_b.handle_message(now, &name("a"), &adopted(mallory.clone()));
        role_b.handle_message(now, &name("m"), &adopted(mallory));
        role_b.handle_message(now, &name("a"), &[]);
        role_b.handle_message(now, &name("a"), &[9, 1, 2]);
        role_b.handle_message(now, &name("a"), &[TAG_FRAGMENT, 0, 0, 0, 0, 5, 0, 2, 0, 1]);
        role_b.handle_message(now, &name("a"), &[TAG_FRAGMENT, 1]);
        let reasons = ignored(&mut role_b);
        assert_eq!(reasons.len(), 6, "{reasons:#?}");
        for (reason, want) in reasons.iter().zip([
            "bad signature",
            "bad signature", // no credential for m
            "empty",
            "unknown envelope tag 9",
            "fragment 5 of 2",
            "shorter than its header",
        ]) {
            assert!(reason.contains(want), "{reason} lacks {want}");
        }
        assert_eq!(role_b.adopted().0, 0);
        // The genuine frame, in two fragments, is adopted.
        let whole = adopted(a.clone());
        let half = whole.len() / 2;
        for (index, piece) in [&whole[..half], &whole[half..]].into_iter().enumerate() {
            let mut bytes = vec![TAG_FRAGMENT, 7, 0, 0, 0, index as u8, 0, 2, 0];
            bytes.extend_from_slice(piece);
            role_b.handle_message(now, &name("a"), &bytes);
        }
        assert_eq!(role_b.adopted(), (1, &[1.0f32; 4][..]));
        assert!(ignored(&mut role_b).is_empty());
    }
}
