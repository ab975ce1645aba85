//! Invariant checkers that see across nodes, which no single node can: loop-free
//! forwarding, a route for every connected pair, agreeing link-state databases.

use x0tta6bl4_proto::Rng;

use crate::engine::{Sim, Status};

/// Where following next hops from a source towards a destination ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The destination was reached over these nodes (source first).
    Reached(Vec<u32>),
    /// A node on the way has no route.
    NoRoute,
    /// The next hops loop.
    Loop,
    /// A next hop is not running or its link carries no frames.
    Broken,
    /// The path is longer than the hop limit (`ttl_default`): messages die on the way.
    TooLong,
}

/// Where a node's walk towards the destination goes, once known.
#[derive(Clone, Copy, Debug)]
enum Known {
    Unknown,
    /// Reaches it over `next` in `hops` hops.
    Reached {
        next: u32,
        hops: u32,
    },
    /// Ends as this (never [`Walk::Reached`] or [`Walk::TooLong`]).
    Fails(Failure),
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    NoRoute,
    Loop,
    Broken,
}

/// Walks of many sources towards one destination. A node's walk always goes the same
/// way, so each node's forwarding table is read once however many walks cross it:
/// checking all n² pairs costs O(n) table lookups per destination, not one per hop.
pub struct Walks<'a> {
    sim: &'a Sim,
    destination: u32,
    /// What is known of each node's walk, valid when stamped with `destination_epoch`.
    known: Vec<(u32, Known)>,
    destination_epoch: u32,
    /// The walk that last passed each node (loop detection in O(1)).
    passed: Vec<u32>,
    walks: u32,
}

impl<'a> Walks<'a> {
    /// Walks towards `destination`.
    pub fn towards(sim: &'a Sim, destination: u32) -> Self {
        let n = sim.len();
        Walks {
            sim,
            destination,
            known: vec![(0, Known::Unknown); n],
            destination_epoch: 0,
            passed: vec![u32::MAX; n],
            walks: 0,
        }
    }

    /// Walk towards `destination` from now on (reusing the memory).
    pub fn retarget(&mut self, destination: u32) {
        if destination != self.destination {
            self.destination = destination;
            self.destination_epoch = self.destination_epoch.wrapping_add(1);
        }
    }

    fn known(&self, at: u32) -> Known {
        match self.known[at as usize] {
            (epoch, known) if epoch == self.destination_epoch => known,
            _ => Known::Unknown,
        }
    }

    fn learn(&mut self, at: u32, known: Known) {
        self.known[at as usize] = (self.destination_epoch, known);
    }

    /// The next node from `at`, or how the walk fails there.
    fn step(&self, at: u32) -> Result<u32, Failure> {
        let sim = self.sim;
        let target = sim.name(self.destination);
        let next_hop = sim.node(at).routes().next_hop(target);
        let next = next_hop.ok_or(Failure::NoRoute)?;
        let next = sim.index_of(next).ok_or(Failure::Broken)?;
        let passable = sim.link_between(at, next).is_some_and(|l| sim.passable(l));
        passable.then_some(next).ok_or(Failure::Broken)
    }

    /// Follow the forwarding tables from `source` towards the destination.
    pub fn walk(&mut self, source: u32) -> Walk {
        let walk = self.walks;
        self.walks = self.walks.wrapping_add(1);
        let mut path = vec![source];
        self.passed[source as usize] = walk;
        let mut at = source;
        // Climb until the walk reaches what is known.
        let ended = loop {
            if at == self.destination {
                break Ok(0);
            }
            match self.known(at) {
                Known::Reached { hops, .. } => break Ok(hops),
                Known::Fails(failure) => break Err(failure),
                Known::Unknown => {}
            }
            match self.step(at) {
                Ok(next) if self.passed[next as usize] == walk => break Err(Failure::Loop),
                Ok(next) => {
                    self.passed[next as usize] = walk;
                    path.push(next);
                    at = next;
                }
                Err(failure) => break Err(failure),
            }
        };
        // Every node climbed goes the same way from now on.
        match ended {
            Err(failure) => {
                for &v in &path {
                    self.learn(v, Known::Fails(failure));
                }
                match failure {
                    Failure::NoRoute => Walk::NoRoute,
                    Failure::Loop => Walk::Loop,
                    Failure::Broken => Walk::Broken,
                }
            }
            Ok(mut hops) => {
                for pair in path.windows(2).rev() {
                    hops += 1;
                    let known = Known::Reached {
                        next: pair[1],
                        hops,
                    };
                    self.learn(pair[0], known);
                }
                while let Known::Reached { next, .. } = self.known(at) {
                    path.push(next);
                    at = next;
                }
                let hop_limit = usize::from(self.sim.protocol().ttl_default);
                if path.len() - 1 > hop_limit {
                    return Walk::TooLong;
                }
                Walk::Reached(path)
            }
        }
    }
}

