//! Time one shortest-path computation over an n-node link-state database:
//! `cargo bench -p x0tta6bl4-twin --bench spf -- 1000`.
use std::sync::Arc;
use x0tta6bl4_proto::wire::{Lsa, LsaLink, SignedLsa};
use x0tta6bl4_proto::{compute_routes, Instant, LinkStateDb, Rng};
use x0tta6bl4_twin::{LinkParams, Topology};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut rng = Rng::seed(1);
    let t =
        Topology::erdos_renyi(n, 4.0 / (n as f64 - 1.0), &mut rng, &LinkParams::default()).unwrap();
    let mut adj = vec![Vec::new(); n];
    for l in &t.links {
        adj[l.a as usize].push(LsaLink {
            neighbour: t.names[l.b as usize].clone(),
            cost: 10 + rng.below(5) as u32,
        });
        adj[l.b as usize].push(LsaLink {
            neighbour: t.names[l.a as usize].clone(),
            cost: 10 + rng.below(5) as u32,
        });
    }
    let mut db = LinkStateDb::new(1 << 20);
    for (i, mut links) in adj.into_iter().enumerate() {
        links.sort_by(|a, b| a.neighbour.cmp(&b.neighbour));
        let lsa = Lsa {
            origin: t.names[i].clone(),
            sequence: 1,
            links,
        };
        db.install(
            Arc::new(SignedLsa {
                lsa,
                credential: Arc::from(&[][..]),
                signature: vec![],
            }),
            Instant::ZERO,
        );
    }
    let runs = 2000;
    let w = std::time::Instant::now();
    for _ in 0..runs {
        std::hint::black_box(compute_routes(&t.names[0], &db));
    }
    println!("command: cargo bench -p x0tta6bl4-twin --bench spf -- {n}");
    println!(
        "compute_routes over {n} nodes: {:?} per run ({runs} runs)",
        w.elapsed() / runs
    );
}
