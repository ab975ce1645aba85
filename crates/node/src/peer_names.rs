//! Static peers given by host name (`peers = ["seed-0.mesh.ns.svc:7000"]`): each name is
//! resolved when the node starts and again whenever its answer expires, for as long as
//! the node runs. Each address the name gains is handed to the driver, which dials it;
//! each address it loses is taken back, so it is not redialed.
//!
//! An answer is kept for its DNS TTL, clamped to [[`TTL_FLOOR`], [`TTL_CEILING`]]: a
//! record with TTL 0 is not asked for more than once a second, and one with a TTL of a
//! day is still checked every minute (a recreated pod comes back under the same name at
//! a new address; CoreDNS gives cluster records a 5 s TTL by default). The driver redials
//! the addresses the name had at its last resolution; since that resolution is never
//! older than its TTL, every redial after a TTL uses the name's current addresses.
//!
//! The order is the C library's with `hosts: files dns` (the image's `nsswitch.conf`):
//! `/etc/hosts` first, then DNS as `/etc/resolv.conf` configures it (name servers,
//! `search`, `ndots`, `timeout`, `attempts`). The system resolver (`getaddrinfo`) gives
//! no TTL, so DNS goes through hickory-resolver, which returns each answer's expiry. The
//! hosts file is read again whenever it changes (its size, modification time or inode,
//! checked at each resolution; and during a second after each change, as a rewrite
//! within the file system's timestamp granularity leaves them alike); an answer from it has no TTL and is checked again after
//! [`TTL_FLOOR`] (Kubernetes and the lab rewrite hosts files in place). Without a usable
//! `/etc/resolv.conf` (a container image without one, the lab), names come from the
//! hosts file alone.
//!
//! A failed resolution keeps the addresses the name had (a DNS outage does not take the
//! peer away) and is retried after [`RESOLVE_RETRY`]. Resolutions are counted in
//! `x0tta6bl4_peer_name_resolutions_total{result}` (`ok`, `not_found`: the name has no
//! address in the hosts file or DNS, `error`: DNS did not answer or failed).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Hosts, Name, TokioResolver};
use tokio::sync::{mpsc, watch};

use crate::state;
use crate::transport::Input;

/// The shortest time an answer is kept (a TTL of 0 or 1 s, and every hosts-file answer).
pub(crate) const TTL_FLOOR: Duration = Duration::from_secs(1);
/// The longest time an answer is kept, whatever its TTL.
pub(crate) const TTL_CEILING: Duration = Duration::from_secs(60);
/// How long after a failed resolution (no address, or DNS failing) the name is tried again.
pub(crate) const RESOLVE_RETRY: Duration = Duration::from_secs(1);
/// The system's hosts file.
const HOSTS_PATH: &str = "/etc/hosts";
/// The system's DNS configuration.
const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";

/// Resolutions of peer names by result (`x0tta6bl4_peer_name_resolutions_total`).
#[derive(Debug, Default)]
pub(crate) struct Resolutions {
    ok: AtomicU64,
    not_found: AtomicU64,
    error: AtomicU64,
}

impl Resolutions {
    /// `(result, count)` for each result label.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("ok", self.ok.load(Ordering::Relaxed)),
            ("not_found", self.not_found.load(Ordering::Relaxed)),
            ("error", self.error.load(Ordering::Relaxed)),
        ]
    }

    fn count(&self, result: &Result<Answer, Failure>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(Failure::NotFound(_)) => &self.not_found,
            Err(Failure::Error(_)) => &self.error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    HostsFile,
    Dns,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::HostsFile => "hosts file",
            Source::Dns => "dns",
        }
    }
}

/// The addresses a `HOST:PORT` has now, and how long they may be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub addrs: Vec<SocketAddr>,
    /// The record's TTL (the shortest of the answer's records), clamped to the floor and
    /// ceiling; for the hosts file, the floor.
    pub ttl: Duration,
    pub source: Source,
}

/// Why a name has no address now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The name is in neither the hosts file nor DNS.
    NotFound(String),
    /// DNS failed (timeout, server failure, no usable name server).
    Error(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound(why) | Failure::Error(why) => f.write_str(why),
        }
    }
}

