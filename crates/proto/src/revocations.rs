//! The revocations a node holds, and the digest nodes compare to find that they differ.
//!
//! A revocation is opaque bytes that the [`crate::Authenticator`] verifies and turns into
//! the name of the revoked node. Like link-state, revocations are flooded when new and
//! exchanged when a link comes up and periodically (anti-entropy): each node sends its
//! neighbours a [`crate::Message::RevocationDigest`], and a neighbour that holds a
//! different set answers with all of its revocations. A node that was down during a
//! flood therefore learns every revocation on its first link after it returns.
//!
//! One revocation is kept per revoked node: if two genuine ones name the same node (a
//! CA that revoked it twice), every node keeps the smaller bytes, so all nodes converge
//! on the same set and the same digest.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::name::NodeName;

/// What [`RevocationSet::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The node was not revoked before.
    New,
    /// The node was revoked already; this copy replaced the one held (canonical order).
    Replaced,
    /// The node was revoked already; the copy held stays.
    Known,
    /// The set is full; the revocation was not kept.
    Full,
}

/// Verified revocations by revoked node, bounded.
#[derive(Clone, Debug)]
pub(crate) struct RevocationSet {
    by_target: BTreeMap<NodeName, Arc<[u8]>>,
    digest: u64,
    max: usize,
}

impl RevocationSet {
    pub(crate) fn new(max: usize) -> Self {
        RevocationSet {
            by_target: BTreeMap::new(),
            digest: digest_of(&BTreeMap::new()),
            max,
        }
    }

    /// Keep a verified revocation of `target`.
    pub(crate) fn insert(&mut self, target: NodeName, revocation: Arc<[u8]>) -> Inserted {
        let inserted = match self.by_target.get(&target) {
            Some(held) if revocation.as_ref() < held.as_ref() => {
                self.by_target.insert(target, revocation);
                Inserted::Replaced
            }
            Some(_) => return Inserted::Known,
            None if self.by_target.len() >= self.max => return Inserted::Full,
            None => {
                self.by_target.insert(target, revocation);
                Inserted::New
            }
        };
        self.digest = digest_of(&self.by_target);
        inserted
    }

    pub(crate) fn contains(&self, node: &NodeName) -> bool {
        self.by_target.contains_key(node)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_target.len()
    }

    /// A hash of every revocation held, equal on two nodes that hold the same set.
    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    /// The revoked nodes with their revocations, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeName, &Arc<[u8]>)> {
        self.by_target.iter()
    }
}

/// FNV-1a over every (target, revocation) in name order: portable and the same on every
/// node, unlike the standard library's randomly keyed hasher.
fn digest_of(by_target: &BTreeMap<NodeName, Arc<[u8]>>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (target, revocation) in by_target {
        feed(target.as_str().as_bytes());
        feed(revocation);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn same_set_same_digest_whatever_the_order() {
        let mut a = RevocationSet::new(8);
        let mut b = RevocationSet::new(8);
        let empty = a.digest();
        assert_eq!(a.insert(name("x"), Arc::from(&b"rx"[..])), Inserted::New);
        assert_eq!(a.insert(name("y"), Arc::from(&b"ry"[..])), Inserted::New);
        assert_eq!(b.insert(name("y"), Arc::from(&b"ry"[..])), Inserted::New);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(b.insert(name("x"), Arc::from(&b"rx"[..])), Inserted::New);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), empty);
    }

    #[test]
    fn one_canonical_revocation_per_node_and_a_bound() {
        let mut set = RevocationSet::new(1);
        assert_eq!(set.insert(name("x"), Arc::from(&b"r2"[..])), Inserted::New);
        assert_eq!(
            set.insert(name("x"), Arc::from(&b"r3"[..])),
            Inserted::Known
        );
        assert_eq!(
            set.insert(name("x"), Arc::from(&b"r1"[..])),
            Inserted::Replaced
        );
        assert_eq!(set.iter().next().unwrap().1.as_ref(), b"r1");
        assert_eq!(set.insert(name("y"), Arc::from(&b"r"[..])), Inserted::Full);
        assert!(set.contains(&name("x")) && !set.contains(&name("y")));
        assert_eq!(set.len(), 1);
    }
}
