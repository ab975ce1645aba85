//! The contracts in a real EVM: revm executes the bytecode that `scripts/build-contracts.sh`
//! compiled into `contracts/out/`, with ABI bindings from alloy's `sol!`.
//!
//! [`Chain`] is an in-memory chain (one revm instance over a `CacheDB`) whose block time is
//! set by the caller, so tests drive time exactly as they drive the off-chain engine.
//! [`Deployment`] deploys the four contracts and wires them as `dao deploy` does: the
//! registry grants MeshGovernance the registrar role, MeshParameters is owned by governance.

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, Bytes, TxKind, U256};
use alloy_sol_types::{sol, SolCall, SolConstructor};
use revm::context::result::{ExecutionResult, Output};
use revm::context::{ContextTr, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::handler::{MainnetContext, MainnetEvm};
use revm::{Context, Database, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};

use crate::engine::Rules;

sol! {
    interface IMeshParameters {
        constructor(address initialOwner);
        function transferOwnership(address newOwner) external;
        function owner() external view returns (address);
        function parameterCount() external view returns (uint256);
        function parameterName(uint256 index) external view returns (string memory);
        function isKnown(bytes32 key) external view returns (bool);
        function inBounds(bytes32 key, uint256 value) external view returns (bool);
        function getParameter(bytes32 key) external view returns (uint256 value, uint256 min, uint256 max);
        function setParameter(bytes32 key, uint256 value) external;
        function banNode(bytes32 nodeId, string calldata reason) external;
        function rotateKey(bytes32 nodeId) external;
        function setPolicy(bytes32 hash, string calldata uri) external;
        function banned(bytes32 nodeId) external view returns (bool);
        function bannedCount() external view returns (uint256);
        function keyRotatedAt(bytes32 nodeId) external view returns (uint256);
        function policyHash() external view returns (bytes32);
        function policyUri() external view returns (string memory);
        error OwnableUnauthorizedAccount(address account);
    }

    interface IOperatorRegistry {
        constructor(address admin);
        function REGISTRAR_ROLE() external view returns (bytes32);
        function grantRole(bytes32 role, address account) external;
        function admit(address operator) external;
        function remove(address operator) external;
        function delegate(address to) external;
        function undelegate() external;
        function isOperator(address account) external view returns (bool);
        function isOperatorAt(address account, uint48 timepoint) external view returns (bool);
        function operatorCount() external view returns (uint256);
        function operatorCountAt(uint48 timepoint) external view returns (uint256);
        function delegateOf(address account) external view returns (address);
        function delegateAt(address account, uint48 timepoint) external view returns (address);
        function operatorsEver() external view returns (address[] memory);
        function snapshot(uint48 timepoint) external view returns (address[] memory operators, bool[] memory eligible, uint256[] memory delegateIndex, uint256 count);
        error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);
    }

    interface IMeshGovernance {
        constructor(address parameters, address registry, uint48 votingDelay, uint48 votingPeriod, uint48 timelockDelay, uint48 gracePeriod, uint256 quorumPercent);
        function VOICE_CREDITS() external view returns (uint256);
        function quadraticCost(uint256 votes) external pure returns (uint256);
        function proposeParameterChange(string calldata name, uint256 value, string calldata description) external returns (uint256);
        function proposeNodeBan(string calldata spiffeId, string calldata reason, string calldata description) external returns (uint256);
        function proposeKeyRotation(string calldata spiffeId, string calldata description) external returns (uint256);
        function proposePolicyChange(bytes32 policyHash, string calldata uri, string calldata description) external returns (uint256);
        function proposeAdmitOperator(address operator, string calldata description) external returns (uint256);
        function proposalCount() external view returns (uint256);
        function state(uint256 proposalId) external view returns (uint8);
        function quorum(uint256 proposalId) external view returns (uint256);
        function proposalVotes(uint256 proposalId) external view returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes, uint256 represented, uint256 eligibleCount);
        function castVote(uint256 proposalId, uint8 support, uint256 votes) external returns (uint256 used);
        function cancel(uint256 proposalId) external;
        function queue(uint256 proposalId) external returns (uint48 eta);
        function execute(uint256 proposalId) external;
        function hasVoted(uint256 proposalId, address voter) external view returns (bool);
        function ballotOf(uint256 proposalId, address voter) external view returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes);
        function creditsUsed(uint256 proposalId, address voter) external view returns (uint256);
        function proposal(uint256 proposalId) external view returns (address proposer, uint8 template, uint48 voteStart, uint48 voteEnd, uint48 eta, address target, bytes memory data, bytes32 descriptionHash);
    }
}

/// Everything that can go wrong running the contracts.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    #[error(
        "contract artifact {path} is missing or unreadable ({why}): run scripts/build-contracts.sh"
    )]
    Artifact { path: PathBuf, why: String },
    /// The transaction reverted; `reason` is the decoded revert reason.
    #[error("reverted: {reason}")]
    Revert { reason: String, gas_used: u64 },
    #[error("halted: {0}")]
    Halt(String),
    #[error("EVM error: {0}")]
    Evm(String),
    #[error("cannot decode the return data of {0}")]
    Decode(&'static str),
}

