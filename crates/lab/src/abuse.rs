//! `lab soak --api-abuse`: while x0tta6bl4 soaks, abuse every node's HTTP API (issue 11):
//! [`SENDERS`] concurrent clients post `/api/v1/send` as fast as the nodes answer, and
//! up to [`HALF_OPEN_PER_NODE`] connections per node send half a request head and hold
//! it (reopened when the node closes them). Everything is bounded in count and time and
//! aimed only at the nodes' management addresses (inside the lab's namespaces). At the
//! end the report says, per node, what the node refused (its
//! `x0tta6bl4_api_connections_refused_total`), how many of its protocol timers ran late
//! (`x0tta6bl4_driver_timer_lateness_seconds`: a starved mesh), which nodes wedged (no
//! answer to `/health/live` within 2 s, or an API that stopped answering) and how many
//! ordered pairs had no route once the abuse stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Concurrent `/api/v1/send` clients over all nodes.
pub const SENDERS: usize = 50;
/// Half-open connections held per node (above the node's default cap of 256).
pub const HALF_OPEN_PER_NODE: usize = 300;
/// Half-open connections held over all nodes (the lab's own file descriptors).
pub const HALF_OPEN_MAX: usize = 3_000;
/// How long a node has to answer a check after the abuse.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long routes may take to be complete again after the abuse.
const SETTLE: Duration = Duration::from_secs(10);

/// What the abuse did and what the nodes did about it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AbuseReport {
    /// `/api/v1/send` requests made, by outcome: `accepted` (202), `busy` (503),
    /// `other` (any other status), `failed` (no answer: connection refused or reset).
    pub sends: BTreeMap<String, u64>,
    /// Half-open connections opened (each held until the node closed it).
    pub half_open_opened: u64,
    /// Per node: `api_connections_refused_total` by reason, read after the abuse.
    pub refused: BTreeMap<String, BTreeMap<String, u64>>,
    /// Nodes whose API did not answer after the abuse (wedged).
    pub wedged_nodes: Vec<String>,
    /// Ordered pairs (source, destination) without a route after the abuse.
    pub unreachable_pairs: usize,
    /// Per node: protocol timers (probe sends, failure detection) its driver handled
    /// more than [`LATE_TIMER_SECONDS`] after their deadline during the abuse (from
    /// `x0tta6bl4_driver_timer_lateness_seconds`): a starved mesh.
    pub late_timers: BTreeMap<String, u64>,
    /// Per node: the latest a timer was handled during the abuse, at most (the upper
    /// bound of the highest histogram bucket reached), in milliseconds; `null` in JSON
    /// when beyond the last bucket (3.3 s).
    pub timer_lateness_max_ms: BTreeMap<String, f64>,
}

/// A timer handled later than this is late: with 50 ms probes and 3 misses, a driver
/// starved for a few of these declares live neighbours down.
pub const LATE_TIMER_SECONDS: f64 = 0.0512;

/// A node's timer-lateness histogram: (upper bound in seconds, cumulative count).
#[derive(Clone, Debug, Default)]
pub struct Lateness(Vec<(f64, u64)>);

impl Lateness {
    /// Read from a node's metrics text.
    pub fn parse(metrics: &str) -> Lateness {
        let prefix = "x0tta6bl4_driver_timer_lateness_seconds_bucket{le=\"";
        let buckets = metrics.lines().filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            let (le, count) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse::<f64>().ok()? as u64))
        });
        Lateness(buckets.collect())
    }

    fn count_above(&self, seconds: f64) -> u64 {
        let total = self.0.iter().map(|b| b.1).max().unwrap_or(0);
        let within = self
            .0
            .iter()
            .filter(|(le, _)| *le <= seconds + 1e-9)
            .map(|b| b.1)
            .max()
            .unwrap_or(0);
        total - within
    }

    /// Timers later than `seconds` since `before`, and the upper bound of the highest
    /// bucket that gained samples (seconds; infinite for the `+Inf` bucket).
    pub fn since(&self, before: &Lateness, seconds: f64) -> (u64, f64) {
        let late = self
            .count_above(seconds)
            .saturating_sub(before.count_above(seconds));
        let mut max: f64 = 0.0;
        let mut previous = 0;
        for (le, count) in &self.0 {
            let old = before.0.iter().find(|b| b.0 == *le).map_or(0, |b| b.1);
            let gained = count.saturating_sub(old);
            if gained > previous {
                max = *le;
            }
            previous = gained;
        }
        (late, max)
    }
}

