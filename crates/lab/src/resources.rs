//! What each node process costs the host: CPU seconds (`utime + stime` of
//! `/proc/PID/stat`), resident memory (`VmRSS` and its peak `VmHWM` of
//! `/proc/PID/status`), bytes on its mesh links (the `p*` veths of `/proc/PID/net/dev`,
//! which shows the namespace the process runs in; the management veth the lab polls
//! over is left out) and disk (its directory: identity, state files and log). Read
//! straight from /proc, no process spawned, so sampling 100 nodes costs a few ms.
//!
//! The lab samples every node at the edges of three phases: `idle` (converged, no
//! flows, nobody polls), `flows` (probe flows running, before the fault) and `heal`
//! (from the fault until routes healed and the flows settled). A node whose process
//! changed between two samples (killed, restarted) is left out of that window.

use std::path::Path;

use serde::Serialize;

/// One node process at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// The process.
    pub pid: u32,
    /// CPU seconds used since it started (user + system).
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory, bytes.
    pub rss_peak_bytes: u64,
    /// Bytes sent plus received on its mesh links since they were created.
    pub link_bytes: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times, from the auxiliary vector
/// (`AT_CLKTCK`); 100 when it cannot be read (Linux's value on every common platform).
pub fn clock_ticks() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(bytes) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    bytes
        .chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|&(key, _)| key == AT_CLKTCK)
        .map_or(100, |(_, value)| value.max(1))
}

/// CPU seconds (utime + stime) from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_s(stat: &str, ticks: u64) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks as f64)
}

/// A `kB` line (`VmRSS:  1234 kB`) of `/proc/PID/status`, in bytes.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Bytes received plus sent on the interfaces `wanted` picks, from `/proc/PID/net/dev`.
pub fn parse_net_dev(text: &str, wanted: impl Fn(&str) -> bool) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| wanted(name.trim()))
        .filter_map(|(_, counters)| {
            let c: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes ...
            Some(c.first()? + c.get(8)?)
        })
        .sum()
}

/// A mesh link of the lab (`p<neighbour>`), not `lo` or the management veth.
pub fn is_mesh_link(name: &str) -> bool {
    name.strip_prefix('p')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Sample process `pid`; `None` when it is gone.
pub fn sample(pid: u32, ticks: u64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let net = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    Some(ProcSample {
        pid,
        cpu_s: parse_stat_cpu_s(&stat, ticks)?,
        rss_bytes: parse_status_kb(&status, "VmRSS").unwrap_or(0),
        rss_peak_bytes: parse_status_kb(&status, "VmHWM").unwrap_or(0),
        link_bytes: parse_net_dev(&net, is_mesh_link),
    })
}

/// The host's load averages over 1, 5 and 15 minutes.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Bytes of the files under `dir` (recursively); 0 when it cannot be read.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Mean and maximum over the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Mean over the nodes measured.
    pub mean: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// Of `values` (zero when empty).
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        Spread {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            max: values.iter().copied().fold(f64::MIN, f64::max),
        }
    }
}

/// What the nodes used during one phase, over every iteration.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseUse {
    /// Wall-clock seconds the phase lasted, summed over iterations.
    pub seconds: f64,
    /// CPU seconds per node in the phase.
    pub cpu_s: Spread,
    /// CPU per node as a share of one core (CPU seconds / wall seconds).
    pub cpu_cores: Spread,
    /// Resident memory per node at the end of the phase, MiB (the largest over
    /// iterations for each node).
    pub rss_mib: Spread,
    /// Bytes per second per node on its mesh links (sent + received).
    pub link_bytes_per_s: Spread,
}

/// Per-node accumulators of one phase.
#[derive(Clone, Debug, Default)]
struct PhaseAcc {
    seconds: f64,
    cpu_s: Vec<f64>,
    wall_s: Vec<f64>,
    link_bytes: Vec<f64>,
    rss: Vec<u64>,
    seen: Vec<bool>,
}

impl PhaseAcc {
    fn new(nodes: usize) -> Self {
        PhaseAcc {
            seconds: 0.0,
            cpu_s: vec![0.0; nodes],
            wall_s: vec![0.0; nodes],
            link_bytes: vec![0.0; nodes],
            rss: vec![0; nodes],
            seen: vec![false; nodes],
        }
    }

