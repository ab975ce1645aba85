//! The committee: a sans-IO PBFT replica that commits each federated round's result
//! (round, model hash, participants, aggregator, suspected attackers, epsilon spent)
//! before any node adopts the model.
//!
//! One decision per height, one height at a time (a window of one, so every committed
//! block with its quorum certificate is PBFT's stable checkpoint and nothing older is
//! kept in the protocol state). Per height and view:
//!
//! 1. the leader of the view sends a signed **pre-prepare** with the block;
//! 2. every validator that accepts it sends a signed **prepare**; 2f+1 matching
//!    prepares make the block *prepared* (a prepare certificate);
//! 3. a prepared validator sends a signed **commit**; 2f+1 matching commits are the
//!    block's quorum certificate ([`QuorumCertificate`]) and the block is committed.
//!
//! A validator that holds a pending decision and sees no commit before its timer moves
//! to the next view (**view change**, with its highest prepare certificate); f+1 view
//! changes for a higher view pull a validator along; the new view's leader gathers
//! 2f+1 and sends a **new view** that re-proposes the highest prepared block (or a new
//! one when none was prepared). Timers double per failed view. Lost messages are
//! resent every [`CommitteeConfig::resend`]; a validator that hears from one behind it
//! sends the committed block with its certificate ([`Message::Decided`]).
//!
//! The committee of each epoch ([`CommitteeConfig::epoch_len`] heights) is 3f+1 of the
//! candidates, drawn by [`draw`]: candidates ordered by SHA-256 of the last committed
//! block before the epoch, the epoch and the name, which anyone holding the chain can
//! recompute. What a decision may say after the committed chain is up to the
//! application's [`BlockRules`] (over the mesh, [`crate::mesh::FedState`]: round results
//! only from the committed coordinator, coordinator changes only at the committed
//! model), judged alike by every honest replica; a decision's proposer signature
//! ([`Decision::signed`]) is checked against the signer's credential before a block is
//! prepared, and a fresh coordinator change only while this validator suspects the
//! coordinator it replaces ([`Replica::watch`]). Messages are signed with the node's SVID key through
//! [`x0tta6bl4_proto::Authenticator`] (ECDSA P-256 in the daemon,
//! `x0tta6bl4_identity::NodeIdentity::authenticator`); simulations may use the keyed-hash
//! `SimAuthenticator`.
//!
//! Written by hand: Informal Systems' Malachite core consensus (0.5) builds with the
//! workspace's toolchain and its effect/resume design is sans-IO, but its context (ten
//! associated types, libp2p peer ids in its sync inputs) was more than this piece's
//! time allowed; PBFT with a window of one is small enough to own (see docs/fl.md).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x0tta6bl4_proto::{Authenticator, Instant, NodeName};

use crate::Transmit;

/// A SHA-256 digest, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `parts`, in order.
    pub fn of(parts: &[&[u8]]) -> Digest {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    /// The hex form.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Digest, String> {
        let bytes = hex::decode(s).map_err(|e| format!("{s:?} is not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{s:?} is not 32 bytes"))?;
        Ok(Digest(arr))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.hex()[..12])
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Bytes written as hex (signatures).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sig(pub Vec<u8>);

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sig({} bytes)", self.0.len())
    }
}

impl Serialize for Sig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(&s).map(Sig).map_err(serde::de::Error::custom)
    }
}

/// What the committee decides about one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The federated round.
    pub round: u64,
    /// SHA-256 of the model's parameters (little-endian f32s), the content address
    /// under which the audit trail stores it.
    pub model_hash: Digest,
    /// Participants whose updates were aggregated.
    pub participants: Vec<NodeName>,
    /// The aggregation rule.
    pub aggregator: String,
    /// Participants the aggregator set aside.
    pub suspected: Vec<NodeName>,
    /// Cumulative epsilon spent after this round (DP only).
    pub epsilon: Option<f64>,
    /// Test accuracy of the model, when the coordinator measured it.
    pub accuracy: Option<f64>,
    /// A rollback: this decision re-adopts the model of that earlier version.
    pub rollback_to: Option<u64>,
    /// Over the mesh: the node that ran the round, or, in a coordinator change, the
    /// node that coordinates from this block on. Absent in trails written in process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<NodeName>,
    /// A coordinator change: `coordinator` takes over from a silent one, resuming from
    /// the committed model of `model_version` (whose hash is `model_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// Who proposed the decision, and their signature over it
    /// ([`Decision::signed_bytes`]): over the mesh the coordinator of a round result,
    /// the node asking for a coordinator change. Validators check it before they
    /// prepare the block ([`Verifier::check_decision`]) and `fl verify` re-checks it.
    /// Absent in trails written in process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<DecisionSignature>,
}

/// A proposer's signature over a [`Decision`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionSignature {
    /// The signer (a candidate of the committee).
    pub by: NodeName,
    /// Its signature over [`Decision::signed_bytes`].
    pub signature: Sig,
}

/// What a coordinator-change decision says besides its new coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// The coordinator that went silent.
    pub replaces: NodeName,
    /// The version (height) of the committed model the new coordinator resumes from (0:
    /// the initial model).
    pub model_version: u64,
}

/// Application rules a [`Replica`] applies to every proposed block besides
/// [`Decision::check`]: what makes a decision valid after the committed chain (the
/// federation over the mesh: a round result only from the committed coordinator, a
/// coordinator change only from the committed model). Deterministic in the committed
/// blocks, so every honest replica judges a block alike.
pub trait BlockRules: Send {
    /// Whether `decision` may be committed next.
    fn check(&self, decision: &Decision) -> Result<(), String>;
    /// `block` was committed (in height order).
    fn committed(&mut self, block: &Block);
}

