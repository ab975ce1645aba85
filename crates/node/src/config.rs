//! The node's TOML configuration (`examples/node.toml` shows and explains every key).
//!
//! Parse, then validate: [`load_config`] reads the file with serde (unknown keys are
//! refused), resolves relative paths against the file's directory and then checks values
//! that serde cannot (the protocol's own [`x0tta6bl4_proto::Config::validate`] included).
//! Every error names the file, the key and, when it can be found, the line.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Static peers kept at once (a bound on the dial list, like proto's peer table).
pub const PEERS_MAX: usize = 1024;

/// The whole configuration of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// UDP address of the QUIC endpoint for mesh links.
    pub listen: SocketAddr,
    /// TCP address of the HTTP API (health, metrics, `/api/v1`).
    pub api_listen: SocketAddr,
    /// Static peers (`IP:PORT` or `HOST:PORT`) this node keeps a link to: dialed at start
    /// and redialed with backoff whenever the link is lost. Host names are resolved again
    /// as their answers expire (`peer_names`).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Where other nodes can reach this node's QUIC endpoint (`IP:PORT`, at most 8),
    /// flooded to the whole mesh in a signed address record so that a node redialing us
    /// after we moved (a recreated pod) finds us without DNS. Empty (the default): the
    /// `listen` address when it names an IP, else the local address of each link (a
    /// pod's IP) with the `listen` port.
    #[serde(default)]
    pub advertise: Vec<SocketAddr>,
    /// Ready without any neighbour (a single-node mesh).
    #[serde(default)]
    pub standalone: bool,
    /// Where the node's SVID lives.
    pub identity: IdentityConfig,
    /// LAN discovery beacons.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// The HTTP API's limits (`[api]`).
    #[serde(default)]
    pub api: ApiConfig,
    /// How frames travel between neighbours (`[transport]`).
    #[serde(default)]
    pub transport: TransportSettings,
    /// The protocol core's settings (`[protocol]` and `[protocol.healing]`).
    #[serde(default)]
    pub protocol: x0tta6bl4_proto::Config,
    /// Probe flows started with the node (`[flows]`), as `POST /api/v1/flows` starts
    /// them: the MTTR metrics of a deployment then have data from the first second and
    /// after every restart.
    #[serde(default)]
    pub flows: FlowsConfig,
    /// The link-failure predictor (`[predictor]`, docs/prediction.md).
    #[serde(default)]
    pub predictor: crate::predictor::PredictorConfig,
    /// Fault injection (`x0tta6bl4 node --chaos FILE`, for the chaos lab): the file that
    /// sets delay, jitter and loss on frames sent (see `chaos`). Not a TOML key.
    #[serde(skip)]
    pub chaos: Option<std::path::PathBuf>,
    /// The file this configuration was read from (set by [`load_config`] and
    /// [`NodeConfig::from_toml`]): a reload (`SIGHUP`, `POST /api/v1/config/reload`) reads
    /// it again. Not a TOML key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[identity]`: the node's X.509-SVID.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Directory holding `svid.pem`, `svid_key.pem` and `bundle.pem`; a relative path
    /// is resolved against the configuration file's directory. With `source =
    /// "workload-api"` it holds only the node's state (`revocations.jsonl`).
    pub dir: PathBuf,
    /// Where the SVID comes from: `files` (`dir`, renewed by `ca_server`) or
    /// `workload-api` (a SPIFFE Workload API endpoint, which also renews it).
    #[serde(default)]
    pub source: IdentitySource,
    /// The Workload API endpoint with `source = "workload-api"`: `unix:///PATH` or
    /// `unix:PATH`. Default: the `SPIFFE_ENDPOINT_SOCKET` environment variable.
    #[serde(default)]
    pub workload_api_socket: Option<String>,
    /// Federated trust domains: trust domain name → PEM bundle file of its CAs
    /// (relative to the configuration file's directory). Peers of such a domain are
    /// verified against its bundle; the policy decides what they may do.
    #[serde(default)]
    pub federation: BTreeMap<String, PathBuf>,
    /// Key-exchange groups links may use: `hybrid` (X25519MLKEM768, X25519 fallback),
    /// `classical-allowed` (also P-256 and P-384) or `strict-pq` (post-quantum only).
    #[serde(default)]
    pub kx: x0tta6bl4_identity::KxMode,
    /// Authorization policy file (docs/identity.md); relative to the configuration
    /// file's directory. Without it: allow the node's own trust domain, deny the rest.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// The CA service (`x0tta6bl4 ca serve`) that renews the SVID at half its life, as
    /// IP:PORT or HOST:PORT (a Kubernetes Service name; resolved at each renewal); the
    /// renewed files replace those in `dir`. Without it the SVID is never renewed.
    #[serde(default)]
    pub ca_server: Option<String>,
    /// Serve the HTTP API over TLS with our SVID and identify callers by their client
    /// SVID (the policy's `api` rules then decide per endpoint).
    #[serde(default)]
    pub api_mtls: bool,
    /// With `api_mtls`: `/health/*` and `/metrics` answer callers without a certificate.
    #[serde(default = "default_true")]
    pub api_open: bool,
}