/// The hosts file as last read, and what identified that version of it.
#[derive(Debug)]
struct HostsFile {
    path: PathBuf,
    /// (length, modification time, inode) of the version read; `None` if it was absent.
    version: Option<(u64, SystemTime, u64)>,
    /// When it was read: a file read within [`RACY_WINDOW`] of its modification time may
    /// have been modified again within the file system's timestamp granularity (the
    /// kernel's coarse clock: a few ms), keeping the same version, so it is read again.
    read_at: SystemTime,
    hosts: Hosts,
}

/// See [`HostsFile::read_at`].
const RACY_WINDOW: Duration = Duration::from_secs(1);

impl HostsFile {
    /// The file's entries, read again if it changed since the last call.
    fn current(&mut self) -> &Hosts {
        use std::os::unix::fs::MetadataExt;
        let version = std::fs::metadata(&self.path).ok().map(|m| {
            (
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.ino(),
            )
        });
        let racy = version.is_some_and(|(_, modified, _)| self.read_at < modified + RACY_WINDOW);
        if version != self.version || racy {
            self.read_at = SystemTime::now();
            let mut hosts = Hosts::default();
            if version.is_some() {
                match std::fs::File::open(&self.path).and_then(|f| hosts.read_hosts_conf(f)) {
                    Ok(()) => {}
                    Err(error) => tracing::warn!(
                        path = %self.path.display(), %error,
                        "cannot read the hosts file; peer names resolve through DNS only"
                    ),
                }
            }
            self.hosts = hosts;
            self.version = version;
        }
        &self.hosts
    }
}

/// Resolves peer names: the hosts file, then DNS; one for all of a node's peer names.
pub(crate) struct Resolver {
    hosts: Mutex<HostsFile>,
    /// The DNS resolver, or why there is none (no usable `/etc/resolv.conf`).
    dns: Result<TokioResolver, String>,
    floor: Duration,
    ceiling: Duration,
    counts: Arc<Resolutions>,
}

impl Resolver {
    /// The system's: `/etc/hosts`, then DNS as `/etc/resolv.conf` says.
    pub fn system(counts: Arc<Resolutions>) -> Resolver {
        let dns = std::fs::read(RESOLV_CONF_PATH)
            .map_err(|e| format!("{RESOLV_CONF_PATH}: {e}"))
            .and_then(|text| {
                hickory_resolver::system_conf::parse_resolv_conf(text)
                    .map_err(|e| format!("{RESOLV_CONF_PATH}: {e}"))
            })
            .and_then(|(config, options)| {
                if config.name_servers().is_empty() {
                    Err(format!("{RESOLV_CONF_PATH} names no name server"))
                } else {
                    Ok((config, options))
                }
            });
        if let Err(why) = &dns {
            tracing::info!(%why, "no DNS: peer names resolve through {HOSTS_PATH} only");
        }
        Resolver::new(HOSTS_PATH.into(), dns, TTL_FLOOR, TTL_CEILING, counts)
    }

    /// A resolver reading `hosts` and asking DNS as `dns` configures (or, with an error,
    /// not at all), keeping answers between `floor` and `ceiling`.
    pub fn new(
        hosts: PathBuf,
        dns: Result<(ResolverConfig, ResolverOpts), String>,
        floor: Duration,
        ceiling: Duration,
        counts: Arc<Resolutions>,
    ) -> Resolver {
        let dns = dns.map(|(config, mut options)| {
            // The hosts file is read here, each time it changes; hickory reads it once.
            options.use_hosts_file = ResolveHosts::Never;
            // Its cache keeps an answer as long as this module does, so a resolution
            // after the answer expired asks the server again.
            options.positive_min_ttl = Some(floor);
            options.positive_max_ttl = Some(ceiling);
            options.negative_max_ttl = Some(RESOLVE_RETRY);
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build()
        });
        Resolver {
            hosts: Mutex::new(HostsFile {
                path: hosts,
                version: None,
                read_at: SystemTime::UNIX_EPOCH,
                hosts: Hosts::default(),
            }),
            dns,
            floor,
            ceiling,
            counts,
        }
    }

    /// The addresses `host_port` (`HOST:PORT`, as `config::parse_peer` accepted it) has now.
    pub async fn resolve(&self, host_port: &str) -> Result<Answer, Failure> {
        let result = self.lookup(host_port).await;
        self.counts.count(&result);
        result
    }

