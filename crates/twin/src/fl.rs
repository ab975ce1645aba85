//! Federated learning in the twin: one [`MeshRole`] per simulated node, over the
//! simulated mesh.
//!
//! Every simulated node runs the federation role `x0tta6bl4 fl agent` runs against a
//! node daemon ([`x0tta6bl4_fl::mesh`]: participant, PBFT committee replica, and the
//! coordinator while the committed chain names it), and its frames travel as real mesh
//! application messages on [`FL_CHANNEL`], the channel `fl run` uses, in the envelopes
//! and fragments the role makes (payloads up to the daemon's 16 KiB, as `fl run` sets).
//! The simulated `x0tta6bl4_proto::Node` of the sender routes them hop by hop, so link
//! loss, latency, jitter, bandwidth, partitions and crashed nodes apply to them as to
//! every other frame, and a message without a route is not sent (counted in
//! [`FlReport::fl_unroutable`]). The engine hands each delivery back at the simulated
//! instant it arrives ([`Sim::collect_channel`]); the role's timers (round deadline,
//! committee view changes, resubmissions, coordinator failover) run on the simulated
//! clock. Committee messages and FL frames are signed and checked with the twin's
//! keyed-hash authenticator ([`SimAuthenticator`], one key per node).
//!
//! ## Training and its cost in simulated time
//!
//! Training is real: each node holds its IID share of the scikit-learn digits training
//! set and trains the federation's candle multinomial logistic regression on it
//! ([`CandleTrainer`], as `fl run` does); each aggregated model's test accuracy goes in
//! its round's committed block. Its *duration* is modelled: a sampled participant's
//! update is handed back to its role `rows × epochs × compute_per_sample` of simulated
//! time after the round's model reached it, times `straggler_factor` for stragglers (a
//! fixed set of `stragglers × nodes` nodes drawn from the seed). An update that comes
//! after the round's deadline is not aggregated, like any late update. A
//! drop-out is a sampled participant that, with probability `dropouts` per round (drawn
//! from the seed), leaves before sending its update (it stays a mesh node and a
//! committee candidate).
//!
//! ## Faults
//!
//! A partition ([`Partition`]) cuts every link between the first `fraction` of the
//! nodes (in topology order: the first coordinator is on that side) and the rest, and
//! heals them after `duration`; a coordinator crash ([`FlOptions::crash_coordinator_at`])
//! crashes the node the committed chain names as coordinator at that time (its mesh
//! node and its role; it never comes back). Training goes on only under a coordinator
//! the committee commits: every other node asks for a handover after `failover_after`
//! of silence, as over the real mesh.
//!
//! ## Determinism
//!
//! The run depends only on the topology, the options and the seed: nodes are visited in
//! index order, training jobs complete in (time, order issued) order and every random
//! choice comes from seeded generators; [`FlReport`] is identical for the same inputs
//! except `wall_seconds`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use x0tta6bl4_fl::committee::{CommitteeConfig, Digest, Verifier};
use x0tta6bl4_fl::data::{partition_iid, Dataset};
use x0tta6bl4_fl::mesh::{MeshConfig, MeshEvent, MeshRole, FL_CHANNEL};
use x0tta6bl4_fl::model::{self, ModelKind, ModelSpec, TrainConfig};
use x0tta6bl4_fl::{AggregatorKind, AuthSigner, CandleTrainer, LocalTrainer, TrainJob};
use x0tta6bl4_proto::{Authenticator, Instant, NodeName, Rng, SimAuthenticator};

use crate::engine::{Sim, SimConfig, DELIVERY_CALLBACK};
use crate::runner::{converge_with, Start};
use crate::topology::Topology;

/// The mesh payload limit of the simulated nodes: the daemon's, as `fl run` sets it.
pub const FL_PAYLOAD_MAX: usize = 16_384;

/// A partition of the simulated mesh during training.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Partition {
    /// When it starts, after training started.
    pub at: Duration,
    /// How long it lasts.
    pub duration: Duration,
    /// Share of the nodes (the first ones, in topology order) cut off from the rest.
    pub fraction: f64,
}

