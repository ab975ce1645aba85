//! What the demo concludes from route snapshots and probe-flow arrivals. Pure: the
//! orchestrator fetches, this module computes.

use std::collections::{BTreeMap, BTreeSet};

use x0tta6bl4_proto::measure::{flow_outage_us, MttrSummary};

/// A survivor pair with no probe arrival within this window before the final fetch is
/// unreachable.
pub const RECENT_WINDOW_US: u64 = 500_000;

/// Every node's forwarding table: node -> destination -> next hop.
pub type RouteSnapshot = BTreeMap<String, BTreeMap<String, String>>;

/// Probe-flow arrivals: (source, target) -> arrival times in Unix µs, ascending.
pub type Arrivals = BTreeMap<(String, String), Vec<u64>>;

/// The path from `source` to `target` through the snapshot, following next hops node by
/// node: `[source, hop, ..., target]`. `None` when a node on the way has no route or the
/// walk loops.
pub fn follow_path(snapshot: &RouteSnapshot, source: &str, target: &str) -> Option<Vec<String>> {
    let mut path = vec![source.to_owned()];
    let mut current = source;
    let hops_max = snapshot.len().max(1);
    for _ in 0..=hops_max {
        if current == target {
            return Some(path);
        }
        let next = snapshot.get(current)?.get(target)?;
        if path.contains(next) {
            return None;
        }
        path.push(next.clone());
        current = next;
    }
    None
}

/// The measured results of one demo run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Survivor flows whose pre-fault path crossed a victim.
    pub affected: Vec<(String, String)>,
    /// Outage of each affected flow that recovered, in milliseconds.
    pub outages_ms: Vec<f64>,
    /// Affected flows with no arrival after the fault.
    pub unhealed: Vec<(String, String)>,
    /// Affected flows with no arrival before the fault (no baseline to measure from).
    pub no_baseline: Vec<(String, String)>,
    /// Survivor flows whose pre-fault path could not be followed in the snapshot.
    pub unresolved: Vec<(String, String)>,
    /// Survivor pairs with no arrival in the last [`RECENT_WINDOW_US`] before the fetch.
    pub unreachable: Vec<(String, String)>,
}

impl Outcome {
    /// The MTTR statistics of the recovered flows.
    pub fn mttr(&self) -> MttrSummary {
        MttrSummary::from_ms(&self.outages_ms)
    }

    /// Healed: every survivor pair is reachable again and every affected flow recovered.
    pub fn healed(&self) -> bool {
        self.unreachable.is_empty() && self.unhealed.is_empty()
    }
}

/// What the run measured.
pub struct Measurement<'a> {
    /// The survivors' names.
    pub survivors: &'a [String],
    /// The killed nodes' names.
    pub victims: &'a [String],
    /// Routes just before the fault.
    pub snapshot: &'a RouteSnapshot,
    /// Arrivals fetched from the survivors after healing.
    pub arrivals: &'a Arrivals,
    /// When the victims were killed, Unix µs.
    pub fault_us: u64,
    /// When each survivor's arrivals were fetched, Unix µs.
    pub fetched_us: &'a BTreeMap<String, u64>,
}

/// Compute the [`Outcome`] of a run.
pub fn analyse(m: &Measurement<'_>) -> Outcome {
    let victims: BTreeSet<&str> = m.victims.iter().map(String::as_str).collect();
    let mut outcome = Outcome::default();
    let empty = Vec::new();
    for source in m.survivors {
        for target in m.survivors.iter().filter(|t| *t != source) {
            let pair = (source.clone(), target.clone());
            let arrivals = m.arrivals.get(&pair).unwrap_or(&empty);
            let fetched_us = m.fetched_us.get(target).copied().unwrap_or(m.fault_us);
            let recent_since = fetched_us.saturating_sub(RECENT_WINDOW_US);
            if arrivals.last().is_none_or(|&t| t < recent_since) {
                outcome.unreachable.push(pair.clone());
            }
            let Some(path) = follow_path(m.snapshot, source, target) else {
                outcome.unresolved.push(pair);
                continue;
            };
            let crossed = path[1..path.len() - 1]
                .iter()
                .any(|hop| victims.contains(hop.as_str()));
            if crossed {
                classify(&mut outcome, pair, arrivals, m.fault_us);
            }
        }
    }
    outcome
}

