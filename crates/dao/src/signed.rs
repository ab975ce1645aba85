//! Snapshot-style gasless governance: operators sign proposals, votes and delegations with
//! their SVID keys (ECDSA P-256 with SHA-256, ASN.1 DER signatures, via aws-lc-rs) and the
//! [`Ledger`] verifies every message before it reaches the [`Engine`].
//!
//! A message is a JSON body `{domain, signer, nonce, message}` and a signature over exactly
//! those bytes. The domain string separates these signatures from any other use of the key;
//! the nonce (the signer's count of accepted messages) makes a replayed or reordered
//! message fail. A refused message changes nothing.
//!
//! **Auto-proxy in the ledger**: an operator opts in with a signed
//! [`Message::ProxyOptIn`] (its [`ProxyPolicy`]: follow a delegate, or follow the prediction
//! above a confidence threshold) and revokes it with a signed [`Message::ProxyOptOut`]. The
//! ledger keeps the signed opt-in byte for byte. [`Ledger::run_proxy`] (anyone may run it,
//! like queue and execute) applies each policy in force to an open proposal, casts the
//! proxy's votes and records every decision, vote or refusal, with its reason, its inputs
//! (the delegate's ballot; the predictor and the features) and the signed opt-in that
//! authorised it. [`Ledger::verify_proxy`] lets anyone holding the ledger check each
//! record again: the opt-in's signature against the operator's registered key, the
//! decision recomputed from the policy and the recorded inputs, the proposal's sentiment
//! recomputed from its text, and the proxy's vote present in the operator's ballot.

use std::collections::BTreeMap;

pub use aws_lc_rs::signature::EcdsaKeyPair;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};

use crate::engine::{Action, Effect, Engine, ProposalState, Refused, Rules, Support};
use crate::predict::{self, Features, Predictor, ProxyContext, ProxyDecision, ProxyPolicy};

/// Signatures made for this governance only.
pub const DOMAIN: &str = "x0tta6bl4-dao/v1";

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Message {
    Propose {
        action: Action,
        description: String,
    },
    Vote {
        proposal: u64,
        support: Support,
        votes: u64,
    },
    Delegate {
        to: String,
    },
    Undelegate,
    Cancel {
        proposal: u64,
    },
    /// Let the auto-proxy vote for me by this policy (replaces an earlier opt-in).
    ProxyOptIn {
        policy: ProxyPolicy,
    },
    /// Revoke my opt-in: the proxy no longer votes for me (its votes cast so far stay).
    ProxyOptOut,
}

/// The signed part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub domain: String,
    pub signer: String,
    pub nonce: u64,
    pub message: Message,
}

/// A body (JSON text, kept byte for byte) and the signer's signature over it (hex, DER).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    pub body: String,
    pub signature: String,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message for another domain `{0}` (expected `{DOMAIN}`)")]
    WrongDomain(String),
    #[error("unsigned message from {0}")]
    Unsigned(String),
    #[error("{0} has no registered key (not an operator of this governance)")]
    UnknownSigner(String),
    #[error("signature does not verify with the registered key of {0}")]
    BadSignature(String),
    #[error("replayed or out-of-order message from {signer}: nonce {got}, expected {expected}")]
    Nonce {
        signer: String,
        got: u64,
        expected: u64,
    },
    #[error("refused: {0}")]
    Refused(#[from] Refused),
    #[error("proxy opt-in refused: {0}")]
    Proxy(String),
}

/// Signs `message` as `signer` with its SVID key.
pub fn sign(key: &EcdsaKeyPair, signer: &str, nonce: u64, message: Message) -> SignedMessage {
    let body = Body {
        domain: DOMAIN.to_string(),
        signer: signer.to_string(),
        nonce,
        message,
    };
    let body = serde_json::to_string(&body).expect("a Body always serialises");
    let signature = key
        .sign(&SystemRandom::new(), body.as_bytes())
        .expect("ECDSA P-256 signing does not fail with a valid key");
    SignedMessage {
        body,
        signature: alloy_primitives::hex::encode(signature.as_ref()),
    }
}

