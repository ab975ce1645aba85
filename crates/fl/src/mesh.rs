//! Federated learning over the mesh: the role one node plays, sans-IO.
//!
//! A [`MeshRole`] holds a [`Participant`], a committee [`Replica`] and, while this node
//! coordinates a round, a [`Coordinator`]; it adds what a federation of real nodes
//! needs on top of them: an envelope for the mesh's FL channel ([`FL_CHANNEL`]), the
//! committee's messages on the same channel, the rule that a model is adopted only
//! once the committee committed a block naming its hash, and the handover of the
//! coordinator role, itself a committed decision. Like the machines it holds, it takes
//! time and bytes as arguments and gives back frames, deadlines, training jobs and
//! events; `x0tta6bl4 fl agent` drives it against a node daemon.
//!
//! ## The envelope
//!
//! Every payload on the FL channel is `tag u8 | body`:
//!
//! - tag 1 ([`TAG_FRAME`]): a coordinator/participant [`crate::wire`] frame
//!   (`RoundStart`, `ModelChunk`, `UpdateChunk`) signed by its sender (the node's SVID
//!   key in the agent), as between a [`Coordinator`] and a [`Participant`];
//! - tag 2 ([`TAG_PROPOSED`]): a signed `ModelChunk` of the model a coordinator
//!   aggregated at the end of the frame's round, sent to every node; kept by its
//!   SHA-256 until a committed block names that hash;
//! - tag 3 ([`TAG_FRAGMENT`]): a fragment, `id u32 | index u16 | count u16 | bytes`, of
//!   an envelope longer than the mesh's largest payload (`payload_max`, the node's
//!   `payload_bytes_max`; an FL frame is up to 64 KiB, a mesh payload at most 16 KiB).
//!   Fragments are reassembled per sender and id, at most [`REASSEMBLIES_MAX`] at once;
//! - tag 4 ([`TAG_COMMITTEE`]): a committee message ([`crate::committee::Message`],
//!   signed inside with the sender's key);
//! - tag 5 ([`TAG_SUBMIT`]): a round's result submitted by its coordinator to every
//!   candidate: `signature length u16 | signature | Decision JSON`, the signature over
//!   `x0tta6bl4-fl-submit\n` and the JSON;
//! - tag 6 ([`TAG_MODEL_REQUEST`]): `round u64 | SHA-256`, asking the other nodes for
//!   the model a committed block names, which this node lacks (the coordinator's
//!   broadcast was lost, or it died sending it); a node holding it answers with tag 2
//!   chunks, checked against the block's hash.
//!
//! ## A round
//!
//! The coordinator named by the committed chain (the first node of `order` until a
//! coordinator change is committed) starts round r+1 from the last committed model,
//! collects updates, aggregates, sends the new model to every node (tag 2) and submits
//! the round's [`Decision`] (round, model hash, participants, aggregation rule,
//! suspected attackers, ε, accuracy) to every candidate; the committee of the epoch
//! (3f+1 of the candidates, [`crate::committee::draw`]) commits it. Every node adopts a
//! model only once it holds the committed block naming its hash and the model itself
//! ([`MeshEvent::Committed`], which the driver appends to its audit trail), and a
//! participant trains only on a round model whose hash is the last committed one: the
//! frames of a round are held until then. The coordinator starts the next round only
//! after its round's block is committed.
//!
//! ## Handover
//!
//! A node that hears nothing from the committed coordinator for `failover_after`
//! submits a coordinator change to the committee: the first node after the silent one
//! in `order` that it heard from within `failover_after`, resuming from the last
//! committed model (its version and hash). The committee commits one such decision
//! (its leader's, or after a view change the next leader's); every node then follows
//! the committed successor, which starts the round after the highest one it saw. The
//! committee's [`BlockRules`] ([`FedState`]) accept a round result only from the
//! committed coordinator (signed by it: [`Decision::signed`]) and for a later round,
//! and a coordinator change only from the committed coordinator to another live
//! candidate at the committed model; besides, a validator prepares a change only once it
//! suspects the coordinator itself (half of `failover_after` without hearing from it,
//! [`Replica::watch`]), so a Byzantine leader cannot depose a live coordinator. So no
//! node follows a coordinator the committee did not choose, and PBFT's safety (at most
//! f Byzantine validators) means no two nodes commit different blocks at one height.
//!
//! ## Rollback
//!
//! A rollback is a committed decision too ([`MeshRole::with_rollback`], planned at
//! every node): once the planned round is committed, the committed coordinator, before
//! its next round, signs and submits a decision naming the version to restore
//! (`rollback_to`), that version's model hash and the committed round. The rules accept
//! it only from the committed coordinator and only to an earlier committed model version
//! (not the current one), with that version's model. Every node adopts the restored
//! model once the block is committed, taking it from its driver's store
//! ([`MeshRole::with_model_store`]: the audit trail holds every committed model) or
//! asking the other nodes for it (tag 6); the next round trains from it. A node that
//! applies the block drops its plan, so a coordinator that takes over later does not
//! roll back again.
//!
//! Training can run outside the role ([`MeshConfig::train_outside`]): the participant
//! then hands each round's training to the driver as a [`TrainJob`] and the driver
//! gives the result back with [`MeshRole::trained`], so the role keeps handling frames
//! (committee votes included) while a model trains on another thread.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use x0tta6bl4_proto::{Authenticator, Instant, NodeName};

use crate::aggregate::AggregatorKind;
use crate::audit::model_hash;
use crate::committee::{
    Block, BlockRules, CommitteeConfig, CommitteeEvent, Decision, Digest, Handover,
    QuorumCertificate, Replica, Verifier,
};
use crate::coordinator::{Coordinator, CoordinatorConfig, Event, RoundSummary};
use crate::participant::{Behaviour, LocalTrainer, Participant, ParticipantEvent, TrainJob};
use crate::wire::{self, Message};
use crate::{Signer, Transmit};

/// The mesh application channel of federated learning (0 is messages, 1 probe flows).
pub const FL_CHANNEL: u8 = 2;
/// Envelope tag of a coordinator/participant frame.
pub const TAG_FRAME: u8 = 1;
/// Envelope tag of a chunk of a model a coordinator proposes.
pub const TAG_PROPOSED: u8 = 2;
/// Envelope tag of a fragment of a longer envelope.
pub const TAG_FRAGMENT: u8 = 3;
/// Envelope tag of a committee message.
pub const TAG_COMMITTEE: u8 = 4;
/// Envelope tag of a decision a coordinator submits to the committee.
pub const TAG_SUBMIT: u8 = 5;
/// Envelope tag of a request for a committed model this node lacks.
pub const TAG_MODEL_REQUEST: u8 = 6;
/// Bytes of a fragment's header: tag, id u32, index u16, count u16.
const FRAGMENT_HEADER: usize = 1 + 4 + 2 + 2;
/// Most fragments of one envelope.
const FRAGMENTS_MAX: usize = 256;
/// Envelopes being reassembled at once (the oldest is given up).
const REASSEMBLIES_MAX: usize = 256;
/// Proposed models kept (by hash) until a committed block names one.
const PROPOSED_MAX: usize = 8;
/// Domain tag of a submission's signature.
const SUBMIT_DOMAIN: &[u8] = b"x0tta6bl4-fl-submit\n";

/// The federation as one node sees it.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// This node.
    pub me: NodeName,
    /// Every node of the federation; the first coordinates first, and a node proposing
    /// a coordinator change names the first live node after the silent one.
    pub order: Vec<NodeName>,
    /// Rounds of the whole training (committed rounds).
    pub rounds: u64,
    /// Time a round waits for updates.
    pub round_timeout: Duration,
    /// Silence of the committed coordinator after which this node asks the committee
    /// for a coordinator change; longer than a round.
    pub failover_after: Duration,
    /// Fewest updates a round needs.
    pub min_updates: usize,
    /// Aggregation rule.
    pub aggregator: AggregatorKind,
    /// Seed of the sampling and training randomness (mixed with the rank and round).
    pub seed: u64,
    /// Largest payload the mesh carries (the node's `payload_bytes_max`); longer
    /// envelopes go in fragments.
    pub payload_max: usize,
    /// The committee; its candidates must be the nodes of `order`.
    pub committee: CommitteeConfig,
    /// Hand local training to the driver ([`MeshRole::poll_train`],
    /// [`MeshRole::trained`]) instead of training inside `handle_message`.
    pub train_outside: bool,
}

/// The federation's state after the committed blocks: what the committee's rules
/// judge the next block by, and what every node acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct FedState {
    /// The coordinator.
    pub coordinator: NodeName,
    /// The last committed round (or the round a handover resumed after).
    pub round: u64,
    /// Hash of the last committed model.
    pub model: Digest,
    /// Its version (block height; 0 for the initial model).
    pub model_version: u64,
    /// Height of the last block.
    pub height: u64,
    /// Coordinators replaced for silence (never sampled again).
    pub retired: BTreeSet<NodeName>,
    /// The model of every committed model version (round results and rollbacks):
    /// what a rollback may restore.
    pub versions: BTreeMap<u64, Digest>,
    candidates: BTreeSet<NodeName>,
}

impl FedState {
    /// The state before any block: `first` coordinates, from the model of hash
    /// `initial`.
    pub fn new(candidates: &[NodeName], first: NodeName, initial: Digest) -> FedState {
        FedState {
            coordinator: first,
            round: 0,
            model: initial,
            model_version: 0,
            height: 0,
            retired: BTreeSet::new(),
            versions: BTreeMap::new(),
            candidates: candidates.iter().cloned().collect(),
        }
    }

