//! The link-state database: the newest verified advertisement of every origin.

use std::sync::Arc;

use crate::name::NodeName;
use crate::time::Instant;
use crate::wire::SignedLsa;

/// One installed advertisement.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The advertisement (shared with every copy in flight).
    pub lsa: Arc<SignedLsa>,
    /// When it ages out unless refreshed.
    pub expires_at: Instant,
    /// The origin's slot (see [`LinkStateDb::slot_name`]).
    pub(crate) slot: u32,
    /// The advertised links as (neighbour slot, cost), sorted by slot: resolved once at
    /// install, so route computations need no name lookups.
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
    entries: crate::hash::FastMap<NodeName, Entry>,
    /// Origins in name order with their slots, so route tables come out sorted.
    order: Vec<(NodeName, u32)>,
    /// A small integer per name seen (as origin or neighbour), stable while it is held.
    slots: crate::hash::FastMap<NodeName, u32>,
    slot_names: Vec<NodeName>,
    entries_max: usize,
}

impl LinkStateDb {
    /// An empty database that holds at most `entries_max` origins.
    pub fn new(entries_max: usize) -> Self {
        assert!(entries_max >= 1);
        LinkStateDb {
            entries: crate::hash::FastMap::default(),
            order: Vec::new(),
            slots: crate::hash::FastMap::default(),
            slot_names: Vec::new(),
            entries_max,
        }
    }

    /// Offer an advertisement (already verified by the caller).
    pub fn install(&mut self, lsa: Arc<SignedLsa>, expires_at: Instant) -> InstallOutcome {
        let held = self
            .entries
            .get(&lsa.lsa.origin)
            .map(|e| e.lsa.lsa.sequence);
        match held {
            Some(sequence) if sequence > lsa.lsa.sequence => {
                return InstallOutcome::Stale(sequence)
            }
            Some(sequence) if sequence == lsa.lsa.sequence => return InstallOutcome::Duplicate,
            None if self.entries.len() >= self.entries_max => return InstallOutcome::Full,
            _ => {}
        }
        let slot = self.slot_of(&lsa.lsa.origin);
        let adjacency = self.resolve(&lsa);
        let origin = lsa.lsa.origin.clone();
        let entry = Entry {
            lsa,
            expires_at,
            slot,
            adjacency,
        };
        if self.entries.insert(origin.clone(), entry).is_none() {
            let at = self
                .order
                .binary_search_by(|(n, _)| n.cmp(&origin))
                .unwrap_or_else(|at| at);
            self.order.insert(at, (origin, slot));
        }
        InstallOutcome::Installed
    }

    /// The advertisement's links as (neighbour slot, cost), sorted by slot.
    fn resolve(&mut self, lsa: &SignedLsa) -> Arc<[(u32, u32)]> {
        let mut adjacency: Vec<(u32, u32)> = lsa
            .lsa
            .links
            .iter()
            .map(|l| (self.slot_of(&l.neighbour), l.cost.max(1)))
            .collect();
        adjacency.sort_unstable();
        adjacency.into()
    }

    fn slot_of(&mut self, name: &NodeName) -> u32 {
        if let Some(&slot) = self.slots.get(name) {
            return slot;
        }
        let slot = self.slot_names.len() as u32;
        self.slots.insert(name.clone(), slot);
        self.slot_names.push(name.clone());
        slot
    }

    /// Reassign slots from the names still in use once many have gone, so the slot
    /// table stays bounded by what the database holds.
    fn compact_slots(&mut self) {
        let links: usize = self.entries.values().map(|e| e.adjacency.len()).sum();
        if self.slot_names.len() <= 2 * (self.entries.len() + links) + 1024 {
            return;
        }
        self.slots.clear();
        self.slot_names.clear();
        let mut entries = std::mem::take(&mut self.entries);
        let mut origins: Vec<NodeName> = entries.keys().cloned().collect();
        origins.sort();
        for origin in &origins {
            let entry = entries.get_mut(origin).expect("listed origin");
            entry.slot = self.slot_of(origin);
            entry.adjacency = self.resolve(&entry.lsa);
        }
        self.entries = entries;
        self.order = origins.iter().map(|o| (o.clone(), self.slots[o])).collect();
    }

    /// The name of a slot.
    pub(crate) fn slot_name(&self, slot: u32) -> &NodeName {
        &self.slot_names[slot as usize]
    }

    /// Number of slots handed out.
    pub(crate) fn slot_count(&self) -> usize {
        self.slot_names.len()
    }

    /// The slot of `name`, if it has one.
    pub(crate) fn slot(&self, name: &NodeName) -> Option<u32> {
        self.slots.get(name).copied()
    }

    /// Origins with their slots, in name order.
    pub(crate) fn ordered(&self) -> &[(NodeName, u32)] {
        &self.order
    }

    /// The entry of `origin`.
    pub fn get(&self, origin: &NodeName) -> Option<&Entry> {
        self.entries.get(origin)
    }

    /// Remove the entry of `origin`.
    pub fn remove(&mut self, origin: &NodeName) -> Option<Entry> {
        if let Ok(at) = self.order.binary_search_by(|(n, _)| n.cmp(origin)) {
            self.order.remove(at);
        }
        let removed = self.entries.remove(origin);
        self.compact_slots();
        removed
    }

    /// Remove every entry whose lifetime is over (except `keep`, the node's own),
    /// returning the origins removed, sorted.
    pub fn expire(&mut self, now: Instant, keep: &NodeName) -> Vec<NodeName> {
        let mut gone: Vec<NodeName> = self
            .entries
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
        self.entries.len()
    }

    /// Whether the database is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeName, &Entry)> {
        self.entries.iter()
    }

    /// Origins and sequence numbers, sorted: two databases that agree give equal digests.
    pub fn digest(&self) -> Vec<(NodeName, u64)> {
        let mut digest: Vec<_> = self
            .entries
            .iter()
            .map(|(o, e)| (o.clone(), e.lsa.lsa.sequence))
            .collect();
        digest.sort();
        digest
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
        assert!(db.is_empty() && db.ordered().is_empty());
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
