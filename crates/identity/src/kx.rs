//! Key-exchange policy and the record of which group a handshake negotiated.
//!
//! quinn 0.11 does not expose the rustls connection, so the negotiated group cannot be
//! asked for after the handshake. Instead every connection gets its own TLS
//! configuration whose key-exchange groups are the aws-lc-rs provider's, each wrapped in
//! [`RecordingGroup`]: the wrapper forwards to the real group and writes the group that
//! completed into the connection's [`KxRecord`]. The daemon keeps the record with the
//! connection (that is the key) and reads it once the handshake is done.
//!
//! rustls wants `&'static` groups, so the wrappers are leaked; a released record returns
//! its set of wrappers to a pool, so memory is bounded by the peak number of concurrent
//! handshakes, not by their total.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::{
    ActiveKeyExchange, CompletedKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup,
};
use rustls::{NamedGroup, ProtocolVersion};
use serde::{Deserialize, Serialize};

/// Which key-exchange groups links may use (`[identity] kx`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KxMode {
    /// Offer and prefer the hybrid post-quantum group X25519MLKEM768; fall back to
    /// classical X25519 only for a peer that lacks it (logged as a warning).
    #[default]
    Hybrid,
    /// Also accept the classical NIST groups P-256 and P-384, for interoperability;
    /// X25519MLKEM768 is still preferred.
    ClassicalAllowed,
    /// Post-quantum groups only (X25519MLKEM768, SecP256r1MLKEM768, MLKEM768): a peer
    /// that offers only classical groups fails the handshake.
    StrictPq,
}

impl KxMode {
    /// Every mode, in documentation order.
    pub const ALL: [KxMode; 3] = [KxMode::Hybrid, KxMode::ClassicalAllowed, KxMode::StrictPq];

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            KxMode::Hybrid => "hybrid",
            KxMode::ClassicalAllowed => "classical-allowed",
            KxMode::StrictPq => "strict-pq",
        }
    }

    /// The provider's groups this mode allows, most preferred first.
    pub(crate) fn groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            KxMode::Hybrid => vec![kx_group::X25519MLKEM768, kx_group::X25519],
            KxMode::ClassicalAllowed => vec![
                kx_group::X25519MLKEM768,
                kx_group::X25519,
                kx_group::SECP256R1,
                kx_group::SECP384R1,
            ],
            KxMode::StrictPq => vec![
                kx_group::X25519MLKEM768,
                kx_group::SECP256R1MLKEM768,
                kx_group::MLKEM768,
            ],
        }
    }
}

impl fmt::Display for KxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KxMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        KxMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| {
                format!("{text:?} is not a key-exchange mode: use \"hybrid\", \"classical-allowed\" or \"strict-pq\"")
            })
    }
}

/// Whether a negotiated group (as [`KxRecord::group`] names it) resists a quantum
/// adversary (hybrid or pure ML-KEM).
pub fn is_post_quantum_group(group: &str) -> bool {
    group.contains("MLKEM")
}

/// Recording slots kept for reuse; beyond this, released slots are dropped (their
/// leaked groups stay allocated, so memory is bounded by the peak of concurrent
/// handshakes, not by their total).
const POOL_SLOTS_MAX: usize = 4096;

/// One set of recording groups for one mode, and the cell they record into. Leaked
/// once (rustls wants `&'static` groups), then reused through [`POOL`].
struct Slot {
    mode: KxMode,
    groups: Vec<&'static dyn SupportedKxGroup>,
    cell: &'static Mutex<Option<NamedGroup>>,
}

static POOL: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

impl Slot {
    fn take(mode: KxMode) -> Slot {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = pool.iter().position(|slot| slot.mode == mode) {
            return pool.swap_remove(index);
        }
        drop(pool);
        let cell: &'static Mutex<Option<NamedGroup>> = Box::leak(Box::new(Mutex::new(None)));
        let groups = mode
            .groups()
            .into_iter()
            .map(|inner| {
                let group: &'static dyn SupportedKxGroup =
                    Box::leak(Box::new(RecordingGroup { inner, cell }));
                group
            })
            .collect();
        Slot { mode, groups, cell }
    }
}

