//! Time query embedding alone: `cargo run --release -p x0tta6bl4-rag --example
//! embed_latency [ROUNDS] [QUERIES.json]`. Embeds each of the bench's operator questions
//! (or the texts of a JSON array of strings, e.g. a cached data set's `queries.json`)
//! ROUNDS times (default 20) one at a time, as a query is, and prints p50/p99/max in
//! milliseconds and the process's CPU time per query (load-independent).

use std::time::Instant;

use x0tta6bl4_rag::bench::OPERATOR_QUERIES;
use x0tta6bl4_rag::embed::Embedder;

fn main() -> Result<(), String> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().map_err(|_| format!("`{r}` is not a round count")))
        .transpose()?
        .unwrap_or(20);
    let texts: Vec<String> = match std::env::args().nth(2) {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?,
        )
        .map_err(|e| format!("{path}: {e}"))?,
        None => OPERATOR_QUERIES.iter().map(|q| q.to_string()).collect(),
    };
    let model = Embedder::load_default().map_err(|e| e.to_string())?;
    model.embed_one("warm up").map_err(|e| e.to_string())?;
    let mut ms = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..rounds {
        for q in &texts {
            let t = Instant::now();
            model.embed_one(q).map_err(|e| e.to_string())?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let cpu_ms = (cpu_seconds() - cpu0) * 1e3 / ms.len() as f64;
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "query embedding, {} queries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; CPU {:.2} ms per query (all threads)",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1],
        cpu_ms
    );
    Ok(())
}

/// User + system CPU time of this process so far (from /proc/self/stat, in clock ticks
/// of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}
