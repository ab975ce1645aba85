//! The demo's seeded random topology and its choice of victims. Pure: no I/O, all
//! randomness from the seeded [`Rng`].

use std::collections::{BTreeSet, VecDeque};

use x0tta6bl4_proto::Rng;

/// How many greedy attempts [`Topology::choose_victims`] makes before giving up.
const VICTIM_ATTEMPTS_MAX: usize = 256;

/// An undirected connected graph over nodes `0..nodes`. Each edge is stored once as
/// `(dialer, listener)`: the dialer lists the listener in its `peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Number of nodes.
    pub nodes: usize,
    /// Edges as `(dialer, listener)`, each unordered pair at most once.
    pub edges: Vec<(usize, usize)>,
}

impl Topology {
    /// A random connected graph: a random spanning tree (each node, in a random order,
    /// attaches to a random earlier one), plus random extra edges until the mean degree
    /// reaches `degree_mean` (or the graph is complete). Which end dials is random too.
    pub fn random(nodes: usize, degree_mean: f64, rng: &mut Rng) -> Topology {
        assert!(nodes >= 2, "a topology needs at least two nodes");
        let order = shuffled(nodes, rng);
        let mut pairs = BTreeSet::new();
        for index in 1..nodes {
            let earlier = order[rng.below(index as u64) as usize];
            pairs.insert(ordered(order[index], earlier));
        }
        let complete = nodes * (nodes - 1) / 2;
        let wanted =
            ((nodes as f64 * degree_mean / 2.0).ceil() as usize).clamp(nodes - 1, complete);
        let attempts_max = complete * 20;
        for _ in 0..attempts_max {
            if pairs.len() >= wanted {
                break;
            }
            let a = rng.below(nodes as u64) as usize;
            let b = rng.below(nodes as u64) as usize;
            if a != b {
                pairs.insert(ordered(a, b));
            }
        }
        let edges = pairs
            .into_iter()
            .map(|(a, b)| if rng.below(2) == 0 { (a, b) } else { (b, a) })
            .collect();
        let topology = Topology { nodes, edges };
        assert!(
            topology.connected_without(&[]),
            "a spanning tree plus edges is connected"
        );
        topology
    }

    /// The neighbours of every node.
    pub fn adjacency(&self) -> Vec<Vec<usize>> {
        let mut adjacency = vec![Vec::new(); self.nodes];
        for &(a, b) in &self.edges {
            adjacency[a].push(b);
            adjacency[b].push(a);
        }
        for list in &mut adjacency {
            list.sort_unstable();
        }
        adjacency
    }

    /// The listeners node `dialer` dials.
    pub fn dials_of(&self, dialer: usize) -> Vec<usize> {
        self.edges
            .iter()
            .filter(|e| e.0 == dialer)
            .map(|e| e.1)
            .collect()
    }

    /// Whether the nodes outside `removed` still form one connected graph.
    pub fn connected_without(&self, removed: &[usize]) -> bool {
        let adjacency = self.adjacency();
        let alive: Vec<usize> = (0..self.nodes).filter(|n| !removed.contains(n)).collect();
        let Some(&start) = alive.first() else {
            return true;
        };
        let mut seen = vec![false; self.nodes];
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        let mut reached = 1;
        while let Some(node) = queue.pop_front() {
            for &next in &adjacency[node] {
                if !seen[next] && !removed.contains(&next) {
                    seen[next] = true;
                    reached += 1;
                    queue.push_back(next);
                }
            }
        }
        reached == alive.len()
    }

    /// For each node, how many ordered pairs' shortest paths (in hops) pass through it
    /// as an intermediate hop; a pair with several shortest paths counts for each in
    /// proportion (betweenness, Brandes' algorithm), so no node is favoured by its index.
    pub fn transit_load(&self) -> Vec<f64> {
        let adjacency = self.adjacency();
        let mut load = vec![0.0; self.nodes];
        for source in 0..self.nodes {
            for (node, dependency) in dependencies(&adjacency, source).into_iter().enumerate() {
                if node != source {
                    load[node] += dependency;
                }
            }
        }
        load
    }

