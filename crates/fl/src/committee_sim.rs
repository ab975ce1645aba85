//! A deterministic simulation of the committee: every candidate's [`Replica`] in one
//! process, a discrete-event clock, a network with loss, delay and partitions, f
//! Byzantine validators (equivocation, silence, delay) and crashed leaders. The same
//! seed gives the same run. `x0tta6bl4 fl committee-bench` sweeps seeds with it.
//!
//! Byzantine validators run the honest state machine, and the harness rewrites what
//! they send, signing with their own keys: an equivocating leader sends one block to
//! half the committee and a conflicting one (another model hash) to the other half,
//! and every equivocating validator votes for each block towards the matching half.
//! The checker compares, height by height, the blocks every honest replica committed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use x0tta6bl4_proto::{Authenticator, Instant, NodeName, SimAuthenticator};

use crate::committee::{
    Block, CommitteeConfig, CommitteeEvent, Decision, Digest, Message, Replica, Verifier, VoteKind,
};

/// Rewrites what equivocating validators send: side A of the committee is told the
/// original block, side B its twin (another model hash), by every colluding
/// equivocator alike (they share one `Equivocator`), each message re-signed by its
/// sender. Used by this simulation and by the twin's federated learning
/// (`x0tta6bl4 twin fl --byzantine-validators`).
#[derive(Default)]
pub struct Equivocator {
    twins: HashMap<Digest, (Block, Block)>,
}

impl Equivocator {
    /// The version of a committee message (encoded) for the `side` half, signed with
    /// `auth` (the sender's key) when it differs; `None` when it is sent as it is
    /// (sync, view changes, decided blocks, votes for blocks without a twin).
    pub fn forge(&mut self, auth: &dyn Authenticator, bytes: &[u8], side: bool) -> Option<Vec<u8>> {
        let pick = |twins: &mut HashMap<Digest, (Block, Block)>, block: &Block| -> Block {
            let hash = block.hash();
            let pair = match twins.get(&hash) {
                Some(p) => p.clone(),
                None => {
                    let mut twin = block.clone();
                    twin.decision.model_hash = Digest::of(&[b"forged", &hash.0]);
                    let pair = (block.clone(), twin.clone());
                    twins.insert(hash, pair.clone());
                    twins.insert(twin.hash(), pair.clone());
                    pair
                }
            };
            if side {
                pair.0
            } else {
                pair.1
            }
        };
        let forged = match Message::decode(bytes).ok()? {
            Message::PrePrepare(mut pp) => {
                let chosen = pick(&mut self.twins, &pp.block);
                if chosen == pp.block {
                    return None;
                }
                pp.block = chosen;
                pp.signature.0 = auth.sign(&pp.signed_bytes());
                Message::PrePrepare(pp)
            }
            Message::NewView(mut nv) => {
                let chosen = pick(&mut self.twins, nv.block.as_ref()?);
                if Some(&chosen) == nv.block.as_ref() {
                    return None;
                }
                nv.block = Some(chosen);
                nv.signature.0 = auth.sign(&nv.signed_bytes());
                Message::NewView(nv)
            }
            Message::Vote(mut v) => {
                let pair = self.twins.get(&v.block)?;
                let chosen = if side { pair.0.hash() } else { pair.1.hash() };
                if chosen == v.block {
                    return None;
                }
                v.block = chosen;
                v.signature.0 = auth.sign(&v.signed_bytes());
                debug_assert!(matches!(v.kind, VoteKind::Prepare | VoteKind::Commit));
                Message::Vote(v)
            }
            _ => return None,
        };
        Some(forged.encode())
    }