/// `[identity] source`: where the node's SVID comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    /// `svid.pem`, `svid_key.pem` and `bundle.pem` in `[identity] dir`.
    #[default]
    Files,
    /// The SPIFFE Workload API (`FetchX509SVID` over a unix socket).
    WorkloadApi,
}

fn default_true() -> bool {
    true
}

/// `[flows]`: probe flows this node sends from its start (docs/api.md, "Probe flows").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Node names to send a probe flow to; this node's own name is skipped, so every
    /// node of a mesh may share one list. Empty: no flows until the API starts some.
    pub targets: Vec<x0tta6bl4_proto::NodeName>,
    /// Milliseconds between two probes of a flow (1 to 60000).
    pub interval_ms: u64,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            targets: Vec::new(),
            interval_ms: 100,
        }
    }
}

/// Largest `[flows] interval_ms` (and the API's `interval_ms`).
pub(crate) const FLOW_INTERVAL_MS_MAX: u64 = 60_000;

impl FlowsConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=FLOW_INTERVAL_MS_MAX).contains(&self.interval_ms) {
            let message = format!(
                "{}: use 1 to {FLOW_INTERVAL_MS_MAX} (100 sees a 250 ms outage)",
                self.interval_ms
            );
            return Err(("flows.interval_ms".into(), message));
        }
        let max = crate::driver::FLOW_TARGETS_MAX;
        if self.targets.len() > max {
            let message = format!(
                "{} targets: at most {max} flows per node",
                self.targets.len()
            );
            return Err(("flows.targets".into(), message));
        }
        Ok(())
    }
}

/// `[transport]`: how frames travel between neighbours.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSettings {
    /// Which path a link's probes and their answers take (`probe_path`).
    pub probe_path: ProbePath,
    /// UDP port of the probe socket (on the `listen` IP), 0 for one of the kernel's
    /// choosing: each link learns it from the peer's offer, so only a firewall needs it
    /// fixed.
    pub probe_port: u16,
}

/// `[transport] probe_path`: the path of probes and probe answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbePath {
    /// Plain UDP datagrams on a socket of their own, authenticated with keys exported
    /// from each link's TLS session (`probe_path`); a link whose peer does not offer
    /// the path keeps probing over QUIC.
    #[default]
    Udp,
    /// QUIC datagrams on the link's connection, like every other frame.
    Quic,
}

/// `[discovery]`: LAN beacons over UDP broadcast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Send and listen for beacons.
    pub enabled: bool,
    /// UDP port of the beacons, shared by every node on a host (SO_REUSEPORT).
    pub port: u16,
    /// Where beacons are sent (`127.255.255.255` reaches nodes on the loopback).
    pub broadcast: Ipv4Addr,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: false,
            port: 7946,
            broadcast: Ipv4Addr::BROADCAST,
        }
    }
}

/// `[api]`: limits of the HTTP API, so that slow or stalled clients cannot exhaust the
/// node's file descriptors or keep others out (docs/api.md, "Limits").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Connections open at once; a connection over the cap is closed at accept (and
    /// the connection idle the longest, idle for at least a second, is closed to make
    /// room for a later one).
    pub connections_max: usize,
    /// Connections accepted per second at most (bursts of up to this many); beyond,
    /// new connections wait in the kernel's listen queue, so a reconnect storm costs
    /// the node a bounded share of its CPU.
    pub accepts_per_second: u32,
    /// Time for a client to send a request head (also closes idle keep-alive
    /// connections), in milliseconds.
    pub header_timeout_ms: u64,
    /// Time to receive and answer one request, body included, in milliseconds (`408`).
    pub request_timeout_ms: u64,
}

