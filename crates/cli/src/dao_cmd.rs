//! `x0tta6bl4 dao`: the participation simulation and the off-chain (Snapshot-style)
//! governance over a state file, every message signed with the operator's SVID key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use x0tta6bl4_dao::engine::{Action, Rules, Support};
use x0tta6bl4_dao::signed::{self, Ledger, Message};
use x0tta6bl4_dao::{simulate, store};
use x0tta6bl4_proto::NodeName;

use crate::problem::{problem, Exit};

const STATE_HELP: &str = "The governance state file (JSON, replaced atomically on every change)";

/// The `dao` subcommands.
#[derive(Debug, Subcommand)]
pub enum DaoCommand {
    /// Simulate an electorate's participation without and with delegation and auto-proxy.
    ///
    /// N operators (one unit of voting power each) face M proposals, run through the real
    /// governance engine three times with the same random draws: direct votes only; with
    /// liquid delegation; with delegation and an auto-proxy. Model: each operator's
    /// engagement ~ Beta(0.25, 4.75) (mean 0.05: the ~5 % of voting power real DAOs cast per
    /// proposal, Falk et al. 2024), scaled per proposal by a salience ~ LogNormal(mean 1,
    /// sigma 0.5); a share of operators (--delegation-share) delegate to others chosen in
    /// proportion to engagement (cycles refused and redrawn); a share (--proxy-share) opted
    /// in to an auto-proxy with the policy "follow the prediction": at 3/4 of the voting
    /// period, for each of them whose power is not yet cast, it asks the outcome predictor
    /// (logistic regression over discussion sentiment, proposer history, turnout and margin
    /// so far, trained on a separate simulated history of --train-proposals proposals) and
    /// votes the predicted side when its confidence reaches --proxy-threshold, else refuses;
    /// both are recorded with the reason. Participation = share of the voting power at the
    /// snapshot that was cast, directly or through delegation or proxy, averaged over
    /// proposals.
    Simulate(SimulateArgs),
    /// Score the sentiment of a text (VADER with the mesh-operations lexicon).
    ///
    /// Prints VADER's compound score (-1 most negative ... +1 most positive), the shares of
    /// positive, neutral and negative words, and the words the domain lexicon rated
    /// (outage, latency, revoke, failover, ...; see docs/dao.md for their values).
    Sentiment(SentimentArgs),
    /// Train and score the outcome predictor on a simulated proposal history.
    ///
    /// Simulates --proposals proposals (the electorate model of `dao simulate`, with
    /// delegation), trains a logistic regression on the first --train-share of them and
    /// reports its accuracy and Brier score on the held-out rest, next to the base rate
    /// (always predicting the training share of proposals whose votes for won).
    Predict(PredictArgs),
    /// Create a governance state file with its rules and first registrar.
    Init(InitArgs),
    /// Write a new ECDSA P-256 key (PKCS#8 PEM), like an SVID key, for trying the commands.
    Keygen(KeygenArgs),
    /// Admit an operator with the public key of its SVID key file (a registrar's act).
    Admit(AdmitArgs),
    /// Propose, from a template, signed with the operator's key.
    Propose(ProposeArgs),
    /// Vote on a proposal (quadratic: v votes cost v² of the 100 voice credits), signed.
    Vote(VoteArgs),
    /// Delegate your voting power to another operator (liquid, transitive), or undelegate.
    Delegate(DelegateArgs),
    /// Show a proposal's tally with delegation, its quorum and state.
    Tally(TallyArgs),
    /// Show every proposal's state, the operators, and the governed parameters.
    Status(StatusArgs),
    /// The auto-proxy: signed opt-ins in the ledger, proxy votes, and their verification.
    ///
    /// An operator opts in with a signed message naming its policy: follow a delegate (vote
    /// the side of that operator's ballot once they voted) or follow the prediction (vote
    /// the side the outcome predictor expects to win when its confidence reaches the
    /// threshold); opt-out revokes it. `proxy run` (anyone may run it, best late in the
    /// vote) applies every opt-in in force to an open proposal: for each operator whose
    /// power is not cast yet, directly or through delegation, it casts 1 vote on the chosen
    /// side or refuses, and records the decision, its reason, its inputs and the signed
    /// opt-in in the state file. `proxy verify` checks every record again from the file.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Queue a successful proposal behind the timelock.
    Queue(ProposalArgs),
    /// Execute a queued proposal whose timelock has elapsed; prints what changed.
    ///
    /// The effect reaches the running mesh with --ca (a node ban becomes a CA-signed
    /// revocation, as `x0tta6bl4 ca revoke` makes) and --node-config (a parameter change is
    /// written into each node configuration file, comments kept); with --node-api the
    /// revocation is posted to the running nodes, and the nodes reload their configuration
    /// (no restart). All is checked before the proposal is executed: a wrong CA, a banned
    /// node outside its trust domain, a configuration the node would refuse, or a bad
    /// --node-api or --svid change nothing.
    Execute(ExecuteArgs),
    /// Deploy the governance contracts to an Ethereum JSON-RPC endpoint.
    ///
    /// Deploys MeshParameters, OperatorRegistry and MeshGovernance (from contracts/out,
    /// built by scripts/build-contracts.sh) with transactions signed locally by --key-file's
    /// account, admits the --operator accounts, grants MeshGovernance the registrar
    /// role and hands it the ownership of MeshParameters. Prints the addresses as JSON (and
    /// writes them to --out). A step the chain would revert stops with its revert reason.
    ///
    /// Fees: when the endpoint's latest block has a base fee (London and later), EIP-1559
    /// (type 2) transactions with the priority fee from eth_feeHistory (the median
    /// 50th-percentile tip of the last 10 blocks, 1 gwei when they paid none) and a max fee
    /// of twice the next base fee plus the tip, unless --max-priority-fee-per-gas and
    /// --max-fee-per-gas say otherwise; before London, or with --legacy, legacy (type 0)
    /// transactions with the EIP-155 chain id at eth_gasPrice. Gas from eth_estimateGas.
    Deploy(DeployArgs),
}

