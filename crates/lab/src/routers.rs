//! The routers under test, each a set of processes in the lab's namespaces: x0tta6bl4
//! nodes (this very binary, `node --config`) or Debian's babeld with a probe agent per
//! namespace. [`Fleet`] owns the processes: dropping it kills and reaps every one.
//!
//! Neighbour-down events are counted for both: x0tta6bl4 nodes export
//! `x0tta6bl4_neighbour_down_total`; babeld exports no counter, so the lab follows each
//! babeld's local configuration interface (`-g PATH`, request `monitor`) and counts a
//! down each time a neighbour turns unusable: its cost becomes 65535 (babeld's
//! infinity, e.g. fewer than 2 of the last 3 hellos heard on a wired link) or it is
//! flushed, having been usable.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use x0tta6bl4_identity::{CertificateAuthority, TrustDomain};
use x0tta6bl4_proto::NodeName;
use x0tta6bl4_twin::Topology;

use crate::net::{cmd, Net};
use crate::paths::{Arrivals, Routes};
use crate::probe::parse_agent_output;
use crate::LabError;

/// UDP port of the x0tta6bl4 nodes' QUIC endpoints.
const QUIC_PORT: u16 = 7_000;
/// TCP port of the nodes' HTTP APIs (on their management address).
const API_PORT: u16 = 8_000;
/// Environment variable the node watches to exit when the lab is gone.
const PARENT_PID_ENV: &str = "X0TTA6BL4_PARENT_PID";
/// Lines of a log shown on failure.
const LOG_TAIL_LINES: usize = 12;
/// Lifetime of the SVIDs the lab issues (identity faults issue shorter ones).
pub(crate) const SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// Neighbours a babeld monitor remembers (unusable ones are forgotten beyond).
const NEIGHBOURS_TRACKED_MAX: usize = 1024;
/// babeld's infinite cost: the neighbour cannot be used.
const BABEL_INFINITY: u32 = 65_535;
/// How long a babeld monitor waits for its daemon's local socket to appear.
const MONITOR_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long `collect` waits, after stopping every flow, for probes still on their way
/// (a few hops under the `delay` fault's 60 ms); later ones are counted as lost.
const IN_FLIGHT: Duration = Duration::from_millis(500);
/// Where a container image's root filesystem holds the binary (see [`Fleet::with_root`]).
pub const EXE_IN_ROOT: &str = "/usr/local/bin/x0tta6bl4";

/// How x0tta6bl4 nodes cost their links (`lab run --routing`, as `twin run --routing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// The protocol's measured cost (the default).
    Cost,
    /// ETX (`[protocol] link_cost = "etx"`).
    Etx,
    /// The measured cost and the link-failure predictor (`[predictor] model`).
    Predict,
}

/// Which daemon routes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// x0tta6bl4 nodes, costing their links this way.
    X0tta6bl4(Routing),
    /// babeld with this hello interval in seconds (None: its default, 4 s).
    Babeld(Option<f64>),
}

impl Kind {
    /// Whether this router's measurements calibrate the twin: the one the twin (cost
    /// routing) is compared with in the report.
    pub fn calibrates_twin(&self) -> bool {
        *self == Kind::X0tta6bl4(Routing::Cost)
    }

    /// The key of this router in the report.
    pub fn key(&self) -> &'static str {
        match self {
            Kind::X0tta6bl4(Routing::Cost) => "x0tta6bl4",
            Kind::X0tta6bl4(Routing::Etx) => "x0tta6bl4-etx",
            Kind::X0tta6bl4(Routing::Predict) => "x0tta6bl4-predict",
            Kind::Babeld(Some(_)) => "babeld",
            Kind::Babeld(None) => "babeld-default",
        }
    }
}

/// Processes, one slot per node.
pub struct Fleet {
    kind: Kind,
    exe: PathBuf,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    agents: Vec<Option<Child>>,
    http: reqwest::Client,
    names: Vec<String>,
    /// x0tta6bl4 only: the root filesystem the nodes run in (`chroot`), if any.
    root: Option<PathBuf>,
    /// babeld only: neighbour-down events seen on each node's local interface, across
    /// restarts (see [`neighbour_line`]).
    flushes: Vec<Arc<AtomicU64>>,
    /// Per node: the `cgroup.procs` files its process is written to before it runs
    /// (`--node-cpu`/`--node-memory`); empty without a budget.
    cgroup_procs: Vec<Vec<PathBuf>>,
    /// Sections of every x0tta6bl4 node's config beyond the lab's own (see [`NodeToml`]).
    sections: toml::Table,
}