/// Largest `[api] connections_max` (each connection holds a file descriptor).
pub const API_CONNECTIONS_MAX: usize = 16_384;
/// Largest `[api] accepts_per_second`.
pub const API_ACCEPTS_PER_SECOND_MAX: u32 = 100_000;
/// Range of the `[api]` timeouts, in milliseconds.
const API_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            connections_max: 256,
            accepts_per_second: 1000,
            header_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl ApiConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=API_CONNECTIONS_MAX).contains(&self.connections_max) {
            let message = format!(
                "{}: use 1 to {API_CONNECTIONS_MAX} (the default, 256, suits an operator API)",
                self.connections_max
            );
            return Err(("api.connections_max".into(), message));
        }
        if !(1..=API_ACCEPTS_PER_SECOND_MAX).contains(&self.accepts_per_second) {
            let message = format!(
                "{}: use 1 to {API_ACCEPTS_PER_SECOND_MAX} (the default, 1000, suits an \
                 operator API and its scrapers)",
                self.accepts_per_second
            );
            return Err(("api.accepts_per_second".into(), message));
        }
        let timeouts = [
            ("api.header_timeout_ms", self.header_timeout_ms),
            ("api.request_timeout_ms", self.request_timeout_ms),
        ];
        for (key, value) in timeouts {
            if !API_TIMEOUT_MS_RANGE.contains(&value) {
                let message = format!(
                    "{value}: use {} to {} ms",
                    API_TIMEOUT_MS_RANGE.start(),
                    API_TIMEOUT_MS_RANGE.end()
                );
                return Err((key.into(), message));
            }
        }
        Ok(())
    }
}

/// Why a configuration file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source} (check the path given to --config)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, a missing key or a value of the
    /// wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What is wrong, and what would be accepted.
        message: String,
    },
    /// A value parsed but cannot work.
    #[error("{}{}: `{key}`: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key, when found.
        line: Option<usize>,
        /// The dotted key, e.g. `protocol.probe_interval_ms`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Read, parse and validate the configuration file at `path`.
pub fn load_config(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    NodeConfig::from_toml(&text, path)
}

impl NodeConfig {
    /// Parse and validate `text`, the content of the file at `path` (used in error
    /// messages and to resolve relative paths).
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let mut config: NodeConfig =
            toml::from_str(text).map_err(|error| parse_error(text, path, &error))?;
        config.source = Some(path.to_owned());
        let base = path.parent().unwrap_or(Path::new(""));
        if config.identity.dir.is_relative() {
            config.identity.dir = base.join(&config.identity.dir);
        }
        if let Some(policy) = config.identity.policy.as_mut().filter(|p| p.is_relative()) {
            *policy = base.join(&*policy);
        }
        if let Some(model) = config.predictor.model.as_mut().filter(|p| p.is_relative()) {
            *model = base.join(&*model);
        }
        for bundle in config.identity.federation.values_mut() {
            if bundle.is_relative() {
                *bundle = base.join(&*bundle);
            }
        }
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                line: locate_key(text, &key),
                key,
                message,
            })?;
        Ok(config)
    }

    /// Check values serde accepted but the node cannot use; returns the dotted key and
    /// how to fix it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.peers.len() > PEERS_MAX {
            let message = format!(
                "{} peers listed: at most {PEERS_MAX} are kept",
                self.peers.len()
            );
            return Err(("peers".into(), message));
        }
        for peer in &self.peers {
            parse_peer(peer).map_err(|message| ("peers".to_owned(), message))?;
        }
        let max = x0tta6bl4_proto::wire::ADDRESSES_PER_RECORD_MAX;
        if self.advertise.len() > max {
            let message = format!(
                "{} addresses listed: at most {max} are advertised",
                self.advertise.len()
            );
            return Err(("advertise".into(), message));
        }
        if let Some(bad) = self
            .advertise
            .iter()
            .find(|a| a.port() == 0 || a.ip().is_unspecified())
        {
            let message = format!(
                "{bad} cannot be dialed: give the IP and port other nodes reach this node at \
                 (e.g. \"10.0.0.5:7000\"), or leave `advertise` out"
            );
            return Err(("advertise".into(), message));
        }
        self.validate_identity()?;
        self.api.validate()?;
        self.flows.validate()?;
        if self.discovery.enabled && self.discovery.port == 0 {
            let message = "port 0 cannot be shared by nodes: use a fixed port such as 7946";
            return Err(("discovery.port".into(), message.into()));
        }
        self.protocol.validate().map_err(|error| {
            (
                format!("protocol.{}", error.key),
                format!("{} = {}: {}", error.key, error.value, error.fix),
            )
        })
    }
}

