//! The x0tta6bl4 node daemon: drives the sans-IO protocol core over QUIC with mutual
//! TLS, serves the HTTP API and Prometheus metrics.
//!
//! Key design decision: this crate makes no protocol decision. One task, the driver,
//! owns the [`x0tta6bl4_proto::Node`] and turns I/O into its inputs and its outputs into
//! I/O, in the call order documented on that type (as quinn's `ConnectionDriver` drives
//! quinn-proto). Everything else (connection readers, the beacon socket, the HTTP API)
//! talks to the driver through bounded queues and reads a snapshot it publishes, so the
//! daemon runs the same code the digital twin simulates. The HTTP API runs on a tokio
//! runtime and a thread of its own, so that a flood of API connections cannot delay
//! the driver's timers (probes, failure detection); `driver_timer_lateness_seconds`
//! measures how late they run.
//!
//! Link telemetry ([`telemetry`], docs/telemetry.md) samples each link once a second
//! from the driver's snapshot refresh (probe RTT and loss, quinn's path statistics and,
//! with the `ebpf` feature, kernel counters from the `ebpf` module); it only observes, so routing
//! is the same with or without it.
//!
//! Entry points: [`load_config`] then [`run`] (the `x0tta6bl4 node` command), or
//! [`NodeHandle::start`] / [`NodeHandle::shutdown`] to embed nodes (tests, the demo).
#![forbid(unsafe_code)]
#![deny(unused_must_use)]
#![warn(missing_docs)]

mod api;
pub mod api_serve;
pub mod api_tls;
pub mod chaos;
mod config;
mod dial_log;
mod discovery;
mod driver;
#[cfg(feature = "ebpf")]
pub mod ebpf;
mod grpc_authority;
mod metrics;
mod outage;
mod peer_names;
mod policy;
mod predictor;
pub mod probe_path;
pub mod reload;
mod renewal;
mod revocation_store;
mod state;
mod state_log;
pub mod telemetry;
mod transport;
pub mod workload_api;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use x0tta6bl4_identity::NodeIdentity;
use x0tta6bl4_proto::{Instant, NodeName, Stats};

pub use config::{
    load_config, ApiConfig, ConfigError, DiscoveryConfig, FlowsConfig, IdentityConfig,
    IdentitySource, NodeConfig, ProbePath, TransportSettings, API_CONNECTIONS_MAX, PEERS_MAX,
};
pub use metrics::PREFIX as METRICS_PREFIX;
pub use predictor::PredictorConfig;
pub use state::{
    MessageRecord, PeerView, RouteView, ARRIVALS_PER_SOURCE_MAX, FLOW_SOURCES_MAX, MESSAGES_MAX,
};

use config::{parse_peer, PeerAddr};
use driver::{Advertise, Driver, DriverParts};
use revocation_store::RevocationStore;
use state::{Counters, Shared, Snapshot};
use transport::{Input, LinkContext, LinkTls};

/// Frames, link events and beacons queued for the driver; frames beyond are dropped and
/// counted (`dropped_total{reason="input_queue_full"}`), link events wait.
const INPUT_QUEUE_MAX: usize = 8192;
/// API commands queued for the driver; beyond, the API answers 503.
const COMMAND_QUEUE_MAX: usize = 256;
/// How long shutdown waits for peers to acknowledge the connection close.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How long shutdown waits for HTTP requests in progress.
const API_DRAIN_WAIT: Duration = Duration::from_secs(2);
/// A socket the node could not bind.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The QUIC endpoint (`listen`).
    #[error("cannot bind QUIC endpoint on {addr}: {} (another node? change `listen`)", describe(.io))]
    Quic {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error (described in the message, so not a `source`).
        io: std::io::Error,
    },
    /// The HTTP API (`api_listen`).
    #[error("cannot bind HTTP API on {addr}: {} (another node? change `api_listen`)", describe(.io))]
    Api {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error (described in the message, so not a `source`).
        io: std::io::Error,
    },
    /// The discovery beacon socket (`discovery.port`).
    #[error("cannot bind discovery beacons on {addr}: {} (change `discovery.port` or disable discovery)", describe(.io))]
    Beacon {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error (described in the message, so not a `source`).
        io: std::io::Error,
    },
    /// The probe socket (`[transport] probe_path = "udp"`, on the QUIC endpoint's IP).
    #[error("cannot bind the probe socket on {addr}: {} (another node? change `[transport] probe_port`, or set `probe_path = \"quic\"` to probe over the links' QUIC connections)", describe(.io))]
    ProbePath {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error (described in the message, so not a `source`).
        io: std::io::Error,
    },
}