/// Component id of every running node over usable links (`u32::MAX` if not running).
pub fn components(sim: &Sim) -> Vec<u32> {
    let n = sim.len();
    let mut component = vec![u32::MAX; n];
    let mut next_id = 0;
    let mut stack = Vec::new();
    for start in 0..n as u32 {
        if component[start as usize] != u32::MAX || sim.status(start) != Status::Running {
            continue;
        }
        component[start as usize] = next_id;
        stack.push(start);
        while let Some(u) = stack.pop() {
            for &l in sim.links_of(u) {
                let link = &sim.links()[l as usize];
                let v = if link.a == u { link.b } else { link.a };
                if component[v as usize] == u32::MAX && sim.usable(l) {
                    component[v as usize] = next_id;
                    stack.push(v);
                }
            }
        }
        next_id += 1;
    }
    component
}

/// The result of a health check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Pairs checked.
    pub pairs_checked: usize,
    /// Connected pairs without a working path.
    pub unreachable_pairs: usize,
    /// Pairs whose next hops loop.
    pub loops: usize,
    /// Pairs whose path is longer than the hop limit (`ttl_default`).
    pub paths_over_hop_limit: usize,
    /// Running nodes whose number of routes differs from their component's size - 1.
    pub route_count_mismatches: usize,
    /// Node pairs in one component whose link-state database digests differ.
    pub lsdb_disagreements: usize,
}

impl Health {
    /// Whether every invariant holds.
    pub fn ok(&self) -> bool {
        self.unreachable_pairs == 0
            && self.loops == 0
            && self.paths_over_hop_limit == 0
            && self.route_count_mismatches == 0
    }
}

/// Check the invariants. With `pairs_max` below the number of connected pairs, a seeded
/// sample of pairs is walked (large meshes); route counts are always checked in full.
pub fn check(sim: &Sim, pairs_max: usize, rng: &mut Rng) -> Health {
    check_with(sim, pairs_max, rng, true)
}

/// [`check`] without the per-node route counts (which cost a lookup per route): only the
/// walks. Cheap enough to run every few simulated milliseconds on large meshes.
pub fn check_paths(sim: &Sim, pairs_max: usize, rng: &mut Rng) -> Health {
    check_with(sim, pairs_max, rng, false)
}

fn check_with(sim: &Sim, pairs_max: usize, rng: &mut Rng, route_counts: bool) -> Health {
    let component = components(sim);
    let mut sizes = std::collections::HashMap::new();
    for &c in component.iter().filter(|&&c| c != u32::MAX) {
        *sizes.entry(c).or_insert(0usize) += 1;
    }
    let running: Vec<u32> = (0..sim.len() as u32)
        .filter(|&i| component[i as usize] != u32::MAX)
        .collect();
    let mut health = Health::default();
    // The nodes outside the largest component, when it holds most of the mesh: its
    // members count their routes that lead outside it rather than all their routes.
    let largest = sizes
        .iter()
        .max_by_key(|&(c, size)| (size, std::cmp::Reverse(c)));
    let outside = largest
        .filter(|&(_, &size)| size * 2 > sim.len())
        .map(|(&c, _)| {
            let names: Vec<_> = (0..sim.len() as u32)
                .filter(|&j| component[j as usize] != c)
                .map(|j| sim.name(j))
                .collect();
            (c, names)
        });
    for &i in running.iter().filter(|_| route_counts) {
        // A route to a crashed node may linger until its advertisement ages out, so
        // count only routes to running nodes in the same component.
        let routes = sim.node(i).routes();
        let routed = match &outside {
            // Every destination a route can lead to is a simulated node.
            Some((c, names)) if *c == component[i as usize] => {
                let leaving = names.iter().filter(|&&d| routes.next_hop(d).is_some());
                routes.len() - leaving.count()
            }
            _ => routes
                .iter()
                .filter(|(d, _)| {
                    sim.index_of(d)
                        .is_some_and(|j| component[j as usize] == component[i as usize])
                })
                .count(),
        };
        if routed + 1 != sizes[&component[i as usize]] {
            health.route_count_mismatches += 1;
        }
    }
    let total_pairs = running.len() * running.len().saturating_sub(1);
    // Pairs by destination, so walks towards one destination share what they learn.
    let mut pairs: Vec<(u32, u32)> = if total_pairs <= pairs_max {
        let all = running
            .iter()
            .flat_map(|&s| running.iter().map(move |&d| (d, s)));
        all.collect()
    } else {
        let mut draw = || running[rng.below(running.len() as u64) as usize];
        (0..pairs_max)
            .map(|_| (draw(), draw()))
            .map(|(s, d)| (d, s))
            .collect()
    };
    pairs.sort_by_key(|&(d, _)| d);
    let mut walks = Walks::towards(sim, 0);
    for group in pairs.chunk_by(|a, b| a.0 == b.0) {
        walks.retarget(group[0].0);
        for &(d, s) in group {
            if s == d || component[s as usize] != component[d as usize] {
                continue;
            }
            health.pairs_checked += 1;
            match walks.walk(s) {
                Walk::Reached(_) => {}
                Walk::Loop => health.loops += 1,
                Walk::TooLong => health.paths_over_hop_limit += 1,
                Walk::NoRoute | Walk::Broken => health.unreachable_pairs += 1,
            }
        }
    }
    health
}