    fn finish(&self) -> Option<PhaseUse> {
        let nodes: Vec<usize> = (0..self.seen.len()).filter(|&i| self.seen[i]).collect();
        if nodes.is_empty() {
            return None;
        }
        let pick =
            |f: &dyn Fn(usize) -> f64| Spread::of(&nodes.iter().map(|&i| f(i)).collect::<Vec<_>>());
        Some(PhaseUse {
            seconds: self.seconds,
            cpu_s: pick(&|i| self.cpu_s[i]),
            cpu_cores: pick(&|i| self.cpu_s[i] / self.wall_s[i].max(1e-9)),
            rss_mib: pick(&|i| self.rss[i] as f64 / 1_048_576.0),
            link_bytes_per_s: pick(&|i| self.link_bytes[i] / self.wall_s[i].max(1e-9)),
        })
    }
}

/// Which phase a window belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Converged, no flows, no polling.
    Idle,
    /// Probe flows running, before the fault.
    Flows,
    /// From the fault until the routes healed and the flows settled.
    Heal,
}

/// Samples of every node at one instant (`None`: not running).
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: std::time::Instant,
    nodes: Vec<Option<ProcSample>>,
}

/// The nodes' use over a run: phases, and per-node totals at its end.
#[derive(Clone, Debug)]
pub struct Usage {
    ticks: u64,
    idle: PhaseAcc,
    flows: PhaseAcc,
    heal: PhaseAcc,
    load_start: [f64; 3],
}

impl Usage {
    /// For `nodes` nodes.
    pub fn new(nodes: usize) -> Usage {
        Usage {
            ticks: clock_ticks(),
            idle: PhaseAcc::new(nodes),
            flows: PhaseAcc::new(nodes),
            heal: PhaseAcc::new(nodes),
            load_start: load_average(),
        }
    }

    /// Sample the processes `pids` (index = node).
    pub fn snapshot(&self, pids: &[Option<u32>]) -> Snapshot {
        Snapshot {
            at: std::time::Instant::now(),
            nodes: pids
                .iter()
                .map(|pid| pid.and_then(|p| sample(p, self.ticks)))
                .collect(),
        }
    }

    /// Account the window from `start` to `end` to `phase`.
    pub fn add(&mut self, phase: Phase, start: &Snapshot, end: &Snapshot) {
        let wall = end.at.duration_since(start.at).as_secs_f64();
        let acc = match phase {
            Phase::Idle => &mut self.idle,
            Phase::Flows => &mut self.flows,
            Phase::Heal => &mut self.heal,
        };
        acc.seconds += wall;
        for (i, (a, b)) in start.nodes.iter().zip(&end.nodes).enumerate() {
            let (Some(a), Some(b)) = (a, b) else { continue };
            if a.pid != b.pid || i >= acc.seen.len() {
                continue;
            }
            acc.seen[i] = true;
            acc.cpu_s[i] += (b.cpu_s - a.cpu_s).max(0.0);
            acc.wall_s[i] += wall;
            acc.link_bytes[i] += b.link_bytes.saturating_sub(a.link_bytes) as f64;
            acc.rss[i] = acc.rss[i].max(b.rss_bytes);
        }
    }

    /// The report, with the run's totals from `last` (every node's process at the end)
    /// and the bytes of each node's directory.
    pub fn report(&self, last: &Snapshot, disk_bytes: &[u64]) -> ResourceReport {
        let running: Vec<&ProcSample> = last.nodes.iter().flatten().collect();
        let mib = |b: u64| b as f64 / 1_048_576.0;
        ResourceReport {
            idle: self.idle.finish(),
            flows: self.flows.finish(),
            heal: self.heal.finish(),
            cpu_s_total: Spread::of(&running.iter().map(|s| s.cpu_s).collect::<Vec<_>>()),
            rss_mib: Spread::of(&running.iter().map(|s| mib(s.rss_bytes)).collect::<Vec<_>>()),
            rss_peak_mib: Spread::of(
                &running
                    .iter()
                    .map(|s| mib(s.rss_peak_bytes))
                    .collect::<Vec<_>>(),
            ),
            disk_mib: Spread::of(&disk_bytes.iter().map(|&b| mib(b)).collect::<Vec<_>>()),
            load_average_start: self.load_start,
            load_average_end: load_average(),
        }
    }
}

