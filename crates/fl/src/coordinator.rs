//! The coordinator state machine: sample participants, send the global model, collect
//! updates until the deadline, refuse bad ones, aggregate, apply DP, adopt.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use x0tta6bl4_proto::{Instant, NodeName};

use crate::aggregate::{Aggregator, Context, Update};
use crate::compress;
use crate::dp::{self, DpConfig, RdpAccountant};
use crate::participant::LocalTrainer;
use crate::wire::{self, Message};
use crate::{Signer, Transmit};

/// Coordinator settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Every participant that may be sampled.
    pub participants: Vec<NodeName>,
    /// Participants sampled per round.
    pub per_round: usize,
    /// Time a round waits for updates.
    pub round_timeout: Duration,
    /// Fewest accepted updates a round needs; fewer and the round fails.
    pub min_updates: usize,
    /// Stop after this many rounds.
    pub max_rounds: u64,
    /// Client-level differential privacy.
    pub dp: Option<DpConfig>,
}

/// The server's step from a round's aggregate to the new global model: with velocity
/// `v ← momentum · v + aggregate`, the global model moves by `lr · v` (FedAvgM, Hsu et
/// al. 2019; `lr` 1 and `momentum` 0 is plain FedAvg). It only post-processes the
/// (clipped, noised) aggregate, so it costs no privacy budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerOptimizer {
    /// Server learning rate.
    pub lr: f64,
    /// Server momentum in [0, 1).
    pub momentum: f64,
}

impl Default for ServerOptimizer {
    fn default() -> Self {
        ServerOptimizer {
            lr: 1.0,
            momentum: 0.0,
        }
    }
}

/// Why an update (or one of its chunks) was refused. An update with any refused chunk
/// is dropped whole.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The frame does not parse.
    Malformed(String),
    /// The signature does not verify.
    BadSignature(String),
    /// Not an update.
    UnexpectedKind,
    /// The sender was not sampled this round.
    NotSampled,
    /// For an earlier round (a replay) or with no round open.
    StaleRound {
        /// The update's round.
        got: u64,
        /// The current round.
        current: u64,
    },
    /// For a round not started yet.
    FutureRound {
        /// The update's round.
        got: u64,
        /// The current round.
        current: u64,
    },
    /// Wrong model size, chunk index or count.
    Shape(String),
    /// A NaN or infinite value.
    NonFinite(String),
    /// A chunk or update already received.
    Duplicate,
}

impl Refusal {
    /// A short label, for counters.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::BadSignature(_) => "bad-signature",
            Refusal::UnexpectedKind => "unexpected-kind",
            Refusal::NotSampled => "not-sampled",
            Refusal::StaleRound { .. } => "stale-round",
            Refusal::FutureRound { .. } => "future-round",
            Refusal::Shape(_) => "shape",
            Refusal::NonFinite(_) => "non-finite",
            Refusal::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "malformed frame: {e}"),
            Refusal::BadSignature(e) => write!(f, "bad signature: {e}"),
            Refusal::UnexpectedKind => write!(f, "only update chunks go to the coordinator"),
            Refusal::NotSampled => write!(f, "sender was not sampled this round"),
            Refusal::StaleRound { got, current } => {
                write!(
                    f,
                    "update for round {got}, current round is {current} (replay?)"
                )
            }
            Refusal::FutureRound { got, current } => {
                write!(f, "update for round {got}, current round is {current}")
            }
            Refusal::Shape(e) => write!(f, "wrong shape: {e}"),
            Refusal::NonFinite(e) => write!(f, "non-finite value: {e}"),
            Refusal::Duplicate => write!(f, "duplicate chunk or update"),
        }
    }
}

/// What happened at the coordinator.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A round started with these participants.
    RoundStarted {
        /// Round.
        round: u64,
        /// Sampled participants.
        sampled: Vec<NodeName>,
    },
    /// An update was refused (and counted).
    Refused {
        /// Current round.
        round: u64,
        /// Sender.
        from: NodeName,
        /// Why.
        reason: Refusal,
    },
    /// A round's aggregate was adopted as the new global model.
    RoundCompleted(RoundSummary),
    /// A round ended without a new model.
    RoundFailed {
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// The next round would exceed the privacy budget; training stops.
    BudgetExhausted {
        /// Epsilon spent so far.
        epsilon: f64,
        /// Epsilon after one more round.
        next: f64,
    },
    /// `max_rounds` rounds are done.
    Finished,
}

