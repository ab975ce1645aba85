//! The eBPF kernel collector (cargo feature `ebpf`, docs/telemetry.md).
//!
//! Key design decision: the BPF program is C (`collector.bpf.c`), compiled by build.rs
//! with Debian's clang, and loaded by aya, a pure-Rust loader: no libbpf or libelf to
//! link, CO-RE relocations done by aya against `/sys/kernel/btf/vmlinux`. aya 0.13 is the
//! newest that builds with Rust 1.95 (0.16 needs 1.98); Rust BPF programs (aya-ebpf)
//! would need a nightly toolchain and bpf-linker, which are not available here.
//!
//! What it counts, per network interface and per peer address: packets and bytes sent
//! and received (tc programs attached with TCX to the node's interfaces) and packets
//! dropped by the kernel, by drop reason (`tp_btf/kfree_skb`, restricted to the node's
//! network namespace). Reading the maps is a few syscalls per entry, so
//! [`crate::telemetry`] reads them on a thread of its own, never on the driver's.

mod btf_enum;
pub mod testbed;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::{BtfTracePoint, SchedClassifier, TcAttachType};
use aya::{Btf, Ebpf, EbpfLoader};
use serde::Serialize;

pub use btf_enum::BtfError;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector.bpf.o"));

/// Where the kernel keeps its type information (needed for CO-RE and `tp_btf`).
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
/// The names of the collector's programs, as in `bpftool prog show`.
pub const PROGRAMS: [&str; 3] = ["tc_ingress", "tc_egress", "on_kfree_skb"];

/// Why the collector did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not root: loading BPF programs and attaching to interfaces needs it.
    #[error(
        "not running as root (loading eBPF programs needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
    )]
    NotRoot,
    /// No kernel BTF.
    #[error("no kernel BTF at {BTF_PATH} ({0}): needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoBtf(String),
    /// The interfaces to attach to could not be listed or found.
    #[error("network interfaces: {0}")]
    Interfaces(String),
    /// The kernel (verifier, attach) refused.
    #[error("the kernel refused the eBPF collector: {0}")]
    Kernel(String),
}

fn kernel(what: &str, error: impl std::fmt::Display) -> LoadError {
    LoadError::Kernel(format!("{what}: {error}"))
}

/// Which interfaces the tc programs watch.
#[derive(Clone, Debug)]
pub enum Interfaces {
    /// Every interface of the network namespace at load time (the node's choice).
    All,
    /// These, by name.
    Named(Vec<String>),
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets.
    pub packets: u64,
    /// Bytes (`skb->len`: with the link-layer header on tc, from the network header on
    /// drops where the packet was not yet given one).
    pub bytes: u64,
}

impl Counters {
    fn add(&mut self, other: Counters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// One interface's counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InterfaceCounters {
    /// Received (tc ingress).
    pub received: Counters,
    /// Sent (tc egress).
    pub sent: Counters,
    /// Dropped by the kernel, by reason (`NETFILTER_DROP`, `NO_SOCKET`, ...).
    pub drops: BTreeMap<String, Counters>,
}

/// One peer address's counters, summed over interfaces.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerCounters {
    /// Received from it.
    pub received: Counters,
    /// Sent to it.
    pub sent: Counters,
    /// Dropped by the kernel, by reason: packets it sent us, or we sent it.
    pub drops: BTreeMap<String, Counters>,
}

impl PeerCounters {
    /// Drops of every reason.
    pub fn drops_total(&self) -> Counters {
        let mut total = Counters::default();
        for counters in self.drops.values() {
            total.add(*counters);
        }
        total
    }
}

/// What the kernel counted since the collector loaded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelCounters {
    /// By interface name (`none`: drops of packets not yet given a device).
    pub interfaces: BTreeMap<String, InterfaceCounters>,
    /// By peer address (IP packets only).
    pub peers: BTreeMap<IpAddr, PeerCounters>,
}

/// A program's cumulative run time, counted while `kernel.bpf_stats_enabled` is on.
#[derive(Clone, Debug)]
pub struct ProgramRunTime {
    /// Its name.
    pub name: &'static str,
    /// Time spent running it.
    pub run_time: Duration,
    /// Times it ran.
    pub run_count: u64,
}

