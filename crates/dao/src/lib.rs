//! DAO governance of the x0tta6bl4 mesh.
//!
//! The mesh's operators decide together how the network is run: its protocol timers, which
//! nodes to ban, when to rotate keys, the admission policy, who else becomes an operator.
//!
//! - `contracts/src/*.sol` (Solidity 0.8, OpenZeppelin Contracts 5.x, compiled offline with
//!   solc-js by `scripts/build-contracts.sh`): MeshGovernance (the Governor's proposal states,
//!   voting delay and period, a quorum as a percentage of the registered operators, a
//!   Bravo-style timelock with a grace period, cancel by the proposer while pending),
//!   QuadraticVoting (100 voice credits per operator per proposal, v votes cost v²),
//!   ProposalFactory (templates with validated arguments), OperatorRegistry (operators and
//!   their liquid delegation, checkpointed so a proposal reads them at its snapshot) and
//!   MeshParameters (the governed state: parameters with bounds, ban list, key rotations,
//!   policy).
//! - [`evm`]: those contracts executed in revm, with alloy `sol!` bindings.
//! - [`rpc`]: the same contracts deployed to any Ethereum JSON-RPC endpoint, with
//!   transactions signed locally (alloy; EIP-1559 where the chain has a base fee, fees from
//!   `eth_feeHistory`, else legacy), behind `x0tta6bl4 dao deploy`.
//! - [`engine`]: the same rules off chain, as a sans-IO state machine (time is an argument).
//!   Its refusals carry the contracts' own revert reasons; the differential test
//!   (`tests/differential.rs`) checks both agree on random histories.
//! - [`apply`]: an executed parameter change written into a node's configuration file
//!   (`x0tta6bl4 dao execute --node-config`, then reloaded by the running nodes with
//!   `--node-api`; a ban becomes a CA revocation with `--ca`, posted to the nodes with
//!   `--node-api`).
//! - [`signed`]: Snapshot-style gasless governance: proposals, votes, delegations and
//!   auto-proxy opt-ins signed with the operators' SVID keys (ECDSA P-256), verified before
//!   they reach the engine; the proxy's votes recorded with their reasons and verifiable
//!   from the ledger (`x0tta6bl4 dao proxy`).
//! - [`sentiment`]: VADER over its lexicon extended with mesh-operations words, for
//!   proposal texts and discussion comments (`x0tta6bl4 dao sentiment`).
//! - [`predict`]: the outcome predictor (logistic regression over sentiment, proposer
//!   history, early turnout and early margin) and the auto-proxy's policies
//!   (`x0tta6bl4 dao predict`).
//! - [`simulate`]: the participation model behind `x0tta6bl4 dao simulate`, with the
//!   auto-proxy driven by the predictor, and the simulated proposal history it is trained on.
//!
//! Written by hand, and why: the tally with liquid delegation at a snapshot and the
//! quadratic ballot have no library in Rust; OpenZeppelin's Governor counts one token-weighted
//! vote per account, so its counting module does not fit quadratic ballots with delegated
//! operators, and only its building blocks (Checkpoints, AccessControl, Ownable, Address,
//! SafeCast) are used on chain. The EVM (revm), the ABI (alloy) and the signatures
//! (aws-lc-rs) are libraries.

pub mod apply;
pub mod engine;
pub mod evm;
pub mod predict;
pub mod rpc;
pub mod sentiment;
pub mod signed;
pub mod simulate;
pub mod store;

pub use engine::{Action, Effect, Engine, ProposalState, Refused, Rules, Support, Tally};