/// The governance rules, the same on chain (`dao deploy`) and off chain (`dao init`).
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Seconds from proposal to snapshot.
    #[arg(long, default_value_t = 3_600)]
    pub voting_delay: u64,
    /// Seconds the vote stays open.
    #[arg(long, default_value_t = 259_200)]
    pub voting_period: u64,
    /// Seconds between queueing and the earliest execution.
    #[arg(long, default_value_t = 86_400)]
    pub timelock: u64,
    /// Seconds after the timelock during which execution is still possible.
    #[arg(long, default_value_t = 604_800)]
    pub grace_period: u64,
    /// Quorum: percent of the operators registered at the snapshot.
    #[arg(long, default_value_t = 20)]
    pub quorum_percent: u64,
}

impl RuleArgs {
    fn rules(&self) -> Rules {
        Rules {
            voting_delay: self.voting_delay,
            voting_period: self.voting_period,
            timelock_delay: self.timelock,
            grace_period: self.grace_period,
            quorum_percent: self.quorum_percent,
        }
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The JSON-RPC endpoint (http:// or https://), e.g. http://127.0.0.1:8545 for anvil.
    #[arg(long)]
    pub rpc: String,
    /// The deployer's secp256k1 private key: a file holding 64 hex digits (0x optional).
    #[arg(long)]
    pub key_file: PathBuf,
    /// An operator account (0x address) to admit at deployment; repeat for more.
    #[arg(long = "operator", value_name = "ADDRESS")]
    pub operators: Vec<String>,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// The compiled contracts (default: contracts/out of the source tree).
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Also write the deployment (addresses, transactions) to this JSON file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds to wait for each transaction's receipt.
    #[arg(long, default_value_t = 120)]
    pub receipt_timeout: u64,
    /// Send legacy (type 0) transactions even when the endpoint supports EIP-1559.
    #[arg(long, conflicts_with_all = ["max_fee_per_gas", "max_priority_fee_per_gas"])]
    pub legacy: bool,
    /// EIP-1559 max fee per gas, in wei (default: twice the next base fee plus the tip).
    #[arg(long, value_name = "WEI")]
    pub max_fee_per_gas: Option<u128>,
    /// EIP-1559 priority fee (tip) per gas, in wei (default: from eth_feeHistory).
    #[arg(long, value_name = "WEI")]
    pub max_priority_fee_per_gas: Option<u128>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Operators in the electorate (2 to 256).
    #[arg(long, default_value_t = 200)]
    pub voters: usize,
    /// Proposals to vote on (1 to 10000).
    #[arg(long, default_value_t = 100)]
    pub proposals: usize,
    /// Seed of every random draw: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of operators who delegate their power.
    #[arg(long, default_value_t = 0.35)]
    pub delegation_share: f64,
    /// Share of operators who opted in to the auto-proxy.
    #[arg(long, default_value_t = 0.20)]
    pub proxy_share: f64,
    /// Confidence the auto-proxy needs before it votes (0.5 to 1).
    #[arg(long, default_value_t = 0.60)]
    pub proxy_threshold: f64,
    /// Proposals of the separate history the proxy's predictor is trained on.
    #[arg(long, default_value_t = 300)]
    pub train_proposals: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SentimentArgs {
    /// The text to score.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub text: Option<String>,
    /// Score each non-empty line of this file (e.g. a proposal's discussion) and their mean.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Operators in the simulated electorate (2 to 256).
    #[arg(long, default_value_t = 200)]
    pub voters: usize,
    /// Proposals in the simulated history (train + held out).
    #[arg(long, default_value_t = 1_000)]
    pub proposals: usize,
    /// Share of the history (the earliest proposals) to train on; the rest is held out.
    #[arg(long, default_value_t = 0.7)]
    pub train_share: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StateArg {
    #[arg(long, default_value = "dao-state.json", help = STATE_HELP)]
    pub state: PathBuf,
    /// The time of the action, in Unix seconds (default: now).
    #[arg(long)]
    pub at: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The first registrar's id (it admits operators).
    #[arg(long)]
    pub registrar: String,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Replace an existing state file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (refuses to overwrite).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct AdmitArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The registrar admitting the operator.
    #[arg(long)]
    pub registrar: String,
    /// The new operator's id (its SPIFFE ID).
    #[arg(long)]
    pub operator: String,
    /// The operator's key file (PKCS#8 PEM); only its public key is kept.
    #[arg(long)]
    pub key_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct Signer {
    /// Your operator id.
    #[arg(long = "as", id = "as", value_name = "OPERATOR")]
    pub id: String,
    /// Your SVID key file (PKCS#8 PEM, P-256); it signs the message.
    #[arg(long)]
    pub key_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProposeArgs {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub signer: Signer,
    /// What the proposal does: parameter-change (--name, --value), node-ban (--node,
    /// --reason), key-rotation (--node, or none for every key), policy-change (--policy-hash,
    /// --uri), admit-operator (--operator).
    #[arg(long, value_parser = ["parameter-change", "node-ban", "key-rotation", "policy-change", "admit-operator"])]
    pub template: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub value: Option<u64>,
    /// A node's SPIFFE ID.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// SHA-256 of the new policy, 64 hex digits.
    #[arg(long)]
    pub policy_hash: Option<String>,
    #[arg(long)]
    pub uri: Option<String>,
    #[arg(long)]
    pub operator: Option<String>,
    /// What the proposal is for, for the voters.
    #[arg(long)]
    pub description: String,
}

#[derive(Debug, Args)]
pub struct VoteArgs {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub signer: Signer,
    /// The proposal's id (1, 2, ...; see `dao status`).
    #[arg(long)]
    pub proposal: u64,
    /// for, against or abstain.
    #[arg(long)]
    pub support: String,
    /// Votes to add to your ballot (the whole ballot may cost at most 100 credits).
    #[arg(long)]
    pub votes: u64,
}

#[derive(Debug, Args)]
pub struct DelegateArgs {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub signer: Signer,
    /// The operator to delegate to.
    #[arg(
        long,
        conflicts_with = "undelegate",
        required_unless_present = "undelegate"
    )]
    pub to: Option<String>,
    /// Withdraw your delegation.
    #[arg(long)]
    pub undelegate: bool,
}

#[derive(Debug, Args)]
pub struct TallyArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The proposal's id (1, 2, ...; see `dao status`).
    #[arg(long)]
    pub proposal: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The proposal's id (1, 2, ...; see `dao status`).
    #[arg(long)]
    pub proposal: u64,
    /// The CA directory (`x0tta6bl4 ca init`): an executed node ban revokes the node there.
    #[arg(long, value_name = "DIR")]
    pub ca: Option<PathBuf>,
    /// A node's configuration file (TOML): an executed parameter change is written into
    /// it. Repeat for more nodes.
    #[arg(long = "node-config", value_name = "FILE")]
    pub node_configs: Vec<PathBuf>,
    /// A running node's HTTP API, e.g. http://127.0.0.1:8001; repeat for more nodes. A node
    /// ban's revocation (with --ca) is posted to each (`POST /api/v1/revocations`, as `ca
    /// revoke --api` does; the nodes flood it on), and after a parameter change (with
    /// --node-config) each node reloads its configuration (`POST /api/v1/config/reload`).
    /// Each node's answer is printed; exit 1 when one did not accept.
    #[arg(long = "node-api", value_name = "URL")]
    pub node_apis: Vec<String>,
    /// An SVID directory for node APIs that require mutual TLS (`[identity] api_mtls`), as
    /// `ca revoke --svid`.
    #[arg(long, value_name = "DIR", env = "X0TTA6BL4_SVID")]
    pub svid: Option<PathBuf>,
}

/// `dao proxy` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Opt in to the auto-proxy with a policy, signed with your key (replaces an earlier
    /// opt-in).
    OptIn(ProxyOptInArgs),
    /// Revoke your opt-in, signed with your key (the proxy's earlier votes stay).
    OptOut(ProxyOptOutArgs),
    /// Run the auto-proxy on an open proposal and record its decisions.
    ///
    /// The follow-the-prediction policies use the outcome predictor trained on a simulated
    /// history (the electorate model of `dao simulate`; --train-proposals, --seed); its
    /// weights are recorded with each decision, so anyone can recompute it.
    Run(ProxyRunArgs),
    /// Check every proxy record of the state file: the opt-in's signature against the
    /// operator's registered key, the decision recomputed from the policy and the recorded
    /// inputs, the sentiment recomputed from the proposal's text, the vote in the ballot.
    /// Exit 1 when a record does not hold.
    Verify(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ProxyOptInArgs {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub signer: Signer,
    /// Follow this operator: vote the side of its ballot once it voted.
    #[arg(
        long,
        value_name = "OPERATOR",
        conflicts_with = "follow_prediction",
        required_unless_present = "follow_prediction"
    )]
    pub follow_delegate: Option<String>,
    /// Follow the prediction when its confidence reaches this threshold (0.5 to 1).
    #[arg(long, value_name = "THRESHOLD")]
    pub follow_prediction: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ProxyOptOutArgs {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub signer: Signer,
}

#[derive(Debug, Args)]
pub struct ProxyRunArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The proposal's id (1, 2, ...; see `dao status`).
    #[arg(long)]
    pub proposal: u64,
    /// Proposals of the simulated history the predictor is trained on (20 to 10000).
    #[arg(long, default_value_t = 300)]
    pub train_proposals: usize,
    /// Seed of the simulated history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProposalArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// The proposal's id (1, 2, ...; see `dao status`).
    #[arg(long)]
    pub proposal: u64,
}

fn usage(what: &str, place: impl std::fmt::Display, fix: &str) -> anyhow::Error {
    problem(Exit::Usage, what, place, fix).into()
}

fn failure(what: &str, place: impl std::fmt::Display, fix: &str) -> anyhow::Error {
    problem(Exit::Failure, what, place, fix).into()
}

fn now(arg: &StateArg) -> u64 {
    arg.at.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

fn load(path: &Path) -> anyhow::Result<Ledger> {
    store::load(path).map_err(|e| {
        usage(
            &e,
            path.display(),
            "create it with `x0tta6bl4 dao init`, or pass the right --state",
        )
    })
}

fn save(path: &Path, ledger: &Ledger) -> anyhow::Result<()> {
    store::save(path, ledger).map_err(|e| {
        failure(
            &e,
            path.display(),
            "check the directory's permissions and space",
        )
    })
}

fn read_key(path: &Path) -> anyhow::Result<signed::EcdsaKeyPair> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(
            &format!("cannot read the key file: {e}"),
            path.display(),
            "pass an SVID key file with --key-file",
        )
    })?;
    signed::key_from_pem(&text).map_err(|e| {
        usage(
            &e,
            path.display(),
            "pass the PKCS#8 PEM key of an SVID (P-256)",
        )
    })
}

