//! The command line, defined once: every subcommand and flag with its short help (the
//! first line of its doc comment, shown by `-h`) and long help (the whole comment, shown
//! by `--help`). Parsing only mirrors the command line; each command validates its own
//! arguments and turns them into checked settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failure (a node, the network or the demo did not do what was asked, e.g. the mesh did not heal)
  2    usage or configuration error (bad flag, bad value, malformed config file)
  141  the reader closed the output early (e.g. `| head`), as for a SIGPIPE";

/// x0tta6bl4: a self-healing, zero-trust mesh network.
///
/// Every node is one process. Nodes authenticate each other with SPIFFE X.509 SVIDs over
/// mutually authenticated QUIC, flood signed link-state, route messages hop by hop and
/// repair their routes when nodes or links fail. Start with `x0tta6bl4 demo`.
#[derive(Debug, Parser)]
#[command(name = "x0tta6bl4", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a mesh node daemon from a TOML configuration file.
    ///
    /// The node listens for QUIC links on `listen`, dials every address in `peers`,
    /// authenticates peers with the SVID in `[identity] dir` and serves its HTTP API on
    /// `api_listen` (see docs/api.md). `examples/node.toml` shows and explains every key.
    /// It runs until Ctrl-C or SIGTERM. SIGHUP (or `POST /api/v1/config/reload`) reloads
    /// the file without a restart: the `[protocol]` settings that change at run time apply
    /// at once, an invalid file is refused and the settings in force stay, and settings
    /// read only at start (addresses, identity, ...) are logged as needing a restart.
    #[command(after_help = EXIT_CODES)]
    Node(NodeArgs),
    /// Create a trust-domain CA and issue node SVIDs.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Show a running node's peers and routes as tables.
    ///
    /// Reads `/api/v1/status`, `/api/v1/peers` and `/api/v1/routes` from the node's HTTP
    /// API. With `--json`, prints one JSON object {"status", "peers", "routes"} instead.
    ///
    /// Two costs: a peer's COST is the link cost the node measures now (10 per hop plus
    /// 1 per 100 µs of smoothed RTT, scaled up by loss); a route's COST is the sum, along
    /// the path, of the link costs in the link-state advertisements. A node re-advertises
    /// a link's cost only when it moved by `cost_change_percent` (default 30 %), at most
    /// once per `cost_update_interval_ms` (1 s), so the two differ for a neighbour whose
    /// RTT moved less than that since its last advertisement.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Send a text message through the mesh to a node, by name.
    ///
    /// The node at `--api` routes the message hop by hop to `--to`; the destination
    /// lists it at `/api/v1/messages`. Fails when the destination is unknown (HTTP 404)
    /// or currently unreachable (HTTP 503).
    #[command(after_help = EXIT_CODES)]
    Send(SendArgs),
    /// Start a throwaway mesh on loopback, kill nodes and measure how fast it heals.
    ///
    /// Makes a temporary CA and one SVID per node, starts N node processes in a seeded
    /// random connected topology (each node knows only some others, so paths have several
    /// hops), waits until every node has a route to every other, starts probe flows
    /// between all pairs (one message every 10 ms), kills K nodes with SIGKILL (drawn with the
    /// seed from the topology, so the survivors stay connected, preferring nodes that
    /// many shortest paths cross), and measures the data-plane outage of every flow
    /// whose path crossed a killed node (MTTR). Prints a summary, or one JSON object with `--json`. Removes every process
    /// and file it made, also on error and on Ctrl-C. Exits 0 only when the mesh healed:
    /// every affected flow recovered and every pair of survivors is reachable again.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Digital twin: the real protocol code in simulated time, at scale.
    ///
    /// Every simulated node runs the same protocol state machine as the daemon, driven
    /// by a discrete-event clock over modelled links (latency, jitter, loss, bandwidth,
    /// up/down). MTTR is measured on the simulated data plane with probe flows, exactly
    /// as the demo measures it on real processes. The same seed gives the same results.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// DAO governance of the mesh: participation simulation, signed off-chain governance.
    ///
    /// Operators propose (parameter change, node ban, key rotation, policy change, admit an
    /// operator), vote quadratically (v votes cost v² of 100 voice credits per proposal) and
    /// delegate (liquid, transitive); every message is signed with the operator's SVID key.
    /// The same rules run on chain in contracts/ (see docs/dao.md).
    #[command(subcommand)]
    Dao(crate::dao_cmd::DaoCommand),
    /// Chaos lab: real nodes in Linux network namespaces, broken on purpose (needs root).
    ///
    /// Starts one node process per namespace, one veth pair per link, injects a fault,
    /// measures the data-plane outage of every flow that crossed it (MTTR), runs the twin
    /// on the same topology and fault, and can run Debian's babeld the same way.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Edge RAG guardian: on-device retrieval over runbooks and documentation.
    ///
    /// Chunks and embeds documents with all-MiniLM-L6-v2 (candle, CPU), stores them in a
    /// compressed vector index (flat, int8, pq) and answers questions with the nearest
    /// passages. See docs/rag.md.
    #[command(subcommand)]
    Rag(crate::rag_cmd::RagCommand),
    /// Federated learning: robust aggregation, differential privacy, compressed updates,
    /// a PBFT committee that commits model versions and their audit trail. See docs/fl.md.
    #[command(subcommand)]
    Fl(crate::fl_cmd::FlCommand),
}

/// `x0tta6bl4 lab ...`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Run a fault K times on real nodes and report MTTR next to the twin (and babeld).
    ///
    /// Needs root, `ip` (iproute2) and `nft` (nftables); `--router babeld|both` also
    /// needs `babeld`. Every namespace, veth, rule, process and file is removed at the
    /// end, also on error and Ctrl-C. Exit 0 only when every router healed.
    #[command(after_long_help = lab_run_help())]
    Run(LabRunArgs),
    /// Count false neighbour-down events over a long fault-free run with loss on every link.
    #[command(after_help = EXIT_CODES)]
    Soak(LabSoakArgs),
    /// Internal: the UDP probe agent the lab runs in each namespace for babeld.
    #[command(hide = true)]
    ProbeAgent(LabProbeAgentArgs),
}

fn lab_run_help() -> String {
    format!(
        "Topologies (--topology KIND[:key=value,...]):\n{}\n\nFaults (--scenario NAME[:key=value,...]):\n{}\n\n{EXIT_CODES}",
        x0tta6bl4_twin::TOPOLOGY_HELP,
        x0tta6bl4_lab::FAULT_HELP
    )
}