impl NodeConfig {
    fn validate_identity(&self) -> Result<(), (String, String)> {
        let identity = &self.identity;
        x0tta6bl4_identity::parse_federation(&identity.federation)
            .map_err(|message| ("identity.federation".to_owned(), message))?;
        if identity.federation.len() > x0tta6bl4_identity::FEDERATED_DOMAINS_MAX {
            let message = format!(
                "{} trust domains: at most {} are supported",
                identity.federation.len(),
                x0tta6bl4_identity::FEDERATED_DOMAINS_MAX
            );
            return Err(("identity.federation".into(), message));
        }
        if let Some(socket) = &identity.workload_api_socket {
            crate::workload_api::socket_path(socket)
                .map_err(|message| ("identity.workload_api_socket".to_owned(), message))?;
        }
        if identity.source == IdentitySource::WorkloadApi && !identity.federation.is_empty() {
            let message = "with source = \"workload-api\" the federated bundles come from the \
                           Workload API: remove federation";
            return Err(("identity.federation".into(), message.into()));
        }
        if let Some(server) = &identity.ca_server {
            parse_peer(server).map_err(|message| ("identity.ca_server".to_owned(), message))?;
        }
        if identity.source == IdentitySource::WorkloadApi && identity.ca_server.is_some() {
            let message = "the Workload API renews the SVID: remove ca_server, or set \
                           source = \"files\"";
            return Err(("identity.ca_server".into(), message.into()));
        }
        Ok(())
    }
}

/// A static peer as written: a socket address or a `HOST:PORT` to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerAddr {
    /// An IP address and port.
    Resolved(SocketAddr),
    /// A host name and port, resolved (and retried) at run time.
    Host(String),
}

pub(crate) fn parse_peer(peer: &str) -> Result<PeerAddr, String> {
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return Ok(PeerAddr::Resolved(addr));
    }
    let valid_host = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    };
    match peer.rsplit_once(':') {
        Some((host, port)) if valid_host(host) && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(PeerAddr::Host(peer.to_owned()))
        }
        _ => Err(format!(
            "{peer:?} is not a peer address: use IP:PORT (\"127.0.0.1:7002\", \"[::1]:7002\") or HOST:PORT (\"node-b:7001\")"
        )),
    }
}

fn parse_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let (line, column) = line_column(text, offset);
    let table = table_at(text, offset);
    let prefix = if table.is_empty() {
        String::new()
    } else {
        format!("{table}.")
    };
    let mut message = error
        .message()
        .trim_end()
        .replacen("unknown field `", &format!("unknown key `{prefix}"), 1)
        .replacen("missing field `", &format!("missing key `{prefix}"), 1);
    // A value of the wrong type: serde names the type, not the key it was given for.
    if let Some(key) = error.span().and_then(|span| key_of_value(text, span.start)) {
        let key = format!("{prefix}{key}");
        let hint = value_hint(&message, &key);
        message = format!("`{key}`: {message}{hint}");
    }
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// The key whose value starts at byte `offset`: the `key =` on the value's line, or on
/// the nearest line above for a value that spans lines (an array). `None` when `offset`
/// is not in a value (a syntax error, an unknown or missing key).
fn key_of_value(text: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let name = match text[line_start..offset].split_once('=') {
        Some((name, _)) => name,
        // Inside a value that opened with `[` or `{` on a line above and is still open
        // at `offset` (not, e.g., an unknown key on the line after `peers = []`).
        None => {
            let line = text[..line_start]
                .lines()
                .rev()
                .find(|line| line.contains('=') || table_header(line).is_some())?;
            let (name, _) = line.split_once('=')?;
            let line_at = text[..line_start].rfind(line)?;
            let value = &text[line_at + name.len() + 1..offset];
            let depth = |open: char, close: char| {
                value.matches(open).count() as i64 - value.matches(close).count() as i64
            };
            if depth('[', ']') + depth('{', '}') <= 0 {
                return None;
            }
            name
        }
    };
    let name = name.trim().trim_matches('"');
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (!name.is_empty() && name.chars().all(plain) && table_header(name).is_none())
        .then(|| name.to_owned())
}