impl Decision {
    /// The bytes a proposer signs: a domain tag and the decision's canonical JSON
    /// without its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signed = None;
        signed_bytes("decision", &unsigned)
    }

    /// This decision signed by `by` with `auth` (its key).
    pub fn sign(mut self, by: &NodeName, auth: &dyn Authenticator) -> Decision {
        let signature = Sig(auth.sign(&self.signed_bytes()));
        self.signed = Some(DecisionSignature {
            by: by.clone(),
            signature,
        });
        self
    }

    /// Check the fields a validator can check without the model.
    pub fn check(&self) -> Result<(), String> {
        if let Some(e) = self.epsilon {
            if !(e.is_finite() && e >= 0.0) {
                return Err(format!("epsilon {e} is not a finite non-negative number"));
            }
        }
        if let Some(a) = self.accuracy {
            if !(a.is_finite() && (0.0..=1.0).contains(&a)) {
                return Err(format!("accuracy {a} is not in [0, 1]"));
            }
        }
        if self.aggregator.is_empty() || self.aggregator.len() > 64 {
            return Err("aggregator name must be 1 to 64 bytes".into());
        }
        if self.participants.len() > 100_000 || self.suspected.len() > self.participants.len() {
            return Err("too many participants or suspects".into());
        }
        Ok(())
    }
}

/// A committed (or proposed) block: one decision, chained to the previous block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Height, from 1; also the model version.
    pub height: u64,
    /// Epoch ([`CommitteeConfig::epoch_len`] heights each).
    pub epoch: u64,
    /// Hash of the previous block ([`genesis`] for height 1).
    pub prev: Digest,
    /// The decision.
    pub decision: Decision,
}

impl Block {
    /// The block's hash: SHA-256 over a domain tag and its canonical JSON.
    pub fn hash(&self) -> Digest {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Digest::of(&[b"x0tta6bl4-fl-block\n", &json])
    }
}

/// The hash every chain of `chain_id` starts from.
pub fn genesis(chain_id: &str) -> Digest {
    Digest::of(&[b"x0tta6bl4-fl-genesis\n", chain_id.as_bytes()])
}

/// The committee of `epoch`: the `size` candidates with the smallest
/// SHA-256(`seed` ‖ epoch ‖ name), in that order (the leader order of its views).
/// `seed` is the hash of the last block before the epoch (the genesis hash for epoch
/// 0), so anyone holding the chain recomputes the same committee.
pub fn draw(candidates: &[NodeName], seed: &Digest, epoch: u64, size: usize) -> Vec<NodeName> {
    let mut keyed: Vec<(Digest, NodeName)> = candidates
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|n| {
            let key = Digest::of(&[
                b"x0tta6bl4-fl-draw\n",
                &seed.0,
                &epoch.to_be_bytes(),
                n.as_str().as_bytes(),
            ]);
            (key, n.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().take(size).map(|(_, n)| n).collect()
}

/// Prepare or commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VoteKind {
    /// Phase two.
    Prepare,
    /// Phase three.
    Commit,
}

/// A signed prepare or commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    /// Phase.
    pub kind: VoteKind,
    /// View.
    pub view: u64,
    /// Height.
    pub height: u64,
    /// Hash of the block voted for.
    pub block: Digest,
    /// Voter.
    pub from: NodeName,
    /// Signature over everything above.
    pub signature: Sig,
}

/// A block's proof of commitment: 2f+1 signed commits of one view from distinct
/// members of the height's committee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuorumCertificate {
    /// Height.
    pub height: u64,
    /// The view the commits are from.
    pub view: u64,
    /// The committed block's hash.
    pub block: Digest,
    /// The commits.
    pub commits: Vec<Vote>,
}

/// 2f+1 signed prepares for one block in one view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    /// View.
    pub view: u64,
    /// The prepared block.
    pub block: Block,
    /// The prepares.
    pub prepares: Vec<Vote>,
}

/// A signed pre-prepare.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrePrepare {
    /// View.
    pub view: u64,
    /// The proposed block.
    pub block: Block,
    /// The leader.
    pub from: NodeName,
    /// Signature.
    pub signature: Sig,
}

/// A signed view change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The view asked for.
    pub new_view: u64,
    /// Height.
    pub height: u64,
    /// The sender's highest prepare certificate at this height.
    pub prepared: Option<Prepared>,
    /// Sender.
    pub from: NodeName,
    /// Signature.
    pub signature: Sig,
}

/// A signed new view: 2f+1 view changes and the block the new view starts with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewView {
    /// The view.
    pub view: u64,
    /// Height.
    pub height: u64,
    /// The view changes that justify it.
    pub view_changes: Vec<ViewChange>,
    /// The highest prepared block of those, or a new one, or none when the leader has
    /// nothing to propose yet.
    pub block: Option<Block>,
    /// The new leader.
    pub from: NodeName,
    /// Signature.
    pub signature: Sig,
}

/// A committee message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Message {
    /// Phase one.
    PrePrepare(PrePrepare),
    /// Phase two or three.
    Vote(Vote),
    /// Asks for the next view.
    ViewChange(ViewChange),
    /// Starts a view.
    NewView(NewView),
    /// A committed block and its certificate, for a validator behind.
    Decided {
        /// The block.
        block: Block,
        /// Its certificate.
        qc: QuorumCertificate,
    },
    /// "I am at this height": answered with [`Message::Decided`] by those ahead.
    Sync {
        /// The sender's next height.
        height: u64,
    },
}

/// Largest committee message accepted, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

