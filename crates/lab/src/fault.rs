//! The fault catalogue: names, parameters, and what one iteration breaks (a plan drawn
//! from the seed over the topology).

use std::collections::BTreeSet;
use std::time::Duration;

use x0tta6bl4_proto::Rng;
use x0tta6bl4_twin::scenario::{parse_params, Ramp};
use x0tta6bl4_twin::{Scenario, Targets, Topology};

use crate::LabError;

/// Help text for fault names and their parameters.
pub const FAULT_HELP: &str = "\
node-kill                       a node vanishes: SIGKILL, and its namespace drops all traffic
node-pause[:hold_ms=T]          SIGSTOP a node for T ms (default 2000), then SIGCONT
node-restart                    SIGKILL a node and start it again at once
link-down                       one link: `ip link set ... down` on both ends
partition[:groups=G,hold_ms=T]  G groups (default 2), nftables drops for T ms (default 2000)
asym-partition[:hold_ms=T]      2 groups, one direction dropped for T ms (default 2000)
loss[:rate=R]                   one link loses R of its packets (default 0.3; nft numgen)
delay[:delay_ms=D,jitter_ms=J]  one link: D ms (default 50) plus 0..J ms (default 10) of delay,
                                from the node's --chaos layer (x0tta6bl4 only)
bandwidth[:mbps=M]              one link limited to M Mbit/s (default 1) by `tc tbf`
cpu-stress[:hold_ms=T]          stress-ng loads a CPU (90 %) from a node's namespace, T ms (default 3000)
mem-stress[:hold_ms=T]          stress-ng takes 25 % of memory there, T ms (default 3000)
byzantine[:hold_ms=T]           a node sends forged and replayed (stale) frames, link-state
                                included, for T ms (default 3000), via --chaos (x0tta6bl4 only)
svid-expiry[:ttl_s=S]           a node gets an SVID valid for S s (default 8), never renewed;
                                at its notAfter its neighbours close their links and refuse
                                its reconnects; recovery: a fresh SVID and a restart
                                (x0tta6bl4 only)
degrade-then-fail[:recover=P,ramp_min_ms=A,ramp_max_ms=B,loss=L]
                                one link's loss ramps up (nftables, both directions, a step
                                every 50 ms) over A..B ms (default 1000..4000) on a random
                                shape to a random peak in L/3..L (default 0.6), then the
                                link goes down; with chance P (default 0.3) it ramps back
                                down instead and never fails (the twin's scenario, loss only)
revoke                          `x0tta6bl4 ca revoke --api` of a node, handed to one of its
                                neighbours and flooded; every node drops and refuses it;
                                recovery: a new CA and fresh SVIDs for the whole mesh
                                (a revocation is permanent) (x0tta6bl4 only)";

/// Names in the catalogue, in the order of the issue.
pub const CATALOGUE: [&str; 15] = [
    "node-kill",
    "node-pause",
    "node-restart",
    "link-down",
    "partition",
    "asym-partition",
    "loss",
    "delay",
    "bandwidth",
    "cpu-stress",
    "mem-stress",
    "svid-expiry",
    "revoke",
    "byzantine",
    "degrade-then-fail",
];

/// A fault with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// SIGKILL plus drop-all in the namespace.
    NodeKill,
    /// SIGSTOP for `hold`, then SIGCONT.
    NodePause {
        /// How long the node stays stopped.
        hold: Duration,
    },
    /// SIGKILL and start again.
    NodeRestart,
    /// One link down.
    LinkDown,
    /// Split into groups for `hold`.
    Partition {
        /// Number of groups.
        groups: usize,
        /// How long.
        hold: Duration,
    },
    /// Two groups, traffic from the first to the second dropped for `hold`.
    AsymPartition {
        /// How long.
        hold: Duration,
    },
    /// Delay and jitter on one link (the node's `--chaos` layer).
    Delay {
        /// Fixed delay, ms.
        delay_ms: u64,
        /// Extra uniform delay 0..jitter_ms, ms.
        jitter_ms: u64,
    },
    /// A bandwidth limit on one link (`tc tbf`).
    Bandwidth {
        /// Mbit/s.
        mbps: f64,
    },
    /// CPU stress from a node's namespace.
    CpuStress {
        /// How long.
        hold: Duration,
    },
    /// Memory pressure from a node's namespace.
    MemStress {
        /// How long.
        hold: Duration,
    },
    /// A node sends forged and replayed frames (its `--chaos` layer).
    Byzantine {
        /// How long.
        hold: Duration,
    },
    /// Random loss on one link.
    Loss {
        /// Fraction lost.
        rate: f64,
    },
    /// A node's SVID expires, renewal withheld.
    SvidExpiry {
        /// Lifetime of the short SVID the node is given before the fault.
        ttl: Duration,
    },
    /// The CA revokes a node.
    Revoke,
    /// One link's loss ramps up, then the link goes down (or the ramp recovers): the
    /// twin's `degrade-then-fail`, loss only.
    DegradeThenFail {
        /// Chance that a ramp recovers instead of failing.
        recover: f64,
        /// Shortest and longest ramp.
        ramp: (Duration, Duration),
        /// Most loss a ramp adds.
        loss: f64,
    },
}