#[derive(Serialize)]
struct NodeToml {
    listen: String,
    api_listen: String,
    peers: Vec<String>,
    identity: IdentityToml,
    discovery: DiscoveryToml,
    /// Further sections: `[protocol]` settings given with `lab run --node-protocol` and
    /// the routing's (`link_cost`, `[predictor]`); empty: defaults.
    #[serde(flatten)]
    sections: toml::Table,
}

#[derive(Serialize)]
struct IdentityToml {
    dir: PathBuf,
}

#[derive(Serialize)]
struct DiscoveryToml {
    enabled: bool,
}

#[derive(Deserialize)]
struct RouteRow {
    destination: String,
    next_hop: String,
}

#[derive(Deserialize)]
struct PeerRow {
    name: String,
    state: String,
    rtt_ms: Option<f64>,
}

#[derive(Deserialize)]
struct FlowsReport {
    #[serde(default)]
    received: Vec<FlowArrivals>,
    /// Probes this node sent since its flows started.
    #[serde(default)]
    sent: u64,
}

#[derive(Deserialize)]
struct FlowArrivals {
    source: String,
    arrivals_us: Vec<u64>,
}

impl Fleet {
    /// Prepare a router's files under `dir` (CA, SVIDs and configs for x0tta6bl4).
    pub fn new(
        kind: Kind,
        exe: &Path,
        dir: &Path,
        net: &Net,
        topology: &Topology,
        sections: &toml::Table,
    ) -> Result<Fleet, LabError> {
        Fleet::with_root(kind, exe, dir, net, topology, None, sections)
    }

