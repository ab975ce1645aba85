//! Shortest paths over the link-state database.
//!
//! A link is used only when both ends advertise it (the two-way check), so a node
//! cannot pull traffic towards itself by claiming links its neighbours do not confirm,
//! and a dead node's stale advertisement stops attracting traffic as soon as its
//! neighbours withdraw it.

use std::sync::Arc;

use serde::Serialize;

use crate::hash::FastMap;
use crate::lsdb::{Changes, LinkStateDb, SlotNames};
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
#[derive(Clone, Debug)]
pub struct RoutingTable {
    names: Arc<SlotNames>,
    by_slot: Box<[Hop]>,
    /// Each destination's predecessor on its shortest path (`u32::MAX` if unreachable):
    /// the tree [`update_routes`] repairs.
    parents: Box<[u32]>,
    /// The slot of the node the table belongs to (`u32::MAX` for an empty table).
    source: u32,
    len: usize,
}

impl Default for RoutingTable {
    fn default() -> Self {
        RoutingTable {
            names: Arc::default(),
            by_slot: Box::default(),
            parents: Box::default(),
            source: NONE,
            len: 0,
        }
    }
}

/// No slot.
const NONE: u32 = u32::MAX;

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
    let Some(source) = source_slot(me, lsdb) else {
        return RoutingTable::default();
    };
    let graph = Graph::of(lsdb, source);
    let n = lsdb.slot_count();
    let mut table = RoutingTable {
        names: lsdb.names().clone(),
        by_slot: vec![Hop::NONE; n].into_boxed_slice(),
        parents: vec![NONE; n].into_boxed_slice(),
        source,
        len: 0,
    };
    let mut queue = RadixHeap::default();
    queue.push(0, source);
    graph.settle(&mut table, &mut queue, &mut vec![false; n], &mut |_, _| {});
    table.len = table.by_slot.iter().filter(|hop| hop.reachable()).count();
    table
}

/// The link-state database seen as a graph for one source.
struct Graph<'a> {
    lsdb: &'a LinkStateDb,
    source: u32,
    /// Each slot's position in name order, when that is not the slot itself (ties
    /// compare next hops by name).
    rank: Option<Vec<u32>>,
}

impl<'a> Graph<'a> {
    fn of(lsdb: &'a LinkStateDb, source: u32) -> Self {
        Graph {
            lsdb,
            source,
            rank: lsdb.names().ranks(),
        }
    }

    /// The links `u` advertises now, as (neighbour slot, cost) sorted by slot.
    fn links(&self, u: u32) -> &'a [(u32, u32)] {
        self.lsdb.at(u).map_or(&[], |entry| &entry.adjacency)
    }

    /// The cost of the link u→v if both ends advertise it.
    fn link(&self, u: u32, v: u32) -> Option<u32> {
        two_way(|x| self.links(x), u, v)
    }

    /// Whether `u` advertises a link to `v`.
    fn advertises(&self, u: u32, v: u32) -> bool {
        cost_to(self.links(u), v).is_some()
    }

    /// The label of `u`: the source is its own next hop at cost 0.
    fn label(&self, table: &RoutingTable, u: u32) -> Hop {
        if u == self.source {
            Hop {
                cost: 0,
                hops: 0,
                next_hop: u,
            }
        } else {
            table.by_slot[u as usize]
        }
    }

    /// The label `v` gets through `u` (labelled `via`) over a link of `cost`.
    fn through(&self, via: Hop, u: u32, v: u32, cost: u32) -> Hop {
        Hop {
            cost: via.cost + u64::from(cost),
            hops: via.hops + 1,
            next_hop: if u == self.source { v } else { via.next_hop },
        }
    }

    /// Whether `candidate` beats `held`: lower cost, then fewer hops, then the next hop
    /// first in name order.
    fn better(&self, candidate: &Hop, held: &Hop) -> bool {
        let name_less = |a: u32, b: u32| match &self.rank {
            Some(rank) => rank[a as usize] < rank[b as usize],
            None => a < b,
        };
        !held.reachable()
            || (candidate.cost, candidate.hops) < (held.cost, held.hops)
            || ((candidate.cost, candidate.hops) == (held.cost, held.hops)
                && name_less(candidate.next_hop, held.next_hop))
    }

    /// Label `v` through `u` if that beats what it holds; returns the label it held.
    fn offer(&self, table: &mut RoutingTable, u: u32, v: u32, cost: u32) -> Option<Hop> {
        let candidate = self.through(self.label(table, u), u, v, cost);
        let held = table.by_slot[v as usize];
        if v == self.source || !self.better(&candidate, &held) {
            return None;
        }
        table.by_slot[v as usize] = candidate;
        table.parents[v as usize] = u;
        Some(held)
    }

    /// Dijkstra from what `queue` holds: settle each slot in cost order and relax its
    /// two-way links, calling `relabelled(slot, label it held)` on each change.
    ///
    /// The order in which equal-cost entries leave the queue does not matter: every
    /// link costs at least 1, so all predecessors of a slot on its cheapest paths are
    /// settled before it, and its label is the least (cost, hops, next-hop name) over
    /// them. A slot is queued again on every change (an equal-cost one too, which the
    /// incremental computation needs); `done` skips the entries left behind.
    fn settle(
        &self,
        table: &mut RoutingTable,
        queue: &mut RadixHeap,
        done: &mut [bool],
        relabelled: &mut impl FnMut(u32, Hop),
    ) {
        while let Some((_, u)) = queue.pop() {
            if std::mem::replace(&mut done[u as usize], true) {
                continue;
            }
            for &(v, cost) in self.links(u) {
                if done[v as usize] || !self.advertises(v, u) {
                    continue;
                }
                if let Some(held) = self.offer(table, u, v, cost) {
                    relabelled(v, held);
                    queue.push(table.by_slot[v as usize].cost, v);
                }
            }
        }
    }
}