/// What the lab measured that the twin's models take as parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    /// One-way link latency: half the median RTT the nodes measured before the faults.
    pub latency_ms: Option<f64>,
    /// How much later a stressed node handled its frames: the rise of its median RTT
    /// to its neighbours under the load (cpu-stress, mem-stress).
    pub processing_delay_ms: Option<f64>,
    /// How long a restarted node took to serve again (node-restart).
    pub restart_ms: Option<f64>,
}

/// What one iteration breaks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that stop working (kill, pause, restart).
    pub nodes: Vec<usize>,
    /// Links (indices into the topology's links) disturbed.
    pub links: Vec<usize>,
    /// Nodes under stress: they keep running and routing (their flows count).
    pub stressed: Vec<usize>,
    /// Group of every node, for partitions.
    pub groups: Option<Vec<usize>>,
    /// degrade-then-fail: the ramp of the link in `links`.
    pub ramp: Option<x0tta6bl4_twin::scenario::Ramp>,
}

impl Plan {
    /// The same elements as the twin's fault targets.
    pub fn twin_targets(&self) -> Targets {
        let index = |v: &usize| *v as u32;
        Targets {
            nodes: self.nodes.iter().chain(&self.stressed).map(index).collect(),
            links: self.links.iter().map(index).collect(),
            groups: self.groups.as_ref().map(|g| g.iter().map(index).collect()),
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = LabError;

    fn from_str(spec: &str) -> Result<Fault, LabError> {
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let usage = |e: String| LabError::usage(e, "see `x0tta6bl4 lab run --help` for faults");
        let get =
            |keys: &[&str]| parse_params(spec, params, keys).map_err(|e| usage(e.to_string()));
        let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
        let fault = match name {
            "node-kill" => {
                get(&[])?;
                Fault::NodeKill
            }
            "node-restart" => {
                get(&[])?;
                Fault::NodeRestart
            }
            "link-down" => {
                get(&[])?;
                Fault::LinkDown
            }
            "node-pause" => Fault::NodePause {
                hold: ms(get(&["hold_ms"])?
                    .get("hold_ms")
                    .copied()
                    .unwrap_or(2_000.0)),
            },
            "partition" => {
                let p = get(&["groups", "hold_ms"])?;
                let groups = p.get("groups").copied().unwrap_or(2.0);
                if groups < 2.0 || groups.fract() != 0.0 {
                    return Err(usage(format!(
                        "{spec}: groups={groups} must be a whole number >= 2"
                    )));
                }
                Fault::Partition {
                    groups: groups as usize,
                    hold: ms(p.get("hold_ms").copied().unwrap_or(2_000.0)),
                }
            }
            "asym-partition" => Fault::AsymPartition {
                hold: ms(get(&["hold_ms"])?
                    .get("hold_ms")
                    .copied()
                    .unwrap_or(2_000.0)),
            },
            "loss" => {
                let rate = get(&["rate"])?.get("rate").copied().unwrap_or(0.3);
                let rate = if rate > 1.0 { rate / 100.0 } else { rate };
                if rate >= 1.0 {
                    return Err(usage(format!("{spec}: rate must be below 1 (or 100%)")));
                }
                Fault::Loss { rate }
            }
            "svid-expiry" => {
                let ttl_s = get(&["ttl_s"])?.get("ttl_s").copied().unwrap_or(8.0);
                if !(2.0..=3_600.0).contains(&ttl_s) || ttl_s.fract() != 0.0 {
                    return Err(usage(format!(
                        "{spec}: ttl_s={ttl_s} must be a whole number of seconds from 2 to 3600 \
                         (certificates count whole seconds)"
                    )));
                }
                Fault::SvidExpiry {
                    ttl: Duration::from_secs(ttl_s as u64),
                }
            }
            "revoke" => {
                get(&[])?;
                Fault::Revoke
            }
            "delay" => {
                let p = get(&["delay_ms", "jitter_ms"])?;
                Fault::Delay {
                    delay_ms: p.get("delay_ms").copied().unwrap_or(50.0) as u64,
                    jitter_ms: p.get("jitter_ms").copied().unwrap_or(10.0) as u64,
                }
            }
            "bandwidth" => {
                let mbps = get(&["mbps"])?.get("mbps").copied().unwrap_or(1.0);
                if mbps <= 0.0 {
                    return Err(usage(format!("{spec}: mbps must be above 0")));
                }
                Fault::Bandwidth { mbps }
            }
            "cpu-stress" => Fault::CpuStress {
                hold: ms(get(&["hold_ms"])?
                    .get("hold_ms")
                    .copied()
                    .unwrap_or(3_000.0)),
            },
            "mem-stress" => Fault::MemStress {
                hold: ms(get(&["hold_ms"])?
                    .get("hold_ms")
                    .copied()
                    .unwrap_or(3_000.0)),
            },
            "degrade-then-fail" => {
                // The twin's parser and checks; the lab ramps loss on one link only.
                get(&["recover", "ramp_min_ms", "ramp_max_ms", "loss"])?;
                match spec.parse::<Scenario>().map_err(|e| usage(e.to_string()))? {
                    Scenario::DegradeThenFail {
                        recover,
                        ramp_min,
                        ramp_max,
                        loss,
                        ..
                    } => Fault::DegradeThenFail {
                        recover,
                        ramp: (ramp_min, ramp_max),
                        loss,
                    },
                    other => unreachable!("the twin parsed {spec} as {other:?}"),
                }
            }
            "byzantine" => Fault::Byzantine {
                hold: ms(get(&["hold_ms"])?
                    .get("hold_ms")
                    .copied()
                    .unwrap_or(3_000.0)),
            },
            other => {
                return Err(usage(format!(
                    "unknown fault {other:?}; use one of {}",
                    CATALOGUE.join(", ")
                )))
            }
        };
        Ok(fault)
    }
}

impl Fault {
    /// Whether the fault takes nodes out (their flows are not measured).
    pub fn takes_nodes(&self) -> bool {
        matches!(
            self,
            Fault::NodeKill | Fault::NodePause { .. } | Fault::NodeRestart
        ) || self.removes_nodes()
    }

    /// Whether the nodes taken out stay out until the recovery (the heal must route
    /// around them, not through them).
    pub fn removes_nodes(&self) -> bool {
        matches!(
            self,
            Fault::NodeKill | Fault::SvidExpiry { .. } | Fault::Revoke
        )
    }

    /// Why babeld cannot run this fault, when it cannot.
    pub fn x0tta6bl4_only(&self) -> Option<&'static str> {
        match self {
            Fault::Delay { .. } | Fault::Byzantine { .. } => Some(
                "the delay and byzantine faults use x0tta6bl4's --chaos fault-injection layer, \
                 which babeld lacks (tc netem is not available on these machines)",
            ),
            Fault::SvidExpiry { .. } | Fault::Revoke => Some(
                "the svid-expiry and revoke faults break a node's identity, and babeld has none \
                 (it authenticates no neighbour)",
            ),
            _ => None,
        }
    }

    /// Whether the fault loads a node's host (its frames are handled late).
    pub fn stresses_host(&self) -> bool {
        matches!(self, Fault::CpuStress { .. } | Fault::MemStress { .. })
    }

    /// How long the fault holds before it is lifted (zero: lifted after the heal).
    pub fn hold(&self) -> Duration {
        match self {
            Fault::NodePause { hold }
            | Fault::Partition { hold, .. }
            | Fault::AsymPartition { hold }
            | Fault::CpuStress { hold }
            | Fault::MemStress { hold }
            | Fault::Byzantine { hold } => *hold,
            _ => Duration::ZERO,
        }
    }

    /// The twin scenario that models this fault: its `twin run --scenario` text, parsed
    /// by the twin. `calibration` carries what the lab measured that the model needs.
    pub fn twin_scenario(&self, calibration: &Calibration) -> Result<(Scenario, String), LabError> {
        let ms = |d: &Duration| d.as_millis();
        let spec = match self {
            Fault::NodeKill | Fault::NodePause { .. } => "node-failure:count=1".to_owned(),
            Fault::NodeRestart => format!(
                "node-failure:count=1,restart_ms={:.3}",
                calibration.restart_ms.unwrap_or(0.0)
            ),
            // For routing, an identity fault is a node leaving the mesh at the fault
            // instant: its neighbours close their links to it at once.
            Fault::SvidExpiry { .. } | Fault::Revoke => "node-failure:count=1,closed=1".to_owned(),
            Fault::LinkDown => "link-failure:count=1".to_owned(),
            Fault::Partition { groups, hold } => {
                format!("partition:groups={groups},hold_ms={}", ms(hold))
            }
            Fault::AsymPartition { hold } => format!("asym-partition:hold_ms={}", ms(hold)),
            // The chaos layer adds delay_ms plus a uniform 0..jitter_ms: its mean.
            Fault::Delay {
                delay_ms,
                jitter_ms,
            } => format!(
                "degrade:links=1,loss=0,delay_ms={}",
                *delay_ms as f64 + *jitter_ms as f64 / 2.0
            ),
            Fault::Loss { rate } => format!("degrade:links=1,loss={rate}"),
            Fault::Bandwidth { mbps } => format!("bandwidth:links=1,mbps={mbps}"),
            // A loaded host handles the node's frames late: by a uniform 0..2D, where D is
            // the extra round-trip time the node measured under the load.
            Fault::CpuStress { hold } | Fault::MemStress { hold } => format!(
                "slow-node:count=1,delay_ms=0,jitter_ms={:.3},hold_ms={}",
                2.0 * calibration.processing_delay_ms.unwrap_or(0.0).max(0.0),
                ms(hold)
            ),
            Fault::Byzantine { hold } => format!("byzantine:count=1,hold_ms={}", ms(hold)),
            Fault::DegradeThenFail {
                recover,
                ramp: (min, max),
                loss,
            } => format!(
                "degrade-then-fail:links=1,recover={recover},ramp_min_ms={},ramp_max_ms={},loss={loss},jitter_ms=0",
                ms(min),
                ms(max)
            ),
        };
        let scenario = spec.parse::<Scenario>().map_err(|e| {
            LabError::failed(format!("the twin refused the scenario of this fault: {e}"))
        })?;
        Ok((scenario, spec))
    }

    /// Draw what this iteration breaks; the survivors stay connected for node and link
    /// faults.
    pub fn plan(&self, topology: &Topology, rng: &mut Rng) -> Result<Plan, LabError> {
        let n = topology.len();
        match self {
            Fault::NodeKill
            | Fault::NodePause { .. }
            | Fault::NodeRestart
            | Fault::SvidExpiry { .. }
            | Fault::Revoke => {
                let candidates: Vec<usize> = (0..n)
                    .filter(|&v| connected_without(topology, &[v], &[]))
                    .collect();
                let victim = pick(&candidates, rng).ok_or_else(|| {
                    LabError::usage(
                        "no node can fail without splitting the mesh",
                        "use a ring, grid or denser topology",
                    )
                })?;
                Ok(Plan {
                    nodes: vec![victim],
                    ..Plan::default()
                })
            }
            Fault::LinkDown
            | Fault::Loss { .. }
            | Fault::Delay { .. }
            | Fault::Bandwidth { .. }
            | Fault::DegradeThenFail { .. } => {
                let candidates: Vec<usize> = (0..topology.links.len())
                    .filter(|&l| connected_without(topology, &[], &[l]))
                    .collect();
                let link = pick(&candidates, rng).ok_or_else(|| {
                    LabError::usage(
                        "no link can fail without splitting the mesh",
                        "use a ring, grid or denser topology",
                    )
                })?;
                let ramp = match self {
                    Fault::DegradeThenFail {
                        recover,
                        ramp,
                        loss,
                    } => Some(Ramp::draw(rng, *ramp, *loss, Duration::ZERO, *recover)),
                    _ => None,
                };
                Ok(Plan {
                    links: vec![link],
                    ramp,
                    ..Plan::default()
                })
            }
            Fault::Partition { groups, .. } => Ok(partition_plan(topology, *groups, rng)),
            Fault::CpuStress { .. } | Fault::MemStress { .. } | Fault::Byzantine { .. } => {
                // A node of the highest degree: it carries transit flows to disturb.
                let degree = |v: usize| {
                    let touches =
                        |l: &&x0tta6bl4_twin::TopoLink| l.a as usize == v || l.b as usize == v;
                    topology.links.iter().filter(touches).count()
                };
                let top = (0..n).map(degree).max().unwrap_or(0);
                let candidates: Vec<usize> = (0..n).filter(|&v| degree(v) == top).collect();
                Ok(Plan {
                    stressed: pick(&candidates, rng).into_iter().collect(),
                    ..Plan::default()
                })
            }
            Fault::AsymPartition { .. } => Ok(partition_plan(topology, 2, rng)),
        }
    }
}

fn pick(candidates: &[usize], rng: &mut Rng) -> Option<usize> {
    (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len() as u64) as usize])
}