/// Marks a start failure caused by the configuration or the files it names (the node's
/// SVID, its federated bundles, the authorization policy), as opposed to the environment
/// (a port in use, an unreachable Workload API). Found in the error chain with
/// `anyhow::Error::downcast_ref`; `x0tta6bl4 node` exits 2 for these.
#[derive(Debug, Clone)]
pub struct ConfigProblem(pub String);

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn describe(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => error.to_string(),
    }
}

/// The node's identity at start: from `[identity] dir` (with the federated bundles of
/// `[identity] federation`), or the first answer of the Workload API, whose open stream
/// is returned to follow its updates.
async fn initial_identity(
    config: &IdentityConfig,
) -> anyhow::Result<(NodeIdentity, Option<workload_api::WorkloadClient>)> {
    let dir = &config.dir;
    if config.source == config::IdentitySource::WorkloadApi {
        let endpoint = workload_api::endpoint(config.workload_api_socket.as_deref())
            .map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the state directory {} (set [identity] dir)",
                dir.display()
            )
        })?;
        let mut client = workload_api::WorkloadClient::connect(&endpoint).await?;
        let first = tokio::time::timeout(workload_api::FETCH_TIMEOUT, client.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "SPIFFE Workload API at {endpoint}: no SVID within {:?}",
                    workload_api::FETCH_TIMEOUT
                )
            })??
            .with_context(|| {
                format!("SPIFFE Workload API at {endpoint}: the stream closed before any SVID")
            })?;
        let identity = workload_api::identity_of(&first, dir, &endpoint)?;
        return Ok((identity, Some(client)));
    }
    let identity = NodeIdentity::load(dir).with_context(|| {
        ConfigProblem(format!(
            "cannot load the node identity from {} (set [identity] dir)",
            dir.display()
        ))
    })?;
    let domains =
        x0tta6bl4_identity::parse_federation(&config.federation).map_err(anyhow::Error::msg)?;
    let invalid_bundle =
        || ConfigProblem("invalid federated trust bundle (set [identity] federation)".into());
    let federated =
        x0tta6bl4_identity::FederatedBundles::load(&domains).with_context(invalid_bundle)?;
    let identity = identity
        .with_federation(&federated)
        .with_context(invalid_bundle)?;
    Ok((identity, None))
}

/// A running node.
pub struct NodeHandle {
    name: NodeName,
    quic_addr: SocketAddr,
    probe_addr: Option<SocketAddr>,
    api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    link_features: Arc<telemetry::Published>,
}

