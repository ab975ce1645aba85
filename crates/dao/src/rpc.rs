//! The contracts on a real chain: an Ethereum JSON-RPC client (reqwest), transactions
//! signed locally (alloy's `TxEip1559`, or `TxLegacy` with the EIP-155 chain id;
//! secp256k1 signatures from the `k256` crate), and
//! [`deploy`], behind `x0tta6bl4 dao deploy --rpc URL --key-file FILE`.
//!
//! Any endpoint that speaks the standard `eth_*` methods works (a devnet such as Foundry's
//! anvil, a testnet node, a provider): the client asks for the chain id, the nonce, a gas
//! estimate and the fees, signs, sends the raw transaction and waits for its receipt.
//! Fees ([`FeePolicy`]): when the endpoint's latest block has a base fee (London and
//! later) transactions are EIP-1559 (type 2) with the priority fee and the max fee taken
//! from `eth_feeHistory` (the median tip of the last blocks; twice the next base fee plus
//! the tip, the rule of ethers and alloy) or given; otherwise legacy (type 0) at
//! `eth_gasPrice`.
//! A transaction the chain would revert is refused before it is sent, with the decoded
//! revert reason from the gas estimate.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_sol_types::SolCall;
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};

use crate::engine::Rules;
use crate::evm::{
    decode_revert, governance_initcode, initcode, Artifacts, IMeshParameters, IOperatorRegistry,
};

/// Everything that can go wrong talking to a chain.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(
        "cannot reach the JSON-RPC endpoint {url} ({why}): check --rpc and that the node runs"
    )]
    Http { url: String, why: String },
    #[error("{method} failed with JSON-RPC error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("{what} would revert: {reason}")]
    Revert { what: String, reason: String },
    #[error("{what}: transaction {hash} was mined but reverted (status 0)")]
    Failed { what: String, hash: B256 },
    #[error("{what}: no receipt for transaction {hash} after {seconds} s: check that the chain mines blocks, or retry later")]
    Timeout {
        what: String,
        hash: B256,
        seconds: u64,
    },
    #[error("unexpected answer to {method}: {why}")]
    Decode { method: String, why: String },
}

/// An account address: `0x` and 40 hex digits.
pub fn parse_address(text: &str) -> Result<Address, String> {
    text.parse()
        .map_err(|e| format!("`{text}` is not an address ({e})"))
}

/// Reads a secp256k1 private key: 64 hex digits, with or without `0x`, surrounded by
/// whitespace at most (what `anvil` prints and `cast wallet new` writes).
pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected a secp256k1 private key as 64 hex digits (optionally 0x-prefixed), found {} characters",
            text.trim().len()
        ));
    }
    let bytes: B256 = hex.parse().map_err(|e| format!("not hex: {e}"))?;
    SigningKey::from_slice(bytes.as_slice())
        .map_err(|e| format!("not a valid secp256k1 private key (zero or >= the group order): {e}"))
}

/// A JSON-RPC endpoint.
pub struct Rpc {
    client: reqwest::Client,
    url: String,
    id: AtomicU64,
    /// How long to wait for a receipt.
    pub receipt_timeout: Duration,
}

