//! The contracts on a real devnet over JSON-RPC: Foundry's anvil (npm
//! `@foundry-rs/anvil-linux-amd64`, installed into contracts/node_modules by
//! scripts/build-contracts.sh) started on loopback; the contracts deployed by
//! `x0tta6bl4_dao::rpc::deploy` (what `dao deploy` runs), then a proposal carried end to end
//! with signed transactions (delegate, propose, vote, queue, execute) and the executed
//! parameter read back. Refusals on the way come back with the contracts' revert reasons.
//! Without anvil the test fails under `CI=true` and is skipped otherwise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{keccak256, Address, TxKind, B256, U256};
use k256::ecdsa::SigningKey;
use serde_json::json;
use x0tta6bl4_dao::engine::Rules;
use x0tta6bl4_dao::evm::{
    default_artifact_dir, Artifacts, IMeshGovernance as G, IMeshParameters as P,
    IOperatorRegistry as R,
};
use x0tta6bl4_dao::rpc::{self, FeePolicy, Rpc, RpcError, Wallet};

/// anvil: $X0TTA6BL4_ANVIL, contracts/node_modules/.bin/anvil, or on PATH.
pub fn anvil_binary() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("X0TTA6BL4_ANVIL") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts/node_modules/.bin/anvil"),
    );
    candidates.push(PathBuf::from("anvil"));
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A running anvil, killed on drop.
pub struct Anvil {
    child: Child,
    pub url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Anvil {
    pub async fn start(binary: &Path) -> Anvil {
        Anvil::start_with(binary, &[]).await
    }

    /// anvil with extra arguments (e.g. `--hardfork berlin`: blocks without a base fee).
    pub async fn start_with(binary: &Path, extra: &[&str]) -> Anvil {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start anvil");
        let anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let rpc = Rpc::new(&anvil.url).unwrap();
        let start = Instant::now();
        while rpc.chain_id().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "anvil did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anvil
    }
}

fn skip_or_fail(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {what}");
}

/// A deterministic test key (any 32 bytes below the group order).
fn key(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 32]).unwrap()
}

async fn fund(rpc: &Rpc, who: Address) {
    rpc.request("anvil_setBalance", json!([who, "0x56BC75E2D63100000"]))
        .await
        .expect("anvil_setBalance");
}

async fn advance(rpc: &Rpc, seconds: u64) {
    rpc.request("evm_increaseTime", json!([seconds]))
        .await
        .unwrap();
    rpc.request("evm_mine", json!([])).await.unwrap();
}

