//! The in-process driver behind `x0tta6bl4 fl bench`: one coordinator and N
//! participants exchanging real frames over a simulated network (1 ms per frame),
//! with simulated time, everything seeded. The model is evaluated on the test split
//! after every round. Frames are unsigned ([`NoSignatures`]) unless
//! [`BenchConfig::signed`]: then every party signs with its own ECDSA P-256 key and
//! checks the sender's, and the report carries what that cost ([`SigningCost`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::aggregate::AggregatorKind;
use crate::attack::{AttackKind, AttackParams, Collusion};
use crate::compress::Compression;
use crate::coordinator::{
    Coordinator, CoordinatorConfig, Event, Refusal, RoundSummary, ServerOptimizer,
};
use crate::data::{partition_dirichlet, partition_iid, Dataset};
use crate::dp::{noise_multiplier_for, DpConfig};
use crate::keys::{verify_p256, EcdsaKey};
use crate::model::{accuracy, ModelKind, ModelSpec, TrainConfig};
use crate::participant::{Behaviour, CandleTrainer, Participant};
use crate::{Instant, NoSignatures, NodeName, Signer};

/// Which rule, before its Byzantine parameter is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregatorChoice {
    /// FedAvg.
    FedAvg,
    /// Coordinate-wise median.
    Median,
    /// Trimmed mean.
    TrimmedMean,
    /// Krum.
    Krum,
    /// Multi-Krum.
    MultiKrum,
    /// Bulyan.
    Bulyan,
    /// FLTrust.
    FlTrust,
}

impl AggregatorChoice {
    /// Every rule with its command-line name.
    pub const ALL: [(AggregatorChoice, &'static str); 7] = [
        (AggregatorChoice::FedAvg, "fedavg"),
        (AggregatorChoice::Median, "median"),
        (AggregatorChoice::TrimmedMean, "trimmed-mean"),
        (AggregatorChoice::Krum, "krum"),
        (AggregatorChoice::MultiKrum, "multi-krum"),
        (AggregatorChoice::Bulyan, "bulyan"),
        (AggregatorChoice::FlTrust, "fltrust"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// The rule for rounds of `n` updates with `f` assumed Byzantine.
    pub fn with(self, n: usize, f: usize, beta: f64) -> AggregatorKind {
        match self {
            AggregatorChoice::FedAvg => AggregatorKind::FedAvg,
            AggregatorChoice::Median => AggregatorKind::Median,
            AggregatorChoice::TrimmedMean => AggregatorKind::TrimmedMean { beta },
            AggregatorChoice::Krum => AggregatorKind::Krum { f },
            AggregatorChoice::MultiKrum => AggregatorKind::MultiKrum {
                f,
                m: n.saturating_sub(f).max(1),
            },
            AggregatorChoice::Bulyan => AggregatorKind::Bulyan { f },
            AggregatorChoice::FlTrust => AggregatorKind::FlTrust,
        }
    }
}

impl std::str::FromStr for AggregatorChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::attack::by_name(&Self::ALL, s, "aggregator")
    }
}

/// Client-level DP target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpTarget {
    /// Epsilon budget over all rounds.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// L2 clipping norm of each update.
    pub clip: f64,
}

/// A benchmark run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Data set name (for the report).
    pub dataset: String,
    /// Participants.
    pub participants: usize,
    /// Participants sampled per round.
    pub per_round: usize,
    /// Fraction of participants that are Byzantine.
    pub byzantine: f64,
    /// What the Byzantine participants do.
    pub attack: AttackKind,
    /// Attack strengths.
    pub attack_params: AttackParams,
    /// Aggregation rule.
    pub aggregator: AggregatorChoice,
    /// Byzantine updates per round the rule assumes (`None`: ceil(byzantine × per_round)).
    pub assumed_f: Option<usize>,
    /// Client-level DP.
    pub dp: Option<DpTarget>,
    /// How participants compress their updates (top-k, 8-bit values, DGC's
    /// refinements).
    pub compression: Compression,
    /// Select the top k per parameter tensor: the run sets [`Compression::tensors`]
    /// to the model's tensor lengths.
    pub top_k_per_tensor: bool,
    /// Dirichlet alpha for a label-skewed split (`None`: IID).
    pub non_iid: Option<f64>,
    /// Rounds.
    pub rounds: u64,
    /// Seed of everything.
    pub seed: u64,
    /// Model.
    pub model: ModelKind,
    /// Local training.
    pub train: TrainConfig,
    /// The server's step (learning rate, momentum) from aggregate to global model.
    pub server: ServerOptimizer,
    /// Accuracy counted for `rounds_to_target`.
    pub target: f64,
    /// FLTrust's root set size (rows of the training set held by the coordinator).
    pub root_size: usize,
    /// Every participant and the coordinator sign their frames with their own ECDSA
    /// P-256 key (the SVID algorithm) and check the sender's, instead of
    /// [`NoSignatures`]; the report carries the signing cost.
    pub signed: bool,
}