    /// Apply a committed block.
    pub fn apply(&mut self, block: &Block) {
        let d = &block.decision;
        self.height = block.height;
        match (&d.handover, &d.coordinator) {
            (Some(h), Some(to)) => {
                self.retired.insert(h.replaces.clone());
                self.coordinator = to.clone();
                self.round = self.round.max(d.round);
            }
            _ => {
                // A round result, or a rollback (which keeps the round).
                self.round = d.round;
                self.model = d.model_hash;
                self.model_version = block.height;
                self.versions.insert(block.height, d.model_hash);
            }
        }
    }

    /// Whether `d` may be the next block.
    pub fn check(&self, d: &Decision) -> Result<(), String> {
        let Some(named) = &d.coordinator else {
            return Err("a decision over the mesh names its coordinator".into());
        };
        // Who proposed it (the signature itself is checked by the replica against the
        // signer's credential, `Verifier::check_decision`).
        let Some(signed) = &d.signed else {
            return Err("a decision over the mesh is signed by its proposer".into());
        };
        if !self.candidates.contains(&signed.by) {
            return Err(format!(
                "signed by {}, not a node of the federation",
                signed.by
            ));
        }
        if let Some(to) = d.rollback_to {
            return self.check_rollback(d, named, &signed.by, to);
        }
        if let Some(h) = &d.handover {
            if h.replaces != self.coordinator {
                return Err(format!(
                    "coordinator change replaces {}, but {} coordinates",
                    h.replaces, self.coordinator
                ));
            }
            if *named == h.replaces
                || !self.candidates.contains(named)
                || self.retired.contains(named)
            {
                return Err(format!("{named} cannot take over"));
            }
            if d.model_hash != self.model || h.model_version != self.model_version {
                return Err(format!(
                    "coordinator change resumes from version {}, the committed one is {}",
                    h.model_version, self.model_version
                ));
            }
            if d.round < self.round || !d.participants.is_empty() {
                return Err("a coordinator change with an earlier round or participants".into());
            }
            return Ok(());
        }
        if *named != self.coordinator {
            return Err(format!(
                "round {} from {named}, but {} coordinates",
                d.round, self.coordinator
            ));
        }
        if signed.by != *named {
            return Err(format!(
                "round {} of {named} signed by {}, not by its coordinator",
                d.round, signed.by
            ));
        }
        if d.round <= self.round {
            return Err(format!(
                "round {} is not after the committed round {}",
                d.round, self.round
            ));
        }
        if let Some(n) = d.participants.iter().find(|n| !self.candidates.contains(n)) {
            return Err(format!("participant {n} is not a node of the federation"));
        }
        Ok(())
    }
}

impl FedState {
    /// A rollback to version `to`: only the committed coordinator asks for one (signed
    /// by it), to an earlier committed model version other than the current one, naming
    /// that version's model, at the committed round and with no participants.
    fn check_rollback(
        &self,
        d: &Decision,
        named: &NodeName,
        by: &NodeName,
        to: u64,
    ) -> Result<(), String> {
        if d.handover.is_some() {
            return Err("a decision is a rollback or a coordinator change, not both".into());
        }
        if *named != self.coordinator || by != named {
            return Err(format!(
                "rollback asked by {by} for {named}, but {} coordinates",
                self.coordinator
            ));
        }
        match self.versions.get(&to) {
            None => {
                return Err(format!(
                    "rollback to version {to}: no committed model version {to}"
                ))
            }
            Some(h) if *h != d.model_hash => {
                return Err(format!(
                    "rollback to {to} names another model than version {to}'s"
                ))
            }
            Some(_) => {}
        }
        if to == self.model_version {
            return Err(format!("version {to} is the current model already"));
        }
        if d.round != self.round || !d.participants.is_empty() || !d.suspected.is_empty() {
            return Err(format!(
                "a rollback keeps the committed round {} and names no participants",
                self.round
            ));
        }
        Ok(())
    }
}

impl BlockRules for FedState {
    fn check(&self, decision: &Decision) -> Result<(), String> {
        FedState::check(self, decision)
    }
    fn committed(&mut self, block: &Block) {
        self.apply(block);
    }
}

/// Measures a model's test accuracy (put in its round's decision).
pub type Evaluator = Box<dyn Fn(&[f32]) -> Option<f64> + Send>;

/// Finds a committed model by its hash outside the role (the driver's audit trail):
/// what a rollback restores, and what this node sends a node that asks for it.
pub type ModelStore = Box<dyn Fn(&Digest) -> Option<Vec<f32>> + Send>;