impl EvmError {
    /// The revert reason, if this is a revert.
    pub fn reason(&self) -> Option<&str> {
        match self {
            EvmError::Revert { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// A compiled contract: what `contracts/compile.js` writes.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub bytecode: Vec<u8>,
    pub deployed_bytecode: Vec<u8>,
    pub method_identifiers: Vec<(String, String)>,
}

/// `contracts/out` of this repository.
pub fn default_artifact_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts/out")
}

impl Artifact {
    pub fn load(dir: &Path, name: &str) -> Result<Self, EvmError> {
        let path = dir.join(format!("{name}.json"));
        let fail = |why: String| EvmError::Artifact {
            path: path.clone(),
            why,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
        let hex_field = |field: &str| -> Result<Vec<u8>, EvmError> {
            let s = json[field]
                .as_str()
                .ok_or_else(|| fail(format!("no `{field}`")))?;
            alloy_primitives::hex::decode(s).map_err(|e| fail(format!("`{field}`: {e}")))
        };
        let method_identifiers = json["methodIdentifiers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Artifact {
            name: name.to_string(),
            bytecode: hex_field("bytecode")?,
            deployed_bytecode: hex_field("deployedBytecode")?,
            method_identifiers,
        })
    }
}

/// The four artifacts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub parameters: Artifact,
    pub registry: Artifact,
    pub governance: Artifact,
}

impl Artifacts {
    pub fn load(dir: &Path) -> Result<Self, EvmError> {
        Ok(Artifacts {
            parameters: Artifact::load(dir, "MeshParameters")?,
            registry: Artifact::load(dir, "OperatorRegistry")?,
            governance: Artifact::load(dir, "MeshGovernance")?,
        })
    }
}

/// Decodes revert data: `Error(string)`, `Panic(uint256)`, and the OpenZeppelin custom errors
/// these contracts can raise; anything else as hex.
pub fn decode_revert(data: &[u8]) -> String {
    use alloy_sol_types::SolError;
    if let Ok(revert) = alloy_sol_types::Revert::abi_decode(data) {
        return revert.reason;
    }
    if let Some(reason) = alloy_sol_types::decode_revert_reason(data) {
        return reason; // Panic(uint256)
    }
    if let Ok(e) = IMeshParameters::OwnableUnauthorizedAccount::abi_decode(data) {
        return format!("OwnableUnauthorizedAccount({})", e.account);
    }
    if let Ok(e) = IOperatorRegistry::AccessControlUnauthorizedAccount::abi_decode(data) {
        return format!("AccessControlUnauthorizedAccount({})", e.account);
    }
    format!("0x{}", alloy_primitives::hex::encode(data))
}

/// The outcome of a successful transaction.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub output: Bytes,
    pub gas_used: u64,
    pub created: Option<Address>,
}

type Evm = MainnetEvm<MainnetContext<CacheDB<EmptyDB>>>;

/// An in-memory chain: one revm instance, block time set by the caller.
pub struct Chain {
    evm: Evm,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    pub fn new() -> Self {
        let evm = Context::mainnet()
            .with_db(CacheDB::<EmptyDB>::default())
            .modify_block_chained(|b| {
                b.timestamp = U256::from(1);
                b.basefee = 0;
            })
            .build_mainnet();
        Chain { evm }
    }

    pub fn set_time(&mut self, now: u64) {
        self.evm.ctx.modify_block(|b| {
            b.timestamp = U256::from(now);
            b.number += U256::from(1);
        });
    }

    pub fn time(&self) -> u64 {
        self.evm.ctx.block.timestamp.to::<u64>()
    }

    fn nonce(&mut self, who: Address) -> u64 {
        self.evm
            .ctx
            .db_mut()
            .basic(who)
            .ok()
            .flatten()
            .map(|a| a.nonce)
            .unwrap_or(0)
    }

    fn tx(&mut self, from: Address, kind: TxKind, data: Bytes) -> TxEnv {
        let nonce = self.nonce(from);
        TxEnv::builder()
            .caller(from)
            .kind(kind)
            .data(data)
            .nonce(nonce)
            .gas_limit(16_000_000)
            .gas_price(0)
            .build_fill()
    }

    fn outcome(result: ExecutionResult) -> Result<Receipt, EvmError> {
        let gas_used = result.tx_gas_used();
        match result {
            ExecutionResult::Success { output, .. } => Ok(match output {
                Output::Call(bytes) => Receipt {
                    output: bytes,
                    gas_used,
                    created: None,
                },
                Output::Create(bytes, address) => Receipt {
                    output: bytes,
                    gas_used,
                    created: address,
                },
            }),
            ExecutionResult::Revert { output, .. } => Err(EvmError::Revert {
                reason: decode_revert(&output),
                gas_used,
            }),
            ExecutionResult::Halt { reason, .. } => Err(EvmError::Halt(format!("{reason:?}"))),
        }
    }