    /// [`Equivocator::forge`], and besides a vote for a block without a twin goes to
    /// the `side` B half for a block that does not exist (a conflicting vote, which an
    /// honest replica holding both refuses as equivocation): every vote of the sender
    /// equivocates, not only those about a block an equivocating leader forged.
    pub fn forge_every_vote(
        &mut self,
        auth: &dyn Authenticator,
        bytes: &[u8],
        side: bool,
    ) -> Option<Vec<u8>> {
        if let Some(forged) = self.forge(auth, bytes, side) {
            return Some(forged);
        }
        match Message::decode(bytes).ok()? {
            Message::Vote(mut v) if !side => {
                v.block = Digest::of(&[b"forged-vote", &v.block.0]);
                v.signature.0 = auth.sign(&v.signed_bytes());
                Some(Message::Vote(v).encode())
            }
            _ => None,
        }
    }
}

/// What a Byzantine validator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Byzantine {
    /// Conflicting pre-prepares and votes to the two halves of the committee.
    Equivocate,
    /// Sends nothing (receives, so it may lead a view nobody sees).
    Silent,
    /// Everything it sends arrives this much later.
    Delay(Duration),
}

/// One simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Byzantine validators tolerated (committee of 3f+1).
    pub f: usize,
    /// Candidates beyond the committee size (the draw picks among all).
    pub extra_candidates: usize,
    /// Heights to commit.
    pub heights: u64,
    /// Heights per epoch.
    pub epoch_len: u64,
    /// Byzantine candidates and what they do. The guarantee holds for at most f (so no
    /// committee has more); more is allowed, to show what breaks.
    pub byzantine: Vec<Byzantine>,
    /// Probability that a message is lost.
    pub loss: f64,
    /// One-way delay range.
    pub delay: (Duration, Duration),
    /// Cut the candidates in two for this window of simulated time.
    pub partition: Option<(Duration, Duration)>,
    /// Submit decision k (k = 1..=heights) at k x this.
    pub submit_every: Duration,
    /// First view-change timeout.
    pub view_timeout: Duration,
    /// Resend interval.
    pub resend: Duration,
    /// Stop after this much simulated time.
    pub time_limit: Duration,
}

impl SimConfig {
    /// A run drawn from `seed`: 0–10 % loss, 1–40 ms delays, a partition of up to 2 s in
    /// half the runs, f Byzantine candidates each equivocating, silent or delaying.
    pub fn random(f: usize, seed: u64) -> SimConfig {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
        let byzantine = (0..f)
            .map(|_| match rng.random_range(0..3) {
                0 => Byzantine::Equivocate,
                1 => Byzantine::Silent,
                _ => Byzantine::Delay(Duration::from_millis(rng.random_range(100..800))),
            })
            .collect();
        let dmin = rng.random_range(1..10);
        let partition = rng.random_bool(0.5).then(|| {
            (
                Duration::from_millis(rng.random_range(0..500)),
                Duration::from_millis(rng.random_range(100..2000)),
            )
        });
        SimConfig {
            f,
            extra_candidates: 2,
            heights: 6,
            epoch_len: 3,
            byzantine,
            loss: rng.random_range(0.0..0.1),
            delay: (
                Duration::from_millis(dmin),
                Duration::from_millis(dmin + rng.random_range(0..30)),
            ),
            partition,
            submit_every: Duration::from_millis(20),
            view_timeout: Duration::from_millis(200),
            resend: Duration::from_millis(100),
            time_limit: Duration::from_secs(60),
        }
    }
}

/// What a run showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimOutcome {
    /// Heights at which two honest replicas committed different blocks.
    pub conflicts: u64,
    /// Heights every honest replica committed.
    pub committed_by_all: u64,
    /// Whether every honest replica committed every height before the time limit.
    pub complete: bool,
    /// Simulated time when the run ended.
    pub sim_time: Duration,
    /// View changes seen at honest replicas.
    pub view_changes: u64,
    /// Messages sent (after loss, before delivery).
    pub messages: u64,
    /// Messages refused by honest replicas as equivocation (a replica that gets both
    /// versions; each half is normally told only its own).
    pub equivocations_seen: u64,
    /// Conflicting messages Byzantine validators sent (re-signed twins).
    pub forged: u64,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        bytes: Arc<Vec<u8>>,
    },
    Submit(u64),
}