impl NodeHandle {
    /// Load the identity, bind every socket and start the node. Binding errors come back
    /// here, before anything runs.
    pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
        let (identity, workload) = initial_identity(&config.identity).await?;
        let tls = Arc::new(LinkTls::new(
            identity.clone(),
            config.identity.kx,
            config.protocol.handshake_initial_rtt(),
        ));
        tls.refill();
        let bindings = x0tta6bl4_identity::NameBindings::new(identity.spiffe_id());
        let (authenticator, signer) = identity.authenticator_with_bindings(bindings.clone());
        let renewal_tls = tls.clone();
        let (endpoint, quic_addr) = transport::bind_endpoint(&tls, config.listen)?;
        let probe_paths = match config.transport.probe_path {
            config::ProbePath::Udp => {
                let addr = SocketAddr::new(quic_addr.ip(), config.transport.probe_port);
                let paths = probe_path::ProbePaths::bind(addr, identity.name().clone())
                    .map_err(|io| BindError::ProbePath { addr, io })?;
                Some(paths)
            }
            config::ProbePath::Quic => None,
        };
        let probe_addr = probe_paths.as_ref().and_then(|p| p.local_addr().ok());
        let sockets = Sockets::bind(&config).await?;
        let api_addr = sockets.api.local_addr().context("HTTP API address")?;
        let name = identity.name().clone();
        let policy = policy::NodePolicy::load(
            config.identity.policy.as_deref(),
            identity.trust_domain(),
            bindings,
        )
        .context(ConfigProblem(
            "invalid authorization policy (set [identity] policy)".into(),
        ))?;
        let policy = Arc::new(policy);
        let (revocations, kept_revocations) = RevocationStore::open(identity.dir())
            .map_err(anyhow::Error::msg)
            .context(ConfigProblem(
                "cannot read the node's revocations (check the permissions of the identity \
                 directory; a file that is not this node's revocations must be moved away)"
                    .into(),
            ))?;
        let shared = Arc::new(shared_state(&identity, config.standalone, policy.clone()));
        // Link telemetry (docs/telemetry.md): observes only, never changes routing.
        let telemetry = telemetry::Telemetry::start();
        let link_features = telemetry.published();
        let mut metrics = metrics::Metrics::new(shared.clone());
        let collector = telemetry::TelemetryCollector(telemetry.published());
        metrics.registry.register_collector(Box::new(collector));
        let predictor_metrics = predictor::PredictorMetrics::register(&mut metrics.registry);
        let predictor = predictor::Predictor::start(&config.predictor, predictor_metrics);
        let metrics = Arc::new(metrics);
        let (inputs_tx, inputs_rx) = mpsc::channel(INPUT_QUEUE_MAX);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let (stop, stop_rx) = watch::channel(false);
        let next_id = Arc::new(AtomicU64::new(1));
        let context = LinkContext {
            inputs: inputs_tx.clone(),
            shared: shared.clone(),
            next_id,
            tls,
        };
        let broadcast = SocketAddr::from((config.discovery.broadcast, config.discovery.port));
        let mut driver = Driver::new(
            DriverParts {
                node: protocol_node(&config, &identity, authenticator)?,
                clock: std::time::Instant::now(),
                endpoint: endpoint.clone(),
                context: context.clone(),
                beacon: sockets.beacon.clone().map(|socket| (socket, broadcast)),
                route_seconds: metrics.route_computation_seconds.clone(),
                outage_seconds: metrics.flow_outage_seconds.clone(),
                timer_lateness: metrics.timer_lateness_seconds.clone(),
                chaos: config.chaos.clone().map(chaos::Chaos::watch),
                revocations,
                telemetry,
                probe_paths,
                predictor,
            },
            Advertise::new(&config.advertise, quic_addr),
        );
        let peers = static_peers(&config.peers, &inputs_tx, &stop_rx, &shared);
        driver.configure(
            &peers,
            sockets.beacon.as_ref().map(|_| quic_addr.port()),
            &kept_revocations,
        );
        // `[flows]`: this node's own name is skipped, so a mesh may share one list.
        let mut flow_targets: Vec<NodeName> = config
            .flows
            .targets
            .iter()
            .filter(|target| **target != *identity.name())
            .cloned()
            .collect();
        flow_targets.sort();
        flow_targets.dedup();
        if !flow_targets.is_empty() {
            tracing::info!(
                targets = flow_targets.len(),
                interval_ms = config.flows.interval_ms,
                "probe flows from [flows]"
            );
            driver.set_flows(flow_targets, config.flows.interval_ms);
        }

