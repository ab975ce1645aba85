//! Snapshot-style gasless governance: operators sign proposals, votes and delegations with
//! their SVID keys (ECDSA P-256 with SHA-256, ASN.1 DER signatures, via aws-lc-rs) and the
//! [`Ledger`] verifies every message before it reaches the [`Engine`].
//!
//! A message is a JSON body `{domain, signer, nonce, message}` and a signature over exactly
//! those bytes. The domain string separates these signatures from any other use of the key;
//! the nonce (the signer's count of accepted messages) makes a replayed or reordered
//! message fail. A refused message changes nothing.

use std::collections::BTreeMap;

pub use aws_lc_rs::signature::EcdsaKeyPair;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};

use crate::engine::{Action, Effect, Engine, Refused, Rules, Support};

/// Signatures made for this governance only.
pub const DOMAIN: &str = "x0tta6bl4-dao/v1";

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The signed part of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The engine behind signature checks: operators' public keys and nonces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub engine: Engine,
    /// Operator => public key (hex, uncompressed SEC1 P-256 point).
    keys: BTreeMap<String, String>,
    nonces: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn new(rules: Rules, admin: &str) -> Result<Self, Refused> {
        Ok(Ledger {
            engine: Engine::new(rules, admin)?,
            keys: BTreeMap::new(),
            nonces: BTreeMap::new(),
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

    /// Verifies and applies one signed message at time `now`.
    pub fn apply(&mut self, signed: &SignedMessage, now: u64) -> Result<Applied, LedgerError> {
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
        };
        self.nonces.insert(body.signer, expected + 1);
        Ok(applied)
    }

    /// Queue and execute need no signature (anyone may, as on chain).
    pub fn queue(&mut self, proposal: u64, now: u64) -> Result<u64, LedgerError> {
        Ok(self.engine.queue(proposal, now)?)
    }

    pub fn execute(&mut self, proposal: u64, now: u64) -> Result<Effect, LedgerError> {
        Ok(self.engine.execute(proposal, now)?)
    }
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
}
