//! The link-state database: the newest verified advertisement of every origin.
//!
//! Layout (chosen for the digital twin, which holds one database per simulated node,
//! so that memory grows with the mesh squared): every name the database has seen, as
//! origin or as neighbour, gets a small integer *slot* from a [`SlotNames`] table, and
//! entries live in a vector indexed by slot. The table is shared (`Arc`, copy on
//! write): a [`LinkStateSnapshot`] hands one table to many databases, so ten thousand
//! simulated nodes hold one copy of the names, one copy of every advertisement and one
//! copy of every advertisement's links resolved to slots, plus 32 bytes per entry of
//! their own. A database that meets a name its table lacks copies the table first.

use std::sync::Arc;

use crate::hash::FastMap;
use crate::name::NodeName;
use crate::time::Instant;
use crate::wire::SignedLsa;

/// An advertisement's links as (neighbour slot, cost), sorted by slot.
pub(crate) type Adjacency = Arc<[(u32, u32)]>;

/// Origins changed since the routes were last computed from a database, at most this
/// many; beyond it a full computation is cheaper than the incremental one.
const CHANGES_MAX: usize = 64;

/// What changed in a database since [`LinkStateDb::take_changes`] last ran: the input
/// of the incremental route computation (`route::update_routes`).
#[derive(Clone, Debug)]
pub(crate) struct Changes {
    /// Slots were reassigned (or too much changed): routes must be computed afresh.
    pub(crate) rebuilt: bool,
    /// Each changed origin's slot, with the links it advertised before its first
    /// change (`None`: it had no entry).
    pub(crate) origins: Vec<(u32, Option<Adjacency>)>,
}

impl Changes {
    fn note(&mut self, slot: u32, before: Option<Adjacency>) {
        if self.rebuilt || self.origins.iter().any(|&(s, _)| s == slot) {
            return;
        }
        if self.origins.len() >= CHANGES_MAX {
            self.all();
            return;
        }
        self.origins.push((slot, before));
    }

    fn all(&mut self) {
        self.rebuilt = true;
        self.origins.clear();
    }
}

/// Slot ↔ name, and the slots in name order. Append-only until compacted.
#[derive(Clone, Debug, Default)]
pub struct SlotNames {
    names: Vec<NodeName>,
    index: FastMap<NodeName, u32>,
    /// Every slot, in name order (route tables and digests come out sorted).
    sorted: Vec<u32>,
    /// Whether slot order is name order (so slots compare as their names do).
    slot_order_is_name_order: bool,
}

impl SlotNames {
    /// A table of `names` (duplicates ignored, slots in name order) to share among the
    /// databases of many nodes of one mesh ([`crate::Node::share_slot_names`]).
    pub fn shared(names: Vec<NodeName>) -> Arc<SlotNames> {
        Arc::new(SlotNames::of(names))
    }

    /// A table of `names` (duplicates ignored), slots given in name order.
    fn of(mut names: Vec<NodeName>) -> SlotNames {
        names.sort();
        names.dedup();
        let index = names
            .iter()
            .enumerate()
            .map(|(slot, name)| (name.clone(), slot as u32))
            .collect();
        let sorted = (0..names.len() as u32).collect();
        SlotNames {
            names,
            index,
            sorted,
            slot_order_is_name_order: true,
        }
    }

    fn get(&self, name: &NodeName) -> Option<u32> {
        self.index.get(name).copied()
    }

    fn push(&mut self, name: &NodeName) -> u32 {
        debug_assert!(self.get(name).is_none());
        let slot = self.names.len() as u32;
        let last = self.names.last();
        self.slot_order_is_name_order = self.names.is_empty()
            || (self.slot_order_is_name_order && last.is_some_and(|last| last < name));
        self.index.insert(name.clone(), slot);
        self.names.push(name.clone());
        let at = self
            .sorted
            .binary_search_by(|&s| self.names[s as usize].cmp(name))
            .unwrap_or_else(|at| at);
        self.sorted.insert(at, slot);
        slot
    }