/// How to write a value of the type serde expected (`message` names it), with `key`.
fn value_hint(message: &str, key: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let example = if message.contains("expected socket address") {
        let port = if leaf.contains("api") { 8001 } else { 7001 };
        format!("a quoted IP:PORT, e.g. {leaf} = \"127.0.0.1:{port}\"")
    } else if message.contains("expected a boolean") {
        format!("true or false, e.g. {leaf} = true")
    } else if message.contains("expected a string") || message.contains("expected a path") {
        format!("a quoted string, e.g. {leaf} = \"...\"")
    } else if message.contains("expected a sequence") {
        format!("a list, e.g. {leaf} = [\"127.0.0.1:7002\"]")
    } else if message.contains("expected u") || message.contains("expected i") {
        format!("a whole number without quotes, e.g. {leaf} = 50")
    } else if message.contains("expected f") {
        format!("a number without quotes, e.g. {leaf} = 0.5")
    } else {
        return "; examples/node.toml shows every key with its type".to_owned();
    };
    format!("; write {example} (examples/node.toml shows every key)")
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The `[table]` header in force at byte `offset` (empty at the top level).
fn table_at(text: &str, offset: usize) -> String {
    let before = &text[..floor_char_boundary(text, offset)];
    // Lines before the one holding `offset`: an error on a header belongs to the parent.
    let complete = &before[..before.rfind('\n').unwrap_or(0)];
    complete
        .lines()
        .rev()
        .find_map(table_header)
        .unwrap_or_default()
}

fn table_header(line: &str) -> Option<String> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?.split(']').next()?;
    Some(inner.trim_matches(|c| c == '[' || c == ' ').to_owned())
}

