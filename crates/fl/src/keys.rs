//! ECDSA P-256 committee keys (aws-lc-rs), for committees whose members hold plain key
//! pairs rather than SVIDs: the in-process committee of `x0tta6bl4 fl bench --audit`
//! and `fl rollback`, and the verification of an audit trail long after the SVIDs
//! that signed it expired (the credential here is the bare public key, so a
//! signature is checked without a certificate's validity window).
//!
//! In the mesh daemon the committee signs with the node's SVID key through
//! `x0tta6bl4_identity::NodeIdentity::authenticator` (the same ECDSA P-256 key, the
//! certificate as credential); both implement [`Authenticator`].

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use x0tta6bl4_proto::{AuthError, Authenticator, NodeName};

/// A node's ECDSA P-256 key pair; the credential is its SEC1 public key.
pub struct EcdsaKey {
    pair: EcdsaKeyPair,
    public: Vec<u8>,
    random: SystemRandom,
}

impl EcdsaKey {
    /// A fresh key pair, and its PKCS#8 document (to store).
    pub fn generate() -> Result<(EcdsaKey, Vec<u8>), String> {
        let random = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &random)
            .map_err(|e| format!("generating an ECDSA key: {e}"))?;
        let der = doc.as_ref().to_vec();
        Ok((EcdsaKey::from_pkcs8(&der)?, der))
    }

    /// The key pair in a PKCS#8 document.
    pub fn from_pkcs8(der: &[u8]) -> Result<EcdsaKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map_err(|e| format!("not an ECDSA P-256 PKCS#8 key: {e}"))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(EcdsaKey {
            pair,
            public,
            random: SystemRandom::new(),
        })
    }

    /// The SEC1 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }
}

/// Check an ECDSA P-256 (ASN.1) signature with a SEC1 public key.
pub fn verify_p256(public: &[u8], message: &[u8], signature: &[u8]) -> Result<(), String> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public)
        .verify(message, signature)
        .map_err(|_| "ECDSA P-256 signature does not verify".to_string())
}

impl Authenticator for EcdsaKey {
    fn credential(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Fail closed: an empty signature never verifies.
        self.pair
            .sign(&self.random, message)
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }

    fn verify(
        &self,
        origin: &NodeName,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        PublicKeys.verify(origin, credential, message, signature)
    }

    fn verify_revocation(&self, _revocation: &[u8]) -> Result<NodeName, AuthError> {
        Err(AuthError::BadRevocation {
            reason: "committee keys do not carry revocations".into(),
        })
    }
}

/// Verifies only (no key of its own): ECDSA P-256 signatures against bare public keys.
/// What `x0tta6bl4 fl verify` checks an audit trail with.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicKeys;

impl Authenticator for PublicKeys {
    fn credential(&self) -> &[u8] {
        &[]
    }

    fn sign(&self, _message: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn verify(
        &self,
        origin: &NodeName,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        verify_p256(credential, message, signature).map_err(|_| AuthError::BadSignature {
            origin: origin.to_string(),
        })
    }

    fn verify_revocation(&self, _revocation: &[u8]) -> Result<NodeName, AuthError> {
        Err(AuthError::BadRevocation {
            reason: "committee keys do not carry revocations".into(),
        })
    }
}