    /// The name of `slot`.
    pub(crate) fn name(&self, slot: u32) -> &NodeName {
        &self.names[slot as usize]
    }

    /// The slot of `name`, if it has one.
    pub(crate) fn slot(&self, name: &NodeName) -> Option<u32> {
        self.get(name)
    }

    /// Each slot's position in name order, or `None` when that is the slot itself.
    pub(crate) fn ranks(&self) -> Option<Vec<u32>> {
        if self.slot_order_is_name_order {
            return None;
        }
        let mut rank = vec![0; self.names.len()];
        for (position, &slot) in self.sorted.iter().enumerate() {
            rank[slot as usize] = position as u32;
        }
        Some(rank)
    }

    /// Every slot, in name order.
    pub(crate) fn sorted(&self) -> &[u32] {
        &self.sorted
    }

    /// Number of slots handed out.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// One installed advertisement.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The advertisement (shared with every copy in flight).
    pub lsa: Arc<SignedLsa>,
    /// When it ages out unless refreshed.
    pub expires_at: Instant,
    /// The advertised links as (neighbour slot, cost), sorted by slot: resolved once at
    /// install, so route computations need no name lookups. Shared between databases
    /// that share their slot table.
    pub(crate) adjacency: Arc<[(u32, u32)]>,
}

/// The result of offering an advertisement to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallOutcome {
    /// It was newer (or first of its origin) and is now installed.
    Installed,
    /// The database holds the same sequence number already.
    Duplicate,
    /// The database holds a newer one (its sequence number is given).
    Stale(u64),
    /// A new origin, but the database is at its size limit.
    Full,
}

/// Newest advertisement per origin, bounded in size.
///
/// Invariant: an origin's installed sequence number never decreases while its entry
/// lives.
#[derive(Clone, Debug)]
pub struct LinkStateDb {
    names: Arc<SlotNames>,
    /// By slot; `None` for names only seen as neighbours (or removed).
    entries: Vec<Option<Entry>>,
    len: usize,
    entries_max: usize,
    /// Changes since the routes were last computed.
    changes: Changes,
}

/// Advertisements to install in many databases at once (state transfer, see
/// `Node::handle_link_state_snapshot`), with their slot table and resolved links built
/// once and shared by every database that takes them.
#[derive(Clone, Debug)]
pub struct LinkStateSnapshot {
    names: Arc<SlotNames>,
    /// (origin slot, advertisement, its links resolved against `names`), in origin
    /// name order.
    lsas: Vec<(u32, Arc<SignedLsa>, Adjacency)>,
}

impl LinkStateSnapshot {
    /// A snapshot of `lsas`; of several advertisements of one origin, the one with the
    /// highest sequence number is kept. Nothing is verified here: every database that
    /// takes the snapshot verifies each advertisement itself.
    pub fn new(lsas: impl IntoIterator<Item = Arc<SignedLsa>>) -> Self {
        let mut lsas: Vec<Arc<SignedLsa>> = lsas.into_iter().collect();
        lsas.sort_by(|a, b| {
            (&a.lsa.origin, std::cmp::Reverse(a.lsa.sequence))
                .cmp(&(&b.lsa.origin, std::cmp::Reverse(b.lsa.sequence)))
        });
        lsas.dedup_by(|later, first| later.lsa.origin == first.lsa.origin);
        let names = lsas
            .iter()
            .flat_map(|l| {
                std::iter::once(l.lsa.origin.clone())
                    .chain(l.lsa.links.iter().map(|link| link.neighbour.clone()))
            })
            .collect();
        let names = SlotNames::of(names);
        let lsas = lsas
            .into_iter()
            .map(|lsa| {
                let slot_of = |name: &NodeName| names.get(name).expect("every name has a slot");
                let adjacency = resolve_with(&lsa, slot_of);
                (slot_of(&lsa.lsa.origin), lsa, adjacency)
            })
            .collect();
        LinkStateSnapshot {
            names: Arc::new(names),
            lsas,
        }
    }

