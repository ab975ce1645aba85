//! Network namespaces, veth pairs, addresses and nftables rules. [`Net`] owns every
//! namespace it creates; dropping it deletes them, which also deletes their veths (the
//! root-side ends of the management veths go with their peers) and nftables tables.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use x0tta6bl4_twin::Topology;

use crate::LabError;

/// Edge addresses: link `l` gets 10.213.0.0 + 4l, a /30 (`.1` the dialer, `.2` the other).
const EDGE_BASE: u32 = u32::from_be_bytes([10, 213, 0, 0]);
/// Management addresses: node `i` gets a /30 at offset 4i (`.1` host, `.2` node) in
/// 10.X.0.0/16 with X in 128..192 not used on the host yet (starting at 128 + pid % 64),
/// so labs running at once do not share host routes.
fn pick_mgmt_octet() -> u8 {
    let used = cmd("ip", &["-o", "-4", "addr", "show"]).unwrap_or_default();
    let pid = std::process::id();
    (0..64)
        .map(|k| 128 + ((pid + k) % 64) as u8)
        .find(|x| !used.contains(&format!(" 10.{x}.")))
        .unwrap_or(128 + (pid % 64) as u8)
}

/// Node identity addresses for kernel-routed probes: 10.215.0.0 + i + 1, a /32 on `lo`.
const ID_BASE: u32 = u32::from_be_bytes([10, 215, 0, 0]);
/// Most nodes a lab builds: the addresses would hold thousands (/30s in a /16), the
/// host does not (each node is a process; 100 run on 2 cores with sampled flows, see
/// docs/edge-resources.md).
pub const NODES_MAX: usize = 128;
/// Prefix of every namespace and host interface the lab creates.
pub const PREFIX: &str = "x0l";
/// nftables table used by node-kill.
const KILL_TABLE: &str = "x0lab_kill";
/// nftables table used by link faults.
const FAULT_TABLE: &str = "x0lab_fault";

/// One node's namespace and addresses.
#[derive(Clone, Debug)]
pub struct NodeNet {
    /// Namespace name.
    pub ns: String,
    /// The node's management address (its HTTP API listens here).
    pub mgmt: Ipv4Addr,
    /// The node's identity address (on `lo`, announced by babeld).
    pub id: Ipv4Addr,
}

/// One topology link as veths.
#[derive(Clone, Debug)]
pub struct EdgeNet {
    /// Node indices (a dials b).
    pub a: usize,
    /// The other end.
    pub b: usize,
    /// Interface name in a's namespace.
    pub if_a: String,
    /// Interface name in b's namespace.
    pub if_b: String,
    /// a's address.
    pub addr_a: Ipv4Addr,
    /// b's address.
    pub addr_b: Ipv4Addr,
}

/// Everything built in the kernel for one lab.
#[derive(Debug)]
pub struct Net {
    /// Per node.
    pub nodes: Vec<NodeNet>,
    /// Per topology link, same order.
    pub edges: Vec<EdgeNet>,
    created: Vec<String>,
    /// Host ends of the management veths: deleted explicitly, because a namespace can
    /// outlive `ip netns del` for a minute (TCP TIME_WAIT sockets hold it).
    host_ifs: Vec<String>,
    /// Second octet of the management addresses.
    mgmt_octet: u8,
}

fn add(base: u32, offset: usize) -> Ipv4Addr {
    Ipv4Addr::from(base + offset as u32)
}

/// Run a command; an error carries the command line and its stderr.
pub fn cmd(program: &str, args: &[&str]) -> Result<String, LabError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                crate::missing_tool_message(program)
            } else {
                LabError::failed(format!("cannot run {program}: {e}"))
            }
        })?;
    if !output.status.success() {
        return Err(LabError::failed(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Run a command in a namespace.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    cmd("ip", &all)
}

fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_ns(ns, "sh", &["-c", &format!("echo {value} > {path}")]).map(|_| ())
}

/// Whether a tool is on PATH.
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Delete namespaces left by earlier labs whose process is gone (e.g. killed with -9).
pub fn remove_stale() {
    if let Ok(links) = cmd("ip", &["-o", "link", "show"]) {
        for name in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = name.split('@').next().unwrap_or("");
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = cmd("ip", &["link", "del", name]);
            }
        }
    }
    let Ok(list) = cmd("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = cmd("ip", &["netns", "del", name]);
        }
    }
}

