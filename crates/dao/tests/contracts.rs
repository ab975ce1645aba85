//! The contracts' bytecode (contracts/out, built by scripts/build-contracts.sh) executed in
//! revm: every state transition, every revert path with its reason, quadratic cost,
//! delegation chains and cycles, timelock and expiry, and a gas report.

mod common;

use alloy_primitives::{keccak256, Address, FixedBytes, U256};
use alloy_sol_types::{SolCall, SolInterface};
use common::{artifacts, u48, OnChain, ADMIN};
use x0tta6bl4_dao::engine::{Action, ProposalState as S, Rules};
use x0tta6bl4_dao::evm::{
    initcode, Chain, IMeshGovernance as G, IMeshParameters as P, IOperatorRegistry as R,
};

const RULES: Rules = Rules {
    voting_delay: 10,
    voting_period: 100,
    timelock_delay: 50,
    grace_period: 200,
    quorum_percent: 50,
};
const T0: u64 = 1_000;

fn op(i: usize) -> Address {
    Address::repeat_byte(0x10 + i as u8)
}

/// Deployed contracts with `n` operators admitted at T0.
fn dao(n: usize) -> OnChain {
    let mut c = OnChain::new(&artifacts(), &RULES, T0);
    for i in 0..n {
        c.admit(ADMIN, op(i)).unwrap();
    }
    c
}

fn param(value: u64) -> Action {
    Action::ParameterChange {
        name: "protocol.probe_interval_ms".into(),
        value,
    }
}

fn ban(node: &str) -> Action {
    Action::NodeBan {
        spiffe_id: format!("spiffe://mesh.test/node/{node}"),
        reason: "floods the mesh".into(),
    }
}

fn none(_: &str) -> Address {
    Address::ZERO
}

fn st(c: &mut OnChain, id: u64) -> S {
    S::from_u8(c.state(id).unwrap()).unwrap()
}

#[test]
fn artifacts_match_the_bindings() {
    let a = artifacts();
    for (artifact, selectors) in [
        (
            &a.governance,
            G::IMeshGovernanceCalls::selectors().collect::<Vec<_>>(),
        ),
        (
            &a.registry,
            R::IOperatorRegistryCalls::selectors().collect(),
        ),
        (
            &a.parameters,
            P::IMeshParametersCalls::selectors().collect(),
        ),
    ] {
        let known: Vec<String> = artifact
            .method_identifiers
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        for s in selectors {
            let hex = alloy_primitives::hex::encode(s);
            assert!(
                known.contains(&hex),
                "{}: no function with selector {hex}: rebuild the contracts",
                artifact.name
            );
        }
        assert!(
            artifact.deployed_bytecode.len() <= 24_576,
            "{} over EIP-170",
            artifact.name
        );
    }
}

#[test]
fn deployment_wires_governance() {
    let mut c = dao(0);
    let (p, g) = (c.d.parameters, c.d.governance);
    assert_eq!(c.view(p, P::ownerCall {}).unwrap(), g);
    assert_eq!(c.view(p, P::parameterCountCall {}).unwrap(), U256::from(6));
    assert_eq!(c.parameter("protocol.probe_interval_ms"), 50);
    // the constructor refuses bad rules
    let mut chain = Chain::new();
    let bad = G::constructorCall {
        parameters: p,
        registry: c.d.registry,
        votingDelay: u48(1),
        votingPeriod: u48(1),
        timelockDelay: u48(1),
        gracePeriod: u48(1),
        quorumPercent: U256::from(101),
    };
    let err = chain
        .deploy(ADMIN, initcode(&artifacts().governance, bad))
        .unwrap_err();
    assert_eq!(err.reason(), Some("governance: quorum out of range"));
}

