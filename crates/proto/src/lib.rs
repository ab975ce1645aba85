//! The sans-IO protocol core of x0tta6bl4.
//!
//! Key design decision: this crate does no I/O. It owns no socket, thread, clock,
//! global or unseeded randomness. Time is an argument ([`Instant`]), randomness comes
//! from a seed in [`Config`], bytes come in through `handle_*` methods and leave through
//! `poll_*` methods. The same code therefore runs inside the node daemon (tokio + quinn
//! and a real clock), inside the digital twin (a discrete-event clock driving thousands
//! of instances) and inside tests (a handful of instances stepped by hand), and a seed
//! that breaks an invariant in the twin is a reproducible bug report.
//!
//! The entry point is [`Node`]; its documentation gives the call order a driver must
//! follow. [`measure`] holds the data-plane MTTR statistics shared by the demo, the twin
//! and the chaos lab, so that all three compute the same numbers the same way.
//!
//! Besides link-state, nodes flood signed address records ([`AddressRecord`], wire kind
//! 9): where each node's endpoint listens, so that a peer that moved is redialed where
//! the mesh says it is ([`Node::set_addresses`], [`Node::learnt_addresses`]).
#![forbid(unsafe_code)]
#![deny(unused_must_use)]
#![warn(missing_docs)]

mod addresses;
pub mod byzantine;
mod config;
mod crypto;
mod hash;
mod heal;
mod lsdb;
pub mod measure;
mod name;
mod neighbour;
mod node;
mod replay;
mod revocations;
mod rng;
mod route;
mod time;
pub mod wire;

pub use byzantine::ByzantineSender;
pub use config::{Config, ConfigError, LinkCost};
pub use crypto::{AuthError, Authenticator, SimAuthenticator};
pub use hash::{FastHasher, FastMap};
pub use heal::{Decision, DecisionKind, HealingConfig};
pub use lsdb::{InstallOutcome, LinkStateDb, LinkStateSnapshot, SlotNames};
pub use name::{NameError, NodeName};
pub use neighbour::{DownReason, NeighbourState, NeighbourView};
pub use node::{
    Delivery, Destination, DropReason, Event, LinkFeatures, Node, RevokeOutcome, SendError, Stats,
    Transmit,
};
pub use rng::Rng;
pub use route::{compute_routes, Route, RoutingTable};
pub use time::Instant;
pub use wire::{AddressRecord, Lsa, LsaLink, Message, SignedLsa, WireError};