/// Groups grown by breadth-first search from random seeds; links across are cut.
fn partition_plan(topology: &Topology, groups: usize, rng: &mut Rng) -> Plan {
    let n = topology.len();
    let groups_count = groups.min(n);
    let mut group = vec![usize::MAX; n];
    let mut queues: Vec<std::collections::VecDeque<usize>> = Vec::new();
    let mut seeds = BTreeSet::new();
    while seeds.len() < groups_count {
        seeds.insert(rng.below(n as u64) as usize);
    }
    for (g, &s) in seeds.iter().enumerate() {
        group[s] = g;
        queues.push([s].into());
    }
    let neighbours = |u: usize| {
        topology.links.iter().filter_map(move |l| {
            let (a, b) = (l.a as usize, l.b as usize);
            (a == u).then_some(b).or((b == u).then_some(a))
        })
    };
    let mut progress = true;
    while progress {
        progress = false;
        for (g, queue) in queues.iter_mut().enumerate() {
            if let Some(u) = queue.pop_front() {
                progress = true;
                for v in neighbours(u) {
                    if group[v] == usize::MAX {
                        group[v] = g;
                        queue.push_back(v);
                    }
                }
            }
        }
    }
    for g in group.iter_mut().filter(|g| **g == usize::MAX) {
        *g = 0;
    }
    let links = (0..topology.links.len())
        .filter(|&l| {
            let link = &topology.links[l];
            group[link.a as usize] != group[link.b as usize]
        })
        .collect();
    Plan {
        links,
        groups: Some(group),
        ..Plan::default()
    }
}