#[test]
fn full_lifecycle_executes_a_parameter_change() {
    let mut c = dao(4);
    let id = c
        .propose(op(0), &param(200), "slower probes", none)
        .unwrap();
    assert_eq!(id, 1);
    assert_eq!(st(&mut c, id), S::Pending);
    assert_eq!(
        c.vote(op(1), id, 1, 1),
        Err("governance: vote outside the voting window".into())
    );
    c.at(T0 + 10);
    assert_eq!(
        st(&mut c, id),
        S::Pending,
        "the snapshot instant is still pending"
    );
    c.at(T0 + 11);
    assert_eq!(st(&mut c, id), S::Active);
    assert_eq!(c.vote(op(0), id, 1, 4), Ok(16));
    assert_eq!(c.vote(op(1), id, 1, 2), Ok(4));
    assert_eq!(c.vote(op(2), id, 0, 3), Ok(9));
    assert_eq!(
        c.queue(id),
        Err("governance: proposal not successful".into())
    );
    c.at(T0 + 110);
    assert_eq!(st(&mut c, id), S::Active);
    c.at(T0 + 111);
    assert_eq!(st(&mut c, id), S::Succeeded);
    assert_eq!(
        c.vote(op(3), id, 1, 1),
        Err("governance: vote outside the voting window".into())
    );
    assert_eq!(c.execute(id), Err("governance: proposal not queued".into()));
    assert_eq!(c.queue(id), Ok(T0 + 161));
    assert_eq!(st(&mut c, id), S::Queued);
    assert_eq!(
        c.queue(id),
        Err("governance: proposal not successful".into())
    );
    assert_eq!(
        c.execute(id),
        Err("governance: timelock not elapsed".into())
    );
    c.at(T0 + 161);
    c.execute(id).unwrap();
    assert_eq!(st(&mut c, id), S::Executed);
    assert_eq!(c.parameter("protocol.probe_interval_ms"), 200);
    assert_eq!(c.execute(id), Err("governance: proposal not queued".into()));
}

#[test]
fn defeated_without_quorum_or_majority() {
    let mut c = dao(4);
    let a = c.propose(op(0), &param(100), "a", none).unwrap();
    let b = c.propose(op(0), &param(101), "b", none).unwrap();
    let t = c.propose(op(0), &param(102), "tie", none).unwrap();
    c.at(T0 + 11);
    // a: one of four operators (25 % < 50 % quorum)
    c.vote(op(0), a, 1, 10).unwrap();
    // b: quorum, but more against
    c.vote(op(0), b, 1, 2).unwrap();
    c.vote(op(1), b, 0, 3).unwrap();
    // tie: for == against is defeated
    c.vote(op(0), t, 1, 3).unwrap();
    c.vote(op(1), t, 0, 3).unwrap();
    c.at(T0 + 111);
    for id in [a, b, t] {
        assert_eq!(st(&mut c, id), S::Defeated, "proposal {id}");
        assert_eq!(
            c.queue(id),
            Err("governance: proposal not successful".into())
        );
    }
    assert_eq!(
        c.view(
            c.d.governance,
            G::quorumCall {
                proposalId: U256::from(a)
            }
        )
        .unwrap(),
        U256::from(2)
    );
}

#[test]
fn queued_proposal_expires_after_the_grace_period() {
    let mut c = dao(2);
    let id = c.propose(op(0), &ban("n1"), "ban n1", none).unwrap();
    c.at(T0 + 11);
    c.vote(op(0), id, 1, 1).unwrap();
    c.at(T0 + 111);
    let eta = c.queue(id).unwrap();
    c.at(eta + 200);
    assert_eq!(st(&mut c, id), S::Queued);
    c.at(eta + 201);
    assert_eq!(st(&mut c, id), S::Expired);
    assert_eq!(c.execute(id), Err("governance: proposal not queued".into()));
    assert!(!c.banned("spiffe://mesh.test/node/n1"));
}

#[test]
fn cancel_only_by_the_proposer_while_pending() {
    let mut c = dao(2);
    let id = c.propose(op(0), &param(60), "x", none).unwrap();
    assert_eq!(
        c.cancel(op(1), id),
        Err("governance: only the proposer can cancel".into())
    );
    c.cancel(op(0), id).unwrap();
    assert_eq!(st(&mut c, id), S::Canceled);
    assert_eq!(
        c.cancel(op(0), id),
        Err("governance: proposal not pending".into())
    );
    c.at(T0 + 11);
    assert_eq!(
        c.vote(op(0), id, 1, 1),
        Err("governance: vote outside the voting window".into())
    );
    let active = c.propose(op(0), &param(61), "y", none).unwrap();
    c.at(T0 + 22);
    assert_eq!(
        c.cancel(op(0), active),
        Err("governance: proposal not pending".into())
    );
    assert_eq!(
        c.cancel(op(0), 99),
        Err("governance: unknown proposal".into())
    );
    assert_eq!(c.state(0), Err("governance: unknown proposal".into()));
}