    /// [`Fleet::new`], with x0tta6bl4 nodes run as `chroot ROOT` [`EXE_IN_ROOT`]: the
    /// binary a container image holds, on the image's exported root filesystem. `dir`
    /// must then be inside `root` (the nodes see their files at the paths below it).
    /// `sections` go into every x0tta6bl4 node's configuration as they are (`protocol`,
    /// `predictor`: see [`crate::run::node_sections`]).
    pub fn with_root(
        kind: Kind,
        exe: &Path,
        dir: &Path,
        net: &Net,
        topology: &Topology,
        root: Option<&Path>,
        sections: &toml::Table,
    ) -> Result<Fleet, LabError> {
        let dir = dir.join(kind.key());
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::failed(format!("cannot create {}: {e}", dir.display())))?;
        let names: Vec<String> = topology.names.iter().map(|n| n.to_string()).collect();
        if let Some(root) = root {
            if !dir.starts_with(root) {
                return Err(LabError::failed(format!(
                    "the lab's directory {} is not inside the nodes' root {}",
                    dir.display(),
                    root.display()
                )));
            }
        }
        if matches!(kind, Kind::X0tta6bl4(_)) {
            write_x0_configs(&dir, net, &names, root, sections)?;
        }
        x0tta6bl4_identity::install_default_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .map_err(|e| LabError::failed(format!("cannot build an HTTP client: {e}")))?;
        Ok(Fleet {
            kind,
            exe: exe.to_owned(),
            dir,
            children: (0..names.len()).map(|_| None).collect(),
            agents: (0..names.len()).map(|_| None).collect(),
            http,
            flushes: (0..names.len()).map(|_| Arc::default()).collect(),
            cgroup_procs: vec![Vec::new(); names.len()],
            sections: sections.clone(),
            names,
            root: root.map(Path::to_owned),
        })
    }

    /// Run every node in its cgroup of `cgroups` from its next start on.
    pub fn use_cgroups(&mut self, cgroups: &crate::budget::Cgroups) {
        for (i, files) in self.cgroup_procs.iter_mut().enumerate() {
            *files = cgroups.procs_files(i);
        }
    }

    /// The process of every node (`None`: not running).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.children
            .iter()
            .map(|c| c.as_ref().map(Child::id))
            .collect()
    }

    /// Bytes on disk of node `i`: its directory (identity, state files) and its log.
    pub fn disk_bytes(&self, i: usize) -> u64 {
        let log = std::fs::metadata(self.log(i)).map_or(0, |m| m.len());
        crate::resources::dir_bytes(&self.dir.join(&self.names[i])) + log
    }

    /// The command that runs `program` in node `i`'s namespace: `ip netns exec NS ...`,
    /// or, with a budget, `sh -c` writing its own pid to the node's cgroups first and
    /// then exec-ing the same, so the node's first byte of memory is charged there.
    fn in_namespace(&self, i: usize, net: &Net) -> Command {
        let ns = &net.nodes[i].ns;
        let files = &self.cgroup_procs[i];
        if files.is_empty() {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]);
            return command;
        }
        let writes: Vec<String> = (1..=files.len())
            .map(|k| format!("echo $$ > \"${k}\""))
            .collect();
        let script = format!(
            "{} && shift {} && exec \"$@\"",
            writes.join(" && "),
            files.len()
        );
        let mut command = Command::new("sh");
        command
            .args(["-c", &script, "x0tta6bl4-lab-node"])
            .args(files)
            .args(["ip", "netns", "exec", ns]);
        command
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.names[i]))
    }

    /// Start node `i`'s router process in its namespace.
    pub fn start(&mut self, i: usize, net: &Net) -> Result<(), LabError> {
        let log = self.log(i);
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| LabError::failed(format!("cannot open {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::failed(e.to_string()))?;
        let mut command = self.in_namespace(i, net);
        match self.kind {
            Kind::X0tta6bl4(_) => {
                match &self.root {
                    Some(root) => command.arg("chroot").arg(root).arg(EXE_IN_ROOT),
                    None => command.arg(&self.exe),
                };
                let root = self.root.as_deref();
                command
                    .arg("node")
                    .arg("--config")
                    .arg(inside(
                        root,
                        &self.dir.join(&self.names[i]).join("node.toml"),
                    ))
                    .arg("--chaos")
                    .arg(inside(root, &self.chaos_file(i)));
                command.env(PARENT_PID_ENV, std::process::id().to_string());
            }
            Kind::Babeld(hello) => {
                let state = self.dir.join(format!("{}.state", self.names[i]));
                // A SIGKILLed babeld leaves its socket behind; the restart must bind anew.
                let _ = std::fs::remove_file(self.monitor_socket(i));
                // No pid file: a SIGKILLed babeld would leave one behind and its restart
                // would refuse to start.
                command
                    .arg("babeld")
                    .args(["-I", ""])
                    .arg("-S")
                    .arg(&state)
                    .arg("-g")
                    .arg(self.monitor_socket(i))
                    .args(["-d", "0"]);
                if let Some(h) = hello {
                    command.args(["-h", &format!("{h}"), "-H", &format!("{h}")]);
                }
                command.args([
                    "-C",
                    "redistribute local ip 10.215.0.0/16 ge 32 allow",
                    "-C",
                    "redistribute local deny",
                ]);
                for e in net.edges.iter() {
                    if e.a == i {
                        command.arg(&e.if_a);
                    } else if e.b == i {
                        command.arg(&e.if_b);
                    }
                }
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                LabError::failed(format!(
                    "cannot start the {} router of {}: {e}",
                    self.kind.key(),
                    self.names[i]
                ))
            })?;
        self.children[i] = Some(child);
        if matches!(self.kind, Kind::Babeld(_)) {
            self.monitor(i)?;
        }
        Ok(())
    }

    fn monitor_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.names[i]))
    }

    /// Follow babeld `i`'s local interface until it exits, counting its neighbours'
    /// transitions from usable to unusable into `self.flushes[i]`.
    fn monitor(&self, i: usize) -> Result<(), LabError> {
        let (path, flushes) = (self.monitor_socket(i), self.flushes[i].clone());
        let follow = move || {
            let started = std::time::Instant::now();
            let stream = loop {
                match std::os::unix::net::UnixStream::connect(&path) {
                    Ok(stream) => break stream,
                    Err(_) if started.elapsed() < MONITOR_CONNECT_WAIT => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(error) => {
                        return tracing::warn!(path = %path.display(), %error, "babeld monitor not reachable")
                    }
                }
            };
            let mut writer = &stream;
            if writer.write_all(b"monitor\n").is_err() {
                return;
            }
            let mut usable = std::collections::HashMap::<String, bool>::new();
            for line in std::io::BufReader::new(&stream).lines() {
                let Ok(line) = line else { return };
                let Some((id, now)) = neighbour_line(&line) else {
                    continue;
                };
                if usable.insert(id.to_owned(), now) == Some(true) && !now {
                    flushes.fetch_add(1, Ordering::Relaxed);
                }
                if usable.len() > NEIGHBOURS_TRACKED_MAX {
                    usable.retain(|_, up| *up);
                }
            }
        };
        std::thread::Builder::new()
            .name(format!("babeld-monitor-{}", self.names[i]))
            .spawn(follow)
            .map(|_| ())
            .map_err(|e| LabError::failed(format!("cannot start a babeld monitor: {e}")))
    }

    /// Issue node `i` a new SVID valid for `ttl` (x0tta6bl4 only), as `x0tta6bl4 ca
    /// issue` would; the node presents it once restarted. Returns its notAfter.
    pub fn issue_svid(&self, i: usize, ttl: Duration) -> Result<SystemTime, LabError> {
        let ca = CertificateAuthority::open(&self.dir.join("ca"))
            .map_err(|e| LabError::failed(format!("cannot open the lab CA: {e}")))?;
        issue_one(&ca, &self.names[i], ttl, &self.dir.join(&self.names[i]))
    }

    /// Revoke node `victim` with `x0tta6bl4 ca revoke --api`, handing the revocation to
    /// node `via`, which floods it.
    pub fn revoke(&self, net: &Net, victim: usize, via: usize) -> Result<(), LabError> {
        let api = format!("http://{}:{API_PORT}", net.nodes[via].mgmt);
        let output = Command::new(&self.exe)
            .args(["ca", "revoke", "--dir"])
            .arg(self.dir.join("ca"))
            .args(["--name", &self.names[victim], "--api", &api])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::failed(format!("cannot run `x0tta6bl4 ca revoke`: {e}")))?;
        if !output.status.success() {
            return Err(LabError::failed(format!(
                "`x0tta6bl4 ca revoke --name {} --api {api}` failed: {}",
                self.names[victim],
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// A new CA and fresh SVIDs for every node, and no revocation kept: the way back
    /// from a revocation, which is permanent (every node must be restarted).
    pub fn rebuild_identities(&self, net: &Net) -> Result<(), LabError> {
        let remove = |path: PathBuf| {
            std::fs::remove_dir_all(&path)
                .map_err(|e| LabError::failed(format!("cannot remove {}: {e}", path.display())))
        };
        remove(self.dir.join("ca"))?;
        for name in &self.names {
            remove(self.dir.join(name))?;
        }
        write_x0_configs(
            &self.dir,
            net,
            &self.names,
            self.root.as_deref(),
            &self.sections,
        )
    }

    fn chaos_file(&self, i: usize) -> PathBuf {
        self.dir.join(&self.names[i]).join("chaos.toml")
    }

    /// Delay frames node `i` sends to `neighbour` (x0tta6bl4's `--chaos` layer); zero
    /// delay and jitter lift the fault.
    pub fn set_delay(
        &self,
        i: usize,
        neighbour: usize,
        delay_ms: u64,
        jitter_ms: u64,
    ) -> Result<(), LabError> {
        let text = format!(
            "delay_ms = {delay_ms}\njitter_ms = {jitter_ms}\nneighbours = [\"{}\"]\n",
            self.names[neighbour]
        );
        let path = self.chaos_file(i);
        std::fs::write(&path, text)
            .map_err(|e| LabError::failed(format!("cannot write {}: {e}", path.display())))
    }

    /// Make node `i` Byzantine (forged and replayed frames to every neighbour) or honest.
    pub fn set_byzantine(&self, i: usize, on: bool) -> Result<(), LabError> {
        let path = self.chaos_file(i);
        std::fs::write(&path, format!("byzantine = {on}\n"))
            .map_err(|e| LabError::failed(format!("cannot write {}: {e}", path.display())))
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send SIGSTOP (`stop`) or SIGCONT to node `i`.
    pub fn signal(&mut self, i: usize, stop: bool) -> Result<(), LabError> {
        let Some(child) = self.children[i].as_ref() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        cmd("kill", &[if stop { "-STOP" } else { "-CONT" }, &pid]).map(|_| ())
    }

    /// The first node supposed to run that has exited, with its log tail.
    pub fn first_exited(&mut self) -> Option<String> {
        for i in 0..self.children.len() {
            let exited = self.children[i]
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.children[i] = None;
                return Some(format!(
                    "{} {} exited; last lines of {}:\n{}",
                    self.kind.key(),
                    self.names[i],
                    self.log(i).display(),
                    log_tail(&self.log(i))
                ));
            }
        }
        None
    }

    /// Every listed node's forwarding table as node indices.
    pub async fn routes(&self, net: &Net, nodes: &[usize]) -> Routes {
        let mut routes = Routes::new();
        for &i in nodes {
            let table = match self.kind {
                Kind::X0tta6bl4(_) => self.x0_routes(net, i).await,
                Kind::Babeld(_) => kernel_routes(net, i),
            };
            if let Some(table) = table {
                routes.insert(i, table);
            }
        }
        routes
    }

    /// Node `i`'s view of the mesh (`GET /api/v1/topology`: the links both ends
    /// advertise, with costs), or `None` when it does not answer (x0tta6bl4 only).
    pub async fn topology_view(&self, net: &Net, i: usize) -> Option<serde_json::Value> {
        let url = format!("http://{}:{API_PORT}/api/v1/topology", net.nodes[i].mgmt);
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    async fn x0_routes(&self, net: &Net, i: usize) -> Option<BTreeMap<usize, usize>> {
        let url = format!("http://{}:{API_PORT}/api/v1/routes", net.nodes[i].mgmt);
        let rows: Vec<RouteRow> = self.http.get(url).send().await.ok()?.json().await.ok()?;
        let index = |name: &str| self.names.iter().position(|n| n == name);
        Some(
            rows.iter()
                .filter_map(|r| Some((index(&r.destination)?, index(&r.next_hop)?)))
                .collect(),
        )
    }

    /// Start the probe flows `pairs` (source, destination), each every `interval`;
    /// `receivers` are the nodes that must record arrivals (babeld's agents).
    pub async fn start_flows(
        &mut self,
        net: &Net,
        receivers: &[usize],
        pairs: &[(usize, usize)],
        interval: Duration,
    ) -> Result<(), LabError> {
        for &i in receivers {
            let targets: Vec<usize> = pairs
                .iter()
                .filter(|&&(s, _)| s == i)
                .map(|&(_, d)| d)
                .collect();
            match self.kind {
                Kind::X0tta6bl4(_) if targets.is_empty() => {}
                Kind::X0tta6bl4(_) => {
                    let names: Vec<&str> =
                        targets.iter().map(|&t| self.names[t].as_str()).collect();
                    let url = format!("http://{}:{API_PORT}/api/v1/flows", net.nodes[i].mgmt);
                    let body = serde_json::json!({"targets": names, "interval_ms": interval.as_millis() as u64});
                    let answer = self
                        .http
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .map_err(|e| LabError::failed(format!("POST {url}: {e}")))?;
                    if !answer.status().is_success() {
                        return Err(LabError::failed(format!(
                            "POST {url} answered {}",
                            answer.status()
                        )));
                    }
                }
                Kind::Babeld(_) => self.start_agent(net, i, &targets, interval)?,
            }
        }
        Ok(())
    }

    fn start_agent(
        &mut self,
        net: &Net,
        i: usize,
        targets: &[usize],
        interval: Duration,
    ) -> Result<(), LabError> {
        let list: Vec<String> = targets
            .iter()
            .map(|&t| net.nodes[t].id.to_string())
            .collect();
        let child = Command::new("ip")
            .args(["netns", "exec", &net.nodes[i].ns])
            .arg(&self.exe)
            .args([
                "lab",
                "probe-agent",
                "--name",
                &i.to_string(),
                "--interval-ms",
                &interval.as_millis().to_string(),
            ])
            // An agent that only receives (a sampled run) is started without targets.
            .args(match list.is_empty() {
                true => Vec::new(),
                false => vec!["--targets".to_owned(), list.join(",")],
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                LabError::failed(format!(
                    "cannot start the probe agent of {}: {e}",
                    self.names[i]
                ))
            })?;
        self.agents[i] = Some(child);
        Ok(())
    }

    /// Stop the flows and return the arrivals after `since_us` at every listed node,
    /// and (x0tta6bl4) the probes those nodes sent since their flows started.
    pub async fn collect(
        &mut self,
        net: &Net,
        nodes: &[usize],
        since_us: u64,
    ) -> Result<(Arrivals, Option<u64>), LabError> {
        let mut arrivals = Arrivals::new();
        let mut sent = None;
        if let Kind::X0tta6bl4(_) = self.kind {
            // Stop every node's flows before reading any: read while the others still
            // send, a node would report arrivals of probes sent after their source's
            // count was read (a delivery ratio above 1). The in-flight ones land first.
            for &i in nodes {
                let stop = format!("http://{}:{API_PORT}/api/v1/flows", net.nodes[i].mgmt);
                let _ = self.http.delete(stop).send().await;
            }
            tokio::time::sleep(IN_FLIGHT).await;
        }
        for &i in nodes {
            match self.kind {
                Kind::X0tta6bl4(_) => {
                    let url = format!(
                        "http://{}:{API_PORT}/api/v1/flows?since_us={since_us}",
                        net.nodes[i].mgmt
                    );
                    let report: FlowsReport = self
                        .http
                        .get(&url)
                        .send()
                        .await
                        .map_err(|e| LabError::failed(format!("GET {url}: {e}")))?
                        .json()
                        .await
                        .map_err(|e| LabError::failed(format!("GET {url}: {e}")))?;
                    *sent.get_or_insert(0) += report.sent;
                    for flow in report.received {
                        if let Some(s) = self.names.iter().position(|n| *n == flow.source) {
                            arrivals.insert((s, i), flow.arrivals_us);
                        }
                    }
                }
                Kind::Babeld(_) => {
                    for (source, list) in self.stop_agent(i)? {
                        if let Ok(s) = source.parse::<usize>() {
                            arrivals.insert(
                                (s, i),
                                list.into_iter().filter(|&t| t > since_us).collect(),
                            );
                        }
                    }
                }
            }
        }
        Ok((arrivals, sent))
    }

    fn stop_agent(&mut self, i: usize) -> Result<crate::probe::AgentArrivals, LabError> {
        let Some(mut child) = self.agents[i].take() else {
            return Ok(Default::default());
        };
        drop(child.stdin.take());
        let mut text = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = child.wait();
        parse_agent_output(&text)
    }

    /// Whether node `i` serves its HTTP API (x0tta6bl4 only).
    pub async fn serves(&self, net: &Net, i: usize) -> bool {
        self.peers(net, i).await.is_some()
    }

    /// Node `i`'s `GET /api/v1/peers`, or `None` when it does not answer (x0tta6bl4 only).
    async fn peers(&self, net: &Net, i: usize) -> Option<Vec<PeerRow>> {
        let url = format!("http://{}:{API_PORT}/api/v1/peers", net.nodes[i].mgmt);
        let answer = self.http.get(url).send().await.ok()?;
        answer.json::<Vec<PeerRow>>().await.ok()
    }

    /// The RTTs each node of `nodes` measured to its neighbours (x0tta6bl4 only; a node
    /// that does not answer is left out).
    pub async fn rtts_ms(&self, net: &Net, nodes: &[usize]) -> BTreeMap<usize, Vec<f64>> {
        let mut rtts = BTreeMap::new();
        for &i in nodes {
            if let Some(peers) = self.peers(net, i).await {
                rtts.insert(i, peers.iter().filter_map(|p| p.rtt_ms).collect());
            }
        }
        rtts
    }

    /// Neighbour-down events at `nodes` since they were first started: the sum of
    /// `x0tta6bl4_neighbour_down_total`, or babeld's `flush neighbour` lines.
    pub async fn neighbour_downs(&self, net: &Net, nodes: &[usize]) -> u64 {
        if !matches!(self.kind, Kind::X0tta6bl4(_)) {
            return nodes
                .iter()
                .map(|&i| self.flushes[i].load(Ordering::Relaxed))
                .sum();
        }
        self.metric_sum(net, nodes, "x0tta6bl4_neighbour_down_total")
            .await
    }

    /// The HTTP API address of node `i` (x0tta6bl4), on its management address.
    pub fn api_addr(&self, net: &Net, i: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from((net.nodes[i].mgmt, API_PORT))
    }

    /// Sum of the counter `name` (with its labels, if any) over `nodes` (x0tta6bl4).
    pub async fn metric_sum(&self, net: &Net, nodes: &[usize], name: &str) -> u64 {
        let mut total = 0;
        for &i in nodes {
            if let Some(text) = self.metrics_text(net, i).await {
                total += metric_value(&text, name);
            }
        }
        total
    }

    /// Node `i`'s `/metrics` page (x0tta6bl4 only; read series with [`metric_value`]), or
    /// `None` when the node does not answer.
    pub async fn metrics_text(&self, net: &Net, i: usize) -> Option<String> {
        let url = format!("http://{}:{API_PORT}/metrics", net.nodes[i].mgmt);
        let answer = self.http.get(url).send().await.ok()?;
        answer.text().await.ok()
    }

    /// Nodes of `nodes` that hold `peer` as an up neighbour (x0tta6bl4 only).
    pub async fn linked_to(&self, net: &Net, nodes: &[usize], peer: usize) -> Vec<usize> {
        let mut linked = Vec::new();
        for &i in nodes {
            let Some(peers) = self.peers(net, i).await else {
                continue;
            };
            if peers
                .iter()
                .any(|p| p.name == self.names[peer] && p.state == "up")
            {
                linked.push(i);
            }
        }
        linked
    }

    /// Kill every process.
    pub fn stop_all(&mut self) {
        for slot in self.children.iter_mut().chain(self.agents.iter_mut()) {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `path` as a process chrooted to `root` sees it (`path` itself without a root).
pub(crate) fn inside(root: Option<&Path>, path: &Path) -> PathBuf {
    match root.and_then(|r| path.strip_prefix(r).ok()) {
        Some(rest) => Path::new("/").join(rest),
        None => path.to_owned(),
    }
}

fn write_x0_configs(
    dir: &Path,
    net: &Net,
    names: &[String],
    root: Option<&Path>,
    sections: &toml::Table,
) -> Result<(), LabError> {
    let fail = |what: String| LabError::failed(what);
    let trust_domain: TrustDomain = "lab.x0tta6bl4.mesh"
        .parse()
        .map_err(|e| fail(format!("trust domain: {e}")))?;
    let ca = CertificateAuthority::init(&dir.join("ca"), &trust_domain)
        .map_err(|e| fail(format!("cannot create the lab CA: {e}")))?;
    for (i, name) in names.iter().enumerate() {
        let node_dir = dir.join(name);
        issue_one(&ca, name, SVID_TTL, &node_dir)?;
        let peers = net
            .edges
            .iter()
            .filter(|e| e.a == i)
            .map(|e| format!("{}:{QUIC_PORT}", e.addr_b))
            .collect();
        let toml = NodeToml {
            listen: format!("0.0.0.0:{QUIC_PORT}"),
            api_listen: format!("{}:{API_PORT}", net.nodes[i].mgmt),
            peers,
            identity: IdentityToml {
                dir: inside(root, &node_dir),
            },
            discovery: DiscoveryToml { enabled: false },
            sections: sections.clone(),
        };
        let text = toml::to_string(&toml).map_err(|e| fail(format!("node config: {e}")))?;
        let path = node_dir.join("node.toml");
        let mut file = File::create(&path)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        file.write_all(text.as_bytes())
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn issue_one(
    ca: &CertificateAuthority,
    name: &str,
    ttl: Duration,
    out: &Path,
) -> Result<SystemTime, LabError> {
    let fail = |what: String| LabError::failed(what);
    let node_name = NodeName::new(name).map_err(|e| fail(format!("node name {name}: {e}")))?;
    let files = ca
        .issue_node(&node_name, ttl, out)
        .map_err(|e| fail(format!("cannot issue the SVID of {name}: {e}")))?;
    Ok(files.not_after)
}

/// A babeld local-interface line about a neighbour (`add|change neighbour ID ... cost C`,
/// `flush neighbour ID ...`): its ID and whether it is usable now.
pub fn neighbour_line(line: &str) -> Option<(&str, bool)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (verb, id) = match words.as_slice() {
        [verb, "neighbour", id, ..] => (*verb, *id),
        _ => return None,
    };
    match verb {
        "flush" => Some((id, false)),
        "add" | "change" => {
            let cost = words
                .windows(2)
                .find(|w| w[0] == "cost")
                .and_then(|w| w[1].parse::<u32>().ok())?;
            Some((id, cost < BABEL_INFINITY))
        }
        _ => None,
    }
}

/// The value of the series `name` in OpenMetrics text, labels written out if it has
/// any (`x0tta6bl4_handshakes_total{result="failed"}`); 0 when absent.
pub fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A node's kernel routes to other nodes' identity addresses, as node indices.
fn kernel_routes(net: &Net, i: usize) -> Option<BTreeMap<usize, usize>> {
    let text = cmd("ip", &["-n", &net.nodes[i].ns, "-4", "route", "show"]).ok()?;
    Some(parse_kernel_routes(
        &text,
        |a| net.node_of_id(a),
        |a| net.node_of_edge_addr(a),
    ))
}

/// Parse `ip -4 route show` lines `DEST via GW ...` into destination -> next hop.
pub fn parse_kernel_routes(
    text: &str,
    node_of_id: impl Fn(Ipv4Addr) -> Option<usize>,
    node_of_gateway: impl Fn(Ipv4Addr) -> Option<usize>,
) -> BTreeMap<usize, usize> {
    let mut table = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(pos)) = (words.first(), words.iter().position(|w| *w == "via"))
        else {
            continue;
        };
        let dest = dest.trim_end_matches("/32");
        let (Ok(dest), Some(Ok(gw))) = (
            dest.parse::<Ipv4Addr>(),
            words.get(pos + 1).map(|g| g.parse::<Ipv4Addr>()),
        ) else {
            continue;
        };
        if let (Some(d), Some(hop)) = (node_of_id(dest), node_of_gateway(gw)) {
            table.insert(d, hop);
        }
    }
    table
}

/// The last lines of a log, for an error message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(the log is empty)".to_owned();
    }
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_a_root_are_seen_from_it() {
        let root = Path::new("/srv/image/rootfs");
        let file = Path::new("/srv/image/rootfs/tmp/x0tta6bl4-lab-1/x0tta6bl4/n1/node.toml");
        assert_eq!(
            inside(Some(root), file),
            Path::new("/tmp/x0tta6bl4-lab-1/x0tta6bl4/n1/node.toml")
        );
        assert_eq!(inside(None, file), file);
        // Outside the root: unchanged (Fleet::with_root refuses such a directory).
        assert_eq!(inside(Some(root), Path::new("/etc/x")), Path::new("/etc/x"));
    }

    #[test]
    fn babeld_neighbour_lines_parse() {
        let up = "change neighbour 561d94d25810 address fe80::a49c if p4 reach fff0 ureach 0000 rxcost 96 txcost 96 cost 96";
        assert_eq!(neighbour_line(up), Some(("561d94d25810", true)));
        let down = "change neighbour 561d94d25810 address fe80::a49c if p4 reach 8000 ureach 0000 rxcost 65535 txcost 96 cost 65535";
        assert_eq!(neighbour_line(down), Some(("561d94d25810", false)));
        let flush = "flush neighbour 561d94d25810 address fe80::a49c if p4";
        assert_eq!(neighbour_line(flush), Some(("561d94d25810", false)));
        assert_eq!(neighbour_line("add interface p4 up true"), None);
        assert_eq!(
            neighbour_line("add route 1 prefix 10.215.0.2/32 metric 96"),
            None
        );
        assert_eq!(neighbour_line("change neighbour x cost"), None);
    }

    #[test]
    fn kernel_routes_parse() {
        let text = "10.214.0.0/30 dev mgmt proto kernel scope link src 10.214.0.2\n\
                    10.215.0.2 via 10.213.0.2 dev p1 proto babel onlink\n\
                    10.215.0.3 via 10.213.0.6 dev p3 proto babel onlink\n";
        let id = |a: Ipv4Addr| Some(a.octets()[3] as usize - 1);
        let gw = |a: Ipv4Addr| match a.octets()[3] {
            2 => Some(1),
            6 => Some(3),
            _ => None,
        };
        let table = parse_kernel_routes(text, id, gw);
        assert_eq!(table, BTreeMap::from([(1, 1), (2, 3)]));
    }
}