    /// Sends a transaction and commits its state.
    pub fn send(&mut self, from: Address, to: Address, data: Vec<u8>) -> Result<Receipt, EvmError> {
        let tx = self.tx(from, TxKind::Call(to), data.into());
        let result = self
            .evm
            .transact_commit(tx)
            .map_err(|e| EvmError::Evm(format!("{e:?}")))?;
        Self::outcome(result)
    }

    /// Executes a call without committing anything (eth_call).
    pub fn view_raw(&mut self, to: Address, data: Vec<u8>) -> Result<Receipt, EvmError> {
        let tx = self.tx(Address::ZERO, TxKind::Call(to), data.into());
        let result = self
            .evm
            .transact(tx)
            .map_err(|e| EvmError::Evm(format!("{e:?}")))?;
        Self::outcome(result.result)
    }

    /// Deploys `initcode` (bytecode followed by the ABI-encoded constructor arguments).
    pub fn deploy(&mut self, from: Address, initcode: Vec<u8>) -> Result<Receipt, EvmError> {
        let tx = self.tx(from, TxKind::Create, initcode.into());
        let result = self
            .evm
            .transact_commit(tx)
            .map_err(|e| EvmError::Evm(format!("{e:?}")))?;
        let receipt = Self::outcome(result)?;
        if receipt.created.is_none() {
            return Err(EvmError::Halt("deployment created no contract".into()));
        }
        Ok(receipt)
    }

    /// A typed transaction: returns the decoded return value and the gas used.
    pub fn call<C: SolCall>(
        &mut self,
        from: Address,
        to: Address,
        call: C,
    ) -> Result<(C::Return, u64), EvmError> {
        let r = self.send(from, to, call.abi_encode())?;
        let ret = C::abi_decode_returns(&r.output).map_err(|_| EvmError::Decode(C::SIGNATURE))?;
        Ok((ret, r.gas_used))
    }

    /// A typed read-only call.
    pub fn view<C: SolCall>(&mut self, to: Address, call: C) -> Result<C::Return, EvmError> {
        let r = self.view_raw(to, call.abi_encode())?;
        C::abi_decode_returns(&r.output).map_err(|_| EvmError::Decode(C::SIGNATURE))
    }
}

/// Bytecode followed by constructor arguments.
pub fn initcode<C: SolConstructor>(artifact: &Artifact, args: C) -> Vec<u8> {
    let mut code = artifact.bytecode.clone();
    code.extend_from_slice(&args.abi_encode());
    code
}

/// `MeshGovernance`'s bytecode with the constructor arguments `rules` give: one mapping
/// of the engine's rules to the contract's, for the in-process chain and `dao deploy`.
pub fn governance_initcode(
    artifacts: &Artifacts,
    parameters: Address,
    registry: Address,
    rules: &Rules,
) -> Vec<u8> {
    let u48 = |v: u64| alloy_primitives::aliases::U48::from(v);
    initcode(
        &artifacts.governance,
        IMeshGovernance::constructorCall {
            parameters,
            registry,
            votingDelay: u48(rules.voting_delay),
            votingPeriod: u48(rules.voting_period),
            timelockDelay: u48(rules.timelock_delay),
            gracePeriod: u48(rules.grace_period),
            quorumPercent: U256::from(rules.quorum_percent),
        },
    )
}

/// The deployed contracts and their deployment gas.
#[derive(Debug, Clone, Copy)]
pub struct Deployment {
    pub admin: Address,
    pub parameters: Address,
    pub registry: Address,
    pub governance: Address,
    pub gas: [u64; 3],
}

impl Deployment {
    /// Deploys MeshParameters, OperatorRegistry and MeshGovernance from `admin`, grants
    /// governance the registrar role and hands it the ownership of MeshParameters.
    pub fn deploy(
        chain: &mut Chain,
        artifacts: &Artifacts,
        admin: Address,
        rules: &Rules,
    ) -> Result<Self, EvmError> {
        let p = chain.deploy(
            admin,
            initcode(
                &artifacts.parameters,
                IMeshParameters::constructorCall {
                    initialOwner: admin,
                },
            ),
        )?;
        let r = chain.deploy(
            admin,
            initcode(
                &artifacts.registry,
                IOperatorRegistry::constructorCall { admin },
            ),
        )?;
        let (parameters, registry) = (p.created.unwrap_or_default(), r.created.unwrap_or_default());
        let g = chain.deploy(
            admin,
            governance_initcode(artifacts, parameters, registry, rules),
        )?;
        let governance = g.created.unwrap_or_default();
        let role = chain.view(registry, IOperatorRegistry::REGISTRAR_ROLECall {})?;
        chain.call(
            admin,
            registry,
            IOperatorRegistry::grantRoleCall {
                role,
                account: governance,
            },
        )?;
        chain.call(
            admin,
            parameters,
            IMeshParameters::transferOwnershipCall {
                newOwner: governance,
            },
        )?;
        Ok(Deployment {
            admin,
            parameters,
            registry,
            governance,
            gas: [p.gas_used, r.gas_used, g.gas_used],
        })
    }
}
