//! Shortest paths over the link-state database.
//!
//! A link is used only when both ends advertise it (the two-way check), so a node
//! cannot pull traffic towards itself by claiming links its neighbours do not confirm,
//! and a dead node's stale advertisement stops attracting traffic as soon as its
//! neighbours withdraw it.

use std::sync::Arc;

use serde::Serialize;

use crate::lsdb::{LinkStateDb, SlotNames};
use crate::name::NodeName;

/// How to reach one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The neighbour to hand messages to.
    pub next_hop: NodeName,
    /// Total path cost.
    pub cost: u64,
    /// Number of hops.
    pub hops: u32,
}

/// A route in slot form: 16 bytes per destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hop {
    cost: u64,
    hops: u32,
    /// The next hop's slot; [`Hop::NONE`]'s for an unreachable destination.
    next_hop: u32,
}

impl Hop {
    const NONE: Hop = Hop {
        cost: u64::MAX,
        hops: u32::MAX,
        next_hop: u32::MAX,
    };

    fn reachable(&self) -> bool {
        self.next_hop != u32::MAX
    }
}

/// The forwarding table: one route per reachable destination.
///
/// Stored by destination slot of the link-state database it was computed from (whose
/// slot table it shares), so a table over n destinations takes 16·n bytes and no names
/// of its own: the twin holds one per simulated node.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    names: Arc<SlotNames>,
    by_slot: Box<[Hop]>,
    len: usize,
}

impl RoutingTable {
    fn hop(&self, destination: &NodeName) -> Option<&Hop> {
        let slot = self.names.slot(destination)?;
        self.by_slot
            .get(slot as usize)
            .filter(|hop| hop.reachable())
    }

    fn route(&self, hop: &Hop) -> Route {
        Route {
            next_hop: self.names.name(hop.next_hop).clone(),
            cost: hop.cost,
            hops: hop.hops,
        }
    }

    /// The route to `destination`.
    pub fn get(&self, destination: &NodeName) -> Option<Route> {
        self.hop(destination).map(|hop| self.route(hop))
    }

    /// The next hop towards `destination` (as [`RoutingTable::get`], without a copy).
    pub fn next_hop(&self, destination: &NodeName) -> Option<&NodeName> {
        self.hop(destination)
            .map(|hop| self.names.name(hop.next_hop))
    }

    /// All routes, sorted by destination.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeName, Route)> + '_ {
        self.names.sorted().iter().filter_map(|&slot| {
            let hop = self.by_slot.get(slot as usize)?;
            hop.reachable()
                .then(|| (self.names.name(slot), self.route(hop)))
        })
    }

    /// Number of reachable destinations.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no destination is reachable.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Destinations whose route differs between `self` and `other`.
    pub fn changes_from(&self, other: &RoutingTable) -> usize {
        if Arc::ptr_eq(&self.names, &other.names) {
            // One slot table: compare slot by slot.
            let longest = self.by_slot.len().max(other.by_slot.len());
            let hop =
                |t: &RoutingTable, slot: usize| t.by_slot.get(slot).copied().unwrap_or(Hop::NONE);
            return (0..longest)
                .filter(|&slot| hop(self, slot) != hop(other, slot))
                .count();
        }
        // Both tables iterate in destination order: merge them in one pass.
        let (mut mine, mut theirs) = (self.iter().peekable(), other.iter().peekable());
        let mut changes = 0;
        loop {
            let order = match (mine.peek(), theirs.peek()) {
                (None, None) => return changes,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => {
                    mine.next();
                    changes += 1;
                }
                std::cmp::Ordering::Greater => {
                    theirs.next();
                    changes += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (a, b) = (mine.next(), theirs.next());
                    changes += usize::from(a != b);
                }
            }
        }
    }
}

impl PartialEq for RoutingTable {
    fn eq(&self, other: &RoutingTable) -> bool {
        self.len == other.len && self.changes_from(other) == 0
    }
}

impl Eq for RoutingTable {}

/// A monotone priority queue of (path cost, slot) for Dijkstra: keys popped never
/// decrease, so an entry is filed under the highest bit in which its key differs from
/// the last key popped, and only the lowest non-empty bucket is ever re-sorted. Pops and
/// pushes cost O(log C) amortised for costs up to C, with no comparisons of whole
/// entries. Entries of equal cost come out in no particular order, which the route
/// computation does not depend on (see [`compute_routes`]).
#[derive(Default)]
struct RadixHeap {
    last: u64,
    buckets: Vec<Vec<(u64, u32)>>,
    len: usize,
}

impl RadixHeap {
    fn bucket(&self, cost: u64) -> usize {
        (u64::BITS - (cost ^ self.last).leading_zeros()) as usize
    }

    fn push(&mut self, cost: u64, slot: u32) {
        debug_assert!(
            cost >= self.last,
            "keys pushed are never below the last popped"
        );
        if self.buckets.is_empty() {
            self.buckets.resize_with(u64::BITS as usize + 1, Vec::new);
        }
        let bucket = self.bucket(cost);
        self.buckets[bucket].push((cost, slot));
        self.len += 1;
    }

    fn pop(&mut self) -> Option<(u64, u32)> {
        if self.len == 0 {
            return None;
        }
        if self.buckets[0].is_empty() {
            let lowest = self.buckets.iter().position(|b| !b.is_empty())?;
            let entries = std::mem::take(&mut self.buckets[lowest]);
            self.last = entries.iter().map(|&(cost, _)| cost).min()?;
            for (cost, slot) in entries.iter().copied() {
                let bucket = self.bucket(cost);
                self.buckets[bucket].push((cost, slot));
            }
            // Keep the emptied bucket's allocation for the next round.
            let mut emptied = entries;
            emptied.clear();
            if self.buckets[lowest].is_empty() {
                self.buckets[lowest] = emptied;
            }
        }
        self.len -= 1;
        self.buckets[0].pop()
    }
}