/// `x0tta6bl4 lab run`.
#[derive(Debug, Args)]
pub struct LabRunArgs {
    /// Topology: ring, grid, erdos-renyi, random-geometric, scale-free, gateway or file:PATH.
    #[arg(long, value_name = "KIND[:params]", default_value = "ring")]
    pub topology: String,
    /// Number of nodes (each is a namespace and a process; at most 128).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub nodes: usize,
    /// Fault: node-kill, node-pause, node-restart, link-down, partition, asym-partition,
    /// loss, delay, bandwidth, cpu-stress, mem-stress, svid-expiry, revoke, byzantine or
    /// degrade-then-fail (see below).
    #[arg(long, value_name = "FAULT[:params]", default_value = "node-kill")]
    pub scenario: String,
    /// Iterations of the fault per router.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub iterations: usize,
    /// Seed of the topology and of the faulted elements.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Router: x0tta6bl4, babeld (hello matched to our 50 ms probes), babeld-default
    /// (4 s hello) or both (all three, one after the other).
    #[arg(long, value_name = "ROUTER", default_value = "x0tta6bl4")]
    pub router: String,
    /// Print one JSON object: {topology, nodes, scenario, iterations, seed, routers:
    /// {x0tta6bl4|babeld|babeld-default: {mttr_ms {mean, p50, p95, p99, max, samples},
    /// false_down_events, unreachable_pairs_after_heal, unhealed_flows, flows {sample,
    /// started, affected}, resources {idle|flows|heal {seconds, cpu_s, cpu_cores,
    /// rss_mib, link_bytes_per_s}, cpu_s_total, rss_mib, rss_peak_mib, disk_mib,
    /// load_average_start, load_average_end} (each per node {mean, max})}}, twin
    /// {mttr_ms, error_p50, error_p95}, lab_cpu_s}. svid-expiry and revoke add to
    /// x0tta6bl4's entry identity {links_closed, reconnects_refused, readmitted};
    /// --node-cpu/--node-memory add budget {cgroup, cpu, memory_bytes,
    /// cpu_throttled_periods, cpu_throttled_s, oom_kills}. x0tta6bl4 routers add routing
    /// {probes_sent, probes_delivered, delivery_ratio, predictor_raises,
    /// healing_reroutes, unneeded_reroutes, link_hours,
    /// unneeded_reroutes_per_link_hour}; --routing names them x0tta6bl4 (cost),
    /// x0tta6bl4-etx and x0tta6bl4-predict.
    #[arg(long)]
    pub json: bool,
    /// Write the MTTR CDFs of every router and the twin as an SVG plot.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Run the x0tta6bl4 nodes from a container image's exported root filesystem:
    /// `chroot ROOT /usr/local/bin/x0tta6bl4 node ...` in each namespace (the nodes'
    /// configs and SVIDs go under ROOT/tmp). Without it, nodes run this binary.
    #[arg(long, value_name = "ROOT")]
    pub node_root: Option<PathBuf>,
    /// Run at most K probe flows per iteration, drawn at random (seeded by --seed)
    /// among the survivor pairs whose path crosses the fault, instead of a flow between
    /// every ordered pair of survivors (n² flows swamp the host beyond ~30 nodes). The
    /// MTTR is measured on crossing flows only, so the sample is of its population; the
    /// report gives K and the flows started (routers.NAME.flows).
    #[arg(long, value_name = "K")]
    pub flows_sample: Option<usize>,
    /// CPU budget of every node process, a share of one core (0.25: 25 ms per 100 ms),
    /// set with a cgroup (v2 cpu.max; v1 cpu.cfs_quota_us where the host still has the
    /// cpu controller on cgroup v1). The report gives throttling (routers.NAME.budget).
    #[arg(long, value_name = "SHARE")]
    pub node_cpu: Option<String>,
    /// Memory budget of every node process (e.g. 64M; K, M, G are powers of 1024), set
    /// with a cgroup (v2 memory.max, swap 0; v1 memory.limit_in_bytes). A node past it
    /// is killed by the kernel and the run fails; the report counts OOM kills.
    #[arg(long, value_name = "SIZE")]
    pub node_memory: Option<String>,
    /// Settings of every x0tta6bl4 node's `[protocol]` section, as in node.toml:
    /// KEY=VALUE pairs, comma-separated (e.g. cost_update_interval_ms=5000). Checked
    /// like node.toml; the report's numbers are then of those settings, not the defaults,
    /// and so are the twin's beside them.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub node_protocol: Option<String>,
    /// How the x0tta6bl4 nodes cost their links, as `twin run --routing`: cost (the
    /// protocol's measured cost, the default), etx (`link_cost = "etx"`), predict (the
    /// measured cost and the link-failure predictor of --predictor in every node,
    /// `[predictor] model`). Several, comma-separated (e.g. cost,etx,predict), run as
    /// routers of their own one after the other on the same faults, side by side in the
    /// report (routers x0tta6bl4, x0tta6bl4-etx, x0tta6bl4-predict). ppo runs in the
    /// twin only (`twin run --routing ppo`), not in the lab yet.
    #[arg(long, value_name = "cost|etx|predict[,...]")]
    pub routing: Option<String>,
    /// The link-failure predictor for --routing predict: a model file written by
    /// `x0tta6bl4 twin train-predictor` (refused before anything runs when its hash check
    /// fails).
    #[arg(long, value_name = "MODEL.json")]
    pub predictor: Option<PathBuf>,
}

/// `x0tta6bl4 lab soak`.
#[derive(Debug, Args)]
pub struct LabSoakArgs {
    /// Minutes to run (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "M", default_value_t = 10.0)]
    pub minutes: f64,
    /// Loss on every link, as a percentage (5%) or a fraction (0.05).
    #[arg(long, value_name = "RATE", default_value = "5%")]
    pub loss: String,
    /// Topology.
    #[arg(long, value_name = "KIND[:params]", default_value = "ring")]
    pub topology: String,
    /// Number of nodes.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub nodes: usize,
    /// Router: x0tta6bl4, babeld (hello matched to our 50 ms probes), babeld-default
    /// (4 s hello) or both (x0tta6bl4, then babeld matched; M minutes each). babeld's
    /// neighbour-down events are read from its local interface (`monitor`): a neighbour
    /// whose cost turns 65535 (infinity) or that is flushed while usable.
    #[arg(long, value_name = "ROUTER", default_value = "x0tta6bl4")]
    pub router: String,
    /// Print one JSON object instead of a summary: {topology, nodes, links, loss,
    /// routers: {NAME: {seconds, false_down_events, false_down_per_link_hour}}} and,
    /// with --api-abuse, api_abuse: {sends, half_open_opened, refused: {NODE: {REASON:
    /// N}}, wedged_nodes, unreachable_pairs, late_timers: {NODE: N},
    /// timer_lateness_max_ms: {NODE: MS}}.
    #[arg(long)]
    pub json: bool,
    /// Abuse every x0tta6bl4 node's HTTP API during the soak: 50 concurrent clients
    /// sending messages as fast as the nodes answer, and up to 300 half-sent requests
    /// held open per node (3000 at most), on the lab's own addresses only.
    ///
    /// The report adds what each node refused (its api_connections_refused_total),
    /// how many of its protocol timers (probes, failure detection) ran more than
    /// 51.2 ms late during the abuse, the nodes that wedged (no answer within 2 s after
    /// the abuse) and the ordered pairs without a route once it stopped. Exits 1 if a node wedged or a pair stayed
    /// unreachable.
    #[arg(long)]
    pub api_abuse: bool,
    /// Settings of every x0tta6bl4 node's `[protocol]` section, as in node.toml:
    /// KEY=VALUE pairs, comma-separated (e.g. suspect_probe_interval_ms=10), checked like
    /// node.toml; the false alarms counted are then those of these settings.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub node_protocol: Option<String>,
}