/// The in-process world.
struct World {
    names: Vec<NodeName>,
    index: HashMap<NodeName, usize>,
    replicas: Vec<Replica>,
    auths: Vec<Arc<dyn Authenticator>>,
    behaviour: Vec<Option<Byzantine>>,
    crashed: Vec<bool>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    seq: u64,
    rng: ChaCha8Rng,
    cfg: SimConfig,
    /// Block hash → (the block, its conflicting twin), both hashes, shared by
    /// colluding Byzantine validators.
    equivocator: Equivocator,
    committed: Vec<BTreeMap<u64, Digest>>,
    commit_time: Vec<BTreeMap<u64, Instant>>,
    side: Vec<bool>,
    outcome: SimOutcome,
}

/// The decision submitted for height `k`.
pub fn decision(k: u64) -> Decision {
    Decision {
        round: k,
        model_hash: Digest::of(&[b"model", &k.to_be_bytes()]),
        participants: Vec::new(),
        aggregator: "krum".into(),
        suspected: Vec::new(),
        epsilon: Some(0.1 * k as f64),
        accuracy: None,
        rollback_to: None,
        coordinator: None,
        handover: None,
        signed: None,
    }
}

impl World {
    fn new(cfg: SimConfig, seed: u64) -> World {
        let n = 3 * cfg.f + 1 + cfg.extra_candidates;
        let names: Vec<NodeName> = (0..n)
            .map(|i| NodeName::new(&format!("v{i:02}")).expect("valid name"))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let secret: u64 = rng.random();
        let auths: Vec<Arc<dyn Authenticator>> = names
            .iter()
            .map(|n| Arc::new(SimAuthenticator::new(secret, n.clone())) as Arc<dyn Authenticator>)
            .collect();
        let credentials: BTreeMap<NodeName, Vec<u8>> = names
            .iter()
            .zip(&auths)
            .map(|(n, a)| (n.clone(), a.credential().to_vec()))
            .collect();
        let committee_cfg = CommitteeConfig {
            chain_id: format!("sim-{seed}"),
            candidates: names.clone(),
            f: cfg.f,
            epoch_len: cfg.epoch_len,
            view_timeout: cfg.view_timeout,
            resend: cfg.resend,
        };
        let replicas = names
            .iter()
            .zip(&auths)
            .map(|(name, auth)| {
                let verifier = Verifier::new(auth.clone(), credentials.clone());
                Replica::new(
                    name.clone(),
                    committee_cfg.clone(),
                    auth.clone(),
                    verifier,
                    &[],
                    Instant::ZERO,
                )
                .expect("valid committee settings")
            })
            .collect();
        // Byzantine candidates, at random (the guarantee holds for at most f).
        let mut behaviour = vec![None; n];
        let mut order: Vec<usize> = (0..n).collect();
        for i in 0..cfg.byzantine.len().min(n) {
            let j = rng.random_range(i..n);
            order.swap(i, j);
            behaviour[order[i]] = Some(cfg.byzantine[i]);
        }
        let side = (0..n).map(|_| rng.random_bool(0.5)).collect();
        let index = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let mut w = World {
            names,
            index,
            replicas,
            auths,
            behaviour,
            crashed: vec![false; n],
            queue: BinaryHeap::new(),
            events: Vec::new(),
            seq: 0,
            rng,
            committed: vec![BTreeMap::new(); n],
            commit_time: vec![BTreeMap::new(); n],
            equivocator: Equivocator::default(),
            side,
            cfg,
            outcome: SimOutcome::default(),
        };
        for k in 1..=w.cfg.heights {
            let at = Instant::ZERO + w.cfg.submit_every * k as u32;
            w.schedule(at, Ev::Submit(k));
        }
        w
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((at.as_micros(), self.seq, self.events.len() - 1)));
        self.seq += 1;
    }

    fn honest(&self, i: usize) -> bool {
        self.behaviour[i].is_none()
    }

    fn partitioned(&self, now: Instant, a: usize, b: usize) -> bool {
        match self.cfg.partition {
            Some((start, len)) => {
                let t = Duration::from_micros(now.as_micros());
                t >= start && t < start + len && self.side[a] != self.side[b]
            }
            None => false,
        }
    }

    fn send(&mut self, now: Instant, from: usize, to: usize, bytes: Arc<Vec<u8>>, extra: Duration) {
        if self.crashed[from]
            || self.partitioned(now, from, to)
            || self.rng.random_bool(self.cfg.loss)
        {
            return;
        }
        let (lo, hi) = self.cfg.delay;
        let d =
            Duration::from_micros(self.rng.random_range(lo.as_micros()..=hi.as_micros()) as u64);
        self.outcome.messages += 1;
        self.schedule(now + d + extra, Ev::Deliver { to, from, bytes });
    }

    /// Route node `i`'s outgoing frames, rewriting a Byzantine node's.
    fn flush(&mut self, now: Instant, i: usize) {
        while let Some(t) = self.replicas[i].poll_transmit() {
            let Some(&to) = self.index.get(&t.to) else {
                continue;
            };
            match self.behaviour[i] {
                None => self.send(now, i, to, Arc::new(t.bytes), Duration::ZERO),
                Some(Byzantine::Silent) => {}
                Some(Byzantine::Delay(d)) => self.send(now, i, to, Arc::new(t.bytes), d),
                Some(Byzantine::Equivocate) => {
                    let side = self.side[to];
                    let bytes = match self.forge(i, &t.bytes, side) {
                        Some(forged) => {
                            self.outcome.forged += 1;
                            forged
                        }
                        None => t.bytes,
                    };
                    self.send(now, i, to, Arc::new(bytes), Duration::ZERO);
                }
            }
        }
        while let Some(ev) = self.replicas[i].poll_event() {
            match ev {
                CommitteeEvent::Committed { block, .. } => {
                    self.committed[i].insert(block.height, block.hash());
                    self.commit_time[i].insert(block.height, now);
                }
                CommitteeEvent::ViewChanged { .. } if self.honest(i) => {
                    self.outcome.view_changes += 1
                }
                CommitteeEvent::Dropped {
                    reason: crate::committee::Drop::Equivocation(_),
                    ..
                } if self.honest(i) => self.outcome.equivocations_seen += 1,
                _ => {}
            }
        }
    }

    /// The version of a Byzantine node's message for the `side` half of the
    /// committee ([`Equivocator::forge`]).
    fn forge(&mut self, i: usize, bytes: &[u8], side: bool) -> Option<Vec<u8>> {
        let auth = self.auths[i].clone();
        self.equivocator.forge(&*auth, bytes, side)
    }

    fn done(&self) -> bool {
        (0..self.names.len())
            .filter(|&i| self.honest(i) && !self.crashed[i])
            .all(|i| self.committed[i].len() as u64 >= self.cfg.heights)
    }

    fn step(&mut self) -> bool {
        let t_queue = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let t_timer = (0..self.replicas.len())
            .filter(|&i| !self.crashed[i])
            .filter_map(|i| self.replicas[i].poll_timeout())
            .map(Instant::as_micros)
            .min();
        let now_us = match (t_queue, t_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        if now_us > self.cfg.time_limit.as_micros() as u64 {
            return false;
        }
        let now = Instant::from_micros(now_us);
        self.outcome.sim_time = Duration::from_micros(now_us);
        if t_queue == Some(now_us) {
            let Reverse((_, _, slot)) = self.queue.pop().expect("peeked");
            match self.events[slot].take() {
                Some(Ev::Deliver { to, from, bytes }) if !self.crashed[to] => {
                    let from_name = self.names[from].clone();
                    self.replicas[to].handle_message(now, &from_name, &bytes);
                    self.flush(now, to);
                }
                Some(Ev::Deliver { .. }) => {}
                Some(Ev::Submit(k)) => {
                    for i in 0..self.replicas.len() {
                        if !self.crashed[i] {
                            self.replicas[i].propose(now, decision(k));
                            self.flush(now, i);
                        }
                    }
                }
                None => {}
            }
        } else {
            for i in 0..self.replicas.len() {
                if !self.crashed[i] && self.replicas[i].poll_timeout() == Some(now) {
                    self.replicas[i].handle_timeout(now);
                    self.flush(now, i);
                }
            }
        }
        true
    }

    fn finish(mut self) -> SimOutcome {
        let honest: Vec<usize> = (0..self.names.len()).filter(|&i| self.honest(i)).collect();
        for h in 1..=self.cfg.heights {
            let mut seen: Option<Digest> = None;
            let mut all = true;
            for &i in &honest {
                match self.committed[i].get(&h) {
                    Some(d) => match seen {
                        None => seen = Some(*d),
                        Some(s) if s != *d => {
                            self.outcome.conflicts += 1;
                            break;
                        }
                        _ => {}
                    },
                    None if !self.crashed[i] => all = false,
                    None => {}
                }
            }
            if all && seen.is_some() {
                self.outcome.committed_by_all += 1;
            }
        }
        self.outcome.complete = self.outcome.committed_by_all == self.cfg.heights;
        self.outcome
    }
}