/// One adopted round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundSummary {
    /// Round.
    pub round: u64,
    /// Participants whose updates were aggregated.
    pub aggregated: Vec<NodeName>,
    /// Of those, the ones the aggregator set aside.
    pub suspected: Vec<NodeName>,
    /// Updates refused this round (whole updates).
    pub refused: usize,
    /// Bytes of update frames received this round.
    pub update_bytes: usize,
    /// Bytes the same updates take dense and unquantized.
    pub dense_update_bytes: usize,
    /// Cumulative epsilon after this round (DP only).
    pub epsilon: Option<f64>,
}

#[derive(Default)]
struct Partial {
    chunks: Option<u16>,
    got: Vec<bool>,
    values: Vec<f32>,
    num_samples: Option<u64>,
    rejected: bool,
    complete: bool,
}

struct Open {
    round: u64,
    deadline: Instant,
    sampled: BTreeMap<NodeName, Partial>,
    bytes: usize,
}

/// The coordinator.
pub struct Coordinator {
    cfg: CoordinatorConfig,
    global: Vec<f32>,
    aggregator: Box<dyn Aggregator>,
    root: Option<Box<dyn LocalTrainer>>,
    signer: Arc<dyn Signer>,
    rng: ChaCha8Rng,
    round: u64,
    open: Option<Open>,
    next_round_at: Option<Instant>,
    accountant: RdpAccountant,
    server: ServerOptimizer,
    velocity: Vec<f32>,
    refusals: BTreeMap<&'static str, u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Coordinator {
    /// A coordinator starting from `initial`; the first round starts at the first
    /// [`Coordinator::handle_timeout`]. `root` trains FLTrust's root update.
    pub fn new(
        cfg: CoordinatorConfig,
        initial: Vec<f32>,
        aggregator: Box<dyn Aggregator>,
        root: Option<Box<dyn LocalTrainer>>,
        signer: Arc<dyn Signer>,
        seed: u64,
    ) -> Self {
        Coordinator {
            cfg,
            global: initial,
            aggregator,
            root,
            signer,
            rng: ChaCha8Rng::seed_from_u64(seed),
            round: 0,
            open: None,
            next_round_at: Some(Instant::ZERO),
            accountant: RdpAccountant::new(),
            server: ServerOptimizer::default(),
            velocity: Vec::new(),
            refusals: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Continue a federation whose rounds up to `round` are done (a coordinator taking
    /// over from one that failed): the first round this one starts is `round + 1`.
    pub fn resume_after(mut self, round: u64) -> Self {
        self.round = round;
        self
    }

    /// Use `server` for the step from each round's aggregate to the global model
    /// (default: plain FedAvg, the aggregate added as it is).
    pub fn with_server_optimizer(mut self, server: ServerOptimizer) -> Self {
        self.server = server;
        self
    }

    /// The current global model.
    pub fn global(&self) -> &[f32] {
        &self.global
    }

    /// The last round started.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Refused updates and chunks by reason label, since the start.
    pub fn refusals(&self) -> &BTreeMap<&'static str, u64> {
        &self.refusals
    }

    /// Epsilon spent so far (DP only).
    pub fn epsilon(&self) -> Option<f64> {
        self.cfg.dp.map(|d| self.accountant.epsilon(d.delta))
    }

    fn sampling_rate(&self) -> f64 {
        self.cfg.per_round.min(self.cfg.participants.len()) as f64
            / self.cfg.participants.len().max(1) as f64
    }

    fn frame(&self, msg: &Message) -> Vec<u8> {
        msg.encode(&self.signer.sign(&msg.encode_body()))
    }

    fn start_round(&mut self, now: Instant) {
        self.next_round_at = None;
        if self.round >= self.cfg.max_rounds {
            self.events.push_back(Event::Finished);
            return;
        }
        if let Some(d) = self.cfg.dp {
            let spent = self.accountant.epsilon(d.delta);
            let next =
                self.accountant
                    .epsilon_after(self.sampling_rate(), d.noise_multiplier, 1, d.delta);
            if next > d.epsilon_budget {
                self.events.push_back(Event::BudgetExhausted {
                    epsilon: spent,
                    next,
                });
                return;
            }
        }
        self.round += 1;
        let k = self.cfg.per_round.min(self.cfg.participants.len());
        let mut sampled: Vec<NodeName> = self
            .cfg
            .participants
            .choose_multiple(&mut self.rng, k)
            .cloned()
            .collect();
        sampled.sort();
        let start = Message::RoundStart {
            round: self.round,
            num_params: self.global.len() as u32,
            chunks: wire::dense_chunk_count(self.global.len()) as u16,
            deadline_ms: self.cfg.round_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            sampled: k as u16,
        };
        let mut frames = vec![self.frame(&start)];
        frames.extend(
            wire::model_chunks(self.round, &self.global)
                .iter()
                .map(|m| self.frame(m)),
        );
        for to in &sampled {
            for f in &frames {
                self.transmits.push_back(Transmit {
                    to: to.clone(),
                    bytes: f.clone(),
                });
            }
        }
        self.open = Some(Open {
            round: self.round,
            deadline: now + self.cfg.round_timeout,
            sampled: sampled
                .iter()
                .map(|n| (n.clone(), Partial::default()))
                .collect(),
            bytes: 0,
        });
        self.events.push_back(Event::RoundStarted {
            round: self.round,
            sampled,
        });
    }

    fn refuse(&mut self, from: &NodeName, reason: Refusal) {
        *self.refusals.entry(reason.label()).or_default() += 1;
        // A bad chunk of this round's update spoils the whole update; a replayed,
        // malformed or misdirected frame (which anyone could forge while frames are
        // unsigned) only counts.
        let spoils = matches!(
            reason,
            Refusal::Shape(_) | Refusal::NonFinite(_) | Refusal::Duplicate
        );
        if let Some(p) = self.open.as_mut().and_then(|o| o.sampled.get_mut(from)) {
            if spoils && !p.complete {
                p.rejected = true;
            }
        }
        self.events.push_back(Event::Refused {
            round: self.round,
            from: from.clone(),
            reason,
        });
    }

    /// Feed a frame received from `from`.
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, bytes: &[u8]) {
        if let Err(reason) = self.admit(from, bytes) {
            self.refuse(from, reason);
        }
        let done = self
            .open
            .as_ref()
            .is_some_and(|o| o.sampled.values().all(|p| p.complete || p.rejected));
        if done {
            self.finish_round(now);
        }
    }

    fn admit(&mut self, from: &NodeName, bytes: &[u8]) -> Result<(), Refusal> {
        let (msg, body, sig) =
            Message::decode(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        self.signer
            .verify(from, body, sig)
            .map_err(Refusal::BadSignature)?;
        let Message::UpdateChunk {
            round,
            num_samples,
            num_params,
            index,
            chunks,
            payload,
        } = msg
        else {
            return Err(Refusal::UnexpectedKind);
        };
        let current = self.round;
        let n = self.global.len();
        let open = match self.open.as_mut() {
            Some(o) if o.round == round => o,
            _ if round > current => {
                return Err(Refusal::FutureRound {
                    got: round,
                    current,
                })
            }
            _ => {
                return Err(Refusal::StaleRound {
                    got: round,
                    current,
                })
            }
        };
        open.bytes += bytes.len();
        let p = open.sampled.get_mut(from).ok_or(Refusal::NotSampled)?;
        if p.complete || p.rejected {
            return Err(Refusal::Duplicate);
        }
        if num_params as usize != n {
            return Err(Refusal::Shape(format!(
                "{num_params} parameters, the model has {n}"
            )));
        }
        if chunks == 0 || index >= chunks || p.chunks.is_some_and(|c| c != chunks) {
            return Err(Refusal::Shape(format!("chunk {index} of {chunks}")));
        }
        if p.num_samples.is_some_and(|s| s != num_samples) || num_samples == 0 {
            return Err(Refusal::Shape(format!(
                "sample count {num_samples} changed or zero"
            )));
        }
        if p.chunks.is_none() {
            p.chunks = Some(chunks);
            p.got = vec![false; chunks as usize];
            p.values = vec![0.0; n];
            p.num_samples = Some(num_samples);
        }
        if p.got[index as usize] {
            return Err(Refusal::Duplicate);
        }
        compress::apply(&payload, &mut p.values).map_err(|e| {
            if e.contains("finite") {
                Refusal::NonFinite(e)
            } else {
                Refusal::Shape(e)
            }
        })?;
        p.got[index as usize] = true;
        p.complete = p.got.iter().all(|&g| g);
        Ok(())
    }

    /// Advance time: close a round at its deadline, start the next one when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.open.as_ref().is_some_and(|o| now >= o.deadline) {
            self.finish_round(now);
        }
        if self.next_round_at.is_some_and(|t| now >= t) {
            self.start_round(now);
        }
    }

