//! `lab soak`: routers on a fault-free mesh with loss on every link, for a long time;
//! every neighbour-down event is a false alarm. `--router both` soaks x0tta6bl4 and then
//! babeld with its hello interval matched to our probes, each for the whole duration.
//! `--api-abuse` also abuses every x0tta6bl4 node's HTTP API during the soak
//! ([`crate::abuse`]) and reports what the nodes refused, which wedged and which pairs
//! had no route at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::net::{have_tool, remove_stale, Net};
use crate::routers::{Fleet, Kind, Routing};
use crate::run::{RouterChoice, MATCHED_HELLO_S};
use crate::LabError;

/// Settings of a soak.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Topology spec.
    pub topology: String,
    /// Nodes.
    pub nodes: usize,
    /// Loss on every link: `5%` or `0.05`.
    pub loss: String,
    /// How long, per router.
    pub duration: Duration,
    /// Which routers (`both`: x0tta6bl4, then babeld at matched timers).
    pub router: RouterChoice,
    /// The `x0tta6bl4` executable.
    pub exe: std::path::PathBuf,
    /// Abuse every x0tta6bl4 node's API during the soak (`--api-abuse`).
    pub api_abuse: bool,
    /// Settings of every x0tta6bl4 node's `[protocol]` section (`--node-protocol`).
    pub protocol: toml::Table,
}

/// What a soak counted.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// The topology as given.
    pub topology: String,
    /// Nodes.
    pub nodes: usize,
    /// Links.
    pub links: usize,
    /// Loss on every link, a fraction.
    pub loss: f64,
    /// Counts per router soaked (`x0tta6bl4`, `babeld`, `babeld-default`).
    pub routers: BTreeMap<String, SoakCount>,
    /// With `--api-abuse`: what the abuse did to the x0tta6bl4 nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_abuse: Option<crate::abuse::AbuseReport>,
}

/// One router's false alarms over its soak.
#[derive(Clone, Debug, Serialize)]
pub struct SoakCount {
    /// Seconds soaked (after convergence).
    pub seconds: f64,
    /// Neighbour-down events over the soak, all false (babeld: `flush neighbour`).
    pub false_down_events: u64,
    /// The same per link and hour.
    pub false_down_per_link_hour: f64,
}

impl SoakReport {
    /// A summary for people.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "soak: {} nodes ({}), {} links, {:.1} % loss on every link\n",
            self.nodes,
            self.topology,
            self.links,
            self.loss * 100.0
        );
        for (name, r) in &self.routers {
            text.push_str(&format!(
                "{name:<16} {:.0} s: {} false neighbour-down events ({:.3} per link-hour)\n",
                r.seconds, r.false_down_events, r.false_down_per_link_hour
            ));
        }
        if let Some(abuse) = &self.api_abuse {
            text.push_str(&format!(
                "API abuse: sends {:?}, {} half-open connections; wedged nodes: {}; \
                 unreachable pairs after: {}\n",
                abuse.sends,
                abuse.half_open_opened,
                abuse.wedged_nodes.len(),
                abuse.unreachable_pairs
            ));
            for (node, refused) in &abuse.refused {
                text.push_str(&format!("  {node:<14} refused {refused:?}\n"));
            }
            for (node, late) in &abuse.late_timers {
                let max = abuse
                    .timer_lateness_max_ms
                    .get(node)
                    .copied()
                    .unwrap_or(0.0);
                text.push_str(&format!(
                    "  {node:<14} {late} protocol timers more than {:.1} ms late (latest <= {max:.1} ms)\n",
                    crate::abuse::LATE_TIMER_SECONDS * 1000.0
                ));
            }
        }
        text
    }
}

fn soak_kinds(router: RouterChoice) -> Vec<Kind> {
    match router {
        RouterChoice::X0tta6bl4 => vec![Kind::X0tta6bl4(Routing::Cost)],
        RouterChoice::Babeld => vec![Kind::Babeld(Some(MATCHED_HELLO_S))],
        RouterChoice::BabeldDefault => vec![Kind::Babeld(None)],
        RouterChoice::Both => vec![
            Kind::X0tta6bl4(Routing::Cost),
            Kind::Babeld(Some(MATCHED_HELLO_S)),
        ],
    }
}

/// Parse `5%` or `0.05`.
pub fn parse_loss(text: &str) -> Result<f64, LabError> {
    let bad = || {
        LabError::usage(
            format!("--loss {text:?} is not a loss rate"),
            "write a percentage like 5% or a fraction like 0.05",
        )
    };
    let value = match text.trim().strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => text.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..1.0).contains(&value) {
        return Err(bad());
    }
    Ok(value)
}