/// Settings of a federated-learning run in the twin.
#[derive(Clone, Debug)]
pub struct FlOptions {
    /// Seed of the mesh, the data split, the initial model, sampling, stragglers,
    /// drop-outs and training.
    pub seed: u64,
    /// Rounds to commit.
    pub rounds: u64,
    /// Participants a round samples.
    pub participants_per_round: usize,
    /// Share of the nodes that train `straggler_factor` times slower.
    pub stragglers: f64,
    /// How much slower a straggler trains.
    pub straggler_factor: f64,
    /// Probability that a sampled participant drops out of a round before sending.
    pub dropouts: f64,
    /// Simulated compute time per training sample and epoch.
    pub compute_per_sample: Duration,
    /// Local epochs per round.
    pub epochs: usize,
    /// Local minibatch size.
    pub batch: usize,
    /// Local SGD learning rate.
    pub lr: f64,
    /// Time a round waits for updates.
    pub round_timeout: Duration,
    /// Silence of the coordinator after which a node asks for a handover.
    pub failover_after: Duration,
    /// Byzantine validators the committee tolerates (3f+1 members per epoch).
    pub committee_f: usize,
    /// Heights per committee epoch.
    pub epoch_len: u64,
    /// First view-change timeout of the committee.
    pub view_timeout: Duration,
    /// A partition during training.
    pub partition: Option<Partition>,
    /// Crash the committed coordinator's node this long after training started.
    pub crash_coordinator_at: Option<Duration>,
    /// Give up after this much simulated training time.
    pub sim_limit: Duration,
}

impl FlOptions {
    /// Defaults of `x0tta6bl4 twin fl` (those of `fl run` for the timers and training).
    pub fn new(seed: u64) -> FlOptions {
        FlOptions {
            seed,
            rounds: 10,
            participants_per_round: 20,
            stragglers: 0.0,
            straggler_factor: 10.0,
            dropouts: 0.0,
            compute_per_sample: Duration::from_millis(5),
            epochs: 2,
            batch: 16,
            lr: 0.1,
            round_timeout: Duration::from_millis(2000),
            failover_after: Duration::from_millis(5000),
            committee_f: 2,
            epoch_len: 4,
            view_timeout: Duration::from_millis(1000),
            partition: None,
            crash_coordinator_at: None,
            sim_limit: Duration::from_secs(600),
        }
    }

    /// Whether these options fit a mesh of `nodes` nodes (what is wrong, if not).
    pub fn check(&self, nodes: usize) -> Result<(), String> {
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        if self.rounds == 0 {
            return Err("rounds must be at least 1".into());
        }
        if self.participants_per_round == 0 || self.participants_per_round >= nodes {
            return Err(format!(
                "participants per round must be 1 to {} (the nodes but the coordinator)",
                nodes.saturating_sub(1)
            ));
        }
        if !fraction(self.stragglers) || !fraction(self.dropouts) || self.dropouts >= 1.0 {
            return Err("stragglers must be in [0, 1] and drop-outs in [0, 1)".into());
        }
        if !(self.straggler_factor >= 1.0 && self.straggler_factor.is_finite()) {
            return Err("the straggler factor must be at least 1".into());
        }
        if self.epochs == 0 || self.batch == 0 || !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err("epochs and batch must be at least 1 and lr positive".into());
        }
        if 3 * self.committee_f + 1 > nodes {
            return Err(format!(
                "a committee tolerating f = {} needs {} nodes, the mesh has {nodes}",
                self.committee_f,
                3 * self.committee_f + 1
            ));
        }
        if let Some(p) = &self.partition {
            if !(p.fraction > 0.0 && p.fraction < 1.0) || p.duration.is_zero() {
                return Err("a partition needs 0 < fraction < 1 and a duration".into());
            }
        }
        Ok(())
    }
}

/// A committed round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundRecord {
    /// Round.
    pub round: u64,
    /// Height of its block.
    pub height: u64,
    /// Its coordinator.
    pub coordinator: String,
    /// Updates aggregated.
    pub participants: usize,
    /// Test accuracy of its model (digits test set).
    pub accuracy: Option<f64>,
    /// Simulated seconds since training started when the first node committed it.
    pub committed_at_s: f64,
    /// Simulated seconds since the previous round was committed (or training started).
    pub sim_seconds: f64,
}

/// A committed coordinator change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandoverRecord {
    /// Height of its block.
    pub height: u64,
    /// The silent coordinator.
    pub from: String,
    /// The successor.
    pub to: String,
    /// Simulated seconds since training started when the first node committed it.
    pub committed_at_s: f64,
}