    /// When [`Coordinator::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.open {
            Some(o) => Some(o.deadline),
            None => self.next_round_at,
        }
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn finish_round(&mut self, now: Instant) {
        let Some(open) = self.open.take() else { return };
        self.next_round_at = Some(now);
        let round = open.round;
        let mut names = Vec::new();
        let mut updates = Vec::new();
        let mut refused = 0;
        for (name, p) in open.sampled {
            if p.rejected {
                refused += 1;
            } else if p.complete {
                names.push(name);
                updates.push(Update {
                    values: p.values,
                    num_samples: p.num_samples.unwrap_or(1),
                });
            }
        }
        if updates.len() < self.cfg.min_updates.max(1) {
            self.events.push_back(Event::RoundFailed {
                round,
                reason: format!(
                    "{} usable updates by the deadline, {} needed",
                    updates.len(),
                    self.cfg.min_updates.max(1)
                ),
            });
            return;
        }
        let dense_update_bytes = updates.len() * dense_update_bytes(self.global.len());
        if let Some(d) = self.cfg.dp {
            // Server-side clipping: every update's L2 norm to at most `clip`; the
            // aggregator then weighs every participant the same.
            for u in &mut updates {
                dp::clip_l2(&mut u.values, d.clip);
                u.num_samples = 1;
            }
        }
        let root = if self.aggregator.needs_root() {
            match self.root.as_mut() {
                Some(t) => match t.train(&self.global, false, &mut self.rng) {
                    Ok((p, _)) => Some(
                        p.iter()
                            .zip(&self.global)
                            .map(|(a, b)| a - b)
                            .collect::<Vec<f32>>(),
                    ),
                    Err(e) => {
                        self.events.push_back(Event::RoundFailed {
                            round,
                            reason: format!("root update: {e}"),
                        });
                        return;
                    }
                },
                None => None,
            }
        } else {
            None
        };
        let ctx = Context {
            root: root.as_deref(),
        };
        let mut agg = match self.aggregator.aggregate(&updates, &ctx) {
            Ok(a) => a,
            Err(e) => {
                self.events.push_back(Event::RoundFailed {
                    round,
                    reason: format!("{}: {e}", self.aggregator.name()),
                });
                return;
            }
        };
        let mut epsilon = None;
        if let Some(d) = self.cfg.dp {
            // The mean over the expected cohort has sensitivity clip / cohort.
            let cohort = self.cfg.per_round.min(self.cfg.participants.len()).max(1) as f64;
            let scale = updates.len() as f64 / cohort;
            agg.values.iter_mut().for_each(|v| *v *= scale as f32);
            dp::add_gaussian_noise(
                &mut agg.values,
                d.noise_multiplier * d.clip / cohort,
                &mut self.rng,
            );
            self.accountant
                .compose(self.sampling_rate(), d.noise_multiplier, 1);
            epsilon = Some(self.accountant.epsilon(d.delta));
        }
        if self.server == ServerOptimizer::default() {
            for (g, a) in self.global.iter_mut().zip(&agg.values) {
                *g += a;
            }
        } else {
            if self.velocity.len() != self.global.len() {
                self.velocity = vec![0.0; self.global.len()];
            }
            let (lr, mu) = (self.server.lr as f32, self.server.momentum as f32);
            for ((g, v), a) in self
                .global
                .iter_mut()
                .zip(self.velocity.iter_mut())
                .zip(&agg.values)
            {
                *v = mu * *v + a;
                *g += lr * *v;
            }
        }
        let suspected = agg
            .suspected
            .iter()
            .filter_map(|&i| names.get(i).cloned())
            .collect();
        self.events.push_back(Event::RoundCompleted(RoundSummary {
            round,
            aggregated: names,
            suspected,
            refused,
            update_bytes: open.bytes,
            dense_update_bytes,
            epsilon,
        }));
    }
}

/// Bytes of a dense, unsigned update of `num_params` values on the wire.
pub fn dense_update_bytes(num_params: usize) -> usize {
    let chunks = wire::dense_chunk_count(num_params);
    // Per chunk: version, kind, round, samples, params, index, chunks, encoding,
    // offset, count, signature length.
    chunks * (1 + 1 + 8 + 8 + 4 + 2 + 2 + 1 + 4 + 4 + 2) + num_params * 4
}