/// Run one seed.
pub fn run(cfg: &SimConfig, seed: u64) -> SimOutcome {
    let mut w = World::new(cfg.clone(), seed);
    while !w.done() && w.step() {}
    w.finish()
}

/// A leader crash: heights before `at_height` commit; then the leader of `at_height`'s
/// first view crashes just before decision `at_height` is submitted. Returns the
/// simulated time from the crash to the first honest commit of that height and to the
/// last honest replica's commit, or None if the height was not committed by the time
/// limit.
pub fn leader_crash(cfg: &SimConfig, seed: u64, at_height: u64) -> Option<(Duration, Duration)> {
    let mut cfg = cfg.clone();
    cfg.byzantine.clear();
    cfg.heights = at_height;
    let mut w = World::new(cfg, seed);
    // Submit heights before the crash height only; the crash height is submitted after.
    let crash_submit = w
        .events
        .iter()
        .position(|e| matches!(e, Some(Ev::Submit(k)) if *k == at_height))?;
    w.events[crash_submit] = None;
    while (0..w.names.len()).any(|i| (w.committed[i].len() as u64) < at_height - 1) {
        if !w.step() {
            return None;
        }
    }
    let now = Instant::from_micros(w.outcome.sim_time.as_micros() as u64);
    let leader = w
        .replicas
        .iter()
        .find(|r| r.height() == at_height)?
        .leader()
        .clone();
    let li = w.index[&leader];
    w.crashed[li] = true;
    w.schedule(now, Ev::Submit(at_height));
    while !w.done() && w.step() {}
    let times: Vec<Instant> = (0..w.names.len())
        .filter(|&i| !w.crashed[i])
        .filter_map(|i| w.commit_time[i].get(&at_height).copied())
        .collect();
    if times.len() < w.names.len() - 1 {
        return None;
    }
    let first = times.iter().min()?.saturating_since(now);
    let last = times.iter().max()?.saturating_since(now);
    Some((first, last))
}

