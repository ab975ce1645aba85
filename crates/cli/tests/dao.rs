//! `x0tta6bl4 dao`: off-chain governance signed with real SVID keys from `ca issue`, and the
//! participation simulation.

mod common;

use std::path::Path;

use common::{ca_init, ca_issue, code, path, run, stderr, stdout};

fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
    stdout(&output)
}

/// `dao init` of the governance both end-to-end tests use: registrar `root`, voting delay
/// 10, period 100, timelock 50, grace period 100, quorum 50 %.
fn init_governance(state: &str) {
    ok(&[
        "dao",
        "init",
        "--state",
        state,
        "--registrar",
        "root",
        "--voting-delay",
        "10",
        "--voting-period",
        "100",
        "--timelock",
        "50",
        "--grace-period",
        "100",
        "--quorum-percent",
        "50",
    ]);
}

fn refused(args: &[&str], exit: i32, reason: &str) {
    let output = run(args);
    assert_eq!(code(&output), exit, "{args:?}: {}", stdout(&output));
    let err = stderr(&output);
    assert!(err.starts_with("x0tta6bl4: "), "{err}");
    assert!(
        err.contains(reason),
        "{args:?}: expected `{reason}` in {err}"
    );
}

#[test]
fn signed_governance_from_proposal_to_execution() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "mesh.test");
    let key = |n: &str| dir.path().join(n).join("svid_key.pem");
    for n in ["alice", "bob", "carol"] {
        ca_issue(&ca, n, &dir.path().join(n));
    }
    let state = dir.path().join("dao.json");
    let s = path(&state);
    let id = |n: &str| format!("spiffe://mesh.test/node/{n}");
    init_governance(s);
    for n in ["alice", "bob", "carol"] {
        let k = key(n);
        ok(&[
            "dao",
            "admit",
            "--state",
            s,
            "--registrar",
            "root",
            "--operator",
            &id(n),
            "--key-file",
            path(&k),
            "--at",
            "1",
        ]);
    }
    let (alice, bob, carol) = (id("alice"), id("bob"), id("carol"));
    let (ka, kb, kc) = (key("alice"), key("bob"), key("carol"));
    let out = ok(&[
        "dao",
        "propose",
        "--state",
        s,
        "--as",
        &alice,
        "--key-file",
        path(&ka),
        "--template",
        "parameter-change",
        "--name",
        "protocol.probe_interval_ms",
        "--value",
        "200",
        "--description",
        "slower probes",
        "--at",
        "100",
    ]);
    assert!(out.contains("\"proposal\":1"), "{out}");
    // malformed arguments are refused with the contracts' reason
    refused(
        &[
            "dao",
            "propose",
            "--state",
            s,
            "--as",
            &alice,
            "--key-file",
            path(&ka),
            "--template",
            "node-ban",
            "--node",
            "spiffe:///x",
            "--reason",
            "r",
            "--description",
            "d",
            "--at",
            "100",
        ],
        1,
        "factory: malformed SPIFFE ID",
    );
    ok(&[
        "dao",
        "delegate",
        "--state",
        s,
        "--as",
        &carol,
        "--key-file",
        path(&kc),
        "--to",
        &bob,
        "--at",
        "105",
    ]);
    refused(
        &[
            "dao",
            "delegate",
            "--state",
            s,
            "--as",
            &bob,
            "--key-file",
            path(&kb),
            "--to",
            &carol,
            "--at",
            "106",
        ],
        1,
        "registry: delegation cycle",
    );
    refused(
        &[
            "dao",
            "vote",
            "--state",
            s,
            "--as",
            &bob,
            "--key-file",
            path(&kb),
            "--proposal",
            "1",
            "--support",
            "for",
            "--votes",
            "2",
            "--at",
            "105",
        ],
        1,
        "governance: vote outside the voting window",
    );
    // signed with someone else's key
    refused(
        &[
            "dao",
            "vote",
            "--state",
            s,
            "--as",
            &bob,
            "--key-file",
            path(&ka),
            "--proposal",
            "1",
            "--support",
            "for",
            "--votes",
            "2",
            "--at",
            "120",
        ],
        1,
        "signature does not verify",
    );
    refused(
        &[
            "dao",
            "vote",
            "--state",
            s,
            "--as",
            &bob,
            "--key-file",
            path(&kb),
            "--proposal",
            "1",
            "--support",
            "for",
            "--votes",
            "11",
            "--at",
            "120",
        ],
        1,
        "qv: insufficient voice credits",
    );
    let out = ok(&[
        "dao",
        "vote",
        "--state",
        s,
        "--as",
        &bob,
        "--key-file",
        path(&kb),
        "--proposal",
        "1",
        "--support",
        "for",
        "--votes",
        "3",
        "--at",
        "120",
    ]);
    assert!(out.contains("\"credits_used\":9"), "{out}");
    let tally = ok(&[
        "dao",
        "tally",
        "--state",
        s,
        "--proposal",
        "1",
        "--json",
        "--at",
        "130",
    ]);
    let v: serde_json::Value = serde_json::from_str(&tally).unwrap();
    assert_eq!(
        v["tally"]["for_votes"], 6,
        "bob's 3 votes count for carol too: {v}"
    );
    assert_eq!(v["tally"]["represented"], 2);
    assert_eq!(v["state"], "Active");
    ok(&[
        "dao",
        "queue",
        "--state",
        s,
        "--proposal",
        "1",
        "--at",
        "211",
    ]);
    refused(
        &[
            "dao",
            "execute",
            "--state",
            s,
            "--proposal",
            "1",
            "--at",
            "212",
        ],
        1,
        "governance: timelock not elapsed",
    );
    let effect = ok(&[
        "dao",
        "execute",
        "--state",
        s,
        "--proposal",
        "1",
        "--at",
        "261",
    ]);
    assert!(
        effect.contains("parameter_changed") && effect.contains("\"new\":200"),
        "{effect}"
    );
    let status = ok(&["dao", "status", "--state", s, "--at", "300"]);
    assert!(
        status.contains("protocol.probe_interval_ms = 200"),
        "{status}"
    );
    assert!(status.contains("1 Executed slower probes"), "{status}");
    assert!(!Path::new(&format!("{s}.tmp")).exists());
}