    /// The advertisements, in origin name order.
    pub fn lsas(&self) -> impl Iterator<Item = &Arc<SignedLsa>> {
        self.lsas.iter().map(|(_, lsa, _)| lsa)
    }

    /// Number of advertisements.
    pub fn len(&self) -> usize {
        self.lsas.len()
    }

    /// Whether the snapshot holds no advertisement.
    pub fn is_empty(&self) -> bool {
        self.lsas.is_empty()
    }
}

/// `lsa`'s links as (neighbour slot, cost), sorted by slot.
fn resolve_with(lsa: &SignedLsa, mut slot_of: impl FnMut(&NodeName) -> u32) -> Arc<[(u32, u32)]> {
    let mut adjacency: Vec<(u32, u32)> = lsa
        .lsa
        .links
        .iter()
        .map(|l| (slot_of(&l.neighbour), l.cost.max(1)))
        .collect();
    adjacency.sort_unstable();
    adjacency.into()
}

impl LinkStateDb {
    /// An empty database that holds at most `entries_max` origins.
    pub fn new(entries_max: usize) -> Self {
        assert!(entries_max >= 1);
        LinkStateDb {
            names: Arc::default(),
            entries: Vec::new(),
            len: 0,
            entries_max,
            changes: Changes {
                rebuilt: true,
                origins: Vec::new(),
            },
        }
    }

    /// Offer an advertisement (already verified by the caller).
    pub fn install(&mut self, lsa: Arc<SignedLsa>, expires_at: Instant) -> InstallOutcome {
        self.install_resolved(lsa, None, expires_at)
    }

    /// [`LinkStateDb::install`], with the links already resolved against this
    /// database's slot table when `adjacency` is given.
    fn install_resolved(
        &mut self,
        lsa: Arc<SignedLsa>,
        adjacency: Option<(u32, &Adjacency)>,
        expires_at: Instant,
    ) -> InstallOutcome {
        let slot = match adjacency {
            Some((slot, _)) => Some(slot),
            None => self.names.get(&lsa.lsa.origin),
        };
        let held = slot
            .and_then(|slot| self.at(slot))
            .map(|e| e.lsa.lsa.sequence);
        match held {
            Some(sequence) if sequence > lsa.lsa.sequence => {
                return InstallOutcome::Stale(sequence)
            }
            Some(sequence) if sequence == lsa.lsa.sequence => return InstallOutcome::Duplicate,
            None if self.len >= self.entries_max => return InstallOutcome::Full,
            _ => {}
        }
        let (slot, adjacency) = match adjacency {
            Some((slot, adjacency)) => (slot as usize, adjacency.clone()),
            None => (self.slot_of(&lsa.lsa.origin) as usize, self.resolve(&lsa)),
        };
        if self.entries.len() <= slot {
            self.entries.resize(slot + 1, None);
        }
        let previous = self.entries[slot].replace(Entry {
            lsa,
            expires_at,
            adjacency,
        });
        self.len += usize::from(previous.is_none());
        self.changes
            .note(slot as u32, previous.map(|e| e.adjacency));
        InstallOutcome::Installed
    }

    /// The advertisement's links as (neighbour slot, cost), sorted by slot.
    fn resolve(&mut self, lsa: &SignedLsa) -> Arc<[(u32, u32)]> {
        resolve_with(lsa, |name| self.slot_of(name))
    }

    fn slot_of(&mut self, name: &NodeName) -> u32 {
        match self.names.get(name) {
            Some(slot) => slot,
            None => Arc::make_mut(&mut self.names).push(name),
        }
    }

    /// Take `names` as this database's slot table (re-resolving what it holds), so that
    /// it and what is resolved against it can be shared. Returns whether the table is
    /// still shared afterwards (it is not if this database held a name it lacks).
    pub(crate) fn share_names(&mut self, names: &Arc<SlotNames>) -> bool {
        if Arc::ptr_eq(&self.names, names) {
            return true;
        }
        self.changes.all();
        let held: Vec<Entry> = self.entries.drain(..).flatten().collect();
        self.names = names.clone();
        self.len = 0;
        for entry in held {
            self.install(entry.lsa, entry.expires_at);
        }
        Arc::ptr_eq(&self.names, names)
    }

