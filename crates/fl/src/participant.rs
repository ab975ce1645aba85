//! The participant state machine: receive a round's global model, train locally, send
//! the (possibly compressed, possibly Byzantine) update before the deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use x0tta6bl4_proto::{Instant, NodeName};

use crate::attack::{AttackKind, AttackParams, Collusion};
use crate::compress::{self, Compression};
use crate::data::Dataset;
use crate::model::{self, ModelSpec, TrainConfig};
use crate::wire::Message;
use crate::{Signer, Transmit};

/// Local training: from the global model to new parameters and the sample count.
pub trait LocalTrainer: Send {
    /// Train from `global`; `flip_labels` is the label-flip attack.
    fn train(
        &mut self,
        global: &[f32],
        flip_labels: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, u64), String>;
}

/// A candle model trained on a participant's rows of a shared data set.
pub struct CandleTrainer {
    /// Architecture.
    pub spec: ModelSpec,
    /// The data set (shared).
    pub data: Arc<Dataset>,
    /// This participant's rows.
    pub rows: Vec<usize>,
    /// Training settings.
    pub cfg: TrainConfig,
}

impl LocalTrainer for CandleTrainer {
    fn train(
        &mut self,
        global: &[f32],
        flip_labels: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, u64), String> {
        let p = model::train(
            self.spec,
            global,
            &self.data,
            &self.rows,
            self.cfg,
            flip_labels,
            rng,
        )
        .map_err(|e| e.to_string())?;
        Ok((p, self.rows.len() as u64))
    }
}

/// How a participant behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The attack (or [`AttackKind::None`]).
    pub attack: AttackKind,
    /// Attack strengths.
    pub params: AttackParams,
    /// The colluders' pool (ALIE, IPM).
    pub collusion: Option<Arc<Mutex<Collusion>>>,
}

impl Behaviour {
    /// An honest participant.
    pub fn honest() -> Self {
        Behaviour {
            attack: AttackKind::None,
            params: AttackParams::default(),
            collusion: None,
        }
    }
}

/// What happened at a participant.
#[derive(Clone, Debug, PartialEq)]
pub enum ParticipantEvent {
    /// The update for `round` was sent.
    Sent {
        /// Round.
        round: u64,
        /// Bytes of all its frames.
        bytes: usize,
    },
    /// A message was ignored.
    Ignored {
        /// Why.
        reason: String,
    },
    /// Local training failed; no update this round.
    TrainingFailed {
        /// Round.
        round: u64,
        /// Why.
        reason: String,
    },
}

/// Local training handed to the driver (a participant built with
/// [`Participant::train_outside`]): train from `model` with an RNG seeded by `seed`, then
/// give the result to [`Participant::trained`]. The driver may train on another thread
/// while it keeps feeding frames.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainJob {
    /// The round.
    pub round: u64,
    /// The round's global model.
    pub model: Vec<f32>,
    /// The label-flip attack.
    pub flip_labels: bool,
    /// Seed of the training RNG.
    pub seed: u64,
}

struct Incoming {
    round: u64,
    num_params: usize,
    chunks: usize,
    got: Vec<bool>,
    model: Vec<f32>,
    deadline: Instant,
    sampled: usize,
}

/// A participant.
pub struct Participant {
    name: NodeName,
    coordinator: NodeName,
    trainer: Box<dyn LocalTrainer>,
    behaviour: Behaviour,
    compression: Compression,
    feedback: compress::Feedback,
    signer: Arc<dyn Signer>,
    rng: ChaCha8Rng,
    incoming: Option<Incoming>,
    latest_round: u64,
    /// A colluder's crafted send: (when, round, samples, honest update, model size).
    held: Option<(Instant, u64, u64, Vec<f32>, usize)>,
    /// Training outside: the jobs not yet taken, and the round being trained with its
    /// model, deadline and sample size.
    outside: bool,
    jobs: VecDeque<TrainJob>,
    training: Option<Incoming>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ParticipantEvent>,
}

