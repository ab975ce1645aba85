//! Everything the demo writes before it starts a node: the plan (names, topology,
//! victims, all from the seed), a CA with one SVID per node, free loopback ports and
//! one TOML config per node.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use x0tta6bl4_identity::{CertificateAuthority, TrustDomain};
use x0tta6bl4_proto::{NodeName, Rng};

use super::topology::Topology;
use crate::api::Api;
use crate::args::DemoArgs;
use crate::problem::{problem, Exit};

/// The trust domain of the demo's throwaway CA.
pub const TRUST_DOMAIN: &str = "demo.x0tta6bl4.mesh";
/// Most nodes a demo starts.
pub const NODES_MAX: usize = 100;
/// Lifetime of the demo's SVIDs.
const SVID_TTL: Duration = Duration::from_secs(3600);

/// What a run will do, decided by the arguments and the seed alone.
#[derive(Debug)]
pub struct Plan {
    /// The seed everything was drawn from.
    pub seed: u64,
    /// Node names, index = topology node.
    pub names: Vec<String>,
    /// Who links to whom.
    pub topology: Topology,
    /// The nodes the run kills, drawn with the seed from the topology alone
    /// ([`Topology::choose_victims`]: weighted towards nodes that carry transit traffic
    /// on shortest paths, survivors kept connected), so that one seed always kills the
    /// same nodes whatever the live routes looked like.
    pub victims: Vec<usize>,
    /// `[protocol] payload_bytes_max` of every node (`None`: the default); `fl run`
    /// raises it for model frames.
    pub payload_bytes_max: Option<usize>,
}

impl Plan {
    /// Validate the arguments, draw the topology and check that victims can be chosen.
    pub fn new(args: &DemoArgs, seed: u64) -> anyhow::Result<Plan> {
        validate(args)?;
        let mut rng = Rng::seed(seed);
        let topology = Topology::random(args.nodes, args.degree, &mut rng);
        let victims = topology
            .choose_victims(args.kill, &mut rng)
            .ok_or_else(|| {
                problem(
                    Exit::Usage,
                    format!(
                        "cannot kill {} of {} nodes and keep the survivors connected",
                        args.kill, args.nodes
                    ),
                    format!("seed {seed}, mean degree {}", args.degree),
                    "use a smaller --kill, a larger --degree or another --seed",
                )
            })?;
        let width = args.nodes.to_string().len().max(2);
        let names = (1..=args.nodes).map(|i| format!("n{i:0width$}")).collect();
        Ok(Plan {
            seed,
            names,
            topology,
            victims,
            payload_bytes_max: None,
        })
    }

    /// The names of the nodes `indices`.
    pub fn names_of(&self, indices: &[usize]) -> Vec<String> {
        indices.iter().map(|&i| self.names[i].clone()).collect()
    }

    /// The names of the nodes not in `indices`.
    pub fn names_except(&self, indices: &[usize]) -> Vec<String> {
        (0..self.names.len())
            .filter(|i| !indices.contains(i))
            .map(|i| self.names[i].clone())
            .collect()
    }
}

fn validate(args: &DemoArgs) -> anyhow::Result<()> {
    let usage =
        |what: String, fix: &str| Err(problem(Exit::Usage, what, "x0tta6bl4 demo", fix).into());
    if !(2..=NODES_MAX).contains(&args.nodes) {
        return usage(
            format!("--nodes {} is out of range", args.nodes),
            &format!("use 2 to {NODES_MAX} nodes"),
        );
    }
    if args.kill + 2 > args.nodes {
        return usage(
            format!(
                "--kill {} leaves fewer than two of {} nodes",
                args.kill, args.nodes
            ),
            "kill at most --nodes minus 2, so that some pair of survivors is left to measure",
        );
    }
    if !args.degree.is_finite() || args.degree < 1.0 {
        return usage(
            format!("--degree {} is out of range", args.degree),
            "use a mean degree of at least 1, e.g. 3",
        );
    }
    Ok(())
}

/// One node of the demo as the orchestrator sees it.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// The node's name.
    pub name: String,
    /// Its HTTP API.
    pub api: Api,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// The config file the demo writes (keys as in `examples/node.toml`).
#[derive(Serialize)]
struct NodeToml {
    listen: SocketAddr,
    api_listen: SocketAddr,
    peers: Vec<SocketAddr>,
    standalone: bool,
    identity: IdentityToml,
    discovery: DiscoveryToml,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<ProtocolToml>,
}

#[derive(Serialize)]
struct ProtocolToml {
    payload_bytes_max: usize,
}

#[derive(Serialize)]
struct IdentityToml {
    dir: PathBuf,
}

/// LAN discovery is off: on loopback it would link every node to every other and
/// flatten the multi-hop topology the demo is about.
#[derive(Serialize)]
struct DiscoveryToml {
    enabled: bool,
}