/// `x0tta6bl4 lab probe-agent` (internal).
#[derive(Debug, Args)]
pub struct LabProbeAgentArgs {
    /// This agent's name, carried in every datagram.
    #[arg(long)]
    pub name: String,
    /// Target IPv4 addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<std::net::Ipv4Addr>,
    /// Interval between two probes to each target.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
}

/// `x0tta6bl4 twin ...`.
#[derive(Debug, Subcommand)]
pub enum TwinCommand {
    /// Run a failure scenario many times over a topology and report MTTR statistics.
    ///
    /// Converges the mesh once, then runs each iteration on a copy of the converged
    /// mesh: probe flows (one message every 10 ms) between pairs whose path crosses what
    /// the scenario breaks, the fault, and the outage of each flow on the data plane.
    /// Flows whose ends the fault disconnects cannot heal and are not measured; when no
    /// flow at all was measured (e.g. any link failure on a line) the run says so and
    /// exits 1 instead of reporting an MTTR of 0.
    #[command(after_long_help = twin_run_help())]
    Run(TwinRunArgs),
    /// Train the link-failure predictor for `twin run --routing predict`.
    ///
    /// Runs iterations of degrade-then-fail (loss and jitter ramps before a cut, and
    /// ramps that recover), samples every node's view of each of its links every 100 ms
    /// (loss, loss trend, jitter, jitter trend, queueing over a 1 s window), labels each
    /// sample with whether the link was cut within 2 s, and trains a logistic regression
    /// federatedly: each node trains on its own links' samples, FedAvg merges them
    /// (candle, crates/fl). The threshold flags at most --false-positive-rate of the
    /// training negatives.
    /// Prints recall, false-positive rate and precision on --eval-iterations further
    /// draws, and writes the model with its SHA-256.
    #[command(after_long_help = twin_topology_help())]
    TrainPredictor(TwinTrainPredictorArgs),
    /// Train the PPO routing agents for `twin run --routing ppo`.
    ///
    /// Every node runs one agent per link that, every 200 ms, puts a cost multiplier
    /// (1, 1.5, 2, 4 or 8) on the link's ETX cost through the protocol's link-risk hook
    /// (flooded by link-state, so routes stay loop-free), from the link's 1 s probe
    /// window (loss, jitter and their trends, queueing), the share of the node's
    /// forwarded flows on the link and the link's current multiplier. The reward is the
    /// delivery ratio of the flows the node forwards minus their mean latency / 100 ms.
    /// All agents share one policy (a tanh MLP on candle, crates/fl). Each episode is one
    /// iteration of --scenario on the next --topology (round robin); after it, every
    /// node computes a PPO update (clipped objective, GAE) on its own agents' steps and
    /// FedAvg merges the updates. Writes the policy with its SHA-256. Deterministic per
    /// --seed.
    #[command(after_long_help = twin_topology_help())]
    TrainPpo(TwinTrainPpoArgs),
    /// Merge the parts of a sharded run into the report of the unsharded run.
    ///
    /// Reads the parts written by `twin run --shard I/N --out PART.json` (one per shard,
    /// any order) and prints exactly the report `twin run` prints for the whole run
    /// (with --no-wall-clock on both, the same bytes; wall_seconds of a merge is the sum
    /// of the shards'). Refuses, with exit code 2, parts of different runs (topology,
    /// scenario, seed, iterations, shard count, settings or version differ), a shard
    /// missing or given twice, and damaged files (each part carries a SHA-256 of its
    /// body). Exits 1 when the merged run failed, as `twin run` does.
    #[command(after_help = EXIT_CODES)]
    Merge(TwinMergeArgs),
    /// Fuzz the protocol: random topologies with random faults, one seed each.
    ///
    /// Safety is checked at every step while faults run (sequence numbers never go
    /// back, no route through a neighbour that is not up); after the faults the mesh must
    /// converge within 10 simulated seconds. Every failing seed is printed with the
    /// command that replays it; the exit code is 1 when any seed failed.
    #[command(after_help = EXIT_CODES)]
    Fuzz(TwinFuzzArgs),
    /// What-if tuning: sweep probe interval and miss threshold on a lossy mesh.
    ///
    /// For every combination, counts false neighbour-down events over a fault-free soak
    /// and measures node-failure MTTR, then recommends the fastest timers whose false
    /// alarms stay within one per link per hour.
    ///
    /// The default sweep (4 intervals x 5 thresholds, 36 nodes, 300 s soak) takes minutes;
    /// it prints what it will run, then a progress bar with an estimate of the time left (one line per combination when stderr is not a
    /// terminal). Fewer --intervals-ms, --misses, --nodes or a shorter --soak-s run faster.
    ///
    /// Why MTTR p50 can be the same at, e.g., 6 and 8 misses: before a silent neighbour's
    /// dead interval (probe_interval_ms x probe_misses_max) runs out, each unanswered probe
    /// raises the link's loss estimate; the link's cost rises with it and, past
    /// healing.degraded_loss (20 %), the link is marked degraded (cost x10) and
    /// re-advertised, so most flows move off a failed node after about 6 probe intervals
    /// whatever the miss threshold. Above that many misses the threshold sets only the
    /// tail (p95) and the false alarms.
    #[command(after_long_help = twin_topology_help())]
    Tune(TwinTuneArgs),
    /// Print the topology the twin would simulate (nodes and links) without running it.
    #[command(after_long_help = twin_topology_help())]
    Topology(TwinTopologyArgs),
    /// Federated learning in the twin: every simulated node runs the federation role of
    /// `fl run` (participant, PBFT committee replica, coordinator when the committed chain
    /// names it) over the simulated mesh.
    ///
    /// FL frames travel as mesh application messages on the FL channel, routed hop by hop
    /// by the simulated protocol nodes, so link loss, latency, partitions and crashed
    /// nodes apply to them; time is simulated and the run is deterministic per seed.
    /// Training is real (candle logistic regression on each node's IID share of the
    /// digits data set); its duration is modelled: rows x epochs x --compute-per-sample-ms,
    /// times --straggler-factor for the --stragglers share of the nodes. A --dropouts
    /// share of the sampled participants leave their round before sending. Reports rounds
    /// committed, accuracy and simulated time per round, committee commits, coordinator
    /// handovers, FL messages and frames lost. Exits 1 when training did not reach
    /// --rounds within --sim-limit-s or two nodes committed different blocks.
    #[command(after_long_help = twin_topology_help())]
    Fl(TwinFlArgs),
    /// Byzantine validators and leader crashes in the twin's federation, over many
    /// seeds.
    ///
    /// For f = 1 (4 nodes) and f = 2 (7 nodes), per seed, two `twin fl` runs (the
    /// committee is every node; 0-5 % loss, 1-10 ms latency, 3 rounds, 250 ms view
    /// timeout): one on a ring with f Byzantine validators, each equivocating, silent or
    /// delaying its committee messages 100-800 ms (drawn from the seed), and one on a
    /// full mesh whose committee leader crashes when the coordinator submits round 1
    /// (a later round when the leader is the coordinator). Reports conflicting
    /// commits, runs complete and the crash-to-commit time; exits 1 when any run
    /// committed conflicting blocks, did not finish, or took more than 1 s of simulated
    /// time to commit after the leader crash.
    #[command(after_help = EXIT_CODES)]
    FlByzantine(TwinFlByzantineArgs),
}

