//! The eBPF collector's CPU cost at a fixed packet rate: UDP datagrams at `--pps`
//! (default 10,000) over a veth pair into a network namespace, in rounds without and
//! with the collector attached to the near end. Prints, per round, the rate reached and
//! the CPU the process used (/proc/self/stat), and with the collector the run time of
//! its programs as measured by the kernel (BPF run-time statistics, as `bpftool prog
//! show` reports with `kernel.bpf_stats_enabled=1`): that is its cost, in % of one core.
//!
//! The far end has no listener, so every datagram is also dropped there (NO_SOCKET) and
//! runs the kfree_skb program (which then skips it: another namespace): a pessimistic
//! load. Root only.
//!
//! cargo run -p x0tta6bl4-node --features ebpf --example ebpf-overhead -- [--pps N] [--seconds S] [--rounds R]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use x0tta6bl4_node::ebpf::testbed::Testbed;
use x0tta6bl4_node::ebpf::{enable_run_time_stats, is_root, EbpfCollector, Interfaces};

struct Args {
    pps: u64,
    seconds: u64,
    rounds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pps: 10_000,
        seconds: 5,
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} takes a positive whole number, not {value:?}"))?;
        match flag.as_str() {
            "--pps" => args.pps = number,
            "--seconds" => args.seconds = number,
            "--rounds" => args.rounds = number,
            other => return Err(format!("unknown flag {other} (--pps, --seconds, --rounds)")),
        }
    }
    if args.pps == 0 || args.seconds == 0 || args.rounds == 0 {
        return Err("--pps, --seconds and --rounds must be at least 1".into());
    }
    Ok(args)
}

/// utime + stime of this process, seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Round {
    sent: u64,
    seconds: f64,
    cpu_seconds: f64,
}

/// Send at `pps` for `seconds`, in bursts every millisecond.
fn load(socket: &UdpSocket, to: SocketAddr, pps: u64, seconds: u64) -> Round {
    let payload = [0u8; 100];
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    let total = pps * seconds;
    let mut sent = 0;
    let mut tick = 0u64;
    while sent < total {
        tick += 1;
        let due = (pps * tick / 1000).min(total);
        while sent < due {
            if socket.send_to(&payload, to).is_ok() {
                sent += 1;
            } else {
                break;
            }
        }
        let next = start + Duration::from_millis(tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Round {
        sent,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: process_cpu_seconds() - cpu_start,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ebpf-overhead: {e}");
            std::process::exit(2);
        }
    };
    if !is_root() {
        eprintln!("ebpf-overhead: needs root (veth pairs, namespaces, eBPF): run it with sudo");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("ebpf-overhead: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let bed = Testbed::create("b")?;
    let socket = UdpSocket::bind((bed.local, 0)).map_err(|e| format!("bind: {e}"))?;
    let to = SocketAddr::from((bed.peer, 9));
    let _stats = enable_run_time_stats()?;
    println!(
        "{} pps of 100-byte UDP datagrams over veth {} for {} s per round",
        args.pps, bed.interface, args.seconds
    );
    println!(
        "round  collector  pps_reached  process_cpu_%  bpf_run_time_%_of_a_core  ns_per_run  runs"
    );
    let mut bpf_shares = Vec::new();
    let mut cpu = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        let off = load(&socket, to, args.pps, args.seconds);
        print_round(round, "off", &off, None);
        cpu[0].push(off.cpu_seconds / off.seconds);
        let collector = EbpfCollector::load(&Interfaces::Named(vec![bed.interface.clone()]))
            .map_err(|e| e.to_string())?;
        let before = collector.run_times()?;
        let on = load(&socket, to, args.pps, args.seconds);
        let after = collector.run_times()?;
        let run_ns: u128 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| (a.run_time - b.run_time).as_nanos())
            .sum();
        let runs: u64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.run_count - b.run_count)
            .sum();
        let share = run_ns as f64 / 1e9 / on.seconds;
        print_round(round, "on", &on, Some((share, run_ns, runs)));
        bpf_shares.push(share);
        cpu[1].push(on.cpu_seconds / on.seconds);
        drop(collector);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "eBPF collector cost at {} pps: {:.3} % of one core (BPF run time; target < 2 %); \
         process CPU {:.1} % without, {:.1} % with",
        args.pps,
        100.0 * mean(&bpf_shares),
        100.0 * mean(&cpu[0]),
        100.0 * mean(&cpu[1]),
    );
    println!(
        "command: cargo run -p x0tta6bl4-node --features ebpf --example ebpf-overhead -- --pps {} --seconds {} --rounds {}",
        args.pps, args.seconds, args.rounds
    );
    Ok(())
}

fn print_round(round: u64, collector: &str, r: &Round, bpf: Option<(f64, u128, u64)>) {
    let (share, per_run, runs) = match bpf {
        Some((share, ns, runs)) => (
            format!("{:.3}", 100.0 * share),
            format!("{:.0}", ns as f64 / runs.max(1) as f64),
            runs.to_string(),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    println!(
        "{round:>5}  {collector:>9}  {:>11.0}  {:>13.1}  {share:>24}  {per_run:>10}  {runs}",
        r.sent as f64 / r.seconds,
        100.0 * r.cpu_seconds / r.seconds,
    );
}
