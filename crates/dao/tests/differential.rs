//! Differential test: random histories of admissions, removals, delegations (including
//! self-delegations and cycles), proposals from every template (valid and malformed), votes
//! (within and beyond the credits, inside and outside the window), cancels, queues and
//! executions, run through the off-chain engine and through the contracts in revm. After
//! every operation both must agree: the same success or the same refusal reason, the same
//! returned value, and for every proposal the same state and the same tally; at the end the
//! same governed parameters, ban list, operators and delegations.
//!
//! `DAO_DIFF_CASES` (default 1000) and `DAO_DIFF_SEED` (default 1) choose the histories.

mod common;

use std::collections::BTreeMap;

use alloy_primitives::Address;
use common::{artifacts, OnChain, ADMIN};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use x0tta6bl4_dao::engine::{Action, Engine, ProposalState, Rules};

const CANDIDATES: usize = 9;
const ADMIN_ID: &str = "admin";
const PARAMS: [&str; 3] = [
    "protocol.probe_interval_ms",
    "protocol.spf_delay_ms",
    "protocol.bogus_ms",
];
const NODES: [&str; 5] = [
    "spiffe://mesh.test/node/a",
    "spiffe://mesh.test/node/b",
    "spiffe:///no-domain",
    "https://mesh.test/node/c",
    "spiffe://",
];

fn id(i: usize) -> String {
    format!("spiffe://mesh.test/operator/{i}")
}

fn addr(i: usize) -> Address {
    Address::repeat_byte(0x10 + i as u8)
}

fn addr_of(id_: &str) -> Address {
    if id_.is_empty() {
        return Address::ZERO;
    }
    (0..CANDIDATES)
        .find(|&i| id(i) == id_)
        .map(addr)
        .unwrap_or(Address::repeat_byte(0xee))
}

fn random_action(rng: &mut ChaCha8Rng) -> Action {
    match rng.random_range(0..5) {
        0 => Action::ParameterChange {
            name: PARAMS[rng.random_range(0..PARAMS.len())].to_string(),
            value: [0, 5, 10, 500, 1_000, 10_000, 10_001][rng.random_range(0..7)],
        },
        1 => Action::NodeBan {
            spiffe_id: NODES[if rng.random_bool(0.7) {
                rng.random_range(0..2)
            } else {
                rng.random_range(0..NODES.len())
            }]
            .to_string(),
            reason: match rng.random_range(0..6) {
                0 => String::new(),
                1 => "x".repeat(281),
                _ => "floods the mesh".to_string(),
            },
        },
        2 => Action::KeyRotation {
            spiffe_id: if rng.random_bool(0.3) {
                String::new()
            } else {
                NODES[rng.random_range(0..NODES.len())].to_string()
            },
        },
        3 => Action::PolicyChange {
            hash: if rng.random_bool(0.2) {
                [0; 32]
            } else {
                [rng.random_range(1..=255u8); 32]
            },
            uri: match rng.random_range(0..6) {
                0 => String::new(),
                1 => "u".repeat(257),
                _ => "https://policy.mesh.test/v2".to_string(),
            },
        },
        _ => Action::AdmitOperator {
            operator: if rng.random_bool(0.1) {
                String::new()
            } else {
                id(rng.random_range(0..CANDIDATES))
            },
        },
    }
}

struct Case {
    engine: Engine,
    chain: OnChain,
    now: u64,
    ops: usize,
    /// Proposals verified in a terminal state (Canceled, Defeated, Expired, Executed): their
    /// state and tally can no longer change, so they are not queried again.
    settled: std::collections::BTreeSet<u64>,
}

/// How often each outcome and state was seen, so the test proves it covered them.
type Coverage = BTreeMap<String, usize>;

impl Case {
    fn check(&mut self, step: &str) {
        let count = self.engine.proposals().len() as u64;
        let open: Vec<u64> = (1..=count).filter(|p| !self.settled.contains(p)).collect();
        for p in open {
            let state = self.engine.state(p, self.now);
            let off = state.clone().map(|s| s as u8);
            let on = self.chain.state(p);
            assert_eq!(
                off.map_err(|e| e.to_string()),
                on,
                "state of {p} after {step}"
            );
            if state != Ok(ProposalState::Pending) || self.ops.is_multiple_of(8) {
                let off = self.engine.tally(p).map_err(|e| e.to_string());
                let on = self.chain.tally(p);
                assert_eq!(off, on, "tally of {p} after {step}");
            }
            use ProposalState::*;
            if matches!(state, Ok(Canceled | Defeated | Expired | Executed)) {
                self.settled.insert(p);
            }
        }
    }