/// `x0tta6bl4 twin fl-byzantine`.
#[derive(Debug, Args)]
pub struct TwinFlByzantineArgs {
    /// Seeds per committee size.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub first_seed: u64,
    /// Directory of the converted digits data set (scripts/fetch-fl-data.py writes it).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_FL_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object: {"sweeps": [one per f], "conflicting_commits",
    /// "leader_crash_within_1s", "seconds"}.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 twin fl`.
#[derive(Debug, Args)]
pub struct TwinFlArgs {
    /// Topology: random-geometric, erdos-renyi, grid, ring, scale-free, file:PATH, ...,
    /// with parameters after a colon, e.g. grid:loss=0.01 (see below).
    #[arg(long, value_name = "KIND[:params]", default_value = "erdos-renyi")]
    pub topology: String,
    /// Number of nodes of generated topologies (every node is a participant and a
    /// committee candidate).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub nodes: usize,
    /// Participants the coordinator samples per round.
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub participants_per_round: usize,
    /// Rounds of the training (round numbers; a round that fails for lack of updates
    /// is skipped).
    #[arg(long, value_name = "R", default_value_t = 10)]
    pub rounds: u64,
    /// Seed of the mesh, data split, initial model, sampling, stragglers, drop-outs.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Share of the nodes that train --straggler-factor times slower.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub stragglers: f64,
    /// How much slower a straggler trains.
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    pub straggler_factor: f64,
    /// Probability that a sampled participant leaves its round before sending.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub dropouts: f64,
    /// Simulated training time per sample and local epoch, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5.0)]
    pub compute_per_sample_ms: f64,
    /// Partition during training: at=S,for=S[,fraction=F] cuts the first F (default
    /// 0.3) of the nodes, the first coordinator among them, from the rest S seconds
    /// after training starts, for S seconds.
    #[arg(long, value_name = "at=S,for=S[,fraction=F]")]
    pub partition: Option<String>,
    /// Crash the committed coordinator's node this many seconds after training starts.
    #[arg(long, value_name = "S")]
    pub crash_coordinator_at_s: Option<f64>,
    /// Byzantine validators: this many members of the first epoch's committee (never
    /// the first coordinator; at most the committee's f) misbehave with every committee
    /// message they send, as --byzantine-mode says. They train honestly.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub byzantine_validators: usize,
    /// What the Byzantine validators do: equivocate (conflicting, re-signed
    /// pre-prepares, new views and votes to the two halves of the nodes), silent (send
    /// nothing), delay (send everything 100-800 ms late), or mixed (one of those per
    /// validator, from the seed).
    #[arg(long, value_name = "MODE", default_value = "mixed")]
    pub byzantine_mode: String,
    /// When the coordinator submits this round's result, crash the committee leader of
    /// the current view (the next round's when the leader is the coordinator); the
    /// report says how long the commit took after the crash.
    #[arg(long, value_name = "R")]
    pub crash_leader_at_round: Option<u64>,
    /// What Byzantine participants do: sign-flip, gaussian, label-flip, alie, ipm,
    /// inflate-samples (none: no attackers). They train, coordinate and vote honestly,
    /// and send this attack's update whenever they are sampled.
    #[arg(long, value_name = "KIND", default_value = "none")]
    pub attack: String,
    /// Share of the nodes that are Byzantine participants (drawn from the seed, never
    /// the first coordinator), with --attack.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub attackers: f64,
    /// Aggregation rule of every coordinator: fedavg, median, trimmed-mean, krum,
    /// multi-krum, bulyan (fltrust needs a root set the twin's coordinators do not
    /// hold). Krum, Multi-Krum and Bulyan assume f = ceil(attackers x participants per
    /// round); trimmed mean cuts that share at each end (0.1 to 0.45).
    #[arg(long, value_name = "KIND", default_value = "fedavg")]
    pub aggregator: String,
    /// Time a round waits for updates, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub round_timeout_ms: u64,
    /// Coordinator silence after which a node asks the committee for a handover, in
    /// milliseconds (longer than a round).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub failover_ms: u64,
    /// Byzantine validators the committee tolerates, 3f+1 members per epoch (default:
    /// 2, at most (nodes - 1) / 3).
    #[arg(long, value_name = "F")]
    pub committee_f: Option<usize>,
    /// Heights per committee epoch (the committee is drawn anew each epoch).
    #[arg(long, value_name = "H", default_value_t = 4)]
    pub epoch_len: u64,
    /// First view-change timeout of the committee, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub view_timeout_ms: u64,
    /// Local epochs per round.
    #[arg(long, value_name = "E", default_value_t = 2)]
    pub epochs: usize,
    /// Local minibatch size.
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub batch: usize,
    /// Local SGD learning rate.
    #[arg(long, value_name = "LR", default_value_t = 0.1)]
    pub lr: f64,
    /// Directory of the converted digits data set (scripts/fetch-fl-data.py writes it).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_FL_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Give up after this many simulated seconds of training.
    #[arg(long, value_name = "S", default_value_t = 600)]
    pub sim_limit_s: u64,
    /// Print one JSON object: nodes, links, topology, seed, rounds, rounds_committed,
    /// last_round, participants_per_round, final_accuracy, accuracy_per_round,
    /// sim_seconds_per_round, round_log, committee_commits, handovers,
    /// conflicting_commits, byzantine_validators, forged_messages, withheld_messages,
    /// delayed_messages, equivocations_refused, committee_refused, aggregator, attack,
    /// attackers (names), leader_crash, nodes_finished, nodes_alive, stragglers, dropouts,
    /// updates_sent, updates_refused, rounds_failed, fl_messages_sent,
    /// fl_messages_delivered, fl_unroutable, frames_lost, trainings, converged_s,
    /// sim_seconds, wall_seconds.
    #[arg(long)]
    pub json: bool,
}

fn twin_run_help() -> String {
    format!(
        "Topologies (--topology KIND[:key=value,...]):\n{}\n\nScenarios (--scenario NAME[:key=value,...]):\n{}\n\n{EXIT_CODES}",
        x0tta6bl4_twin::TOPOLOGY_HELP,
        x0tta6bl4_twin::SCENARIO_HELP
    )
}

fn twin_topology_help() -> String {
    format!(
        "Topologies (--topology KIND[:key=value,...]):\n{}\n\n{EXIT_CODES}",
        x0tta6bl4_twin::TOPOLOGY_HELP
    )
}

/// `x0tta6bl4 twin run`.
#[derive(Debug, Args)]
pub struct TwinRunArgs {
    /// Topology: random-geometric, erdos-renyi, grid, ring, scale-free, file:PATH,
    /// node:URL or prometheus:URL, with parameters after a colon (see below).
    #[arg(long, value_name = "KIND[:params]", default_value = "erdos-renyi")]
    pub topology: String,
    /// Number of nodes of generated topologies.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub nodes: usize,
    /// Scenario: node-failure, link-failure, partition, cascade, flap, degrade,
    /// asym-partition, bandwidth, slow-node, byzantine or degrade-then-fail, with parameters after a colon
    /// (see below).
    #[arg(long, value_name = "NAME[:params]", default_value = "node-failure")]
    pub scenario: String,
    /// Iterations of the scenario, each on a copy of the converged mesh.
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub iterations: usize,
    /// Seed of the whole run (topology, faults, every random choice).
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object with the results instead of a summary.
    ///
    /// Keys: nodes, links, topology, scenario, iterations, seed, mttr_ms {mean, p50, p95,
    /// p99, max, samples}, converged_ms, reconverged_ms {...}, unreachable_pairs_after_heal,
    /// unhealed_flows, false_down_events, control_messages_per_node_per_second,
    /// control_bytes_per_node_per_second, sim_seconds, wall_seconds,
    /// sim_seconds_per_wall_second, routing {delivery_ratio, latency_p95_ms,
    /// unneeded_reroutes_per_link_hour, ...}. With several --routing, one such object per
    /// routing, keyed by its name.
    #[arg(long)]
    pub json: bool,
    /// Write every outage sample as CSV (iteration,source,destination,outage_ms).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the MTTR distribution (histogram and CDF) as an SVG plot.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the results in Prometheus text format (x0tta6bl4_twin_* metrics), e.g. for
    /// a node_exporter textfile collector feeding the digital-twin dashboard.
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
    /// Most probe flows measured per iteration.
    #[arg(long, value_name = "F", default_value_t = 100)]
    pub flows: usize,
    /// Probe interval of the simulated nodes (the node's protocol.probe_interval_ms).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub probe_interval_ms: u64,
    /// Missed probes before a neighbour is declared down (protocol.probe_misses_max).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub probe_misses: u32,
    /// Pace of probes to a suspected neighbour (protocol.suspect_probe_interval_ms; 0,
    /// the default, turns suspicion off): once a probe goes unanswered past the link's
    /// retransmission timeout, the neighbour is probed again at this pace and declared
    /// down after --probe-misses unanswered probes in a row (more on a lossy link).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub suspect_probe_interval_ms: u64,
    /// Worker threads for iterations (results do not depend on it; default: all cores).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// How the mesh first converges: cold (every node boots alone and floods; the
    /// protocol alone) or snapshot (nodes bring their links up through the protocol,
    /// then every node takes the set of all nodes' advertisements as a state transfer,
    /// each advertisement verified as if flooded, and the run checks that every node's
    /// link-state database agrees). A cold start floods every advertisement over every
    /// link, which dominates at thousands of nodes; use snapshot there.
    #[arg(long, value_name = "cold|snapshot", default_value = "cold")]
    pub start: x0tta6bl4_twin::Start,
    /// Leave the wall-clock figures (wall_seconds, sim_seconds_per_wall_second) out of
    /// --json, so that the same study prints the same bytes however it was run (whole,
    /// or sharded and merged with `twin merge --no-wall-clock`). The keys are then in
    /// alphabetical order.
    #[arg(long)]
    pub no_wall_clock: bool,
    /// Run only shard I of N (I is 0-based: 0 to N-1, as Kubernetes' JOB_COMPLETION_INDEX)
    /// and write its part to --out.
    ///
    /// Shard I runs iterations I*K/N to (I+1)*K/N - 1 of the K = --iterations of the run;
    /// each iteration's randomness depends only on (--seed, iteration index), so a shard
    /// reproduces exactly those iterations of the unsharded run. Every shard converges the
    /// mesh itself. Give every shard the same flags (topology, nodes, scenario, seed,
    /// iterations, flows, probe settings, start) and then `x0tta6bl4 twin merge` the N
    /// parts: it refuses parts of different runs and prints the unsharded run's report.
    /// A shard exits 0 once its part is written, whatever its iterations measured; the
    /// verdict (exit 1 on unhealed flows) is the merge's. N may not exceed K.
    #[arg(long, value_name = "I/N", requires = "out")]
    pub shard: Option<String>,
    /// Where a shard writes its part (written to a temporary file, synced, then renamed:
    /// a part that exists is complete).
    #[arg(long, value_name = "PART.json", requires = "shard")]
    pub out: Option<PathBuf>,
    /// How links are costed: cost (the protocol's measured cost: hop, base RTT, loss;
    /// the default), etx (ETX, 10 per expected transmission from probe loss), predict
    /// (the measured cost, raised 20x while --predictor predicts the link fails within
    /// 2 s, restored below half the threshold). Several, comma-separated (e.g.
    /// cost,etx,predict), run the same iterations once per routing and print them side
    /// by side: delivery ratio, p95 latency, MTTR p95 and unneeded reroutes per
    /// link-hour. ppo: ETX costs with the multipliers the PPO agents of --policy put on
    /// them (every node's agents act on their own links every 200 ms).
    #[arg(
        long,
        value_name = "cost|etx|predict|ppo[,...]",
        default_value = "cost"
    )]
    pub routing: String,
    /// The link-failure predictor for --routing predict: a model file written by
    /// `x0tta6bl4 twin train-predictor` (refused when its hash check fails).
    #[arg(long, value_name = "MODEL.json")]
    pub predictor: Option<PathBuf>,
    /// The PPO policy for --routing ppo: a file written by `x0tta6bl4 twin train-ppo`
    /// (refused when its hash check fails).
    #[arg(long, value_name = "POLICY.json")]
    pub policy: Option<PathBuf>,
}