/// The cost of the link u→v in the database whose links `links` gives, if both ends
/// advertise it.
fn two_way<'a>(links: impl Fn(u32) -> &'a [(u32, u32)], u: u32, v: u32) -> Option<u32> {
    let cost = cost_to(links(u), v)?;
    cost_to(links(v), u)?;
    Some(cost)
}

/// The cost of the link to `to` among `links` (sorted by slot).
fn cost_to(links: &[(u32, u32)], to: u32) -> Option<u32> {
    let at = links.binary_search_by_key(&to, |&(w, _)| w).ok()?;
    Some(links[at].1)
}

/// Bring `table`, computed from `lsdb` as it was before `changes`, up to date; returns
/// the number of destinations whose route changed, or `None` when there is nothing to
/// repair (slots reassigned, or no table yet) and [`compute_routes`] must run instead.
///
/// The result is exactly [`compute_routes`]' (labels are the least (cost, hops,
/// next-hop name) over all paths, so unique), at the cost of what changed rather than
/// of the whole mesh, as incremental SPF in IS-IS and OSPF routers does:
/// - a link that got worse matters only if it was a destination's predecessor link in
///   the shortest-path tree; that destination and its subtree are labelled again from
///   their neighbours outside the subtree, whose labels cannot change;
/// - a link that got better matters only if it now beats its far end's label; the
///   improvement spreads from there, as far as it beats what nodes hold.
///
/// Both then run as one Dijkstra over what they queued.
pub(crate) fn update_routes(
    me: &NodeName,
    lsdb: &LinkStateDb,
    table: &mut RoutingTable,
    changes: &Changes,
) -> Option<usize> {
    let source = source_slot(me, lsdb)?;
    if changes.rebuilt || table.source != source {
        return None;
    }
    // Between reassignments slots are only added: new ones start unreachable.
    let n = lsdb.slot_count();
    if table.by_slot.len() < n {
        grow(&mut table.by_slot, n, Hop::NONE);
        grow(&mut table.parents, n, NONE);
    }
    if !Arc::ptr_eq(&table.names, lsdb.names()) {
        table.names = lsdb.names().clone();
    }
    let graph = Graph::of(lsdb, source);
    let before: FastMap<u32, Option<&[(u32, u32)]>> = changes
        .origins
        .iter()
        .map(|(slot, links)| (*slot, links.as_deref()))
        .collect();
    let links_before = |u: u32| match before.get(&u) {
        Some(links) => links.unwrap_or(&[]),
        None => graph.links(u),
    };
    // Every directed link with a changed end, once.
    let mut links: Vec<(u32, u32)> = Vec::new();
    for &(o, _) in &changes.origins {
        for &(w, _) in links_before(o).iter().chain(graph.links(o)) {
            links.push((o, w));
            links.push((w, o));
        }
    }
    links.sort_unstable();
    links.dedup();
    let mut worse = Vec::new();
    let mut better = Vec::new();
    for (u, v) in links {
        let (then, now) = (two_way(links_before, u, v), graph.link(u, v));
        match (then, now) {
            // Worse, and it was the far end's link in the tree.
            (Some(then), now)
                if now.is_none_or(|now| now > then) && table.parents[v as usize] == u =>
            {
                worse.push(v)
            }
            (then, Some(now)) if then.is_none_or(|then| now < then) => better.push((u, v, now)),
            _ => {}
        }
    }
    // Labels as they were, of each slot that changes, to count what changed.
    let mut saved: Vec<(u32, Hop)> = Vec::new();
    let mut seen = vec![false; n];
    let mut save = |slot: u32, held: Hop| {
        if !std::mem::replace(&mut seen[slot as usize], true) {
            saved.push((slot, held));
        }
    };
    let mut queue = RadixHeap::default();
    if !worse.is_empty() {
        let subtree = subtree_of(table, source, &worse);
        // Cleared first: a cleared slot must not label another one below.
        for (slot, &inside) in subtree.iter().enumerate() {
            if inside {
                save(slot as u32, table.by_slot[slot]);
                table.by_slot[slot] = Hop::NONE;
                table.parents[slot] = NONE;
            }
        }
        for (w, _) in subtree.iter().enumerate().filter(|(_, &inside)| inside) {
            let w = w as u32;
            // w advertises each u it lists: only u's side of the link is left to check.
            for &(u, _) in graph.links(w) {
                if !subtree[u as usize] && graph.label(table, u).reachable() {
                    if let Some(cost) = cost_to(graph.links(u), w) {
                        graph.offer(table, u, w, cost);
                    }
                }
            }
            if table.by_slot[w as usize].reachable() {
                queue.push(table.by_slot[w as usize].cost, w);
            }
        }
    }
    for (u, v, cost) in better {
        if graph.label(table, u).reachable() {
            if let Some(held) = graph.offer(table, u, v, cost) {
                save(v, held);
                queue.push(table.by_slot[v as usize].cost, v);
            }
        }
    }
    graph.settle(table, &mut queue, &mut vec![false; n], &mut save);
    let mut changed = 0;
    for (slot, held) in saved {
        let now = table.by_slot[slot as usize];
        if now != held {
            changed += 1;
            table.len += usize::from(now.reachable());
            table.len -= usize::from(held.reachable());
        }
    }
    Some(changed)
}