#[test]
fn quadratic_cost_and_credit_limits() {
    let mut c = dao(3);
    let g = c.d.governance;
    for v in [0u64, 1, 2, 7, 10] {
        assert_eq!(
            c.view(
                g,
                G::quadraticCostCall {
                    votes: U256::from(v)
                }
            )
            .unwrap(),
            U256::from(v * v)
        );
    }
    assert_eq!(c.view(g, G::VOICE_CREDITSCall {}).unwrap(), U256::from(100));
    let id = c.propose(op(0), &param(70), "x", none).unwrap();
    c.at(T0 + 11);
    assert_eq!(
        c.vote(op(0), id, 1, 11),
        Err("qv: insufficient voice credits".into())
    );
    assert_eq!(
        c.vote(op(0), id, 1, 101),
        Err("qv: insufficient voice credits".into())
    );
    assert_eq!(c.vote(op(0), id, 1, 10), Ok(100));
    assert_eq!(
        c.vote(op(0), id, 2, 1),
        Err("qv: insufficient voice credits".into())
    );
    // adding to a ballot: (6 + 2)^2 = 64, then 8^2 + 6^2 = 100
    assert_eq!(c.vote(op(1), id, 0, 6), Ok(36));
    assert_eq!(c.vote(op(1), id, 0, 2), Ok(64));
    assert_eq!(c.vote(op(1), id, 2, 6), Ok(100));
    assert_eq!(c.vote(op(2), id, 3, 1), Err("qv: invalid vote type".into()));
    assert_eq!(c.vote(op(2), id, 1, 0), Err("qv: zero votes".into()));
    let b = c
        .view(
            g,
            G::ballotOfCall {
                proposalId: U256::from(id),
                voter: op(1),
            },
        )
        .unwrap();
    assert_eq!(
        (b.againstVotes, b.forVotes, b.abstainVotes),
        (U256::from(8), U256::ZERO, U256::from(6))
    );
    assert_eq!(
        c.view(
            g,
            G::creditsUsedCall {
                proposalId: U256::from(id),
                voter: op(1)
            }
        )
        .unwrap(),
        U256::from(100)
    );
    let t = c.tally(id).unwrap();
    assert_eq!(
        (t.against, t.for_votes, t.abstain, t.represented, t.eligible),
        (8, 10, 6, 2, 3)
    );
}

#[test]
fn only_operators_at_the_snapshot_vote() {
    let mut c = dao(2);
    let id = c.propose(op(0), &param(70), "x", none).unwrap();
    c.admit(ADMIN, op(5)).unwrap(); // before the snapshot (T0 + 10): counts
    c.at(T0 + 10);
    c.admit(ADMIN, op(6)).unwrap(); // at the snapshot instant: counts (checkpoint <= snapshot)
    c.at(T0 + 11);
    c.admit(ADMIN, op(7)).unwrap(); // after: does not
    c.remove(ADMIN, op(1)).unwrap(); // removed after the snapshot: still votes
    assert_eq!(
        c.vote(op(7), id, 1, 1),
        Err("governance: not an operator at the snapshot".into())
    );
    assert_eq!(
        c.vote(op(9), id, 1, 1),
        Err("governance: not an operator at the snapshot".into())
    );
    c.vote(op(5), id, 1, 1).unwrap();
    c.vote(op(6), id, 1, 1).unwrap();
    c.vote(op(1), id, 1, 1).unwrap();
    assert_eq!(c.tally(id).unwrap().eligible, 4);
    assert_eq!(
        c.propose(op(1), &param(70), "x", none),
        Err("governance: proposer is not an operator".into())
    );
}

