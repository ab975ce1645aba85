//! Issue 11, item 7: a flooded HTTP API must not starve the mesh. Two linked nodes on
//! the test's runtime (two workers, as the daemon's on two cores); a client on a thread
//! of its own (as another process would be) holds hundreds of half-sent requests
//! against one node's API, reopening each as soon as the node closes it, stalls request
//! bodies and polls the API, for a few seconds. The mesh must not notice: the flood adds
//! no task to the runtime the drivers run on (the API has a runtime and a thread of its
//! own), no neighbour goes down, every message sent across the link during the flood
//! arrives, protocol timers stay on time, and the node counts what it refused.
//!
//! Before the API got its own runtime, the connection storm ran on the drivers'
//! runtime: up to `connections_max` connection tasks beside the drivers, and protocol
//! timers handled 0.2 to 0.8 s late (probes every 50 ms). The task count is the
//! deterministic check; timer lateness also depends on the machine's load (a test on a
//! busy machine can be descheduled for longer than that), so it is bounded loosely.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, eventually, issue, Api};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use x0tta6bl4_node::NodeHandle;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(4);
/// Half-sent requests held at once (the node's cap here is 64).
const HALF_OPEN: usize = 400;
/// Requests whose body never completes.
const SLOW_BODIES: usize = 40;
/// Clients polling the API with complete requests.
const POLLERS: usize = 8;
/// A protocol timer handled later than this, in seconds, is late (probes every 50 ms,
/// 3 misses to down).
const TIMER_LATE: &str = "0.1024";
/// Share of a node's timers that may be late over the flood: the machine's own
/// scheduling delays (other builds on 2 cores: up to 3 of ~100 seen with the fix).
const LATE_TIMERS_MAX: f64 = 0.1;
/// Tasks the drivers' runtime may gain during the flood (the test's own clients).
const TASKS_GAINED_MAX: usize = 8;

/// The value of the metric sample whose line starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Protocol timers handled later than [`TIMER_LATE`] seconds.
fn late_timers(metrics: &str) -> f64 {
    let all = sample(metrics, "x0tta6bl4_driver_timer_lateness_seconds_count");
    let bucket = format!("x0tta6bl4_driver_timer_lateness_seconds_bucket{{le=\"{TIMER_LATE}\"}}");
    let on_time = sample(metrics, &bucket);
    assert!(all > 0.0, "no timer lateness in the metrics:\n{metrics}");
    all - on_time
}

#[derive(Default)]
struct Flooded {
    opened: AtomicU64,
    answered: AtomicU64,
}

/// Hold one half-sent request open, reopening it as soon as the node closes it.
async fn half_open(api: SocketAddr, until: Instant, flooded: Arc<Flooded>) {
    let head = b"POST /api/v1/send HTTP/1.1\r\nHost: flood\r\nContent-Length: 40\r\n";
    while Instant::now() < until {
        let Ok(mut stream) = tokio::net::TcpStream::connect(api).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        flooded.opened.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(head).await.is_err() {
            continue;
        }
        let left = until.saturating_duration_since(Instant::now());
        let mut buffer = [0u8; 256];
        let _ = tokio::time::timeout(left, stream.read(&mut buffer)).await;
    }
}

/// A request whose body stops after a few bytes (answered 408 at `request_timeout_ms`).
async fn slow_body(api: SocketAddr, until: Instant, flooded: Arc<Flooded>) {
    let head = "POST /api/v1/send HTTP/1.1\r\nHost: flood\r\nContent-Length: 100\r\n\r\n{\"to\"";
    while Instant::now() < until {
        let Ok(mut stream) = tokio::net::TcpStream::connect(api).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        flooded.opened.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        let left = until.saturating_duration_since(Instant::now());
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(left, stream.read_to_end(&mut answer)).await;
    }
}

/// Complete requests as fast as the node answers them.
async fn poll(api: SocketAddr, until: Instant, flooded: Arc<Flooded>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while Instant::now() < until {
        match client
            .get(format!("http://{api}/api/v1/status"))
            .send()
            .await
        {
            Ok(_) => flooded.answered.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                0
            }
        };
    }
}

