//! Run the fuzzer over a range of seeds: `cargo run --release -p x0tta6bl4-twin --example fuzz_many -- FROM COUNT`.
use x0tta6bl4_twin::fuzz::{run_case, FuzzCase};
fn main() {
    let mut args = std::env::args().skip(1);
    let from: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let count: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut failed = 0;
    for seed in from..from + count {
        let case = FuzzCase::from_seed(seed);
        if let Err(e) = run_case(&case) {
            failed += 1;
            println!(
                "FAIL seed {seed} {} {} n={}: {e}",
                case.topology, case.scenario, case.nodes
            );
        }
    }
    println!("{failed} of {count} seeds failed");
}