        // Every log line of this node's tasks carries its name (several nodes may share
        // a process: tests, the demo).
        let span = tracing::info_span!("node", name = %name);
        tokio::spawn(transport::accept_loop(endpoint.clone(), context).instrument(span.clone()));
        tokio::spawn(policy::watch(policy, stop_rx.clone()).instrument(span.clone()));
        if let Some(server) = config.identity.ca_server.clone() {
            let renewal = renewal::Renewal {
                server,
                dir: config.identity.dir.clone(),
                tls: renewal_tls,
                shared: shared.clone(),
                signer,
                federated: identity.federated().clone(),
            };
            tokio::spawn(renewal.run(stop_rx.clone()).instrument(span.clone()));
        } else if let Some(client) = workload {
            let shared = shared.clone();
            let source = format!("SPIFFE Workload API {}", client.endpoint());
            let apply = move |identity: NodeIdentity| {
                renewal::install(identity, &renewal_tls, &signer, &shared, &source);
            };
            let follow = workload_api::follow(
                client,
                identity.spiffe_id().clone(),
                config.identity.dir.clone(),
                apply,
                stop_rx.clone(),
            );
            tokio::spawn(follow.instrument(span.clone()));
        }
        if let Some(socket) = sockets.beacon {
            let receive = discovery::receive(socket, inputs_tx, shared.clone(), stop_rx.clone());
            tokio::spawn(receive.instrument(span.clone()));
        }
        let limits = api_serve::Limits {
            connections_max: config.api.connections_max,
            accepts_per_second: config.api.accepts_per_second,
            header_timeout: Duration::from_millis(config.api.header_timeout_ms),
            request_timeout: Duration::from_millis(config.api.request_timeout_ms),
        };
        let api_counters = metrics.api.clone();
        let reloader = Arc::new(reload::Reloader::new(
            &config,
            shared.clone(),
            commands_tx.clone(),
        ));
        tokio::spawn(reload::on_hangup(reloader.clone(), stop_rx.clone()).instrument(span.clone()));
        let router = api::router(api::ApiState {
            shared,
            reloader,
            commands: commands_tx,
            metrics,
            mtls: config.identity.api_mtls,
            open: config.identity.api_open,
            request_timeout: limits.request_timeout,
        });
        let api_tls = match config.identity.api_mtls {
            true => Some(identity.api_server_config()?),
            false => None,
        };
        let (api_listener, api_span) = (sockets.api, span.clone());
        let api = api_serve::spawn(
            api_listener,
            router,
            api_tls,
            limits,
            api_counters,
            stop_rx,
            api_span,
        )
        .context("cannot start the HTTP API's thread (check the process limits)")?;
        let supervisor = supervise(driver, inputs_rx, commands_rx, stop.clone(), endpoint, api);
        let task = tokio::spawn(supervisor.instrument(span.clone()));
        span.in_scope(|| {
            tracing::info!(%quic_addr, %api_addr, "node started");
            if !config.identity.api_mtls && !api_addr.ip().is_loopback() {
                tracing::warn!(
                    %api_addr,
                    "the HTTP API is not authenticated and listens beyond the loopback: \
                     anyone who reaches it can send messages, start probe flows and read \
                     the topology; set [identity] api_mtls = true (callers present an SVID) \
                     or bind api_listen to 127.0.0.1"
                );
            }
        });
        Ok(NodeHandle {
            name,
            quic_addr,
            probe_addr,
            api_addr,
            stop,
            task,
            link_features,
        })
    }

    /// Each link's latest telemetry feature vector (docs/telemetry.md), by neighbour.
    pub fn link_features(&self) -> Vec<telemetry::LinkFeatures> {
        self.link_features.features()
    }

    /// The node's name (from its SVID).
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// The bound QUIC address (useful when `listen` has port 0).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound probe socket (`[transport] probe_path = "udp"`), `None` on `"quic"`.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_addr
    }

    /// The bound HTTP API address (useful when `api_listen` has port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Stop the node: close every link (peers see the close at once), stop the API,
    /// and wait for the tasks to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("node task panicked")?
    }

    /// Wait until the node stops by itself (a fatal error), without asking it to.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("node task panicked")?
    }
}

/// Run a node until `shutdown` completes or the process gets SIGTERM or SIGINT.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut handle = NodeHandle::start(config).await?;
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        () = terminate_signal() => tracing::info!("termination signal received"),
        result = handle.stopped() => return result,
    }
    handle.shutdown().await
}

