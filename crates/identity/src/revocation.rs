//! Revocations: a statement "node NAME is no longer trusted", signed by the CA key and
//! verified by every node against its trust bundle.
//!
//! A revocation names a node, not a certificate, so it also covers SVIDs the node might
//! renew; the CA records revoked names in `revocations.toml` and its service refuses to
//! issue to them again. Encoding: [`REVOCATION_MAGIC`], then JSON
//! `{"target", "issued_at", "signature"}`; the signature (ECDSA P-256 SHA-256, hex)
//! covers `x0tta6bl4-revocation-v1\nTARGET\nISSUED_AT`. Decoding is bounded
//! ([`REVOCATION_LEN_MAX`]).

use std::collections::BTreeMap;

use aws_lc_rs::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};
use x0tta6bl4_proto::NodeName;

use crate::ca::{unix_now, CertificateAuthority};
use crate::error::Error;
use crate::files::{self, bad_file, FileRole, PUBLIC_FILE_MODE};
use crate::spiffe::SpiffeId;
use crate::{svid, NodeIdentity, CA_KEY_FILE};

/// First bytes of an encoded revocation (never the first byte of a protocol frame,
/// which is its version).
pub const REVOCATION_MAGIC: &[u8] = b"\xffX0REVOKE1";
/// Longest encoded revocation accepted, in bytes.
pub const REVOCATION_LEN_MAX: usize = 4096;
/// The file of revoked names in a CA directory.
pub const REVOCATIONS_FILE: &str = "revocations.toml";

/// A CA-signed revocation of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// `spiffe://TD/node/NAME`.
    pub target: String,
    /// When the CA signed it, Unix seconds.
    pub issued_at: i64,
    /// Hex ECDSA signature by the CA key.
    pub signature: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationsFile {
    /// Node name -> the revocation.
    #[serde(default)]
    revoked: BTreeMap<String, Revocation>,
}

fn signed_bytes(target: &str, issued_at: i64) -> Vec<u8> {
    format!("x0tta6bl4-revocation-v1\n{target}\n{issued_at}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 || text.len() > 512 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Revocation {
    /// The encoding flooded through the mesh and posted to `/api/v1/revocations`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = REVOCATION_MAGIC.to_vec();
        bytes.extend(serde_json::to_vec(self).unwrap_or_default());
        bytes
    }

    /// Decode (bounded); checks the shape only, not the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Revocation, String> {
        if bytes.len() > REVOCATION_LEN_MAX {
            return Err(format!(
                "{} bytes; at most {REVOCATION_LEN_MAX}",
                bytes.len()
            ));
        }
        let body = bytes
            .strip_prefix(REVOCATION_MAGIC)
            .ok_or("not a revocation (wrong magic)")?;
        let revocation: Revocation =
            serde_json::from_slice(body).map_err(|e| format!("malformed revocation: {e}"))?;
        revocation.node_name()?;
        Ok(revocation)
    }

    /// The revoked node's name.
    pub fn node_name(&self) -> Result<NodeName, String> {
        let id = SpiffeId::parse(&self.target).map_err(|e| format!("target: {e}"))?;
        id.node_name()
            .ok_or_else(|| format!("target {id} is not a node SPIFFE ID"))
    }

    /// Check the signature against the CAs of `identity`'s trust bundle, and that the
    /// target is in its trust domain. Returns the revoked node's name.
    pub fn verify(&self, identity: &NodeIdentity) -> Result<NodeName, String> {
        self.verify_with(identity.trust_domain(), identity.bundle_certificates())
    }

    /// [`Revocation::verify`] against a trust domain and its CA certificates.
    pub(crate) fn verify_with<'a>(
        &self,
        trust_domain: &crate::TrustDomain,
        mut cas: impl Iterator<Item = &'a rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<NodeName, String> {
        let id = SpiffeId::parse(&self.target).map_err(|e| format!("target: {e}"))?;
        if id.trust_domain() != trust_domain {
            return Err(format!("target {id} is not in our trust domain"));
        }
        let name = self.node_name()?;
        let signature = unhex(&self.signature).ok_or("signature is not hex")?;
        let message = signed_bytes(&self.target, self.issued_at);
        let signed_by_a_ca = cas.any(|ca| {
            svid::parse(ca).is_ok_and(|x509| {
                let key = x509.public_key().subject_public_key.data.as_ref();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
                    .verify(&message, &signature)
                    .is_ok()
            })
        });
        if !signed_by_a_ca {
            return Err("signature does not verify against any CA of the trust bundle".into());
        }
        Ok(name)
    }
}

impl CertificateAuthority {
    fn revocations_path(&self) -> std::path::PathBuf {
        self.dir().join(REVOCATIONS_FILE)
    }

    fn read_revocations(&self) -> Result<RevocationsFile, Error> {
        let path = self.revocations_path();
        if !path.exists() {
            return Ok(RevocationsFile::default());
        }
        let hint = "restore revocations.toml from a backup";
        let bytes = files::read(&path, "read revocations", hint)?;
        let text = String::from_utf8(bytes).map_err(|_| bad_file(&path, "is not UTF-8", hint))?;
        toml::from_str(&text)
            .map_err(|e| bad_file(&path, format!("is not a revocations file: {e}"), hint))
    }

    /// Whether node `name` was revoked.
    pub fn is_revoked(&self, name: &NodeName) -> Result<bool, Error> {
        Ok(self.read_revocations()?.revoked.contains_key(name.as_str()))
    }

    /// Revoke node `name`: sign a revocation with the CA key and record it (the CA and
    /// its service then refuse to issue to that name).
    pub fn revoke(&self, name: &NodeName) -> Result<Revocation, Error> {
        let target = SpiffeId::for_node(self.trust_domain(), name)
            .map_err(|e| Error::Config(format!("node name {name:?}: {e}")))?
            .to_string();
        let issued_at = unix_now();
        let key_path = self.dir().join(CA_KEY_FILE);
        let hint = "check the CA directory";
        let key = files::read_private_key(
            &key_path,
            FileRole {
                read: "read CA key",
                hint,
            },
        )?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_pkcs8_der())
            .map_err(|e| bad_file(&key_path, format!("is not an ECDSA P-256 key: {e}"), hint))?;
        let signature = key
            .sign(
                &aws_lc_rs::rand::SystemRandom::new(),
                &signed_bytes(&target, issued_at),
            )
            .map_err(|_| Error::Crypto {
                what: "signing the revocation",
                reason: "ECDSA signing failed".into(),
            })?;
        let revocation = Revocation {
            target,
            issued_at,
            signature: hex(signature.as_ref()),
        };
        let mut file = self.read_revocations()?;
        file.revoked.insert(name.to_string(), revocation.clone());
        let text = toml::to_string(&file).map_err(|e| Error::Crypto {
            what: "encoding revocations",
            reason: e.to_string(),
        })?;
        files::write_replace(
            &self.revocations_path(),
            text.as_bytes(),
            PUBLIC_FILE_MODE,
            "write revocations",
            hint,
        )?;
        tracing::info!(node = %name, "node revoked");
        Ok(revocation)
    }
}