    /// Choose `count` victims such that the survivors stay connected, preferring nodes
    /// that carry transit traffic in this graph ([`Topology::transit_load`]). `None` when
    /// no such choice was found.
    pub fn choose_victims(&self, count: usize, rng: &mut Rng) -> Option<Vec<usize>> {
        self.choose_victims_by_load(count, &self.transit_load(), rng)
    }

    /// Choose `count` victims such that the survivors stay connected, preferring nodes
    /// with a high `load`: each pick is weighted by the fourth power of its load, so the
    /// busiest nodes are likely but not certain (uniform when every load is zero). `None`
    /// when no such choice was found.
    pub fn choose_victims_by_load(
        &self,
        count: usize,
        load: &[f64],
        rng: &mut Rng,
    ) -> Option<Vec<usize>> {
        assert_eq!(load.len(), self.nodes, "one load per node");
        if count == 0 {
            return Some(Vec::new());
        }
        if count + 2 > self.nodes {
            return None;
        }
        let weight: Vec<f64> = load.iter().map(|&l| l.powi(4)).collect();
        for _ in 0..VICTIM_ATTEMPTS_MAX {
            if let Some(victims) = self.try_victims(count, &weight, rng) {
                return Some(victims);
            }
        }
        None
    }

    fn try_victims(&self, count: usize, load: &[f64], rng: &mut Rng) -> Option<Vec<usize>> {
        let mut victims = Vec::with_capacity(count);
        while victims.len() < count {
            let candidates: Vec<usize> = (0..self.nodes)
                .filter(|n| !victims.contains(n))
                .filter(|&n| {
                    let mut removed = victims.clone();
                    removed.push(n);
                    self.connected_without(&removed)
                })
                .collect();
            let pick = weighted_pick(&candidates, load, rng)?;
            victims.push(pick);
        }
        victims.sort_unstable();
        Some(victims)
    }
}

/// A candidate drawn with probability proportional to its load (uniformly when every
/// load is zero); `None` when there is no candidate.
fn weighted_pick(candidates: &[usize], load: &[f64], rng: &mut Rng) -> Option<usize> {
    let last = *candidates.last()?;
    let total: f64 = candidates.iter().map(|&c| load[c]).sum();
    if total <= 0.0 {
        return Some(candidates[rng.below(candidates.len() as u64) as usize]);
    }
    let mut ticket = rng.unit() * total;
    for &candidate in candidates {
        if ticket < load[candidate] {
            return Some(candidate);
        }
        ticket -= load[candidate];
    }
    Some(last) // rounding left a sliver of the ticket
}

/// Brandes' dependency of `source` on every node: the number of shortest paths from
/// `source` to every target that pass through the node, each pair's paths weighing one.
fn dependencies(adjacency: &[Vec<usize>], source: usize) -> Vec<f64> {
    let count = adjacency.len();
    let mut distance = vec![usize::MAX; count];
    let mut paths = vec![0.0f64; count];
    let mut order = Vec::with_capacity(count);
    distance[source] = 0;
    paths[source] = 1.0;
    let mut queue = VecDeque::from([source]);
    while let Some(node) = queue.pop_front() {
        order.push(node);
        for &next in &adjacency[node] {
            if distance[next] == usize::MAX {
                distance[next] = distance[node] + 1;
                queue.push_back(next);
            }
            if distance[next] == distance[node] + 1 {
                paths[next] += paths[node];
            }
        }
    }
    let mut dependency = vec![0.0f64; count];
    for &node in order.iter().rev() {
        for &previous in &adjacency[node] {
            if distance[previous] != usize::MAX && distance[previous] + 1 == distance[node] {
                dependency[previous] += paths[previous] / paths[node] * (1.0 + dependency[node]);
            }
        }
    }
    dependency
}

fn shuffled(count: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    for index in (1..count).rev() {
        let other = rng.below(index as u64 + 1) as usize;
        order.swap(index, other);
    }
    order
}