/// The slot of `me` when the database holds its own advertisement (routes start there).
fn source_slot(me: &NodeName, lsdb: &LinkStateDb) -> Option<u32> {
    lsdb.slot(me).filter(|&slot| lsdb.at(slot).is_some())
}

/// Extend `slots` to `n` entries of `fill`.
fn grow<T: Clone>(slots: &mut Box<[T]>, n: usize, fill: T) {
    let mut grown = std::mem::take(slots).into_vec();
    grown.resize(n, fill);
    *slots = grown.into_boxed_slice();
}

/// Which slots lie in the shortest-path tree below any of `roots` (roots included).
fn subtree_of(table: &RoutingTable, source: u32, roots: &[u32]) -> Vec<bool> {
    const UNKNOWN: u8 = 0;
    const INSIDE: u8 = 1;
    const OUTSIDE: u8 = 2;
    let mut state = vec![UNKNOWN; table.parents.len()];
    state[source as usize] = OUTSIDE;
    for &root in roots {
        state[root as usize] = INSIDE;
    }
    let mut chain = Vec::new();
    for start in 0..table.parents.len() as u32 {
        // Climb to a slot whose side is known, then give the whole climb that side.
        let mut at = start;
        while state[at as usize] == UNKNOWN {
            chain.push(at);
            at = table.parents[at as usize];
            if at == NONE {
                break;
            }
        }
        let side = if at == NONE {
            OUTSIDE
        } else {
            state[at as usize]
        };
        for slot in chain.drain(..) {
            state[slot as usize] = side;
        }
    }
    state.into_iter().map(|side| side == INSIDE).collect()
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

    /// Random meshes changed a few advertisements at a time (links added, dropped,
    /// re-costed on one side or both, origins gone and back, new names out of name
    /// order): after each batch the repaired table is exactly the fresh one.
    #[test]
    fn repaired_tables_equal_fresh_ones() {
        use crate::rng::Rng;
        let mut incremental = 0;
        for seed in 0..300 {
            let mut rng = Rng::seed(seed);
            let nodes = 4 + rng.below(20) as usize;
            let name = |i: usize| n(&format!("n{:02}", (i * 7) % 41));
            // Each origin's links (neighbour index → cost); symmetric at first.
            let mut links: Vec<std::collections::BTreeMap<usize, u32>> =
                vec![Default::default(); nodes + 8];
            for a in 0..nodes {
                for _ in 0..2 {
                    let b = rng.below(nodes as u64) as usize;
                    let cost = 1 + rng.below(3) as u32;
                    if a != b {
                        links[a].insert(b, cost);
                        links[b].insert(a, cost);
                    }
                }
            }
            let mut present: Vec<bool> = (0..links.len()).map(|i| i < nodes).collect();
            let mut sequence = 1;
            let mut db = LinkStateDb::new(100);
            let mut install = |db: &mut LinkStateDb, origin: usize, links: &[(usize, u32)]| {
                sequence += 1;
                let mut links: Vec<LsaLink> = links
                    .iter()
                    .map(|&(b, cost)| LsaLink {
                        neighbour: name(b),
                        cost,
                    })
                    .collect();
                links.sort_by(|x, y| x.neighbour.cmp(&y.neighbour));
                let lsa = Lsa {
                    origin: name(origin),
                    sequence,
                    links,
                };
                let signed = SignedLsa {
                    lsa,
                    credential: Arc::from(&[][..]),
                    signature: vec![],
                };
                db.install(Arc::new(signed), Instant::ZERO);
            };
            for (a, own) in links.iter().enumerate().take(nodes) {
                let own: Vec<(usize, u32)> = own.iter().map(|(&b, &c)| (b, c)).collect();
                install(&mut db, a, &own);
            }
            let me = name(0);
            db.take_changes();
            let mut table = compute_routes(&me, &db);
            for _ in 0..30 {
                for _ in 0..1 + rng.below(4) {
                    let a = rng.below(links.len() as u64) as usize;
                    let b = rng.below(links.len() as u64) as usize;
                    match rng.below(6) {
                        _ if a == b => {}
                        0 if a != 0 => {
                            present[a] = false;
                            db.remove(&name(a));
                            continue;
                        }
                        1 => {
                            links[a].remove(&b);
                            if rng.below(2) == 0 {
                                links[b].remove(&a);
                            }
                        }
                        _ => {
                            let cost = 1 + rng.below(3) as u32;
                            links[a].insert(b, cost);
                            if rng.below(2) == 0 {
                                links[b].insert(a, cost);
                            }
                        }
                    }
                    present[a] = true;
                    let own: Vec<(usize, u32)> = links[a].iter().map(|(&b, &c)| (b, c)).collect();
                    install(&mut db, a, &own);
                }
                let changes = db.take_changes();
                let previous = table.clone();
                let changed = update_routes(&me, &db, &mut table, &changes);
                let fresh = compute_routes(&me, &db);
                match changed {
                    Some(changed) => {
                        incremental += 1;
                        assert_eq!(changed, fresh.changes_from(&previous), "seed {seed}");
                    }
                    None => table = fresh.clone(),
                }
                assert!(
                    fresh == table,
                    "seed {seed}: repaired {:?} but fresh {:?}",
                    table.iter().collect::<Vec<_>>(),
                    fresh.iter().collect::<Vec<_>>()
                );
                assert_eq!(fresh.len(), table.len(), "seed {seed}");
            }
        }
        assert!(incremental > 8000, "only {incremental} incremental runs");
    }

    #[test]
    fn unknown_self_gives_empty_table() {
        let db = db(&[("a", "b", 1)], &[]);
        assert!(compute_routes(&n("zz"), &db).is_empty());
    }
}