/// The public key (uncompressed SEC1 point, as in the SVID's SubjectPublicKeyInfo).
pub fn public_key(key: &EcdsaKeyPair) -> Vec<u8> {
    key.public_key().as_ref().to_vec()
}

/// A fresh P-256 key pair (PKCS#8 DER), as the CA makes for an SVID.
pub fn generate_key() -> (EcdsaKeyPair, Vec<u8>) {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .expect("P-256 key generation");
    let der = pkcs8.as_ref().to_vec();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
        .expect("a generated PKCS#8 key parses");
    (key, der)
}

/// Reads an SVID key file (PKCS#8 PEM, P-256) as written by `x0tta6bl4 ca issue`.
pub fn key_from_pem(text: &str) -> Result<EcdsaKeyPair, String> {
    let key = rcgen::KeyPair::from_pem(text).map_err(|e| format!("not a PEM private key: {e}"))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der())
        .map_err(|_| "not an ECDSA P-256 key (SVID keys are P-256)".to_string())
}

/// A new P-256 key as PKCS#8 PEM.
pub fn generate_key_pem() -> Result<String, String> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| format!("key generation: {e}"))
}

/// An accepted message's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Applied {
    Proposed { proposal: u64 },
    Voted { proposal: u64, credits_used: u64 },
    Delegated,
    Undelegated,
    Canceled { proposal: u64 },
    ProxyOptedIn,
    ProxyOptedOut,
}

/// An operator's auto-proxy opt-in in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyOptIn {
    pub policy: ProxyPolicy,
    /// When it was accepted.
    pub since: u64,
    /// The signed [`Message::ProxyOptIn`], byte for byte.
    pub signed: SignedMessage,
}

/// What the proxy saw when it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyInputs {
    /// The followed delegate's ballot [against, for, abstain] (follow a delegate).
    pub delegate_ballot: Option<[u64; 3]>,
    /// The predictor and the proposal's features (follow the prediction).
    pub predictor: Option<Predictor>,
    pub features: Option<Features>,
}

/// One decision of the auto-proxy for one operator on one proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyRecord {
    pub proposal: u64,
    pub operator: String,
    pub at: u64,
    /// `for`, `against`, `abstain`, or `none` when the proxy refused.
    pub support: String,
    /// Votes cast (1) or 0 for a refusal.
    pub votes: u64,
    pub reason: String,
    pub inputs: ProxyInputs,
    /// The signed opt-in that authorised it.
    pub opt_in: SignedMessage,
}

/// Votes the auto-proxy casts for an operator (1 vote: 1 of the 100 voice credits).
pub const PROXY_VOTES: u64 = 1;

/// The engine behind signature checks: operators' public keys and nonces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub engine: Engine,
    /// Operator => public key (hex, uncompressed SEC1 P-256 point).
    keys: BTreeMap<String, String>,
    nonces: BTreeMap<String, u64>,
    /// Operator => its auto-proxy opt-in in force.
    #[serde(default)]
    proxies: BTreeMap<String, ProxyOptIn>,
    /// Every decision of the auto-proxy, in order.
    #[serde(default)]
    proxy_log: Vec<ProxyRecord>,
}

fn support_name(s: Support) -> &'static str {
    match s {
        Support::Against => "against",
        Support::For => "for",
        Support::Abstain => "abstain",
    }
}

impl Ledger {
    pub fn new(rules: Rules, admin: &str) -> Result<Self, Refused> {
        Ok(Ledger {
            engine: Engine::new(rules, admin)?,
            keys: BTreeMap::new(),
            nonces: BTreeMap::new(),
            proxies: BTreeMap::new(),
            proxy_log: Vec::new(),
        })
    }

    /// After deserialisation.
    pub fn reindex(&mut self) {
        self.engine.reindex();
    }