/// What a federated-learning run in the twin did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlReport {
    /// Nodes of the mesh (every one a participant and committee candidate).
    pub nodes: usize,
    /// Links of the mesh.
    pub links: usize,
    /// Seed.
    pub seed: u64,
    /// Rounds asked for.
    pub rounds: u64,
    /// Rounds committed (a round that failed for too few updates is not; its number
    /// is skipped).
    pub rounds_committed: u64,
    /// The last committed round (training is complete when it is `rounds`).
    pub last_round: u64,
    /// Participants sampled per round.
    pub participants_per_round: usize,
    /// Test accuracy of the last committed model.
    pub final_accuracy: Option<f64>,
    /// Test accuracy of each committed round's model.
    pub accuracy_per_round: Vec<Option<f64>>,
    /// Simulated seconds each round took to commit.
    pub sim_seconds_per_round: Vec<f64>,
    /// The committed rounds.
    pub round_log: Vec<RoundRecord>,
    /// Blocks the committee committed (rounds and handovers).
    pub committee_commits: u64,
    /// Committed coordinator changes.
    pub handovers: Vec<HandoverRecord>,
    /// Heights at which two nodes committed different blocks (must be 0).
    pub conflicting_commits: u64,
    /// Live nodes at the end that adopted the last round.
    pub nodes_finished: usize,
    /// Live nodes at the end.
    pub nodes_alive: usize,
    /// Stragglers (nodes training `straggler_factor` times slower).
    pub stragglers: usize,
    /// Sampled participants that dropped out of their round.
    pub dropouts: u64,
    /// Updates sent by participants.
    pub updates_sent: u64,
    /// Updates the coordinators refused (late, wrong round, ...).
    pub updates_refused: u64,
    /// Rounds that ended without a model (too few updates).
    pub rounds_failed: u64,
    /// FL mesh messages sent (envelopes and fragments).
    pub fl_messages_sent: u64,
    /// FL mesh messages delivered.
    pub fl_messages_delivered: u64,
    /// FL mesh messages not sent: no route from the sender (partition, failures).
    pub fl_unroutable: u64,
    /// Frames lost on links during training (every kind: loss, cut links, crashes).
    pub frames_lost: u64,
    /// Local trainings run (real candle training).
    pub trainings: u64,
    /// Simulated seconds the mesh took to converge before training.
    pub converged_s: f64,
    /// Simulated seconds of training.
    pub sim_seconds: f64,
    /// Wall-clock seconds of the whole run (not part of the determinism).
    pub wall_seconds: f64,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FlError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The mesh did not converge before training.
    #[error("the mesh did not converge: {0}")]
    Mesh(String),
}

/// A trainer the roles never call: training runs in the driver, in simulated time.
struct InDriver;

impl LocalTrainer for InDriver {
    fn train(
        &mut self,
        _global: &[f32],
        _flip: bool,
        _rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, u64), String> {
        Err("training runs in the twin's driver".into())
    }
}

/// The data the run trains and evaluates on.
pub struct FlData {
    /// Training set, split IID across the nodes.
    pub train: Arc<Dataset>,
    /// Test set, for each committed model's accuracy.
    pub test: Arc<Dataset>,
}

struct Driver {
    sim: Sim,
    roles: Vec<Option<MeshRole>>,
    trainers: Vec<CandleTrainer>,
    straggler: Vec<bool>,
    deadline: Vec<Option<Instant>>,
    /// Training jobs: (done at, issue order) → (node, job).
    jobs: BTreeMap<(Instant, u64), (u32, TrainJob)>,
    job_seq: u64,
    rng: Rng,
    start: Instant,
    /// Height → (block hash, first commit time).
    blocks: BTreeMap<u64, (Digest, Instant)>,
    report: FlReport,
    last_round_at: Instant,
    cut: Vec<u32>,
}