/// The flood, on a thread and runtime of its own; returns what it did.
fn flood(api: SocketAddr) -> std::thread::JoinHandle<Arc<Flooded>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let until = Instant::now() + FLOOD;
            let flooded = Arc::new(Flooded::default());
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..HALF_OPEN {
                tasks.spawn(half_open(api, until, flooded.clone()));
            }
            for _ in 0..SLOW_BODIES {
                tasks.spawn(slow_body(api, until, flooded.clone()));
            }
            for _ in 0..POLLERS {
                tasks.spawn(poll(api, until, flooded.clone()));
            }
            while tasks.join_next().await.is_some() {}
            flooded
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_api_does_not_starve_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let b = NodeHandle::start(config(dir.path(), "b", &[]))
        .await
        .unwrap();
    let mut config_a = config(dir.path(), "a", &[b.quic_addr()]);
    config_a.api.connections_max = 64;
    config_a.api.header_timeout_ms = 1000;
    config_a.api.request_timeout_ms = 1000;
    let a = NodeHandle::start(config_a).await.unwrap();
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    eventually(Duration::from_secs(10), "a reaches b", || async {
        api_a.route("b").await.is_some() && api_b.route("a").await.is_some()
    })
    .await;
    let (before_a, before_b) = (api_a.text("/metrics").await, api_b.text("/metrics").await);
    let api_addr = a.api_addr();

    // The tasks on the drivers' runtime (this one), sampled through the flood.
    let runtime = tokio::runtime::Handle::current().metrics();
    let tasks_before = runtime.num_alive_tasks();
    let started = Instant::now();
    let flood = flood(api_addr);
    let sampling = tokio::spawn(async move {
        let mut max = 0;
        while started.elapsed() < FLOOD {
            max = max.max(runtime.num_alive_tasks());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max
    });
    // Meanwhile the mesh carries messages from b to a, through the flood.
    let sent = api_b.send_steadily("a", FLOOD).await;
    let tasks_max = sampling.await.unwrap();
    let flooded = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    let opened = flooded.opened.load(Ordering::Relaxed);
    let answered = flooded.answered.load(Ordering::Relaxed);
    eprintln!(
        "flood: {opened} connections opened, {answered} requests answered in {:?}; \
         tasks on the drivers' runtime: {tasks_before} before, at most {tasks_max} during",
        started.elapsed()
    );
    assert!(opened >= HALF_OPEN as u64, "the flood opened {opened}");

    // The API answers again once the flood is over (until the stalled heads are gone,
    // a new connection may still be closed at accept).
    eventually(Duration::from_secs(5), "a's API answers", || async {
        let url = format!("{}/health/live", api_a.base);
        let answer = api_a.client.get(url).send().await;
        answer.is_ok_and(|a| a.status() == 200)
    })
    .await;
    api_a.wait_delivered(sent).await;
    let (after_a, after_b) = (api_a.text("/metrics").await, api_b.text("/metrics").await);
    let downs = "x0tta6bl4_neighbour_down_total";
    let mut starved = Vec::new();
    if tasks_max > tasks_before + TASKS_GAINED_MAX {
        starved.push(format!(
            "the drivers' runtime ran {tasks_max} tasks during the flood, {tasks_before} \
             before: the API's connections run beside the drivers"
        ));
    }
    for (node, before, after) in [("a", &before_a, &after_a), ("b", &before_b, &after_b)] {
        let late = late_timers(after) - late_timers(before);
        let timers = sample(after, "x0tta6bl4_driver_timer_lateness_seconds_count")
            - sample(before, "x0tta6bl4_driver_timer_lateness_seconds_count");
        let new_downs = sample(after, downs) - sample(before, downs);
        eprintln!(
            "{node}: {timers} protocol timers, {late} more than {TIMER_LATE} s late; \
             {new_downs} neighbour-downs"
        );
        if late > timers * LATE_TIMERS_MAX || new_downs > 0.0 {
            starved.push(format!(
                "{node}: {late} protocol timers handled more than {TIMER_LATE} s late, \
                 {new_downs} false neighbour-downs"
            ));
        }
    }
    assert!(
        starved.is_empty(),
        "the flood starved the mesh: {starved:?}"
    );
    // What the node refused is counted; it never held more than its cap.
    let refused = |reason: &str| {
        let series = format!("x0tta6bl4_api_connections_refused_total{{reason=\"{reason}\"}}");
        sample(&after_a, &series)
    };
    assert!(refused("limit") > 0.0, "{after_a}");
    // Which stalled connections got a slot, and so timed out or were evicted, varies.
    let closed = ["header_timeout", "evicted", "request_timeout"].map(refused);
    assert!(closed.iter().sum::<f64>() > 0.0, "{after_a}");
    assert!(sample(&after_a, "x0tta6bl4_api_connections_open") <= 64.0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