fn revert_reason(e: RpcError) -> String {
    match e {
        RpcError::Revert { reason, .. } => reason,
        e => panic!("expected a revert, got: {e}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn deploys_to_anvil_and_executes_a_proposal_over_json_rpc() {
    let Some(binary) = anvil_binary() else {
        skip_or_fail(
            "anvil is missing: run scripts/build-contracts.sh (npm @foundry-rs/anvil-linux-amd64)",
        );
        return;
    };
    let artifacts = Artifacts::load(&default_artifact_dir()).unwrap_or_else(|e| panic!("{e}"));
    let anvil = Anvil::start(&binary).await;
    let rpc = Rpc::new(&anvil.url).unwrap();

    // The deployer's key goes through a key file, as `dao deploy --key-file` reads it.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("deployer.key");
    std::fs::write(
        &key_file,
        format!("0x{}\n", alloy_primitives::hex::encode([0x11u8; 32])),
    )
    .unwrap();
    let deployer = Wallet::new(&rpc, rpc::load_key(&key_file).unwrap())
        .await
        .unwrap();
    let ops: Vec<Wallet> = {
        let mut v = Vec::new();
        for b in [0x21u8, 0x22, 0x23] {
            v.push(Wallet::new(&rpc, key(b)).await.unwrap());
        }
        v
    };
    for w in std::iter::once(&deployer).chain(&ops) {
        fund(&rpc, w.address()).await;
    }
    let rules = Rules {
        voting_delay: 60,
        voting_period: 600,
        timelock_delay: 120,
        grace_period: 3_600,
        quorum_percent: 50,
    };
    let addresses: Vec<Address> = ops.iter().map(Wallet::address).collect();
    assert!(
        deployer.supports_eip1559(),
        "anvil's latest hardfork has a base fee"
    );
    let d = rpc::deploy(&deployer, &artifacts, &rules, &addresses)
        .await
        .unwrap();
    assert_eq!(d.chain_id, 31337);
    assert_eq!(d.transaction_type, "eip1559");
    assert_transaction_types(&rpc, &d.transactions, "0x2").await;
    for (name, at) in [
        ("MeshParameters", d.parameters),
        ("OperatorRegistry", d.registry),
        ("MeshGovernance", d.governance),
    ] {
        assert!(
            !rpc.code(at).await.unwrap().is_empty(),
            "no code for {name} at {at}"
        );
    }
    println!(
        "deployed on anvil (chain {}): {} transactions",
        d.chain_id,
        d.transactions.len()
    );
    for (step, hash, gas) in &d.transactions {
        println!("  {step:<45} gas {gas:>9}  {hash}");
    }
    assert_eq!(
        rpc.view(d.registry, R::operatorCountCall {}).await.unwrap(),
        U256::from(3)
    );
    assert_eq!(
        rpc.view(d.parameters, P::ownerCall {}).await.unwrap(),
        d.governance
    );

    // Delegation before the snapshot: op 3 follows op 1; a cycle is refused with its reason.
    ops[2]
        .call(
            d.registry,
            R::delegateCall {
                to: ops[0].address(),
            },
        )
        .await
        .unwrap();
    let cycle = ops[0]
        .call(
            d.registry,
            R::delegateCall {
                to: ops[2].address(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(revert_reason(cycle), "registry: delegation cycle");

    // A malformed proposal is refused; a good one is made.
    let name = "protocol.probe_interval_ms";
    let bad = ops[0]
        .call(
            d.governance,
            G::proposeParameterChangeCall {
                name: name.into(),
                value: U256::from(5),
                description: "too fast".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(revert_reason(bad), "factory: value out of bounds");
    ops[0]
        .call(
            d.governance,
            G::proposeParameterChangeCall {
                name: name.into(),
                value: U256::from(200),
                description: "slower probes on battery nodes".into(),
            },
        )
        .await
        .unwrap();
    let id = rpc
        .view(d.governance, G::proposalCountCall {})
        .await
        .unwrap();
    assert_eq!(id, U256::from(1));
    let early = ops[1]
        .call(
            d.governance,
            G::castVoteCall {
                proposalId: id,
                support: 1,
                votes: U256::from(1),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        revert_reason(early),
        "governance: vote outside the voting window"
    );

    advance(&rpc, rules.voting_delay + 1).await;
    assert_eq!(
        rpc.view(d.governance, G::stateCall { proposalId: id })
            .await
            .unwrap(),
        1,
        "Active"
    );
    ops[0]
        .call(
            d.governance,
            G::castVoteCall {
                proposalId: id,
                support: 1,
                votes: U256::from(5),
            },
        )
        .await
        .unwrap();
    ops[1]
        .call(
            d.governance,
            G::castVoteCall {
                proposalId: id,
                support: 0,
                votes: U256::from(3),
            },
        )
        .await
        .unwrap();
    let greedy = ops[1]
        .call(
            d.governance,
            G::castVoteCall {
                proposalId: id,
                support: 0,
                votes: U256::from(8),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(revert_reason(greedy), "qv: insufficient voice credits");
    let votes = rpc
        .view(d.governance, G::proposalVotesCall { proposalId: id })
        .await
        .unwrap();
    // op 3's power follows op 1's ballot: 5 for (op 1) + 5 for (op 3 through op 1), 3 against.
    assert_eq!(
        (votes.forVotes, votes.againstVotes, votes.represented),
        (U256::from(10), U256::from(3), U256::from(3))
    );

    advance(&rpc, rules.voting_period).await;
    assert_eq!(
        rpc.view(d.governance, G::stateCall { proposalId: id })
            .await
            .unwrap(),
        4,
        "Succeeded"
    );
    deployer
        .call(d.governance, G::queueCall { proposalId: id })
        .await
        .unwrap();
    let soon = deployer
        .call(d.governance, G::executeCall { proposalId: id })
        .await
        .unwrap_err();
    assert_eq!(revert_reason(soon), "governance: timelock not elapsed");
    advance(&rpc, rules.timelock_delay + 1).await;
    let executed = deployer
        .call(d.governance, G::executeCall { proposalId: id })
        .await
        .unwrap();
    println!(
        "executed proposal {id}: transaction {} gas {}",
        executed.hash, executed.gas_used
    );
    assert_eq!(
        rpc.view(d.governance, G::stateCall { proposalId: id })
            .await
            .unwrap(),
        7,
        "Executed"
    );
    let p = rpc
        .view(
            d.parameters,
            P::getParameterCall {
                key: keccak256(name),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        p.value,
        U256::from(200),
        "the executed parameter, read back over JSON-RPC"
    );
    println!("{name} = {} on chain after execution", p.value);

    // Only governance changes parameters now: the deployer cannot.
    let direct = deployer
        .call(
            d.parameters,
            P::setParameterCall {
                key: keccak256(name),
                value: U256::from(300),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        revert_reason(direct),
        format!("OwnableUnauthorizedAccount({})", deployer.address())
    );
}

/// Every transaction's receipt has `type` `kind`, and a type-2 transaction paid its base
/// fee plus a tip within its max fee.
async fn assert_transaction_types(rpc: &Rpc, transactions: &[(String, B256, u64)], kind: &str) {
    for (step, hash, _) in transactions {
        let receipt = rpc
            .request("eth_getTransactionReceipt", json!([hash]))
            .await
            .unwrap();
        assert_eq!(receipt["type"], kind, "{step}: {receipt}");
        let tx = rpc
            .request("eth_getTransactionByHash", json!([hash]))
            .await
            .unwrap();
        assert_eq!(tx["type"], kind, "{step}: {tx}");
        if kind == "0x2" {
            let q = |v: &serde_json::Value| {
                u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
            };
            let (max_fee, tip) = (q(&tx["maxFeePerGas"]), q(&tx["maxPriorityFeePerGas"]));
            assert!(tip <= max_fee, "{step}: tip {tip} above max fee {max_fee}");
            assert!(
                q(&receipt["effectiveGasPrice"]) <= max_fee,
                "{step}: {receipt}"
            );
        }
    }
}

/// Before London (anvil `--hardfork berlin`: blocks without a base fee) the wallet falls
/// back to legacy transactions, and EIP-1559 fees are refused with a reason; on a
/// London chain `FeePolicy` forces legacy or sets the fees.
#[tokio::test(flavor = "current_thread")]
async fn deploys_with_legacy_transactions_before_london_and_with_given_fees_after() {
    let Some(binary) = anvil_binary() else {
        skip_or_fail(
            "anvil is missing: run scripts/build-contracts.sh (npm @foundry-rs/anvil-linux-amd64)",
        );
        return;
    };
    let artifacts = Artifacts::load(&default_artifact_dir()).unwrap_or_else(|e| panic!("{e}"));
    let rules = Rules::default();
    let berlin = Anvil::start_with(&binary, &["--hardfork", "berlin"]).await;
    let rpc = Rpc::new(&berlin.url).unwrap();
    let mut deployer = Wallet::new(&rpc, key(0x31)).await.unwrap();
    fund(&rpc, deployer.address()).await;
    assert!(!deployer.supports_eip1559());
    let e = deployer
        .set_fee_policy(FeePolicy {
            max_priority_fee_per_gas: Some(2_000_000_000),
            ..FeePolicy::default()
        })
        .unwrap_err();
    assert!(e.contains("does not support EIP-1559"), "{e}");
    // The governance contracts need Shanghai's PUSH0, which Berlin lacks: a contract of
    // Berlin's instruction set (its runtime returns 42) goes through the same `send`.
    let initcode =
        alloy_primitives::hex::decode("600a600c600039600a6000f3602a60005260206000f3").unwrap();
    let mined = deployer
        .send("deploy a Berlin contract", TxKind::Create, initcode)
        .await
        .unwrap();
    assert!(
        matches!(mined.fees, rpc::Fees::Legacy { .. }),
        "{:?}",
        mined.fees
    );
    let created = mined.contract.expect("a contract address");
    assert_eq!(
        rpc.code(created).await.unwrap().to_vec(),
        alloy_primitives::hex::decode("602a60005260206000f3").unwrap()
    );
    assert_transaction_types(&rpc, &[("create".into(), mined.hash, 0)], "0x0").await;
    drop(berlin);

    let london = Anvil::start(&binary).await;
    let rpc = Rpc::new(&london.url).unwrap();
    let mut deployer = Wallet::new(&rpc, key(0x32)).await.unwrap();
    fund(&rpc, deployer.address()).await;
    let fees = FeePolicy {
        max_fee_per_gas: Some(50_000_000_000),
        max_priority_fee_per_gas: Some(3_000_000_000),
        ..FeePolicy::default()
    };
    deployer.set_fee_policy(fees).unwrap();
    let d = rpc::deploy(&deployer, &artifacts, &rules, &[])
        .await
        .unwrap();
    assert_eq!(d.transaction_type, "eip1559");
    assert_transaction_types(&rpc, &d.transactions, "0x2").await;
    let tx = rpc
        .request("eth_getTransactionByHash", json!([d.transactions[0].1]))
        .await
        .unwrap();
    assert_eq!(
        (
            tx["maxFeePerGas"].as_str(),
            tx["maxPriorityFeePerGas"].as_str()
        ),
        (Some("0xba43b7400"), Some("0xb2d05e00")),
        "the given fees"
    );
    deployer
        .set_fee_policy(FeePolicy {
            legacy: true,
            ..FeePolicy::default()
        })
        .unwrap();
    let d = rpc::deploy(&deployer, &artifacts, &rules, &[])
        .await
        .unwrap();
    assert_eq!(d.transaction_type, "legacy");
    assert_transaction_types(&rpc, &d.transactions, "0x0").await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_endpoints_and_key_files_are_refused_with_a_reason() {
    assert!(Rpc::new("ftp://example.org")
        .err()
        .unwrap()
        .contains("use http:// or https://"));
    assert!(Rpc::new("not a url").err().unwrap().contains("not a URL"));
    // Nothing listens on this port (bound, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rpc = Rpc::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = rpc.chain_id().await.unwrap_err().to_string();
    assert!(e.contains("cannot reach the JSON-RPC endpoint"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k");
    for (content, expected) in [
        ("0x1234", "64 hex digits"),
        ("zz".repeat(32).as_str(), "64 hex digits"),
        (
            "00".repeat(32).as_str(),
            "not a valid secp256k1 private key",
        ),
    ] {
        std::fs::write(&file, content).unwrap();
        let e = rpc::load_key(&file).unwrap_err();
        assert!(e.contains(expected), "{content}: {e}");
    }
    let e = rpc::load_key(&dir.path().join("missing")).unwrap_err();
    assert!(e.contains("cannot read"), "{e}");
    assert!(rpc::parse_address("0x12")
        .unwrap_err()
        .contains("not an address"));
}