/// `x0tta6bl4 twin train-predictor`.
#[derive(Debug, Args)]
pub struct TwinTrainPredictorArgs {
    /// Topology to train on (as `twin run --topology`).
    #[arg(long, value_name = "KIND[:params]", default_value = "grid:loss=0.05")]
    pub topology: String,
    /// Number of nodes of generated topologies.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub nodes: usize,
    /// Scenario whose iterations give the training data.
    #[arg(
        long,
        value_name = "NAME[:params]",
        default_value = "degrade-then-fail"
    )]
    pub scenario: String,
    /// Iterations sampled for training.
    #[arg(long, value_name = "K", default_value_t = 40)]
    pub iterations: usize,
    /// Further iterations (other draws) sampled to measure the model.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub eval_iterations: usize,
    /// FedAvg rounds (each node trains one epoch on its own links' samples per round).
    #[arg(long, value_name = "R", default_value_t = 30)]
    pub rounds: usize,
    /// Seed of the topology, the draws and the training.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// The threshold flags at most this share of the training samples whose link did
    /// not fail within 2 s: lower means fewer unneeded reroutes and later (fewer) early
    /// ones.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.01)]
    pub false_positive_rate: f64,
    /// Where to write the model (temporary file, synced, renamed).
    #[arg(long, value_name = "MODEL.json")]
    pub out: PathBuf,
    /// Print the training report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 twin train-ppo`.