#[test]
fn liquid_delegation_chains_cycles_and_overrides() {
    let mut c = dao(5);
    // chain 0 -> 1 -> 2, and 3 -> 2
    c.delegate(op(0), op(1)).unwrap();
    c.delegate(op(1), op(2)).unwrap();
    c.delegate(op(3), op(2)).unwrap();
    assert_eq!(
        c.delegate(op(2), op(0)),
        Err("registry: delegation cycle".into())
    );
    assert_eq!(
        c.delegate(op(2), op(1)),
        Err("registry: delegation cycle".into())
    );
    assert_eq!(
        c.delegate(op(2), op(2)),
        Err("registry: self delegation".into())
    );
    assert_eq!(
        c.delegate(op(2), op(9)),
        Err("registry: delegate is not an operator".into())
    );
    assert_eq!(
        c.delegate(op(9), op(2)),
        Err("registry: not an operator".into())
    );
    assert_eq!(c.undelegate(op(4)), Err("registry: no delegation".into()));
    assert_eq!(c.delegate_of(op(0)), op(1));
    let id = c.propose(op(4), &param(70), "x", none).unwrap();
    c.at(T0 + 11);
    // after the snapshot: a new delegation does not count for this proposal
    c.delegate(op(4), op(2)).unwrap();
    c.vote(op(2), id, 1, 5).unwrap();
    let t = c.tally(id).unwrap();
    assert_eq!(
        (t.for_votes, t.represented),
        (20, 4),
        "0, 1 and 3 follow 2 (transitive)"
    );
    // a direct vote overrides the delegation for this proposal, and 0 now follows 1
    c.vote(op(1), id, 0, 2).unwrap();
    let t = c.tally(id).unwrap();
    assert_eq!((t.against, t.for_votes, t.represented), (4, 10, 4));
    // the delegation itself is unchanged
    assert_eq!(c.delegate_of(op(1)), op(2));
    // re-delegation after the cycle check passes once the chain is broken
    c.undelegate(op(1)).unwrap();
    c.delegate(op(2), op(0)).unwrap();
    assert_eq!(
        c.tally(id).unwrap().represented,
        4,
        "snapshot tally unchanged"
    );
}

#[test]
fn removal_breaks_a_delegation_chain() {
    let mut c = dao(3);
    c.delegate(op(0), op(1)).unwrap();
    c.delegate(op(1), op(2)).unwrap();
    c.remove(ADMIN, op(1)).unwrap();
    assert_eq!(
        c.delegate_of(op(1)),
        Address::ZERO,
        "a removed operator's delegation is cleared"
    );
    let id = c.propose(op(2), &param(70), "x", none).unwrap();
    c.at(T0 + 11);
    c.vote(op(2), id, 1, 1).unwrap();
    let t = c.tally(id).unwrap();
    assert_eq!(
        (t.represented, t.eligible),
        (1, 2),
        "0's chain stops at the removed 1"
    );
}

#[test]
fn registry_roles() {
    let mut c = dao(1);
    assert_eq!(
        c.admit(op(0), op(1)),
        Err("registry: caller is not a registrar".into())
    );
    assert_eq!(
        c.remove(op(0), op(0)),
        Err("registry: caller is not a registrar".into())
    );
    assert_eq!(
        c.admit(ADMIN, op(0)),
        Err("registry: already an operator".into())
    );
    assert_eq!(
        c.admit(ADMIN, Address::ZERO),
        Err("registry: zero address".into())
    );
    assert_eq!(
        c.remove(ADMIN, op(1)),
        Err("registry: not an operator".into())
    );
    // governance admits through a proposal
    let newcomer = op(7);
    let id = c
        .propose(
            op(0),
            &Action::AdmitOperator {
                operator: "x".into(),
            },
            "admit 7",
            |_| newcomer,
        )
        .unwrap();
    c.at(T0 + 11);
    c.vote(op(0), id, 1, 1).unwrap();
    c.at(T0 + 111);
    c.queue(id).unwrap();
    c.at(T0 + 161);
    c.execute(id).unwrap();
    assert!(c.is_operator(newcomer));
    assert_eq!(c.operator_count(), 2);
    // MeshParameters only obeys governance
    let p = c.d.parameters;
    let err = c
        .tx(
            ADMIN,
            p,
            P::setParameterCall {
                key: keccak256("protocol.spf_delay_ms"),
                value: U256::from(1),
            },
        )
        .map(|_| ());
    assert_eq!(err, Err(format!("OwnableUnauthorizedAccount({ADMIN})")));
}