/// The key-exchange group one connection negotiated, filled in during its handshake.
/// Cheap to clone; clones share the record. Read it once the handshake completed and
/// then drop it: its recording slot goes back to a pool for the next handshake.
#[derive(Clone, Debug)]
pub struct KxRecord {
    lease: Arc<Lease>,
}

struct Lease {
    slot: Option<Slot>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        *slot.cell.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_SLOTS_MAX {
            pool.push(slot);
        }
    }
}

impl KxRecord {
    fn new(mode: KxMode) -> KxRecord {
        let slot = Slot::take(mode);
        *slot.cell.lock().unwrap_or_else(PoisonError::into_inner) = None;
        KxRecord {
            lease: Arc::new(Lease { slot: Some(slot) }),
        }
    }

    /// The negotiated group's name (`X25519MLKEM768`, `X25519`, `secp256r1`, ...), once
    /// the key exchange completed.
    pub fn group(&self) -> Option<String> {
        let slot = self.lease.slot.as_ref()?;
        let group = *slot.cell.lock().unwrap_or_else(PoisonError::into_inner);
        group.map(group_name)
    }
}

/// The IANA name of a group, as the metrics and the API show it.
fn group_name(group: NamedGroup) -> String {
    match group {
        NamedGroup::X25519MLKEM768 => "X25519MLKEM768".into(),
        NamedGroup::secp256r1MLKEM768 => "SecP256r1MLKEM768".into(),
        NamedGroup::MLKEM768 => "MLKEM768".into(),
        other => format!("{other:?}"),
    }
}

/// The aws-lc-rs provider restricted to `mode`'s groups, recording into a new
/// [`KxRecord`].
pub(crate) fn recording_provider(mode: KxMode) -> (CryptoProvider, KxRecord) {
    let record = KxRecord::new(mode);
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = record
        .lease
        .slot
        .as_ref()
        .map(|slot| slot.groups.clone())
        .unwrap_or_default();
    (provider, record)
}

/// A provider group that records, in its slot's cell, that it completed.
struct RecordingGroup {
    inner: &'static dyn SupportedKxGroup,
    cell: &'static Mutex<Option<NamedGroup>>,
}

fn record(cell: &Mutex<Option<NamedGroup>>, group: NamedGroup) {
    *cell.lock().unwrap_or_else(PoisonError::into_inner) = Some(group);
}

impl fmt::Debug for RecordingGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingGroup")
            .field("group", &self.inner.name())
            .finish()
    }
}

impl SupportedKxGroup for RecordingGroup {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        Ok(Box::new(RecordingExchange {
            inner: self.inner.start()?,
            cell: self.cell,
        }))
    }

    fn start_and_complete(&self, peer: &[u8]) -> Result<CompletedKeyExchange, rustls::Error> {
        let completed = self.inner.start_and_complete(peer)?;
        record(self.cell, completed.group);
        Ok(completed)
    }

    fn name(&self) -> NamedGroup {
        self.inner.name()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        self.inner.usable_for_version(version)
    }
}

/// A started key exchange that records its group (or its hybrid's classical component,
/// when the server chose that) on completion.
struct RecordingExchange {
    inner: Box<dyn ActiveKeyExchange>,
    cell: &'static Mutex<Option<NamedGroup>>,
}

impl ActiveKeyExchange for RecordingExchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let group = self.inner.group();
        let secret = self.inner.complete(peer)?;
        record(self.cell, group);
        Ok(secret)
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        self.inner.hybrid_component()
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        peer: &[u8],
    ) -> Result<SharedSecret, rustls::Error> {
        let group = self.inner.hybrid_component().map(|(group, _)| group);
        let secret = self.inner.complete_hybrid_component(peer)?;
        if let Some(group) = group {
            record(self.cell, group);
        }
        Ok(secret)
    }

    fn pub_key(&self) -> &[u8] {
        self.inner.pub_key()
    }

    fn group(&self) -> NamedGroup {
        self.inner.group()
    }
}