/// Run a soak.
pub async fn soak(
    options: &SoakOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<SoakReport, LabError> {
    let loss = parse_loss(&options.loss)?;
    let run_options = crate::run::Options {
        topology: options.topology.clone(),
        nodes: options.nodes,
        scenario: "node-kill".into(),
        iterations: 1,
        seed: 1,
        router: options.router,
        exe: options.exe.clone(),
        node_root: None,
        flows_sample: None,
        budget: Default::default(),
        protocol: options.protocol.clone(),
        routings: Vec::new(),
    };
    let (_, topology) = crate::run::prepare(&run_options)?;
    if let Some(e) = crate::not_root_message(crate::effective_uid()) {
        return Err(e);
    }
    let kinds = soak_kinds(options.router);
    let babeld = kinds.iter().any(|k| matches!(k, Kind::Babeld(_)));
    for tool in ["ip", "nft"].into_iter().chain(babeld.then_some("babeld")) {
        if !have_tool(tool) {
            return Err(crate::missing_tool_message(tool));
        }
    }
    remove_stale();
    let workspace = tempfile::Builder::new()
        .prefix("x0tta6bl4-soak-")
        .tempdir()
        .map_err(|e| LabError::failed(format!("cannot create a temporary directory: {e}")))?;
    let net = Net::build(&topology)?;
    let mut report = SoakReport {
        topology: options.topology.clone(),
        nodes: topology.len(),
        links: topology.links.len(),
        loss,
        routers: BTreeMap::new(),
        api_abuse: None,
    };
    // Every soaked x0tta6bl4 router costs links as the protocol does (no predictor).
    let sections = crate::run::node_sections(&run_options, Routing::Cost, workspace.path(), None)?;
    for kind in kinds {
        let mut fleet = Fleet::new(
            kind,
            &options.exe,
            workspace.path(),
            &net,
            &topology,
            &sections,
        )?;
        let names: Vec<String> = topology.names.iter().map(|n| n.to_string()).collect();
        let abuse =
            (options.api_abuse && matches!(kind, Kind::X0tta6bl4(_))).then_some(names.as_slice());
        let count = soak_one(&mut fleet, &net, options, loss, abuse, progress).await;
        fleet.stop_all();
        crate::run::reset(&net, &topology);
        let (count, abused) = count?;
        report.routers.insert(kind.key().to_owned(), count);
        if abused.is_some() {
            report.api_abuse = abused;
        }
    }
    Ok(report)
}

/// Start one router's nodes, converge, put the loss on every link and count.
async fn soak_one(
    fleet: &mut Fleet,
    net: &Net,
    options: &SoakOptions,
    loss: f64,
    abuse_names: Option<&[String]>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(SoakCount, Option<crate::abuse::AbuseReport>), LabError> {
    let all: Vec<usize> = (0..net.nodes.len()).collect();
    for &i in &all {
        fleet.start(i, net)?;
    }
    progress("waiting for convergence");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let links = net.edges.len();
    for l in 0..links {
        net.drop_on_link(l, true, true, loss)?;
    }
    let before = fleet.neighbour_downs(net, &all).await;
    let apis: Vec<std::net::SocketAddr> = all.iter().map(|&i| fleet.api_addr(net, i)).collect();
    let lateness = match abuse_names {
        Some(_) => crate::abuse::lateness(&apis).await,
        None => Vec::new(),
    };
    let abuse = abuse_names.map(|names| crate::abuse::Abuse::start(&apis, names));
    let started = Instant::now();
    while started.elapsed() < options.duration {
        if let Some(exited) = fleet.first_exited() {
            return Err(LabError::failed(exited));
        }
        progress(&format!(
            "soaking: {} s of {} s",
            started.elapsed().as_secs(),
            options.duration.as_secs()
        ));
        tokio::time::sleep(Duration::from_secs(1).min(options.duration)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let abused = match (abuse, abuse_names) {
        (Some(abuse), Some(names)) => {
            progress("API abuse stopped: checking every node");
            Some(abuse.finish(&apis, names, &lateness).await)
        }
        _ => None,
    };
    let after = fleet.neighbour_downs(net, &all).await;
    let false_down_events = after.saturating_sub(before);
    let count = SoakCount {
        seconds,
        false_down_events,
        false_down_per_link_hour: false_down_events as f64
            / (links as f64 * seconds / 3600.0).max(1e-9),
    };
    Ok((count, abused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rates() {
        assert_eq!(parse_loss("5%").unwrap(), 0.05);
        assert_eq!(parse_loss("0.1").unwrap(), 0.1);
        assert!(parse_loss("100%").is_err());
        assert!(parse_loss("five").is_err());
    }
}