    async fn lookup(&self, host_port: &str) -> Result<Answer, Failure> {
        let Some((host, port)) = host_port
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        else {
            return Err(Failure::NotFound(format!("{host_port:?} is not HOST:PORT")));
        };
        let name = Name::from_ascii(host)
            .map_err(|e| Failure::NotFound(format!("{host:?} is not a DNS name: {e}")))?;
        let from_file = self.in_hosts_file(&name);
        if !from_file.is_empty() {
            return Ok(Answer {
                addrs: with_port(from_file, port),
                ttl: self.floor,
                source: Source::HostsFile,
            });
        }
        let dns = match &self.dns {
            Ok(dns) => dns,
            Err(why) => {
                return Err(Failure::NotFound(format!(
                    "{host} is not in {} and there is no DNS ({why})",
                    self.hosts_path()
                )))
            }
        };
        match dns.lookup_ip(host).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    return Err(Failure::NotFound(format!("{host}: DNS has no address")));
                }
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .clamp(self.floor, self.ceiling);
                Ok(Answer {
                    addrs: with_port(ips, port),
                    ttl,
                    source: Source::Dns,
                })
            }
            Err(error) if is_not_found(&error) => Err(Failure::NotFound(format!(
                "{host}: not in {} nor DNS ({error})",
                self.hosts_path()
            ))),
            Err(error) => Err(Failure::Error(format!("{host}: DNS failed: {error}"))),
        }
    }

    fn hosts_path(&self) -> String {
        let file = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        file.path.display().to_string()
    }

    /// The name's IPv4 then IPv6 addresses in the hosts file (read again if it changed).
    fn in_hosts_file(&self, name: &Name) -> Vec<IpAddr> {
        let mut file = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let hosts = file.current();
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|kind| hosts.lookup_static_host(&Query::query(name.clone(), kind)))
            .flat_map(|lookup| {
                lookup
                    .iter()
                    .filter_map(|r| r.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Whether DNS answered that the name has no address (NXDOMAIN, or no A/AAAA record),
/// rather than failed (SERVFAIL, REFUSED, timeout: hickory reports a SERVFAIL answer as
/// "no records" too, with its response code).
fn is_not_found(error: &hickory_resolver::ResolveError) -> bool {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::ProtoErrorKind;
    match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            )
        }
        _ => false,
    }
}