#[test]
fn factory_validates_template_arguments() {
    let mut c = dao(1);
    let long = "d".repeat(10_001);
    let cases: Vec<(Action, &str, &str)> = vec![
        (
            Action::ParameterChange {
                name: "protocol.nope".into(),
                value: 1,
            },
            "d",
            "factory: unknown parameter",
        ),
        (param(9), "d", "factory: value out of bounds"),
        (param(10_001), "d", "factory: value out of bounds"),
        (
            Action::NodeBan {
                spiffe_id: "spiffe:///x".into(),
                reason: "r".into(),
            },
            "d",
            "factory: malformed SPIFFE ID",
        ),
        (
            Action::NodeBan {
                spiffe_id: "http://x/y".into(),
                reason: "r".into(),
            },
            "d",
            "factory: malformed SPIFFE ID",
        ),
        (
            Action::NodeBan {
                spiffe_id: "spiffe://m/n".into(),
                reason: "".into(),
            },
            "d",
            "factory: empty reason",
        ),
        (
            Action::NodeBan {
                spiffe_id: "spiffe://m/n".into(),
                reason: "r".repeat(281),
            },
            "d",
            "factory: reason too long",
        ),
        (
            Action::KeyRotation {
                spiffe_id: "spiffe://".into(),
            },
            "d",
            "factory: malformed SPIFFE ID",
        ),
        (
            Action::PolicyChange {
                hash: [0; 32],
                uri: "https://p".into(),
            },
            "d",
            "factory: zero policy hash",
        ),
        (
            Action::PolicyChange {
                hash: [1; 32],
                uri: "".into(),
            },
            "d",
            "factory: malformed policy URI",
        ),
        (
            Action::PolicyChange {
                hash: [1; 32],
                uri: "u".repeat(257),
            },
            "d",
            "factory: malformed policy URI",
        ),
        (
            Action::AdmitOperator {
                operator: "".into(),
            },
            "d",
            "factory: zero address",
        ),
        (param(100), "", "factory: empty description"),
        (param(100), &long, "factory: description too long"),
    ];
    for (action, description, reason) in cases {
        assert_eq!(
            c.propose(op(0), &action, description, none),
            Err(reason.to_string()),
            "{action:?}"
        );
    }
    assert_eq!(
        c.propose(
            op(0),
            &Action::AdmitOperator {
                operator: "x".into()
            },
            "d",
            |_| op(0)
        ),
        Err("factory: already an operator".into())
    );
    assert_eq!(
        c.view(c.d.governance, G::proposalCountCall {}).unwrap(),
        U256::ZERO
    );
}

#[test]
fn ban_rotation_and_policy_execute() {
    let mut c = dao(2);
    let node = "spiffe://mesh.test/node/n1";
    let ban1 = c.propose(op(0), &ban("n1"), "ban", none).unwrap();
    let ban2 = c.propose(op(0), &ban("n1"), "ban again", none).unwrap();
    let rot = c
        .propose(
            op(0),
            &Action::KeyRotation {
                spiffe_id: "".into(),
            },
            "rotate all",
            none,
        )
        .unwrap();
    let rot_n1 = c
        .propose(
            op(0),
            &Action::KeyRotation {
                spiffe_id: node.into(),
            },
            "rotate n1",
            none,
        )
        .unwrap();
    let pol = c
        .propose(
            op(0),
            &Action::PolicyChange {
                hash: [7; 32],
                uri: "https://p/v2".into(),
            },
            "policy",
            none,
        )
        .unwrap();
    c.at(T0 + 11);
    for id in [ban1, ban2, rot, rot_n1, pol] {
        c.vote(op(0), id, 1, 1).unwrap();
    }
    c.at(T0 + 111);
    for id in [ban1, ban2, rot, rot_n1, pol] {
        c.queue(id).unwrap();
    }
    c.at(T0 + 161);
    c.execute(ban1).unwrap();
    assert!(c.banned(node));
    assert_eq!(
        c.execute(ban2),
        Err("parameters: node already banned".into())
    );
    assert_eq!(
        st(&mut c, ban2),
        S::Queued,
        "a failed execution changes nothing"
    );
    assert_eq!(c.execute(rot_n1), Err("parameters: node is banned".into()));
    assert_eq!(
        c.propose(op(0), &ban("n1"), "d", none),
        Err("factory: node already banned".into())
    );
    assert_eq!(
        c.propose(
            op(0),
            &Action::KeyRotation {
                spiffe_id: node.into()
            },
            "d",
            none
        ),
        Err("factory: node is banned".into())
    );
    c.execute(rot).unwrap();
    c.execute(pol).unwrap();
    let p = c.d.parameters;
    assert_eq!(
        c.view(
            p,
            P::keyRotatedAtCall {
                nodeId: FixedBytes::ZERO
            }
        )
        .unwrap(),
        U256::from(T0 + 161)
    );
    assert_eq!(
        c.view(p, P::policyHashCall {}).unwrap(),
        FixedBytes([7; 32])
    );
    assert_eq!(c.view(p, P::policyUriCall {}).unwrap(), "https://p/v2");
}