impl Rpc {
    /// An `http://` or `https://` endpoint.
    pub fn new(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "scheme `{}` is not supported: use http:// or https://",
                parsed.scheme()
            ));
        }
        // The workspace's reqwest has rustls without a built-in provider.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Rpc {
            client,
            url: url.to_string(),
            id: AtomicU64::new(1),
            receipt_timeout: Duration::from_secs(120),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One JSON-RPC call; an error object becomes [`RpcError::Rpc`] (or
    /// [`RpcError::Revert`] when it carries revert data).
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let http = |e: reqwest::Error| RpcError::Http {
            url: self.url.clone(),
            why: e.to_string(),
        };
        let response = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(http)?;
        let status = response.status();
        let text = response.text().await.map_err(http)?;
        let answer: Value = serde_json::from_str(&text).map_err(|_| RpcError::Http {
            url: self.url.clone(),
            why: format!(
                "HTTP {status}, not a JSON-RPC answer: {}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        if let Some(error) = answer.get("error") {
            let data = error.get("data").and_then(|d| {
                d.as_str()
                    .or_else(|| d.get("data").and_then(Value::as_str))
                    .map(str::to_string)
            });
            if let Some(bytes) = data.and_then(|d| alloy_primitives::hex::decode(d).ok()) {
                if !bytes.is_empty() {
                    return Err(RpcError::Revert {
                        what: method.to_string(),
                        reason: decode_revert(&bytes),
                    });
                }
            }
            return Err(RpcError::Rpc {
                method: method.to_string(),
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::Decode {
                method: method.to_string(),
                why: "neither result nor error".into(),
            })
    }

    async fn quantity(&self, method: &str, params: Value) -> Result<u128, RpcError> {
        let v = self.request(method, params).await?;
        let s = v.as_str().unwrap_or_default();
        u128::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| RpcError::Decode {
            method: method.to_string(),
            why: format!("{v} is not a hex quantity: {e}"),
        })
    }

    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        Ok(self.quantity("eth_chainId", json!([])).await? as u64)
    }

    /// The runtime code at `address` (empty: no contract).
    pub async fn code(&self, address: Address) -> Result<Bytes, RpcError> {
        let v = self
            .request("eth_getCode", json!([address, "latest"]))
            .await?;
        serde_json::from_value(v).map_err(|e| RpcError::Decode {
            method: "eth_getCode".into(),
            why: e.to_string(),
        })
    }

    /// A read-only call (eth_call), decoded.
    pub async fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, RpcError> {
        let data = Bytes::from(call.abi_encode());
        let v = self
            .request("eth_call", json!([{"to": to, "data": data}, "latest"]))
            .await
            .map_err(|e| match e {
                RpcError::Revert { reason, .. } => RpcError::Revert {
                    what: C::SIGNATURE.to_string(),
                    reason,
                },
                e => e,
            })?;
        let bytes: Bytes = serde_json::from_value(v).map_err(|e| RpcError::Decode {
            method: "eth_call".into(),
            why: e.to_string(),
        })?;
        C::abi_decode_returns(&bytes).map_err(|e| RpcError::Decode {
            method: C::SIGNATURE.to_string(),
            why: e.to_string(),
        })
    }
}

/// A mined transaction.
#[derive(Debug, Clone)]
pub struct Mined {
    pub hash: B256,
    pub gas_used: u64,
    pub contract: Option<Address>,
    /// The fees it was sent with.
    pub fees: Fees,
    /// The receipt's `type` (`0x0` legacy, `0x2` EIP-1559).
    pub receipt_type: String,
}

/// How transactions pay for gas (`dao deploy --legacy`, `--max-fee-per-gas`,
/// `--max-priority-fee-per-gas`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeePolicy {
    /// Legacy transactions at `eth_gasPrice` even when the endpoint supports EIP-1559.
    pub legacy: bool,
    /// The max fee per gas in wei (default: twice the next base fee plus the tip).
    pub max_fee_per_gas: Option<u128>,
    /// The priority fee (tip) per gas in wei (default: the median of the 50th-percentile
    /// tips of the last [`FEE_HISTORY_BLOCKS`] blocks, [`TIP_FLOOR`] when they are all 0).
    pub max_priority_fee_per_gas: Option<u128>,
}

/// Blocks of `eth_feeHistory` the default tip is the median of.
pub const FEE_HISTORY_BLOCKS: u64 = 10;
/// The default tip when the last blocks paid none (empty blocks): 1 gwei.
pub const TIP_FLOOR: u128 = 1_000_000_000;

/// The fees one transaction pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fees {
    /// Type 0, with the EIP-155 chain id.
    Legacy { gas_price: u128 },
    /// Type 2 (EIP-1559).
    Eip1559 {
        max_fee_per_gas: u128,
        max_priority_fee_per_gas: u128,
    },
}