#[derive(Debug, Args)]
pub struct TwinTrainPpoArgs {
    /// Topology to train on (as `twin run --topology`); repeat the flag to train over
    /// several, one episode each in turn. Generated topologies are drawn with --seed
    /// plus their position in the list.
    #[arg(long, value_name = "KIND[:params]", default_values_t = [
        "grid:loss=0.05".to_owned(),
        "random-geometric:loss=0.05".to_owned(),
    ])]
    pub topology: Vec<String>,
    /// Number of nodes of generated topologies.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub nodes: usize,
    /// Scenario of every episode.
    #[arg(
        long,
        value_name = "NAME[:params]",
        default_value = "degrade-then-fail"
    )]
    pub scenario: String,
    /// Episodes (one iteration each, then one FedAvg round of the nodes' PPO updates).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub episodes: usize,
    /// Seed of the topologies, the draws, the initial policy and the training.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// AdamW learning rate of each node's PPO update.
    #[arg(long, value_name = "LR", default_value_t = 1e-2)]
    pub lr: f64,
    /// Continue training this policy instead of a fresh one.
    #[arg(long, value_name = "POLICY.json")]
    pub resume: Option<PathBuf>,
    /// Where to write the policy (temporary file, synced, renamed).
    #[arg(long, value_name = "POLICY.json")]
    pub out: PathBuf,
    /// Print one JSON object per episode, then the summary, instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 twin merge`.
#[derive(Debug, Args)]
pub struct TwinMergeArgs {
    /// The part files written by `twin run --shard I/N --out PART.json`, one per shard,
    /// in any order.
    #[arg(value_name = "PART.json", required = true)]
    pub parts: Vec<PathBuf>,
    /// Print one JSON object with the results (the keys of `twin run --json`).
    #[arg(long)]
    pub json: bool,
    /// Leave the wall-clock figures out of --json (see `twin run --help`).
    #[arg(long)]
    pub no_wall_clock: bool,
    /// Also write the JSON report to FILE (temporary file, synced, renamed).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Write every outage sample as CSV (iteration,source,destination,outage_ms).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the MTTR distribution (histogram and CDF) as an SVG plot.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the results in Prometheus text format (x0tta6bl4_twin_* metrics).
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
    /// Wait up to this many seconds for part files that do not exist yet (a merge job
    /// started next to its shards); 0: do not wait.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait_s: u64,
}

/// `x0tta6bl4 twin fuzz`.
#[derive(Debug, Args)]
pub struct TwinFuzzArgs {
    /// Number of seeds to run.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub seeds: u64,
    /// First seed (CI passes one derived from the commit hash).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object {seeds, first_seed, failed: [...]} instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 twin tune`.
#[derive(Debug, Args)]
pub struct TwinTuneArgs {
    /// Loss on every link, as a percentage (5%) or a fraction (0.05).
    #[arg(long, value_name = "RATE", default_value = "5%")]
    pub loss: String,
    /// Topology to tune on (see `twin run --help`).
    #[arg(long, value_name = "KIND[:params]", default_value = "grid")]
    pub topology: String,
    /// Number of nodes of generated topologies.
    #[arg(long, value_name = "N", default_value_t = 36)]
    pub nodes: usize,
    /// Node-failure iterations per timer combination.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub iterations: usize,
    /// Simulated seconds of fault-free running over which false alarms are counted.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub soak_s: u64,
    /// Probe intervals to try, comma-separated.
    #[arg(
        long,
        value_name = "MS,...",
        value_delimiter = ',',
        default_value = "20,50,100,200"
    )]
    pub intervals_ms: Vec<u64>,
    /// Miss thresholds to try, comma-separated.
    #[arg(
        long,
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "2,3,4,6,8"
    )]
    pub misses: Vec<u32>,
    /// Suspicion paces to try, comma-separated (protocol.suspect_probe_interval_ms; 0 is
    /// off, the default): e.g. 0,8,10 compares suspicion with the silence rule alone.
    #[arg(
        long,
        value_name = "MS,...",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub suspect_ms: Vec<u64>,
    /// Seed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object {loss, rows, recommended} instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 twin topology`.