/// Gas of every operation, and of the tally as the electorate grows.
#[test]
fn gas_report() {
    let mut c = dao(0);
    let [gp, gr, gg] = c.d.gas;
    println!("gas report (solc-js 0.8.30, optimizer 200 runs, revm)");
    println!("  deploy MeshParameters     {gp:>9}");
    println!("  deploy OperatorRegistry   {gr:>9}");
    println!("  deploy MeshGovernance     {gg:>9}");
    let (r, g) = (c.d.registry, c.d.governance);
    let admit = c.gas(ADMIN, r, R::admitCall { operator: op(0) });
    c.admit(ADMIN, op(1)).unwrap();
    let delegate = c.gas(op(1), r, R::delegateCall { to: op(0) });
    let propose = c.gas(
        op(0),
        g,
        G::proposeParameterChangeCall {
            name: "protocol.probe_interval_ms".into(),
            value: U256::from(60),
            description: "x".into(),
        },
    );
    let ban = c.gas(
        op(0),
        g,
        G::proposeNodeBanCall {
            spiffeId: "spiffe://mesh/n".into(),
            reason: "r".into(),
            description: "x".into(),
        },
    );
    c.at(T0 + 11);
    let vote = c.gas(
        op(0),
        g,
        G::castVoteCall {
            proposalId: U256::from(1),
            support: 1,
            votes: U256::from(3),
        },
    );
    let vote_more = c.gas(
        op(0),
        g,
        G::castVoteCall {
            proposalId: U256::from(1),
            support: 0,
            votes: U256::from(1),
        },
    );
    c.at(T0 + 111);
    let queue = c.gas(
        ADMIN,
        g,
        G::queueCall {
            proposalId: U256::from(1),
        },
    );
    c.at(T0 + 161);
    let execute = c.gas(
        ADMIN,
        g,
        G::executeCall {
            proposalId: U256::from(1),
        },
    );
    for (name, gas) in [
        ("admit", admit),
        ("delegate", delegate),
        ("proposeParameterChange", propose),
        ("proposeNodeBan", ban),
        ("castVote (first)", vote),
        ("castVote (adding)", vote_more),
        ("queue (2 operators)", queue),
        ("execute (2 operators)", execute),
    ] {
        println!("  {name:<26}{gas:>9}");
    }
    // the tally's cost grows with the operators ever admitted (state() runs it); worst
    // case: one chain of delegations through every operator
    for n in [10usize, 50, 100, 200] {
        let mut c = dao(0);
        let mut chain_gas = 0;
        for i in 0..n {
            let a = Address::from_word(keccak256(i.to_be_bytes()));
            c.admit(ADMIN, a).unwrap();
            if i > 0 {
                let prev = Address::from_word(keccak256((i - 1).to_be_bytes()));
                chain_gas = c.gas(a, c.d.registry, R::delegateCall { to: prev });
            }
        }
        let first = Address::from_word(keccak256(0usize.to_be_bytes()));
        let id = c.propose(first, &param(60), "x", none).unwrap();
        c.at(T0 + 11);
        c.vote(first, id, 1, 1).unwrap();
        c.at(T0 + 111);
        let queue = c.gas(
            ADMIN,
            c.d.governance,
            G::queueCall {
                proposalId: U256::from(id),
            },
        );
        let data = G::stateCall {
            proposalId: U256::from(id),
        }
        .abi_encode();
        let view = c.chain.view_raw(c.d.governance, data).unwrap().gas_used;
        println!(
            "  {n:>3} operators: state() {view:>9}, queue {queue:>9}, delegate {chain_gas:>6}"
        );
        assert!(queue < 16_000_000);
    }
}