fn classify(outcome: &mut Outcome, pair: (String, String), arrivals: &[u64], fault_us: u64) {
    outcome.affected.push(pair.clone());
    match flow_outage_us(arrivals, fault_us) {
        Some(outage_us) => outcome.outages_ms.push(outage_us as f64 / 1000.0),
        None if !arrivals.iter().any(|&t| t > fault_us) => outcome.unhealed.push(pair),
        None => outcome.no_baseline.push(pair),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(rows: &[(&str, &str, &str)]) -> RouteSnapshot {
        let mut snapshot = RouteSnapshot::new();
        for &(node, destination, next_hop) in rows {
            snapshot
                .entry(node.into())
                .or_default()
                .insert(destination.into(), next_hop.into());
        }
        snapshot
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// a - b - c, and a - d - c as a backup path.
    fn line() -> RouteSnapshot {
        snapshot(&[
            ("a", "b", "b"),
            ("a", "c", "b"),
            ("a", "d", "d"),
            ("b", "a", "a"),
            ("b", "c", "c"),
            ("b", "d", "a"),
            ("c", "a", "b"),
            ("c", "b", "b"),
            ("c", "d", "d"),
            ("d", "a", "a"),
            ("d", "b", "a"),
            ("d", "c", "c"),
        ])
    }

    #[test]
    fn paths_follow_next_hops() {
        let snap = line();
        assert_eq!(follow_path(&snap, "a", "c"), Some(names(&["a", "b", "c"])));
        assert_eq!(follow_path(&snap, "a", "a"), Some(names(&["a"])));
        assert_eq!(follow_path(&snap, "a", "zz"), None, "no route");
        let looping = snapshot(&[("a", "c", "b"), ("b", "c", "a")]);
        assert_eq!(follow_path(&looping, "a", "c"), None, "loop");
    }

    #[test]
    fn affected_flows_and_outages() {
        let snap = line();
        let survivors = names(&["a", "c", "d"]);
        let victims = names(&["b"]);
        let fault_us = 1_000_000;
        let steady: Vec<u64> = (0..200).map(|i| i * 10_000).collect(); // 0..2 s, every 10 ms
        let gap: Vec<u64> = steady
            .iter()
            .copied()
            .filter(|&t| !(1_000_000..1_200_000).contains(&t))
            .collect();
        let mut arrivals = Arrivals::new();
        for s in &survivors {
            for t in &survivors {
                if s != t {
                    arrivals.insert((s.clone(), t.clone()), steady.clone());
                }
            }
        }
        // a->c and c->a crossed b: a 200 ms gap for one, never recovered for the other.
        arrivals.insert(("a".into(), "c".into()), gap);
        arrivals.insert(
            ("c".into(), "a".into()),
            steady.iter().copied().filter(|&t| t <= fault_us).collect(),
        );
        let fetched: BTreeMap<String, u64> =
            survivors.iter().map(|s| (s.clone(), 2_000_000)).collect();
        let m = Measurement {
            survivors: &survivors,
            victims: &victims,
            snapshot: &snap,
            arrivals: &arrivals,
            fault_us,
            fetched_us: &fetched,
        };
        let outcome = analyse(&m);
        assert_eq!(
            outcome.affected,
            vec![("a".into(), "c".into()), ("c".into(), "a".into())]
        );
        assert_eq!(outcome.outages_ms, vec![210.0]);
        assert_eq!(outcome.unhealed, vec![("c".to_string(), "a".to_string())]);
        assert_eq!(
            outcome.unreachable,
            vec![("c".to_string(), "a".to_string())]
        );
        assert!(outcome.unresolved.is_empty() && outcome.no_baseline.is_empty());
        assert!(!outcome.healed());
        assert_eq!(outcome.mttr().samples, 1);
    }

    #[test]
    fn unaffected_run_is_healed() {
        let snap = line();
        let survivors = names(&["a", "b"]);
        let victims = names(&["d"]);
        let mut arrivals = Arrivals::new();
        arrivals.insert(("a".into(), "b".into()), vec![10, 1_900_000]);
        arrivals.insert(("b".into(), "a".into()), vec![10, 1_900_000]);
        let fetched: BTreeMap<String, u64> =
            survivors.iter().map(|s| (s.clone(), 2_000_000)).collect();
        let m = Measurement {
            survivors: &survivors,
            victims: &victims,
            snapshot: &snap,
            arrivals: &arrivals,
            fault_us: 1_000,
            fetched_us: &fetched,
        };
        let outcome = analyse(&m);
        assert!(outcome.affected.is_empty());
        assert!(outcome.healed());
        assert_eq!(outcome.mttr().samples, 0);
    }
}