/// The EIP-1559 fees from `eth_feeHistory`'s answer (`baseFeePerGas` has one entry more
/// than the blocks asked for: the next block's base fee; `reward` holds each block's
/// 50th-percentile tip) and the policy's overrides.
pub fn eip1559_fees(history: &Value, policy: &FeePolicy) -> Result<Fees, String> {
    let quantity = |v: &Value| {
        v.as_str()
            .and_then(|s| u128::from_str_radix(s.trim_start_matches("0x"), 16).ok())
    };
    let next_base = history
        .get("baseFeePerGas")
        .and_then(Value::as_array)
        .and_then(|a| a.last())
        .and_then(quantity)
        .ok_or("no baseFeePerGas in the answer")?;
    let tip = match policy.max_priority_fee_per_gas {
        Some(tip) => tip,
        None => {
            let mut tips: Vec<u128> = history
                .get("reward")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get(0).and_then(quantity))
                .collect();
            tips.sort_unstable();
            match tips.get(tips.len() / 2) {
                Some(&t) if t > 0 => t,
                _ => TIP_FLOOR,
            }
        }
    };
    let max_fee = policy
        .max_fee_per_gas
        .unwrap_or_else(|| next_base.saturating_mul(2).saturating_add(tip));
    if max_fee < tip {
        return Err(format!(
            "the max fee per gas ({max_fee} wei) is below the priority fee ({tip} wei): raise --max-fee-per-gas"
        ));
    }
    Ok(Fees::Eip1559 {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
    })
}

/// Signs and sends transactions from one account.
pub struct Wallet<'a> {
    pub rpc: &'a Rpc,
    signer: SigningKey,
    chain_id: u64,
    /// The endpoint's latest block has a base fee (London or later).
    london: bool,
    fees: FeePolicy,
}