/// What signing cost in a `signed` run (wall-clock time inside sign and verify).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SigningCost {
    /// Key pairs: the coordinator's and one per participant.
    pub keys: usize,
    /// Frames signed.
    pub signatures: u64,
    /// Signatures checked.
    pub verifications: u64,
    /// Seconds spent signing, all parties together.
    pub sign_seconds: f64,
    /// Seconds spent verifying.
    pub verify_seconds: f64,
    /// Mean microseconds per signature.
    pub sign_us_mean: f64,
    /// Mean microseconds per verification.
    pub verify_us_mean: f64,
    /// Signature bytes sent, all frames together.
    pub signature_bytes: u64,
    /// Share of the run's wall time spent signing and verifying.
    pub share_of_run: f64,
}

#[derive(Default)]
struct SigningStats {
    signatures: AtomicU64,
    verifications: AtomicU64,
    sign_ns: AtomicU64,
    verify_ns: AtomicU64,
    signature_bytes: AtomicU64,
}

/// One party's signer in a signed run: its own key, every party's public key, the
/// time it spends counted.
struct KeySigner {
    key: Arc<EcdsaKey>,
    public: Arc<BTreeMap<NodeName, Vec<u8>>>,
    stats: Arc<SigningStats>,
}

impl Signer for KeySigner {
    fn sign(&self, body: &[u8]) -> Vec<u8> {
        let t = std::time::Instant::now();
        let signature = crate::Authenticator::sign(&*self.key, body);
        let ns = t.elapsed().as_nanos() as u64;
        self.stats.sign_ns.fetch_add(ns, Ordering::Relaxed);
        self.stats.signatures.fetch_add(1, Ordering::Relaxed);
        self.stats
            .signature_bytes
            .fetch_add(signature.len() as u64, Ordering::Relaxed);
        signature
    }

    fn verify(&self, from: &NodeName, body: &[u8], signature: &[u8]) -> Result<(), String> {
        let public = self
            .public
            .get(from)
            .ok_or_else(|| format!("no key known for {from}"))?;
        let t = std::time::Instant::now();
        let checked = verify_p256(public, body, signature);
        let ns = t.elapsed().as_nanos() as u64;
        self.stats.verify_ns.fetch_add(ns, Ordering::Relaxed);
        self.stats.verifications.fetch_add(1, Ordering::Relaxed);
        checked
    }
}

/// The signers of a signed run: the coordinator's, then one per participant.
fn key_signers(
    coordinator: &NodeName,
    names: &[NodeName],
    stats: &Arc<SigningStats>,
) -> Result<Vec<Arc<dyn Signer>>, String> {
    let mut keys = Vec::with_capacity(names.len() + 1);
    let mut public = BTreeMap::new();
    for n in std::iter::once(coordinator).chain(names) {
        let key = Arc::new(EcdsaKey::generate()?.0);
        public.insert(n.clone(), key.public_key().to_vec());
        keys.push(key);
    }
    let public = Arc::new(public);
    Ok(keys
        .into_iter()
        .map(|key| {
            Arc::new(KeySigner {
                key,
                public: public.clone(),
                stats: stats.clone(),
            }) as Arc<dyn Signer>
        })
        .collect())
}

/// One round's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRecord {
    /// Round.
    pub round: u64,
    /// Test accuracy after the round.
    pub accuracy: f64,
    /// Whether a new model was adopted.
    pub adopted: bool,
    /// Update bytes received.
    pub bytes: usize,
    /// The same updates dense.
    pub dense_bytes: usize,
    /// Cumulative epsilon.
    pub epsilon: Option<f64>,
    /// Byzantine participants whose updates were aggregated without being set aside.
    pub byzantine_aggregated: usize,
    /// Why the round failed, if it did.
    pub failure: Option<String>,
}