    /// Install `snapshot`'s advertisements that `admit` accepts and that are newer than
    /// the ones held, except those of `me`; returns the outcome of each one offered.
    pub(crate) fn install_snapshot(
        &mut self,
        snapshot: &LinkStateSnapshot,
        me: &NodeName,
        expires_at: Instant,
        mut admit: impl FnMut(&SignedLsa) -> bool,
    ) -> Vec<InstallOutcome> {
        // Shared tables stay shared: every name of the snapshot has its slot already, so
        // slots and resolved links can be taken as they are.
        let shared = self.share_names(&snapshot.names);
        // Room for every slot at once: growing by doubling would leave up to half unused.
        let slots = self.names.len();
        if self.entries.len() < slots {
            self.entries.reserve_exact(slots - self.entries.len());
            self.entries.resize(slots, None);
        }
        let mut outcomes = Vec::new();
        let mine = self.names.get(me);
        for (slot, lsa, adjacency) in &snapshot.lsas {
            let slot = if shared {
                Some(*slot)
            } else {
                self.names.get(&lsa.lsa.origin)
            };
            if slot.is_some() && slot == mine {
                continue;
            }
            let held = slot.and_then(|slot| self.at(slot));
            let held = held.map(|e| e.lsa.lsa.sequence);
            if held.is_some_and(|held| held >= lsa.lsa.sequence) || !admit(lsa) {
                continue;
            }
            let resolved = slot.zip(Some(adjacency)).filter(|_| shared);
            outcomes.push(self.install_resolved(lsa.clone(), resolved, expires_at));
        }
        outcomes
    }

    /// Reassign slots from the names still in use once many have gone, so the slot
    /// table stays bounded by what the database holds.
    fn compact_slots(&mut self) {
        let links: usize = self.iter().map(|(_, e)| e.adjacency.len()).sum();
        if self.names.len() <= 2 * (self.len + links) + 1024 {
            return;
        }
        self.changes.all();
        let held: Vec<Entry> = self.entries.drain(..).flatten().collect();
        let names = held.iter().map(|e| e.lsa.lsa.origin.clone()).collect();
        self.names = Arc::new(SlotNames::of(names));
        self.len = 0;
        for entry in held {
            self.install(entry.lsa, entry.expires_at);
        }
    }

    /// What changed since the last call (or since the database was made), for the
    /// routes computed from it.
    pub(crate) fn take_changes(&mut self) -> Changes {
        let none = Changes {
            rebuilt: false,
            origins: Vec::new(),
        };
        std::mem::replace(&mut self.changes, none)
    }

    /// The slot table.
    pub(crate) fn names(&self) -> &Arc<SlotNames> {
        &self.names
    }

    /// Number of slots handed out.
    pub(crate) fn slot_count(&self) -> usize {
        self.names.len()
    }

    /// The slot of `name`, if it has one.
    pub(crate) fn slot(&self, name: &NodeName) -> Option<u32> {
        self.names.get(name)
    }

    /// The entry in `slot`.
    pub(crate) fn at(&self, slot: u32) -> Option<&Entry> {
        self.entries.get(slot as usize).and_then(Option::as_ref)
    }

    /// The entry of `origin`.
    pub fn get(&self, origin: &NodeName) -> Option<&Entry> {
        self.at(self.names.get(origin)?)
    }

    /// Remove the entry of `origin`.
    pub fn remove(&mut self, origin: &NodeName) -> Option<Entry> {
        let slot = self.names.get(origin)? as usize;
        let removed = self.entries.get_mut(slot).and_then(Option::take);
        if let Some(entry) = &removed {
            self.len -= 1;
            self.changes
                .note(slot as u32, Some(entry.adjacency.clone()));
            self.compact_slots();
        }
        removed
    }