/// `dao deploy`: the contracts to a JSON-RPC endpoint.
pub async fn deploy(a: &DeployArgs) -> anyhow::Result<ExitCode> {
    use x0tta6bl4_dao::{evm, rpc};
    let rules = a.rules.rules();
    rules.validate().map_err(|e| {
        usage(
            &format!("invalid rules: {e}"),
            "dao deploy",
            "see --help for the ranges",
        )
    })?;
    let mut operators = Vec::new();
    for o in &a.operators {
        let address = rpc::parse_address(o)
            .map_err(|e| usage(&e, "--operator", "pass 0x followed by 40 hex digits"))?;
        operators.push(address);
    }
    let signer = rpc::load_key(&a.key_file).map_err(|e| {
        usage(
            &e,
            a.key_file.display(),
            "pass the deployer's private key file",
        )
    })?;
    let dir = a
        .artifacts
        .clone()
        .unwrap_or_else(evm::default_artifact_dir);
    let artifacts = evm::Artifacts::load(&dir).map_err(|e| {
        usage(
            &e.to_string(),
            dir.display(),
            "run scripts/build-contracts.sh or pass --artifacts",
        )
    })?;
    let mut endpoint =
        rpc::Rpc::new(&a.rpc).map_err(|e| usage(&e, "--rpc", "pass an http:// or https:// URL"))?;
    endpoint.receipt_timeout = std::time::Duration::from_secs(a.receipt_timeout);
    let mut wallet = rpc::Wallet::new(&endpoint, signer)
        .await
        .map_err(|e| failure(&e.to_string(), &a.rpc, "check --rpc"))?;
    let fees = rpc::FeePolicy {
        legacy: a.legacy,
        max_fee_per_gas: a.max_fee_per_gas,
        max_priority_fee_per_gas: a.max_priority_fee_per_gas,
    };
    wallet
        .set_fee_policy(fees)
        .map_err(|e| usage(&e, &a.rpc, "see `x0tta6bl4 dao deploy --help`, \"Fees\""))?;
    let on_chain = rpc::deploy(&wallet, &artifacts, &rules, &operators)
        .await
        .map_err(|e| {
            failure(
                &format!("deployment failed: {e}"),
                &a.rpc,
                "see the reason; a partial deployment leaves contracts behind, deploy again",
            )
        })?;
    let json =
        serde_json::to_string_pretty(&on_chain).map_err(|e| failure(&e.to_string(), "JSON", ""))?;
    if let Some(out) = &a.out {
        store::write_atomically(out, json.as_bytes()).map_err(|e| {
            failure(
                &e,
                out.display(),
                "check the directory's permissions and space",
            )
        })?;
    }
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

/// Runs one `dao` subcommand.
pub fn run(command: &DaoCommand) -> anyhow::Result<ExitCode> {
    match command {
        DaoCommand::Deploy(_) => Err(usage(
            "dao deploy runs asynchronously",
            "dao",
            "call dao_cmd::deploy",
        )),
        DaoCommand::Simulate(a) => simulate_cmd(a),
        DaoCommand::Sentiment(a) => sentiment_cmd(a),
        DaoCommand::Predict(a) => predict_cmd(a),
        DaoCommand::Init(a) => {
            if a.state.state.exists() && !a.force {
                return Err(usage(
                    "the state file exists",
                    a.state.state.display(),
                    "pass --force to replace it, or another --state",
                ));
            }
            let rules = a.rules.rules();
            let ledger = Ledger::new(rules, &a.registrar).map_err(|e| {
                usage(
                    &format!("invalid rules: {e}"),
                    "dao init",
                    "see --help for the ranges",
                )
            })?;
            save(&a.state.state, &ledger)?;
            println!("created {}", a.state.state.display());
            Ok(ExitCode::SUCCESS)
        }
        DaoCommand::Keygen(a) => {
            if a.out.exists() {
                return Err(usage(
                    "the key file exists",
                    a.out.display(),
                    "choose another --out",
                ));
            }
            let pem = signed::generate_key_pem().map_err(|e| failure(&e, "keygen", ""))?;
            std::fs::write(&a.out, pem).map_err(|e| {
                failure(
                    &format!("cannot write the key: {e}"),
                    a.out.display(),
                    "check the directory",
                )
            })?;
            println!("wrote {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        DaoCommand::Admit(a) => {
            let mut ledger = load(&a.state.state)?;
            let key = read_key(&a.key_file)?;
            ledger
                .admit(
                    &a.registrar,
                    &a.operator,
                    &signed::public_key(&key),
                    now(&a.state),
                )
                .map_err(|e| {
                    failure(
                        &format!("admission refused: {e}"),
                        &a.operator,
                        "see the reason",
                    )
                })?;
            save(&a.state.state, &ledger)?;
            println!("admitted {}", a.operator);
            Ok(ExitCode::SUCCESS)
        }
        DaoCommand::Propose(a) => {
            let action = action_of(a)?;
            let message = Message::Propose {
                action,
                description: a.description.clone(),
            };
            apply(&a.state, &a.signer, message)
        }
        DaoCommand::Vote(a) => {
            let support = Support::parse(&a.support).ok_or_else(|| {
                usage(
                    &format!("unknown --support `{}`", a.support),
                    "dao vote",
                    "use for, against or abstain",
                )
            })?;
            apply(
                &a.state,
                &a.signer,
                Message::Vote {
                    proposal: a.proposal,
                    support,
                    votes: a.votes,
                },
            )
        }
        DaoCommand::Delegate(a) => {
            let message = match &a.to {
                Some(to) => Message::Delegate { to: to.clone() },
                None => Message::Undelegate,
            };
            apply(&a.state, &a.signer, message)
        }
        DaoCommand::Tally(a) => {
            let ledger = load(&a.state.state)?;
            let e = &ledger.engine;
            let at = now(&a.state);
            let refused = |r: x0tta6bl4_dao::Refused| {
                usage(
                    &r.to_string(),
                    format!("proposal {}", a.proposal),
                    "see `x0tta6bl4 dao status`",
                )
            };
            let tally = e.tally(a.proposal).map_err(refused)?;
            let state = e.state(a.proposal, at).map_err(refused)?;
            let quorum = e.quorum(a.proposal).map_err(refused)?;
            let proxy = proxy_records(&ledger, a.proposal);
            let unverified = ledger.verify_proxy().len();
            if a.json {
                let v = serde_json::json!({"proposal": a.proposal, "state": format!("{state:?}"), "tally": tally, "quorum": quorum,
                    "proxy": proxy, "proxy_unverified": unverified});
                println!("{v}");
            } else {
                println!(
                    "proposal {}: {:?}\n  for {}  against {}  abstain {}\n  voting power cast {} of {} (quorum {})",
                    a.proposal, state, tally.for_votes, tally.against, tally.abstain, tally.represented, tally.eligible, quorum
                );
                if !proxy.is_empty() {
                    println!("  auto-proxy decisions (signed opt-ins, see `dao proxy verify`):");
                }
                for r in &proxy {
                    println!(
                        "    {} {} ({} votes): {}",
                        r["operator"].as_str().unwrap_or_default(),
                        r["support"].as_str().unwrap_or_default(),
                        r["votes"],
                        r["reason"].as_str().unwrap_or_default()
                    );
                }
                if unverified > 0 {
                    println!("  WARNING: {unverified} proxy records do not verify: run `x0tta6bl4 dao proxy verify`");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DaoCommand::Status(a) => {
            let ledger = load(&a.state.state)?;
            let e = &ledger.engine;
            let at = now(&a.state);
            let proposals: Vec<_> = e
                .proposals()
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "id": p.id, "proposer": p.proposer, "action": p.action,
                        "description": p.description,
                        "state": e.state(p.id, at).map(|s| format!("{s:?}")).unwrap_or_default(),
                        "vote_start": p.vote_start, "vote_end": p.vote_end, "eta": p.eta,
                        "proxy": proxy_records(&ledger, p.id),
                    })
                })
                .collect();
            let operators: Vec<_> = e
                .operators()
                .filter(|o| e.is_operator(o))
                .map(|o| serde_json::json!({"id": o, "delegate": e.delegate_of(o)}))
                .collect();
            let proxies: Vec<_> = ledger
                .proxies()
                .iter()
                .map(|(o, p)| serde_json::json!({"operator": o, "policy": p.policy, "since": p.since}))
                .collect();
            let unverified = ledger.verify_proxy().len();
            if a.json {
                let v = serde_json::json!({"rules": e.rules, "operators": operators, "proposals": proposals, "mesh": e.mesh,
                    "proxies": proxies, "proxy_unverified": unverified});
                println!("{v}");
            } else {
                println!("operators: {}", operators.len());
                for o in &operators {
                    match o["delegate"].as_str() {
                        Some(d) => println!("  {} -> {d}", o["id"].as_str().unwrap_or_default()),
                        None => println!("  {}", o["id"].as_str().unwrap_or_default()),
                    }
                }
                println!("proposals: {}", proposals.len());
                for p in &proposals {
                    println!(
                        "  {} {} {}",
                        p["id"],
                        p["state"].as_str().unwrap_or_default(),
                        p["description"].as_str().unwrap_or_default()
                    );
                    for r in p["proxy"].as_array().into_iter().flatten() {
                        println!(
                            "    proxy for {}: {} ({})",
                            r["operator"].as_str().unwrap_or_default(),
                            r["support"].as_str().unwrap_or_default(),
                            r["reason"].as_str().unwrap_or_default()
                        );
                    }
                }
                println!("auto-proxy opt-ins: {}", proxies.len());
                for (o, p) in ledger.proxies() {
                    let policy = match &p.policy {
                        x0tta6bl4_dao::predict::ProxyPolicy::FollowDelegate { delegate } => {
                            format!("follows delegate {delegate}")
                        }
                        x0tta6bl4_dao::predict::ProxyPolicy::FollowPrediction { threshold } => {
                            format!("follows the prediction at confidence >= {threshold}")
                        }
                    };
                    println!("  {o}: {policy} (since {})", p.since);
                }
                if unverified > 0 {
                    println!("WARNING: {unverified} proxy records do not verify: run `x0tta6bl4 dao proxy verify`");
                }
                println!("parameters:");
                for p in &e.mesh.parameters {
                    println!("  {} = {} [{}..{}]", p.name, p.value, p.min, p.max);
                }
                println!("banned nodes: {}", e.mesh.banned.len());
                for b in &e.mesh.banned {
                    println!("  {b}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DaoCommand::Queue(a) => {
            let mut ledger = load(&a.state.state)?;
            let eta = ledger.queue(a.proposal, now(&a.state)).map_err(|e| {
                failure(
                    &e.to_string(),
                    format!("proposal {}", a.proposal),
                    "see `x0tta6bl4 dao tally`",
                )
            })?;
            save(&a.state.state, &ledger)?;
            println!("proposal {} queued; executable from {eta}", a.proposal);
            Ok(ExitCode::SUCCESS)
        }
        DaoCommand::Execute(_) => Err(usage(
            "dao execute runs asynchronously",
            "dao",
            "call dao_cmd::execute",
        )),
        DaoCommand::Proxy(c) => proxy_cmd(c),
    }
}

fn proxy_cmd(command: &ProxyCommand) -> anyhow::Result<ExitCode> {
    use x0tta6bl4_dao::predict::{Predictor, ProxyPolicy};
    match command {
        ProxyCommand::OptIn(a) => {
            let policy = match (&a.follow_delegate, a.follow_prediction) {
                (Some(delegate), _) => ProxyPolicy::FollowDelegate {
                    delegate: delegate.clone(),
                },
                (None, Some(threshold)) => ProxyPolicy::FollowPrediction { threshold },
                (None, None) => unreachable!("clap requires one policy"),
            };
            apply(&a.state, &a.signer, Message::ProxyOptIn { policy })
        }
        ProxyCommand::OptOut(a) => apply(&a.state, &a.signer, Message::ProxyOptOut),
        ProxyCommand::Run(a) => {
            if !(20..=10_000).contains(&a.train_proposals) {
                return Err(usage(
                    &format!("--train-proposals {} is out of range", a.train_proposals),
                    "dao proxy run",
                    "pass 20 to 10000",
                ));
            }
            let mut ledger = load(&a.state.state)?;
            let predicts = ledger
                .proxies()
                .values()
                .any(|o| matches!(o.policy, ProxyPolicy::FollowPrediction { .. }));
            let predictor = if predicts {
                let model = simulate::Model::new(200, a.train_proposals, a.seed);
                let history = simulate::history(&model)
                    .map_err(|e| usage(&e, "dao proxy run", "see --help"))?;
                Some(
                    Predictor::fit(&history, 2_000, 0.5, 1e-3)
                        .map_err(|e| usage(&e, "dao proxy run", "see --help"))?,
                )
            } else {
                None
            };
            let records = ledger
                .run_proxy(a.proposal, predictor.as_ref(), now(&a.state))
                .map_err(|e| {
                    failure(
                        &e.to_string(),
                        format!("proposal {}", a.proposal),
                        "run the proxy while the proposal is Active (see `x0tta6bl4 dao tally`)",
                    )
                })?;
            save(&a.state.state, &ledger)?;
            if a.json {
                println!("{}", serde_json::to_string(&records)?);
            } else if records.is_empty() {
                println!(
                    "no opted-in operator without a vote on proposal {}",
                    a.proposal
                );
            } else {
                for r in &records {
                    println!("{} {}: {}", r.operator, r.support, r.reason);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ProxyCommand::Verify(a) => {
            let ledger = load(&a.state.state)?;
            let problems = ledger.verify_proxy();
            let total = ledger.proxy_log().len();
            if a.json {
                let items: Vec<_> = problems
                    .iter()
                    .map(|(i, why)| serde_json::json!({"record": i, "problem": why}))
                    .collect();
                println!("{}", serde_json::json!({"records": total, "failed": items}));
            } else {
                for (i, why) in &problems {
                    println!("record {i}: {why}");
                }
                println!(
                    "{} of {total} proxy records verified",
                    total - problems.len()
                );
            }
            if problems.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(failure(
                    &format!("{} proxy records do not verify", problems.len()),
                    a.state.state.display(),
                    "the state file was changed outside `x0tta6bl4 dao`; see the records above",
                ))
            }
        }
    }
}

/// The proxy's records on proposal `id`, as JSON.
fn proxy_records(ledger: &Ledger, id: u64) -> Vec<serde_json::Value> {
    ledger
        .proxy_log()
        .iter()
        .filter(|r| r.proposal == id)
        .map(|r| {
            serde_json::json!({
                "operator": r.operator, "at": r.at, "support": r.support,
                "votes": r.votes, "reason": r.reason,
            })
        })
        .collect()
}

fn apply(state: &StateArg, signer: &Signer, message: Message) -> anyhow::Result<ExitCode> {
    let mut ledger = load(&state.state)?;
    let key = read_key(&signer.key_file)?;
    let nonce = ledger.next_nonce(&signer.id);
    let signed_message = signed::sign(&key, &signer.id, nonce, message);
    let applied = ledger.apply(&signed_message, now(state)).map_err(|e| {
        failure(
            &e.to_string(),
            &signer.id,
            "nothing was changed; see the reason",
        )
    })?;
    save(&state.state, &ledger)?;
    println!("{}", serde_json::to_string(&applied)?);
    Ok(ExitCode::SUCCESS)
}

fn action_of(a: &ProposeArgs) -> anyhow::Result<Action> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone().ok_or_else(|| {
            usage(
                &format!("--template {} needs {flag}", a.template),
                "dao propose",
                "see --help",
            )
        })
    };
    Ok(match a.template.as_str() {
        "parameter-change" => Action::ParameterChange {
            name: need(&a.name, "--name")?,
            value: a.value.ok_or_else(|| {
                usage(
                    "--template parameter-change needs --value",
                    "dao propose",
                    "see --help",
                )
            })?,
        },
        "node-ban" => Action::NodeBan {
            spiffe_id: need(&a.node, "--node")?,
            reason: need(&a.reason, "--reason")?,
        },
        "key-rotation" => Action::KeyRotation {
            spiffe_id: a.node.clone().unwrap_or_default(),
        },
        "policy-change" => {
            let text = need(&a.policy_hash, "--policy-hash")?;
            let bytes = alloy_hex(&text).ok_or_else(|| {
                usage(
                    &format!("--policy-hash `{text}` is not 64 hex digits"),
                    "dao propose",
                    "pass the policy file's SHA-256",
                )
            })?;
            Action::PolicyChange {
                hash: bytes,
                uri: need(&a.uri, "--uri")?,
            }
        }
        _ => Action::AdmitOperator {
            operator: need(&a.operator, "--operator")?,
        },
    })
}

fn alloy_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn simulate_cmd(a: &SimulateArgs) -> anyhow::Result<ExitCode> {
    for (flag, v, low) in [
        ("--delegation-share", a.delegation_share, 0.0),
        ("--proxy-share", a.proxy_share, 0.0),
        ("--proxy-threshold", a.proxy_threshold, 0.5),
    ] {
        if !(low..=1.0).contains(&v) {
            return Err(usage(
                &format!("{flag} {v} is out of range"),
                "dao simulate",
                &format!("pass a value between {low} and 1"),
            ));
        }
    }
    if !(20..=10_000).contains(&a.train_proposals) {
        return Err(usage(
            &format!("--train-proposals {} is out of range", a.train_proposals),
            "dao simulate",
            "pass 20 to 10000",
        ));
    }
    let mut model = simulate::Model::new(a.voters, a.proposals, a.seed);
    model.delegation_share = a.delegation_share;
    model.proxy_share = a.proxy_share;
    model.proxy_threshold = a.proxy_threshold;
    model.train_proposals = a.train_proposals;
    let report = simulate::run(&model).map_err(|e| usage(&e, "dao simulate", "see --help"))?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let m = &report.model;
    println!(
        "electorate: {} operators, {} proposals, seed {}\nmodel: engagement ~ Beta({}, {}) (mean {:.3}), salience ~ LogNormal(mean 1, sigma {}), \
         proposal quality ~ Normal(0, {}), \
         delegation share {}, auto-proxy share {} (follows the predictor at 3/4 of the vote when its confidence >= {}; predictor trained on {} proposals of another seed)\n\
         rules: quorum {} % of operators at the snapshot, 100 voice credits, v votes cost v^2",
        m.voters, m.proposals, m.seed, m.engagement_alpha, m.engagement_beta,
        m.engagement_alpha / (m.engagement_alpha + m.engagement_beta), m.salience_sigma,
        m.quality_sigma, m.delegation_share, m.proxy_share, m.proxy_threshold, m.train_proposals, m.rules.quorum_percent
    );
    println!(
        "{:<18} {:>14} {:>14} {:>10} {:>10} {:>10} {:>11} {:>13}",
        "scenario",
        "direct turnout",
        "participation",
        "quorum",
        "succeeded",
        "delegating",
        "proxy votes",
        "proxy refused"
    );
    for s in &report.scenarios {
        println!(
            "{:<18} {:>13.1}% {:>13.1}% {:>10} {:>10} {:>10} {:>11} {:>13}",
            s.name,
            s.direct_turnout * 100.0,
            s.participation * 100.0,
            s.quorum_reached,
            s.succeeded,
            s.delegating,
            s.proxy_votes,
            s.proxy_declined
        );
    }
    for kind in ["vote", "refusal"] {
        if let Some(r) = report
            .proxy_examples
            .iter()
            .find(|r| (r.support == "none") == (kind == "refusal"))
        {
            println!(
                "example proxy {kind}: proposal {} for {}: {} ({})",
                r.proposal, r.operator, r.support, r.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sentiment_cmd(a: &SentimentArgs) -> anyhow::Result<ExitCode> {
    use x0tta6bl4_dao::sentiment;
    let texts: Vec<String> = match (&a.text, &a.file) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(f)) => {
            let body = std::fs::read_to_string(f).map_err(|e| {
                usage(
                    &format!("cannot read the file: {e}"),
                    f.display(),
                    "pass a readable UTF-8 text file with --file",
                )
            })?;
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        }
        (None, None) => unreachable!("clap requires TEXT or --file"),
    };
    if texts.is_empty() {
        return Err(usage(
            "no text to score",
            a.file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            "pass a file with at least one non-empty line",
        ));
    }
    let scores: Vec<_> = texts.iter().map(|t| sentiment::score(t)).collect();
    let mean = scores.iter().map(|s| s.compound).sum::<f64>() / scores.len() as f64;
    if a.json {
        let items: Vec<_> = texts
            .iter()
            .zip(&scores)
            .map(|(t, s)| serde_json::json!({"text": t, "sentiment": s}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"texts": items, "mean_compound": mean})
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (t, s) in texts.iter().zip(&scores) {
        println!(
            "{:+.3}  pos {:.2} neu {:.2} neg {:.2}  domain words: {}  | {t}",
            s.compound,
            s.positive,
            s.neutral,
            s.negative,
            if s.domain_words.is_empty() {
                "-".to_string()
            } else {
                s.domain_words.join(", ")
            }
        );
    }
    if scores.len() > 1 {
        println!("mean compound {mean:+.3} over {} texts", scores.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn predict_cmd(a: &PredictArgs) -> anyhow::Result<ExitCode> {
    use x0tta6bl4_dao::predict::Features;
    let model = simulate::Model::new(a.voters, a.proposals, a.seed);
    let e = simulate::predict_benchmark(&model, a.train_share)
        .map_err(|e| usage(&e, "dao predict", "see --help"))?;
    if a.json {
        let v = serde_json::json!({
            "voters": a.voters, "proposals": a.proposals, "seed": a.seed,
            "train_share": a.train_share, "features": Features::NAMES, "evaluation": e,
        });
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "simulated history: {} operators, {} proposals (seed {}); trained on the first {}, held out the last {}",
        a.voters, a.proposals, a.seed, e.train, e.test
    );
    println!("outcome: the votes for exceed the votes against at the close (base rate in training {:.3})", e.base_rate);
    println!(
        "{:<22} {:>9} {:>9}",
        "held-out proposals", "accuracy", "Brier"
    );
    println!(
        "{:<22} {:>8.1}% {:>9.4}",
        "logistic regression",
        e.predictor.accuracy * 100.0,
        e.predictor.brier
    );
    println!(
        "{:<22} {:>8.1}% {:>9.4}",
        "  without the votes",
        e.without_votes.accuracy * 100.0,
        e.without_votes.brier
    );
    println!(
        "{:<22} {:>8.1}% {:>9.4}",
        "base rate",
        e.baseline.accuracy * 100.0,
        e.baseline.brier
    );
    println!("weights (standardised features):");
    for (name, w) in Features::NAMES.iter().zip(e.model.weights) {
        println!("  {name:<17} {w:+.3}");
    }
    println!("  {:<17} {:+.3}", "bias", e.model.bias);
    Ok(ExitCode::SUCCESS)
}

/// What `dao execute` will do to the running mesh, checked before the proposal executes
/// (a revocation: the CA and the node; once made, the CA's revocation).
enum MeshChange {
    None,
    Revoke(Box<x0tta6bl4_identity::CertificateAuthority>, RevokeStep),
    Configs(Vec<(PathBuf, String)>),
}

/// The node to revoke, then its revocation.
enum RevokeStep {
    Node(NodeName),
    Made(Box<x0tta6bl4_identity::Revocation>),
}

/// `dao execute`: the proposal, then its effect on the running mesh.
pub async fn execute(a: &ExecuteArgs) -> anyhow::Result<ExitCode> {
    let mut apis = Vec::new();
    for url in &a.node_apis {
        apis.push((url.clone(), crate::status::api_for(url, a.svid.as_deref())?));
    }
    let ledger = load(&a.state.state)?;
    if !apis.is_empty() {
        let needs = match ledger.engine.proposal(a.proposal).map(|p| &p.action) {
            Ok(Action::NodeBan { .. }) if a.ca.is_none() => Some("a node ban needs --ca DIR"),
            Ok(Action::ParameterChange { .. }) if a.node_configs.is_empty() => {
                Some("a parameter change needs --node-config FILE (the files the nodes reload)")
            }
            Ok(Action::NodeBan { .. } | Action::ParameterChange { .. }) | Err(_) => None,
            Ok(_) => Some("only node bans and parameter changes reach the nodes' APIs"),
        };
        if let Some(why) = needs {
            return Err(usage(
                &format!("--node-api: {why}"),
                format!("proposal {}", a.proposal),
                "see `x0tta6bl4 dao execute --help`",
            ));
        }
    }
    let change = execute_cmd(a, ledger)?;
    let (path, body, what) = match change {
        MeshChange::Revoke(_, RevokeStep::Made(revocation)) => (
            "/api/v1/revocations",
            serde_json::to_value(&revocation)?,
            "the revocation",
        ),
        MeshChange::Configs(_) => (
            "/api/v1/config/reload",
            serde_json::json!({}),
            "the configuration reload",
        ),
        MeshChange::None | MeshChange::Revoke(_, RevokeStep::Node(_)) => {
            return Ok(ExitCode::SUCCESS)
        }
    };
    let mut refused = 0;
    for (url, api) in &apis {
        let line = match api.post::<_, serde_json::Value>(path, &body).await {
            Ok(answer) => serde_json::json!({"node_api": url, "accepted": true, "answer": answer}),
            Err(e) => {
                refused += 1;
                serde_json::json!({"node_api": url, "accepted": false, "error": format!("{e:#}")})
            }
        };
        println!("{line}");
    }
    if refused > 0 {
        return Err(failure(
            &format!(
                "the proposal is executed, but {refused} of {} nodes did not take {what}",
                apis.len()
            ),
            path,
            "see the nodes' answers above; retry with `x0tta6bl4 ca revoke --api URL` or \
             `curl -X POST URL/api/v1/config/reload` once the node is back",
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Executes the proposal and applies its effect to the CA and the configuration files;
/// returns what was done.
fn execute_cmd(a: &ExecuteArgs, mut ledger: Ledger) -> anyhow::Result<MeshChange> {
    let action = ledger
        .engine
        .proposal(a.proposal)
        .map(|p| p.action.clone())
        .map_err(|e| {
            usage(
                &e.to_string(),
                format!("proposal {}", a.proposal),
                "see `x0tta6bl4 dao status`",
            )
        })?;
    let change = match &action {
        Action::NodeBan { spiffe_id, .. } => match &a.ca {
            Some(dir) => {
                let ca = x0tta6bl4_identity::CertificateAuthority::open(dir).map_err(|e| {
                    usage(
                        &format!("cannot open the CA: {e}"),
                        dir.display(),
                        "pass the directory made by `x0tta6bl4 ca init` with --ca",
                    )
                })?;
                let id = x0tta6bl4_identity::SpiffeId::parse(spiffe_id).map_err(|e| {
                    usage(
                        &format!("the banned node's SPIFFE ID does not parse: {e}"),
                        spiffe_id,
                        "revoke it by hand with `x0tta6bl4 ca revoke`",
                    )
                })?;
                let name = id
                    .node_name()
                    .filter(|_| id.trust_domain() == ca.trust_domain())
                    .ok_or_else(|| {
                        usage(
                            &format!(
                                "the banned node is not a node of this CA's trust domain `{}`",
                                ca.trust_domain()
                            ),
                            spiffe_id,
                            "pass the CA of spiffe://DOMAIN/node/NAME with --ca",
                        )
                    })?;
                MeshChange::Revoke(Box::new(ca), RevokeStep::Node(name))
            }
            None => MeshChange::None,
        },
        Action::ParameterChange { name, value } => {
            let mut configs = Vec::new();
            for file in &a.node_configs {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    usage(
                        &format!("cannot read the node configuration: {e}"),
                        file.display(),
                        "pass a node's TOML configuration with --node-config",
                    )
                })?;
                let new = x0tta6bl4_dao::apply::set_parameter(&text, name, *value)
                    .map_err(|e| usage(&e, file.display(), "fix the node configuration file"))?;
                check_node_config(file, &new)?;
                configs.push((file.clone(), new));
            }
            MeshChange::Configs(configs)
        }
        _ => MeshChange::None,
    };
    let effect = ledger.execute(a.proposal, now(&a.state)).map_err(|e| {
        failure(
            &e.to_string(),
            format!("proposal {}", a.proposal),
            "see `x0tta6bl4 dao tally`",
        )
    })?;
    save(&a.state.state, &ledger)?;
    println!("{}", serde_json::to_string(&effect)?);
    Ok(match change {
        MeshChange::None => MeshChange::None,
        MeshChange::Revoke(ca, RevokeStep::Made(r)) => MeshChange::Revoke(ca, RevokeStep::Made(r)),
        MeshChange::Revoke(ca, RevokeStep::Node(name)) => {
            let revocation = ca.revoke(&name).map_err(|e| {
                failure(
                    &format!("the proposal is executed but the revocation failed: {e}"),
                    name.as_str(),
                    &format!(
                        "revoke it with `x0tta6bl4 ca revoke --dir {} --name {}`",
                        a.ca.as_ref()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default(),
                        name.as_str()
                    ),
                )
            })?;
            println!("{}", serde_json::to_string(&revocation)?);
            MeshChange::Revoke(ca, RevokeStep::Made(Box::new(revocation)))
        }
        MeshChange::Configs(configs) => {
            for (file, text) in &configs {
                store::write_atomically(file, text.as_bytes()).map_err(|e| {
                    failure(
                        &format!(
                            "the proposal is executed but the configuration was not written: {e}"
                        ),
                        file.display(),
                        "set the parameter in the file by hand",
                    )
                })?;
                eprintln!("wrote {}", file.display());
            }
            MeshChange::Configs(configs)
        }
    })
}

/// Checks `text` the way the node will read it, from a temporary file beside `file`.
fn check_node_config(file: &Path, text: &str) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".dao-check-")
        .suffix(".toml")
        .tempfile_in(dir)
        .map_err(|e| {
            failure(
                &format!("cannot write a temporary file: {e}"),
                dir.display(),
                "check the directory's permissions and space",
            )
        })?;
    std::fs::write(tmp.path(), text).map_err(|e| {
        failure(
            &format!("cannot write a temporary file: {e}"),
            tmp.path().display(),
            "check the directory's permissions and space",
        )
    })?;
    x0tta6bl4_node::load_config(tmp.path()).map_err(|e| {
        usage(
            &format!("the node would refuse its configuration after the change: {e}"),
            file.display(),
            "fix the node configuration file; nothing was changed",
        )
    })?;
    Ok(())
}