/// Simulated time [`commit_in_process`] gives the committee.
pub const IN_PROCESS_LIMIT: Duration = Duration::from_secs(10);

/// Commit `decision` with an in-process committee: every candidate's replica, each
/// signing with its own key, exchanging real committee messages over a lossless
/// in-memory network, starting after the committed blocks `chain`. Returns the committed block and its
/// certificate. What `x0tta6bl4 fl bench --audit` and `fl rollback` run; on the mesh
/// the same replicas run on the candidates' nodes.
pub fn commit_in_process(
    cfg: &CommitteeConfig,
    keys: &[(NodeName, Arc<dyn Authenticator>)],
    verifier: &Verifier,
    chain: &[Block],
    decision: Decision,
) -> Result<(Block, crate::committee::QuorumCertificate), String> {
    let mut replicas = keys
        .iter()
        .map(|(name, auth)| {
            Replica::new(
                name.clone(),
                cfg.clone(),
                auth.clone(),
                verifier.clone(),
                chain,
                Instant::ZERO,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let index: HashMap<NodeName, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), i))
        .collect();
    let mut now = Instant::ZERO;
    for r in &mut replicas {
        r.propose(now, decision.clone());
    }
    let mut queue: std::collections::VecDeque<(usize, NodeName, Vec<u8>)> =
        std::collections::VecDeque::new();
    let mut dropped = Vec::new();
    for _ in 0..100_000 {
        for (i, r) in replicas.iter_mut().enumerate() {
            while let Some(t) = r.poll_transmit() {
                if let Some(&to) = index.get(&t.to) {
                    queue.push_back((to, keys[i].0.clone(), t.bytes));
                }
            }
            while let Some(e) = r.poll_event() {
                match e {
                    CommitteeEvent::Committed { block, qc } => return Ok((block, qc)),
                    CommitteeEvent::Dropped { from, reason } if dropped.len() < 3 => {
                        dropped.push(format!("{from}: {reason:?}"))
                    }
                    _ => {}
                }
            }
        }
        match queue.pop_front() {
            Some((to, from, bytes)) => replicas[to].handle_message(now, &from, &bytes),
            None => {
                // Nothing in flight: let the timers run (a missing key holder's view).
                let next = replicas.iter().filter_map(Replica::poll_timeout).min();
                let Some(next) = next else { break };
                now = now.max(next);
                if now > Instant::ZERO + IN_PROCESS_LIMIT {
                    break;
                }
                for r in &mut replicas {
                    if r.poll_timeout().is_some_and(|t| t <= now) {
                        r.handle_timeout(now);
                    }
                }
            }
        }
    }
    let why = if dropped.is_empty() {
        String::new()
    } else {
        format!("; refused messages: {}", dropped.join("; "))
    };
    Err(format!(
        "the in-process committee did not commit within {} s of simulated time (are 2f+1 of the drawn committee's keys present?){why}",
        IN_PROCESS_LIMIT.as_secs()
    ))
}

