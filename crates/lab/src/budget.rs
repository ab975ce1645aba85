//! A resource budget per node process (`lab run --node-cpu 0.25 --node-memory 64M`):
//! each node runs in its own cgroup with a CPU quota and a memory limit, as a
//! Raspberry-Pi-class device would give it.
//!
//! cgroup v2 is used when `/sys/fs/cgroup` is the unified hierarchy with the `cpu` and
//! `memory` controllers: `/sys/fs/cgroup/x0lab<PID>/n<I>` with `cpu.max` = `QUOTA
//! 100000` and `memory.max` (and `memory.swap.max` = 0, so the limit is not a swap
//! allowance). On a host whose `cpu` and `memory` controllers are still on cgroup v1
//! (a hybrid layout, e.g. a container runtime's), the same limits go to the v1 files
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us` and `memory.limit_in_bytes` (and
//! `memory.memsw.limit_in_bytes` where swap accounting is on), in a child of the lab's
//! own cgroup of each hierarchy. Either way the node is moved into its cgroup before
//! it runs (`sh -c 'echo $$ > cgroup.procs; exec ip netns exec ...'`), so all of its
//! memory is charged there. Everything is removed when [`Cgroups`] is dropped, after
//! the processes (the fleet is dropped first).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::LabError;

/// CPU period the quota is given in (100 ms, the kernel's default).
const PERIOD_US: u64 = 100_000;

/// The limits of every node process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    /// CPU share of one core (0.25: 25 ms of CPU per 100 ms).
    pub cpu: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
}

impl Budget {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.cpu.is_some() || self.memory_bytes.is_some()
    }

    /// Check a `--node-cpu` value.
    pub fn parse_cpu(text: &str) -> Result<f64, LabError> {
        let cpu: f64 = text.trim().parse().map_err(|_| {
            LabError::usage(
                format!("--node-cpu {text:?} is not a number"),
                "give a share of one core, e.g. 0.25 (25 ms of CPU every 100 ms)",
            )
        })?;
        if !(0.01..=64.0).contains(&cpu) {
            return Err(LabError::usage(
                format!("--node-cpu {text} is out of range"),
                "give 0.01 to 64 cores",
            ));
        }
        Ok(cpu)
    }

    /// Check a `--node-memory` value: bytes, or with a suffix K, M or G (powers of 1024).
    pub fn parse_memory(text: &str) -> Result<u64, LabError> {
        let t = text.trim();
        let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((at, _)) => t.split_at(at),
            None => (t, ""),
        };
        let scale: u64 = match unit
            .trim_end_matches(['i', 'B'])
            .to_ascii_uppercase()
            .as_str()
        {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 0,
        };
        let bytes = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .filter(|&b| b > 0);
        let Some(bytes) = bytes else {
            return Err(LabError::usage(
                format!("--node-memory {text:?} is not a size"),
                "give bytes or a size with K, M or G, e.g. 64M",
            ));
        };
        if bytes < 8 << 20 {
            return Err(LabError::usage(
                format!("--node-memory {text} is below 8 MiB"),
                "a node process needs more: give at least 8M",
            ));
        }
        Ok(bytes)
    }

    /// `cpu.max` content (cgroup v2).
    pub fn cpu_max(cpu: f64) -> String {
        format!("{} {PERIOD_US}", quota_us(cpu))
    }
}

fn quota_us(cpu: f64) -> u64 {
    ((cpu * PERIOD_US as f64).round() as u64).max(1_000)
}

/// What the budget was and did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BudgetReport {
    /// `v2` or `v1` (the hierarchy the limits went to).
    pub cgroup: String,
    /// CPU share of one core per node.
    pub cpu: Option<f64>,
    /// Memory limit per node, bytes.
    pub memory_bytes: Option<u64>,
    /// Periods in which a node used up its CPU quota and waited, summed over nodes.
    pub cpu_throttled_periods: u64,
    /// Time nodes spent throttled, seconds, summed over nodes.
    pub cpu_throttled_s: f64,
    /// Node processes the kernel killed for exceeding the memory limit.
    pub oom_kills: u64,
}

/// Where the limits go.
#[derive(Debug)]
enum Layout {
    /// cgroup v2: one directory per node holds both limits.
    V2 { parent: PathBuf },
    /// cgroup v1: a directory per node in each hierarchy.
    V1 {
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// The lab's cgroups: a parent per hierarchy and one child per node.
#[derive(Debug)]
pub struct Cgroups {
    budget: Budget,
    layout: Layout,
    /// Directories made, in creation order (removed in reverse).
    made: Vec<PathBuf>,
}

/// A cgroup mount of /proc/self/mountinfo: (mount point, fs type, super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<(PathBuf, String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let options = r.nth(1).unwrap_or("");
            fstype
                .starts_with("cgroup")
                .then(|| (PathBuf::from(point), fstype.to_owned(), options.to_owned()))
        })
        .collect()
}

/// The lab process's own cgroup in the v1 hierarchy of `controller` (from
/// /proc/self/cgroup lines `ID:CONTROLLERS:PATH`), or in v2 (`0::PATH`) for "".
fn own_cgroup(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_owned())
    })
}

fn write(path: &Path, value: &str) -> Result<(), LabError> {
    std::fs::write(path, value).map_err(|e| {
        LabError::environment(
            format!("cannot write {value:?} to {}: {e}", path.display()),
            "run the lab as root on a host whose cgroups are writable (cgroup v2 at \
             /sys/fs/cgroup with the cpu and memory controllers, or cgroup v1 cpu and \
             memory hierarchies), or drop --node-cpu/--node-memory",
        )
    })
}

fn read_counter(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

impl Cgroups {
    /// Make the parent cgroups of a lab of `nodes` nodes and one child per node.
    pub fn create(budget: Budget, nodes: usize) -> Result<Cgroups, LabError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = cgroup_mounts(&mountinfo);
        let name = format!("{}{}", crate::net::PREFIX, std::process::id());
        let v2_root = mounts
            .iter()
            .find(|(point, fstype, _)| fstype == "cgroup2" && point == Path::new("/sys/fs/cgroup"))
            .map(|(point, _, _)| point.clone());
        let v2_controllers = v2_root
            .as_ref()
            .and_then(|r| std::fs::read_to_string(r.join("cgroup.controllers")).ok())
            .unwrap_or_default();
        let has = |c: &str| v2_controllers.split_whitespace().any(|x| x == c);
        let mut cgroups = Cgroups {
            budget,
            layout: Layout::V1 {
                cpu: None,
                memory: None,
            },
            made: Vec::new(),
        };
        if let (Some(root), true) = (v2_root, has("cpu") && has("memory")) {
            // Made at the root, whose subtree_control may enable controllers although
            // it holds processes (a non-root cgroup with processes may not).
            write(&root.join("cgroup.subtree_control"), "+cpu +memory")?;
            let parent = root.join(&name);
            cgroups.mkdir(&parent)?;
            write(&parent.join("cgroup.subtree_control"), "+cpu +memory")?;
            cgroups.layout = Layout::V2 {
                parent: parent.clone(),
            };
            for i in 0..nodes {
                let dir = parent.join(format!("n{i}"));
                cgroups.mkdir(&dir)?;
                if let Some(cpu) = budget.cpu {
                    write(&dir.join("cpu.max"), &Budget::cpu_max(cpu))?;
                }
                if let Some(bytes) = budget.memory_bytes {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                }
            }
            return Ok(cgroups);
        }
        let v1 = |controller: &str| -> Option<PathBuf> {
            let (point, _, _) = mounts.iter().find(|(_, fstype, options)| {
                fstype == "cgroup" && options.split(',').any(|o| o == controller)
            })?;
            let own = own_cgroup(&proc_cgroup, controller)?;
            Some(point.join(own.trim_start_matches('/')).join(&name))
        };
        let (cpu, memory) = (
            budget.cpu.and_then(|_| v1("cpu")),
            budget.memory_bytes.and_then(|_| v1("memory")),
        );
        if (budget.cpu.is_some() && cpu.is_none())
            || (budget.memory_bytes.is_some() && memory.is_none())
        {
            return Err(LabError::environment(
                "no cgroup hierarchy with the cpu and memory controllers was found",
                "mount cgroup v2 at /sys/fs/cgroup with the cpu and memory controllers \
                 (or cgroup v1 cpu and memory hierarchies), or drop --node-cpu/--node-memory",
            ));
        }
        for parent in [&cpu, &memory].into_iter().flatten() {
            cgroups.mkdir(parent)?;
        }
        for i in 0..nodes {
            if let (Some(parent), Some(share)) = (&cpu, budget.cpu) {
                let dir = parent.join(format!("n{i}"));
                cgroups.mkdir(&dir)?;
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota_us(share).to_string())?;
            }
            if let (Some(parent), Some(bytes)) = (&memory, budget.memory_bytes) {
                let dir = parent.join(format!("n{i}"));
                cgroups.mkdir(&dir)?;
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                let swap = dir.join("memory.memsw.limit_in_bytes");
                if swap.exists() {
                    write(&swap, &bytes.to_string())?;
                }
            }
        }
        cgroups.layout = Layout::V1 { cpu, memory };
        Ok(cgroups)
    }

    fn mkdir(&mut self, dir: &Path) -> Result<(), LabError> {
        std::fs::create_dir(dir).map_err(|e| {
            LabError::environment(
                format!("cannot create the cgroup {}: {e}", dir.display()),
                "run the lab as root on a host whose cgroups are writable, or drop \
                 --node-cpu/--node-memory",
            )
        })?;
        self.made.push(dir.to_owned());
        Ok(())
    }

    /// The `cgroup.procs` files node `i`'s process must be written to.
    pub fn procs_files(&self, i: usize) -> Vec<PathBuf> {
        let node = format!("n{i}");
        match &self.layout {
            Layout::V2 { parent } => vec![parent.join(node).join("cgroup.procs")],
            Layout::V1 { cpu, memory } => [cpu, memory]
                .into_iter()
                .flatten()
                .map(|p| p.join(&node).join("cgroup.procs"))
                .collect(),
        }
    }

    /// The budget's limits and what they did so far (throttling, OOM kills).
    pub fn report(&self, nodes: usize) -> BudgetReport {
        let mut report = BudgetReport {
            cpu: self.budget.cpu,
            memory_bytes: self.budget.memory_bytes,
            ..Default::default()
        };
        for i in 0..nodes {
            let node = format!("n{i}");
            match &self.layout {
                Layout::V2 { parent } => {
                    let dir = parent.join(&node);
                    report.cpu_throttled_periods +=
                        read_counter(&dir.join("cpu.stat"), "nr_throttled");
                    report.cpu_throttled_s +=
                        read_counter(&dir.join("cpu.stat"), "throttled_usec") as f64 / 1e6;
                    report.oom_kills += read_counter(&dir.join("memory.events"), "oom_kill");
                }
                Layout::V1 { cpu, memory } => {
                    if let Some(p) = cpu {
                        let stat = p.join(&node).join("cpu.stat");
                        report.cpu_throttled_periods += read_counter(&stat, "nr_throttled");
                        report.cpu_throttled_s +=
                            read_counter(&stat, "throttled_time") as f64 / 1e9;
                    }
                    if let Some(p) = memory {
                        report.oom_kills +=
                            read_counter(&p.join(&node).join("memory.oom_control"), "oom_kill");
                    }
                }
            }
        }
        report.cgroup = match self.layout {
            Layout::V2 { .. } => "v2",
            Layout::V1 { .. } => "v1",
        }
        .to_owned();
        report
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // A cgroup can be removed once its processes are gone; a killed process leaves
        // it a moment later, so retry briefly.
        for dir in self.made.drain(..).rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Remove lab cgroups whose lab process is gone (killed with -9), under `parent`.
pub fn remove_stale_under(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(crate::net::PREFIX) else {
            continue;
        };
        if pid.is_empty()
            || !pid.bytes().all(|b| b.is_ascii_digit())
            || Path::new(&format!("/proc/{pid}")).exists()
        {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(entry.path()) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_refuse_nonsense() {
        assert_eq!(Budget::parse_cpu("0.25").unwrap(), 0.25);
        assert_eq!(Budget::cpu_max(0.25), "25000 100000");
        assert_eq!(Budget::cpu_max(0.001), "1000 100000");
        for bad in ["", "x", "0", "-1", "1000"] {
            assert!(Budget::parse_cpu(bad).is_err(), "{bad}");
        }
        assert_eq!(Budget::parse_memory("64M").unwrap(), 64 << 20);
        assert_eq!(Budget::parse_memory("64MiB").unwrap(), 64 << 20);
        assert_eq!(Budget::parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(Budget::parse_memory("16777216").unwrap(), 16 << 20);
        for bad in ["", "M", "64X", "1K", "0", "-5M", "99999999999999999999G"] {
            let e = Budget::parse_memory(bad).unwrap_err().to_string();
            assert!(e.contains("--node-memory"), "{bad}: {e}");
        }
    }

    #[test]
    fn cgroup_layouts_are_read() {
        let mountinfo = "35 25 0:30 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755\n\
            36 35 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
            40 35 0:35 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
            41 35 0:36 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let mounts = cgroup_mounts(mountinfo);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].0, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(mounts[2].2, "rw,memory");
        let proc_cgroup = "4:memory:/process_api/abc\n1:cpu:/\n0::/user.slice\n";
        assert_eq!(
            own_cgroup(proc_cgroup, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_cgroup(proc_cgroup, "cpu").as_deref(), Some("/"));
        assert_eq!(own_cgroup(proc_cgroup, "").as_deref(), Some("/user.slice"));
        assert_eq!(own_cgroup(proc_cgroup, "pids"), None);
    }
}
