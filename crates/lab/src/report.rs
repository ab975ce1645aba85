//! What `lab run` reports; `--json` prints [`LabReport`] and nothing else.

use std::collections::BTreeMap;

use serde::Serialize;
use x0tta6bl4_proto::measure::MttrSummary;

/// One router's results over every iteration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RouterReport {
    /// Outage of every affected flow, in ms.
    pub mttr_ms: MttrSummary,
    /// Neighbour-down events at survivors not explained by the fault: from each node's
    /// `x0tta6bl4_neighbour_down_total`, or babeld's `flush neighbour` lines on its
    /// local interface.
    pub false_down_events: u64,
    /// Survivor pairs without a loop-free path after the heal, summed over iterations.
    pub unreachable_pairs_after_heal: usize,
    /// Every outage sample, ms.
    #[serde(skip)]
    pub samples: Vec<f64>,
    /// Affected flows that never delivered again.
    pub unhealed_flows: usize,
    /// Which probe flows ran.
    pub flows: FlowsReport,
    /// What the router's processes cost the host (CPU, memory, links, disk).
    pub resources: crate::resources::ResourceReport,
    /// `--node-cpu`/`--node-memory`: the cgroup limits and what they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::BudgetReport>,
    /// Identity faults (`svid-expiry`, `revoke`) only: how the mesh stopped trusting
    /// the node, summed over iterations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityEffect>,
    /// x0tta6bl4 only: delivery and reroutes over the iterations (`--routing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingFigures>,
}

/// How an x0tta6bl4 routing (`lab run --routing`) did over a router's iterations: the
/// figures `twin run --routing` reports, as far as the lab can measure them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoutingFigures {
    /// Probes sent by every flow, from their start to their collection (baseline, fault
    /// and recovery).
    pub probes_sent: u64,
    /// Probes delivered of those, each counted once (replays are not counted). Under
    /// the `byzantine` fault this also counts a Byzantine forwarder's altered copies
    /// (one byte flipped): data messages are not signed end to end, so a receiver
    /// cannot tell them from probes, and the ratio can exceed 1.
    pub probes_delivered: u64,
    /// `probes_delivered / probes_sent`.
    pub delivery_ratio: f64,
    /// Link costs raised by the link-failure predictor, every node
    /// (`x0tta6bl4_link_risk_raises_total`).
    pub predictor_raises: u64,
    /// Degraded-link reroutes of the healing loop, every node
    /// (`x0tta6bl4_healing_decisions_total{kind="reroute"}`).
    pub healing_reroutes: u64,
    /// Raises and reroutes that no cut explains: those at nodes other than the two ends
    /// of a link that was cut, and every one in an iteration that cut no link (a ramp
    /// that recovered; any other fault that cuts nothing). A lower bound: raises at the
    /// ends on their other links count as needed.
    pub unneeded_reroutes: u64,
    /// Links times the time the flows ran, in hours.
    pub link_hours: f64,
    /// `unneeded_reroutes / link_hours`.
    pub unneeded_reroutes_per_link_hour: f64,
}

impl RoutingFigures {
    /// Add one iteration's counts and recompute the ratios.
    pub fn add(&mut self, other: &RoutingFigures) {
        self.probes_sent += other.probes_sent;
        self.probes_delivered += other.probes_delivered;
        self.predictor_raises += other.predictor_raises;
        self.healing_reroutes += other.healing_reroutes;
        self.unneeded_reroutes += other.unneeded_reroutes;
        self.link_hours += other.link_hours;
        self.delivery_ratio = match self.probes_sent {
            0 => 0.0,
            sent => self.probes_delivered as f64 / sent as f64,
        };
        self.unneeded_reroutes_per_link_hour = match self.link_hours {
            h if h > 0.0 => self.unneeded_reroutes as f64 / h,
            _ => 0.0,
        };
    }
}

/// The probe flows of a router's iterations.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FlowsReport {
    /// `--flows-sample K`: at most K flows per iteration, drawn at random (seeded) among
    /// the survivor pairs whose path crosses the fault; `null`: every ordered pair of
    /// survivors ran a flow.
    pub sample: Option<usize>,
    /// Flows started, summed over iterations.
    pub started: usize,
    /// Flows whose path crossed the fault when it struck (the MTTR's population),
    /// summed over iterations.
    pub affected: usize,
}

/// How the mesh stopped trusting a node whose identity failed, counted at its
/// neighbours.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IdentityEffect {
    /// Open links they closed because of it
    /// (`x0tta6bl4_identity_link_closes_total{reason="peer_svid_expired"|"revoked"}`).
    pub links_closed: u64,
    /// Its reconnects they refused afterwards: failed handshakes (expired SVID) or
    /// policy denials (revoked).
    pub reconnects_refused: u64,
    /// Iterations after whose heal a survivor still linked or routed to it (must be 0).
    pub readmitted: u64,
}

impl IdentityEffect {
    /// Add another iteration's counts.
    pub fn add(&mut self, other: &IdentityEffect) {
        self.links_closed += other.links_closed;
        self.reconnects_refused += other.reconnects_refused;
        self.readmitted += other.readmitted;
    }
}

/// The twin's prediction for the same topology, timers and fault.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TwinSide {
    /// The twin's MTTR (None when the fault has no twin model).
    pub mttr_ms: Option<MttrSummary>,
    /// |twin p50 - lab p50| / lab p50 (x0tta6bl4), a fraction.
    pub error_p50: Option<f64>,
    /// |twin p95 - lab p95| / lab p95 (x0tta6bl4), a fraction.
    pub error_p95: Option<f64>,
    /// Every twin sample, ms.
    #[serde(skip)]
    pub samples: Vec<f64>,
    /// What the twin ran: its scenario and the lab's measurements it took.
    #[serde(skip)]
    pub model: Option<String>,
}