    fn final_check(&mut self) {
        assert_eq!(self.engine.operator_count(), self.chain.operator_count());
        for i in 0..CANDIDATES {
            assert_eq!(
                self.engine.is_operator(&id(i)),
                self.chain.is_operator(addr(i))
            );
            let off = self
                .engine
                .delegate_of(&id(i))
                .map(addr_of)
                .unwrap_or(Address::ZERO);
            assert_eq!(off, self.chain.delegate_of(addr(i)), "delegate of {i}");
        }
        for p in &self.engine.mesh.parameters.clone() {
            assert_eq!(p.value, self.chain.parameter(&p.name), "{}", p.name);
        }
        for node in NODES {
            assert_eq!(
                self.engine.mesh.banned.contains(node),
                self.chain.banned(node)
            );
        }
    }
}

fn run_case(artifacts: &x0tta6bl4_dao::evm::Artifacts, seed: u64, seen: &mut Coverage) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rules = Rules {
        voting_delay: rng.random_range(0..4),
        voting_period: rng.random_range(1..30),
        timelock_delay: rng.random_range(0..10),
        grace_period: rng.random_range(1..20),
        quorum_percent: rng.random_range(1..=50),
    };
    let engine = Engine::new(rules, ADMIN_ID).unwrap();
    let now = 1_000;
    let mut case = Case {
        engine,
        chain: OnChain::new(artifacts, &rules, now),
        now,
        ops: 0,
        settled: Default::default(),
    };
    let initial = rng.random_range(2..=6);
    for i in 0..initial {
        case.engine.admit(ADMIN_ID, &id(i), now).unwrap();
        case.chain.admit(ADMIN, addr(i)).unwrap();
    }
    let steps = rng.random_range(15..40);
    for _ in 0..steps {
        // mostly operators, sometimes strangers; mostly existing proposals, preferring those
        // a queue or an execute can act on
        let who = if rng.random_bool(0.85) {
            rng.random_range(0..(initial + 1).min(CANDIDATES))
        } else {
            rng.random_range(0..CANDIDATES)
        };
        let count = case.engine.proposals().len() as u64;
        let op = if count == 0 && rng.random_bool(0.6) {
            36 // a history needs proposals early
        } else {
            rng.random_range(0..100)
        };
        let ready: Vec<u64> = (1..=count)
            .filter(|&p| {
                let s = case.engine.state(p, case.now);
                let wanted = if op >= 88 {
                    ProposalState::Queued
                } else {
                    ProposalState::Succeeded
                };
                s == Ok(wanted) || (op < 81 && s == Ok(ProposalState::Active))
            })
            .collect();
        let pid = if !ready.is_empty() && rng.random_bool(0.7) {
            ready[rng.random_range(0..ready.len())]
        } else if count > 0 && rng.random_bool(0.8) {
            rng.random_range(1..=count)
        } else {
            rng.random_range(0..=count + 1)
        };
        let step = format!("op {op} by {who} on {pid} at {}", case.now);
        let (off, on): (Result<u64, String>, Result<u64, String>) = match op {
            0..=14 => {
                case.now += if rng.random_bool(0.5) {
                    rng.random_range(0..=3)
                } else {
                    rng.random_range(
                        0..=(rules.voting_period / 2
                            + rules.timelock_delay
                            + rules.grace_period / 2
                            + 2),
                    )
                };
                case.chain.at(case.now);
                (Ok(0), Ok(0))
            }
            15..=18 => {
                let (caller, from) = if rng.random_bool(0.8) {
                    (ADMIN_ID.to_string(), ADMIN)
                } else {
                    (id(who), addr(who))
                };
                let target = rng.random_range(0..CANDIDATES);
                (
                    case.engine
                        .admit(&caller, &id(target), case.now)
                        .map(|_| 0)
                        .map_err(|e| e.to_string()),
                    case.chain.admit(from, addr(target)).map(|_| 0),
                )
            }
            19..=20 => {
                let target = rng.random_range(0..CANDIDATES);
                (
                    case.engine
                        .remove(ADMIN_ID, &id(target), case.now)
                        .map(|_| 0)
                        .map_err(|e| e.to_string()),
                    case.chain.remove(ADMIN, addr(target)).map(|_| 0),
                )
            }
            21..=32 => {
                let to = rng.random_range(0..CANDIDATES);
                (
                    case.engine
                        .delegate(&id(who), &id(to), case.now)
                        .map(|_| 0)
                        .map_err(|e| e.to_string()),
                    case.chain.delegate(addr(who), addr(to)).map(|_| 0),
                )
            }
            33..=35 => (
                case.engine
                    .undelegate(&id(who), case.now)
                    .map(|_| 0)
                    .map_err(|e| e.to_string()),
                case.chain.undelegate(addr(who)).map(|_| 0),
            ),
            36..=47 => {
                let action = random_action(&mut rng);
                let description = match rng.random_range(0..20) {
                    0 => String::new(),
                    1 => "d".repeat(10_001),
                    _ => format!("proposal {step}"),
                };
                (
                    case.engine
                        .propose(&id(who), action.clone(), &description, case.now)
                        .map_err(|e| e.to_string()),
                    case.chain
                        .propose(addr(who), &action, &description, addr_of),
                )
            }
            48..=77 => {
                let support = match rng.random_range(0..20) {
                    0 => 3,
                    1..=6 => 0,
                    7..=17 => 1,
                    _ => 2,
                };
                let votes = rng.random_range(0..=11);
                (
                    case.engine
                        .cast_vote(&id(who), pid, support, votes, case.now)
                        .map_err(|e| e.to_string()),
                    case.chain.vote(addr(who), pid, support, votes),
                )
            }
            78..=80 => (
                case.engine
                    .cancel(&id(who), pid, case.now)
                    .map(|_| 0)
                    .map_err(|e| e.to_string()),
                case.chain.cancel(addr(who), pid).map(|_| 0),
            ),
            81..=87 => (
                case.engine.queue(pid, case.now).map_err(|e| e.to_string()),
                case.chain.queue(pid),
            ),
            _ => (
                case.engine
                    .execute(pid, case.now)
                    .map(|_| 0)
                    .map_err(|e| e.to_string()),
                case.chain.execute(pid).map(|_| 0),
            ),
        };
        assert_eq!(off, on, "seed {seed}: {step}");
        let kind = [
            "time",
            "admit",
            "remove",
            "delegate",
            "undelegate",
            "propose",
            "vote",
            "cancel",
            "queue",
            "execute",
        ][[15, 19, 21, 33, 36, 48, 78, 81, 88, 100]
            .iter()
            .position(|&b| op < b)
            .unwrap()];
        let outcome = match &off {
            Ok(_) => format!("ok {kind}"),
            Err(reason) => reason.clone(),
        };
        *seen.entry(outcome).or_default() += 1;
        for p in 1..=case.engine.proposals().len() as u64 {
            if let Ok(state) = case.engine.state(p, case.now) {
                *seen.entry(format!("state {state:?}")).or_default() += 1;
            }
        }
        case.ops += 1;
        case.check(&format!("seed {seed}: {step}"));
    }
    case.final_check();
    case.ops
}