impl Message {
    /// Encode (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decode, refusing oversized frames.
    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(format!(
                "{} bytes; at most {MESSAGE_BYTES_MAX}",
                bytes.len()
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// The bytes a signature covers: a domain tag and the message's canonical JSON with an
/// empty signature.
fn signed_bytes<T: Serialize>(tag: &str, value: &T) -> Vec<u8> {
    let mut out = format!("x0tta6bl4-fl-committee-{tag}\n").into_bytes();
    out.extend(serde_json::to_vec(value).unwrap_or_default());
    out
}

/// `signed_bytes()` of a signed committee message: its bytes with the signature emptied,
/// under the message's own domain tag.
macro_rules! signed_message {
    ($($message:ty => $tag:literal),* $(,)?) => {$(
        impl $message {
            /// The bytes its signature covers.
            pub fn signed_bytes(&self) -> Vec<u8> {
                let mut v = self.clone();
                v.signature = Sig::default();
                signed_bytes($tag, &v)
            }
        }
    )*};
}

signed_message! {
    Vote => "vote",
    PrePrepare => "pre-prepare",
    ViewChange => "view-change",
    NewView => "new-view",
}

/// Verifies committee signatures: the authenticator and every candidate's credential
/// (its SVID certificate in the daemon).
#[derive(Clone)]
pub struct Verifier {
    auth: Arc<dyn Authenticator>,
    credentials: Arc<BTreeMap<NodeName, Vec<u8>>>,
}

impl Verifier {
    /// From an authenticator and the candidates' credentials.
    pub fn new(auth: Arc<dyn Authenticator>, credentials: BTreeMap<NodeName, Vec<u8>>) -> Self {
        Verifier {
            auth,
            credentials: Arc::new(credentials),
        }
    }

    /// Check `signature` over `message` by `from`.
    pub fn check(&self, from: &NodeName, message: &[u8], signature: &Sig) -> Result<(), String> {
        let credential = self
            .credentials
            .get(from)
            .ok_or_else(|| format!("{from} has no known credential"))?;
        self.auth
            .verify(from, credential, message, &signature.0)
            .map_err(|e| e.to_string())
    }

    /// Check a decision's proposer signature, when it carries one: the signer must be a
    /// candidate and the signature must cover [`Decision::signed_bytes`]. Whether a
    /// decision must be signed, and by whom, is the [`BlockRules`]' to say.
    pub fn check_decision(&self, decision: &Decision) -> Result<(), String> {
        match &decision.signed {
            None => Ok(()),
            Some(s) => self
                .check(&s.by, &decision.signed_bytes(), &s.signature)
                .map_err(|e| format!("the proposer signature of {}: {e}", s.by)),
        }
    }

    /// Check a quorum certificate for `block` against `committee` (quorum 2f+1).
    pub fn check_qc(
        &self,
        qc: &QuorumCertificate,
        block: &Block,
        committee: &[NodeName],
    ) -> Result<(), String> {
        let hash = block.hash();
        if qc.block != hash || qc.height != block.height {
            return Err(format!(
                "certificate is for block {} at height {}, not {} at {}",
                qc.block, qc.height, hash, block.height
            ));
        }
        let mut voters = BTreeSet::new();
        for v in &qc.commits {
            if v.kind != VoteKind::Commit
                || v.view != qc.view
                || v.height != qc.height
                || v.block != qc.block
            {
                return Err(format!(
                    "a vote of {} does not match the certificate",
                    v.from
                ));
            }
            if !committee.contains(&v.from) {
                return Err(format!("{} is not in the height's committee", v.from));
            }
            self.check(&v.from, &v.signed_bytes(), &v.signature)
                .map_err(|e| format!("commit of {}: {e}", v.from))?;
            voters.insert(v.from.clone());
        }
        let need = quorum(committee.len());
        if voters.len() < need {
            return Err(format!(
                "{} distinct commits, a quorum is {need}",
                voters.len()
            ));
        }
        Ok(())
    }

    fn check_prepared(&self, p: &Prepared, committee: &[NodeName]) -> Result<(), String> {
        let hash = p.block.hash();
        let mut voters = BTreeSet::new();
        for v in &p.prepares {
            if v.kind != VoteKind::Prepare
                || v.view != p.view
                || v.height != p.block.height
                || v.block != hash
                || !committee.contains(&v.from)
            {
                return Err("a prepare does not match its certificate".into());
            }
            self.check(&v.from, &v.signed_bytes(), &v.signature)?;
            voters.insert(v.from.clone());
        }
        if voters.len() < quorum(committee.len()) {
            return Err("prepare certificate below quorum".into());
        }
        Ok(())
    }
}

/// 2f+1 of a committee of `n` = 3f+1 (⌊2n/3⌋+1 in general).
pub fn quorum(n: usize) -> usize {
    2 * n / 3 + 1
}

/// Committee settings, the same at every node.
#[derive(Clone, Debug)]
pub struct CommitteeConfig {
    /// The chain's name (its genesis hash is [`genesis`] of it).
    pub chain_id: String,
    /// Every node that may be drawn.
    pub candidates: Vec<NodeName>,
    /// Byzantine validators tolerated: the committee has 3f+1 members.
    pub f: usize,
    /// Heights per epoch; the committee is drawn anew at each epoch.
    pub epoch_len: u64,
    /// First view-change timeout; doubled per failed view at a height.
    pub view_timeout: Duration,
    /// Interval of resending the current phase's messages (lost messages).
    pub resend: Duration,
}

impl CommitteeConfig {
    /// Check the settings.
    pub fn check(&self) -> Result<(), String> {
        let n = 3 * self.f + 1;
        let distinct: BTreeSet<_> = self.candidates.iter().collect();
        if distinct.len() < n {
            return Err(format!(
                "{} distinct candidates; a committee tolerating f = {} needs {n}",
                distinct.len(),
                self.f
            ));
        }
        if self.epoch_len == 0 {
            return Err("epoch_len must be at least 1".into());
        }
        if self.view_timeout.is_zero() || self.resend.is_zero() {
            return Err("view_timeout and resend must be positive".into());
        }
        Ok(())
    }
}

/// Why a message was dropped.
#[derive(Clone, Debug, PartialEq)]
pub enum Drop {
    /// Did not parse.
    Malformed(String),
    /// A signature, certificate or field did not check.
    Invalid(String),
    /// A second, different message from one sender for one slot (equivocation).
    Equivocation(NodeName),
}

/// What a replica reports. (Few events, one per committed block at most: the large
/// `Committed` variant is not worth a box.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum CommitteeEvent {
    /// A block was committed (in height order, each exactly once).
    Committed {
        /// The block.
        block: Block,
        /// Its certificate.
        qc: QuorumCertificate,
    },
    /// The replica moved to a view.
    ViewChanged {
        /// Height.
        height: u64,
        /// The view.
        view: u64,
    },
    /// A message was dropped.
    Dropped {
        /// Sender (as the transport says).
        from: NodeName,
        /// Why.
        reason: Drop,
    },
}

/// One node's committee state machine (validator when drawn, observer otherwise).
pub struct Replica {
    me: NodeName,
    cfg: CommitteeConfig,
    verifier: Verifier,
    auth: Arc<dyn Authenticator>,
    /// Hash of the last committed block (genesis at first).
    tip: Digest,
    /// Next height to decide.
    height: u64,
    view: u64,
    committee: Vec<NodeName>,
    /// Committed blocks kept to answer those behind (the last [`KEEP_DECIDED`]).
    decided: VecDeque<(Block, QuorumCertificate)>,
    pending: VecDeque<Decision>,
    // Per height:
    accepted: BTreeMap<u64, PrePrepare>,
    prepares: BTreeMap<(u64, NodeName), Vote>,
    commits: BTreeMap<(u64, NodeName), Vote>,
    prepared: Option<Prepared>,
    view_changes: BTreeMap<u64, BTreeMap<NodeName, ViewChange>>,
    in_view_change: bool,
    new_view_sent: Option<NewView>,
    failed_views: u32,
    timer: Option<Instant>,
    resend_at: Option<Instant>,
    future: Vec<(NodeName, Message)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CommitteeEvent>,
    rules: Option<Box<dyn BlockRules>>,
    /// The node whose replacement this validator prepares only from the instant given
    /// ([`Replica::watch`]).
    watched: Option<(NodeName, Instant)>,
}

/// Committed blocks a replica keeps in memory for those behind it.
pub const KEEP_DECIDED: usize = 1024;
/// Messages for the next heights buffered until this replica gets there.
const FUTURE_MAX: usize = 1024;

impl Replica {
    /// A replica starting after the committed blocks `chain` (oldest first, from the
    /// audit trail; empty for a new chain). The last block is the tip; the draw of the
    /// current epoch needs the block before the epoch, so `chain` must reach back to
    /// it.
    pub fn new(
        me: NodeName,
        cfg: CommitteeConfig,
        auth: Arc<dyn Authenticator>,
        verifier: Verifier,
        chain: &[Block],
        now: Instant,
    ) -> Result<Self, String> {
        cfg.check()?;
        let tip = chain.last();
        let (tip_hash, height) = match tip {
            Some(b) => (b.hash(), b.height + 1),
            None => (genesis(&cfg.chain_id), 1),
        };
        let epoch = (height - 1) / cfg.epoch_len;
        let seed_height = epoch * cfg.epoch_len;
        let seed = if seed_height == 0 {
            genesis(&cfg.chain_id)
        } else {
            chain
                .iter()
                .find(|b| b.height == seed_height)
                .map(Block::hash)
                .ok_or_else(|| {
                    format!("block {seed_height} is needed to draw the committee of epoch {epoch}")
                })?
        };
        let mut r = Replica {
            me,
            cfg,
            verifier,
            auth,
            tip: tip_hash,
            height,
            view: 0,
            committee: Vec::new(),
            decided: VecDeque::new(),
            pending: VecDeque::new(),
            accepted: BTreeMap::new(),
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            prepared: None,
            view_changes: BTreeMap::new(),
            in_view_change: false,
            new_view_sent: None,
            failed_views: 0,
            timer: None,
            resend_at: Some(now),
            future: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rules: None,
            watched: None,
        };
        r.committee = draw(&r.cfg.candidates, &seed, epoch, 3 * r.cfg.f + 1);
        Ok(r)
    }

    /// Judge every proposed block by `rules` too (they must already have seen the
    /// committed blocks this replica started after). Blocks that arrive committed, with
    /// a quorum certificate, are not re-judged; decisions the rules refuse after a
    /// commit are dropped from the pending ones.
    pub fn with_rules(mut self, rules: Box<dyn BlockRules>) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Local liveness: prepare a freshly proposed coordinator change replacing `node`
    /// ([`Decision::handover`]) only from `suspect_from` on, the instant from which this
    /// validator suspects `node` (it has heard nothing from it since long enough). The
    /// owner calls it again whenever it hears from `node`, and for each new
    /// coordinator. A change re-proposed in a new view because 2f+1 validators prepared
    /// it is not re-judged (PBFT's view change must carry prepared blocks over), and a
    /// change replacing a node not watched is judged by the rules only.
    pub fn watch(&mut self, node: NodeName, suspect_from: Instant) {
        self.watched = Some((node, suspect_from));
    }

    /// Refuse a fresh coordinator change replacing the watched node before it is
    /// suspected here.
    fn check_suspected(&self, now: Instant, decision: &Decision) -> Result<(), String> {
        match (&decision.handover, &self.watched) {
            (Some(h), Some((node, from))) if h.replaces == *node && now < *from => Err(format!(
                "coordinator change replacing {node}, which this validator still hears (it would suspect it after {} ms more of silence)",
                from.saturating_since(now).as_millis()
            )),
            _ => Ok(()),
        }
    }

    fn epoch_of(&self, height: u64) -> u64 {
        (height - 1) / self.cfg.epoch_len
    }

    /// The committee of `height`, given the hash of block `height - 1`: the draw is
    /// seeded by the last block before the epoch, which is that block at an epoch's
    /// first height and unchanged within it.
    fn committee_for(&self, height: u64, prev: &Digest) -> Vec<NodeName> {
        let epoch = self.epoch_of(height);
        if (height - 1) % self.cfg.epoch_len == 0 {
            draw(&self.cfg.candidates, prev, epoch, 3 * self.cfg.f + 1)
        } else {
            self.committee.clone()
        }
    }

    /// This node's name.
    pub fn name(&self) -> &NodeName {
        &self.me
    }
    /// The next height to decide.
    pub fn height(&self) -> u64 {
        self.height
    }
    /// The current view.
    pub fn view(&self) -> u64 {
        self.view
    }
    /// The committee of the current height.
    pub fn committee(&self) -> &[NodeName] {
        &self.committee
    }
    /// The leader of the current view.
    pub fn leader(&self) -> &NodeName {
        self.leader_of(self.view)
    }
    /// Views start at 0 at every height; the leader of view v at height h is member
    /// (h + v) mod n of the height's committee, so leadership rotates every height.
    fn leader_of(&self, view: u64) -> &NodeName {
        let n = self.committee.len() as u64;
        &self.committee[((self.height + view) % n) as usize]
    }
    fn member(&self) -> bool {
        self.committee.contains(&self.me)
    }
    fn quorum(&self) -> usize {
        quorum(self.committee.len())
    }

    /// Submit a decision to commit (the coordinator sends each round's result to every
    /// candidate). The leader proposes it; the others time the leader.
    pub fn propose(&mut self, now: Instant, decision: Decision) {
        if self.pending.contains(&decision) {
            return;
        }
        if let Some(Err(e)) = self.rules.as_ref().map(|r| r.check(&decision)) {
            let me = self.me.clone();
            return self.drop_msg(&me, Drop::Invalid(format!("submitted decision: {e}")));
        }
        self.pending.push_back(decision);
        self.arm_timer(now);
        self.maybe_propose();
    }

    /// `decision` signed by this replica's key, as proposed by this node.
    pub fn sign_decision(&self, decision: Decision) -> Decision {
        decision.sign(&self.me, &*self.auth)
    }

    /// Decisions submitted and not committed yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn arm_timer(&mut self, now: Instant) {
        if self.timer.is_none() && self.member() {
            self.timer = Some(now + self.timeout());
        }
    }

    fn timeout(&self) -> Duration {
        self.cfg.view_timeout * 2u32.pow(self.failed_views.min(6))
    }

    fn sign(&self, bytes: &[u8]) -> Sig {
        Sig(self.auth.sign(bytes))
    }

    fn broadcast(&mut self, msg: &Message) {
        let bytes = msg.encode();
        for to in &self.committee {
            if *to != self.me {
                self.transmits.push_back(Transmit {
                    to: to.clone(),
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn send(&mut self, to: &NodeName, msg: &Message) {
        self.transmits.push_back(Transmit {
            to: to.clone(),
            bytes: msg.encode(),
        });
    }

    fn next_block(&self, decision: Decision) -> Block {
        Block {
            height: self.height,
            epoch: self.epoch_of(self.height),
            prev: self.tip,
            decision,
        }
    }

    fn maybe_propose(&mut self) {
        if !self.member()
            || self.in_view_change
            || *self.leader() != self.me
            || self.accepted.contains_key(&self.view)
        {
            return;
        }
        let Some(decision) = self.pending.front().cloned() else {
            return;
        };
        let mut pp = PrePrepare {
            view: self.view,
            block: self.next_block(decision),
            from: self.me.clone(),
            signature: Sig::default(),
        };
        pp.signature = self.sign(&pp.signed_bytes());
        self.broadcast(&Message::PrePrepare(pp.clone()));
        self.accept(pp);
    }

    fn check_block(&self, block: &Block) -> Result<(), String> {
        if block.height != self.height || block.prev != self.tip {
            return Err(format!(
                "block {} after {} does not extend height {} after {}",
                block.height, block.prev, self.height, self.tip
            ));
        }
        if block.epoch != self.epoch_of(block.height) {
            return Err(format!("block says epoch {}", block.epoch));
        }
        block.decision.check()?;
        self.verifier.check_decision(&block.decision)?;
        match &self.rules {
            Some(rules) => rules.check(&block.decision),
            None => Ok(()),
        }
    }

    /// Accept a pre-prepare of the current view and prepare it.
    fn accept(&mut self, pp: PrePrepare) {
        let hash = pp.block.hash();
        let view = pp.view;
        self.accepted.insert(view, pp);
        self.vote(VoteKind::Prepare, view, hash);
    }

    /// Sign, send and count our own vote of `kind` for `block` in `view`.
    fn vote(&mut self, kind: VoteKind, view: u64, block: Digest) {
        let mut vote = Vote {
            kind,
            view,
            height: self.height,
            block,
            from: self.me.clone(),
            signature: Sig::default(),
        };
        vote.signature = self.sign(&vote.signed_bytes());
        self.broadcast(&Message::Vote(vote.clone()));
        self.record_vote(vote);
    }

    /// Feed a frame from `from`.
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, bytes: &[u8]) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.drop_msg(from, Drop::Malformed(e)),
        };
        self.handle(now, from, msg);
    }

    fn drop_msg(&mut self, from: &NodeName, reason: Drop) {
        self.events.push_back(CommitteeEvent::Dropped {
            from: from.clone(),
            reason,
        });
    }

    fn handle(&mut self, now: Instant, from: &NodeName, msg: Message) {
        let height = match &msg {
            Message::PrePrepare(p) => p.block.height,
            Message::Vote(v) => v.height,
            Message::ViewChange(v) => v.height,
            Message::NewView(v) => v.height,
            Message::Decided { block, .. } => block.height,
            Message::Sync { height } => *height,
        };
        if let Message::Sync { height } = msg {
            return self.answer_behind(from, height);
        }
        if let Message::Decided { block, qc } = msg {
            if block.height == self.height {
                return self.on_decided(now, from, block, qc);
            }
            if block.height > self.height && self.future.len() < FUTURE_MAX {
                self.future
                    .push((from.clone(), Message::Decided { block, qc }));
            }
            return;
        }
        if height < self.height {
            return self.answer_behind(from, height);
        }
        if height > self.height {
            if height <= self.height + 2 && self.future.len() < FUTURE_MAX {
                self.future.push((from.clone(), msg));
            }
            return;
        }
        if !self.member() {
            return;
        }
        let result = match msg {
            Message::PrePrepare(pp) => self.on_pre_prepare(now, pp),
            Message::Vote(v) => self.on_vote(now, v),
            Message::ViewChange(vc) => self.on_view_change(now, vc),
            Message::NewView(nv) => self.on_new_view(now, nv),
            Message::Decided { .. } | Message::Sync { .. } => Ok(()),
        };
        if let Err(reason) = result {
            self.drop_msg(from, reason);
        }
    }

    fn answer_behind(&mut self, to: &NodeName, height: u64) {
        if let Some((block, qc)) = self.decided.iter().find(|(b, _)| b.height == height) {
            let msg = Message::Decided {
                block: block.clone(),
                qc: qc.clone(),
            };
            self.send(to, &msg);
        }
    }

    fn on_decided(&mut self, now: Instant, from: &NodeName, block: Block, qc: QuorumCertificate) {
        let extends = if block.height != self.height || block.prev != self.tip {
            Err(format!(
                "block {} after {} does not extend height {} after {}",
                block.height, block.prev, self.height, self.tip
            ))
        } else if block.epoch != self.epoch_of(block.height) {
            Err(format!("block says epoch {}", block.epoch))
        } else {
            block.decision.check()
        };
        let checked = extends.and_then(|()| self.verifier.check_qc(&qc, &block, &self.committee));
        match checked {
            Ok(()) => self.commit(now, block, qc),
            Err(e) => self.drop_msg(from, Drop::Invalid(format!("decided block: {e}"))),
        }
    }

    fn on_pre_prepare(&mut self, now: Instant, pp: PrePrepare) -> Result<(), Drop> {
        if pp.view != self.view || self.in_view_change {
            return Ok(());
        }
        if pp.from != *self.leader() {
            return Err(Drop::Invalid(format!(
                "pre-prepare from {}, the leader of view {} is {}",
                pp.from,
                pp.view,
                self.leader()
            )));
        }
        self.verifier
            .check(&pp.from, &pp.signed_bytes(), &pp.signature)
            .map_err(Drop::Invalid)?;
        self.check_block(&pp.block).map_err(Drop::Invalid)?;
        self.check_suspected(now, &pp.block.decision)
            .map_err(Drop::Invalid)?;
        if let Some(old) = self.accepted.get(&pp.view) {
            if old.block != pp.block {
                return Err(Drop::Equivocation(pp.from));
            }
            return Ok(());
        }
        self.arm_timer(now);
        self.accept(pp);
        self.progress(now);
        Ok(())
    }

    fn on_vote(&mut self, now: Instant, v: Vote) -> Result<(), Drop> {
        if !self.committee.contains(&v.from) {
            return Err(Drop::Invalid(format!("{} is not in the committee", v.from)));
        }
        if v.view + 64 < self.view || v.view > self.view + 64 {
            return Ok(());
        }
        self.verifier
            .check(&v.from, &v.signed_bytes(), &v.signature)
            .map_err(Drop::Invalid)?;
        let slot = match v.kind {
            VoteKind::Prepare => &self.prepares,
            VoteKind::Commit => &self.commits,
        };
        if let Some(old) = slot.get(&(v.view, v.from.clone())) {
            if old.block != v.block {
                return Err(Drop::Equivocation(v.from));
            }
            return Ok(());
        }
        self.record_vote(v);
        self.progress(now);
        Ok(())
    }

    fn record_vote(&mut self, v: Vote) {
        let key = (v.view, v.from.clone());
        match v.kind {
            VoteKind::Prepare => self.prepares.insert(key, v),
            VoteKind::Commit => self.commits.insert(key, v),
        };
    }

    fn votes_for(&self, kind: VoteKind, view: u64, block: &Digest) -> Vec<Vote> {
        let slot = match kind {
            VoteKind::Prepare => &self.prepares,
            VoteKind::Commit => &self.commits,
        };
        slot.iter()
            .filter(|((v, _), vote)| *v == view && vote.block == *block)
            .map(|(_, vote)| vote.clone())
            .collect()
    }

    /// The block with this hash, if this replica has seen it at this height.
    fn known_block(&self, hash: &Digest) -> Option<Block> {
        self.accepted
            .values()
            .map(|pp| &pp.block)
            .chain(self.prepared.as_ref().map(|p| &p.block))
            .find(|b| b.hash() == *hash)
            .cloned()
    }

    /// Prepare → commit → decide, as far as the votes allow.
    fn progress(&mut self, now: Instant) {
        // Prepared in the current view: send a commit.
        if let Some(pp) = self.accepted.get(&self.view).cloned() {
            let hash = pp.block.hash();
            let prepares = self.votes_for(VoteKind::Prepare, pp.view, &hash);
            let already = self.commits.contains_key(&(pp.view, self.me.clone()));
            if prepares.len() >= self.quorum() && !already && !self.in_view_change {
                if self.prepared.as_ref().is_none_or(|p| p.view < pp.view) {
                    self.prepared = Some(Prepared {
                        view: pp.view,
                        block: pp.block.clone(),
                        prepares: prepares[..self.quorum()].to_vec(),
                    });
                }
                self.vote(VoteKind::Commit, pp.view, hash);
            }
        }
        // 2f+1 commits of any one view for a block we hold: committed.
        let mut tally: BTreeMap<(u64, Digest), usize> = BTreeMap::new();
        for ((view, _), v) in &self.commits {
            *tally.entry((*view, v.block)).or_default() += 1;
        }
        let quorum = self.quorum();
        for ((view, hash), count) in tally {
            if count < quorum {
                continue;
            }
            if let Some(block) = self.known_block(&hash) {
                let commits = self.votes_for(VoteKind::Commit, view, &hash);
                let qc = QuorumCertificate {
                    height: self.height,
                    view,
                    block: hash,
                    commits: commits[..quorum].to_vec(),
                };
                self.commit(now, block, qc);
                return;
            }
        }
    }

    fn commit(&mut self, now: Instant, block: Block, qc: QuorumCertificate) {
        let hash = block.hash();
        self.pending.retain(|d| *d != block.decision);
        if let Some(rules) = self.rules.as_mut() {
            rules.committed(&block);
            let rules = &*rules;
            self.pending.retain(|d| rules.check(d).is_ok());
        }
        // Those that hear nothing more from the committee (observers) learn it now.
        let decided = Message::Decided {
            block: block.clone(),
            qc: qc.clone(),
        };
        if self.member() {
            let bytes = decided.encode();
            for to in &self.cfg.candidates {
                if !self.committee.contains(to) && *to != self.me {
                    self.transmits.push_back(Transmit {
                        to: to.clone(),
                        bytes: bytes.clone(),
                    });
                }
            }
        }
        self.decided.push_back((block.clone(), qc.clone()));
        if self.decided.len() > KEEP_DECIDED {
            self.decided.pop_front();
        }
        self.events
            .push_back(CommitteeEvent::Committed { block, qc });
        self.tip = hash;
        self.height += 1;
        self.committee = self.committee_for(self.height, &hash);
        self.view = 0;
        self.accepted.clear();
        self.prepares.clear();
        self.commits.clear();
        self.prepared = None;
        self.view_changes.clear();
        self.in_view_change = false;
        self.new_view_sent = None;
        self.failed_views = 0;
        self.timer = None;
        if !self.pending.is_empty() {
            self.arm_timer(now);
        }
        self.maybe_propose();
        let future = std::mem::take(&mut self.future);
        for (from, msg) in future {
            self.handle(now, &from, msg);
        }
    }

    fn start_view_change(&mut self, now: Instant, new_view: u64) {
        if new_view <= self.view && self.in_view_change {
            return;
        }
        self.view = new_view;
        self.in_view_change = true;
        self.failed_views += 1;
        self.events.push_back(CommitteeEvent::ViewChanged {
            height: self.height,
            view: new_view,
        });
        let mut vc = ViewChange {
            new_view,
            height: self.height,
            prepared: self.prepared.clone(),
            from: self.me.clone(),
            signature: Sig::default(),
        };
        vc.signature = self.sign(&vc.signed_bytes());
        self.broadcast(&Message::ViewChange(vc.clone()));
        self.view_changes
            .entry(new_view)
            .or_default()
            .insert(self.me.clone(), vc);
        self.timer = Some(now + self.timeout());
        self.maybe_new_view(now);
    }

    fn on_view_change(&mut self, now: Instant, vc: ViewChange) -> Result<(), Drop> {
        if !self.committee.contains(&vc.from) {
            return Err(Drop::Invalid(format!(
                "{} is not in the committee",
                vc.from
            )));
        }
        if vc.new_view < self.view || vc.new_view > self.view + 64 {
            return Ok(());
        }
        self.check_view_change(&vc).map_err(Drop::Invalid)?;
        let slot = self.view_changes.entry(vc.new_view).or_default();
        if slot.contains_key(&vc.from) {
            return Ok(());
        }
        slot.insert(vc.from.clone(), vc);
        // f+1 validators want a higher view: at least one honest one timed out; join
        // the smallest such view.
        let f = (self.committee.len() - 1) / 3;
        let higher: BTreeSet<&NodeName> = self
            .view_changes
            .range(self.view + 1..)
            .flat_map(|(_, m)| m.keys())
            .collect();
        if higher.len() > f {
            let smallest = self
                .view_changes
                .range(self.view + 1..)
                .map(|(v, _)| *v)
                .next();
            if let Some(v) = smallest {
                self.start_view_change(now, v);
            }
        }
        self.maybe_new_view(now);
        Ok(())
    }

    fn check_view_change(&self, vc: &ViewChange) -> Result<(), String> {
        self.verifier
            .check(&vc.from, &vc.signed_bytes(), &vc.signature)?;
        if let Some(p) = &vc.prepared {
            if p.view >= vc.new_view {
                return Err("prepare certificate from a view not before the new one".into());
            }
            self.check_block(&p.block)?;
            self.verifier.check_prepared(p, &self.committee)?;
        }
        Ok(())
    }

    /// The block a new view must start with: the highest-view prepared block among
    /// the view changes, if any.
    fn highest_prepared(vcs: &[ViewChange]) -> Option<&Prepared> {
        vcs.iter()
            .filter_map(|vc| vc.prepared.as_ref())
            .max_by_key(|p| p.view)
    }

    fn maybe_new_view(&mut self, now: Instant) {
        let view = self.view;
        if !self.in_view_change || *self.leader_of(view) != self.me || self.new_view_sent.is_some()
        {
            return;
        }
        let Some(vcs) = self.view_changes.get(&view) else {
            return;
        };
        if vcs.len() < self.quorum() {
            return;
        }
        let vcs: Vec<ViewChange> = vcs.values().take(self.quorum()).cloned().collect();
        let block = match Self::highest_prepared(&vcs) {
            Some(p) => Some(p.block.clone()),
            None => self.pending.front().cloned().map(|d| self.next_block(d)),
        };
        let mut nv = NewView {
            view,
            height: self.height,
            view_changes: vcs,
            block,
            from: self.me.clone(),
            signature: Sig::default(),
        };
        nv.signature = self.sign(&nv.signed_bytes());
        self.new_view_sent = Some(nv.clone());
        self.broadcast(&Message::NewView(nv.clone()));
        self.enter_view(now, nv);
    }

    fn on_new_view(&mut self, now: Instant, nv: NewView) -> Result<(), Drop> {
        if nv.view < self.view || (nv.view == self.view && !self.in_view_change) {
            return Ok(());
        }
        if nv.from != *self.leader_of(nv.view) {
            return Err(Drop::Invalid(format!(
                "new view {} from {}, not its leader",
                nv.view, nv.from
            )));
        }
        self.verifier
            .check(&nv.from, &nv.signed_bytes(), &nv.signature)
            .map_err(Drop::Invalid)?;
        let mut senders = BTreeSet::new();
        for vc in &nv.view_changes {
            if vc.new_view != nv.view || vc.height != self.height {
                return Err(Drop::Invalid("a view change for another view".into()));
            }
            if !self.committee.contains(&vc.from) {
                return Err(Drop::Invalid(format!(
                    "{} is not in the committee",
                    vc.from
                )));
            }
            self.check_view_change(vc).map_err(Drop::Invalid)?;
            senders.insert(vc.from.clone());
        }
        if senders.len() < self.quorum() {
            return Err(Drop::Invalid(format!(
                "new view with {} view changes, a quorum is {}",
                senders.len(),
                self.quorum()
            )));
        }
        match (Self::highest_prepared(&nv.view_changes), &nv.block) {
            (Some(p), Some(b)) if p.block == *b => {}
            (Some(_), _) => {
                return Err(Drop::Invalid(
                    "new view does not re-propose the highest prepared block".into(),
                ))
            }
            (None, Some(b)) => {
                self.check_block(b).map_err(Drop::Invalid)?;
                self.check_suspected(now, &b.decision)
                    .map_err(Drop::Invalid)?;
            }
            (None, None) => {}
        }
        self.enter_view(now, nv);
        Ok(())
    }

    fn enter_view(&mut self, now: Instant, nv: NewView) {
        self.view = nv.view;
        self.in_view_change = false;
        self.events.push_back(CommitteeEvent::ViewChanged {
            height: self.height,
            view: nv.view,
        });
        self.timer = (nv.block.is_some() || !self.pending.is_empty()).then(|| now + self.timeout());
        if let Some(block) = nv.block {
            let pp = PrePrepare {
                view: nv.view,
                block,
                from: nv.from,
                signature: nv.signature,
            };
            if !self.accepted.contains_key(&nv.view) {
                self.accept(pp);
            }
        } else {
            self.maybe_propose();
        }
        self.progress(now);
    }

    /// Advance time: view change on the timer, resend on the resend timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_some_and(|t| now >= t) {
            self.timer = None;
            let next = self.view + 1;
            self.start_view_change(now, next);
        }
        if self.resend_at.is_some_and(|t| now >= t) {
            self.resend_at = Some(now + self.cfg.resend);
            self.resend();
        }
    }

    /// Send again what this replica said at the current height (lost messages).
    fn resend(&mut self) {
        if !self.member() {
            self.broadcast(&Message::Sync {
                height: self.height,
            });
            return;
        }
        let mut msgs = Vec::new();
        if self.in_view_change {
            if let Some(vc) = self
                .view_changes
                .get(&self.view)
                .and_then(|m| m.get(&self.me))
            {
                msgs.push(Message::ViewChange(vc.clone()));
            }
        } else {
            if let Some(nv) = &self.new_view_sent {
                msgs.push(Message::NewView(nv.clone()));
            }
            if let Some(pp) = self.accepted.get(&self.view) {
                if pp.from == self.me {
                    msgs.push(Message::PrePrepare(pp.clone()));
                }
            }
            for slot in [&self.prepares, &self.commits] {
                if let Some(v) = slot.get(&(self.view, self.me.clone())) {
                    msgs.push(Message::Vote(v.clone()));
                }
            }
            if msgs.is_empty() {
                msgs.push(Message::Sync {
                    height: self.height,
                });
            }
        }
        for m in msgs {
            self.broadcast(&m);
        }
    }

    /// When [`Replica::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timer, self.resend_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CommitteeEvent> {
        self.events.pop_front()
    }
}