impl Net {
    /// Build one namespace per node and one veth pair per link, with addresses, IPv6
    /// link-local (accept_dad=0, for babeld), forwarding on, and a management veth from
    /// the host to each namespace.
    pub fn build(topology: &Topology) -> Result<Net, LabError> {
        if topology.len() > NODES_MAX {
            return Err(LabError::usage(
                format!("{} nodes is more than the lab can hold", topology.len()),
                format!("use at most {NODES_MAX} nodes (each is a process and a namespace)"),
            ));
        }
        let tag = format!("{PREFIX}{}", std::process::id());
        let mut net = Net {
            nodes: Vec::new(),
            edges: Vec::new(),
            created: Vec::new(),
            host_ifs: Vec::new(),
            mgmt_octet: pick_mgmt_octet(),
        };
        for i in 0..topology.len() {
            let ns = format!("{tag}n{i}");
            cmd("ip", &["netns", "add", &ns])?;
            net.created.push(ns.clone());
            net.setup_node(i, &ns, &tag)?;
        }
        for (l, link) in topology.links.iter().enumerate() {
            net.setup_edge(l, link.a as usize, link.b as usize)?;
        }
        Ok(net)
    }

    fn setup_node(&mut self, i: usize, ns: &str, tag: &str) -> Result<(), LabError> {
        for (key, value) in [
            ("net.ipv6.conf.all.disable_ipv6", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            write_sysctl(ns, key, value)?;
        }
        let id = add(ID_BASE, i + 1);
        cmd("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        cmd(
            "ip",
            &["-n", ns, "addr", "add", &format!("{id}/32"), "dev", "lo"],
        )?;
        let host_if = format!("{tag}m{i}");
        let base = u32::from_be_bytes([10, self.mgmt_octet, 0, 0]);
        let (host, node) = (add(base, 4 * i + 1), add(base, 4 * i + 2));
        cmd(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "mgmt", "netns", ns,
            ],
        )?;
        self.host_ifs.push(host_if.clone());
        cmd(
            "ip",
            &["addr", "add", &format!("{host}/30"), "dev", &host_if],
        )?;
        cmd("ip", &["link", "set", &host_if, "up"])?;
        cmd(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{node}/30"),
                "dev",
                "mgmt",
            ],
        )?;
        cmd("ip", &["-n", ns, "link", "set", "mgmt", "up"])?;
        self.nodes.push(NodeNet {
            ns: ns.to_owned(),
            mgmt: node,
            id,
        });
        Ok(())
    }

    fn setup_edge(&mut self, l: usize, a: usize, b: usize) -> Result<(), LabError> {
        let (ns_a, ns_b) = (self.nodes[a].ns.clone(), self.nodes[b].ns.clone());
        let (if_a, if_b) = (format!("p{b}"), format!("p{a}"));
        let (addr_a, addr_b) = (add(EDGE_BASE, 4 * l + 1), add(EDGE_BASE, 4 * l + 2));
        cmd(
            "ip",
            &[
                "link", "add", &if_a, "netns", &ns_a, "type", "veth", "peer", "name", &if_b,
                "netns", &ns_b,
            ],
        )?;
        for (ns, ifname, addr) in [(&ns_a, &if_a, addr_a), (&ns_b, &if_b, addr_b)] {
            cmd(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/30"),
                    "dev",
                    ifname,
                ],
            )?;
            cmd("ip", &["-n", ns, "link", "set", ifname, "up"])?;
        }
        self.edges.push(EdgeNet {
            a,
            b,
            if_a,
            if_b,
            addr_a,
            addr_b,
        });
        Ok(())
    }

    /// A killed node's namespace drops everything, as a powered-off device would.
    pub fn isolate(&self, node: usize) -> Result<(), LabError> {
        let rules = format!(
            "table inet {KILL_TABLE} {{\n chain i {{ type filter hook input priority -10; policy drop; }}\n \
             chain f {{ type filter hook forward priority -10; policy drop; }}\n \
             chain o {{ type filter hook output priority -10; policy drop; }}\n}}\n"
        );
        nft(&self.nodes[node].ns, &rules)
    }

    /// Undo [`Net::isolate`].
    pub fn unisolate(&self, node: usize) -> Result<(), LabError> {
        in_ns(
            &self.nodes[node].ns,
            "nft",
            &["delete", "table", "inet", KILL_TABLE],
        )
        .map(|_| ())
    }

    /// `ip link set ... down` (or up) on both ends of link `l`.
    pub fn set_link(&self, l: usize, up: bool) -> Result<(), LabError> {
        let e = &self.edges[l];
        let state = if up { "up" } else { "down" };
        for (node, ifname) in [(e.a, &e.if_a), (e.b, &e.if_b)] {
            cmd(
                "ip",
                &["-n", &self.nodes[node].ns, "link", "set", ifname, state],
            )?;
        }
        Ok(())
    }

    /// Drop traffic on link `l` leaving a (`from_a`) and/or leaving b (`from_b`); with
    /// `rate` below 1, drop that fraction at random (nftables numgen).
    pub fn drop_on_link(
        &self,
        l: usize,
        from_a: bool,
        from_b: bool,
        rate: f64,
    ) -> Result<(), LabError> {
        self.drop_on_links(&[(l, from_a, from_b)], rate).map(|_| ())
    }

    /// [`Net::drop_on_link`] for several links `(l, from_a, from_b)` at one instant (see
    /// [`NftBatch`]); returns that instant (Unix µs).
    pub fn drop_on_links(&self, links: &[(usize, bool, bool)], rate: f64) -> Result<u64, LabError> {
        let mut batch = NftBatch::default();
        self.add_drops(&mut batch, links, rate);
        batch.fire()
    }

    /// Set the random loss of link `l`, both directions, to `rate` (0: none), replacing
    /// the link faults on its ends, at one instant; returns it (Unix µs). The
    /// degrade-then-fail fault steps a link's loss with it.
    pub fn set_link_loss(&self, l: usize, rate: f64) -> Result<u64, LabError> {
        let mut batch = NftBatch::default();
        let e = &self.edges[l];
        for node in [e.a, e.b] {
            batch.add(&self.nodes[node].ns, &Self::delete_fault_table());
        }
        if rate > 0.0 {
            self.add_drops(&mut batch, &[(l, true, true)], rate);
        }
        batch.fire()
    }

    /// Add to `batch` the rules of [`Net::drop_on_links`].
    fn add_drops(&self, batch: &mut NftBatch, links: &[(usize, bool, bool)], rate: f64) {
        let condition = if rate < 1.0 {
            format!(
                "numgen random mod 1000 < {} ",
                (rate * 1000.0).round() as u32
            )
        } else {
            String::new()
        };
        for &(l, from_a, from_b) in links {
            let e = &self.edges[l];
            // a's side: what leaves a toward b; b's side (when both): what leaves b toward a.
            let ends = [(from_a, e.a, &e.if_a), (from_b, e.b, &e.if_b)];
            for (_, node, ifname) in ends.into_iter().filter(|end| end.0) {
                batch.add(
                    &self.nodes[node].ns,
                    &format!(
                        "table inet {FAULT_TABLE} {{\n chain f {{ type filter hook forward priority -10; policy accept; }}\n \
                         chain o {{ type filter hook output priority -10; policy accept; }}\n}}\n\
                         add rule inet {FAULT_TABLE} f oifname \"{ifname}\" {condition}drop\n\
                         add rule inet {FAULT_TABLE} o oifname \"{ifname}\" {condition}drop\n"
                    ),
                );
            }
        }
    }

    /// nft input that removes the link-fault table, whether or not it exists.
    fn delete_fault_table() -> String {
        // Declared first, so the delete also works where the fault put no rule
        // (one end of an asymmetric partition); nft 1.0.6 lacks `destroy`.
        format!("table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n")
    }

    /// Lift the link faults on `links` (both ends) at one instant; returns it (Unix µs).
    pub fn lift_link_faults(&self, links: &[usize]) -> Result<u64, LabError> {
        let ends = links
            .iter()
            .flat_map(|&l| [self.edges[l].a, self.edges[l].b]);
        self.remove_fault_tables(ends)
    }

    /// Remove the link-fault table of `nodes` at one instant; returns it (Unix µs).
    fn remove_fault_tables(&self, nodes: impl Iterator<Item = usize>) -> Result<u64, LabError> {
        let mut batch = NftBatch::default();
        for node in nodes {
            batch.add(&self.nodes[node].ns, &Self::delete_fault_table());
        }
        batch.fire()
    }

    /// Limit both ends of link `l` to `mbps` with `tc tbf`, or remove the limit (None).
    pub fn set_bandwidth(&self, l: usize, mbps: Option<f64>) -> Result<(), LabError> {
        let e = &self.edges[l];
        for (node, ifname) in [(e.a, &e.if_a), (e.b, &e.if_b)] {
            let ns = &self.nodes[node].ns;
            match mbps {
                Some(mbps) => {
                    let rate = format!("{}kbit", (mbps * 1000.0).round().max(8.0) as u64);
                    in_ns(
                        ns,
                        "tc",
                        &[
                            "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", &rate,
                            "burst", "32kbit", "latency", "100ms",
                        ],
                    )?;
                }
                None => {
                    let _ = in_ns(ns, "tc", &["qdisc", "del", "dev", ifname, "root"]);
                }
            }
        }
        Ok(())
    }

    /// Remove every link fault rule (a reset: a namespace that refuses is left as is).
    pub fn clear_link_faults(&self) {
        let _ = self.remove_fault_tables(0..self.nodes.len());
    }

    /// The node that owns edge address `addr`, if any.
    pub fn node_of_edge_addr(&self, addr: Ipv4Addr) -> Option<usize> {
        self.edges.iter().find_map(|e| {
            (e.addr_a == addr)
                .then_some(e.a)
                .or((e.addr_b == addr).then_some(e.b))
        })
    }

    /// The node whose identity address is `addr`.
    pub fn node_of_id(&self, addr: Ipv4Addr) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == addr)
    }
}