/// Safety and liveness over a sweep of seeds ([`SimConfig::random`] each).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SafetyReport {
    /// Byzantine validators tolerated.
    pub f: usize,
    /// Committee size, 3f+1.
    pub committee: usize,
    /// Candidates the committee is drawn from.
    pub candidates: usize,
    /// Seeds run.
    pub seeds: u64,
    /// First seed.
    pub first_seed: u64,
    /// Heights each run commits.
    pub heights_per_run: u64,
    /// Heights, over all runs, where two honest replicas committed different blocks.
    pub conflicting_commits: u64,
    /// Runs in which every honest replica committed every height (after partitions
    /// healed) before the time limit.
    pub runs_completed: u64,
    /// Runs with at least one Byzantine validator equivocating.
    pub runs_with_equivocation: u64,
    /// Runs with a partition.
    pub runs_with_partition: u64,
    /// View changes at honest replicas, all runs.
    pub view_changes: u64,
    /// Equivocating messages honest replicas refused, all runs.
    pub equivocations_refused: u64,
    /// Conflicting (re-signed twin) messages Byzantine validators sent, all runs.
    pub forged_messages: u64,
    /// Messages delivered or in flight, all runs.
    pub messages: u64,
    /// Longest run, in simulated seconds.
    pub max_sim_seconds: f64,
}