/// The loaded and attached collector; dropping it detaches every program.
pub struct EbpfCollector {
    ebpf: Ebpf,
    /// ifindex → name, at load time.
    names: HashMap<u32, String>,
    /// `enum skb_drop_reason` value → name (without `SKB_DROP_REASON_`).
    reasons: HashMap<u32, String>,
}

impl std::fmt::Debug for EbpfCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfCollector")
            .field("interfaces", &self.names)
            .finish_non_exhaustive()
    }
}

/// Whether the process runs with effective user id 0.
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// ifindex → name of the current network namespace's interfaces (sysfs, as mounted for
/// it: `ip netns exec` mounts the namespace's own).
fn list_interfaces() -> Result<HashMap<u32, String>, LoadError> {
    let dir = std::fs::read_dir("/sys/class/net")
        .map_err(|e| LoadError::Interfaces(format!("cannot read /sys/class/net: {e}")))?;
    let mut names = HashMap::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = std::fs::read_to_string(entry.path().join("ifindex"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(index) = index {
            names.insert(index, name);
        }
    }
    Ok(names)
}

impl EbpfCollector {
    /// Load the programs and attach them: tc to `interfaces` of the calling thread's
    /// network namespace, kfree_skb for that namespace's drops.
    pub fn load(interfaces: &Interfaces) -> Result<EbpfCollector, LoadError> {
        if !is_root() {
            return Err(LoadError::NotRoot);
        }
        let btf_bytes = std::fs::read(BTF_PATH).map_err(|e| LoadError::NoBtf(e.to_string()))?;
        let btf = Btf::parse(&btf_bytes, aya::Endianness::Little)
            .map_err(|e| LoadError::NoBtf(e.to_string()))?;
        let reasons = btf_enum::enum_names(&btf_bytes, "skb_drop_reason", "SKB_DROP_REASON_")
            .map_err(|e| LoadError::NoBtf(e.to_string()))?
            .unwrap_or_default();
        let netns_ino: u64 = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(|e| kernel("network namespace of this thread", e))?
            .ino();
        let all = list_interfaces()?;
        let names: HashMap<u32, String> = match interfaces {
            Interfaces::All => all,
            Interfaces::Named(wanted) => {
                let mut names = HashMap::new();
                for name in wanted {
                    let index = all.iter().find(|(_, n)| *n == name).map(|(i, _)| *i);
                    let index = index.ok_or_else(|| {
                        LoadError::Interfaces(format!("no interface {name} in this namespace"))
                    })?;
                    names.insert(index, name.clone());
                }
                names
            }
        };
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .set_global("netns_ino", &netns_ino, true)
            .load(OBJECT)
            .map_err(|e| kernel("load", e))?;
        attach_tc(&mut ebpf, &names)?;
        let program: &mut BtfTracePoint = program(&mut ebpf, "on_kfree_skb")?;
        program
            .load("kfree_skb", &btf)
            .map_err(|e| kernel("kfree_skb program", e))?;
        program
            .attach()
            .map_err(|e| kernel("attach to tracepoint skb:kfree_skb", e))?;
        Ok(EbpfCollector {
            ebpf,
            names,
            reasons,
        })
    }

    /// The interfaces watched, by name.
    pub fn interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.values().cloned().collect();
        names.sort();
        names
    }

    /// Read every counter (sums of the per-CPU values).
    pub fn read(&self) -> Result<KernelCounters, String> {
        let mut out = KernelCounters::default();
        for (key, counters) in read_map::<8>(&self.ebpf, "INTERFACE_TRAFFIC")? {
            let (ifindex, direction) = pair_key(&key);
            let entry = out.interfaces.entry(self.name(ifindex)).or_default();
            let side = if direction == 0 {
                &mut entry.received
            } else {
                &mut entry.sent
            };
            side.add(counters);
        }
        for (key, counters) in read_map::<8>(&self.ebpf, "INTERFACE_DROPS")? {
            let (ifindex, reason) = pair_key(&key);
            let entry = out.interfaces.entry(self.name(ifindex)).or_default();
            entry
                .drops
                .entry(self.reason(reason))
                .or_default()
                .add(counters);
        }
        for (key, counters) in read_map::<24>(&self.ebpf, "TRAFFIC")? {
            let Some(peer) = address(key[5], &key[8..24]) else {
                continue;
            };
            let entry = out.peers.entry(peer).or_default();
            let side = if key[4] == 0 {
                &mut entry.received
            } else {
                &mut entry.sent
            };
            side.add(counters);
        }
        for (key, counters) in read_map::<28>(&self.ebpf, "DROPS")? {
            let Some(peer) = address(key[8], &key[12..28]) else {
                continue;
            };
            let reason = self.reason(pair_key(&key).1);
            let entry = out.peers.entry(peer).or_default();
            entry.drops.entry(reason).or_default().add(counters);
        }
        Ok(out)
    }

    /// The programs' run times (zero unless `kernel.bpf_stats_enabled` is on, or
    /// [`aya::sys::enable_stats`] is held).
    pub fn run_times(&self) -> Result<Vec<ProgramRunTime>, String> {
        let mut out = Vec::new();
        for name in PROGRAMS {
            let program = self
                .ebpf
                .program(name)
                .ok_or_else(|| format!("no program {name}"))?;
            let info = program.info().map_err(|e| format!("{name}: {e}"))?;
            out.push(ProgramRunTime {
                name,
                run_time: info.run_time(),
                run_count: info.run_count(),
            });
        }
        Ok(out)
    }

    fn name(&self, ifindex: u32) -> String {
        match ifindex {
            0 => "none".into(),
            i => self
                .names
                .get(&i)
                .cloned()
                .unwrap_or_else(|| format!("if{i}")),
        }
    }

    fn reason(&self, reason: u32) -> String {
        self.reasons
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("reason_{reason}"))
    }
}