impl<'a> Wallet<'a> {
    /// A wallet with the default [`FeePolicy`]: EIP-1559 where the endpoint supports it.
    pub async fn new(rpc: &'a Rpc, signer: SigningKey) -> Result<Self, RpcError> {
        let chain_id = rpc.chain_id().await?;
        let block = rpc
            .request("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        let london = block
            .get("baseFeePerGas")
            .is_some_and(|fee| fee.is_string());
        Ok(Wallet {
            rpc,
            signer,
            chain_id,
            london,
            fees: FeePolicy::default(),
        })
    }

    /// Whether the endpoint supports EIP-1559 transactions (its blocks have a base fee).
    pub fn supports_eip1559(&self) -> bool {
        self.london
    }

    /// Whether this wallet sends EIP-1559 transactions (supported and not `legacy`).
    pub fn uses_eip1559(&self) -> bool {
        self.london && !self.fees.legacy
    }

    /// Sets how transactions pay for gas; EIP-1559 fees on an endpoint without EIP-1559
    /// are refused.
    pub fn set_fee_policy(&mut self, policy: FeePolicy) -> Result<(), String> {
        let eip1559_fees =
            policy.max_fee_per_gas.is_some() || policy.max_priority_fee_per_gas.is_some();
        if eip1559_fees && (policy.legacy || !self.london) {
            return Err(if policy.legacy {
                "EIP-1559 fees were given with legacy transactions: drop --legacy or the fees"
                    .into()
            } else {
                "the endpoint does not support EIP-1559 (its latest block has no base fee): \
                 drop --max-fee-per-gas and --max-priority-fee-per-gas"
                    .into()
            });
        }
        self.fees = policy;
        Ok(())
    }

    /// The fees the next transaction pays.
    pub async fn fees(&self) -> Result<Fees, RpcError> {
        if !self.uses_eip1559() {
            return Ok(Fees::Legacy {
                gas_price: self.rpc.quantity("eth_gasPrice", json!([])).await?,
            });
        }
        let history = self
            .rpc
            .request(
                "eth_feeHistory",
                json!([format!("{FEE_HISTORY_BLOCKS:#x}"), "latest", [50]]),
            )
            .await?;
        eip1559_fees(&history, &self.fees).map_err(|why| RpcError::Decode {
            method: "eth_feeHistory".into(),
            why,
        })
    }

    pub fn address(&self) -> Address {
        Address::from_private_key(&self.signer)
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Estimates, signs, sends and waits for one transaction; `what` names it in errors.
    pub async fn send(&self, what: &str, to: TxKind, data: Vec<u8>) -> Result<Mined, RpcError> {
        let from = self.address();
        let data = Bytes::from(data);
        let mut request = json!({"from": from, "data": data});
        if let TxKind::Call(to) = to {
            request["to"] = json!(to);
        }
        let label = |e: RpcError| match e {
            RpcError::Revert { reason, .. } => RpcError::Revert {
                what: what.to_string(),
                reason,
            },
            e => e,
        };
        let estimate = self
            .rpc
            .quantity("eth_estimateGas", json!([request]))
            .await
            .map_err(label)? as u64;
        let nonce = self
            .rpc
            .quantity("eth_getTransactionCount", json!([from, "pending"]))
            .await? as u64;
        let gas_limit = estimate + estimate / 5 + 10_000;
        let fees = self.fees().await?;
        let raw = match fees {
            Fees::Legacy { gas_price } => {
                let tx = TxLegacy {
                    chain_id: Some(self.chain_id),
                    nonce,
                    gas_price,
                    gas_limit,
                    to,
                    value: U256::ZERO,
                    input: data,
                };
                let signature = self.sign(tx.signature_hash())?;
                TxEnvelope::Legacy(tx.into_signed(signature)).encoded_2718()
            }
            Fees::Eip1559 {
                max_fee_per_gas,
                max_priority_fee_per_gas,
            } => {
                let tx = TxEip1559 {
                    chain_id: self.chain_id,
                    nonce,
                    gas_limit,
                    max_fee_per_gas,
                    max_priority_fee_per_gas,
                    to,
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input: data,
                };
                let signature = self.sign(tx.signature_hash())?;
                TxEnvelope::Eip1559(tx.into_signed(signature)).encoded_2718()
            }
        };
        let raw = Bytes::from(raw);
        let hash: B256 = serde_json::from_value(
            self.rpc
                .request("eth_sendRawTransaction", json!([raw]))
                .await
                .map_err(label)?,
        )
        .map_err(|e| RpcError::Decode {
            method: "eth_sendRawTransaction".into(),
            why: e.to_string(),
        })?;
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let receipt = self
                .rpc
                .request("eth_getTransactionReceipt", json!([hash]))
                .await?;
            if !receipt.is_null() {
                let field = |k: &str| receipt.get(k).and_then(Value::as_str).unwrap_or_default();
                if field("status") != "0x1" {
                    return Err(RpcError::Failed {
                        what: what.to_string(),
                        hash,
                    });
                }
                let gas_used =
                    u64::from_str_radix(field("gasUsed").trim_start_matches("0x"), 16).unwrap_or(0);
                let contract = field("contractAddress").parse().ok();
                return Ok(Mined {
                    hash,
                    gas_used,
                    contract,
                    fees,
                    receipt_type: field("type").to_string(),
                });
            }
            if start.elapsed() > self.rpc.receipt_timeout {
                return Err(RpcError::Timeout {
                    what: what.to_string(),
                    hash,
                    seconds: self.rpc.receipt_timeout.as_secs(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn sign(&self, hash: B256) -> Result<alloy_primitives::Signature, RpcError> {
        let (signature, recovery) = self
            .signer
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| RpcError::Decode {
                method: "sign".into(),
                why: e.to_string(),
            })?;
        Ok(alloy_primitives::Signature::from_signature_and_parity(
            signature,
            recovery.is_y_odd(),
        ))
    }

    /// A typed transaction to a contract.
    pub async fn call<C: SolCall>(&self, to: Address, call: C) -> Result<Mined, RpcError> {
        self.send(C::SIGNATURE, TxKind::Call(to), call.abi_encode())
            .await
    }
}

/// A deployment on a chain: what `dao deploy` prints and writes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ChainDeployment {
    pub chain_id: u64,
    pub deployer: Address,
    pub parameters: Address,
    pub registry: Address,
    pub governance: Address,
    /// `eip1559` (type 2) or `legacy` (type 0).
    pub transaction_type: String,
    /// (step, transaction hash, gas used), in order.
    pub transactions: Vec<(String, B256, u64)>,
    pub operators: Vec<Address>,
}

/// Deploys MeshParameters, OperatorRegistry and MeshGovernance from `wallet` (as
/// [`crate::evm::Deployment`] does in revm), admits `operators` (the deployer keeps the
/// registrar role for that), grants governance the registrar role and hands it the
/// ownership of MeshParameters.
pub async fn deploy(
    wallet: &Wallet<'_>,
    artifacts: &Artifacts,
    rules: &Rules,
    operators: &[Address],
) -> Result<ChainDeployment, RpcError> {
    let admin = wallet.address();
    let mut transactions = Vec::new();
    let mut created = Vec::new();
    for (name, code) in [
        (
            "deploy MeshParameters",
            initcode(
                &artifacts.parameters,
                IMeshParameters::constructorCall {
                    initialOwner: admin,
                },
            ),
        ),
        (
            "deploy OperatorRegistry",
            initcode(
                &artifacts.registry,
                IOperatorRegistry::constructorCall { admin },
            ),
        ),
    ] {
        let m = wallet.send(name, TxKind::Create, code).await?;
        let address = m.contract.ok_or_else(|| RpcError::Decode {
            method: name.to_string(),
            why: "the receipt names no contract address".into(),
        })?;
        transactions.push((name.to_string(), m.hash, m.gas_used));
        created.push(address);
    }
    let (parameters, registry) = (created[0], created[1]);
    let g = wallet
        .send(
            "deploy MeshGovernance",
            TxKind::Create,
            governance_initcode(artifacts, parameters, registry, rules),
        )
        .await?;
    let governance = g.contract.ok_or_else(|| RpcError::Decode {
        method: "deploy MeshGovernance".into(),
        why: "the receipt names no contract address".into(),
    })?;
    transactions.push(("deploy MeshGovernance".into(), g.hash, g.gas_used));
    for &operator in operators {
        let m = wallet
            .call(registry, IOperatorRegistry::admitCall { operator })
            .await?;
        transactions.push((format!("admit {operator}"), m.hash, m.gas_used));
    }
    let role = wallet
        .rpc
        .view(registry, IOperatorRegistry::REGISTRAR_ROLECall {})
        .await?;
    let m = wallet
        .call(
            registry,
            IOperatorRegistry::grantRoleCall {
                role,
                account: governance,
            },
        )
        .await?;
    transactions.push((
        "grant governance the registrar role".into(),
        m.hash,
        m.gas_used,
    ));
    let m = wallet
        .call(
            parameters,
            IMeshParameters::transferOwnershipCall {
                newOwner: governance,
            },
        )
        .await?;
    transactions.push((
        "hand MeshParameters to governance".into(),
        m.hash,
        m.gas_used,
    ));
    Ok(ChainDeployment {
        chain_id: wallet.chain_id(),
        transaction_type: match wallet.uses_eip1559() {
            true => "eip1559",
            false => "legacy",
        }
        .into(),
        deployer: admin,
        parameters,
        registry,
        governance,
        transactions,
        operators: operators.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(bases: &[&str], tips: &[&str]) -> Value {
        json!({
            "baseFeePerGas": bases,
            "reward": tips.iter().map(|t| vec![*t]).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn eip1559_fees_from_the_fee_history() {
        let auto = FeePolicy::default();
        // next base fee 0x64 = 100 wei; median tip of 1, 5, 3 = 3 wei
        let h = history(&["0x10", "0x20", "0x30", "0x64"], &["0x1", "0x5", "0x3"]);
        assert_eq!(
            eip1559_fees(&h, &auto).unwrap(),
            Fees::Eip1559 {
                max_fee_per_gas: 203,
                max_priority_fee_per_gas: 3
            }
        );
        // empty blocks paid no tip: the floor
        let h = history(&["0x1", "0x1"], &["0x0"]);
        assert_eq!(
            eip1559_fees(&h, &auto).unwrap(),
            Fees::Eip1559 {
                max_fee_per_gas: 2 + TIP_FLOOR,
                max_priority_fee_per_gas: TIP_FLOOR
            }
        );
        // given fees win
        let given = FeePolicy {
            max_fee_per_gas: Some(1_000),
            max_priority_fee_per_gas: Some(7),
            legacy: false,
        };
        assert_eq!(
            eip1559_fees(&h, &given).unwrap(),
            Fees::Eip1559 {
                max_fee_per_gas: 1_000,
                max_priority_fee_per_gas: 7
            }
        );
        let below = FeePolicy {
            max_fee_per_gas: Some(5),
            max_priority_fee_per_gas: Some(7),
            legacy: false,
        };
        assert!(eip1559_fees(&h, &below)
            .unwrap_err()
            .contains("below the priority fee"));
        assert!(eip1559_fees(&json!({}), &auto)
            .unwrap_err()
            .contains("no baseFeePerGas"));
    }
}