/// The report (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Data set.
    pub dataset: String,
    /// Model.
    pub model: String,
    /// Aggregation rule with parameters.
    pub aggregator: String,
    /// Attack.
    pub attack: String,
    /// Byzantine fraction.
    pub byzantine: f64,
    /// Byzantine participants.
    pub byzantine_participants: usize,
    /// Participants.
    pub participants: usize,
    /// Sampled per round.
    pub per_round: usize,
    /// Dirichlet alpha, or null for IID.
    pub non_iid: Option<f64>,
    /// Rounds run.
    pub rounds: u64,
    /// Local epochs per round.
    pub local_epochs: usize,
    /// Local minibatch size.
    pub batch: usize,
    /// Local learning rate.
    pub lr: f64,
    /// Local SGD momentum.
    pub momentum: f64,
    /// Server learning rate.
    pub server_lr: f64,
    /// Server momentum.
    pub server_momentum: f64,
    /// How updates were sent (`dense`, or the top-k scheme).
    pub compression: String,
    /// Accuracy after the last round.
    pub final_accuracy: f64,
    /// Accuracy after each round.
    pub accuracy_per_round: Vec<f64>,
    /// Target accuracy.
    pub target: f64,
    /// First round reaching the target, if any.
    pub rounds_to_target: Option<u64>,
    /// Cumulative epsilon spent (DP only).
    pub epsilon: Option<f64>,
    /// Delta (DP only).
    pub delta: Option<f64>,
    /// Noise multiplier used (DP only).
    pub noise_multiplier: Option<f64>,
    /// Epsilon after each round (DP only).
    pub epsilon_per_round: Vec<f64>,
    /// Mean update bytes received per round.
    pub bytes_per_round: f64,
    /// Mean bytes the same updates take dense.
    pub dense_bytes_per_round: f64,
    /// Refused updates and chunks by reason.
    pub refusals: std::collections::BTreeMap<String, u64>,
    /// Rounds that adopted no model, with why.
    pub failed_rounds: Vec<(u64, String)>,
    /// Whether training stopped at the privacy budget.
    pub budget_exhausted: bool,
    /// Seed.
    pub seed: u64,
    /// Signing cost (a signed run only).
    pub signing: Option<SigningCost>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("generated names are valid")
}

/// Run a benchmark on `train` / `test`; `progress` sees every round.
pub fn run(
    cfg: &BenchConfig,
    train: Arc<Dataset>,
    test: &Dataset,
    progress: &mut dyn FnMut(&RoundRecord),
) -> Result<BenchReport, String> {
    run_observed(cfg, train, test, progress, &mut NoObserver)
}