#[derive(Debug, Args)]
pub struct TwinTopologyArgs {
    /// Topology (see `twin run --help`).
    #[arg(long, value_name = "KIND[:params]", default_value = "erdos-renyi")]
    pub topology: String,
    /// Number of nodes of generated topologies.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub nodes: usize,
    /// Seed of generated topologies.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Print {"nodes": [...], "links": [{"source", "target", "latency_ms", "loss"}]}
    /// instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's TOML configuration file.
    ///
    /// Keys: listen, api_listen, peers, standalone, [identity] dir, [protocol] timers.
    /// `examples/node.toml` shows and explains every key.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Only load and validate the configuration, print "ok" and exit.
    ///
    /// Checks the TOML syntax, every key and every value (the protocol settings
    /// included) and the authorization policy file it names (`[identity] policy`: it must
    /// exist and be valid); reads no SVID and binds no socket. Exits 2 on a bad config.
    #[arg(long)]
    pub check_config: bool,
    /// Log filter, e.g. `info` or `x0tta6bl4_node=debug,info` (default: $RUST_LOG, else
    /// `info,quinn=warn`).
    ///
    /// Uses the tracing-subscriber EnvFilter syntax. When given, it overrides $RUST_LOG.
    /// Logs go to standard error.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Enable fault injection (for the chaos lab): delay, jitter and loss on frames sent.
    ///
    /// FILE is TOML with delay_ms, jitter_ms, loss and neighbours (all optional), re-read
    /// every 100 ms; a missing file means no fault. Never use it in production.
    #[arg(long, value_name = "FILE")]
    pub chaos: Option<PathBuf>,
}

/// `x0tta6bl4 ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new trust-domain CA in a directory.
    ///
    /// Writes the CA certificate, its private key and the trust bundle into DIR
    /// (created if missing). Refuses to overwrite an existing CA.
    #[command(after_help = EXIT_CODES)]
    Init(CaInitArgs),
    /// Issue an X.509-SVID for a node: spiffe://TRUST-DOMAIN/node/NAME.
    ///
    /// Writes svid.pem (the certificate), svid_key.pem (its private key) and bundle.pem
    /// (the trust bundle) into the output directory, which a node config names as
    /// `[identity] dir`.
    #[command(after_help = EXIT_CODES)]
    Issue(CaIssueArgs),
    /// Show a certificate's SPIFFE ID, validity, key type and issuer.
    ///
    /// With --bundle, also check whether that trust bundle verifies it now (as a leaf
    /// SVID, or as one of the bundle's CAs); exits 1 when it does not.
    #[command(after_help = EXIT_CODES)]
    Inspect(CaInspectArgs),
    /// Create a join token for a node, one-time or `--reusable` (printed once; only its hash is stored).
    ///
    /// The token (x0t1.SECRET.CA_SHA256) also pins the CA certificate, so a joining node
    /// needs nothing else: `x0tta6bl4 ca join --server ADDR --token TOKEN --out DIR`.
    #[command(after_help = EXIT_CODES)]
    Token(CaTokenArgs),
    /// Run the CA as a service: nodes join with a token and renew with their SVID.
    ///
    /// TLS 1.3 over TCP; issues short-lived SVIDs (--svid-ttl, default 1h). State
    /// (tokens) lives in DIR and survives restarts. Runs until Ctrl-C or SIGTERM.
    #[command(after_help = EXIT_CODES)]
    Serve(CaServeArgs),
    /// Serve the SPIFFE Workload API on a unix socket, backed by this CA.
    ///
    /// For nodes with `[identity] source = "workload-api"` where no SPIRE agent runs:
    /// every caller of `FetchX509SVID` (with the `workload.spiffe.io: true` header, as
    /// the specification requires) receives an SVID of node NAME, its key, the trust
    /// bundle and the --federate bundles; the SVID is re-issued at half its life and
    /// streamed to every caller. Runs until Ctrl-C or SIGTERM.
    #[command(name = "workload-api", after_help = EXIT_CODES)]
    WorkloadApi(CaWorkloadApiArgs),
    /// Join the trust domain: redeem a token at a CA service and write the SVID.
    ///
    /// Writes svid.pem, svid_key.pem (generated here; the key never leaves this host)
    /// and bundle.pem into --out, which a node config names as `[identity] dir`.
    #[command(after_help = EXIT_CODES)]
    Join(CaJoinArgs),
    /// Revoke a node: a CA-signed revocation that floods through the mesh.
    ///
    /// Records the name in DIR/revocations.toml (the CA service then issues it nothing)
    /// and prints the revocation as JSON. With --api, posts it to that node, which
    /// verifies it, drops its link to the node, refuses its reconnects and floods it to
    /// its neighbours; every node does the same.
    #[command(after_help = EXIT_CODES)]
    Revoke(CaRevokeArgs),
    /// Rotate the CA root in three steps, without taking the mesh down.
    ///
    /// No flag: prepare (a new root joins bundle.pem; the old one still signs).
    /// --activate, once every node renewed: the new root signs, both are trusted.
    /// --retire, once every node renewed again: the old root leaves the bundle.
    /// Nodes receive the bundle with each renewal; `ca serve` follows without restart.
    #[command(name = "rotate-root", after_help = EXIT_CODES)]
    RotateRoot(CaRotateRootArgs),
}

/// `x0tta6bl4 ca rotate-root`.
#[derive(Debug, Args)]
pub struct CaRotateRootArgs {
    /// The CA directory made by `x0tta6bl4 ca init`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Step 2: sign with the prepared root from now on.
    #[arg(long)]
    pub activate: bool,
    /// Step 3: drop the former root from the bundle.
    #[arg(long)]
    pub retire: bool,
}

/// `x0tta6bl4 ca revoke`.
#[derive(Debug, Args)]
pub struct CaRevokeArgs {
    /// The CA directory made by `x0tta6bl4 ca init`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The node to revoke.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// A node's HTTP API to hand the revocation to, e.g. `http://127.0.0.1:8001`.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// An SVID directory (svid.pem, svid_key.pem, bundle.pem) for a node whose API
    /// requires mutual TLS (`[identity] api_mtls = true`): the request presents this SVID
    /// over HTTPS and the policy's `api` rules decide (e.g. a directory from `ca issue`).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_SVID")]
    pub svid: Option<PathBuf>,
}