#[test]
fn bad_state_files_and_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dao.json");
    std::fs::write(&state, "{ not json").unwrap();
    refused(
        &["dao", "status", "--state", path(&state)],
        2,
        "not a DAO state file",
    );
    refused(
        &[
            "dao",
            "status",
            "--state",
            path(&dir.path().join("none.json")),
        ],
        2,
        "dao init",
    );
    refused(
        &["dao", "simulate", "--voters", "1"],
        2,
        "--voters 1 is out of range",
    );
    refused(
        &["dao", "simulate", "--proxy-share", "1.5"],
        2,
        "--proxy-share 1.5 is out of range",
    );
    let s = path(&state);
    std::fs::remove_file(&state).unwrap();
    refused(
        &[
            "dao",
            "init",
            "--state",
            s,
            "--registrar",
            "r",
            "--quorum-percent",
            "0",
        ],
        2,
        "governance: quorum out of range",
    );
    for sub in [
        "simulate",
        "init",
        "keygen",
        "admit",
        "propose",
        "vote",
        "delegate",
        "tally",
        "status",
        "queue",
        "execute",
        "sentiment",
        "predict",
        "deploy",
    ] {
        let help = ok(&["dao", sub, "--help"]);
        assert!(help.contains("Usage: x0tta6bl4 dao"), "{sub}: {help}");
    }
}