/// Sees what [`run_observed`] refuses and adopts.
pub trait Observer {
    /// An update or chunk was refused (it is also counted in the report).
    fn refused(&mut self, _round: u64, _from: &NodeName, _reason: &Refusal) {}
    /// A round's aggregate was adopted: `model` is the new global model, `accuracy`
    /// its test accuracy, `aggregator` the rule's name. An error stops the run (the
    /// audit trail's committee could not commit the round).
    fn adopted(
        &mut self,
        _summary: &RoundSummary,
        _model: &[f32],
        _accuracy: f64,
        _aggregator: &str,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// Observes nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// [`run`], telling `observer` every refused update and adopted round.
pub fn run_observed(
    cfg: &BenchConfig,
    train: Arc<Dataset>,
    test: &Dataset,
    progress: &mut dyn FnMut(&RoundRecord),
    observer: &mut dyn Observer,
) -> Result<BenchReport, String> {
    let started = std::time::Instant::now();
    if cfg.participants == 0 || cfg.per_round == 0 || cfg.rounds == 0 {
        return Err("participants, per-round and rounds must be at least 1".into());
    }
    if !(0.0..1.0).contains(&cfg.byzantine) {
        return Err(format!(
            "byzantine fraction {} is not in [0, 1)",
            cfg.byzantine
        ));
    }
    if cfg.dp.is_some() && cfg.aggregator != AggregatorChoice::FedAvg {
        return Err(
            "client-level DP is calibrated for fedavg only: use --aggregator fedavg".into(),
        );
    }
    let t = &cfg.train;
    if !(t.lr.is_finite() && t.lr > 0.0 && (0.0..1.0).contains(&t.momentum)) {
        return Err(format!(
            "local learning rate {} must be > 0 and momentum {} in [0, 1)",
            t.lr, t.momentum
        ));
    }
    let s = &cfg.server;
    if !(s.lr.is_finite() && s.lr > 0.0 && (0.0..1.0).contains(&s.momentum)) {
        return Err(format!(
            "server learning rate {} must be > 0 and server momentum {} in [0, 1)",
            s.lr, s.momentum
        ));
    }
    if train.features != test.features || train.classes != test.classes {
        return Err("train and test splits differ in shape".into());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let spec = ModelSpec {
        kind: cfg.model,
        inputs: train.features,
        classes: train.classes,
    };
    let per_round = cfg.per_round.min(cfg.participants);
    let parts = match cfg.non_iid {
        Some(alpha) if alpha > 0.0 => partition_dirichlet(
            &train.y,
            train.classes,
            cfg.participants,
            alpha,
            2,
            &mut rng,
        ),
        Some(alpha) => return Err(format!("Dirichlet alpha {alpha} must be > 0")),
        None => partition_iid(train.len(), cfg.participants, &mut rng),
    };
    let names = participant_names(cfg.participants);
    let coordinator = name("coordinator");
    let mut order: Vec<usize> = (0..cfg.participants).collect();
    order.shuffle(&mut rng);
    let n_byz = (cfg.byzantine * cfg.participants as f64).round() as usize;
    let byzantine: Vec<bool> = {
        let mut b = vec![false; cfg.participants];
        order[..n_byz].iter().for_each(|&i| b[i] = true);
        b
    };
    let collusion = Arc::new(Mutex::new(Collusion::default()));
    let stats = Arc::new(SigningStats::default());
    let signers: Vec<Arc<dyn Signer>> = if cfg.signed {
        key_signers(&coordinator, &names, &stats)?
    } else {
        let unsigned: Arc<dyn Signer> = Arc::new(NoSignatures);
        std::iter::repeat_n(unsigned, names.len() + 1).collect()
    };
    let mut compression = cfg.compression.clone();
    if cfg.top_k_per_tensor {
        compression.tensors = spec.shapes().iter().map(|s| s.iter().product()).collect();
    }
    let mut participants: Vec<Participant> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let behaviour = if byzantine[i] && cfg.attack != AttackKind::None {
                Behaviour {
                    attack: cfg.attack,
                    params: cfg.attack_params,
                    collusion: cfg.attack.colludes().then(|| collusion.clone()),
                }
            } else {
                Behaviour::honest()
            };
            let trainer = CandleTrainer {
                spec,
                data: train.clone(),
                rows: parts[i].clone(),
                cfg: cfg.train,
            };
            Participant::new(
                n.clone(),
                coordinator.clone(),
                Box::new(trainer),
                behaviour,
                compression.clone(),
                signers[i + 1].clone(),
                cfg.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)),
            )
        })
        .collect();
    let f = cfg
        .assumed_f
        .unwrap_or_else(|| (cfg.byzantine * per_round as f64).ceil() as usize);
    let beta = (f as f64 / per_round as f64).clamp(0.1, 0.45);
    let kind = cfg.aggregator.with(per_round, f, beta);
    let root: Option<Box<dyn crate::LocalTrainer>> = if cfg.aggregator == AggregatorChoice::FlTrust
    {
        let mut rows: Vec<usize> = (0..train.len()).collect();
        rows.shuffle(&mut rng);
        rows.truncate(cfg.root_size.max(1));
        Some(Box::new(CandleTrainer {
            spec,
            data: train.clone(),
            rows,
            cfg: cfg.train,
        }))
    } else {
        None
    };
    let (dp, sigma) = match cfg.dp {
        Some(t) => {
            let q = per_round as f64 / cfg.participants as f64;
            let sigma =
                noise_multiplier_for(q, cfg.rounds, t.epsilon, t.delta).ok_or_else(|| {
                    format!(
                        "no noise multiplier up to 1e4 reaches epsilon {} over {} rounds",
                        t.epsilon, cfg.rounds
                    )
                })?;
            (
                Some(DpConfig {
                    clip: t.clip,
                    noise_multiplier: sigma,
                    delta: t.delta,
                    epsilon_budget: t.epsilon,
                }),
                Some(sigma),
            )
        }
        None => (None, None),
    };
    let initial = spec.init(&mut rng);
    let mut coord = Coordinator::new(
        CoordinatorConfig {
            participants: names.clone(),
            per_round,
            round_timeout: Duration::from_secs(60),
            min_updates: 1,
            max_rounds: cfg.rounds,
            dp,
        },
        initial,
        kind.build(),
        root,
        signers[0].clone(),
        cfg.seed.wrapping_add(1),
    )
    .with_server_optimizer(cfg.server);

    // Participants train when their model's last chunk arrives; those of a round train
    // on parallel threads. Each is its own state machine with its own RNG, so the run
    // is the same as on one thread, except for colluders, who share a pool.
    let threads = if cfg.attack.colludes() {
        1
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    };
    let index_of = |n: &NodeName| names.binary_search(n).ok();
    let latency = Duration::from_millis(1);
    // (deliver at, sequence, from (None = coordinator), to (None = coordinator), frame)
    type Flight = Reverse<(Instant, u64, Option<usize>, Option<usize>, Vec<u8>)>;
    let mut queue: BinaryHeap<Flight> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut now = Instant::ZERO;
    let mut records: Vec<RoundRecord> = Vec::new();
    let mut failed = Vec::new();
    let mut budget_exhausted = false;
    coord.handle_timeout(now);
    'run: loop {
        while let Some(t) = coord.poll_transmit() {
            seq += 1;
            queue.push(Reverse((
                now + latency,
                seq,
                None,
                index_of(&t.to),
                t.bytes,
            )));
        }
        for (i, p) in participants.iter_mut().enumerate() {
            while let Some(t) = p.poll_transmit() {
                seq += 1;
                queue.push(Reverse((now + latency, seq, Some(i), None, t.bytes)));
            }
            while p.poll_event().is_some() {}
        }
        while let Some(e) = coord.poll_event() {
            match e {
                Event::RoundCompleted(s) => {
                    let acc = accuracy(spec, coord.global(), test).map_err(|e| e.to_string())?;
                    let byz = s
                        .aggregated
                        .iter()
                        .filter(|n| !s.suspected.contains(n))
                        .filter(|n| index_of(n).is_some_and(|i| byzantine[i]))
                        .count();
                    let r = RoundRecord {
                        round: s.round,
                        accuracy: acc,
                        adopted: true,
                        bytes: s.update_bytes,
                        dense_bytes: s.dense_update_bytes,
                        epsilon: s.epsilon,
                        byzantine_aggregated: if cfg.attack == AttackKind::None {
                            0
                        } else {
                            byz
                        },
                        failure: None,
                    };
                    observer.adopted(&s, coord.global(), acc, &kind.to_string())?;
                    progress(&r);
                    records.push(r);
                }
                Event::RoundFailed { round, reason } => {
                    let r = RoundRecord {
                        round,
                        accuracy: records.last().map_or(0.0, |r| r.accuracy),
                        adopted: false,
                        bytes: 0,
                        dense_bytes: 0,
                        epsilon: coord.epsilon(),
                        byzantine_aggregated: 0,
                        failure: Some(reason.clone()),
                    };
                    progress(&r);
                    records.push(r);
                    failed.push((round, reason));
                }
                Event::BudgetExhausted { .. } => {
                    budget_exhausted = true;
                    break 'run;
                }
                Event::Finished => break 'run,
                Event::Refused {
                    round,
                    from,
                    reason,
                } => observer.refused(round, &from, &reason),
                Event::RoundStarted { .. } => {}
            }
        }
        let mut next = queue.peek().map(|Reverse(f)| f.0);
        for t in coord
            .poll_timeout()
            .into_iter()
            .chain(participants.iter().filter_map(|p| p.poll_timeout()))
        {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        }
        let Some(next) = next else {
            return Err("the round stalled: nothing in flight and no timer".into());
        };
        now = now.max(next);
        let mut inbox: Vec<Vec<Vec<u8>>> = vec![Vec::new(); participants.len()];
        while queue.peek().is_some_and(|Reverse(f)| f.0 <= now) {
            let Reverse((_, _, from, to, bytes)) = queue.pop().expect("peeked");
            match (from, to) {
                (None, Some(i)) => inbox[i].push(bytes),
                (Some(i), None) => coord.handle_message(now, &names[i], &bytes),
                _ => {}
            }
        }
        deliver(&mut participants, inbox, now, &coordinator, threads);
        if coord.poll_timeout().is_some_and(|t| t <= now) {
            coord.handle_timeout(now);
        }
        for p in &mut participants {
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now);
            }
        }
    }

    let adopted: Vec<&RoundRecord> = records.iter().filter(|r| r.adopted).collect();
    let mean = |f: &dyn Fn(&RoundRecord) -> usize| {
        adopted.iter().map(|r| f(r) as f64).sum::<f64>() / adopted.len().max(1) as f64
    };
    let accuracy_per_round: Vec<f64> = records.iter().map(|r| r.accuracy).collect();
    Ok(BenchReport {
        dataset: cfg.dataset.clone(),
        model: match cfg.model {
            ModelKind::LogReg => "logreg".into(),
            ModelKind::Mlp { hidden } => format!("mlp({hidden})"),
            ModelKind::Cnn { channels } => format!("cnn({channels})"),
        },
        aggregator: kind.to_string(),
        attack: cfg.attack.to_string(),
        byzantine: cfg.byzantine,
        byzantine_participants: n_byz,
        participants: cfg.participants,
        per_round,
        non_iid: cfg.non_iid,
        rounds: records.len() as u64,
        local_epochs: cfg.train.epochs,
        batch: cfg.train.batch,
        lr: cfg.train.lr,
        momentum: cfg.train.momentum,
        server_lr: cfg.server.lr,
        server_momentum: cfg.server.momentum,
        compression: compression.describe(),
        final_accuracy: accuracy_per_round.last().copied().unwrap_or(0.0),
        rounds_to_target: records
            .iter()
            .find(|r| r.accuracy >= cfg.target)
            .map(|r| r.round),
        target: cfg.target,
        accuracy_per_round,
        epsilon: coord.epsilon(),
        delta: cfg.dp.map(|d| d.delta),
        noise_multiplier: sigma,
        epsilon_per_round: records.iter().filter_map(|r| r.epsilon).collect(),
        bytes_per_round: mean(&|r| r.bytes),
        dense_bytes_per_round: mean(&|r| r.dense_bytes),
        refusals: coord
            .refusals()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        failed_rounds: failed,
        budget_exhausted,
        seed: cfg.seed,
        signing: cfg.signed.then(|| {
            let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let (signatures, verifications) =
                (count(&stats.signatures), count(&stats.verifications));
            let sign_seconds = count(&stats.sign_ns) as f64 / 1e9;
            let verify_seconds = count(&stats.verify_ns) as f64 / 1e9;
            SigningCost {
                keys: names.len() + 1,
                signatures,
                verifications,
                sign_seconds,
                verify_seconds,
                sign_us_mean: 1e6 * sign_seconds / signatures.max(1) as f64,
                verify_us_mean: 1e6 * verify_seconds / verifications.max(1) as f64,
                signature_bytes: count(&stats.signature_bytes),
                share_of_run: (sign_seconds + verify_seconds)
                    / started.elapsed().as_secs_f64().max(1e-9),
            }
        }),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Hand each participant its frames (`inbox[i]`, in order), participants split over
/// up to `threads` threads: a frame that completes a round's model trains it.
fn deliver(
    participants: &mut [Participant],
    inbox: Vec<Vec<Vec<u8>>>,
    now: Instant,
    from: &NodeName,
    threads: usize,
) {
    let mut work: Vec<(&mut Participant, Vec<Vec<u8>>)> = participants
        .iter_mut()
        .zip(inbox)
        .filter(|(_, frames)| !frames.is_empty())
        .collect();
    let per_thread = work.len().div_ceil(threads.max(1)).max(1);
    let handle = |part: &mut [(&mut Participant, Vec<Vec<u8>>)]| {
        for (p, frames) in part {
            for f in frames.iter() {
                p.handle_message(now, from, f);
            }
        }
    };
    if per_thread >= work.len() {
        return handle(&mut work);
    }
    std::thread::scope(|s| {
        for part in work.chunks_mut(per_thread) {
            s.spawn(move || handle(part));
        }
    });
}

/// Participants' names, `p0000`, `p0001`, ...: zero-padded to one width so that name
/// order is index order (looked up by binary search), however many there are.
fn participant_names(count: usize) -> Vec<NodeName> {
    let width = count.saturating_sub(1).to_string().len().max(4);
    (0..count).map(|i| name(&format!("p{i:0width$}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_names_sort_in_index_order_past_ten_thousand() {
        let names = participant_names(10_001);
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(names[5].as_str(), "p00005");
        assert_eq!(participant_names(50)[7].as_str(), "p0007");
    }
}