/// Converge a mesh over `topology`, then train `opts.rounds` rounds with one
/// [`MeshRole`] per node over it.
pub fn run_fl(topology: &Topology, opts: &FlOptions, data: &FlData) -> Result<FlReport, FlError> {
    let wall = std::time::Instant::now();
    let n = topology.len();
    opts.check(n).map_err(FlError::Options)?;
    let mut config = SimConfig::new(opts.seed);
    config.protocol.payload_bytes_max = FL_PAYLOAD_MAX;
    let bound = Duration::from_secs(120);
    let (mut sim, converged) = converge_with(topology, &config, bound, Start::Cold, 1)
        .map_err(|e| FlError::Mesh(e.to_string()))?;
    sim.collect_channel(FL_CHANNEL);
    let start = sim.now();
    let names: Vec<NodeName> = (0..n as u32).map(|i| sim.name(i).clone()).collect();
    let spec = ModelSpec {
        kind: ModelKind::LogReg,
        inputs: data.train.features,
        classes: data.train.classes,
    };
    let mut split_rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let initial = spec.init(&mut split_rng);
    let parts = partition_iid(data.train.len(), n, &mut split_rng);
    let committee = CommitteeConfig {
        chain_id: "x0tta6bl4-twin-fl".into(),
        candidates: names.clone(),
        f: opts.committee_f,
        epoch_len: opts.epoch_len,
        view_timeout: opts.view_timeout,
        resend: opts.view_timeout / 2,
    };
    committee.check().map_err(FlError::Options)?;
    let credentials: BTreeMap<NodeName, Vec<u8>> = names
        .iter()
        .map(|n| (n.clone(), n.as_str().as_bytes().to_vec()))
        .collect();
    let mut roles = Vec::with_capacity(n);
    let mut trainers = Vec::with_capacity(n);
    for (i, me) in names.iter().enumerate() {
        let auth: Arc<dyn Authenticator> =
            Arc::new(SimAuthenticator::new(opts.seed ^ 0xf1, me.clone()));
        let signer = Arc::new(AuthSigner::new(auth.clone(), credentials.clone()));
        let verifier = Verifier::new(auth.clone(), credentials.clone());
        let cfg = MeshConfig {
            me: me.clone(),
            order: names.clone(),
            rounds: opts.rounds,
            round_timeout: opts.round_timeout,
            failover_after: opts.failover_after,
            min_updates: 1,
            aggregator: AggregatorKind::FedAvg,
            seed: opts.seed,
            payload_max: FL_PAYLOAD_MAX,
            committee: committee.clone(),
            train_outside: true,
        };
        let test = data.test.clone();
        let role = MeshRole::new(
            cfg,
            initial.clone(),
            Box::new(InDriver),
            signer,
            auth,
            verifier.clone(),
            &[],
            start,
        )
        .map_err(FlError::Options)?
        .with_participants_per_round(opts.participants_per_round, start)
        .with_evaluator(Box::new(move |m| model::accuracy(spec, m, &test).ok()));
        roles.push(Some(role));
        trainers.push(CandleTrainer {
            spec,
            data: data.train.clone(),
            rows: parts[i].clone(),
            cfg: TrainConfig {
                epochs: opts.epochs,
                batch: opts.batch,
                lr: opts.lr,
                momentum: 0.0,
            },
        });
    }
    let mut rng = Rng::seed(opts.seed ^ 0x5717_a66e);
    let stragglers = (opts.stragglers * n as f64).round() as usize;
    let mut straggler = vec![false; n];
    let mut order: Vec<usize> = (0..n).collect();
    for k in (1..n).rev() {
        order.swap(k, rng.below(k as u64 + 1) as usize);
    }
    for &i in order.iter().take(stragglers) {
        straggler[i] = true;
    }
    let frames_lost_before = sim.stats().frames_lost;
    let mut d = Driver {
        sim,
        roles,
        trainers,
        straggler,
        deadline: vec![None; n],
        jobs: BTreeMap::new(),
        job_seq: 0,
        rng,
        start,
        blocks: BTreeMap::new(),
        last_round_at: start,
        cut: Vec::new(),
        report: FlReport {
            nodes: n,
            links: topology.links.len(),
            seed: opts.seed,
            rounds: opts.rounds,
            rounds_committed: 0,
            last_round: 0,
            participants_per_round: opts.participants_per_round,
            final_accuracy: None,
            accuracy_per_round: Vec::new(),
            sim_seconds_per_round: Vec::new(),
            round_log: Vec::new(),
            committee_commits: 0,
            handovers: Vec::new(),
            conflicting_commits: 0,
            nodes_finished: 0,
            nodes_alive: n,
            stragglers,
            dropouts: 0,
            updates_sent: 0,
            updates_refused: 0,
            rounds_failed: 0,
            fl_messages_sent: 0,
            fl_messages_delivered: 0,
            fl_unroutable: 0,
            frames_lost: 0,
            trainings: 0,
            converged_s: converged.as_secs_f64(),
            sim_seconds: 0.0,
            wall_seconds: 0.0,
        },
    };
    d.run(opts);
    let now = d.sim.now();
    let mut report = d.report;
    report.frames_lost = d.sim.stats().frames_lost - frames_lost_before;
    report.sim_seconds = now.saturating_since(start).as_secs_f64();
    report.nodes_alive = d.roles.iter().flatten().count();
    report.nodes_finished = d.roles.iter().flatten().filter(|r| r.is_done()).count();
    report.wall_seconds = wall.elapsed().as_secs_f64();
    Ok(report)
}

