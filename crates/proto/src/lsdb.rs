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
    entries_max: usize,
}

impl LinkStateDb {
    /// An empty database that holds at most `entries_max` origins.
    pub fn new(entries_max: usize) -> Self {
        assert!(entries_max >= 1);
        LinkStateDb {
            entries: crate::hash::FastMap::default(),
            entries_max,
        }
    }

    /// Offer an advertisement (already verified by the caller).
    pub fn install(&mut self, lsa: Arc<SignedLsa>, expires_at: Instant) -> InstallOutcome {
        let full = self.entries.len() >= self.entries_max;
        match self.entries.get_mut(&lsa.lsa.origin) {
            Some(entry) if entry.lsa.lsa.sequence > lsa.lsa.sequence => {
                InstallOutcome::Stale(entry.lsa.lsa.sequence)
            }
            Some(entry) if entry.lsa.lsa.sequence == lsa.lsa.sequence => InstallOutcome::Duplicate,
            Some(entry) => {
                *entry = Entry { lsa, expires_at };
                InstallOutcome::Installed
            }
            None if full => InstallOutcome::Full,
            None => {
                self.entries
                    .insert(lsa.lsa.origin.clone(), Entry { lsa, expires_at });
                InstallOutcome::Installed
            }
        }
    }

    /// The entry of `origin`.
    pub fn get(&self, origin: &NodeName) -> Option<&Entry> {
        self.entries.get(origin)
    }

    /// Remove the entry of `origin`.
    pub fn remove(&mut self, origin: &NodeName) -> Option<Entry> {
        self.entries.remove(origin)
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
            self.entries.remove(origin);
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