/// Every node's timer lateness now (`None` for a node that did not answer within
/// [`SETTLE`]: right after the abuse, a node may still be draining its listen queue).
pub async fn lateness(apis: &[SocketAddr]) -> Vec<Option<Lateness>> {
    let client = reqwest::Client::builder()
        .timeout(SETTLE)
        .build()
        .unwrap_or_default();
    let mut all = Vec::new();
    for api in apis {
        let text = match client.get(format!("http://{api}/metrics")).send().await {
            Ok(answer) => answer.text().await.ok(),
            Err(_) => None,
        };
        all.push(text.map(|t| Lateness::parse(&t)));
    }
    all
}

/// The running abuse; [`Abuse::finish`] stops it.
pub struct Abuse {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
    half_open: AtomicU64,
}

impl Abuse {
    /// Start abusing the APIs at `apis`; `names[i]` is the node at `apis[i]`.
    pub fn start(apis: &[SocketAddr], names: &[String]) -> Abuse {
        assert_eq!(apis.len(), names.len());
        let (stop, stopped) = watch::channel(false);
        let counts = Arc::new(Counts::default());
        let mut tasks = JoinSet::new();
        let per_node = (HALF_OPEN_MAX / apis.len().max(1)).min(HALF_OPEN_PER_NODE);
        for &api in apis {
            for _ in 0..per_node {
                tasks.spawn(hold_half_open(api, stopped.clone(), counts.clone()));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(SENDERS)
            .build()
            .unwrap_or_default();
        for sender in 0..SENDERS {
            let (apis, names) = (apis.to_vec(), names.to_vec());
            let send = send_loop(
                sender,
                apis,
                names,
                client.clone(),
                stopped.clone(),
                counts.clone(),
            );
            tasks.spawn(send);
        }
        Abuse {
            stop,
            tasks,
            counts,
        }
    }

    /// Stop the abuse, wait until every client is gone, then check every node;
    /// `before` is every node's [`lateness`] when the abuse started.
    pub async fn finish(
        mut self,
        apis: &[SocketAddr],
        names: &[String],
        before: &[Option<Lateness>],
    ) -> AbuseReport {
        let _ = self.stop.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        let c = &self.counts;
        let sends = [
            ("accepted", &c.accepted),
            ("busy", &c.busy),
            ("other", &c.other),
            ("failed", &c.failed),
        ]
        .map(|(k, v)| (k.to_owned(), v.load(Ordering::Relaxed)));
        let mut report = AbuseReport {
            sends: sends.into_iter().collect(),
            half_open_opened: c.half_open.load(Ordering::Relaxed),
            ..AbuseReport::default()
        };
        let after = lateness(apis).await;
        for ((name, before), after) in names.iter().zip(before).zip(after) {
            let (Some(before), Some(after)) = (before, after) else {
                continue;
            };
            let (late, max) = after.since(before, LATE_TIMER_SECONDS);
            report.late_timers.insert(name.clone(), late);
            report
                .timer_lateness_max_ms
                .insert(name.clone(), max * 1000.0);
        }
        check(apis, names, &mut report).await;
        report
    }
}

/// Keep one half-sent request open to `api`, reopening it when the node closes it.
async fn hold_half_open(api: SocketAddr, mut stop: watch::Receiver<bool>, counts: Arc<Counts>) {
    let head = b"POST /api/v1/send HTTP/1.1\r\nHost: lab\r\nContent-Length: 40\r\n";
    while !*stop.borrow() {
        let connect = tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(api));
        let Ok(Ok(mut stream)) = connect.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        counts.half_open.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(head).await.is_err() {
            continue;
        }
        let mut buffer = [0u8; 512];
        tokio::select! {
            _ = stream.read(&mut buffer) => {} // the node closed it (or answered 408)
            _ = stop.changed() => return,
        }
    }
}

/// One sender: post messages from node to node, round robin, until `stop`.
async fn send_loop(
    sender: usize,
    apis: Vec<SocketAddr>,
    names: Vec<String>,
    client: reqwest::Client,
    stop: watch::Receiver<bool>,
    counts: Arc<Counts>,
) {
    let n = apis.len();
    let mut turn = sender;
    while !*stop.borrow() && n > 1 {
        let (from, to) = (turn % n, (turn + 1 + sender % (n - 1)) % n);
        turn += 1;
        let body = serde_json::json!({ "to": names[to], "payload": "abuse" });
        let url = format!("http://{}/api/v1/send", apis[from]);
        let outcome = client.post(url).json(&body).send().await;
        let counter = match outcome.map(|r| r.status().as_u16()) {
            Ok(202) => &counts.accepted,
            Ok(503) => &counts.busy,
            Ok(_) => &counts.other,
            Err(_) => &counts.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// After the abuse: every node's refusals, whether it answers, and its routes.
async fn check(apis: &[SocketAddr], names: &[String], report: &mut AbuseReport) {
    let client = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .build()
        .unwrap_or_default();
    for (api, name) in apis.iter().zip(names) {
        let live = client.get(format!("http://{api}/health/live")).send().await;
        if !live.is_ok_and(|r| r.status().is_success()) {
            report.wedged_nodes.push(name.clone());
            continue;
        }
        let metrics = client.get(format!("http://{api}/metrics")).send().await;
        let text = match metrics {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => {
                report.wedged_nodes.push(name.clone());
                continue;
            }
        };
        report.refused.insert(name.clone(), refusals(&text));
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let mut missing = 0;
        for api in apis {
            let url = format!("http://{api}/api/v1/routes");
            let routes = match client.get(url).send().await {
                Ok(answer) => answer.json::<Vec<serde_json::Value>>().await.ok(),
                Err(_) => None,
            };
            let held = routes.map_or(0, |r| r.len());
            missing += (apis.len() - 1).saturating_sub(held);
        }
        report.unreachable_pairs = missing;
        if missing == 0 || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `api_connections_refused_total` by reason from a node's metrics text.
fn refusals(metrics: &str) -> BTreeMap<String, u64> {
    let prefix = "x0tta6bl4_api_connections_refused_total{reason=\"";
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            let (reason, value) = rest.split_once("\"}")?;
            Some((reason.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_by_reason() {
        let text = "# TYPE x\nx0tta6bl4_api_connections_refused_total{reason=\"limit\"} 3\n\
                    x0tta6bl4_api_connections_refused_total{reason=\"evicted\"} 250\n\
                    x0tta6bl4_routes 4\n";
        let found = refusals(text);
        assert_eq!(found.get("limit"), Some(&3));
        assert_eq!(found.get("evicted"), Some(&250));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn late_timers_are_counted_since_the_start() {
        let metrics = |counts: [u64; 4]| {
            format!(
                "x0tta6bl4_driver_timer_lateness_seconds_bucket{{le=\"0.0256\"}} {}\n\
                 x0tta6bl4_driver_timer_lateness_seconds_bucket{{le=\"0.0512\"}} {}\n\
                 x0tta6bl4_driver_timer_lateness_seconds_bucket{{le=\"0.1024\"}} {}\n\
                 x0tta6bl4_driver_timer_lateness_seconds_bucket{{le=\"+Inf\"}} {}\n",
                counts[0], counts[1], counts[2], counts[3]
            )
        };
        let before = Lateness::parse(&metrics([90, 95, 97, 100]));
        let after = Lateness::parse(&metrics([190, 195, 199, 203]));
        // 103 timers: 3 later than 51.2 ms, 2 in (51.2, 102.4] and the latest beyond.
        let (late, max) = after.since(&before, LATE_TIMER_SECONDS);
        assert_eq!(late, 3);
        assert!(max.is_infinite(), "{max}");
        let later = Lateness::parse(&metrics([290, 295, 299, 303]));
        assert_eq!(later.since(&after, LATE_TIMER_SECONDS), (0, 0.0256));
        assert_eq!(after.since(&after, LATE_TIMER_SECONDS), (0, 0.0));
    }
}