impl Participant {
    /// A participant `name` that takes rounds only from `coordinator`.
    pub fn new(
        name: NodeName,
        coordinator: NodeName,
        trainer: Box<dyn LocalTrainer>,
        behaviour: Behaviour,
        compression: Compression,
        signer: Arc<dyn Signer>,
        seed: u64,
    ) -> Self {
        Participant {
            name,
            coordinator,
            trainer,
            behaviour,
            compression,
            feedback: compress::Feedback::default(),
            signer,
            rng: ChaCha8Rng::seed_from_u64(seed),
            incoming: None,
            latest_round: 0,
            held: None,
            outside: false,
            jobs: VecDeque::new(),
            training: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Behave as `behaviour` from now on (an attack, for a Byzantine participant).
    pub fn set_behaviour(&mut self, behaviour: Behaviour) {
        self.behaviour = behaviour;
    }

    /// Hand local training to the driver ([`Participant::poll_train`],
    /// [`Participant::trained`]) instead of calling the trainer in `handle_message`.
    pub fn train_outside(mut self) -> Self {
        self.outside = true;
        self
    }

    /// The next training job (a participant that trains outside).
    pub fn poll_train(&mut self) -> Option<TrainJob> {
        self.jobs.pop_front()
    }

    /// The result of the training job of `round`: the update is built and sent as if
    /// the trainer had returned it in `handle_message`. A result for a round no longer
    /// being trained (the coordinator changed, a later round started) is dropped.
    pub fn trained(&mut self, now: Instant, round: u64, result: Result<(Vec<f32>, u64), String>) {
        match self.training.take() {
            Some(inc) if inc.round == round => self.send_trained(now, inc, result),
            other => {
                self.training = other;
                self.ignore(format!(
                    "training result of round {round}, no longer wanted"
                ));
            }
        }
    }

    /// This participant's name.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// Take rounds from `coordinator` from now on (the role was handed over). A round
    /// still has to be later than every round already started, whoever started it.
    pub fn set_coordinator(&mut self, coordinator: NodeName) {
        if coordinator != self.coordinator {
            self.coordinator = coordinator;
            self.incoming = None;
            self.held = None;
            self.training = None;
            self.jobs.clear();
        }
    }

    /// The coordinator rounds are taken from.
    pub fn coordinator(&self) -> &NodeName {
        &self.coordinator
    }

    fn ignore(&mut self, reason: String) {
        self.events.push_back(ParticipantEvent::Ignored { reason });
    }

    /// Feed a frame received from `from`.
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, bytes: &[u8]) {
        if from != &self.coordinator {
            return self.ignore(format!("message from {from}, not the coordinator"));
        }
        let (msg, body, sig) = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.ignore(format!("malformed frame: {e}")),
        };
        if let Err(e) = self.signer.verify(from, body, sig) {
            return self.ignore(format!("bad signature: {e}"));
        }
        match msg {
            Message::RoundStart {
                round,
                num_params,
                chunks,
                deadline_ms,
                sampled,
            } => {
                if round <= self.latest_round {
                    return self
                        .ignore(format!("round {round} is not after {}", self.latest_round));
                }
                if usize::from(chunks) != crate::wire::dense_chunk_count(num_params as usize) {
                    return self.ignore(format!("{chunks} chunks for {num_params} parameters"));
                }
                self.latest_round = round;
                self.incoming = Some(Incoming {
                    round,
                    num_params: num_params as usize,
                    chunks: chunks as usize,
                    got: vec![false; chunks as usize],
                    model: vec![0.0; num_params as usize],
                    deadline: now + Duration::from_millis(u64::from(deadline_ms)),
                    sampled: sampled as usize,
                });
            }
            Message::ModelChunk {
                round,
                index,
                offset,
                values,
            } => {
                let Some(inc) = self.incoming.as_mut().filter(|i| i.round == round) else {
                    return self.ignore(format!("model chunk for round {round}, not in progress"));
                };
                let i = index as usize;
                let ok = i < inc.chunks
                    && offset as usize == i * crate::wire::DENSE_CHUNK
                    && offset as usize + values.len() <= inc.num_params
                    && values.iter().all(|v| v.is_finite());
                if !ok {
                    return self.ignore(format!("model chunk {index} does not fit round {round}"));
                }
                inc.model[offset as usize..offset as usize + values.len()].copy_from_slice(&values);
                inc.got[i] = true;
                if inc.got.iter().all(|&g| g) {
                    let inc = self.incoming.take().expect("present");
                    self.train_and_send(now, inc);
                }
            }
            Message::UpdateChunk { .. } => self.ignore("update chunk sent to a participant".into()),
        }
    }