    /// Admits `operator` (the registrar's act) with the public key of its SVID.
    pub fn admit(
        &mut self,
        registrar: &str,
        operator: &str,
        public_key: &[u8],
        now: u64,
    ) -> Result<(), LedgerError> {
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(LedgerError::Malformed(format!(
                "public key of {operator}: expected an uncompressed P-256 point (65 bytes, 0x04...), got {} bytes",
                public_key.len()
            )));
        }
        self.engine.admit(registrar, operator, now)?;
        self.keys.insert(
            operator.to_string(),
            alloy_primitives::hex::encode(public_key),
        );
        Ok(())
    }

    /// The nonce the next message of `signer` must carry.
    pub fn next_nonce(&self, signer: &str) -> u64 {
        self.nonces.get(signer).copied().unwrap_or(0)
    }

    /// Checks the signature of `signed` against its signer's registered key; returns the
    /// body.
    pub fn verify(&self, signed: &SignedMessage) -> Result<Body, LedgerError> {
        let body: Body = serde_json::from_str(&signed.body)
            .map_err(|e| LedgerError::Malformed(format!("body: {e}")))?;
        if body.domain != DOMAIN {
            return Err(LedgerError::WrongDomain(body.domain));
        }
        if signed.signature.is_empty() {
            return Err(LedgerError::Unsigned(body.signer));
        }
        let key = self
            .keys
            .get(&body.signer)
            .ok_or_else(|| LedgerError::UnknownSigner(body.signer.clone()))?;
        let key = alloy_primitives::hex::decode(key)
            .map_err(|_| LedgerError::Malformed("stored key is not hex".into()))?;
        let signature = alloy_primitives::hex::decode(&signed.signature)
            .map_err(|_| LedgerError::BadSignature(body.signer.clone()))?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key)
            .verify(signed.body.as_bytes(), &signature)
            .map_err(|_| LedgerError::BadSignature(body.signer.clone()))?;
        Ok(body)
    }

    /// Verifies and applies one signed message at time `now`.
    pub fn apply(&mut self, signed: &SignedMessage, now: u64) -> Result<Applied, LedgerError> {
        let body = self.verify(signed)?;
        let expected = self.next_nonce(&body.signer);
        if body.nonce != expected {
            return Err(LedgerError::Nonce {
                signer: body.signer,
                got: body.nonce,
                expected,
            });
        }
        let who = body.signer.as_str();
        let applied = match body.message {
            Message::Propose {
                action,
                description,
            } => Applied::Proposed {
                proposal: self.engine.propose(who, action, &description, now)?,
            },
            Message::Vote {
                proposal,
                support,
                votes,
            } => Applied::Voted {
                proposal,
                credits_used: self
                    .engine
                    .cast_vote(who, proposal, support as u8, votes, now)?,
            },
            Message::Delegate { to } => {
                self.engine.delegate(who, &to, now)?;
                Applied::Delegated
            }
            Message::Undelegate => {
                self.engine.undelegate(who, now)?;
                Applied::Undelegated
            }
            Message::Cancel { proposal } => {
                self.engine.cancel(who, proposal, now)?;
                Applied::Canceled { proposal }
            }
            Message::ProxyOptIn { policy } => {
                self.check_policy(who, &policy)?;
                let opt_in = ProxyOptIn {
                    policy,
                    since: now,
                    signed: signed.clone(),
                };
                self.proxies.insert(who.to_string(), opt_in);
                Applied::ProxyOptedIn
            }
            Message::ProxyOptOut => {
                if self.proxies.remove(who).is_none() {
                    return Err(LedgerError::Proxy(format!("{who} has not opted in")));
                }
                Applied::ProxyOptedOut
            }
        };
        self.nonces.insert(body.signer, expected + 1);
        Ok(applied)
    }

    fn check_policy(&self, who: &str, policy: &ProxyPolicy) -> Result<(), LedgerError> {
        if !self.engine.is_operator(who) {
            return Err(Refused("registry: not an operator").into());
        }
        match policy {
            ProxyPolicy::FollowDelegate { delegate } if delegate == who => Err(LedgerError::Proxy(
                "an operator cannot follow itself: name another operator".into(),
            )),
            ProxyPolicy::FollowDelegate { delegate } if !self.engine.is_operator(delegate) => {
                Err(LedgerError::Proxy(format!(
                    "the followed delegate {delegate} is not an operator"
                )))
            }
            ProxyPolicy::FollowPrediction { threshold } if !(0.5..=1.0).contains(threshold) => {
                Err(LedgerError::Proxy(format!(
                    "threshold {threshold} is outside 0.5 ... 1 (the confidence of the predicted side)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The auto-proxy opt-ins in force, by operator.
    pub fn proxies(&self) -> &BTreeMap<String, ProxyOptIn> {
        &self.proxies
    }

    /// Every decision of the auto-proxy, in order.
    pub fn proxy_log(&self) -> &[ProxyRecord] {
        &self.proxy_log
    }

    /// The features of proposal `id` now: the sentiment of its description, its proposer's
    /// history over their closed earlier proposals, and the turnout and margin so far.
    pub fn features(&self, id: u64, now: u64) -> Result<Features, LedgerError> {
        let e = &self.engine;
        let p = e.proposal(id)?;
        let (mut made, mut won) = (0u32, 0u32);
        for earlier in e.proposals().iter().filter(|q| q.id < id) {
            let closed = now > earlier.vote_end && !earlier.canceled;
            if earlier.proposer == p.proposer && closed {
                let t = e.tally(earlier.id)?;
                made += 1;
                won += u32::from(t.for_votes > t.against);
            }
        }
        let t = e.tally(id)?;
        let cast = t.for_votes + t.against;
        Ok(Features {
            sentiment: crate::sentiment::score(&p.description).compound,
            proposer_history: (f64::from(won) + 1.0) / (f64::from(made) + 2.0),
            early_turnout: t.represented as f64 / t.eligible.max(1) as f64,
            early_margin: match cast {
                0 => 0.0,
                _ => (t.for_votes as f64 - t.against as f64) / cast as f64,
            },
        })
    }

    /// The auto-proxy on proposal `id` at `now` (anyone may run it): for every operator
    /// with an opt-in in force whose power is not cast yet (directly or through
    /// delegation), applies its policy, casts [`PROXY_VOTES`] vote on the chosen side or
    /// refuses, and records the decision. `predictor` serves the follow-the-prediction
    /// policies (without it they refuse). Returns the new records.
    pub fn run_proxy(
        &mut self,
        id: u64,
        predictor: Option<&Predictor>,
        now: u64,
    ) -> Result<Vec<ProxyRecord>, LedgerError> {
        if self.engine.state(id, now)? != ProposalState::Active {
            return Err(Refused("governance: vote outside the voting window").into());
        }
        let features = self.features(id, now)?;
        // On a copy: a refusal half way leaves the ledger as it was.
        let mut engine = self.engine.clone();
        let resolved = engine.resolve(id)?;
        let operators: Vec<String> = engine.operators().map(str::to_string).collect();
        let vote_start = engine.proposal(id)?.vote_start;
        let mut records = Vec::new();
        for (i, operator) in operators.iter().enumerate() {
            let Some(opt_in) = self.proxies.get(operator) else {
                continue;
            };
            // Not an operator at the snapshot (no power), or its power is cast already.
            if opt_in.since > now || resolved[i].is_some() {
                continue;
            }
            if !engine.was_operator_at(operator, vote_start) {
                continue;
            }
            let inputs = match &opt_in.policy {
                ProxyPolicy::FollowDelegate { delegate } => ProxyInputs {
                    delegate_ballot: Some(engine.ballot_of(id, delegate)?),
                    predictor: None,
                    features: None,
                },
                ProxyPolicy::FollowPrediction { .. } => ProxyInputs {
                    delegate_ballot: None,
                    predictor: predictor.cloned(),
                    features: Some(features),
                },
            };
            let decision = decide(&opt_in.policy, &inputs);
            let (support, votes) = match &decision {
                ProxyDecision::Vote { support, .. } => {
                    engine.cast_vote(operator, id, *support as u8, PROXY_VOTES, now)?;
                    (support_name(*support), PROXY_VOTES)
                }
                ProxyDecision::NoVote { .. } => ("none", 0),
            };
            records.push(ProxyRecord {
                proposal: id,
                operator: operator.clone(),
                at: now,
                support: support.to_string(),
                votes,
                reason: decision.reason().to_string(),
                inputs,
                opt_in: opt_in.signed.clone(),
            });
        }
        self.engine = engine;
        self.proxy_log.extend(records.iter().cloned());
        Ok(records)
    }

    /// Checks every record of the auto-proxy again (see the module's doc); returns, per
    /// record, why it does not hold.
    pub fn verify_proxy(&self) -> Vec<(usize, String)> {
        self.proxy_log
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.verify_record(r).err().map(|e| (i, e)))
            .collect()
    }

    fn verify_record(&self, r: &ProxyRecord) -> Result<(), String> {
        let body = self
            .verify(&r.opt_in)
            .map_err(|e| format!("the opt-in does not verify: {e}"))?;
        if body.signer != r.operator {
            return Err(format!(
                "the opt-in is signed by {}, not by {}",
                body.signer, r.operator
            ));
        }
        let Message::ProxyOptIn { policy } = body.message else {
            return Err("the signed message is not a proxy opt-in".into());
        };
        let p = self
            .engine
            .proposal(r.proposal)
            .map_err(|e| e.to_string())?;
        if let Some(f) = &r.inputs.features {
            let sentiment = crate::sentiment::score(&p.description).compound;
            if (sentiment - f.sentiment).abs() > 1e-9 {
                return Err(format!(
                    "recorded sentiment {:+.3}, but the proposal's text scores {sentiment:+.3}",
                    f.sentiment
                ));
            }
        }
        let decision = decide(&policy, &r.inputs);
        let support = match &decision {
            ProxyDecision::Vote { support, .. } => support_name(*support),
            ProxyDecision::NoVote { .. } => "none",
        };
        if support != r.support || decision.reason() != r.reason {
            return Err(format!(
                "the policy gives `{support}` ({}) from the recorded inputs, not `{}`",
                decision.reason(),
                r.support
            ));
        }
        if let Some(side) = Support::parse(&r.support) {
            let ballot = self
                .engine
                .ballot_of(r.proposal, &r.operator)
                .map_err(|e| e.to_string())?;
            if ballot[side as usize] < r.votes {
                return Err(format!(
                    "the ballot of {} holds {} `{}` votes, fewer than the proxy cast",
                    r.operator, ballot[side as usize], r.support
                ));
            }
        }
        Ok(())
    }

    /// Queue and execute need no signature (anyone may, as on chain).
    pub fn queue(&mut self, proposal: u64, now: u64) -> Result<u64, LedgerError> {
        Ok(self.engine.queue(proposal, now)?)
    }

    pub fn execute(&mut self, proposal: u64, now: u64) -> Result<Effect, LedgerError> {
        Ok(self.engine.execute(proposal, now)?)
    }
}

/// The policy applied to recorded inputs (the same in [`Ledger::run_proxy`] and
/// [`Ledger::verify_proxy`]).
fn decide(policy: &ProxyPolicy, inputs: &ProxyInputs) -> ProxyDecision {
    predict::decide(
        policy,
        ProxyContext {
            already_cast: false,
            delegate_ballot: inputs.delegate_ballot,
            prediction: inputs.predictor.as_ref().zip(inputs.features),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Ledger, Vec<EcdsaKeyPair>) {
        let rules = Rules {
            voting_delay: 0,
            voting_period: 100,
            timelock_delay: 10,
            grace_period: 100,
            quorum_percent: 50,
        };
        let mut ledger = Ledger::new(rules, "admin").unwrap();
        let mut keys = Vec::new();
        for i in 0..3 {
            let (key, _) = generate_key();
            ledger
                .admit("admin", &format!("op{i}"), &public_key(&key), 1)
                .unwrap();
            keys.push(key);
        }
        (ledger, keys)
    }

    fn ban() -> Message {
        Message::Propose {
            action: Action::NodeBan {
                spiffe_id: "spiffe://mesh.test/node/7".into(),
                reason: "flooding".into(),
            },
            description: "ban node 7".into(),
        }
    }

    #[test]
    fn signed_messages_apply_and_bad_ones_change_nothing() {
        let (mut ledger, keys) = setup();
        let p = ledger.apply(&sign(&keys[0], "op0", 0, ban()), 10).unwrap();
        assert_eq!(p, Applied::Proposed { proposal: 1 });
        let vote = |n| Message::Vote {
            proposal: 1,
            support: Support::For,
            votes: n,
        };
        let before = ledger.clone();
        // unsigned
        let mut unsigned = sign(&keys[1], "op1", 0, vote(3));
        unsigned.signature.clear();
        assert_eq!(
            ledger.apply(&unsigned, 20),
            Err(LedgerError::Unsigned("op1".into()))
        );
        // signed by op2's key but claiming to be op1
        assert_eq!(
            ledger.apply(&sign(&keys[2], "op1", 0, vote(3)), 20),
            Err(LedgerError::BadSignature("op1".into()))
        );
        // body changed after signing
        let mut tampered = sign(&keys[1], "op1", 0, vote(3));
        tampered.body = tampered.body.replace("\"votes\":3", "\"votes\":9");
        assert_eq!(
            ledger.apply(&tampered, 20),
            Err(LedgerError::BadSignature("op1".into()))
        );
        // unknown signer
        let (stranger, _) = generate_key();
        assert_eq!(
            ledger.apply(&sign(&stranger, "op9", 0, vote(1)), 20),
            Err(LedgerError::UnknownSigner("op9".into()))
        );
        // beyond the credits: a refusal with the contract's reason
        assert_eq!(
            ledger.apply(&sign(&keys[1], "op1", 0, vote(11)), 20),
            Err(LedgerError::Refused(Refused(
                "qv: insufficient voice credits"
            )))
        );
        assert_eq!(ledger, before);
        let good = sign(&keys[1], "op1", 0, vote(3));
        assert_eq!(
            ledger.apply(&good, 20).unwrap(),
            Applied::Voted {
                proposal: 1,
                credits_used: 9
            }
        );
        // replay
        assert!(matches!(
            ledger.apply(&good, 21),
            Err(LedgerError::Nonce { expected: 1, .. })
        ));
        assert_eq!(ledger.engine.tally(1).unwrap().for_votes, 3);
    }

    #[test]
    fn state_round_trips_through_json() {
        let (mut ledger, keys) = setup();
        ledger.apply(&sign(&keys[0], "op0", 0, ban()), 10).unwrap();
        let text = serde_json::to_string(&ledger).unwrap();
        let mut back: Ledger = serde_json::from_str(&text).unwrap();
        back.reindex();
        assert_eq!(back, ledger);
        assert!(back.engine.is_operator("op2"));
    }

    fn predictor() -> Predictor {
        // P(for wins) rises with the early margin.
        Predictor {
            weights: [0.0, 0.0, 0.0, 4.0],
            bias: 0.0,
            mean: [0.0; 4],
            std: [1.0; 4],
        }
    }

    #[test]
    fn proxy_opt_ins_are_signed_votes_are_recorded_and_verifiable() {
        let (mut ledger, keys) = setup();
        ledger.apply(&sign(&keys[0], "op0", 0, ban()), 10).unwrap();
        let follow = |delegate: &str| Message::ProxyOptIn {
            policy: ProxyPolicy::FollowDelegate {
                delegate: delegate.into(),
            },
        };
        // Bad opt-ins are refused with a reason and change nothing.
        let before = ledger.clone();
        let mut unsigned = sign(&keys[1], "op1", 0, follow("op0"));
        unsigned.signature.clear();
        assert_eq!(
            ledger.apply(&unsigned, 11),
            Err(LedgerError::Unsigned("op1".into()))
        );
        assert_eq!(
            ledger.apply(&sign(&keys[2], "op1", 0, follow("op0")), 11),
            Err(LedgerError::BadSignature("op1".into()))
        );
        let e = ledger
            .apply(&sign(&keys[1], "op1", 0, follow("op1")), 11)
            .unwrap_err();
        assert!(e.to_string().contains("cannot follow itself"), "{e}");
        let e = ledger
            .apply(&sign(&keys[1], "op1", 0, follow("op9")), 11)
            .unwrap_err();
        assert!(e.to_string().contains("not an operator"), "{e}");
        let bad_threshold = Message::ProxyOptIn {
            policy: ProxyPolicy::FollowPrediction { threshold: 0.3 },
        };
        let e = ledger
            .apply(&sign(&keys[2], "op2", 0, bad_threshold), 11)
            .unwrap_err();
        assert!(e.to_string().contains("outside 0.5"), "{e}");
        assert_eq!(ledger, before);
        // A wrongly signed opt-in never lets the proxy vote: nothing for op1.
        assert!(ledger.run_proxy(1, None, 12).unwrap().is_empty());
        assert_eq!(ledger.engine.tally(1).unwrap().represented, 0);

        // op1 follows op0; op2 follows the prediction above 0.9.
        assert_eq!(
            ledger
                .apply(&sign(&keys[1], "op1", 0, follow("op0")), 11)
                .unwrap(),
            Applied::ProxyOptedIn
        );
        let prediction = Message::ProxyOptIn {
            policy: ProxyPolicy::FollowPrediction { threshold: 0.9 },
        };
        ledger
            .apply(&sign(&keys[2], "op2", 0, prediction), 11)
            .unwrap();
        // op0 has not voted and there is no margin yet: both refuse, with their reasons.
        let first = ledger.run_proxy(1, Some(&predictor()), 12).unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|r| r.support == "none" && r.votes == 0));
        assert!(first[0].reason.contains("has not voted"), "{first:?}");
        assert!(first[1].reason.contains("below the threshold"), "{first:?}");
        assert_eq!(ledger.engine.tally(1).unwrap().represented, 0);
        // op0 votes 2 for: op1's proxy follows; the margin +1 gives P = 0.98 >= 0.9.
        let vote = Message::Vote {
            proposal: 1,
            support: Support::For,
            votes: 2,
        };
        ledger.apply(&sign(&keys[0], "op0", 1, vote), 13).unwrap();
        let second = ledger.run_proxy(1, Some(&predictor()), 14).unwrap();
        assert_eq!(
            second
                .iter()
                .map(|r| (r.operator.as_str(), r.support.as_str(), r.votes))
                .collect::<Vec<_>>(),
            [("op1", "for", 1), ("op2", "for", 1)]
        );
        assert!(second[0].reason.contains("follows delegate op0"));
        assert!(second[1].reason.contains("confidence 0.98"));
        let t = ledger.engine.tally(1).unwrap();
        assert_eq!((t.for_votes, t.represented), (4, 3));
        // Their power is cast now: a third run does nothing.
        assert!(ledger
            .run_proxy(1, Some(&predictor()), 15)
            .unwrap()
            .is_empty());
        assert_eq!(ledger.proxy_log().len(), 4);
        assert_eq!(ledger.verify_proxy(), vec![]);

        // Anyone checking the ledger sees a forged record.
        let mut forged = ledger.clone();
        forged.proxy_log[2].support = "against".into();
        assert!(forged.verify_proxy()[0]
            .1
            .contains("the policy gives `for`"));
        let mut forged = ledger.clone();
        forged.proxy_log[2].opt_in = sign(&keys[2], "op1", 9, follow("op0"));
        assert!(forged.verify_proxy()[0].1.contains("does not verify"));
        let mut forged = ledger.clone();
        forged.proxy_log[3]
            .inputs
            .features
            .as_mut()
            .unwrap()
            .sentiment = 0.9;
        assert!(forged.verify_proxy()[0].1.contains("recorded sentiment"));

        // Revoked: the proxy stays out of the next proposal; an opt-out without an opt-in
        // is refused.
        assert_eq!(
            ledger
                .apply(&sign(&keys[1], "op1", 1, Message::ProxyOptOut), 16)
                .unwrap(),
            Applied::ProxyOptedOut
        );
        let e = ledger
            .apply(&sign(&keys[1], "op1", 2, Message::ProxyOptOut), 16)
            .unwrap_err();
        assert!(e.to_string().contains("has not opted in"), "{e}");
        assert!(!ledger.proxies().contains_key("op1"));
        let text = serde_json::to_string(&ledger).unwrap();
        let mut back: Ledger = serde_json::from_str(&text).unwrap();
        back.reindex();
        assert_eq!(back, ledger);
        assert_eq!(back.verify_proxy(), vec![]);
        // outside the voting window
        assert_eq!(
            ledger.run_proxy(1, None, 1_000),
            Err(LedgerError::Refused(Refused(
                "governance: vote outside the voting window"
            )))
        );
    }
}