/// One `lab run`.
#[derive(Clone, Debug, Serialize)]
pub struct LabReport {
    /// The topology as given.
    pub topology: String,
    /// Nodes started.
    pub nodes: usize,
    /// The fault as given.
    pub scenario: String,
    /// Iterations per router.
    pub iterations: usize,
    /// The run's seed.
    pub seed: u64,
    /// Results per router that ran (`x0tta6bl4`, `babeld`, `babeld-default`).
    pub routers: BTreeMap<String, RouterReport>,
    /// The twin side by side.
    pub twin: TwinSide,
    /// CPU seconds the lab process itself used (setup, route polling, flow collection,
    /// the twin): the host's share that was not the routers'.
    pub lab_cpu_s: f64,
}

impl LabReport {
    /// Whether every router healed: no unreachable survivor pair, no unhealed flow, and
    /// a node whose identity failed kept out.
    pub fn healed(&self) -> bool {
        self.routers.values().all(|r| {
            r.unreachable_pairs_after_heal == 0
                && r.unhealed_flows == 0
                && r.identity.as_ref().is_none_or(|i| i.readmitted == 0)
        })
    }

    /// A summary for people.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "chaos lab: {} nodes ({}), fault {}, {} iterations, seed {}\n",
            self.nodes, self.topology, self.scenario, self.iterations, self.seed
        );
        text.push_str("router            samples   mean ms    p50 ms    p95 ms    p99 ms    max ms  false-down  unreachable\n");
        let mut row = |name: &str, m: &MttrSummary, false_down: String, unreachable: String| {
            text.push_str(&format!(
                "{name:<16} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {false_down:>11} {unreachable:>12}\n",
                m.samples, m.mean, m.p50, m.p95, m.p99, m.max
            ));
        };
        for (name, r) in &self.routers {
            row(
                name,
                &r.mttr_ms,
                r.false_down_events.to_string(),
                r.unreachable_pairs_after_heal.to_string(),
            );
        }
        if let Some(t) = &self.twin.mttr_ms {
            row("twin", t, "-".into(), "-".into());
        }
        for (name, r) in &self.routers {
            if let Some(g) = &r.routing {
                text.push_str(&format!(
                    "{name}: delivery {:.4} ({} of {} probes), predictor raises {}, healing reroutes {}, unneeded reroutes {:.1} per link-hour ({} over {:.3} link-hours)\n",
                    g.delivery_ratio,
                    g.probes_delivered,
                    g.probes_sent,
                    g.predictor_raises,
                    g.healing_reroutes,
                    g.unneeded_reroutes_per_link_hour,
                    g.unneeded_reroutes,
                    g.link_hours
                ));
            }
        }
        for (name, r) in &self.routers {
            if let Some(i) = &r.identity {
                text.push_str(&format!(
                    "{name}: identity: {} links closed, {} reconnects refused, readmitted in {} iterations\n",
                    i.links_closed, i.reconnects_refused, i.readmitted
                ));
            }
        }
        for (name, r) in &self.routers {
            let sample = r
                .flows
                .sample
                .map_or("every survivor pair".to_owned(), |k| {
                    format!("sample of at most {k} crossing the fault")
                });
            text.push_str(&format!(
                "{name}: flows: {} started ({sample}), {} crossed the fault\n",
                r.flows.started, r.flows.affected
            ));
            text.push_str(&r.resources.summary(name));
            if let Some(b) = &r.budget {
                text.push_str(&format!(
                    "{name}: budget (cgroup {}): cpu {} of a core, memory {}: throttled {} periods ({:.1} s), {} OOM kills\n",
                    b.cgroup,
                    b.cpu.map_or("unlimited".to_owned(), |c| format!("{c}")),
                    b.memory_bytes.map_or("unlimited".to_owned(), |m| format!("{} MiB", m >> 20)),
                    b.cpu_throttled_periods,
                    b.cpu_throttled_s,
                    b.oom_kills
                ));
            }
        }
        for (name, r) in self.routers.iter().filter(|(_, r)| r.unhealed_flows > 0) {
            text.push_str(&format!(
                "{name}: {} affected flows never delivered again\n",
                r.unhealed_flows
            ));
        }
        text.push_str(&format!("lab process: {:.1} CPU s\n", self.lab_cpu_s));
        if let Some(model) = &self.twin.model {
            text.push_str(&format!("twin model: {model}\n"));
        }
        if let (Some(e50), Some(e95)) = (self.twin.error_p50, self.twin.error_p95) {
            text.push_str(&format!(
                "twin relative error: p50 {:.1} %, p95 {:.1} %\n",
                e50 * 100.0,
                e95 * 100.0
            ));
        }
        if let Some(x0) = self.routers.get("x0tta6bl4") {
            for babel in ["babeld", "babeld-default"] {
                if let Some(b) = self.routers.get(babel) {
                    if b.mttr_ms.p95 > 0.0 {
                        text.push_str(&format!(
                            "MTTR ratio x0tta6bl4 / {babel}: p50 {:.3}, p95 {:.3}\n",
                            x0.mttr_ms.p50 / b.mttr_ms.p50.max(1e-9),
                            x0.mttr_ms.p95 / b.mttr_ms.p95
                        ));
                    }
                }
            }
        }
        text.push_str(if self.healed() {
            "healed: yes\n"
        } else {
            "healed: NO\n"
        });
        text
    }
}