/// What happened at this node. (The large `Committed` and `RoundCompleted` variants
/// come once per round at most: not worth a box.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum MeshEvent {
    /// This node takes rounds from `coordinator` now.
    Following {
        /// The coordinator.
        coordinator: NodeName,
        /// Why.
        reason: String,
    },
    /// This node coordinates now.
    Coordinating {
        /// The first round it starts.
        first_round: u64,
        /// The version (height) of the committed model it resumes from.
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
    /// A round here ended with a new model, submitted to the committee.
    RoundCompleted {
        /// What was aggregated.
        summary: RoundSummary,
        /// The aggregated model.
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
    /// This node asked the committee to replace a silent coordinator.
    HandoverProposed {
        /// The silent coordinator.
        silent: NodeName,
        /// The successor proposed.
        successor: NodeName,
    },
    /// This node, the committed coordinator, asked the committee to roll back to an
    /// earlier version ([`MeshRole::with_rollback`]).
    RollbackProposed {
        /// The version whose model becomes current again.
        to: u64,
        /// Its model's hash.
        model: Digest,
    },
    /// A planned rollback that this node will not ask for, and why (no such committed
    /// version, its model is not here, or it is the current one).
    RollbackRefused {
        /// The version asked for.
        to: u64,
        /// Why.
        reason: String,
    },
    /// A block was committed and its model is here: append it to the audit trail.
    /// In height order, each once.
    Committed {
        /// The block.
        block: Block,
        /// Its certificate.
        qc: QuorumCertificate,
        /// The model it names (the current one again for a coordinator change).
        model: Vec<f32>,
    },
    /// The committee moved to a view at a height.
    ViewChanged {
        /// Height.
        height: u64,
        /// View.
        view: u64,
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
    /// The last round is committed.
    Finished,
    /// No node is left to propose as coordinator.
    NoCoordinatorLeft,
}

struct Reassembly {
    from: NodeName,
    id: u32,
    parts: Vec<Option<Vec<u8>>>,
}

/// A model arriving in chunks.
struct Assembly {
    from: NodeName,
    round: u64,
    got: Vec<bool>,
    model: Vec<f32>,
}

impl Assembly {
    fn new(from: NodeName, round: u64, n: usize) -> Assembly {
        Assembly {
            from,
            round,
            got: vec![false; wire::dense_chunk_count(n)],
            model: vec![0.0; n],
        }
    }

    /// Put a chunk in; whether it fit.
    fn put(&mut self, index: u16, offset: u32, values: &[f32]) -> bool {
        let (n, chunks) = (self.model.len(), self.got.len());
        let (i, offset) = (usize::from(index), offset as usize);
        let fits = i < chunks
            && offset == i * wire::DENSE_CHUNK
            && offset + values.len() <= n
            && (i + 1 < chunks || offset + values.len() == n)
            && values.iter().all(|v| v.is_finite());
        if fits {
            self.model[offset..offset + values.len()].copy_from_slice(values);
            self.got[i] = true;
        }
        fits
    }

    fn complete(&self) -> bool {
        self.got.iter().all(|&g| g)
    }
}

/// A round's frames from the coordinator, held until their model is the committed one.
struct HeldRound {
    round: u64,
    frames: Vec<Vec<u8>>,
    model: Assembly,
}

/// One node's part in a federation over the mesh.
pub struct MeshRole {
    cfg: MeshConfig,
    me_rank: usize,
    signer: Arc<dyn Signer>,
    replica: Replica,
    /// The state after the blocks applied here (committed and model held).
    state: FedState,
    /// Committed blocks whose model has not arrived yet.
    waiting: VecDeque<(Block, QuorumCertificate)>,
    adopted: Vec<f32>,
    proposed: VecDeque<(Digest, Vec<f32>)>,
    assemblies: VecDeque<Assembly>,
    held: Option<HeldRound>,
    /// Model chunks of the committed coordinator that came before their round's
    /// `RoundStart` (the mesh may reorder datagrams): replayed when it comes.
    early: VecDeque<(u64, Message, Vec<u8>)>,
    participant: Participant,
    coordinator: Option<Coordinator>,
    /// The decision this coordinator submitted and when to submit it again.
    submitted: Option<(Decision, Instant)>,
    highest_round: u64,
    heard: BTreeMap<NodeName, Instant>,
    coordinator_heard: Instant,
    handover_proposed: bool,
    /// When to ask the other nodes again for the model a committed block names.
    model_request_at: Option<Instant>,
    evaluator: Option<Evaluator>,
    model_store: Option<ModelStore>,
    /// A planned rollback: (after the committed round, to the version).
    rollback_plan: Option<(u64, u64)>,
    /// Participants a round samples (`None`: every other node).
    per_round: Option<usize>,
    done: bool,
    next_fragment_id: u32,
    reassembly: VecDeque<Reassembly>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MeshEvent>,
}

/// A trainer for a participant whose training runs outside ([`TrainJob`]): the role
/// never calls it (`fl agent` and the twin pass it).
pub struct Outside;

impl LocalTrainer for Outside {
    fn train(
        &mut self,
        _global: &[f32],
        _flip: bool,
        _rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(Vec<f32>, u64), String> {
        Err("training runs outside this role".into())
    }
}

impl MeshRole {
    /// This node's role from `now`, after the committed blocks `chain` (oldest first;
    /// empty for a new federation), from `model`: the initial model for a new
    /// federation, else the model the chain's last round committed. `trainer` trains on
    /// this node's data when it participates (unused with
    /// [`MeshConfig::train_outside`]); `signer` signs FL frames, `auth` committee
    /// messages, `verifier` checks the candidates' committee signatures.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: MeshConfig,
        model: Vec<f32>,
        trainer: Box<dyn LocalTrainer>,
        signer: Arc<dyn Signer>,
        auth: Arc<dyn Authenticator>,
        verifier: Verifier,
        chain: &[Block],
        now: Instant,
    ) -> Result<MeshRole, String> {
        let distinct: BTreeSet<&NodeName> = cfg.order.iter().collect();
        if distinct.len() != cfg.order.len() {
            return Err("the coordinator order names a node twice".into());
        }
        let candidates: BTreeSet<&NodeName> = cfg.committee.candidates.iter().collect();
        if candidates != distinct {
            return Err("the committee's candidates are not the nodes of the order".into());
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
        if model.is_empty() || model.len() > wire::MAX_PARAMS as usize {
            return Err(format!("a model of {} parameters", model.len()));
        }
        let mut state = FedState::new(&cfg.order, cfg.order[0].clone(), model_hash(&model));
        for block in chain {
            if block.height != state.height + 1 {
                return Err(format!(
                    "the chain holds block {} after {}",
                    block.height, state.height
                ));
            }
            state.apply(block);
        }
        if state.model != model_hash(&model) {
            return Err(format!(
                "the model given is not version {}'s ({})",
                state.model_version, state.model
            ));
        }
        let replica = Replica::new(
            cfg.me.clone(),
            cfg.committee.clone(),
            auth,
            verifier,
            chain,
            now,
        )?
        .with_rules(Box::new(state.clone()));
        let trainer: Box<dyn LocalTrainer> = if cfg.train_outside {
            Box::new(Outside)
        } else {
            trainer
        };
        let mut participant = Participant::new(
            cfg.me.clone(),
            state.coordinator.clone(),
            trainer,
            Behaviour::honest(),
            Default::default(),
            signer.clone(),
            cfg.seed ^ (me_rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        if cfg.train_outside {
            participant = participant.train_outside();
        }
        let mut role = MeshRole {
            me_rank,
            signer,
            replica,
            waiting: VecDeque::new(),
            adopted: model,
            proposed: VecDeque::new(),
            assemblies: VecDeque::new(),
            held: None,
            early: VecDeque::new(),
            participant,
            coordinator: None,
            submitted: None,
            highest_round: state.round,
            heard: BTreeMap::new(),
            coordinator_heard: now,
            handover_proposed: false,
            model_request_at: None,
            evaluator: None,
            model_store: None,
            rollback_plan: None,
            per_round: None,
            done: state.round >= cfg.rounds,
            next_fragment_id: 0,
            reassembly: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            state,
            cfg,
        };
        role.watch_coordinator();
        let first = role.state.coordinator.clone();
        let reason = if chain.is_empty() {
            "first in the coordinator order".to_owned()
        } else {
            format!(
                "the committed chain (height {}) names it",
                role.state.height
            )
        };
        role.took_over(now, first, reason);
        role.drain(now);
        Ok(role)
    }

    /// Measure each aggregated model's accuracy (put in its decision).
    pub fn with_evaluator(mut self, evaluate: Evaluator) -> Self {
        self.evaluator = Some(evaluate);
        self
    }

    /// Look committed models up in `store` (the driver's audit trail) when they are
    /// neither the current nor a proposed one: a rollback's model, and models other
    /// nodes ask for.
    pub fn with_model_store(mut self, store: ModelStore) -> Self {
        self.model_store = Some(store);
        self
    }

    /// This node's participant behaves as `behaviour` (a Byzantine participant of the
    /// twin: sign flip, noise, label flip, ALIE, IPM, inflated counts); coordinating and
    /// its committee votes stay honest.
    pub fn with_behaviour(mut self, behaviour: Behaviour) -> Self {
        self.participant.set_behaviour(behaviour);
        self
    }

    /// Plan a rollback: once round `after_round` is committed, the committed
    /// coordinator (whichever node it is then) asks the committee, before it starts the
    /// next round, to make version `to`'s model current again. The committee's rules
    /// ([`FedState`]) accept it only from the committed coordinator and only to an
    /// earlier committed model version; every node adopts the restored model once the
    /// block is committed, and the rounds go on from it. Nothing is asked when the
    /// chain holds a rollback to `to` already (a restarted node).
    pub fn with_rollback(mut self, after_round: u64, to: u64, chain: &[Block]) -> Self {
        let done = chain.iter().any(|b| b.decision.rollback_to == Some(to));
        self.rollback_plan = (!done).then_some((after_round, to));
        self
    }

    /// Sample `k` participants per round (at random, seeded per round) instead of every
    /// other node; at least 1. For large federations, as the twin's. Call it right after
    /// [`MeshRole::new`], at the same `now`, before any input: a first coordinator's
    /// first round, which `new` started over every node, starts again over `k`.
    pub fn with_participants_per_round(mut self, k: usize, now: Instant) -> Self {
        self.per_round = Some(k.max(1));
        if self.coordinator.is_some() && self.heard.is_empty() && self.submitted.is_none() {
            // Nothing but that round's frames was queued yet.
            self.coordinator = None;
            self.highest_round = self.state.round;
            self.transmits.clear();
            self.events
                .retain(|e| !matches!(e, MeshEvent::RoundStarted { .. }));
            self.drain(now);
        }
        self
    }

    /// The committed coordinator (this node while it coordinates).
    pub fn coordinator(&self) -> &NodeName {
        &self.state.coordinator
    }

    /// Whether this node is the committed coordinator.
    pub fn is_coordinating(&self) -> bool {
        self.state.coordinator == self.cfg.me
    }

    /// The federation's state after the blocks adopted here.
    pub fn state(&self) -> &FedState {
        &self.state
    }

    /// The last committed round adopted here, and its model.
    pub fn adopted(&self) -> (u64, &[f32]) {
        (self.state.round, &self.adopted)
    }

    /// The committee replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The last round is committed, as far as this node knows.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn ignore(&mut self, from: &NodeName, reason: String) {
        self.events.push_back(MeshEvent::Ignored {
            from: from.clone(),
            reason,
        });
    }

    /// Tell the replica from when this node suspects the committed coordinator: half the
    /// failover time after it last heard from it. Until then its validator prepares no
    /// coordinator change replacing it, so a Byzantine leader cannot depose a live
    /// coordinator; the honest nodes, which ask for a change only after the whole
    /// failover time, are past half of it when their request comes.
    fn watch_coordinator(&mut self) {
        let from = self.coordinator_heard + self.cfg.failover_after / 2;
        self.replica.watch(self.state.coordinator.clone(), from);
    }

    /// Feed a payload delivered on [`FL_CHANNEL`] from `from`.
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, payload: &[u8]) {
        if self.cfg.order.contains(from) {
            self.heard.insert(from.clone(), now);
            if *from == self.state.coordinator {
                self.coordinator_heard = now;
                self.watch_coordinator();
            }
        }
        self.message(now, from, payload);
        self.drain(now);
    }

    fn message(&mut self, now: Instant, from: &NodeName, payload: &[u8]) {
        let Some((&tag, body)) = payload.split_first() else {
            return self.ignore(from, "an empty payload".into());
        };
        match tag {
            TAG_FRAGMENT => match self.reassemble(from, body) {
                Ok(Some(whole)) if whole.first() == Some(&TAG_FRAGMENT) => {
                    self.ignore(from, "a fragment inside a fragment".into())
                }
                Ok(Some(whole)) => self.message(now, from, &whole),
                Ok(None) => {}
                Err(e) => self.ignore(from, e),
            },
            TAG_COMMITTEE => self.replica.handle_message(now, from, body),
            TAG_SUBMIT => self.submission(now, from, body),
            TAG_MODEL_REQUEST => self.model_request(from, body),
            TAG_FRAME | TAG_PROPOSED => self.frame(now, from, tag, body),
            _ => self.ignore(from, format!("unknown envelope tag {tag}")),
        }
    }

    fn submission(&mut self, now: Instant, from: &NodeName, body: &[u8]) {
        let parsed = body
            .split_first_chunk::<2>()
            .map(|(len, rest)| (usize::from(u16::from_le_bytes(*len)), rest))
            .filter(|(len, rest)| *len <= rest.len())
            .map(|(len, rest)| rest.split_at(len));
        let Some((signature, json)) = parsed else {
            return self.ignore(from, "a submission shorter than its signature".into());
        };
        let signed = [SUBMIT_DOMAIN, json].concat();
        if let Err(e) = self.signer.verify(from, &signed, signature) {
            return self.ignore(from, format!("submission with a bad signature: {e}"));
        }
        let decision: Decision = match serde_json::from_slice(json) {
            Ok(d) => d,
            Err(e) => return self.ignore(from, format!("malformed submission: {e}")),
        };
        if decision.coordinator.as_ref() != Some(from)
            || decision.handover.is_some()
            || decision.signed.as_ref().map(|s| &s.by) != Some(from)
        {
            return self.ignore(from, "a submission not of the sender's own round".into());
        }
        self.replica.propose(now, decision);
    }

    fn frame(&mut self, now: Instant, from: &NodeName, tag: u8, frame: &[u8]) {
        let (msg, body, signature) = match Message::decode(frame) {
            Ok(m) => m,
            Err(e) => return self.ignore(from, format!("malformed frame: {e}")),
        };
        if let Err(e) = self.signer.verify(from, body, signature) {
            return self.ignore(from, format!("bad signature: {e}"));
        }
        if !self.cfg.order.contains(from) {
            return self.ignore(from, "not a node of the federation".into());
        }
        match (tag, msg) {
            (TAG_FRAME, Message::UpdateChunk { .. }) => match self.coordinator.as_mut() {
                Some(c) => c.handle_message(now, from, frame),
                None => self.ignore(from, "an update, and no round runs here".into()),
            },
            (TAG_FRAME, msg) => {
                if *from != self.state.coordinator {
                    return self.ignore(
                        from,
                        format!(
                            "a round frame from {from}, not the committed coordinator {}",
                            self.state.coordinator
                        ),
                    );
                }
                self.round_frame(now, from, msg, frame);
            }
            (
                _,
                Message::ModelChunk {
                    round,
                    index,
                    offset,
                    values,
                },
            ) => self.proposed_chunk(from, round, index, offset, &values),
            (_, _) => self.ignore(
                from,
                "a proposed-model envelope without a model chunk".into(),
            ),
        }
    }

    /// A `RoundStart` or `ModelChunk` from the committed coordinator: held until the
    /// round's model is the committed one, then given to the participant.
    fn round_frame(&mut self, now: Instant, from: &NodeName, msg: Message, frame: &[u8]) {
        match msg {
            Message::RoundStart {
                round, num_params, ..
            } => {
                if num_params as usize != self.adopted.len() {
                    return self.ignore(from, format!("round {round} of {num_params} parameters"));
                }
                self.highest_round = self.highest_round.max(round);
                self.held = Some(HeldRound {
                    round,
                    frames: vec![frame.to_vec()],
                    model: Assembly::new(from.clone(), round, self.adopted.len()),
                });
                let early = std::mem::take(&mut self.early);
                for (r, msg, bytes) in early {
                    if r == round {
                        self.round_frame(now, from, msg, &bytes);
                    } else if r > round {
                        self.early.push_back((r, msg, bytes));
                    }
                }
            }
            Message::ModelChunk {
                round,
                index,
                offset,
                values,
            } => {
                let Some(held) = self.held.as_mut().filter(|h| h.round == round) else {
                    if round > self.state.round
                        && self.held.as_ref().is_none_or(|h| h.round < round)
                    {
                        // Overtook its RoundStart: keep it for when that comes.
                        if self.early.len() >= wire::dense_chunk_count(self.adopted.len()) {
                            self.early.pop_front();
                        }
                        let msg = Message::ModelChunk {
                            round,
                            index,
                            offset,
                            values,
                        };
                        return self.early.push_back((round, msg, frame.to_vec()));
                    }
                    return self.ignore(from, format!("model chunk of round {round}, not started"));
                };
                if !held.model.put(index, offset, &values) {
                    return self.ignore(from, format!("model chunk {index} does not fit"));
                }
                held.frames.push(frame.to_vec());
            }
            Message::UpdateChunk { .. } => {}
        }
        self.release_held(now);
    }

    /// Give the held round to the participant once its model is the committed one.
    fn release_held(&mut self, now: Instant) {
        let ready = self
            .held
            .as_ref()
            .is_some_and(|h| h.model.complete() && model_hash(&h.model.model) == self.state.model);
        if ready {
            let held = self.held.take().expect("checked");
            let from = self.state.coordinator.clone();
            for f in &held.frames {
                self.participant.handle_message(now, &from, f);
            }
        }
    }

    fn proposed_chunk(
        &mut self,
        from: &NodeName,
        round: u64,
        index: u16,
        offset: u32,
        values: &[f32],
    ) {
        if round <= self.state.round {
            return self.ignore(
                from,
                format!(
                    "proposed model of round {round}, round {} is committed",
                    self.state.round
                ),
            );
        }
        let n = self.adopted.len();
        let at = match self
            .assemblies
            .iter()
            .position(|a| a.round == round && a.from == *from)
        {
            Some(at) => at,
            None => {
                if self.assemblies.len() >= PROPOSED_MAX {
                    self.assemblies.pop_front();
                }
                self.assemblies
                    .push_back(Assembly::new(from.clone(), round, n));
                self.assemblies.len() - 1
            }
        };
        if !self.assemblies[at].put(index, offset, values) {
            return self.ignore(
                from,
                format!("proposed-model chunk {index} does not fit a model of {n}"),
            );
        }
        if self.assemblies[at].complete() {
            let a = self.assemblies.remove(at).expect("present");
            self.keep_proposed(a.model);
        }
    }

    /// Every other node still in the federation (not retired by a committed change).
    fn others(&self) -> Vec<NodeName> {
        self.cfg
            .order
            .iter()
            .filter(|n| **n != self.cfg.me && !self.state.retired.contains(*n))
            .cloned()
            .collect()
    }

    /// Ask every other node for the model of `hash`, committed for `round`.
    fn request_model(&mut self, round: u64, hash: Digest) {
        let mut bytes = vec![TAG_MODEL_REQUEST];
        bytes.extend_from_slice(&round.to_le_bytes());
        bytes.extend_from_slice(&hash.0);
        let others = self.others();
        for to in others {
            self.send(to, bytes.clone());
        }
    }

    /// A node lacks the model of a committed block: send it, signed, if this node
    /// holds it (adopted or proposed). Its hash in the block is what the asker checks.
    fn model_request(&mut self, from: &NodeName, body: &[u8]) {
        if !self.cfg.order.contains(from) || body.len() != 8 + 32 {
            return self.ignore(from, "a malformed model request or an outsider's".into());
        }
        let round = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let hash = Digest(body[8..].try_into().expect("32 bytes"));
        if let Some(model) = self.find_model(&hash) {
            for m in wire::model_chunks(round, &model) {
                let frame = m.encode(&self.signer.sign(&m.encode_body()));
                self.send(from.clone(), MeshRole::envelope(TAG_PROPOSED, frame));
            }
        }
    }

    /// The model of `hash`: the adopted one, a proposed one, or one of the store's
    /// (checked against the hash and the model's size).
    fn find_model(&self, hash: &Digest) -> Option<Vec<f32>> {
        if *hash == self.state.model {
            return Some(self.adopted.clone());
        }
        if let Some((_, m)) = self.proposed.iter().find(|(h, _)| h == hash) {
            return Some(m.clone());
        }
        self.model_store
            .as_ref()
            .and_then(|store| store(hash))
            .filter(|m| m.len() == self.adopted.len() && model_hash(m) == *hash)
    }

    fn keep_proposed(&mut self, model: Vec<f32>) {
        let hash = model_hash(&model);
        if self.proposed.iter().any(|(h, _)| *h == hash) {
            return;
        }
        if self.proposed.len() >= PROPOSED_MAX {
            self.proposed.pop_front();
        }
        self.proposed.push_back((hash, model));
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

    /// Committed blocks, in order, as far as their models are here.
    fn apply_waiting(&mut self, now: Instant) -> bool {
        let mut applied = false;
        while let Some((block, _)) = self.waiting.front() {
            let hash = block.decision.model_hash;
            let Some(model) = self.find_model(&hash) else {
                // The coordinator's broadcast did not reach this node (lost, or the
                // coordinator died sending it): ask every other node for the model.
                if self.model_request_at.is_none_or(|t| now >= t) {
                    let (round, hash) = (block.decision.round, hash);
                    self.request_model(round, hash);
                    self.model_request_at = Some(now + self.cfg.committee.resend * 2);
                }
                break;
            };
            self.model_request_at = None;
            let (block, qc) = self.waiting.pop_front().expect("present");
            self.apply(now, block, qc, model);
            applied = true;
        }
        applied
    }

    fn apply(&mut self, now: Instant, block: Block, qc: QuorumCertificate, model: Vec<f32>) {
        self.state.apply(&block);
        if let (Some((_, to)), Some(done)) = (self.rollback_plan, block.decision.rollback_to) {
            if to == done {
                // Planned at every node: whichever coordinator asked, it is done.
                self.rollback_plan = None;
            }
        }
        self.adopted = model.clone();
        self.highest_round = self.highest_round.max(self.state.round);
        let handover = block
            .decision
            .handover
            .clone()
            .zip(block.decision.coordinator.clone());
        if self
            .submitted
            .as_ref()
            .is_some_and(|(d, _)| d.round <= self.state.round || handover.is_some())
        {
            self.submitted = None;
        }
        let height = block.height;
        self.events
            .push_back(MeshEvent::Committed { block, qc, model });
        if let Some((h, to)) = handover {
            self.handover_proposed = false;
            self.coordinator_heard = now;
            self.watch_coordinator();
            let reason = format!(
                "the committee committed block {height}: {to} takes over from {}, silent, at version {}",
                h.replaces, h.model_version
            );
            self.took_over(now, to, reason);
        }
        self.release_held(now);
        if self.state.round >= self.cfg.rounds && !self.done {
            self.done = true;
            self.coordinator = None;
            self.events.push_back(MeshEvent::Finished);
        }
    }

    /// The committed coordinator is `coordinator` from now on.
    fn took_over(&mut self, _now: Instant, coordinator: NodeName, reason: String) {
        self.participant.set_coordinator(coordinator.clone());
        self.held = None;
        self.early.clear();
        if coordinator == self.cfg.me {
            self.events.push_back(MeshEvent::Coordinating {
                first_round: self.state.round.max(self.highest_round) + 1,
                model_round: self.state.model_version,
                reason,
            });
        } else {
            self.coordinator = None;
            self.submitted = None;
            self.events.push_back(MeshEvent::Following {
                coordinator,
                reason,
            });
        }
    }

    /// Start the next round when this node is the committed coordinator and nothing is
    /// pending.
    fn coordinate(&mut self, now: Instant) {
        if self.done
            || self.state.coordinator != self.cfg.me
            || self.coordinator.is_some()
            || self.submitted.is_some()
            || !self.waiting.is_empty()
        {
            return;
        }
        if let Some((after, to)) = self.rollback_plan {
            if self.state.round >= after {
                self.rollback_plan = None;
                return self.propose_rollback(now, to);
            }
        }
        let round = self.state.round.max(self.highest_round) + 1;
        let participants = self.others();
        if participants.is_empty() || round > self.cfg.rounds.saturating_mul(3) {
            self.done = true;
            self.events.push_back(MeshEvent::NoCoordinatorLeft);
            return;
        }
        let cfg = CoordinatorConfig {
            per_round: self
                .per_round
                .map_or(participants.len(), |k| k.min(participants.len())),
            participants,
            round_timeout: self.cfg.round_timeout,
            min_updates: self.cfg.min_updates,
            max_rounds: round,
            dp: None,
        };
        let seed = self.cfg.seed
            ^ (self.me_rank as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03)
            ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut c = Coordinator::new(
            cfg,
            self.adopted.clone(),
            self.cfg.aggregator.build(),
            None,
            self.signer.clone(),
            seed,
        )
        .resume_after(round - 1);
        c.handle_timeout(now);
        self.coordinator = Some(c);
    }

    /// Send `decision` to every candidate and to this node's replica.
    fn submit(&mut self, now: Instant, decision: Decision) {
        let json = serde_json::to_vec(&decision).unwrap_or_default();
        let signature = self.signer.sign(&[SUBMIT_DOMAIN, &json].concat());
        let mut bytes = vec![TAG_SUBMIT];
        bytes.extend_from_slice(&(signature.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&signature);
        bytes.extend_from_slice(&json);
        for to in self.cfg.committee.candidates.clone() {
            if to != self.cfg.me {
                self.send(to, bytes.clone());
            }
        }
        self.replica.propose(now, decision.clone());
        self.submitted = Some((decision, now + self.cfg.committee.resend * 2));
    }

    /// Ask the committee (as the committed coordinator, between rounds) to make version
    /// `to`'s model current again.
    fn propose_rollback(&mut self, now: Instant, to: u64) {
        let refuse = |reason: String| MeshEvent::RollbackRefused { to, reason };
        let Some(hash) = self.state.versions.get(&to).copied() else {
            let e = refuse(format!(
                "no committed model version {to} (versions: {:?})",
                self.state.versions.keys().collect::<Vec<_>>()
            ));
            return self.events.push_back(e);
        };
        if to == self.state.model_version {
            let e = refuse(format!("version {to} is the current model already"));
            return self.events.push_back(e);
        }
        let Some(model) = self.find_model(&hash) else {
            let e = refuse(format!("the model of version {to} ({hash}) is not here"));
            return self.events.push_back(e);
        };
        let accuracy = self.evaluator.as_ref().and_then(|f| f(&model));
        self.keep_proposed(model);
        let decision = Decision {
            round: self.state.round,
            model_hash: hash,
            participants: Vec::new(),
            aggregator: self.cfg.aggregator.to_string(),
            suspected: Vec::new(),
            epsilon: None,
            accuracy,
            rollback_to: Some(to),
            coordinator: Some(self.cfg.me.clone()),
            handover: None,
            signed: None,
        };
        let decision = self.replica.sign_decision(decision);
        self.submit(now, decision);
        self.events
            .push_back(MeshEvent::RollbackProposed { to, model: hash });
    }

    /// Ask the committee to replace the silent coordinator.
    fn propose_handover(&mut self, now: Instant) {
        let silent = self.state.coordinator.clone();
        let n = self.cfg.order.len();
        let start = self
            .cfg
            .order
            .iter()
            .position(|c| *c == silent)
            .unwrap_or(0);
        let live = |c: &NodeName| {
            *c == self.cfg.me
                || self
                    .heard
                    .get(c)
                    .is_some_and(|t| now.saturating_since(*t) < self.cfg.failover_after)
        };
        let successor = (1..n)
            .map(|k| &self.cfg.order[(start + k) % n])
            .find(|c| !self.state.retired.contains(*c) && live(c))
            .cloned();
        self.coordinator_heard = now;
        self.handover_proposed = true;
        let Some(successor) = successor else {
            return self.events.push_back(MeshEvent::NoCoordinatorLeft);
        };
        let decision = Decision {
            round: self.state.round,
            model_hash: self.state.model,
            participants: Vec::new(),
            aggregator: self.cfg.aggregator.to_string(),
            suspected: Vec::new(),
            epsilon: None,
            accuracy: None,
            rollback_to: None,
            coordinator: Some(successor.clone()),
            handover: Some(Handover {
                replaces: silent.clone(),
                model_version: self.state.model_version,
            }),
            signed: None,
        };
        let decision = self.replica.sign_decision(decision);
        self.replica.propose(now, decision);
        self.events
            .push_back(MeshEvent::HandoverProposed { silent, successor });
    }

    /// Advance time: the coordinator's, participant's and committee's timers, the
    /// resubmission of a decision, and a handover request when the coordinator has
    /// been silent for `failover_after`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(c) = self.coordinator.as_mut() {
            c.handle_timeout(now);
        }
        self.participant.handle_timeout(now);
        self.replica.handle_timeout(now);
        if let Some((d, at)) = self.submitted.clone() {
            if now >= at {
                self.submit(now, d);
            }
        }
        if !self.done
            && self.state.coordinator != self.cfg.me
            && now >= self.coordinator_heard + self.cfg.failover_after
        {
            self.propose_handover(now);
        }
        self.drain(now);
    }

    /// When [`MeshRole::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let failover = (!self.done && self.state.coordinator != self.cfg.me)
            .then(|| self.coordinator_heard + self.cfg.failover_after);
        [
            self.coordinator
                .as_ref()
                .and_then(Coordinator::poll_timeout),
            self.participant.poll_timeout(),
            self.replica.poll_timeout(),
            self.submitted.as_ref().map(|s| s.1),
            self.model_request_at.filter(|_| !self.waiting.is_empty()),
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

    /// The next training job ([`MeshConfig::train_outside`]).
    pub fn poll_train(&mut self) -> Option<TrainJob> {
        self.participant.poll_train()
    }

    /// The result of the training job of `round`.
    pub fn trained(&mut self, now: Instant, round: u64, result: Result<(Vec<f32>, u64), String>) {
        self.participant.trained(now, round, result);
        self.drain(now);
    }

    fn envelope(tag: u8, frame: Vec<u8>) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(frame.len() + 1);
        bytes.push(tag);
        bytes.extend_from_slice(&frame);
        bytes
    }

    /// Send the model aggregated in `round` to every other node.
    fn broadcast_proposed(&mut self, round: u64, model: &[f32]) {
        let frames: Vec<Vec<u8>> = wire::model_chunks(round, model)
            .iter()
            .map(|m| {
                let frame = m.encode(&self.signer.sign(&m.encode_body()));
                MeshRole::envelope(TAG_PROPOSED, frame)
            })
            .collect();
        let others = self.others();
        for to in others {
            for bytes in &frames {
                self.send(to.clone(), bytes.clone());
            }
        }
    }

    /// Run the machines' outputs until nothing moves: frames out, the coordinator's
    /// round results submitted, committed blocks applied, the next round started.
    fn drain(&mut self, now: Instant) {
        loop {
            let mut moved = false;
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
            let mut coordinator_events = Vec::new();
            if let Some(c) = self.coordinator.as_mut() {
                while let Some(e) = c.poll_event() {
                    coordinator_events.push((e, c.global().to_vec()));
                }
            }
            for (event, global) in coordinator_events {
                moved = true;
                self.coordinator_event(now, event, global);
            }
            let mut committee = Vec::new();
            while let Some(t) = self.replica.poll_transmit() {
                committee.push(t);
            }
            for t in committee {
                self.send(t.to, MeshRole::envelope(TAG_COMMITTEE, t.bytes));
            }
            while let Some(e) = self.replica.poll_event() {
                match e {
                    CommitteeEvent::Committed { block, qc } => {
                        moved = true;
                        self.waiting.push_back((block, qc));
                    }
                    CommitteeEvent::ViewChanged { height, view } => self
                        .events
                        .push_back(MeshEvent::ViewChanged { height, view }),
                    CommitteeEvent::Dropped { from, reason } => {
                        self.ignore(&from, format!("committee message: {reason:?}"))
                    }
                }
            }
            moved |= self.apply_waiting(now);
            while let Some(e) = self.participant.poll_event() {
                self.events.push_back(MeshEvent::Participant(e));
            }
            let idle = self.coordinator.is_none();
            self.coordinate(now);
            moved |= idle && self.coordinator.is_some();
            if !moved {
                break;
            }
        }
    }

    fn coordinator_event(&mut self, now: Instant, event: Event, global: Vec<f32>) {
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
                self.coordinator = None;
                let hash = model_hash(&global);
                self.keep_proposed(global.clone());
                self.broadcast_proposed(summary.round, &global);
                let accuracy = self.evaluator.as_ref().and_then(|f| f(&global));
                let decision = Decision {
                    round: summary.round,
                    model_hash: hash,
                    participants: summary.aggregated.clone(),
                    aggregator: self.cfg.aggregator.to_string(),
                    suspected: summary.suspected.clone(),
                    epsilon: summary.epsilon,
                    accuracy,
                    rollback_to: None,
                    coordinator: Some(self.cfg.me.clone()),
                    handover: None,
                    signed: None,
                };
                let decision = self.replica.sign_decision(decision);
                self.submit(now, decision);
                self.events.push_back(MeshEvent::RoundCompleted {
                    summary,
                    model: global,
                });
            }
            Event::RoundFailed { round, reason } => {
                // The committed model stays; the next round starts from it.
                self.coordinator = None;
                self.events
                    .push_back(MeshEvent::RoundFailed { round, reason });
            }
            Event::BudgetExhausted { .. } | Event::Finished => self.coordinator = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoSignatures;
    use rand_chacha::ChaCha8Rng;
    use x0tta6bl4_proto::SimAuthenticator;

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

    fn committee(order: &[NodeName], f: usize) -> CommitteeConfig {
        CommitteeConfig {
            chain_id: "mesh-test".into(),
            candidates: order.to_vec(),
            f,
            epoch_len: 3,
            view_timeout: Duration::from_millis(300),
            resend: Duration::from_millis(100),
        }
    }

    fn config(me: &NodeName, order: &[NodeName], rounds: u64, f: usize) -> MeshConfig {
        MeshConfig {
            me: me.clone(),
            order: order.to_vec(),
            rounds,
            round_timeout: Duration::from_millis(200),
            failover_after: Duration::from_millis(500),
            min_updates: 1,
            aggregator: AggregatorKind::FedAvg,
            seed: 7,
            payload_max: 1024,
            committee: committee(order, f),
            train_outside: false,
        }
    }

    fn role(cfg: MeshConfig, model: Vec<f32>) -> Result<MeshRole, String> {
        let auth: Arc<dyn Authenticator> = Arc::new(SimAuthenticator::new(1, cfg.me.clone()));
        let credentials = cfg
            .order
            .iter()
            .map(|n| (n.clone(), n.as_str().as_bytes().to_vec()))
            .collect();
        let verifier = Verifier::new(auth.clone(), credentials);
        MeshRole::new(
            cfg,
            model,
            Box::new(TowardsOne),
            Arc::new(NoSignatures),
            auth,
            verifier,
            &[],
            Instant::ZERO,
        )
    }

    /// `n` roles over a lossless network with 1 ms hops; killed nodes (by index) stop
    /// at their kill time: nothing is delivered to or from them after it. Training
    /// outside takes `train_delay`, during which frames keep arriving.
    struct Net {
        roles: Vec<MeshRole>,
        kills: Vec<(usize, Instant)>,
        now: Instant,
        queue: VecDeque<(Instant, NodeName, NodeName, Vec<u8>)>,
        jobs: Vec<(Instant, usize, TrainJob)>,
        train_delay: Duration,
        /// Payloads from one node to another with this envelope tag are lost.
        lose: Option<(usize, usize, u8)>,
        log: Vec<(usize, Instant, MeshEvent)>,
        /// Node 0's committed models, as its driver's audit trail would keep them.
        store: Option<Store>,
    }

    type Store = Arc<std::sync::Mutex<BTreeMap<Digest, Vec<f32>>>>;

    impl Net {
        fn new(n: usize, rounds: u64, f: usize, outside: bool) -> Net {
            Net::with_payload(n, rounds, f, outside, 1024)
        }

        fn with_payload(n: usize, rounds: u64, f: usize, outside: bool, payload: usize) -> Net {
            let order: Vec<NodeName> = (0..n).map(|i| name(&format!("n{i}"))).collect();
            let roles = order
                .iter()
                .map(|me| {
                    let mut cfg = config(me, &order, rounds, f);
                    cfg.train_outside = outside;
                    cfg.payload_max = payload;
                    role(cfg, vec![0.0; 1000]).unwrap()
                })
                .collect();
            Net {
                roles,
                kills: Vec::new(),
                now: Instant::ZERO,
                queue: VecDeque::new(),
                jobs: Vec::new(),
                train_delay: Duration::from_millis(40),
                lose: None,
                log: Vec::new(),
                store: None,
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
                    while let Some(job) = self.roles[i].poll_train() {
                        self.jobs.push((self.now + self.train_delay, i, job));
                    }
                    while let Some(t) = self.roles[i].poll_transmit() {
                        let from = self.roles[i].cfg.me.clone();
                        let at = self.now + Duration::from_millis(1);
                        self.queue.push_back((at, from, t.to, t.bytes));
                    }
                    while let Some(e) = self.roles[i].poll_event() {
                        if let (0, Some(store), MeshEvent::Committed { block, model, .. }) =
                            (i, &self.store, &e)
                        {
                            let mut store = store.lock().unwrap();
                            store.insert(block.decision.model_hash, model.clone());
                        }
                        self.log.push((i, self.now, e));
                    }
                }
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.jobs)
                    .into_iter()
                    .partition(|j| j.0 <= now);
                self.jobs = later;
                for (_, i, job) in due {
                    if !self.dead(i) {
                        let result = TowardsOne.train(&job.model, false, &mut {
                            use rand::SeedableRng;
                            ChaCha8Rng::seed_from_u64(job.seed)
                        });
                        self.roles[i].trained(now, job.round, result);
                    }
                }
                while self.queue.front().is_some_and(|m| m.0 <= self.now) {
                    let (_, from, to, bytes) = self.queue.pop_front().unwrap();
                    let (f, t) = (self.index(&from), self.index(&to));
                    let lost = self.lose == Some((f, t, bytes[0]));
                    if !self.dead(f) && !self.dead(t) && !lost {
                        self.roles[t].handle_message(self.now, &from, &bytes);
                    }
                }
                self.now = self.now + Duration::from_millis(1);
            }
        }

        /// Every node's committed blocks, in order.
        fn chains(&self) -> Vec<Vec<Block>> {
            (0..self.roles.len())
                .map(|i| {
                    self.log
                        .iter()
                        .filter(|(j, _, _)| *j == i)
                        .filter_map(|(_, _, e)| match e {
                            MeshEvent::Committed { block, .. } => Some(block.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .collect()
        }

        /// Every node's chain runs 1, 2, ... and all agree at their common heights.
        fn assert_chains_agree(&self) {
            let chains = self.chains();
            for (i, c) in chains.iter().enumerate() {
                for (k, b) in c.iter().enumerate() {
                    assert_eq!(b.height, k as u64 + 1, "node {i}");
                }
                for other in &chains {
                    for (a, b) in c.iter().zip(other) {
                        assert_eq!(a.hash(), b.hash(), "height {}", a.height);
                    }
                }
            }
        }
    }

    #[test]
    fn every_round_is_committed_and_then_adopted_everywhere() {
        let mut net = Net::new(4, 3, 1, false);
        net.run_until(Instant::ZERO + Duration::from_secs(3));
        net.assert_chains_agree();
        for (i, r) in net.roles.iter().enumerate() {
            assert!(r.is_done(), "{}", r.cfg.me);
            assert_eq!(r.adopted().0, 3, "{}", r.cfg.me);
            assert!((r.adopted().1[0] - 0.875).abs() < 1e-6);
            let chain = &net.chains()[i];
            assert_eq!(chain.len(), 3);
            for (k, b) in chain.iter().enumerate() {
                assert_eq!(b.decision.round, k as u64 + 1);
                assert_eq!(b.decision.coordinator, Some(name("n0")));
                assert_eq!(b.decision.participants.len(), 3);
            }
        }
        // A participant's update of round r+1 leaves only after it committed round r.
        for (i, at, e) in &net.log {
            if let MeshEvent::Participant(ParticipantEvent::Sent { round, .. }) = e {
                let committed = net.log.iter().any(|(j, t, c)| {
                    j == i
                        && t <= at
                        && matches!(c, MeshEvent::Committed { block, .. } if block.decision.round + 1 == *round)
                });
                assert!(
                    *round == 1 || committed,
                    "node {i} trained round {round} early"
                );
            }
        }
    }

    #[test]
    fn rounds_sample_the_participants_per_round_from_the_first() {
        let mut net = Net::new(7, 3, 1, false);
        net.roles = std::mem::take(&mut net.roles)
            .into_iter()
            .map(|r| r.with_participants_per_round(2, Instant::ZERO))
            .collect();
        net.run_until(Instant::ZERO + Duration::from_secs(3));
        net.assert_chains_agree();
        let started: Vec<&Vec<NodeName>> = net
            .log
            .iter()
            .filter_map(|(_, _, e)| match e {
                MeshEvent::RoundStarted { sampled, .. } => Some(sampled),
                _ => None,
            })
            .collect();
        assert_eq!(started.len(), 3, "one start per round, round 1 not twice");
        assert!(started.iter().all(|s| s.len() == 2), "{started:?}");
        for (i, r) in net.roles.iter().enumerate() {
            assert!(r.is_done(), "{}", r.cfg.me);
            for b in &net.chains()[i] {
                assert_eq!(b.decision.participants.len(), 2);
            }
        }
    }

    #[test]
    fn model_chunks_that_overtake_their_round_start_are_kept() {
        // Unfragmented: RoundStart, then the model's chunk, to every participant.
        let mut net = Net::with_payload(4, 1, 1, false, 65_536);
        let mut frames = Vec::new();
        while let Some(t) = net.roles[0].poll_transmit() {
            if t.to == name("n1") {
                frames.push(t.bytes);
            }
        }
        assert_eq!(frames.len(), 2);
        frames.reverse();
        let role = &mut net.roles[1];
        for f in &frames {
            role.handle_message(Instant::ZERO, &name("n0"), f);
        }
        let events: Vec<MeshEvent> = std::iter::from_fn(|| role.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(
                e,
                MeshEvent::Participant(ParticipantEvent::Sent { round: 1, .. })
            )),
            "{events:?}"
        );
    }

    #[test]
    fn the_committee_hands_the_coordinator_role_over_from_the_last_committed_model() {
        let mut net = Net::new(7, 12, 2, false);
        // A participant dies early (every round then waits for its deadline, 200 ms);
        // the coordinator dies mid-training.
        net.kills
            .push((6, Instant::ZERO + Duration::from_millis(10)));
        net.kills
            .push((0, Instant::ZERO + Duration::from_millis(900)));
        net.run_until(Instant::ZERO + Duration::from_secs(12));
        net.assert_chains_agree();
        let chain = net.chains()[1].clone();
        let changes: Vec<&Block> = chain
            .iter()
            .filter(|b| b.decision.handover.is_some())
            .collect();
        assert_eq!(changes.len(), 1, "{chain:#?}");
        let change = &changes[0].decision;
        assert_eq!(change.coordinator, Some(name("n1")));
        assert_eq!(change.handover.as_ref().unwrap().replaces, name("n0"));
        let before = changes[0].height;
        assert!(chain[..before as usize - 1]
            .iter()
            .all(|b| b.decision.coordinator == Some(name("n0"))));
        assert!(chain[before as usize..]
            .iter()
            .all(|b| b.decision.coordinator == Some(name("n1"))));
        assert!(chain.len() > before as usize);
        // The change resumed from the last committed model.
        let last_model = chain[..before as usize - 1]
            .last()
            .map(|b| b.decision.model_hash);
        assert_eq!(Some(change.model_hash), last_model);
        for i in 1..6 {
            let r = &net.roles[i];
            assert!(r.is_done(), "{}", r.cfg.me);
            assert_eq!(r.coordinator(), &name("n1"));
            assert!(r.state().retired.contains(&name("n0")));
            // Every committed round moved the model half way to 1.
            let rounds = net.chains()[i]
                .iter()
                .filter(|b| b.decision.handover.is_none())
                .count() as i32;
            let model = r.adopted().1[0];
            assert!(
                (model - (1.0 - 0.5f32.powi(rounds))).abs() < 1e-5,
                "{model} after {rounds}"
            );
        }
        assert!(net.log.iter().any(|(_, _, e)| matches!(
            e,
            MeshEvent::HandoverProposed { silent, successor } if *silent == name("n0") && *successor == name("n1")
        )));
    }

    /// A validator that is the height's leader asks for a coordinator change while n0
    /// coordinates and is heard by everyone (a Byzantine leader; here the honest code
    /// made to ask early): the other validators, which do not suspect n0, refuse to
    /// prepare it, so it never reaches a quorum; training goes on under n0 and no
    /// change is ever committed.
    #[test]
    fn a_leader_asking_to_replace_a_live_coordinator_gets_no_quorum() {
        let mut net = Net::new(4, 6, 1, false);
        let mut byzantine = None;
        // Wait for a height whose leader is not n0 and holds nothing to propose yet
        // (n0 has not submitted the round), so the change is what it pre-prepares.
        while byzantine.is_none() {
            let at = net.now + Duration::from_millis(1);
            net.run_until(at);
            let leader = net.roles[1].replica().leader().clone();
            let l = net.index(&leader);
            if leader != name("n0")
                && net.roles[1].state().round >= 1
                && net.roles[l].replica().pending() == 0
            {
                byzantine = Some(l);
            }
        }
        let b = byzantine.unwrap();
        let now = net.now;
        net.roles[b].propose_handover(now);
        net.roles[b].drain(now);
        net.run_until(Instant::ZERO + Duration::from_secs(6));
        net.assert_chains_agree();
        for (i, chain) in net.chains().iter().enumerate() {
            assert!(
                chain
                    .iter()
                    .all(|b| b.decision.handover.is_none()
                        && b.decision.coordinator == Some(name("n0"))),
                "node {i}: {chain:#?}"
            );
            assert!(net.roles[i].is_done(), "node {i}");
        }
        let refusals = net
            .log
            .iter()
            .filter(|(i, _, e)| {
                *i != b
                    && matches!(e, MeshEvent::Ignored { reason, .. }
                        if reason.contains("which this validator still hears"))
            })
            .count();
        assert!(
            refusals > 0,
            "the change was refused by the other validators"
        );
        assert!(net.log.iter().any(|(i, _, e)| *i == b
            && matches!(e, MeshEvent::HandoverProposed { silent, .. } if *silent == name("n0"))));
    }

    /// The coordinator's model broadcast never reaches n3: it asks the others for each
    /// committed model and adopts it all the same.
    #[test]
    fn a_node_that_missed_a_committed_model_fetches_it() {
        let mut net = Net::with_payload(4, 3, 1, false, 16_384);
        net.lose = Some((0, 3, TAG_PROPOSED));
        net.run_until(Instant::ZERO + Duration::from_secs(3));
        net.assert_chains_agree();
        for r in &net.roles {
            assert_eq!(r.adopted().0, 3, "{}", r.cfg.me);
            assert!((r.adopted().1[0] - 0.875).abs() < 1e-6);
        }
        assert_eq!(net.chains()[3].len(), 3);
    }

    #[test]
    fn training_outside_keeps_the_role_answering() {
        let mut net = Net::new(4, 3, 1, true);
        net.train_delay = Duration::from_millis(120);
        net.run_until(Instant::ZERO + Duration::from_secs(4));
        net.assert_chains_agree();
        for r in &net.roles {
            assert_eq!(r.adopted().0, 3, "{}", r.cfg.me);
            assert!((r.adopted().1[0] - 0.875).abs() < 1e-6);
        }
    }

    #[test]
    fn the_rules_refuse_what_the_chain_does_not_allow() {
        let order: Vec<NodeName> = ["a", "b", "c", "d"].into_iter().map(name).collect();
        let mut s = FedState::new(&order, name("a"), Digest::of(&[b"m0"]));
        let round = |r: u64, by: &str| Decision {
            round: r,
            model_hash: Digest::of(&[&r.to_le_bytes()]),
            participants: vec![name("b")],
            aggregator: "fedavg".into(),
            suspected: Vec::new(),
            epsilon: None,
            accuracy: None,
            rollback_to: None,
            coordinator: Some(name(by)),
            handover: None,
            // FedState checks who signed; the replica checks the signature itself.
            signed: Some(crate::committee::DecisionSignature {
                by: name(by),
                signature: crate::committee::Sig(vec![1]),
            }),
        };
        assert!(s.check(&round(1, "a")).is_ok());
        let mut unsigned = round(1, "a");
        unsigned.signed = None;
        assert!(s
            .check(&unsigned)
            .unwrap_err()
            .contains("signed by its proposer"));
        let mut by_other = round(1, "a");
        by_other.signed.as_mut().unwrap().by = name("b");
        assert!(s
            .check(&by_other)
            .unwrap_err()
            .contains("not by its coordinator"));
        by_other.signed.as_mut().unwrap().by = name("z");
        assert!(s
            .check(&by_other)
            .unwrap_err()
            .contains("not a node of the federation"));
        assert!(s
            .check(&round(1, "b"))
            .unwrap_err()
            .contains("a coordinates"));
        let block = |h: u64, d: Decision| Block {
            height: h,
            epoch: 0,
            prev: Digest::default(),
            decision: d,
        };
        s.apply(&block(1, round(1, "a")));
        assert!(s.check(&round(1, "a")).unwrap_err().contains("not after"));
        let change = |to: &str, version: u64, model: Digest| Decision {
            participants: Vec::new(),
            model_hash: model,
            coordinator: Some(name(to)),
            handover: Some(Handover {
                replaces: name("a"),
                model_version: version,
            }),
            ..round(1, to)
        };
        let m1 = s.model;
        assert!(s.check(&change("b", 0, Digest::of(&[b"m0"]))).is_err());
        assert!(s.check(&change("a", 1, m1)).is_err());
        assert!(s.check(&change("z", 1, m1)).is_err());
        assert!(s.check(&change("b", 1, m1)).is_ok());
        s.apply(&block(2, change("b", 1, m1)));
        assert_eq!(s.coordinator, name("b"));
        assert!(s.check(&round(2, "a")).is_err());
        assert!(s.check(&round(2, "b")).is_ok());
        let mut back = change("a", 1, m1);
        back.handover.as_mut().unwrap().replaces = name("b");
        assert!(s.check(&back).unwrap_err().contains("cannot take over"));
        // Rollbacks: only the committed coordinator's, to an earlier model version
        // with that version's model, at the committed round, with no participants.
        s.apply(&block(3, round(2, "b")));
        let m2 = s.model;
        let rollback = |to: u64, by: &str, model: Digest| Decision {
            participants: Vec::new(),
            model_hash: model,
            rollback_to: Some(to),
            ..round(2, by)
        };
        assert!(s.check(&rollback(1, "b", m1)).is_ok());
        assert!(s
            .check(&rollback(1, "a", m1))
            .unwrap_err()
            .contains("b coordinates"));
        let mut signed_by_other = rollback(1, "b", m1);
        signed_by_other.signed.as_mut().unwrap().by = name("c");
        assert!(s.check(&signed_by_other).is_err());
        assert!(s
            .check(&rollback(1, "b", Digest::of(&[b"m0"])))
            .unwrap_err()
            .contains("another model"));
        assert!(s
            .check(&rollback(2, "b", m1))
            .unwrap_err()
            .contains("no committed model version 2"));
        assert!(s.check(&rollback(0, "b", Digest::of(&[b"m0"]))).is_err());
        let mut later = rollback(1, "b", m1);
        later.round = 3;
        assert!(s
            .check(&later)
            .unwrap_err()
            .contains("keeps the committed round"));
        let mut with_participants = rollback(1, "b", m1);
        with_participants.participants = vec![name("c")];
        assert!(s.check(&with_participants).is_err());
        let mut both = rollback(1, "b", m1);
        both.handover = change("c", 1, m1).handover;
        assert!(s.check(&both).unwrap_err().contains("not both"));
        assert!(s
            .check(&rollback(3, "b", m2))
            .unwrap_err()
            .contains("current model"));
        s.apply(&block(4, rollback(1, "b", m1)));
        assert_eq!((s.round, s.model, s.model_version), (2, m1, 4));
        assert!(s.check(&round(3, "b")).is_ok());
        assert!(s.check(&rollback(3, "b", m2)).is_ok(), "back again");
    }

    /// A rollback planned after round 2 to version 1: the coordinator asks for it, the
    /// committee commits it, every node adopts version 1's model (fetched from the
    /// coordinator by the nodes whose store lacks it) and rounds 3 and 4 train from it.
    #[test]
    fn a_planned_rollback_is_committed_and_adopted_everywhere() {
        let mut net = Net::new(4, 4, 1, false);
        let store: Store = Default::default();
        net.store = Some(store.clone());
        net.roles = std::mem::take(&mut net.roles)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let r = r.with_rollback(2, 1, &[]);
                if i == 0 {
                    let store = store.clone();
                    r.with_model_store(Box::new(move |h| store.lock().unwrap().get(h).cloned()))
                } else {
                    r // no store: they fetch the model from the coordinator
                }
            })
            .collect();
        net.run_until(Instant::ZERO + Duration::from_secs(4));
        net.assert_chains_agree();
        for (i, r) in net.roles.iter().enumerate() {
            assert!(r.is_done(), "{}", r.cfg.me);
            let chain = &net.chains()[i];
            let rounds: Vec<(u64, Option<u64>)> = chain
                .iter()
                .map(|b| (b.decision.round, b.decision.rollback_to))
                .collect();
            assert_eq!(
                rounds,
                [(1, None), (2, None), (2, Some(1)), (3, None), (4, None)],
                "node {i}"
            );
            assert_eq!(chain[2].decision.model_hash, chain[0].decision.model_hash);
            assert_eq!(chain[2].decision.signed.as_ref().unwrap().by, name("n0"));
            // 0 -> 0.5 -> 0.75, back to 0.5, then 0.75 -> 0.875 (0.9375 without it).
            assert!((r.adopted().1[0] - 0.875).abs() < 1e-6, "node {i}");
            let adopted_at_rollback = net.log.iter().find_map(|(j, _, e)| match e {
                MeshEvent::Committed { block, model, .. }
                    if *j == i && block.decision.rollback_to.is_some() =>
                {
                    Some(model[0])
                }
                _ => None,
            });
            assert_eq!(adopted_at_rollback, Some(0.5), "node {i}");
        }
        let proposed: Vec<usize> = net
            .log
            .iter()
            .filter(|(_, _, e)| matches!(e, MeshEvent::RollbackProposed { to: 1, .. }))
            .map(|(i, _, _)| *i)
            .collect();
        assert_eq!(proposed, [0], "once, by the coordinator");
    }

    /// The rollback is planned at every node: once committed, a coordinator that takes
    /// over later does not ask for it again.
    #[test]
    fn a_committed_rollback_is_not_asked_for_again_after_a_handover() {
        let mut net = Net::new(7, 8, 2, false);
        let store: Store = Default::default();
        net.store = Some(store.clone());
        net.roles = std::mem::take(&mut net.roles)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let r = r.with_rollback(2, 1, &[]);
                let store = store.clone();
                if i == 0 {
                    r.with_model_store(Box::new(move |h| store.lock().unwrap().get(h).cloned()))
                } else {
                    r
                }
            })
            .collect();
        net.kills
            .push((6, Instant::ZERO + Duration::from_millis(10)));
        net.kills
            .push((0, Instant::ZERO + Duration::from_millis(1200)));
        net.run_until(Instant::ZERO + Duration::from_secs(12));
        net.assert_chains_agree();
        let chain = net.chains()[1].clone();
        let kinds: Vec<&str> = chain
            .iter()
            .map(|b| match (&b.decision.rollback_to, &b.decision.handover) {
                (Some(_), _) => "rollback",
                (_, Some(_)) => "handover",
                _ => "round",
            })
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "rollback").count(),
            1,
            "{kinds:?}"
        );
        let rollback = kinds.iter().position(|k| *k == "rollback").unwrap();
        let handover = kinds.iter().position(|k| *k == "handover").unwrap();
        assert!(rollback < handover, "{kinds:?}");
        assert!(net.roles[1].is_done());
        assert!(!net.log.iter().any(|(i, _, e)| *i != 0
            && matches!(
                e,
                MeshEvent::RollbackProposed { .. } | MeshEvent::RollbackRefused { .. }
            )));
    }

    #[test]
    fn a_rollback_to_an_unknown_version_is_not_asked_for() {
        let mut net = Net::new(4, 3, 1, false);
        net.roles = std::mem::take(&mut net.roles)
            .into_iter()
            .map(|r| r.with_rollback(1, 9, &[]))
            .collect();
        net.run_until(Instant::ZERO + Duration::from_secs(3));
        net.assert_chains_agree();
        assert!(net.log.iter().any(|(i, _, e)| *i == 0
            && matches!(e, MeshEvent::RollbackRefused { to: 9, reason } if reason.contains("no committed model version 9"))));
        for (i, c) in net.chains().iter().enumerate() {
            assert_eq!(c.len(), 3, "node {i}");
            assert!(c.iter().all(|b| b.decision.rollback_to.is_none()));
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let cfg = |order: Vec<&str>, failover: u64| {
            let order: Vec<NodeName> = order.into_iter().map(name).collect();
            let mut c = config(&name("a"), &order, 1, 0);
            c.round_timeout = Duration::from_millis(100);
            c.failover_after = Duration::from_millis(failover);
            c.payload_max = 16_384;
            c
        };
        let refused = |c| role(c, vec![0.0; 3]).err().unwrap_or_default();
        assert!(refused(cfg(vec!["b"], 500)).contains("not in the coordinator order"));
        assert!(refused(cfg(vec!["a", "a"], 500)).contains("twice"));
        assert!(refused(cfg(vec!["a", "b"], 100)).contains("longer than a round"));
        let mut small = cfg(vec!["a", "b"], 500);
        small.payload_max = 200;
        assert!(refused(small).contains("too small"));
        let mut other = cfg(vec!["a", "b"], 500);
        other.committee.candidates = vec![name("a"), name("c")];
        assert!(refused(other).contains("candidates"));
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
    /// fragments are ignored with their reason; a genuine proposed model is kept but
    /// not adopted without a committed block naming it.
    #[test]
    fn forged_outsider_malformed_and_uncommitted_payloads_are_not_adopted() {
        use crate::keys::EcdsaKey;
        use crate::AuthSigner;
        let key = || Arc::new(EcdsaKey::generate().unwrap().0);
        let (a, b, mallory) = (key(), key(), key());
        let credentials: BTreeMap<NodeName, Vec<u8>> = [
            (name("a"), a.public_key().to_vec()),
            (name("b"), b.public_key().to_vec()),
        ]
        .into();
        let order = vec![name("a"), name("b")];
        let mut cfg = config(&name("b"), &order, 3, 0);
        cfg.round_timeout = Duration::from_millis(100);
        let signer = |k: Arc<EcdsaKey>| -> Arc<dyn Signer> {
            Arc::new(AuthSigner::new(k, credentials.clone()))
        };
        let verifier = Verifier::new(b.clone(), credentials.clone());
        let mut role_b = MeshRole::new(
            cfg,
            vec![0.0; 4],
            Box::new(TowardsOne),
            signer(b.clone()),
            b.clone(),
            verifier,
            &[],
            Instant::ZERO,
        )
        .unwrap();
        let proposed = |k: Arc<EcdsaKey>| {
            let m = &wire::model_chunks(1, &[1.0; 4])[0];
            let frame = m.encode(&k.sign(&m.encode_body()));
            MeshRole::envelope(TAG_PROPOSED, frame)
        };
        let now = Instant::ZERO + Duration::from_millis(1);
        ignored(&mut role_b);
        role_b.handle_message(now, &name("a"), &proposed(mallory.clone()));
        role_b.handle_message(now, &name("m"), &proposed(mallory));
        role_b.handle_message(now, &name("a"), &[]);
        role_b.handle_message(now, &name("a"), &[9, 1, 2]);
        role_b.handle_message(now, &name("a"), &[TAG_FRAGMENT, 0, 0, 0, 0, 5, 0, 2, 0, 1]);
        role_b.handle_message(now, &name("a"), &[TAG_FRAGMENT, 1]);
        role_b.handle_message(now, &name("a"), &[TAG_SUBMIT, 200, 0, 1]);
        let reasons = ignored(&mut role_b);
        assert_eq!(reasons.len(), 7, "{reasons:#?}");
        for (reason, want) in reasons.iter().zip([
            "bad signature",
            "bad signature", // no credential for m
            "empty",
            "unknown envelope tag 9",
            "fragment 5 of 2",
            "shorter than its header",
            "shorter than its signature",
        ]) {
            assert!(reason.contains(want), "{reason} lacks {want}");
        }
        // The genuine frame, in two fragments, is kept, and not adopted: no committed
        // block names it.
        let whole = proposed(a.clone());
        let half = whole.len() / 2;
        for (index, piece) in [&whole[..half], &whole[half..]].into_iter().enumerate() {
            let mut bytes = vec![TAG_FRAGMENT, 7, 0, 0, 0, index as u8, 0, 2, 0];
            bytes.extend_from_slice(piece);
            role_b.handle_message(now, &name("a"), &bytes);
        }
        assert!(ignored(&mut role_b).is_empty());
        assert_eq!(role_b.proposed.len(), 1);
        assert_eq!(role_b.adopted(), (0, &[0.0f32; 4][..]));
    }
}