fn with_port(ips: Vec<IpAddr>, port: u16) -> Vec<SocketAddr> {
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Resolve `host` until the node stops, again each time its answer expires (after a
/// failure, after [`RESOLVE_RETRY`]), handing each new address to the driver and taking
/// back each address the name no longer has.
pub(crate) async fn watch(
    host: String,
    resolver: Arc<Resolver>,
    inputs: mpsc::Sender<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let mut current: Vec<SocketAddr> = Vec::new();
    // The last failure logged at `warn` (a repeat is logged at `debug`).
    let mut failing: Option<Failure> = None;
    loop {
        let wait = match resolver.resolve(&host).await {
            Ok(answer) => {
                if failing.take().is_some() {
                    tracing::info!(peer = %host, "static peer resolves again");
                }
                let (added, gone) = address_changes(&current, &answer.addrs);
                current = answer.addrs;
                let mut changes = Vec::new();
                for addr in gone {
                    tracing::info!(peer = %host, %addr, "static peer no longer at this address");
                    changes.push(Input::RemovePeer(addr));
                }
                for addr in added {
                    let (source, ttl) = (answer.source.as_str(), answer.ttl.as_secs());
                    tracing::info!(peer = %host, %addr, source, ttl_s = ttl, "static peer resolved");
                    changes.push(Input::AddPeer(addr));
                }
                for change in changes {
                    if inputs.send(change).await.is_err() {
                        return;
                    }
                }
                answer.ttl
            }
            Err(failure) => {
                if failing.as_ref() != Some(&failure) {
                    // An unresolvable name keeps the addresses it had: no news.
                    let kept = current.len();
                    tracing::warn!(peer = %host, error = %failure, kept_addresses = kept,
                        "static peer does not resolve; retrying");
                } else {
                    tracing::debug!(peer = %host, error = %failure, "static peer does not resolve");
                }
                failing = Some(failure);
                RESOLVE_RETRY
            }
        };
        tokio::select! {
            () = state::stopped(&mut stop) => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// What changed from the addresses a name had (`before`) to those it has (`now`): the
/// ones added and the ones gone, each in the order given.
fn address_changes(
    before: &[SocketAddr],
    now: &[SocketAddr],
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let added = now
        .iter()
        .filter(|a| !before.contains(a))
        .copied()
        .collect();
    let gone = before
        .iter()
        .filter(|a| !now.contains(a))
        .copied()
        .collect();
    (added, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::config::NameServerConfigGroup;
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::rr::{RData, Record};
    use std::net::Ipv4Addr;
    use tokio::net::UdpSocket;

    /// What the test DNS server answers to every A query.
    #[derive(Clone, Copy)]
    enum Reply {
        /// This address, with this TTL in seconds.
        Address(Ipv4Addr, u32),
        NxDomain,
        ServFail,
        /// No reply at all (a server that is down).
        Silence,
    }

    /// A real DNS server on 127.0.0.1 (UDP; DNS messages encoded by hickory's codec)
    /// answering as `reply` says (an address: to A queries; AAAA ones get no record),
    /// recording when each A query came.
    struct TestDns {
        port: u16,
        reply: Arc<Mutex<Reply>>,
        queries: Arc<Mutex<Vec<Instant>>>,
    }

    impl TestDns {
        async fn start(reply: Reply) -> TestDns {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = socket.local_addr().unwrap().port();
            let reply = Arc::new(Mutex::new(reply));
            let queries = Arc::new(Mutex::new(Vec::new()));
            let (r, q) = (reply.clone(), queries.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(request) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let Some(query) = request.queries().first().cloned() else {
                        continue;
                    };
                    let mut response = Message::new();
                    response
                        .set_id(request.id())
                        .set_message_type(MessageType::Response)
                        .set_op_code(request.op_code())
                        .set_recursion_desired(request.recursion_desired())
                        .set_recursion_available(true)
                        .add_query(query.clone());
                    let reply = *r.lock().unwrap();
                    let is_a = query.query_type() == RecordType::A;
                    if is_a {
                        q.lock().unwrap().push(Instant::now());
                    }
                    match reply {
                        Reply::Address(ip, ttl) if is_a => {
                            let name = query.name().clone();
                            response.add_answer(Record::from_rdata(name, ttl, RData::A(A(ip))));
                        }
                        Reply::Address(..) => {}
                        Reply::NxDomain => {
                            response.set_response_code(ResponseCode::NXDomain);
                        }
                        Reply::ServFail => {
                            response.set_response_code(ResponseCode::ServFail);
                        }
                        Reply::Silence => continue,
                    }
                    let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
                }
            });
            TestDns {
                port,
                reply,
                queries,
            }
        }

        fn set(&self, reply: Reply) {
            *self.reply.lock().unwrap() = reply;
        }

        fn queries(&self) -> Vec<Instant> {
            self.queries.lock().unwrap().clone()
        }

        /// A resolver asking only this server, with `hosts` as its hosts file.
        fn resolver(&self, hosts: &std::path::Path, ceiling: Duration) -> Resolver {
            let servers = NameServerConfigGroup::from_ips_clear(
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                self.port,
                true,
            );
            let config = ResolverConfig::from_parts(None, vec![], servers);
            let mut options = ResolverOpts::default();
            options.timeout = Duration::from_millis(300);
            options.attempts = 1;
            let counts = Arc::new(Resolutions::default());
            Resolver::new(
                hosts.into(),
                Ok((config, options)),
                TTL_FLOOR,
                ceiling,
                counts,
            )
        }
    }

    fn hosts_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    /// What the resolving task sent (Input has no Debug).
    fn show<E>(received: Result<Option<Input>, E>) -> String {
        match received {
            Ok(Some(Input::AddPeer(a))) => format!("AddPeer({a})"),
            Ok(Some(Input::RemovePeer(a))) => format!("RemovePeer({a})"),
            Ok(Some(_)) => "another input".into(),
            Ok(None) => "channel closed".into(),
            Err(_) => "nothing (timeout)".into(),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_changed_address_is_picked_up_after_its_ttl_and_not_before() {
        let dns = TestDns::start(Reply::Address(Ipv4Addr::new(10, 1, 0, 1), 3)).await;
        let hosts = hosts_file("127.0.0.1 localhost\n");
        let resolver = Arc::new(dns.resolver(hosts.path(), TTL_CEILING));
        let (inputs, mut changes) = mpsc::channel(16);
        let (_stop, stop_rx) = watch::channel(false);
        let host = "seed-0.mesh.test:7001".to_string();
        tokio::spawn(watch(host, resolver.clone(), inputs, stop_rx));

        let first = tokio::time::timeout(Duration::from_secs(2), changes.recv()).await;
        assert!(matches!(first, Ok(Some(Input::AddPeer(a))) if a == addr("10.1.0.1:7001")));
        let resolved_at = dns.queries()[0];
        // The seed is recreated at once with a new address; its record has a 3 s TTL.
        dns.set(Reply::Address(Ipv4Addr::new(10, 1, 0, 2), 3));

        let next = tokio::time::timeout(Duration::from_secs(6), changes.recv()).await;
        let changed_at = Instant::now();
        assert!(
            matches!(next, Ok(Some(Input::RemovePeer(a))) if a == addr("10.1.0.1:7001")),
            "the old address is taken back: {}",
            show(next)
        );
        let next = changes.recv().await;
        assert!(matches!(next, Some(Input::AddPeer(a)) if a == addr("10.1.0.2:7001")));
        let after = changed_at - resolved_at;
        assert!(
            after >= Duration::from_millis(2900) && after < Duration::from_millis(4500),
            "re-resolved {after:?} after the first answer, TTL 3 s"
        );
        // Not asked in between: the second query is the one at the TTL's end.
        let queries = dns.queries();
        assert_eq!(queries.len(), 2, "A queries: {queries:?}");
        assert!(queries[1] - resolved_at >= Duration::from_millis(2900));
        let counts = resolver.counts.counts();
        assert_eq!(counts[0], ("ok", 2));
    }

    #[tokio::test]
    async fn answers_are_kept_between_the_floor_and_the_ceiling() {
        let dns = TestDns::start(Reply::Address(Ipv4Addr::new(10, 1, 0, 1), 0)).await;
        let hosts = hosts_file("");
        let resolver = dns.resolver(hosts.path(), Duration::from_secs(2));
        let answer = resolver.resolve("a.mesh.test:7001").await.unwrap();
        assert_eq!(answer.addrs, vec![addr("10.1.0.1:7001")]);
        assert_eq!((answer.ttl, answer.source), (TTL_FLOOR, Source::Dns));
        let answer = resolver.resolve("b.mesh.test:7001").await.unwrap();
        assert_eq!(answer.ttl, TTL_FLOOR, "TTL 0 is kept for the floor");

        dns.set(Reply::Address(Ipv4Addr::new(10, 1, 0, 1), 86_400));
        let answer = resolver.resolve("c.mesh.test:7001").await.unwrap();
        assert!(
            answer.ttl > Duration::from_millis(1900) && answer.ttl <= Duration::from_secs(2),
            "a day's TTL is kept for the ceiling: {:?}",
            answer.ttl
        );
    }

    #[tokio::test]
    async fn the_hosts_file_comes_first_and_is_read_again_when_rewritten_in_place() {
        let dns = TestDns::start(Reply::Address(Ipv4Addr::new(10, 1, 0, 9), 30)).await;
        let hosts = hosts_file("127.0.0.1 localhost\n10.2.0.1 seed-1.mesh.test\n");
        let resolver = dns.resolver(hosts.path(), TTL_CEILING);
        let answer = resolver.resolve("seed-1.mesh.test:7001").await.unwrap();
        assert_eq!(answer.addrs, vec![addr("10.2.0.1:7001")]);
        assert_eq!((answer.ttl, answer.source), (TTL_FLOOR, Source::HostsFile));
        assert!(
            dns.queries().is_empty(),
            "a name in the hosts file is not asked of DNS"
        );

        // Rewritten in place, the same length (as the lab does to bind-mounted files).
        let rewrite = |text: &str| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(hosts.path())
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
            file.set_len(text.len() as u64).unwrap();
        };
        rewrite("127.0.0.1 localhost\n10.2.0.2 seed-1.mesh.test\n");
        let answer = resolver.resolve("seed-1.mesh.test:7001").await.unwrap();
        assert_eq!(answer.addrs, vec![addr("10.2.0.2:7001")]);

        // Removed from the file: DNS answers.
        rewrite("127.0.0.1 localhost\n");
        let answer = resolver.resolve("seed-1.mesh.test:7001").await.unwrap();
        assert_eq!(answer.addrs, vec![addr("10.1.0.9:7001")]);
        assert_eq!(answer.source, Source::Dns);
        assert!(
            answer.ttl > Duration::from_secs(29),
            "TTL 30 s: {:?}",
            answer.ttl
        );
    }

    #[tokio::test]
    async fn failures_are_counted_and_keep_the_addresses_the_name_had() {
        let dns = TestDns::start(Reply::NxDomain).await;
        let hosts = hosts_file("");
        let resolver = Arc::new(dns.resolver(hosts.path(), TTL_CEILING));
        let failure = resolver.resolve("gone.mesh.test:7001").await.unwrap_err();
        assert!(matches!(failure, Failure::NotFound(_)), "{failure:?}");
        dns.set(Reply::ServFail);
        let failure = resolver.resolve("sick.mesh.test:7001").await.unwrap_err();
        assert!(matches!(failure, Failure::Error(_)), "{failure:?}");
        dns.set(Reply::Silence);
        let failure = resolver.resolve("quiet.mesh.test:7001").await.unwrap_err();
        assert!(matches!(failure, Failure::Error(_)), "{failure:?}");
        let counts = resolver.counts.counts();
        assert_eq!(counts, [("ok", 0), ("not_found", 1), ("error", 2)]);

        // A name that resolved, then stops resolving: its address stays dialed.
        dns.set(Reply::Address(Ipv4Addr::new(10, 1, 0, 1), 1));
        let (inputs, mut changes) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(watch(
            "seed.mesh.test:7001".into(),
            resolver.clone(),
            inputs,
            stop_rx,
        ));
        let first = tokio::time::timeout(Duration::from_secs(2), changes.recv()).await;
        assert!(
            matches!(first, Ok(Some(Input::AddPeer(_)))),
            "{}",
            show(first)
        );
        dns.set(Reply::NxDomain);
        let next = tokio::time::timeout(Duration::from_millis(2500), changes.recv()).await;
        assert!(
            next.is_err(),
            "a failed resolution takes nothing back: {}",
            show(next)
        );
        assert!(
            resolver.counts.counts()[1].1 >= 2,
            "{:?}",
            resolver.counts.counts()
        );
        stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn without_dns_a_name_comes_from_the_hosts_file_alone() {
        let hosts = hosts_file("10.3.0.1 seed-2\n");
        let counts = Arc::new(Resolutions::default());
        let no_dns = Err("no /etc/resolv.conf".to_string());
        let resolver = Resolver::new(hosts.path().into(), no_dns, TTL_FLOOR, TTL_CEILING, counts);
        let answer = resolver.resolve("seed-2:7001").await.unwrap();
        assert_eq!(answer.addrs, vec![addr("10.3.0.1:7001")]);
        let failure = resolver.resolve("seed-3:7001").await.unwrap_err();
        assert!(
            matches!(&failure, Failure::NotFound(why) if why.contains("no /etc/resolv.conf")),
            "{failure:?}"
        );
    }

    #[test]
    fn a_peer_name_hands_over_new_addresses_and_takes_back_gone_ones() {
        let a: SocketAddr = "10.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:7001".parse().unwrap();
        assert_eq!(address_changes(&[], &[a]), (vec![a], vec![]));
        assert_eq!(address_changes(&[a], &[a]), (vec![], vec![]));
        // The pod came back with a new address: that one is dialed, the old one dropped
        // (before, every address ever seen stayed in the core's peer list, which is
        // bounded, so after enough recreations new addresses were ignored).
        assert_eq!(address_changes(&[a], &[b]), (vec![b], vec![a]));
        assert_eq!(address_changes(&[b], &[a, b]), (vec![a], vec![]));
    }
}