/// What the node processes of one router cost the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceReport {
    /// Converged, no flows, nobody polling (a window after the first convergence).
    pub idle: Option<PhaseUse>,
    /// Probe flows running before each fault.
    pub flows: Option<PhaseUse>,
    /// From each fault until the routes healed and the flows settled (flows running).
    pub heal: Option<PhaseUse>,
    /// CPU seconds per node process over its whole life, at the end of the run (a
    /// restarted node counts from its restart).
    pub cpu_s_total: Spread,
    /// Resident memory per node at the end, MiB.
    pub rss_mib: Spread,
    /// Peak resident memory per node (VmHWM), MiB.
    pub rss_peak_mib: Spread,
    /// Disk per node: its directory (identity, state files) and log, MiB.
    pub disk_mib: Spread,
    /// The host's load averages (1, 5, 15 min) when the routers started: the machine
    /// is shared, CPU figures are only comparable at similar load.
    pub load_average_start: [f64; 3],
    /// The host's load averages at the end.
    pub load_average_end: [f64; 3],
}

impl ResourceReport {
    /// Lines for people.
    pub fn summary(&self, router: &str) -> String {
        let mut text = format!(
            "{router}: per node, mean/max: CPU {:.2}/{:.2} s over the run, RSS {:.1}/{:.1} MiB (peak {:.1}/{:.1}), disk {:.2}/{:.2} MiB; load average {:.2} at start, {:.2} at end\n",
            self.cpu_s_total.mean,
            self.cpu_s_total.max,
            self.rss_mib.mean,
            self.rss_mib.max,
            self.rss_peak_mib.mean,
            self.rss_peak_mib.max,
            self.disk_mib.mean,
            self.disk_mib.max,
            self.load_average_start[0],
            self.load_average_end[0],
        );
        for (name, phase) in [
            ("idle", &self.idle),
            ("flows", &self.flows),
            ("heal", &self.heal),
        ] {
            if let Some(p) = phase {
                text.push_str(&format!(
                    "{router}:   {name:<5} {:>6.1} s: CPU {:.3}/{:.3} of a core, RSS {:.1}/{:.1} MiB, links {:.1}/{:.1} kB/s\n",
                    p.seconds,
                    p.cpu_cores.mean,
                    p.cpu_cores.max,
                    p.rss_mib.mean,
                    p.rss_mib.max,
                    p.link_bytes_per_s.mean / 1e3,
                    p.link_bytes_per_s.max / 1e3,
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (x0tta6bl4 (a) b) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu_s(stat, 100), Some(3.0));
        assert_eq!(parse_stat_cpu_s("garbage", 100), None);
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n\
                      lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n\
                    mgmt: 500 1 0 0 0 0 0 0 700 1 0 0 0 0 0 0\n\
                      p3: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n\
                     p12: 1 1 0 0 0 0 0 0 2 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev, is_mesh_link), 33);
        assert!(!is_mesh_link("p") && !is_mesh_link("peer") && is_mesh_link("p0"));
    }

    #[test]
    fn own_process_is_sampled_and_windows_add_up() {
        let ticks = clock_ticks();
        assert!((10..=10_000).contains(&ticks), "{ticks}");
        let me = sample(std::process::id(), ticks).expect("this process exists");
        assert!(me.rss_bytes > 0 && me.rss_peak_bytes >= me.rss_bytes);
        let mut usage = Usage::new(2);
        let pids = [Some(std::process::id()), None];
        let start = usage.snapshot(&pids);
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(150) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert_ne!(x, 1);
        let end = usage.snapshot(&pids);
        usage.add(Phase::Flows, &start, &end);
        let report = usage.report(&end, &[10, 30]);
        let flows = report.flows.clone().expect("node 0 was measured");
        assert!(flows.cpu_s.max > 0.0, "{flows:?}");
        assert!(flows.seconds >= 0.15);
        assert!(report.idle.is_none());
        assert_eq!(report.disk_mib.max, 30.0 / 1_048_576.0);
        assert!(report.summary("x").contains("flows"));
    }

    #[test]
    fn spread() {
        assert_eq!(Spread::of(&[]), Spread::default());
        assert_eq!(
            Spread::of(&[1.0, 3.0]),
            Spread {
                mean: 2.0,
                max: 3.0
            }
        );
    }
}