/// Dijkstra from `me` over two-way links of `lsdb`. Ties are broken by hop count, then
/// by the next hop's name, so every run on the same database gives the same table,
/// whatever order the database iterates in.
///
/// The order in which equal-cost entries leave the queue does not matter: every link
/// costs at least 1, so all predecessors of a destination on its cheapest paths are
/// settled before it, and its label is the least (cost, hops, next-hop name) over them.
pub fn compute_routes(me: &NodeName, lsdb: &LinkStateDb) -> RoutingTable {
    // Work on the database's integer slots: every advertisement's links were resolved
    // to slots when it was installed. A link counts only when its other end advertises
    // it back (the two-way check).
    let Some(source) = lsdb.slot(me).filter(|&slot| lsdb.at(slot).is_some()) else {
        return RoutingTable::default();
    };
    let mut advertised: Vec<&[(u32, u32)]> = vec![&[]; lsdb.slot_count()];
    for (slot, entry) in lsdb.slots() {
        advertised[slot as usize] = &entry.adjacency;
    }
    let confirms = |v: u32, u: u32| {
        advertised[v as usize]
            .binary_search_by_key(&u, |&(w, _)| w)
            .is_ok()
    };
    let names = lsdb.names();
    // Ties compare next hops by name: by slot when slots are in name order, else by rank.
    let rank = names.ranks();
    let name_less = |a: u32, b: u32| match &rank {
        Some(rank) => rank[a as usize] < rank[b as usize],
        None => a < b,
    };
    let mut best = vec![Hop::NONE; advertised.len()];
    let mut done = vec![false; advertised.len()];
    let mut queue = RadixHeap::default();
    best[source as usize] = Hop {
        cost: 0,
        hops: 0,
        next_hop: source,
    };
    queue.push(0, source);
    while let Some((_, u)) = queue.pop() {
        if std::mem::replace(&mut done[u as usize], true) {
            continue;
        }
        // The label, not the queue entry: an entry of equal cost may carry more hops.
        let settled = best[u as usize];
        for &(v, link_cost) in advertised[u as usize] {
            if done[v as usize] || !confirms(v, u) {
                continue;
            }
            let candidate = Hop {
                cost: settled.cost + u64::from(link_cost),
                hops: settled.hops + 1,
                next_hop: if u == source { v } else { settled.next_hop },
            };
            let held = best[v as usize];
            let better = !held.reachable()
                || (candidate.cost, candidate.hops) < (held.cost, held.hops)
                || ((candidate.cost, candidate.hops) == (held.cost, held.hops)
                    && name_less(candidate.next_hop, held.next_hop));
            if better {
                if candidate.cost < held.cost {
                    queue.push(candidate.cost, v);
                }
                best[v as usize] = candidate;
            }
        }
    }
    best[source as usize] = Hop::NONE;
    let len = best.iter().filter(|hop| hop.reachable()).count();
    RoutingTable {
        names: names.clone(),
        by_slot: best.into_boxed_slice(),
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;
    use crate::wire::{Lsa, LsaLink, SignedLsa};
    use std::sync::Arc;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn db(links: &[(&str, &str, u32)], one_way: &[(&str, &str)]) -> LinkStateDb {
        let mut adjacency: std::collections::BTreeMap<&str, Vec<LsaLink>> =
            std::collections::BTreeMap::new();
        for &(a, b, cost) in links {
            adjacency.entry(a).or_default().push(LsaLink {
                neighbour: n(b),
                cost,
            });
            if !one_way.contains(&(a, b)) {
                adjacency.entry(b).or_default().push(LsaLink {
                    neighbour: n(a),
                    cost,
                });
            }
        }
        let mut db = LinkStateDb::new(100);
        for (origin, mut links) in adjacency {
            links.sort_by(|x, y| x.neighbour.cmp(&y.neighbour));
            let lsa = Lsa {
                origin: n(origin),
                sequence: 1,
                links,
            };
            db.install(
                Arc::new(SignedLsa {
                    lsa,
                    credential: Arc::from(&[][..]),
                    signature: vec![],
                }),
                Instant::ZERO,
            );
        }
        db
    }

    #[test]
    fn shortest_paths_and_hops() {
        let db = db(
            &[("a", "b", 1), ("b", "c", 1), ("a", "c", 5), ("c", "d", 1)],
            &[],
        );
        let table = compute_routes(&n("a"), &db);
        assert_eq!(
            table.get(&n("c")),
            Some(Route {
                next_hop: n("b"),
                cost: 2,
                hops: 2
            })
        );
        assert_eq!(
            table.get(&n("d")),
            Some(Route {
                next_hop: n("b"),
                cost: 3,
                hops: 3
            })
        );
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn one_way_links_are_not_used() {
        // b claims a cheap link to c, but c does not confirm it.
        let db = db(
            &[("a", "b", 1), ("b", "c", 1), ("a", "c", 5)],
            &[("b", "c")],
        );
        let table = compute_routes(&n("a"), &db);
        assert_eq!(table.get(&n("c")).unwrap().next_hop, n("c"));
    }

    #[test]
    fn ties_are_deterministic() {
        let db = db(
            &[("a", "c", 1), ("a", "b", 1), ("b", "d", 1), ("c", "d", 1)],
            &[],
        );
        for _ in 0..5 {
            assert_eq!(
                compute_routes(&n("a"), &db).get(&n("d")).unwrap().next_hop,
                n("b")
            );
        }
    }

    #[test]
    fn unknown_self_gives_empty_table() {
        let db = db(&[("a", "b", 1)], &[]);
        assert!(compute_routes(&n("zz"), &db).is_empty());
    }
}