/// Links that carry traffic (see [`components`]) but that an end does not hold up, by
/// that end's state: what a mesh that does not converge is waiting for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldDown {
    /// Usable links.
    pub usable: usize,
    /// Of those, links an end holds damped (it flapped).
    pub damped: usize,
    /// Links an end holds down.
    pub down: usize,
    /// Links an end has not yet heard on (or has no entry for).
    pub init: usize,
}

impl std::fmt::Display for HeldDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "of {} links that carry traffic, {} damped, {} down, {} not yet up at an end",
            self.usable, self.damped, self.down, self.init
        )
    }
}

/// Count the usable links that an end does not hold up ([`HeldDown`]).
pub fn held_down(sim: &Sim) -> HeldDown {
    use x0tta6bl4_proto::NeighbourState;
    let mut out = HeldDown::default();
    let states: Vec<std::collections::HashMap<_, _>> = (0..sim.len() as u32)
        .map(|i| {
            sim.node(i)
                .neighbours()
                .into_iter()
                .map(|n| (n.name, n.state))
                .collect()
        })
        .collect();
    for (l, link) in sim.links().iter().enumerate() {
        if !sim.usable(l as u32) {
            continue;
        }
        out.usable += 1;
        let of = |i: u32, other: u32| states[i as usize].get(sim.name(other)).copied();
        let ends = [of(link.a, link.b), of(link.b, link.a)];
        if ends.contains(&Some(NeighbourState::Damped)) {
            out.damped += 1;
        } else if ends.contains(&Some(NeighbourState::Down)) {
            out.down += 1;
        } else if ends
            .iter()
            .any(|s| matches!(s, None | Some(NeighbourState::Init)))
        {
            out.init += 1;
        }
    }
    out
}

/// Count node pairs, among up to `nodes_max` sampled running nodes, whose link-state
/// databases differ while they are in the same component.
pub fn lsdb_disagreements(sim: &Sim, nodes_max: usize) -> usize {
    let component = components(sim);
    let running: Vec<u32> = (0..sim.len() as u32)
        .filter(|&i| component[i as usize] != u32::MAX)
        .collect();
    let step = (running.len() / nodes_max.max(1)).max(1);
    let sample: Vec<u32> = running.iter().copied().step_by(step).collect();
    let mut disagreements = 0;
    for a in 0..sample.len() {
        for b in (a + 1)..sample.len() {
            let (i, j) = (sample[a], sample[b]);
            if component[i as usize] == component[j as usize]
                && !sim.node(i).lsdb().agrees_with(sim.node(j).lsdb())
            {
                disagreements += 1;
            }
        }
    }
    disagreements
}

/// Count running nodes whose link-state database differs from that of the first running
/// node of their component: every node is checked (linear in the nodes, each comparison
/// linear in the database), so a mesh started from a snapshot can be verified in full.
pub fn lsdb_disagreeing_nodes(sim: &Sim) -> usize {
    let component = components(sim);
    let mut reference: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    let mut disagreeing = 0;
    for i in (0..sim.len() as u32).filter(|&i| component[i as usize] != u32::MAX) {
        let first = *reference.entry(component[i as usize]).or_insert(i);
        if !sim.node(i).lsdb().agrees_with(sim.node(first).lsdb()) {
            disagreeing += 1;
        }
    }
    disagreeing
}
