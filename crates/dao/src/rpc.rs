//! The contracts on a real chain: an Ethereum JSON-RPC client (reqwest), transactions
//! signed locally (alloy's `TxLegacy` with the EIP-155 chain id, secp256k1 signatures from
//! the `k256` crate), and
//! [`deploy`], behind `x0tta6bl4 dao deploy --rpc URL --key-file FILE`.
//!
//! Any endpoint that speaks the standard `eth_*` methods works (a devnet such as Foundry's
//! anvil, a testnet node, a provider): the client asks for the chain id, the nonce, a gas
//! estimate and the gas price, signs, sends the raw transaction and waits for its receipt.
//! A transaction the chain would revert is refused before it is sent, with the decoded
//! revert reason from the gas estimate.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEnvelope, TxLegacy};
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
}

/// Signs and sends transactions from one account.
pub struct Wallet<'a> {
    pub rpc: &'a Rpc,
    signer: SigningKey,
    chain_id: u64,
}

impl<'a> Wallet<'a> {
    pub async fn new(rpc: &'a Rpc, signer: SigningKey) -> Result<Self, RpcError> {
        let chain_id = rpc.chain_id().await?;
        Ok(Wallet {
            rpc,
            signer,
            chain_id,
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
        let gas_price = self.rpc.quantity("eth_gasPrice", json!([])).await?;
        let tx = TxLegacy {
            chain_id: Some(self.chain_id),
            nonce,
            gas_price,
            gas_limit: estimate + estimate / 5 + 10_000,
            to,
            value: U256::ZERO,
            input: data,
        };
        let (signature, recovery) = self
            .signer
            .sign_prehash_recoverable(tx.signature_hash().as_slice())
            .map_err(|e| RpcError::Decode {
                method: "sign".into(),
                why: e.to_string(),
            })?;
        let signature =
            alloy_primitives::Signature::from_signature_and_parity(signature, recovery.is_y_odd());
        let raw = Bytes::from(TxEnvelope::Legacy(tx.into_signed(signature)).encoded_2718());
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
        deployer: admin,
        parameters,
        registry,
        governance,
        transactions,
        operators: operators.to_vec(),
    })
}
