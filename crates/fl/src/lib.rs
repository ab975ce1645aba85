//! Federated learning for x0tta6bl4: nodes train on their own data and merge their
//! models without pooling the data.
//!
//! Like `x0tta6bl4-proto`, the protocol core does no I/O: the [`Coordinator`] and the
//! [`Participant`] are state machines that take time ([`Instant`]) and seeds as
//! arguments, bytes through `handle_message(now, from, bytes)` and
//! `handle_timeout(now)`, and give bytes, deadlines and events back through
//! `poll_transmit`, `poll_timeout` and `poll_event`. The in-process driver of
//! [`bench`] runs them for `x0tta6bl4 fl bench`; [`mesh`] wraps them, with a committee
//! replica, for a federation of real nodes (an envelope for the mesh's FL channel 2 with
//! fragments and the committee's messages, every round's result committed before any
//! node adopts its model, the coordinator handover and rollbacks themselves committed decisions, training
//! handed to the driver's thread), driven by `x0tta6bl4 fl agent` next to each node
//! daemon; the twin can drive the same machines.
//!
//! A round: the coordinator samples participants with its seeded RNG, sends each the
//! global model in chunks ([`wire`]), collects updates (model deltas) until the
//! deadline, refuses bad ones with a counted reason ([`Refusal`]: wrong shape, NaN or
//! infinite values, not sampled, replayed from another round, duplicate, malformed,
//! bad signature), aggregates the rest with a robust rule ([`aggregate`]), applies
//! client-level differential privacy when configured ([`dp`]) and adopts the result
//! as the next global model, optionally through a server optimizer with learning rate
//! and momentum ([`ServerOptimizer`], FedAvgM). Participants train with candle
//! ([`model`]: minibatch SGD, optional momentum, several local epochs), may compress
//! their update ([`compress`]) and may be Byzantine ([`attack`]).
//!
//! Each adopted round's result can be committed by a BFT committee ([`committee`]: a
//! sans-IO PBFT replica whose 3f+1 validators are drawn per epoch from the previous
//! epoch's last block, messages signed through `x0tta6bl4_proto::Authenticator`) and
//! appended to a hash-chained, crash-safe audit trail of blocks with their quorum
//! certificates, models stored by content hash ([`audit`]). [`committee_sim`] runs the
//! committee deterministically with Byzantine validators, loss, delay and partitions,
//! and in process for the CLI; [`keys`] holds ECDSA P-256 keys; [`AuthSigner`] signs
//! FL frames with any `Authenticator` (the SVID one in the daemon).
//!
//! Written by hand, because no library does it in Rust: the robust aggregation rules
//! (checked against Flower's own functions), the RDP accountant (checked against
//! Google's `dp-accounting`), top-k with error feedback, the wire format and the
//! momentum step (candle-nn's `SGD` has none). Tensors and gradients are candle's. PBFT is written by hand too: Malachite's core consensus
//! builds here and is sans-IO, but wiring its context did not fit this piece (see
//! [`committee`] and docs/fl.md).
//!
//! [`linkpredict`] is the link-failure predictor of the healing loop: a logistic
//! regression over a link's probe window, trained with [`model`] and merged with FedAvg
//! across nodes, shipped as a file with a SHA-256 check (docs/prediction.md). Its
//! inference (a dot product and a sigmoid over 6 features) is written out by hand.
#![forbid(unsafe_code)]
#![deny(unused_must_use)]
#![warn(missing_docs)]

pub mod aggregate;
pub mod attack;
pub mod audit;
pub mod bench;
pub mod committee;
pub mod committee_sim;
pub mod compress;
pub mod coordinator;
pub mod data;
pub mod dp;
mod hashed;
pub mod keys;
pub mod linkpredict;
pub mod mesh;
pub mod model;
pub mod participant;
pub mod ppo;
pub mod wire;

pub use aggregate::{Aggregator, AggregatorKind, Update};
pub use attack::{AttackKind, AttackParams};
pub use coordinator::{
    Coordinator, CoordinatorConfig, Event, Refusal, RoundSummary, ServerOptimizer,
};
pub use participant::{
    Behaviour, CandleTrainer, LocalTrainer, Participant, ParticipantEvent, TrainJob,
};
pub use x0tta6bl4_proto::{Authenticator, Instant, NodeName};

/// A frame to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination node.
    pub to: NodeName,
    /// The frame.
    pub bytes: Vec<u8>,
}

/// Signs outgoing frames and verifies incoming ones: the hook for SVID signatures.
///
/// The mesh driver will implement it with the node's SVID key and the trust bundle
/// (as `x0tta6bl4_proto::Authenticator` does for link-state); the in-process benchmark
/// uses [`NoSignatures`]. A frame whose signature does not verify is refused and
/// counted ([`Refusal::BadSignature`]).
pub trait Signer: Send + Sync {
    /// The signature over `body` (the frame without its signature).
    fn sign(&self, body: &[u8]) -> Vec<u8>;
    /// Check that `signature` over `body` was made by `from`.
    fn verify(&self, from: &NodeName, body: &[u8], signature: &[u8]) -> Result<(), String>;
}

/// No signatures: frames carry an empty signature and only empty ones are accepted.
/// For in-process runs where every party is in one address space.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSignatures;

impl Signer for NoSignatures {
    fn sign(&self, _body: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn verify(&self, _from: &NodeName, _body: &[u8], signature: &[u8]) -> Result<(), String> {
        if signature.is_empty() {
            Ok(())
        } else {
            Err("a signature where none is expected".into())
        }
    }
}

/// Frame signatures with the node's [`Authenticator`] (its SVID key in the daemon,
/// ECDSA P-256), checked against every peer's credential (its SVID certificate). An
/// unsigned frame, or one signed by another key, is refused
/// ([`Refusal::BadSignature`]).
pub struct AuthSigner {
    auth: std::sync::Arc<dyn Authenticator>,
    credentials: std::collections::BTreeMap<NodeName, Vec<u8>>,
}

impl AuthSigner {
    /// Sign with `auth`; verify a sender with its credential in `credentials`.
    pub fn new(
        auth: std::sync::Arc<dyn Authenticator>,
        credentials: std::collections::BTreeMap<NodeName, Vec<u8>>,
    ) -> Self {
        AuthSigner { auth, credentials }
    }
}

impl Signer for AuthSigner {
    fn sign(&self, body: &[u8]) -> Vec<u8> {
        self.auth.sign(body)
    }

    fn verify(&self, from: &NodeName, body: &[u8], signature: &[u8]) -> Result<(), String> {
        if signature.is_empty() {
            return Err(format!("unsigned frame from {from}"));
        }
        let credential = self
            .credentials
            .get(from)
            .ok_or_else(|| format!("no credential known for {from}"))?;
        self.auth
            .verify(from, credential, body, signature)
            .map_err(|e| e.to_string())
    }
}