/// Whether the topology minus `nodes` and `links` is still connected.
pub fn connected_without(topology: &Topology, nodes: &[usize], links: &[usize]) -> bool {
    let n = topology.len();
    let alive: Vec<usize> = (0..n).filter(|v| !nodes.contains(v)).collect();
    let Some(&start) = alive.first() else {
        return true;
    };
    let mut seen = vec![false; n];
    seen[start] = true;
    let mut stack = vec![start];
    while let Some(u) = stack.pop() {
        for (l, link) in topology.links.iter().enumerate() {
            let (a, b) = (link.a as usize, link.b as usize);
            if links.contains(&l) || nodes.contains(&a) || nodes.contains(&b) {
                continue;
            }
            let v = if a == u {
                b
            } else if b == u {
                a
            } else {
                continue;
            };
            if !seen[v] {
                seen[v] = true;
                stack.push(v);
            }
        }
    }
    alive.iter().all(|&v| seen[v])
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_twin::LinkParams;

    #[test]
    fn parses_the_catalogue() {
        assert_eq!("node-kill".parse::<Fault>().unwrap(), Fault::NodeKill);
        assert_eq!(
            "partition:groups=3,hold_ms=500".parse::<Fault>().unwrap(),
            Fault::Partition {
                groups: 3,
                hold: Duration::from_millis(500)
            }
        );
        assert_eq!(
            "loss:rate=5%".parse::<Fault>().unwrap(),
            Fault::Loss { rate: 0.05 }
        );
        let calibration = Calibration {
            latency_ms: Some(0.5),
            processing_delay_ms: Some(3.0),
            restart_ms: Some(40.0),
        };
        for name in CATALOGUE {
            let fault = name.parse::<Fault>().unwrap();
            // Every lab run has its twin counterpart.
            let (_, spec) = fault.twin_scenario(&calibration).unwrap();
            assert!(!spec.is_empty(), "{name}");
        }
        assert_eq!(
            "svid-expiry".parse::<Fault>().unwrap(),
            Fault::SvidExpiry {
                ttl: Duration::from_secs(8)
            }
        );
        assert_eq!("revoke".parse::<Fault>().unwrap(), Fault::Revoke);
        for bad in ["svid-expiry:ttl_s=1", "svid-expiry:ttl_s=2.5", "revoke:x=1"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        for name in ["svid-expiry", "revoke", "delay", "byzantine"] {
            let fault = name.parse::<Fault>().unwrap();
            assert!(fault.x0tta6bl4_only().is_some(), "{name}");
        }
        assert!(Fault::NodeKill.x0tta6bl4_only().is_none());
        assert!(Fault::Revoke.removes_nodes());
        let e = "meteor".parse::<Fault>().unwrap_err().to_string();
        assert!(
            e.contains("unknown fault") && e.contains("node-kill"),
            "{e}"
        );
        assert!("node-kill:x=1".parse::<Fault>().is_err());
        assert!("partition:groups=1".parse::<Fault>().is_err());
    }

    #[test]
    fn plans_keep_survivors_connected() {
        let ring = Topology::ring(5, &LinkParams::default()).unwrap();
        let mut rng = Rng::seed(1);
        let plan = Fault::NodeKill.plan(&ring, &mut rng).unwrap();
        assert_eq!(plan.nodes.len(), 1);
        assert!(connected_without(&ring, &plan.nodes, &[]));
        let plan = Fault::LinkDown.plan(&ring, &mut rng).unwrap();
        assert_eq!(plan.links.len(), 1);
        let plan = Fault::Partition {
            groups: 2,
            hold: Duration::ZERO,
        }
        .plan(&ring, &mut rng)
        .unwrap();
        let groups = plan.groups.unwrap();
        assert!(groups.contains(&0) && groups.contains(&1));
        assert_eq!(plan.links.len(), 2, "a ring splits across two links");
        assert!(!connected_without(&ring, &[], &plan.links));
    }
}
