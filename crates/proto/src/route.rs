//! Shortest paths over the link-state database.
//!
//! A link is used only when both ends advertise it (the two-way check), so a node
//! cannot pull traffic towards itself by claiming links its neighbours do not confirm,
//! and a dead node's stale advertisement stops attracting traffic as soon as its
//! neighbours withdraw it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;

use crate::lsdb::LinkStateDb;
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

/// The forwarding table: one route per reachable destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    routes: BTreeMap<NodeName, Route>,
}

impl RoutingTable {
    /// The route to `destination`.
    pub fn get(&self, destination: &NodeName) -> Option<&Route> {
        self.routes.get(destination)
    }

    /// All routes, sorted by destination.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeName, &Route)> {
        self.routes.iter()
    }

    /// Number of reachable destinations.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no destination is reachable.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Destinations whose route differs between `self` and `other`.
    pub fn changes_from(&self, other: &RoutingTable) -> usize {
        // Both tables iterate in destination order: merge them in one pass.
        let (mut mine, mut theirs) = (
            self.routes.iter().peekable(),
            other.routes.iter().peekable(),
        );
        let mut changes = 0;
        loop {
            match (mine.peek(), theirs.peek()) {
                (None, None) => return changes,
                (Some(_), None) => {
                    mine.next();
                    changes += 1;
                }
                (None, Some(_)) => {
                    theirs.next();
                    changes += 1;
                }
                (Some((a, ra)), Some((b, rb))) => match a.cmp(b) {
                    std::cmp::Ordering::Less => {
                        mine.next();
                        changes += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        theirs.next();
                        changes += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        changes += usize::from(ra != rb);
                        mine.next();
                        theirs.next();
                    }
                },
            }
        }
    }
}

/// Dijkstra from `me` over two-way links of `lsdb`. Ties are broken by hop count, then
/// by the next hop's name, so every run on the same database gives the same table,
/// whatever order the database iterates in.
pub fn compute_routes(me: &NodeName, lsdb: &LinkStateDb) -> RoutingTable {
    // Work on the database's integer slots: every advertisement's links were resolved
    // to slots when it was installed. A link counts only when its other end advertises
    // it back (the two-way check).
    let Some(source) = lsdb.slot(me).filter(|_| lsdb.get(me).is_some()) else {
        return RoutingTable::default();
    };
    let slots = lsdb.slot_count();
    let mut advertised: Vec<&[(u32, u32)]> = vec![&[]; slots];
    for (_, entry) in lsdb.iter() {
        advertised[entry.slot as usize] = &entry.adjacency;
    }
    let confirms = |v: u32, u: u32| {
        advertised[v as usize]
            .binary_search_by_key(&u, |&(w, _)| w)
            .is_ok()
    };
    let name = |slot: usize| lsdb.slot_name(slot as u32);
    let source = source as usize;
    let mut best: Vec<Option<(u64, u32, usize)>> = vec![None; slots]; // (cost, hops, first hop)
    let mut done = vec![false; slots];
    let mut heap = BinaryHeap::new();
    best[source] = Some((0, 0, source));
    heap.push(Reverse((0u64, 0u32, source)));
    while let Some(Reverse((cost, hops, u))) = heap.pop() {
        if done[u] {
            continue;
        }
        done[u] = true;
        let first = best[u].map_or(source, |b| b.2);
        for &(v, link_cost) in advertised[u] {
            let v_index = v as usize;
            if done[v_index] || !confirms(v, u as u32) {
                continue;
            }
            let candidate = (
                cost + u64::from(link_cost),
                hops + 1,
                if u == source { v_index } else { first },
            );
            let better = match best[v_index] {
                None => true,
                Some((c, h, f)) => (candidate.0, candidate.1, name(candidate.2)) < (c, h, name(f)),
            };
            if better {
                best[v_index] = Some(candidate);
                heap.push(Reverse((candidate.0, candidate.1, v_index)));
            }
        }
    }
    // Destinations in name order, so the map is built from a sorted sequence.
    let routes = lsdb
        .ordered()
        .iter()
        .filter(|&&(_, slot)| slot as usize != source)
        .filter_map(|(destination, slot)| {
            best[*slot as usize].map(|(cost, hops, first)| {
                (
                    destination.clone(),
                    Route {
                        next_hop: name(first).clone(),
                        cost,
                        hops,
                    },
                )
            })
        })
        .collect();
    RoutingTable { routes }
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
        let mut adjacency: BTreeMap<&str, Vec<LsaLink>> = BTreeMap::new();
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
            Some(&Route {
                next_hop: n("b"),
                cost: 2,
                hops: 2
            })
        );
        assert_eq!(
            table.get(&n("d")),
            Some(&Route {
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
