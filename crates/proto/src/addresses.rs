//! Where the other nodes say they can be reached: the newest verified
//! [`AddressRecord`] of every origin, learnt from the mesh.
//!
//! A node whose neighbour restarted at a new address (a recreated pod) would find it
//! again only through its configuration or DNS. With address records every node floods
//! its own listen addresses, signed like its advertisement, and keeps the newest record
//! of every other node; when it redials a static peer whose name it learnt, it dials the
//! peer's learnt addresses too (`Node::dial_due`). A learnt address is a hint, never an
//! identity: the link it gives counts only if the handshake proves the expected SVID.
//!
//! The book is bounded: one record per origin, [`crate::wire::ADDRESSES_PER_RECORD_MAX`]
//! addresses per record, and no more origins than the link-state database holds
//! (records of origins that left the database are forgotten at its aging sweep).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::name::NodeName;
use crate::wire::AddressRecord;

/// What [`AddressBook::offer`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Newer than the one held (or the first of its origin): kept.
    Kept,
    /// The same or an older sequence number is held already.
    Known,
    /// A new origin while the book is full.
    Full,
}

/// The newest record of every origin, bounded in size.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddressBook {
    records: BTreeMap<NodeName, Arc<AddressRecord>>,
}

impl AddressBook {
    /// Whether a record of `origin` with `sequence` would be news (so is worth verifying).
    pub(crate) fn is_news(&self, origin: &NodeName, sequence: u64) -> bool {
        self.records
            .get(origin)
            .is_none_or(|held| held.sequence < sequence)
    }

    /// Keep `record` if it is newer than the one held of its origin; a new origin is
    /// refused once `max` origins are held. The caller verified it.
    pub(crate) fn offer(&mut self, record: Arc<AddressRecord>, max: usize) -> Offered {
        if !self.is_news(&record.origin, record.sequence) {
            return Offered::Known;
        }
        if !self.records.contains_key(&record.origin) && self.records.len() >= max {
            return Offered::Full;
        }
        self.records.insert(record.origin.clone(), record);
        Offered::Kept
    }

    /// The addresses `origin` advertised last (empty if none).
    pub(crate) fn addresses(&self, origin: &NodeName) -> &[SocketAddr] {
        self.records
            .get(origin)
            .map_or(&[], |record| &record.addresses)
    }

    /// The record of `origin`, if held.
    pub(crate) fn get(&self, origin: &NodeName) -> Option<&Arc<AddressRecord>> {
        self.records.get(origin)
    }

    /// Forget `origin`'s record (revoked, or gone from the link-state database).
    pub(crate) fn remove(&mut self, origin: &NodeName) {
        self.records.remove(origin);
    }

    /// Keep only the records of origins for which `keep` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&NodeName) -> bool) {
        self.records.retain(|origin, _| keep(origin));
    }

    /// Every record, in origin order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<AddressRecord>> {
        self.records.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origin: &str, sequence: u64, port: u16) -> Arc<AddressRecord> {
        Arc::new(AddressRecord {
            origin: NodeName::new(origin).unwrap(),
            sequence,
            addresses: vec![SocketAddr::from(([10, 0, 0, 1], port))],
            credential: Arc::from(&b""[..]),
            signature: Vec::new(),
        })
    }

    #[test]
    fn newest_per_origin_and_bounded() {
        let mut book = AddressBook::default();
        assert_eq!(book.offer(record("a", 5, 1), 2), Offered::Kept);
        assert_eq!(book.offer(record("a", 5, 2), 2), Offered::Known);
        assert_eq!(book.offer(record("a", 4, 3), 2), Offered::Known);
        assert_eq!(book.offer(record("a", 6, 4), 2), Offered::Kept);
        let a = NodeName::new("a").unwrap();
        assert_eq!(book.addresses(&a), &[SocketAddr::from(([10, 0, 0, 1], 4))]);
        assert_eq!(book.offer(record("b", 1, 1), 2), Offered::Kept);
        assert_eq!(book.offer(record("c", 1, 1), 2), Offered::Full);
        // An origin held may still move on when the book is full.
        assert_eq!(book.offer(record("b", 2, 9), 2), Offered::Kept);
        book.retain(|origin| origin.as_str() != "a");
        assert!(book.addresses(&a).is_empty());
        assert_eq!(book.iter().count(), 1);
    }
}
