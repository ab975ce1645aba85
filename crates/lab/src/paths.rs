//! Which flows a fault hits (walks over the routes just before it) and their outages,
//! computed by `x0tta6bl4_proto::measure` exactly as the twin computes them.

use std::collections::BTreeMap;

use x0tta6bl4_proto::measure::flow_outage_us;
use x0tta6bl4_twin::Topology;

use crate::fault::Plan;

/// Every node's forwarding table: node -> destination -> next hop (node indices).
pub type Routes = BTreeMap<usize, BTreeMap<usize, usize>>;

/// Arrival times (Unix µs, ascending) per flow (source, destination).
pub type Arrivals = BTreeMap<(usize, usize), Vec<u64>>;

/// The path from `s` to `d` following `routes`, or `None` on a hole or a loop.
pub fn walk(routes: &Routes, s: usize, d: usize) -> Option<Vec<usize>> {
    let mut path = vec![s];
    let mut at = s;
    while at != d {
        let next = *routes.get(&at)?.get(&d)?;
        if path.contains(&next) {
            return None;
        }
        path.push(next);
        at = next;
    }
    Some(path)
}

fn link_between(topology: &Topology, u: usize, v: usize) -> Option<usize> {
    topology.links.iter().position(|l| {
        let (a, b) = (l.a as usize, l.b as usize);
        (a, b) == (u, v) || (a, b) == (v, u)
    })
}

/// Flows between survivors whose path before the fault crosses what the plan breaks.
pub fn affected(routes: &Routes, topology: &Topology, plan: &Plan) -> Vec<(usize, usize)> {
    let survivors: Vec<usize> = (0..topology.len())
        .filter(|v| !plan.nodes.contains(v))
        .collect();
    let mut out = Vec::new();
    for &s in &survivors {
        for &d in &survivors {
            if s == d {
                continue;
            }
            let Some(path) = walk(routes, s, d) else {
                continue;
            };
            let crosses_node = path[1..path.len() - 1]
                .iter()
                .any(|v| plan.nodes.contains(v) || plan.stressed.contains(v));
            let crosses_link = path.windows(2).any(|w| {
                link_between(topology, w[0], w[1]).is_some_and(|l| plan.links.contains(&l))
            });
            if crosses_node || crosses_link {
                out.push((s, d));
            }
        }
    }
    out
}

/// Outage samples in ms of the `flows`, and how many never delivered again. A flow
/// across a partition counts from the heal (nothing can flow before it), every other
/// flow is the longest gap after the fault.
pub fn outages(
    flows: &[(usize, usize)],
    arrivals: &Arrivals,
    plan: &Plan,
    fault_us: u64,
    heal_us: u64,
) -> (Vec<f64>, usize) {
    let mut samples = Vec::new();
    let mut unhealed = 0;
    let empty = Vec::new();
    for &(s, d) in flows {
        let list = arrivals.get(&(s, d)).unwrap_or(&empty);
        let across = plan.groups.as_ref().is_some_and(|g| g[s] != g[d]);
        let outage = if across {
            list.iter().find(|&&t| t > heal_us).map(|&t| t - heal_us)
        } else {
            flow_outage_us(list, fault_us)
        };
        let healed = list.last().is_some_and(|&t| t > heal_us);
        match outage {
            Some(us) if healed => samples.push(us as f64 / 1e3),
            _ => unhealed += 1,
        }
    }
    (samples, unhealed)
}

/// Why `routes` lead no loop-free path from `s` to `d` avoiding `avoid`, in a few
/// words (for the error of a mesh that does not converge); `None` when they do.
pub fn why_unreachable(routes: &Routes, s: usize, d: usize, avoid: &[usize]) -> Option<String> {
    let mut path = vec![s];
    let mut at = s;
    while at != d {
        let Some(table) = routes.get(&at) else {
            return Some(format!("{at} did not answer"));
        };
        let Some(&next) = table.get(&d) else {
            return Some(format!("{at} has no route"));
        };
        if path.contains(&next) {
            return Some(format!("loop at {next}"));
        }
        if avoid.contains(&next) {
            return Some(format!("{at} routes via the failed {next}"));
        }
        path.push(next);
        at = next;
    }
    None
}

/// The nodes of the forwarding loop `routes` lead `s` into on the way to `d`, if any.
pub fn loop_on_way(routes: &Routes, s: usize, d: usize) -> Option<Vec<usize>> {
    let mut path = vec![s];
    let mut at = s;
    while at != d {
        let next = *routes.get(&at)?.get(&d)?;
        if let Some(k) = path.iter().position(|&v| v == next) {
            return Some(path[k..].to_vec());
        }
        path.push(next);
        at = next;
    }
    None
}

/// Pairs of `nodes` without a loop-free path in `routes` that avoids `avoid`.
pub fn unreachable_pairs(routes: &Routes, nodes: &[usize], avoid: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &s in nodes {
        for &d in nodes {
            if s != d && walk(routes, s, d).is_none_or(|p| p.iter().any(|v| avoid.contains(v))) {
                out.push((s, d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_twin::LinkParams;

    fn ring_routes() -> Routes {
        // 4-ring 0-1-2-3-0, clockwise routing.
        let mut r = Routes::new();
        for n in 0..4 {
            let table = (0..4)
                .filter(|&d| d != n)
                .map(|d| (d, (n + 1) % 4))
                .collect();
            r.insert(n, table);
        }
        r
    }

    #[test]
    fn affected_flows_cross_the_victim() {
        let ring = Topology::ring(4, &LinkParams::default()).unwrap();
        let routes = ring_routes();
        assert_eq!(walk(&routes, 0, 2), Some(vec![0, 1, 2]));
        let plan = Plan {
            nodes: vec![1],
            ..Plan::default()
        };
        let hit = affected(&routes, &ring, &plan);
        assert_eq!(hit, vec![(0, 2), (0, 3), (3, 2)]);
        let mut arrivals = Arrivals::new();
        arrivals.insert((0, 2), vec![0, 10_000, 20_000, 200_000, 210_000]);
        let (samples, unhealed) = outages(&hit, &arrivals, &plan, 15_000, 15_000);
        assert_eq!(samples, vec![180.0]);
        assert_eq!(unhealed, 2, "(0, 3) and (3, 2) have no arrivals");
        assert_eq!(
            unreachable_pairs(&routes, &[0, 2, 3], &[1]),
            vec![(0, 2), (0, 3), (3, 2)]
        );
        assert_eq!(why_unreachable(&routes, 0, 3, &[]), None);
        assert_eq!(
            why_unreachable(&routes, 0, 3, &[1]).as_deref(),
            Some("0 routes via the failed 1")
        );
        let mut holes = routes.clone();
        holes.get_mut(&1).unwrap().remove(&3);
        assert_eq!(
            why_unreachable(&holes, 0, 3, &[]).as_deref(),
            Some("1 has no route")
        );
        holes.remove(&2);
        assert_eq!(
            why_unreachable(&holes, 1, 0, &[]).as_deref(),
            Some("2 did not answer")
        );
        let mut looped = routes.clone();
        looped.get_mut(&2).unwrap().insert(0, 1);
        looped.get_mut(&1).unwrap().insert(0, 2);
        assert_eq!(
            why_unreachable(&looped, 1, 0, &[]).as_deref(),
            Some("loop at 1")
        );
    }
}