fn ordered(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_graphs_are_connected_simple_and_reach_the_degree() {
        for seed in 0..200 {
            let nodes = 2 + (seed as usize % 20);
            let topology = Topology::random(nodes, 3.0, &mut Rng::seed(seed));
            assert!(topology.connected_without(&[]));
            let pairs: BTreeSet<_> = topology.edges.iter().map(|&(a, b)| ordered(a, b)).collect();
            assert_eq!(
                pairs.len(),
                topology.edges.len(),
                "each edge in exactly one node's peers"
            );
            assert!(topology
                .edges
                .iter()
                .all(|&(a, b)| a != b && a < nodes && b < nodes));
            let wanted = ((nodes as f64 * 1.5).ceil() as usize).min(nodes * (nodes - 1) / 2);
            assert!(topology.edges.len() >= wanted.max(nodes - 1));
        }
    }

    #[test]
    fn same_seed_same_topology() {
        let a = Topology::random(10, 3.0, &mut Rng::seed(42));
        let b = Topology::random(10, 3.0, &mut Rng::seed(42));
        let c = Topology::random(10, 3.0, &mut Rng::seed(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ten_nodes_have_multi_hop_paths() {
        for seed in 0..50 {
            let topology = Topology::random(10, 3.0, &mut Rng::seed(seed));
            assert!(
                topology.transit_load().iter().any(|&l| l > 0.0),
                "seed {seed}: no transit node"
            );
        }
    }

    #[test]
    fn line_transit_load() {
        // 0 - 1 - 2 - 3
        let line = Topology {
            nodes: 4,
            edges: vec![(0, 1), (1, 2), (3, 2)],
        };
        // Node 1 carries 0<->2 and 0<->3 both ways; node 2 carries 0<->3 and 1<->3.
        assert_eq!(line.transit_load(), vec![0.0, 4.0, 4.0, 0.0]);
        assert!(!line.connected_without(&[1]));
        assert!(line.connected_without(&[0]));
        assert_eq!(line.dials_of(3), vec![2]);
    }

    #[test]
    fn victims_keep_survivors_connected_and_carry_transit() {
        for seed in 0..200 {
            let topology = Topology::random(10, 3.0, &mut Rng::seed(seed));
            let victims = topology
                .choose_victims(2, &mut Rng::seed(seed))
                .expect("victims");
            assert_eq!(victims.len(), 2);
            assert_ne!(victims[0], victims[1]);
            assert!(topology.connected_without(&victims), "seed {seed}");
            let load = topology.transit_load();
            assert!(
                victims.iter().any(|&v| load[v] > 0.0),
                "seed {seed}: no transit victim"
            );
        }
    }

    #[test]
    fn impossible_victim_choices_are_refused() {
        let line = Topology {
            nodes: 3,
            edges: vec![(0, 1), (1, 2)],
        };
        // Only the ends can die; killing two of three leaves one node, which is fine
        // for connectivity but leaves no pair to measure, so it is refused.
        assert_eq!(line.choose_victims(2, &mut Rng::seed(1)), None);
        assert_eq!(line.choose_victims(0, &mut Rng::seed(1)), Some(vec![]));
        let victims = line.choose_victims(1, &mut Rng::seed(1)).unwrap();
        assert!(victims == vec![0] || victims == vec![2]);
        // A star cannot lose its centre, and then not both leaves of a 3-star.
        let star = Topology {
            nodes: 4,
            edges: vec![(0, 1), (0, 2), (0, 3)],
        };
        for seed in 0..20 {
            let victims = star.choose_victims(2, &mut Rng::seed(seed)).unwrap();
            assert!(!victims.contains(&0));
        }
    }

    #[test]
    fn square_shares_transit_between_equal_paths() {
        // 0 - 1 - 3 and 0 - 2 - 3: 1 and 2 each carry half of 0<->3.
        let square = Topology {
            nodes: 4,
            edges: vec![(0, 1), (0, 2), (1, 3), (2, 3)],
        };
        assert_eq!(square.transit_load(), vec![1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn victims_are_not_biased_by_index() {
        let mut counts = [0u32; 10];
        for seed in 0..2000 {
            let mut rng = Rng::seed(seed);
            let topology = Topology::random(10, 3.0, &mut rng);
            for victim in topology.choose_victims(2, &mut rng).unwrap() {
                counts[victim] += 1;
            }
        }
        // 4000 picks over 10 nodes: about 400 each.
        assert!(
            counts.iter().all(|&c| (300..500).contains(&c)),
            "{counts:?}"
        );
    }
}
