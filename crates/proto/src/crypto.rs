//! Signing and verification of link-state, injected by the driver (as rustls injects
//! its `CryptoProvider`): the core decides *what* is signed and *when* it is checked;
//! the driver decides *how*.

use std::hash::{Hash, Hasher};

use crate::name::NodeName;

/// Why an advertisement's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential (certificate) carried with the advertisement is not trusted.
    #[error("credential of {origin} is not trusted: {reason}")]
    UntrustedCredential {
        /// The origin the advertisement claims.
        origin: String,
        /// What the verifier found wrong.
        reason: String,
    },
    /// The credential is valid but names another node.
    #[error("credential names {credential_name}, not the claimed origin {origin}")]
    WrongOrigin {
        /// The origin the advertisement claims.
        origin: String,
        /// The node the credential belongs to.
        credential_name: String,
    },
    /// The signature does not match the signed bytes and the credential's key.
    #[error("signature of {origin} does not verify")]
    BadSignature {
        /// The origin the advertisement claims.
        origin: String,
    },
    /// A revocation that is malformed or not signed by a trusted authority.
    #[error("revocation refused: {reason}")]
    BadRevocation {
        /// What the verifier found wrong.
        reason: String,
    },
}

/// The node's signing identity and the verifier of everyone else's.
///
/// The daemon implements it with its X.509-SVID (the credential is the DER certificate,
/// checked against the trust bundle); simulations may use [`SimAuthenticator`]. It is
/// shared (`Sync`) so that a node's state can be cloned, as the twin does to start every
/// iteration of a scenario from the same converged mesh.
pub trait Authenticator: Send + Sync {
    /// The credential carried with this node's advertisements (e.g. its DER certificate).
    fn credential(&self) -> &[u8];
    /// Sign `message` with this node's key.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
    /// Check that `signature` over `message` was made by `origin`, proven by `credential`.
    fn verify(
        &self,
        origin: &NodeName,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError>;
    /// Check a revocation (opaque bytes: the daemon's are CA-signed statements, see
    /// `x0tta6bl4_identity::Revocation`) and return the node it revokes. The core floods
    /// and exchanges revocations; only this decides whether one is genuine.
    fn verify_revocation(&self, revocation: &[u8]) -> Result<NodeName, AuthError>;
}

impl<T: Authenticator + ?Sized> Authenticator for Box<T> {
    fn credential(&self) -> &[u8] {
        (**self).credential()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        (**self).sign(message)
    }
    fn verify(
        &self,
        origin: &NodeName,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        (**self).verify(origin, credential, message, signature)
    }
    fn verify_revocation(&self, revocation: &[u8]) -> Result<NodeName, AuthError> {
        (**self).verify_revocation(revocation)
    }
}

/// First bytes of a simulated revocation.
const SIM_REVOCATION_PREFIX: &[u8] = b"x0tta6bl4-sim-revocation\n";
/// The signer name of simulated revocations (not a valid node name, so no node's key).
const SIM_AUTHORITY: &str = "/authority";

/// A keyed-hash authenticator for simulations and in-memory tests.
///
/// Every node's key is derived from a simulation-wide secret and its name, so honest
/// instances verify each other and a node cannot forge another's advertisement without
/// the secret. It is an integrity check sized for simulating thousands of nodes, not a
/// security mechanism: the daemon never uses it.
/// Simulated revocations are signed by the same secret ([`SimAuthenticator::revocation`]).
#[derive(Clone, Debug)]
pub struct SimAuthenticator {
    secret: u64,
    name: NodeName,
    credential: Vec<u8>,
}

impl SimAuthenticator {
    /// The authenticator of node `name` in a simulation keyed by `secret`.
    pub fn new(secret: u64, name: NodeName) -> Self {
        let credential = name.as_str().as_bytes().to_vec();
        SimAuthenticator {
            secret,
            name,
            credential,
        }
    }

    /// A revocation of `target` signed by the simulation's authority (anyone holding
    /// the simulation secret): `x0tta6bl4-sim-revocation\nTARGET\n` and an 8-byte tag.
    pub fn revocation(&self, target: &NodeName) -> Vec<u8> {
        let mut bytes = SIM_REVOCATION_PREFIX.to_vec();
        bytes.extend_from_slice(target.as_str().as_bytes());
        bytes.push(b'\n');
        let tag = self.tag(SIM_AUTHORITY, &bytes);
        bytes.extend_from_slice(&tag);
        bytes
    }

    fn tag(&self, name: &str, message: &[u8]) -> [u8; 8] {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.secret.hash(&mut hasher);
        name.hash(&mut hasher);
        message.hash(&mut hasher);
        hasher.finish().to_le_bytes()
    }
}

impl Authenticator for SimAuthenticator {
    fn credential(&self) -> &[u8] {
        &self.credential
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.tag(self.name.as_str(), message).to_vec()
    }

    fn verify(
        &self,
        origin: &NodeName,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        if credential != origin.as_str().as_bytes() {
            return Err(AuthError::WrongOrigin {
                origin: origin.to_string(),
                credential_name: String::from_utf8_lossy(credential).into_owned(),
            });
        }
        if signature != self.tag(origin.as_str(), message) {
            return Err(AuthError::BadSignature {
                origin: origin.to_string(),
            });
        }
        Ok(())
    }

    fn verify_revocation(&self, revocation: &[u8]) -> Result<NodeName, AuthError> {
        let bad = |reason: &str| AuthError::BadRevocation {
            reason: reason.to_owned(),
        };
        let (body, tag) = revocation
            .split_at_checked(revocation.len().saturating_sub(8))
            .ok_or_else(|| bad("too short"))?;
        let target = body
            .strip_prefix(SIM_REVOCATION_PREFIX)
            .and_then(|rest| rest.strip_suffix(b"\n"))
            .ok_or_else(|| bad("not a simulated revocation"))?;
        if tag != self.tag(SIM_AUTHORITY, body) {
            return Err(bad("the authority's tag does not verify"));
        }
        let target = std::str::from_utf8(target).map_err(|_| bad("target is not UTF-8"))?;
        NodeName::new(target).map_err(|e| bad(&e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_signatures_verify_and_forgeries_fail() {
        let a = NodeName::new("a").unwrap();
        let b = NodeName::new("b").unwrap();
        let auth_a = SimAuthenticator::new(1, a.clone());
        let auth_b = SimAuthenticator::new(1, b.clone());
        let sig = auth_a.sign(b"hello");
        assert!(auth_b
            .verify(&a, auth_a.credential(), b"hello", &sig)
            .is_ok());
        assert!(auth_b
            .verify(&a, auth_a.credential(), b"hellO", &sig)
            .is_err());
        assert!(auth_b
            .verify(&b, auth_a.credential(), b"hello", &sig)
            .is_err());
        let revocation = auth_a.revocation(&b);
        assert_eq!(auth_b.verify_revocation(&revocation), Ok(b.clone()));
        let mut forged = revocation.clone();
        forged[30] ^= 1;
        assert!(auth_b.verify_revocation(&forged).is_err());
        assert!(auth_b.verify_revocation(b"").is_err());
        let stranger = SimAuthenticator::new(2, a.clone());
        assert!(stranger.verify_revocation(&revocation).is_err());
        assert!(auth_b
            .verify(
                &a,
                a.as_str().as_bytes(),
                b"hello",
                &stranger.sign(b"hello")
            )
            .is_err());
    }
}