/// Make the CA and the SVIDs, pick ports and write every node's config under `dir`.
pub fn prepare(dir: &Path, plan: &Plan) -> anyhow::Result<Vec<NodeSetup>> {
    let trust_domain: TrustDomain = TRUST_DOMAIN
        .parse()
        .context("the demo trust domain is invalid")?;
    let ca_dir = dir.join("ca");
    let ca = CertificateAuthority::init(&ca_dir, &trust_domain)
        .with_context(|| format!("cannot create the demo CA in {}", ca_dir.display()))?;
    let ports = free_ports(plan.names.len())?;
    let mut nodes = Vec::with_capacity(plan.names.len());
    for (index, name) in plan.names.iter().enumerate() {
        let node_dir = dir.join(name);
        let node_name = NodeName::new(name).context("demo node names are valid")?;
        ca.issue_node(&node_name, SVID_TTL, &node_dir)
            .with_context(|| {
                format!("cannot issue the SVID of {name} in {}", node_dir.display())
            })?;
        let (listen, api_listen) = ports[index];
        let toml = NodeToml {
            listen,
            api_listen,
            peers: plan
                .topology
                .dials_of(index)
                .into_iter()
                .map(|peer| ports[peer].0)
                .collect(),
            standalone: false,
            identity: IdentityToml {
                dir: node_dir.clone(),
            },
            discovery: DiscoveryToml { enabled: false },
            protocol: plan
                .payload_bytes_max
                .map(|payload_bytes_max| ProtocolToml { payload_bytes_max }),
        };
        let config = node_dir.join("node.toml");
        let text = toml::to_string(&toml).context("cannot encode a node config")?;
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let api = Api::new(&format!("http://{api_listen}"))?;
        nodes.push(NodeSetup {
            name: name.clone(),
            api,
            config,
            log: node_dir.join("node.log"),
        });
    }
    Ok(nodes)
}

/// `count` pairs of distinct free loopback ports: (QUIC/UDP listen, HTTP/TCP api). All
/// sockets stay bound until every port is picked, so no port is handed out twice.
fn free_ports(count: usize) -> anyhow::Result<Vec<(SocketAddr, SocketAddr)>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let udp =
            UdpSocket::bind("127.0.0.1:0").context("cannot bind a free UDP port on 127.0.0.1")?;
        let tcp =
            TcpListener::bind("127.0.0.1:0").context("cannot bind a free TCP port on 127.0.0.1")?;
        held.push((udp, tcp));
    }
    held.iter()
        .map(|(udp, tcp)| Ok((udp.local_addr()?, tcp.local_addr()?)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot read a bound port")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: usize, kill: usize, degree: f64) -> DemoArgs {
        DemoArgs {
            nodes,
            kill,
            seed: None,
            degree,
            json: false,
            keep_dir: false,
        }
    }

    #[test]
    fn plans_are_seeded() {
        let a = Plan::new(&args(10, 2, 3.0), 7).unwrap();
        let b = Plan::new(&args(10, 2, 3.0), 7).unwrap();
        assert_eq!((&a.topology, &a.victims), (&b.topology, &b.victims));
        assert_eq!(a.victims.len(), 2);
        assert!(a.topology.connected_without(&a.victims));
        assert_eq!(a.names[0], "n01");
        assert_eq!(a.names[9], "n10");
        assert_eq!(a.names_of(&[0, 9]), vec!["n01", "n10"]);
        assert_eq!(a.names_except(&[0, 9]).len(), 8);
        assert!(Plan::new(&args(120, 2, 3.0), 1).is_err());
        assert_eq!(Plan::new(&args(100, 2, 3.0), 1).unwrap().names[0], "n001");
    }

    /// `--seed S` fixes the victims: they are a function of the arguments and the seed,
    /// drawn before any node runs, so no run-to-run difference in the live routes (which
    /// the previous choice weighed) can change them.
    #[test]
    fn the_seed_alone_fixes_the_victims() {
        let victims = |seed| {
            let plan = Plan::new(&args(10, 2, 3.0), seed).unwrap();
            plan.names_of(&plan.victims)
        };
        for seed in 1..=20 {
            let first = victims(seed);
            for _ in 0..3 {
                assert_eq!(victims(seed), first, "seed {seed}");
            }
        }
        // The README's measured run (`demo --seed 42 --json`) killed these two, and its
        // table of twenty seeds lists the victims of each.
        assert_eq!(victims(42), readme_killed_of_seed_42());
        let table = readme_killed_by_seed();
        assert_eq!(table.len(), 20, "{table:?}");
        let differ: Vec<_> = table
            .iter()
            .filter(|(seed, killed)| victims(*seed) != *killed)
            .map(|(seed, killed)| {
                format!("seed {seed}: README {killed:?}, plan {:?}", victims(*seed))
            })
            .collect();
        assert!(differ.is_empty(), "{differ:#?}");
        let distinct: std::collections::BTreeSet<_> = (1..=20).map(victims).collect();
        assert!(
            distinct.len() > 5,
            "seeds draw different victims: {distinct:?}"
        );
    }

    /// (seed, killed) of each row of the README's table of twenty demo runs.
    fn readme_killed_by_seed() -> Vec<(u64, Vec<String>)> {
        let readme = include_str!("../../../../README.md");
        readme
            .lines()
            .filter(|l| l.contains("| yes |"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let seed = cells.get(1)?.parse().ok()?;
                let killed = cells.get(2)?.split(", ").map(str::to_owned).collect();
                Some((seed, killed))
            })
            .collect()
    }

    /// The `"killed"` list of the README's `demo --seed 42 --json` output.
    fn readme_killed_of_seed_42() -> Vec<String> {
        let readme = include_str!("../../../../README.md");
        let line = readme
            .lines()
            .find(|l| l.starts_with("{\"nodes\":10,\"killed\""))
            .expect("the README shows a demo --seed 42 --json output");
        let report: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(report["seed"], 42, "{line}");
        serde_json::from_value(report["killed"].clone()).unwrap()
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for bad in [
            args(1, 0, 3.0),
            args(4, 3, 3.0),
            args(5, 1, 0.5),
            args(5, 1, f64::NAN),
        ] {
            let error = Plan::new(&bad, 1).unwrap_err();
            assert_eq!(crate::problem::exit_of(&error), Exit::Usage, "{bad:?}");
        }
    }

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(5).unwrap();
        for kind in [0, 1] {
            let mut numbers: Vec<u16> = ports
                .iter()
                .map(|(udp, tcp)| if kind == 0 { udp.port() } else { tcp.port() })
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), 5);
        }
    }
}