#[test]
fn engine_and_evm_agree_on_random_histories() {
    let artifacts = artifacts();
    let cases: u64 = std::env::var("DAO_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed: u64 = std::env::var("DAO_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut ops = 0;
    let mut seen = Coverage::new();
    for case in 0..cases {
        ops += run_case(
            &artifacts,
            seed.wrapping_mul(1_000_003).wrapping_add(case),
            &mut seen,
        );
    }
    for (outcome, count) in &seen {
        println!("  {count:>7}  {outcome}");
    }
    if cases >= 1000 {
        let must = [
            "ok execute",
            "ok queue",
            "ok cancel",
            "ok delegate",
            "ok vote",
            "ok propose",
            "registry: delegation cycle",
            "registry: self delegation",
            "qv: insufficient voice credits",
            "governance: vote outside the voting window",
            "governance: timelock not elapsed",
            "governance: not an operator at the snapshot",
            "factory: malformed SPIFFE ID",
            "registry: already an operator",
            "state Pending",
            "state Active",
            "state Canceled",
            "state Defeated",
            "state Succeeded",
            "state Queued",
            "state Expired",
            "state Executed",
        ];
        for m in must {
            assert!(
                seen.contains_key(m),
                "the random histories never produced `{m}`: widen the generator"
            );
        }
    }
    println!("differential: {cases} cases, {ops} operations, engine and EVM agree on every result, state and tally");
}