#[test]
fn simulate_reaches_the_participation_target_with_delegation_and_proxy() {
    let out = ok(&[
        "dao",
        "simulate",
        "--voters",
        "200",
        "--proposals",
        "60",
        "--seed",
        "3",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = |i: usize| v["scenarios"][i]["participation"].as_f64().unwrap();
    assert!((0.03..0.08).contains(&p(0)), "baseline {}", p(0));
    assert!(p(1) > p(0), "delegation {} vs {}", p(1), p(0));
    assert!(p(2) >= 0.20, "with delegation and auto-proxy {}", p(2));
    assert!(v["proxy_examples"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("threshold"));
    let text = ok(&["dao", "simulate", "--voters", "50", "--proposals", "5"]);
    assert!(
        text.contains("Beta(0.25, 4.75)") && text.contains("delegation+proxy"),
        "{text}"
    );
}

/// A one-operator governance (quorum 50 %) that passes `template` and executes it with
/// `extra` arguments; returns execute's output.
fn pass_and_execute(
    dir: &Path,
    ca: &Path,
    template: &[&str],
    extra: &[&str],
) -> std::process::Output {
    let state = dir.join("dao.json");
    let s = path(&state);
    let key = dir.join("alice").join("svid_key.pem");
    let alice = "spiffe://mesh.test/node/alice";
    if !state.exists() {
        ca_issue(ca, "alice", &dir.join("alice"));
        init_governance(s);
        ok(&[
            "dao",
            "admit",
            "--state",
            s,
            "--registrar",
            "root",
            "--operator",
            alice,
            "--key-file",
            path(&key),
            "--at",
            "1",
        ]);
    }
    let mut propose = vec![
        "dao",
        "propose",
        "--state",
        s,
        "--as",
        alice,
        "--key-file",
        path(&key),
        "--description",
        "d",
        "--at",
        "100",
    ];
    propose.extend_from_slice(template);
    let out = ok(&propose);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["proposal"].as_u64().unwrap().to_string();
    ok(&[
        "dao",
        "vote",
        "--state",
        s,
        "--as",
        alice,
        "--key-file",
        path(&key),
        "--proposal",
        &id,
        "--support",
        "for",
        "--votes",
        "1",
        "--at",
        "150",
    ]);
    ok(&[
        "dao",
        "queue",
        "--state",
        s,
        "--proposal",
        &id,
        "--at",
        "250",
    ]);
    let mut execute = vec![
        "dao",
        "execute",
        "--state",
        s,
        "--proposal",
        &id,
        "--at",
        "300",
    ];
    execute.extend_from_slice(extra);
    run(&execute)
}

#[test]
fn executed_proposals_reach_the_ca_and_the_node_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "mesh.test");
    // A parameter change is written into the node's configuration, comments kept.
    let config = dir.path().join("node.toml");
    let original = "listen = \"127.0.0.1:7001\"\napi_listen = \"127.0.0.1:8001\"\n[identity]\ndir = \"svid\"\n[protocol]\n# how often we probe\nprobe_interval_ms = 50\n";
    std::fs::write(&config, original).unwrap();
    let change = [
        "--template",
        "parameter-change",
        "--name",
        "protocol.probe_interval_ms",
        "--value",
        "200",
    ];
    let output = pass_and_execute(dir.path(), &ca, &change, &["--node-config", path(&config)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).contains("\"new\":200"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original.replace("= 50", "= 200")
    );
    // A configuration the node would refuse: nothing changes, the proposal stays queued.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 3\n").unwrap();
    let output = pass_and_execute(dir.path(), &ca, &change, &["--node-config", path(&bad)]);
    assert_eq!(code(&output), 2, "{}", stdout(&output));
    assert!(
        stderr(&output).contains("the node would refuse its configuration"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), "listen = 3\n");
    let status = ok(&[
        "dao",
        "status",
        "--state",
        path(&dir.path().join("dao.json")),
        "--at",
        "300",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["proposals"][1]["state"], "Queued", "{status}");
    // A ban outside the CA's trust domain is refused before anything happens.
    let foreign = [
        "--template",
        "node-ban",
        "--node",
        "spiffe://other.test/node/mallory",
        "--reason",
        "r",
    ];
    let output = pass_and_execute(dir.path(), &ca, &foreign, &["--ca", path(&ca)]);
    assert_eq!(code(&output), 2, "{}", stdout(&output));
    assert!(stderr(&output).contains("not a node of this CA's trust domain"));
    // A node ban becomes a CA-signed revocation, which `ca issue` then honours.
    ca_issue(&ca, "mallory", &dir.path().join("mallory"));
    let ban = [
        "--template",
        "node-ban",
        "--node",
        "spiffe://mesh.test/node/mallory",
        "--reason",
        "rogue routes",
    ];
    let output = pass_and_execute(dir.path(), &ca, &ban, &["--ca", path(&ca)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let out = stdout(&output);
    assert!(
        out.contains("node_banned")
            && out.contains("\"target\":\"spiffe://mesh.test/node/mallory\""),
        "{out}"
    );
    let reissue = run(&[
        "ca",
        "issue",
        "--dir",
        path(&ca),
        "--name",
        "mallory",
        "--out",
        path(&dir.path().join("mallory2")),
    ]);
    assert_ne!(code(&reissue), 0, "a revoked node gets no new SVID");
    assert!(stderr(&reissue).contains("revoked"), "{}", stderr(&reissue));

    // --node-api: a ban without --ca is refused before anything executes; a node that
    // does not answer is reported per node, and the exit is 1 after the others.
    let ban_eve = [
        "--template",
        "node-ban",
        "--node",
        "spiffe://mesh.test/node/eve",
        "--reason",
        "r",
    ];
    let output = pass_and_execute(
        dir.path(),
        &ca,
        &ban_eve,
        &["--node-api", "http://127.0.0.1:9"],
    );
    assert_eq!(code(&output), 2, "{}", stdout(&output));
    assert!(
        stderr(&output).contains("a node ban needs --ca DIR"),
        "{}",
        stderr(&output)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}");
    let faster = [
        "--template",
        "parameter-change",
        "--name",
        "protocol.probe_interval_ms",
        "--value",
        "100",
    ];
    let output = pass_and_execute(
        dir.path(),
        &ca,
        &faster,
        &["--node-config", path(&config), "--node-api", &url],
    );
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    let out = stdout(&output);
    let node: serde_json::Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
    assert_eq!(node["node_api"], url.as_str());
    assert_eq!(node["accepted"], false, "{node}");
    assert!(
        stderr(&output).contains("the proposal is executed, but 1 of 1 nodes did not take"),
        "{}",
        stderr(&output)
    );
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("probe_interval_ms = 100"));
}

#[test]
fn sentiment_scores_texts_and_files_with_the_domain_lexicon() {
    let out = ok(&[
        "dao",
        "sentiment",
        "Another outage last night and the latency is back",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["texts"][0]["sentiment"];
    assert!(s["compound"].as_f64().unwrap() < -0.4, "{out}");
    assert_eq!(s["domain_words"], serde_json::json!(["outage", "latency"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discussion.txt");
    std::fs::write(
        &file,
        "Great idea, the mesh gets more resilient.\n\nLove it, failover is faster.\n",
    )
    .unwrap();
    let text = ok(&["dao", "sentiment", "--file", path(&file)]);
    assert!(text.contains("mean compound +0."), "{text}");
    assert!(text.contains("resilient"), "{text}");
    std::fs::write(&file, "\n  \n").unwrap();
    refused(
        &["dao", "sentiment", "--file", path(&file)],
        2,
        "no text to score",
    );
    refused(
        &["dao", "sentiment", "--file", path(&dir.path().join("nope"))],
        2,
        "cannot read the file",
    );
    let output = run(&["dao", "sentiment"]);
    assert_eq!(code(&output), 2, "a text or --file is required");
}

#[test]
fn predict_beats_the_base_rate_on_held_out_proposals() {
    let out = ok(&[
        "dao",
        "predict",
        "--voters",
        "150",
        "--proposals",
        "400",
        "--seed",
        "5",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &v["evaluation"];
    let f = |k: &str, m: &str| e[k][m].as_f64().unwrap();
    assert_eq!(
        (e["train"].as_u64(), e["test"].as_u64()),
        (Some(280), Some(120))
    );
    assert!(
        f("predictor", "accuracy") > f("baseline", "accuracy") + 0.05,
        "{out}"
    );
    assert!(f("predictor", "brier") < f("baseline", "brier"), "{out}");
    let text = ok(&["dao", "predict", "--proposals", "100", "--voters", "40"]);
    assert!(
        text.contains("logistic regression") && text.contains("base rate"),
        "{text}"
    );
    refused(
        &["dao", "predict", "--train-share", "1.5"],
        2,
        "--train-share 1.5 is out of range",
    );
    refused(
        &["dao", "simulate", "--proxy-threshold", "0.3"],
        2,
        "--proxy-threshold 0.3 is out of range",
    );
}

#[test]
fn simulate_records_why_the_proxy_refused() {
    let out = ok(&[
        "dao",
        "simulate",
        "--voters",
        "120",
        "--proposals",
        "20",
        "--proxy-threshold",
        "0.97",
        "--train-proposals",
        "100",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["scenarios"][2]["proxy_declined"].as_u64().unwrap() > 0,
        "{out}"
    );
    let refusals: Vec<_> = v["proxy_examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["support"] == "none")
        .collect();
    assert!(!refusals.is_empty(), "{out}");
    assert!(refusals[0]["reason"]
        .as_str()
        .unwrap()
        .contains("below the threshold 0.97"));
}

/// anvil from contracts/node_modules (scripts/build-contracts.sh), $X0TTA6BL4_ANVIL or PATH.
fn anvil() -> Option<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("X0TTA6BL4_ANVIL") {
        candidates.push(std::path::PathBuf::from(p));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts/node_modules/.bin/anvil"),
    );
    candidates.push("anvil".into());
    candidates.into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deploy_to_anvil_over_json_rpc() {
    let Some(anvil) = anvil() else {
        let why =
            "anvil is missing: run scripts/build-contracts.sh (npm @foundry-rs/anvil-linux-amd64)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} (CI=true)"
        );
        eprintln!("SKIPPED: {why}");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _node = Killed(
        std::process::Command::new(anvil)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--silent",
            ])
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed().as_secs() < 20,
            "anvil did not listen within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    // anvil's first development account (funded at start; its key is public).
    let key = dir.path().join("deployer.key");
    std::fs::write(
        &key,
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n",
    )
    .unwrap();
    let out = dir.path().join("deployment.json");
    let operator = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    let printed = ok(&[
        "dao",
        "deploy",
        "--rpc",
        &url,
        "--key-file",
        path(&key),
        "--operator",
        operator,
        "--out",
        path(&out),
    ]);
    let json: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json, written);
    assert_eq!(json["chain_id"], 31337);
    assert_eq!(
        json["deployer"].as_str().unwrap().to_lowercase(),
        "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    );
    assert_eq!(
        json["operators"][0].as_str().unwrap().to_lowercase(),
        operator.to_lowercase()
    );
    // 3 deployments, 1 admission, the role grant and the ownership transfer.
    assert_eq!(json["transactions"].as_array().unwrap().len(), 6, "{json}");
    for c in ["parameters", "registry", "governance"] {
        assert!(json[c].as_str().unwrap().starts_with("0x"), "{json}");
    }
    // anvil's latest hardfork has a base fee: EIP-1559 transactions, fees from
    // eth_feeHistory; --legacy and given fees are honoured.
    assert_eq!(json["transaction_type"], "eip1559", "{json}");
    let legacy = ok(&[
        "dao",
        "deploy",
        "--rpc",
        &url,
        "--key-file",
        path(&key),
        "--legacy",
    ]);
    let legacy: serde_json::Value = serde_json::from_str(&legacy).unwrap();
    assert_eq!(legacy["transaction_type"], "legacy", "{legacy}");
    let given = ok(&[
        "dao",
        "deploy",
        "--rpc",
        &url,
        "--key-file",
        path(&key),
        "--max-fee-per-gas",
        "40000000000",
        "--max-priority-fee-per-gas",
        "2000000000",
    ]);
    let given: serde_json::Value = serde_json::from_str(&given).unwrap();
    assert_eq!(given["transaction_type"], "eip1559", "{given}");
    refused(
        &[
            "dao",
            "deploy",
            "--rpc",
            &url,
            "--key-file",
            path(&key),
            "--max-fee-per-gas",
            "1000",
            "--max-priority-fee-per-gas",
            "2000",
        ],
        1,
        "below the priority fee",
    );
    let conflict = run(&[
        "dao",
        "deploy",
        "--rpc",
        &url,
        "--key-file",
        path(&key),
        "--legacy",
        "--max-fee-per-gas",
        "1",
    ]);
    assert_eq!(code(&conflict), 2, "{}", stderr(&conflict));

    // Bad input: a key file that is not a key, an endpoint nobody serves, a bad address.
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "hello").unwrap();
    refused(
        &["dao", "deploy", "--rpc", &url, "--key-file", path(&bad_key)],
        2,
        "64 hex digits",
    );
    refused(
        &[
            "dao",
            "deploy",
            "--rpc",
            &url,
            "--key-file",
            path(&key),
            "--operator",
            "0x12",
        ],
        2,
        "not an address",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    refused(
        &[
            "dao",
            "deploy",
            "--rpc",
            &format!("http://127.0.0.1:{closed}"),
            "--key-file",
            path(&key),
        ],
        1,
        "cannot reach the JSON-RPC endpoint",
    );
}

/// The auto-proxy in the signed ledger: opt-ins signed with SVID keys (a wrongly signed one
/// refused and without effect), proxy votes recorded with their reasons, shown by `tally`
/// and `status`, verified from the state file, and a forged record caught.
#[test]
fn auto_proxy_opt_ins_are_signed_and_its_votes_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "mesh.test");
    let names = ["alice", "bob", "carol", "dave"];
    for n in names {
        ca_issue(&ca, n, &dir.path().join(n));
    }
    let key = |n: &str| dir.path().join(n).join("svid_key.pem");
    let id = |n: &str| format!("spiffe://mesh.test/node/{n}");
    let state = dir.path().join("dao.json");
    let s = path(&state);
    init_governance(s);
    for n in names {
        let k = key(n);
        ok(&[
            "dao",
            "admit",
            "--state",
            s,
            "--registrar",
            "root",
            "--operator",
            &id(n),
            "--key-file",
            path(&k),
            "--at",
            "1",
        ]);
    }
    let (ka, kc, kd) = (key("alice"), key("carol"), key("dave"));
    ok(&[
        "dao",
        "propose",
        "--state",
        s,
        "--as",
        &id("alice"),
        "--key-file",
        path(&ka),
        "--template",
        "parameter-change",
        "--name",
        "protocol.probe_interval_ms",
        "--value",
        "200",
        "--description",
        "slower probes save battery",
        "--at",
        "100",
    ]);
    // bob signs with carol's key: refused, and the proxy never votes for bob.
    refused(
        &[
            "dao",
            "proxy",
            "opt-in",
            "--state",
            s,
            "--as",
            &id("bob"),
            "--key-file",
            path(&kc),
            "--follow-delegate",
            &id("alice"),
            "--at",
            "101",
        ],
        1,
        "signature does not verify with the registered key of spiffe://mesh.test/node/bob",
    );
    refused(
        &[
            "dao",
            "proxy",
            "opt-in",
            "--state",
            s,
            "--as",
            &id("carol"),
            "--key-file",
            path(&kc),
            "--follow-prediction",
            "0.2",
            "--at",
            "101",
        ],
        1,
        "outside 0.5",
    );
    // carol follows alice; dave follows the prediction at 0.6.
    ok(&[
        "dao",
        "proxy",
        "opt-in",
        "--state",
        s,
        "--as",
        &id("carol"),
        "--key-file",
        path(&kc),
        "--follow-delegate",
        &id("alice"),
        "--at",
        "102",
    ]);
    ok(&[
        "dao",
        "proxy",
        "opt-in",
        "--state",
        s,
        "--as",
        &id("dave"),
        "--key-file",
        path(&kd),
        "--follow-prediction",
        "0.6",
        "--at",
        "102",
    ]);
    ok(&[
        "dao",
        "vote",
        "--state",
        s,
        "--as",
        &id("alice"),
        "--key-file",
        path(&ka),
        "--proposal",
        "1",
        "--support",
        "for",
        "--votes",
        "3",
        "--at",
        "120",
    ]);
    let out = ok(&[
        "dao",
        "proxy",
        "run",
        "--state",
        s,
        "--proposal",
        "1",
        "--at",
        "180",
        "--json",
    ]);
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{out}");
    assert_eq!(records[0]["operator"], id("carol"));
    assert_eq!(records[0]["support"], "for");
    assert!(records[0]["reason"]
        .as_str()
        .unwrap()
        .contains("follows delegate"));
    assert_eq!(records[1]["operator"], id("dave"));
    assert!(
        records[1]["reason"]
            .as_str()
            .unwrap()
            .contains("P(for wins)"),
        "{out}"
    );
    assert!(
        records[1]["inputs"]["predictor"]["weights"].is_array(),
        "{out}"
    );
    // bob (no valid opt-in) has no vote: alice, carol and maybe dave are represented.
    let tally = ok(&[
        "dao",
        "tally",
        "--state",
        s,
        "--proposal",
        "1",
        "--at",
        "181",
        "--json",
    ]);
    let t: serde_json::Value = serde_json::from_str(&tally).unwrap();
    let proxy_votes = records.iter().filter(|r| r["votes"] == 1).count() as u64;
    assert_eq!(t["tally"]["represented"], 1 + proxy_votes, "{tally}");
    assert_eq!(t["proxy"].as_array().unwrap().len(), 2, "{tally}");
    assert_eq!(t["proxy_unverified"], 0);
    let text = ok(&[
        "dao",
        "tally",
        "--state",
        s,
        "--proposal",
        "1",
        "--at",
        "181",
    ]);
    assert!(text.contains("auto-proxy decisions"), "{text}");
    assert!(
        text.contains(&format!("{} for (1 votes): follows delegate", id("carol"))),
        "{text}"
    );
    let status = ok(&["dao", "status", "--state", s, "--at", "181"]);
    assert!(status.contains("auto-proxy opt-ins: 2"), "{status}");
    assert!(
        status.contains(&format!("proxy for {}: for", id("carol"))),
        "{status}"
    );
    assert!(ok(&["dao", "proxy", "verify", "--state", s]).contains("2 of 2 proxy records verified"));

    // Revoked: dave's opt-in is gone.
    ok(&[
        "dao",
        "proxy",
        "opt-out",
        "--state",
        s,
        "--as",
        &id("dave"),
        "--key-file",
        path(&kd),
        "--at",
        "182",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "dao", "status", "--state", s, "--at", "182", "--json",
    ]))
    .unwrap();
    assert_eq!(v["proxies"].as_array().unwrap().len(), 1, "{v}");

    // A record changed in the file is caught by anyone who verifies.
    let text = std::fs::read_to_string(&state).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["proxy_log"][0]["support"] = "against".into();
    std::fs::write(&state, serde_json::to_string(&json).unwrap()).unwrap();
    refused(
        &["dao", "proxy", "verify", "--state", s],
        1,
        "1 proxy records do not verify",
    );
    let text = ok(&[
        "dao",
        "tally",
        "--state",
        s,
        "--proposal",
        "1",
        "--at",
        "183",
    ]);
    assert!(
        text.contains("WARNING: 1 proxy records do not verify"),
        "{text}"
    );
}

/// A counter of a node's /metrics (0 when absent).
fn metric(api: std::net::SocketAddr, line_start: &str) -> u64 {
    let (_, metrics) = common::http(api, "GET", "/metrics", None);
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// The probe interval a node has in force (`GET /api/v1/config`).
fn probe_interval_ms(api: std::net::SocketAddr) -> u64 {
    let (status, body) = common::http(api, "GET", "/api/v1/config", None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["protocol"]["probe_interval_ms"].as_u64().unwrap()
}

/// Frames a node sent during `window` (probes and their answers, mostly).
fn frames_sent_in(api: std::net::SocketAddr, window: std::time::Duration) -> u64 {
    let before = metric(api, "x0tta6bl4_frames_sent_total ");
    std::thread::sleep(window);
    metric(api, "x0tta6bl4_frames_sent_total ") - before
}

/// Issue 16: executed proposals reach running node processes. A ban posted by `dao
/// execute --node-api` cuts the banned node off (its links refused); a parameter change
/// written by `--node-config` is reloaded by the nodes without a restart, and their probe
/// rate follows; a node reloads on SIGHUP too, and keeps its configuration when the file
/// is invalid.
#[test]
fn executed_proposals_reach_running_nodes_without_a_restart() {
    // a dials b, b dials c, c dials a.
    let mesh = common::Mesh::start(&["a", "b", "c"], &[&[1], &[2], &[0]]);
    mesh.wait_converged(std::time::Duration::from_secs(30));
    let root = mesh.dir.path();
    let ca = root.join("ca");
    let (api_a, api_b) = (mesh.nodes[0].1, mesh.nodes[1].1);
    let (url_a, url_b) = (mesh.api(0), mesh.api(1));

    // The ban of c: revoked in the CA and posted to a and b, which both accept.
    let ban = [
        "--template",
        "node-ban",
        "--node",
        "spiffe://test.x0tta6bl4.mesh/node/c",
        "--reason",
        "rogue routes",
    ];
    let start = std::time::Instant::now();
    let output = pass_and_execute(
        root,
        &ca,
        &ban,
        &[
            "--ca",
            path(&ca),
            "--node-api",
            &url_a,
            "--node-api",
            &url_b,
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["effect"], "node_banned", "{lines:?}");
    assert_eq!(lines[1]["target"], "spiffe://test.x0tta6bl4.mesh/node/c");
    for (line, url) in lines[2..].iter().zip([&url_a, &url_b]) {
        assert_eq!(line["node_api"], url.as_str());
        assert_eq!(line["accepted"], true, "{line}");
    }
    let cut_off = || {
        [api_a, api_b].iter().all(|&api| {
            let get = |target: &str| {
                let (_, body) = common::http(api, "GET", target, None);
                serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
            };
            let linked = get("/api/v1/peers")
                .iter()
                .any(|p| p["name"] == "c" && p["state"] == "up");
            let routed = get("/api/v1/routes")
                .iter()
                .any(|r| r["destination"] == "c");
            !linked && !routed
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cut_off() {
        assert!(
            std::time::Instant::now() < deadline,
            "c still linked\n{}",
            mesh.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!(
        "ban: c cut off {:?} after dao execute started",
        start.elapsed()
    );
    // c redials a: refused by a's policy, and it stays out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let deny = "x0tta6bl4_policy_decisions_total{decision=\"deny\",action=\"neighbour\"}";
    while metric(api_a, deny) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refused link from c at a\n{}",
            mesh.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(cut_off(), "c got back in");

    // The probe interval: 50 ms in force, then 1000 ms after the executed change, with
    // no restart: the frames a sends to b fall accordingly.
    assert_eq!(probe_interval_ms(api_a), 50);
    let window = std::time::Duration::from_millis(1500);
    let fast = frames_sent_in(api_a, window);
    let configs = [root.join("a/node.toml"), root.join("b/node.toml")];
    let change = [
        "--template",
        "parameter-change",
        "--name",
        "protocol.probe_interval_ms",
        "--value",
        "1000",
    ];
    let output = pass_and_execute(
        root,
        &ca,
        &change,
        &[
            "--node-config",
            path(&configs[0]),
            "--node-config",
            path(&configs[1]),
            "--node-api",
            &url_a,
            "--node-api",
            &url_b,
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let out = stdout(&output);
    let reloads: Vec<serde_json::Value> = out
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reloads.len(), 2, "{out}");
    for r in &reloads {
        assert_eq!(r["accepted"], true, "{r}");
        assert_eq!(
            r["answer"]["applied"],
            serde_json::json!(["protocol.probe_interval_ms"]),
            "{r}"
        );
        assert_eq!(
            r["answer"]["restart_required"],
            serde_json::json!([]),
            "{r}"
        );
    }
    assert_eq!(probe_interval_ms(api_a), 1000);
    assert_eq!(probe_interval_ms(api_b), 1000);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let slow = frames_sent_in(api_a, window);
    eprintln!(
        "frames a sent in {window:?}: {fast} at 50 ms probes, {slow} at 1000 ms (no restart)"
    );
    assert!(slow * 4 < fast, "{fast} frames before, {slow} after");

    // SIGHUP: b re-reads its file; an invalid file is refused and the old settings stay.
    let b_config = std::fs::read_to_string(&configs[1]).unwrap();
    let hup = |pid: u32| {
        // The shell's own `kill`: no procps needed.
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -HUP {pid}")])
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::write(&configs[1], b_config.replace("= 1000", "= 300")).unwrap();
    hup(mesh.nodes[1].2.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while probe_interval_ms(api_b) != 300 {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.logs());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(&configs[1], b_config.replace("= 1000", "= 1")).unwrap();
    let (status, body) = common::http(api_b, "POST", "/api/v1/config/reload", Some("{}"));
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("protocol.probe_interval_ms") && body.contains("is kept"),
        "{body}"
    );
    assert_eq!(probe_interval_ms(api_b), 300);
    // A setting read only at start is reported, not applied.
    std::fs::write(
        &configs[1],
        b_config.replace("standalone = false", "standalone = true"),
    )
    .unwrap();
    let (status, body) = common::http(api_b, "POST", "/api/v1/config/reload", Some("{}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["restart_required"],
        serde_json::json!(["standalone"]),
        "{body}"
    );
    assert_eq!(
        v["applied"],
        serde_json::json!(["protocol.probe_interval_ms"]),
        "{body}"
    );
    assert!(
        mesh.logs().contains("configuration reloaded"),
        "{}",
        mesh.logs()
    );
}