impl Driver {
    fn run(&mut self, opts: &FlOptions) {
        let n = self.roles.len();
        let end = self.start + opts.sim_limit;
        // Faults: (time, kind) with 0 partition, 1 heal, 2 coordinator crash.
        let mut faults: Vec<(Instant, u8)> = Vec::new();
        if let Some(p) = &opts.partition {
            faults.push((self.start + p.at, 0));
            faults.push((self.start + p.at + p.duration, 1));
        }
        if let Some(at) = opts.crash_coordinator_at {
            faults.push((self.start + at, 2));
        }
        faults.sort();
        let mut faults = faults.into_iter().peekable();
        for i in 0..n {
            self.pump(i as u32, opts);
        }
        // Once one node adopted the last round, the others get this long to follow.
        let linger = opts.failover_after * 2;
        let mut first_done: Option<Instant> = None;
        loop {
            let now = self.sim.now();
            let live: Vec<&MeshRole> = self.roles.iter().flatten().collect();
            if live.iter().all(|r| r.is_done()) {
                break;
            }
            if first_done.is_none() && live.iter().any(|r| r.is_done()) {
                first_done = Some(now);
            }
            if first_done.is_some_and(|t| now >= t + linger) || now >= end {
                break;
            }
            let mut next = end;
            if let Some(t) = self.deadline.iter().flatten().min() {
                next = next.min(*t);
            }
            if let Some(((t, _), _)) = self.jobs.first_key_value() {
                next = next.min(*t);
            }
            if let Some((t, _)) = faults.peek() {
                next = next.min(*t);
            }
            if let Some(t) = first_done {
                next = next.min(t + linger);
            }
            let fired = self.sim.run_until(next.max(now));
            let now = self.sim.now();
            debug_assert!(fired.iter().all(|&c| c == DELIVERY_CALLBACK));
            for (to, from, payload) in self.sim.take_collected() {
                self.report.fl_messages_delivered += 1;
                let from = self.sim.name(from).clone();
                if let Some(role) = self.roles[to as usize].as_mut() {
                    role.handle_message(now, &from, &payload);
                    self.pump(to, opts);
                }
            }
            while let Some((&(t, seq), _)) = self.jobs.first_key_value() {
                if t > now {
                    break;
                }
                let (i, job) = self.jobs.remove(&(t, seq)).expect("present");
                if self.roles[i as usize].is_none() {
                    continue;
                }
                let mut train_rng = ChaCha8Rng::seed_from_u64(job.seed);
                let result =
                    self.trainers[i as usize].train(&job.model, job.flip_labels, &mut train_rng);
                self.report.trainings += 1;
                if let Some(role) = self.roles[i as usize].as_mut() {
                    role.trained(now, job.round, result);
                }
                self.pump(i, opts);
            }
            for i in 0..n {
                if self.deadline[i].is_some_and(|t| t <= now) {
                    if let Some(role) = self.roles[i].as_mut() {
                        role.handle_timeout(now);
                    }
                    self.pump(i as u32, opts);
                }
            }
            while let Some(&(t, kind)) = faults.peek() {
                if t > now {
                    break;
                }
                faults.next();
                self.fault(kind, opts);
            }
        }
    }