/// Run seeds `first..first + seeds` with f Byzantine validators.
pub fn safety_sweep(f: usize, first: u64, seeds: u64) -> SafetyReport {
    let mut r = SafetyReport {
        f,
        committee: 3 * f + 1,
        seeds,
        first_seed: first,
        ..SafetyReport::default()
    };
    for seed in first..first + seeds {
        let cfg = SimConfig::random(f, seed);
        r.candidates = 3 * f + 1 + cfg.extra_candidates;
        r.heights_per_run = cfg.heights;
        r.runs_with_equivocation += u64::from(cfg.byzantine.contains(&Byzantine::Equivocate));
        r.runs_with_partition += u64::from(cfg.partition.is_some());
        let o = run(&cfg, seed);
        r.conflicting_commits += o.conflicts;
        r.runs_completed += u64::from(o.complete);
        r.view_changes += o.view_changes;
        r.equivocations_refused += o.equivocations_seen;
        r.forged_messages += o.forged;
        r.messages += o.messages;
        r.max_sim_seconds = r.max_sim_seconds.max(o.sim_time.as_secs_f64());
    }
    r
}

/// Leader crashes over a sweep of seeds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CrashReport {
    /// Byzantine validators tolerated (none are Byzantine here; the leader crashes).
    pub f: usize,
    /// Seeds run.
    pub seeds: u64,
    /// First view-change timeout, ms.
    pub view_timeout_ms: u64,
    /// Runs in which the height was committed after the crash.
    pub committed: u64,
    /// Crash to the first honest commit, ms: median.
    pub first_commit_ms_p50: f64,
    /// Crash to the first honest commit, ms: worst.
    pub first_commit_ms_max: f64,
    /// Crash to the last live replica's commit, ms: median.
    pub all_committed_ms_p50: f64,
    /// Crash to the last live replica's commit, ms: worst.
    pub all_committed_ms_max: f64,
}

/// The leader-crash scenario: 1–40 ms delays, 0–5 % loss, no partition, no Byzantine
/// validator; the leader of height 3 crashes as decision 3 is submitted.
pub fn crash_config(f: usize, seed: u64) -> SimConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a5_4000);
    let dmin = rng.random_range(1..10);
    SimConfig {
        f,
        extra_candidates: 2,
        heights: 3,
        epoch_len: 3,
        byzantine: Vec::new(),
        loss: rng.random_range(0.0..0.05),
        delay: (
            Duration::from_millis(dmin),
            Duration::from_millis(dmin + rng.random_range(0..30)),
        ),
        partition: None,
        submit_every: Duration::from_millis(20),
        view_timeout: Duration::from_millis(200),
        resend: Duration::from_millis(100),
        time_limit: Duration::from_secs(60),
    }
}

/// Run the leader-crash scenario for seeds `first..first + seeds`.
pub fn crash_sweep(f: usize, first: u64, seeds: u64) -> CrashReport {
    let mut firsts = Vec::new();
    let mut alls = Vec::new();
    let mut timeout = Duration::ZERO;
    for seed in first..first + seeds {
        let cfg = crash_config(f, seed);
        timeout = cfg.view_timeout;
        if let Some((a, b)) = leader_crash(&cfg, seed, 3) {
            firsts.push(a.as_secs_f64() * 1e3);
            alls.push(b.as_secs_f64() * 1e3);
        }
    }
    let stat = |v: &mut Vec<f64>| -> (f64, f64) {
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (fp50, fmax) = stat(&mut firsts);
    let (ap50, amax) = stat(&mut alls);
    CrashReport {
        f,
        seeds,
        view_timeout_ms: timeout.as_millis() as u64,
        committed: firsts.len() as u64,
        first_commit_ms_p50: fp50,
        first_commit_ms_max: fmax,
        all_committed_ms_p50: ap50,
        all_committed_ms_max: amax,
    }
}