async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run the driver; when it ends, close the endpoint and wait for the API.
async fn supervise(
    driver: Driver,
    inputs: mpsc::Receiver<Input>,
    commands: mpsc::Receiver<driver::Command>,
    stop: watch::Sender<bool>,
    endpoint: quinn::Endpoint,
    api: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
) -> anyhow::Result<()> {
    let driver = tokio::spawn(
        driver
            .run(inputs, commands, stop.subscribe())
            .in_current_span(),
    );
    let driver_result = driver.await;
    let _ = stop.send(true);
    endpoint.close(transport::close::SHUTDOWN.into(), b"node shutting down");
    let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
    let api_result = tokio::time::timeout(API_DRAIN_WAIT, api).await;
    driver_result.context("driver task panicked")?;
    match api_result {
        Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        Ok(Ok(Err(error))) => Err(anyhow::Error::new(error).context("HTTP API failed")),
        Ok(Err(_)) => Err(anyhow::anyhow!("HTTP API thread panicked")),
    }
}

/// The sockets besides the QUIC endpoint.
struct Sockets {
    api: tokio::net::TcpListener,
    beacon: Option<Arc<tokio::net::UdpSocket>>,
}

impl Sockets {
    async fn bind(config: &NodeConfig) -> Result<Sockets, BindError> {
        let addr = config.api_listen;
        let api = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|io| BindError::Api { addr, io })?;
        let beacon = match config.discovery.enabled {
            true => Some(Arc::new(discovery::bind(config.discovery.port)?)),
            false => None,
        };
        Ok(Sockets { api, beacon })
    }
}

/// The protocol instance, seeded from the OS, its sequence numbers from the wall clock.
fn protocol_node(
    config: &NodeConfig,
    identity: &NodeIdentity,
    authenticator: Box<dyn x0tta6bl4_proto::Authenticator>,
) -> anyhow::Result<x0tta6bl4_proto::Node> {
    let mut protocol = config.protocol.clone();
    protocol.rng_seed = os_seed();
    protocol.initial_sequence = unix_millis();
    let name = identity.name().clone();
    x0tta6bl4_proto::Node::new(name, protocol, authenticator, Instant::ZERO)
        .context("invalid [protocol] settings")
}

fn shared_state(
    identity: &NodeIdentity,
    standalone: bool,
    policy: Arc<policy::NodePolicy>,
) -> Shared {
    let snapshot = Snapshot {
        neighbours: vec![],
        routes: vec![],
        lsdb_entries: 0,
        sequence: 0,
        stats: Stats::default(),
    };
    Shared {
        name: identity.name().clone(),
        spiffe_id: identity.spiffe_id().to_string(),
        standalone,
        started: std::time::Instant::now(),
        svid_not_after: Mutex::new(identity.not_after()),
        svid_issued: Mutex::new(renewal::issued(identity)),
        snapshot: RwLock::new(snapshot),
        messages: Mutex::default(),
        flows: Mutex::default(),
        app: Mutex::default(),
        app_arrived: tokio::sync::Notify::new(),
        counters: Counters::default(),
        policy,
    }
}

/// Static peers given as addresses; host names are resolved by tasks that hand each
/// address to the driver when it first appears, resolving again as each answer expires
/// until the node stops (`peer_names`).
fn static_peers(
    peers: &[String],
    inputs: &mpsc::Sender<Input>,
    stop: &watch::Receiver<bool>,
    shared: &Shared,
) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    let mut resolver = None;
    for peer in peers {
        match parse_peer(peer) {
            Ok(PeerAddr::Resolved(addr)) => addrs.push(addr),
            Ok(PeerAddr::Host(host)) => {
                let resolver = resolver
                    .get_or_insert_with(|| {
                        let counts = shared.counters.name_resolutions.clone();
                        Arc::new(peer_names::Resolver::system(counts))
                    })
                    .clone();
                tokio::spawn(peer_names::watch(
                    host,
                    resolver,
                    inputs.clone(),
                    stop.clone(),
                ));
            }
            Err(message) => tracing::warn!(%message, "static peer ignored"),
        }
    }
    addrs
}

/// A seed from OS randomness (std's hasher keys are drawn from it), time and pid.
fn os_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Wall-clock milliseconds since the Unix epoch: the initial advertisement sequence
/// number, so a restarted node outranks its former advertisements.
fn unix_millis() -> u64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX).max(1)
}
