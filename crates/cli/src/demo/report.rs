//! How the demo talks to people: progress on standard error while it runs, then a
//! summary (or one JSON object) on standard output.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use x0tta6bl4_proto::measure::MttrSummary;

/// The demo's result, printed as JSON with `--json`. The first six keys are the
/// contract of issue 2; the others are details.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Number of nodes started.
    pub nodes: usize,
    /// Names of the nodes killed with SIGKILL.
    pub killed: Vec<String>,
    /// From the first node's start until every node had a route to every other.
    pub converged_ms: u64,
    /// Every affected flow recovered and every survivor pair is reachable.
    pub healed: bool,
    /// The outage of the affected flows.
    pub mttr_ms: MttrSummary,
    /// Survivor pairs (ordered) with no probe delivered in the last 500 ms.
    pub unreachable_pairs_after_heal: usize,
    /// The seed of the topology and the victims.
    pub seed: u64,
    /// Links in the topology.
    pub links: usize,
    /// Probe flows between survivors (ordered pairs).
    pub survivor_flows: usize,
    /// Survivor flows whose path crossed a killed node before the fault.
    pub affected_flows: usize,
    /// Affected flows that never delivered again, as `source->target`.
    pub unhealed_flows: Vec<String>,
    /// Survivor pairs with no recent probe, as `source->target`.
    pub unreachable_pairs: Vec<String>,
    /// From the kill until every survivor's routes avoided the killed nodes.
    pub routes_healed_ms: u64,
    /// Interval of the probe flows.
    pub probe_interval_ms: u64,
    /// The run's directory, when kept with `--keep-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

impl DemoReport {
    /// The readable summary.
    pub fn summary(&self) -> String {
        let m = &self.mttr_ms;
        let mut text = format!(
            "x0tta6bl4 demo: {} nodes, {} links, seed {}\n\
             \x20 converged        {} ms after the first node started\n\
             \x20 killed           {} (SIGKILL)\n\
             \x20 routes healed    {} ms after the kill\n\
             \x20 affected flows   {} of {} survivor flows crossed a killed node\n\
             \x20 MTTR (ms)        mean {:.1}  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  ({} samples)\n\
             \x20 unreachable      {} survivor pairs after healing\n\
             \x20 healed           {}\n",
            self.nodes,
            self.links,
            self.seed,
            self.converged_ms,
            if self.killed.is_empty() { "nobody".to_owned() } else { self.killed.join(", ") },
            self.routes_healed_ms,
            self.affected_flows,
            self.survivor_flows,
            m.mean,
            m.p50,
            m.p95,
            m.p99,
            m.max,
            m.samples,
            self.unreachable_pairs_after_heal,
            if self.healed { "yes" } else { "NO" },
        );
        if !self.unhealed_flows.is_empty() {
            text.push_str(&format!(
                "  never recovered  {}\n",
                self.unhealed_flows.join(", ")
            ));
        }
        if !self.unreachable_pairs.is_empty() {
            text.push_str(&format!(
                "  unreachable      {}\n",
                self.unreachable_pairs.join(", ")
            ));
        }
        if let Some(dir) = &self.dir {
            text.push_str(&format!("  kept             {dir}\n"));
        }
        text
    }
}

/// Numbered steps with a spinner on standard error; silent with `--json` or when
/// standard error is not a terminal.
pub struct Progress {
    bar: ProgressBar,
    step: usize,
    steps: usize,
    title: String,
}

impl Progress {
    /// A progress display of `steps` steps, hidden when `hidden`.
    pub fn new(steps: usize, hidden: bool) -> Progress {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        Progress {
            bar,
            step: 0,
            steps,
            title: String::new(),
        }
    }

    /// Finish the current step and start the next one.
    pub fn step(&mut self, title: impl Into<String>) {
        self.finish_step();
        self.step += 1;
        self.title = title.into();
        self.bar
            .set_message(format!("[{}/{}] {}", self.step, self.steps, self.title));
        if self.step == 1 {
            self.bar.enable_steady_tick(Duration::from_millis(100));
        }
    }

    /// Show how far the current step is (e.g. a count).
    pub fn update(&self, detail: impl AsRef<str>) {
        let (step, steps, title) = (self.step, self.steps, &self.title);
        self.bar
            .set_message(format!("[{step}/{steps}] {title}: {}", detail.as_ref()));
    }

    fn finish_step(&self) {
        if self.step > 0 {
            self.bar
                .println(format!("  ✓ [{}/{}] {}", self.step, self.steps, self.title));
        }
    }

    /// Finish the last step and remove the spinner.
    pub fn done(&self) {
        self.finish_step();
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DemoReport {
        DemoReport {
            nodes: 10,
            killed: vec!["n03".into(), "n07".into()],
            converged_ms: 812,
            healed: true,
            mttr_ms: MttrSummary::from_ms(&[100.0, 200.0]),
            unreachable_pairs_after_heal: 0,
            seed: 7,
            links: 15,
            survivor_flows: 56,
            affected_flows: 2,
            unhealed_flows: vec![],
            unreachable_pairs: vec![],
            routes_healed_ms: 150,
            probe_interval_ms: 10,
            dir: None,
        }
    }

    #[test]
    fn json_has_the_contract_keys() {
        let json = serde_json::to_value(report()).unwrap();
        for key in [
            "nodes",
            "killed",
            "converged_ms",
            "healed",
            "mttr_ms",
            "unreachable_pairs_after_heal",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for key in ["mean", "p50", "p95", "p99", "max", "samples"] {
            assert!(json["mttr_ms"].get(key).is_some(), "missing mttr_ms.{key}");
        }
        assert_eq!(json["killed"], serde_json::json!(["n03", "n07"]));
        assert!(json.get("dir").is_none());
    }

    #[test]
    fn summary_reads() {
        let text = report().summary();
        assert!(
            text.contains("killed           n03, n07 (SIGKILL)"),
            "{text}"
        );
        assert!(text.contains("p95 200.0"), "{text}");
        assert!(text.contains("healed           yes"), "{text}");
    }
}