/// 1-based line where the dotted `key` is set, for simple `key = value` files.
fn locate_key(text: &str, key: &str) -> Option<usize> {
    let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        if let Some(header) = table_header(line) {
            current = header;
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if current == table && name.trim() == leaf {
            return Some(index + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "listen = \"127.0.0.1:7001\"\napi_listen = \"127.0.0.1:8001\"\n[identity]\ndir = \"svid\"\n";

    #[test]
    fn minimal_file_gets_defaults_and_resolves_paths() {
        let config = NodeConfig::from_toml(MINIMAL, Path::new("/etc/x0/node.toml")).unwrap();
        assert_eq!(config.identity.dir, Path::new("/etc/x0/svid"));
        assert_eq!(config.protocol, x0tta6bl4_proto::Config::default());
        assert!(!config.discovery.enabled);
        assert!(config.peers.is_empty());
    }

    #[test]
    fn ca_server_takes_an_address_or_a_service_name() {
        for server in ["10.0.0.1:8443", "x0tta6bl4-ca.mesh.svc.cluster.local:8443"] {
            let text = format!("{MINIMAL}ca_server = \"{server}\"\n");
            let config = NodeConfig::from_toml(&text, Path::new("n.toml")).unwrap();
            assert_eq!(config.identity.ca_server.as_deref(), Some(server));
        }
        let text = format!("{MINIMAL}ca_server = \"x0tta6bl4-ca\"\n");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("ca_server"), "{error}");
    }

    #[test]
    fn unknown_key_names_file_line_and_table() {
        let text = format!("{MINIMAL}[protocol]\nprobe_interval_ms = 20\nprobe_intervall_ms = 5\n");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("n.toml:7:1: unknown key `protocol.probe_intervall_ms`"),
            "{error}"
        );
        assert!(error.contains("expected one of"), "{error}");
    }

    #[test]
    fn bad_values_are_located() {
        let text = MINIMAL.replace("127.0.0.1:7001", "localhost");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("n.toml:1:10:"), "{error}");
        let text = format!("{MINIMAL}[protocol]\nprobe_interval_ms = 1\n");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("n.toml:6: `protocol.probe_interval_ms`"),
            "{error}"
        );
        let text = format!("peers = [\"nowhere\"]\n{MINIMAL}");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("n.toml:1: `peers`") && error.contains("HOST:PORT"),
            "{error}"
        );
    }

    /// A value of the wrong type names the key (serde alone names only the type), the
    /// line and column of the value, and how to write it.
    #[test]
    fn wrong_types_name_the_key_and_a_fix() {
        let cases = [
            (
                MINIMAL.replace("\"127.0.0.1:8001\"", "8001"),
                "bad.toml:2:14: `api_listen`: invalid type: integer `8001`",
                "api_listen = \"127.0.0.1:8001\"",
            ),
            (
                MINIMAL.replace("\"127.0.0.1:7001\"", "7001"),
                "bad.toml:1:10: `listen`:",
                "listen = \"127.0.0.1:7001\"",
            ),
            (
                format!("standalone = \"yes\"\n{MINIMAL}"),
                "bad.toml:1:14: `standalone`:",
                "true or false",
            ),
            (
                format!("peers = \"127.0.0.1:7002\"\n{MINIMAL}"),
                "bad.toml:1:9: `peers`:",
                "a list",
            ),
            (
                format!("{MINIMAL}[protocol]\nprobe_interval_ms = \"50\"\n"),
                "bad.toml:6:21: `protocol.probe_interval_ms`:",
                "a whole number",
            ),
            (
                format!("{MINIMAL}api_mtls = 1\n"),
                "bad.toml:5:12: `identity.api_mtls`:",
                "true or false",
            ),
            (
                format!("peers = [\n  \"127.0.0.1:7002\",\n  7003,\n]\n{MINIMAL}"),
                "bad.toml:3:3: `peers`:",
                "a quoted string",
            ),
        ];
        // An unknown key after a one-line list is not blamed on the list.
        let text = format!("peers = []\nlisen = \"x\"\n{MINIMAL}");
        let error = NodeConfig::from_toml(&text, Path::new("bad.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("bad.toml:2:1: unknown key `lisen`"),
            "{error}"
        );
        for (text, start, hint) in cases {
            let error = NodeConfig::from_toml(&text, Path::new("bad.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(start), "{error}\n{text}");
            assert!(error.contains(hint), "{error}");
        }
    }

    #[test]
    fn api_limits_have_defaults_and_are_checked() {
        let config = NodeConfig::from_toml(MINIMAL, Path::new("n.toml")).unwrap();
        assert_eq!(config.api, ApiConfig::default());
        let text = format!("{MINIMAL}[api]\nconnections_max = 0\n");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("n.toml:6: `api.connections_max`"),
            "{error}"
        );
        let text = format!("{MINIMAL}[api]\naccepts_per_second = 0\n");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("n.toml:6: `api.accepts_per_second`: 0: use 1 to"),
            "{error}"
        );
        let text = format!("{MINIMAL}[api]\nheader_timeout_ms = 5\n");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`api.header_timeout_ms`: 5: use 100"),
            "{error}"
        );
    }

    #[test]
    fn missing_key_is_named() {
        let text = MINIMAL.replace("api_listen = \"127.0.0.1:8001\"\n", "");
        let error = NodeConfig::from_toml(&text, Path::new("n.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing key `api_listen`"), "{error}");
    }

    #[test]
    fn advertise_takes_dialable_addresses_only() {
        let path = Path::new("/etc/x0/node.toml");
        let ok = format!("advertise = [\"10.0.0.5:7001\", \"[fd00::5]:7001\"]\n{MINIMAL}");
        let config = NodeConfig::from_toml(&ok, path).unwrap();
        assert_eq!(config.advertise.len(), 2);
        for (bad, says) in [
            ("[\"0.0.0.0:7001\"]", "cannot be dialed"),
            ("[\"10.0.0.5:0\"]", "cannot be dialed"),
            ("[\"node-a:7001\"]", "advertise"),
            (
                "[\"10.0.0.1:1\",\"10.0.0.1:2\",\"10.0.0.1:3\",\"10.0.0.1:4\",\"10.0.0.1:5\",\
                 \"10.0.0.1:6\",\"10.0.0.1:7\",\"10.0.0.1:8\",\"10.0.0.1:9\"]",
                "at most 8",
            ),
        ] {
            let text = format!("advertise = {bad}\n{MINIMAL}");
            let error = NodeConfig::from_toml(&text, path).unwrap_err().to_string();
            assert!(
                error.contains("advertise") && error.contains(says),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn peers_accept_addresses_and_host_names() {
        assert_eq!(
            parse_peer("10.0.0.1:7001"),
            Ok(PeerAddr::Resolved("10.0.0.1:7001".parse().unwrap()))
        );
        assert_eq!(
            parse_peer("node-b:7001"),
            Ok(PeerAddr::Host("node-b:7001".into()))
        );
        assert!(parse_peer("node-b").is_err());
        assert!(parse_peer("node-b:0").is_err());
        assert!(parse_peer("a b:1").is_err());
    }
}