    fn train_and_send(&mut self, now: Instant, inc: Incoming) {
        let flip = self.behaviour.attack == AttackKind::LabelFlip;
        if self.outside {
            self.jobs.clear();
            self.jobs.push_back(TrainJob {
                round: inc.round,
                model: inc.model.clone(),
                flip_labels: flip,
                seed: rand::Rng::random(&mut self.rng),
            });
            self.training = Some(inc);
            return;
        }
        let result = self.trainer.train(&inc.model, flip, &mut self.rng);
        self.send_trained(now, inc, result);
    }

    fn send_trained(
        &mut self,
        now: Instant,
        inc: Incoming,
        result: Result<(Vec<f32>, u64), String>,
    ) {
        let b = &self.behaviour;
        let (params, samples) = match result {
            Ok(r) => r,
            Err(reason) => {
                return self.events.push_back(ParticipantEvent::TrainingFailed {
                    round: inc.round,
                    reason,
                })
            }
        };
        let honest: Vec<f32> = params.iter().zip(&inc.model).map(|(p, g)| p - g).collect();
        let p = b.params;
        let (update, samples) = match b.attack {
            AttackKind::None | AttackKind::LabelFlip => (honest, samples),
            AttackKind::SignFlip => (
                honest.iter().map(|v| -p.sign_flip_scale * v).collect(),
                samples,
            ),
            AttackKind::InflateSamples => (
                honest.iter().map(|v| -v).collect(),
                samples.saturating_mul(p.inflate_factor),
            ),
            AttackKind::GaussianNoise => {
                let n = Normal::new(0.0, p.noise_std).expect("finite std");
                (
                    (0..honest.len())
                        .map(|_| n.sample(&mut self.rng) as f32)
                        .collect(),
                    samples,
                )
            }
            AttackKind::Alie | AttackKind::Ipm => {
                if let Some(pool) = &b.collusion {
                    pool.lock()
                        .expect("collusion pool")
                        .deposit(inc.round, honest.clone());
                }
                // Send at half the time left, when every colluder has deposited.
                let at = now + inc.deadline.saturating_since(now) / 2;
                self.held = Some((at, inc.round, samples, honest, inc.sampled));
                return;
            }
        };
        self.send(inc.round, samples, &update);
    }

    fn send(&mut self, round: u64, samples: u64, update: &[f32]) {
        let payloads = compress::encode(update, &mut self.feedback, &self.compression, round);
        let chunks = payloads.len() as u16;
        let mut bytes = 0;
        for (i, payload) in payloads.into_iter().enumerate() {
            let msg = Message::UpdateChunk {
                round,
                num_samples: samples,
                num_params: update.len() as u32,
                index: i as u16,
                chunks,
                payload,
            };
            let body = msg.encode_body();
            let frame = msg.encode(&self.signer.sign(&body));
            bytes += frame.len();
            self.transmits.push_back(Transmit {
                to: self.coordinator.clone(),
                bytes: frame,
            });
        }
        self.events
            .push_back(ParticipantEvent::Sent { round, bytes });
    }

    /// Advance time: a colluder sends its crafted update.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.held.as_ref().is_some_and(|h| h.0 <= now) {
            let (_, round, samples, honest, sampled) = self.held.take().expect("held");
            let crafted = self.behaviour.collusion.as_ref().and_then(|pool| {
                pool.lock().expect("collusion pool").craft(
                    self.behaviour.attack,
                    round,
                    sampled,
                    &self.behaviour.params,
                )
            });
            let update = crafted.unwrap_or(honest);
            self.send(round, samples, &update);
        }
    }

    /// When [`Participant::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.as_ref().map(|h| h.0)
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ParticipantEvent> {
        self.events.pop_front()
    }
}