/// Turn on the kernel's BPF run-time statistics (`kernel.bpf_stats_enabled`) for as long
/// as the returned descriptor stays open: [`EbpfCollector::run_times`] then counts.
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, String> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| kernel("collector object", format!("no program {name}")))?;
    program.try_into().map_err(|e| kernel(name, e))
}

fn attach_tc(ebpf: &mut Ebpf, names: &HashMap<u32, String>) -> Result<(), LoadError> {
    for (name, side) in [
        ("tc_ingress", TcAttachType::Ingress),
        ("tc_egress", TcAttachType::Egress),
    ] {
        let program: &mut SchedClassifier = program(ebpf, name)?;
        program.load().map_err(|e| kernel(name, e))?;
        for interface in names.values() {
            // aya attaches with TCX from kernel 6.6 on (no qdisc needed), else through a
            // clsact qdisc, which is added only then: a modern host is left unchanged.
            if program.attach(interface, side).is_err() {
                let _ = aya::programs::tc::qdisc_add_clsact(interface);
                program
                    .attach(interface, side)
                    .map_err(|e| kernel(&format!("attach {name} to {interface}"), e))?;
            }
        }
    }
    Ok(())
}

/// (ifindex, second word) of a key that starts with two native-endian u32.
fn pair_key(key: &[u8]) -> (u32, u32) {
    let word = |at: usize| u32::from_ne_bytes([key[at], key[at + 1], key[at + 2], key[at + 3]]);
    (word(0), word(4))
}

fn address(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

fn read_map<const K: usize>(ebpf: &Ebpf, name: &str) -> Result<Vec<([u8; K], Counters)>, String> {
    let map = ebpf.map(name).ok_or_else(|| format!("no map {name}"))?;
    let map: PerCpuHashMap<&MapData, [u8; K], [u64; 2]> =
        PerCpuHashMap::try_from(map).map_err(|e| format!("map {name}: {e}"))?;
    let mut out = Vec::new();
    for entry in map.iter() {
        // An entry evicted while iterating is skipped, not an error.
        let Ok((key, values)) = entry else { continue };
        let mut counters = Counters::default();
        for value in values.iter() {
            counters.add(Counters {
                packets: value[0],
                bytes: value[1],
            });
        }
        out.push((key, counters));
    }
    Ok(out)
}