    /// Remove every entry whose lifetime is over (except `keep`, the node's own),
    /// returning the origins removed, sorted.
    pub fn expire(&mut self, now: Instant, keep: &NodeName) -> Vec<NodeName> {
        let mut gone: Vec<NodeName> = self
            .iter()
            .filter(|(origin, entry)| entry.expires_at <= now && *origin != keep)
            .map(|(origin, _)| origin.clone())
            .collect();
        gone.sort();
        for origin in &gone {
            self.remove(origin);
        }
        gone
    }

    /// Origins held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the database is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeName, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| Some((self.names.name(slot as u32), e.as_ref()?)))
    }

    /// Origins and sequence numbers, sorted: two databases that agree give equal digests.
    pub fn digest(&self) -> Vec<(NodeName, u64)> {
        self.names
            .sorted()
            .iter()
            .filter_map(|&slot| {
                let entry = self.at(slot)?;
                Some((self.names.name(slot).clone(), entry.lsa.lsa.sequence))
            })
            .collect()
    }

    /// Whether both databases hold the same origins at the same sequence numbers (equal
    /// [`LinkStateDb::digest`]s), without building the digests when their slot tables
    /// are shared.
    pub fn agrees_with(&self, other: &LinkStateDb) -> bool {
        if self.len != other.len {
            return false;
        }
        if !Arc::ptr_eq(&self.names, &other.names) {
            return self.digest() == other.digest();
        }
        let sequence = |e: &Option<Entry>| e.as_ref().map(|e| e.lsa.lsa.sequence);
        let longest = self.entries.len().max(other.entries.len());
        (0..longest).all(|slot| {
            let mine = self.entries.get(slot).and_then(sequence);
            let theirs = other.entries.get(slot).and_then(sequence);
            mine == theirs
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Lsa, LsaLink};
    use proptest::prelude::*;

    fn lsa(origin: u8, sequence: u64) -> Arc<SignedLsa> {
        let origin = NodeName::new(&format!("n{origin}")).unwrap();
        let links = vec![LsaLink {
            neighbour: NodeName::new("x").unwrap(),
            cost: sequence as u32,
        }];
        Arc::new(SignedLsa {
            lsa: Lsa {
                origin,
                sequence,
                links,
            },
            credential: Arc::from(&[][..]),
            signature: vec![],
        })
    }

    #[test]
    fn newer_replaces_older_and_duplicates_are_recognised() {
        let mut db = LinkStateDb::new(10);
        assert_eq!(
            db.install(lsa(1, 5), Instant::ZERO),
            InstallOutcome::Installed
        );
        assert_eq!(
            db.install(lsa(1, 5), Instant::ZERO),
            InstallOutcome::Duplicate
        );
        assert_eq!(
            db.install(lsa(1, 4), Instant::ZERO),
            InstallOutcome::Stale(5)
        );
        assert_eq!(
            db.install(lsa(1, 6), Instant::ZERO),
            InstallOutcome::Installed
        );
        assert_eq!(
            db.get(&NodeName::new("n1").unwrap())
                .unwrap()
                .lsa
                .lsa
                .sequence,
            6
        );
    }

    #[test]
    fn bounded_and_ages_out() {
        let mut db = LinkStateDb::new(2);
        db.install(lsa(1, 1), Instant::from_micros(10));
        db.install(lsa(2, 1), Instant::from_micros(20));
        assert_eq!(db.install(lsa(3, 1), Instant::ZERO), InstallOutcome::Full);
        let keep = NodeName::new("n2").unwrap();
        assert_eq!(
            db.expire(Instant::from_micros(30), &keep),
            vec![NodeName::new("n1").unwrap()]
        );
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn slots_stay_bounded_as_origins_come_and_go() {
        let mut db = LinkStateDb::new(10_000);
        for round in 0..50u64 {
            for i in 0..100u8 {
                let mut offered = (*lsa(i, round + 1)).clone();
                offered.lsa.origin = NodeName::new(&format!("r{round}-{i}")).unwrap();
                db.install(Arc::new(offered), Instant::ZERO);
            }
            let gone: Vec<NodeName> = db.iter().map(|(o, _)| o.clone()).collect();
            for origin in gone {
                db.remove(&origin);
            }
        }
        assert!(
            db.slot_count() <= 2 * 100 + 1024,
            "{} slots",
            db.slot_count()
        );
        assert!(db.is_empty() && db.iter().next().is_none());
    }

    #[test]
    fn databases_taking_one_snapshot_share_their_tables_and_agree() {
        let offers: Vec<_> = (0..20u8).map(|i| lsa(i, u64::from(i) + 1)).collect();
        let snapshot = LinkStateSnapshot::new(offers.iter().rev().cloned());
        let me = NodeName::new("n3").unwrap();
        let other = NodeName::new("n4").unwrap();
        let take = |db: &mut LinkStateDb, me: &NodeName| {
            db.install_snapshot(&snapshot, me, Instant::ZERO, |_| true)
        };
        let (mut a, mut b) = (LinkStateDb::new(64), LinkStateDb::new(64));
        a.install(lsa(3, 100), Instant::ZERO);
        assert_eq!(take(&mut a, &me).len(), 19, "the own origin is left alone");
        b.install(lsa(4, 100), Instant::ZERO);
        assert_eq!(take(&mut b, &other).len(), 19);
        assert!(Arc::ptr_eq(&a.names, &snapshot.names) && Arc::ptr_eq(&b.names, &a.names));
        assert_eq!(a.get(&me).unwrap().lsa.lsa.sequence, 100);
        assert!(!a.agrees_with(&b), "they hold different n3 and n4");
        b.install(lsa(3, 100), Instant::ZERO);
        a.install(lsa(4, 100), Instant::ZERO);
        assert!(a.agrees_with(&b));
        // A database filled by floods, in another order, agrees through its digest.
        let mut flooded = LinkStateDb::new(64);
        flooded.install(lsa(4, 100), Instant::ZERO);
        flooded.install(lsa(3, 100), Instant::ZERO);
        for offer in &offers {
            flooded.install(offer.clone(), Instant::ZERO);
        }
        assert!(flooded.agrees_with(&a) && a.agrees_with(&flooded));
        assert_eq!(flooded.digest(), a.digest());
        // A name the shared table lacks: this database copies it, the others keep theirs.
        a.install(lsa(77, 1), Instant::ZERO);
        assert!(!Arc::ptr_eq(&a.names, &b.names) && Arc::ptr_eq(&b.names, &snapshot.names));
        assert!(a.get(&NodeName::new("n77").unwrap()).is_some());
    }

    proptest! {
        /// Whatever order advertisements arrive in, the database ends up holding the
        /// highest sequence number of every origin, and never goes backwards on the way.
        #[test]
        fn order_independent_and_monotonic(offers in proptest::collection::vec((0u8..6, 0u64..20), 1..60)) {
            let mut db = LinkStateDb::new(64);
            let mut expected = std::collections::BTreeMap::new();
            for &(origin, seq) in &offers {
                let before = db.get(&NodeName::new(&format!("n{origin}")).unwrap()).map(|e| e.lsa.lsa.sequence);
                db.install(lsa(origin, seq), Instant::ZERO);
                let after = db.get(&NodeName::new(&format!("n{origin}")).unwrap()).map(|e| e.lsa.lsa.sequence);
                prop_assert!(after >= before);
                let max = expected.entry(origin).or_insert(seq);
                *max = (*max).max(seq);
            }
            let mut reversed = LinkStateDb::new(64);
            for &(origin, seq) in offers.iter().rev() {
                reversed.install(lsa(origin, seq), Instant::ZERO);
            }
            prop_assert_eq!(db.digest(), reversed.digest());
            let want: Vec<_> = expected.iter().map(|(o, s)| (NodeName::new(&format!("n{o}")).unwrap(), *s)).collect();
            prop_assert_eq!(db.digest(), want);
        }
    }
}