    /// Apply a fault: 0 partition, 1 heal, 2 coordinator crash.
    fn fault(&mut self, kind: u8, opts: &FlOptions) {
        let n = self.roles.len();
        match kind {
            0 => {
                let p = opts.partition.as_ref().expect("a partition");
                let side = ((p.fraction * n as f64).round() as usize).clamp(1, n - 1) as u32;
                for (l, link) in self.sim.links().iter().enumerate() {
                    if (link.a < side) != (link.b < side) {
                        self.cut.push(l as u32);
                    }
                }
                for &l in &self.cut {
                    self.sim.set_link_up(l, false);
                }
            }
            1 => {
                for l in std::mem::take(&mut self.cut) {
                    self.sim.set_link_up(l, true);
                }
            }
            _ => {
                // The coordinator the most advanced live node follows.
                let coordinator = self
                    .roles
                    .iter()
                    .flatten()
                    .max_by_key(|r| r.state().height)
                    .map(|r| r.coordinator().clone());
                if let Some(i) = coordinator.and_then(|c| self.sim.index_of(&c)) {
                    self.sim.crash(i);
                    self.roles[i as usize] = None;
                    self.deadline[i as usize] = None;
                }
            }
        }
    }

    /// Move node `i`'s outputs: frames onto the mesh, training jobs onto the clock,
    /// events into the report; then its next deadline.
    fn pump(&mut self, i: u32, opts: &FlOptions) {
        let now = self.sim.now();
        let Some(role) = self.roles[i as usize].as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        while let Some(t) = role.poll_transmit() {
            sends.push(t);
        }
        let mut jobs = Vec::new();
        while let Some(job) = role.poll_train() {
            jobs.push(job);
        }
        let mut events = Vec::new();
        while let Some(e) = role.poll_event() {
            events.push(e);
        }
        self.deadline[i as usize] = role.poll_timeout();
        for t in sends {
            let Some(to) = self.sim.index_of(&t.to) else {
                continue;
            };
            if self.sim.send(i, to, FL_CHANNEL, t.bytes) {
                self.report.fl_messages_sent += 1;
            } else {
                self.report.fl_unroutable += 1;
            }
        }
        for job in jobs {
            if self.rng.unit() < opts.dropouts {
                self.report.dropouts += 1;
                continue;
            }
            let rows = self.trainers[i as usize].rows.len() as f64;
            let factor = if self.straggler[i as usize] {
                opts.straggler_factor
            } else {
                1.0
            };
            let cost = opts
                .compute_per_sample
                .mul_f64(rows * opts.epochs as f64 * factor);
            self.jobs.insert((now + cost, self.job_seq), (i, job));
            self.job_seq += 1;
        }
        for e in events {
            self.event(now, e);
        }
    }

    fn event(&mut self, now: Instant, event: MeshEvent) {
        let since = |t: Instant, from: Instant| t.saturating_since(from).as_secs_f64();
        match event {
            MeshEvent::Committed { block, .. } => {
                let hash = block.hash();
                if let Some((known, _)) = self.blocks.get(&block.height) {
                    if *known != hash {
                        self.report.conflicting_commits += 1;
                    }
                    return;
                }
                self.blocks.insert(block.height, (hash, now));
                self.report.committee_commits += 1;
                let d = &block.decision;
                let coordinator = d
                    .coordinator
                    .as_ref()
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default();
                if let Some(h) = &d.handover {
                    self.report.handovers.push(HandoverRecord {
                        height: block.height,
                        from: h.replaces.as_str().to_owned(),
                        to: coordinator,
                        committed_at_s: since(now, self.start),
                    });
                    return;
                }
                let record = RoundRecord {
                    round: d.round,
                    height: block.height,
                    coordinator,
                    participants: d.participants.len(),
                    accuracy: d.accuracy,
                    committed_at_s: since(now, self.start),
                    sim_seconds: since(now, self.last_round_at),
                };
                self.last_round_at = now;
                self.report.rounds_committed += 1;
                self.report.last_round = record.round;
                self.report.accuracy_per_round.push(record.accuracy);
                self.report.sim_seconds_per_round.push(record.sim_seconds);
                self.report.final_accuracy = record.accuracy;
                self.report.round_log.push(record);
            }
            MeshEvent::Refused { .. } => self.report.updates_refused += 1,
            MeshEvent::RoundFailed { .. } => self.report.rounds_failed += 1,
            MeshEvent::Participant(x0tta6bl4_fl::ParticipantEvent::Sent { .. }) => {
                self.report.updates_sent += 1
            }
            _ => {}
        }
    }
}

/// The nodes that coordinated committed rounds, in order of their first round.
pub fn coordinators(report: &FlReport) -> Vec<String> {
    let mut seen = BTreeSet::new();
    report
        .round_log
        .iter()
        .filter(|r| seen.insert(r.coordinator.clone()))
        .map(|r| r.coordinator.clone())
        .collect()
}