/// `x0tta6bl4 ca token`.
#[derive(Debug, Args)]
pub struct CaTokenArgs {
    /// The CA directory made by `x0tta6bl4 ca init`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The node name the token admits (1 to 64 characters of A-Z a-z 0-9 . _ -).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// How long the token can be redeemed, e.g. `10m`, `1h`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Redeemable again until it expires, not once: for a Kubernetes pod's join-token
    /// Secret, so the pod re-enrols whenever it is recreated with an empty identity
    /// directory. Whoever reads it can enrol as NAME until --ttl runs out; a revoked NAME
    /// is still refused.
    #[arg(long)]
    pub reusable: bool,
}

/// `x0tta6bl4 ca serve`.
#[derive(Debug, Args)]
pub struct CaServeArgs {
    /// The CA directory made by `x0tta6bl4 ca init`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// TCP address to listen on, e.g. `0.0.0.0:8443`.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Lifetime of the SVIDs issued, e.g. `1h`, `30m`.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub svid_ttl: Duration,
}

/// `x0tta6bl4 ca workload-api`.
#[derive(Debug, Args)]
pub struct CaWorkloadApiArgs {
    /// The CA directory made by `x0tta6bl4 ca init`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The unix socket to serve on (a stale socket file is replaced), e.g.
    /// `/run/x0tta6bl4/workload.sock`; nodes name it `unix:///run/x0tta6bl4/workload.sock`.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// The node name of the SVIDs handed out (spiffe://TD/node/NAME).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Lifetime of each SVID, e.g. `1h`, `30m`, `10s`; re-issued at half of it.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// A federated trust domain's bundle to hand out, TRUST_DOMAIN=PEM_FILE (repeat for
    /// several), e.g. `partner.example=partner-bundle.pem`.
    #[arg(long = "federate", value_name = "TD=FILE")]
    pub federate: Vec<String>,
}

/// `x0tta6bl4 ca join`.
#[derive(Debug, Args)]
pub struct CaJoinArgs {
    /// The CA service's address, HOST:PORT (its `ca serve --listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: String,
    /// The token printed by `x0tta6bl4 ca token`.
    #[arg(
        long,
        value_name = "TOKEN",
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the token from this file instead (e.g. a mounted Kubernetes Secret), so it
    /// does not appear in the process list.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where to write svid.pem, svid_key.pem and bundle.pem.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `x0tta6bl4 ca inspect`.
#[derive(Debug, Args)]
pub struct CaInspectArgs {
    /// The PEM certificate file, e.g. DIR/svid.pem (leaf first, then intermediates).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// A CA or SVID directory holding bundle.pem (or a bundle file) to verify against.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `x0tta6bl4 ca init`.
#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// The trust domain name, e.g. `example.org` (lowercase a-z, 0-9, '.', '-', '_').
    #[arg(long, value_name = "TD")]
    pub trust_domain: String,
    /// The directory to create the CA in.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// `x0tta6bl4 ca issue`.
#[derive(Debug, Args)]
pub struct CaIssueArgs {
    /// The CA directory made by `x0tta6bl4 ca init`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The node name (1 to 64 characters of A-Z a-z 0-9 . _ -).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Where to write svid.pem, svid_key.pem and bundle.pem (default: DIR/NAME).
    #[arg(long, value_name = "DIR2")]
    pub out: Option<PathBuf>,
    /// How long the SVID is valid, e.g. `24h`, `90m`, `7d`, `3600s`.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// `x0tta6bl4 status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's HTTP API, e.g. `http://127.0.0.1:8001` (its `api_listen`).
    #[arg(
        long,
        value_name = "URL",
        env = "X0TTA6BL4_API",
        default_value = "http://127.0.0.1:8001"
    )]
    pub api: String,
    /// An SVID directory (svid.pem, svid_key.pem, bundle.pem) for a node whose API
    /// requires mutual TLS (`[identity] api_mtls = true`): the request presents this SVID
    /// over HTTPS and the policy's `api` rules decide (e.g. a directory from `ca issue`).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_SVID")]
    pub svid: Option<PathBuf>,
    /// Print one JSON object {"status", "peers", "routes"} instead of tables.
    #[arg(long)]
    pub json: bool,
    /// First wait, up to 30 s, until the node answers and routes to at least N other
    /// nodes (for scripts that query nodes they just started); exit 1 if it does not.
    #[arg(long, value_name = "N")]
    pub wait_routes: Option<u64>,
}

/// `x0tta6bl4 send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The HTTP API of the node that sends, e.g. `http://127.0.0.1:8001`.
    #[arg(
        long,
        value_name = "URL",
        env = "X0TTA6BL4_API",
        default_value = "http://127.0.0.1:8001"
    )]
    pub api: String,
    /// An SVID directory (svid.pem, svid_key.pem, bundle.pem) for a node whose API
    /// requires mutual TLS (`[identity] api_mtls = true`): the request presents this SVID
    /// over HTTPS and the policy's `api` rules decide (e.g. a directory from `ca issue`).
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_SVID")]
    pub svid: Option<PathBuf>,
    /// The destination node's name.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// The message text.
    #[arg(value_name = "TEXT")]
    pub text: String,
}

/// `x0tta6bl4 demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of node processes to start (at least 2).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub nodes: usize,
    /// Number of nodes to kill with SIGKILL (the survivors must stay connected).
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub kill: usize,
    /// Seed of the topology and of the choice of victims (default: drawn and printed).
    ///
    /// The same seed gives the same topology and the same victims (both drawn before any
    /// node starts), so a run that does not heal can be replayed; the measured times vary
    /// with the machine.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Mean number of links per node in the random topology (at least 2).
    #[arg(long, value_name = "D", default_value_t = 3.0)]
    pub degree: f64,
    /// Print one JSON object with the results instead of a summary (no progress display).
    ///
    /// Keys: nodes, killed, converged_ms, healed, mttr_ms {mean, p50, p95, p99, max,
    /// samples}, unreachable_pairs_after_heal, and extra details.
    #[arg(long)]
    pub json: bool,
    /// Keep the temporary directory (CA, SVIDs, configs, node logs) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
}

/// Parse `24h`, `90m`, `7d`, `3600s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let hint = "write a whole number followed by s, m, h or d, e.g. 24h";
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: {hint}"))?;
    let unit_s: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {text:?}: {hint}")),
    };
    let seconds = value
        .checked_mul(unit_s)
        .ok_or_else(|| format!("{text:?} is too long: {hint}"))?;
    if seconds == 0 {
        return Err(format!("{text:?} is zero: {hint}"));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3_600)));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn demo_defaults() {
        let cli = Cli::try_parse_from(["x0tta6bl4", "demo"]).unwrap();
        let Command::Demo(demo) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(
            (demo.nodes, demo.kill, demo.seed, demo.json),
            (10, 2, None, false)
        );
    }
}