fn nft(ns: &str, rules: &str) -> Result<(), LabError> {
    let mut batch = NftBatch::default();
    batch.add(ns, rules);
    batch.fire().map(|_| ())
}

/// nftables rule sets for several namespaces, made to take effect at (nearly) one
/// instant. Run one after the other, `ip netns exec ... nft` processes take 5-15 ms each,
/// so lifting a partition of a 16-node mesh would spread over more than 100 ms and the
/// heal instant would be wrong by as much. Instead every process is started and handed
/// its rules first; `nft -f -` reads its whole input before it applies it as one
/// transaction, so closing all the inputs together applies the rules within the few
/// milliseconds the processes need to run, not to start.
#[derive(Default)]
pub struct NftBatch {
    rules: std::collections::BTreeMap<String, String>,
}

impl NftBatch {
    /// Add `rules` for namespace `ns` (appended to what it has in the batch).
    pub fn add(&mut self, ns: &str, rules: &str) {
        self.rules.entry(ns.to_owned()).or_default().push_str(rules);
    }

    /// Apply every namespace's rules; returns the middle of the window in which they took
    /// effect (Unix µs).
    pub fn fire(self) -> Result<u64, LabError> {
        use std::io::Write as _;
        let mut started = Vec::new();
        for (ns, rules) in &self.rules {
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| LabError::failed(format!("cannot run nft in {ns}: {e}")))?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| LabError::failed(format!("nft in {ns}: no standard input")))?;
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| LabError::failed(format!("cannot feed nft in {ns}: {e}")))?;
            started.push((ns, child, stdin));
        }
        let from = crate::probe::unix_now_us();
        let mut waiting = Vec::new();
        for (ns, child, stdin) in started {
            drop(stdin);
            waiting.push((ns, child));
        }
        let mut errors = Vec::new();
        for (ns, child) in waiting {
            match child.wait_with_output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => errors.push(format!(
                    "nft in {ns} refused the rules: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
                Err(e) => errors.push(format!("nft in {ns}: {e}")),
            }
        }
        let to = crate::probe::unix_now_us();
        match errors.is_empty() {
            true => Ok(from + (to - from) / 2),
            false => Err(LabError::failed(errors.join("; "))),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host_if in self.host_ifs.drain(..) {
            let _ = cmd("ip", &["link", "del", &host_if]);
        }
        for ns in self.created.drain(..) {
            if let Err(e) = cmd("ip", &["netns", "del", &ns]) {
                tracing::warn!("cannot delete namespace {ns}: {e}");
            }
        }
    }
}
