//! The link-state [`Authenticator`] of a node: signs with the SVID key, verifies other
//! nodes' signatures against their SVIDs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::EcdsaKeyPair;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x0tta6bl4_proto::{AuthError, Authenticator, NodeName};

use crate::federation::{NameBindings, TrustBundles};
use crate::svid::{self, CERTIFICATE_LEN_MAX};

/// Most verified credentials remembered; the oldest is forgotten first when full.
pub const VERIFIED_CREDENTIALS_MAX: usize = 4096;

/// SHA-256 of a credential's DER.
type CredentialHash = [u8; 32];

/// A credential that passed full validation.
#[derive(Debug, Clone)]
struct Verified {
    name: NodeName,
    not_before: i64,
    not_after: i64,
}

/// Verified credentials by hash, bounded to [`VERIFIED_CREDENTIALS_MAX`] (FIFO eviction).
#[derive(Debug, Default)]
struct VerifiedCache {
    entries: HashMap<CredentialHash, Verified>,
    order: VecDeque<CredentialHash>,
}

impl VerifiedCache {
    fn get(&self, hash: &CredentialHash) -> Option<&Verified> {
        self.entries.get(hash)
    }

    fn insert(&mut self, hash: CredentialHash, verified: Verified) {
        if self.entries.insert(hash, verified).is_some() {
            return;
        }
        self.order.push_back(hash);
        while self.order.len() > VERIFIED_CREDENTIALS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
        debug_assert_eq!(self.entries.len(), self.order.len());
    }

    fn remove(&mut self, hash: &CredentialHash) {
        if self.entries.remove(hash).is_some() {
            self.order.retain(|h| h != hash);
        }
    }
}

/// The credential and key an authenticator signs with, replaceable when the SVID is
/// renewed ([`SignerHandle::replace`]).
///
/// [`Authenticator::credential`] returns a borrow, so each credential is leaked once
/// (about 1 KiB per renewal: with hourly SVIDs renewed at half-life, 48 KiB a day).
pub(crate) struct Signer {
    credential: RwLock<&'static [u8]>,
    key: RwLock<Arc<EcdsaKeyPair>>,
    /// The trust bundles credentials are verified against (renewals may bring a new
    /// one, during a root rotation), picked by the credential's trust domain.
    bundle: RwLock<Arc<TrustBundles>>,
    /// Node name → trust domain: a credential of another domain claiming a bound name
    /// is refused.
    bindings: Arc<NameBindings>,
}

/// Replaces the credential and key of the authenticator it came with
/// ([`crate::NodeIdentity::authenticator_with_handle`]).
#[derive(Clone)]
pub struct SignerHandle {
    signer: Arc<Signer>,
}

impl std::fmt::Debug for SignerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerHandle").finish_non_exhaustive()
    }
}

impl SignerHandle {
    /// Sign from now on with `identity`'s SVID (after a renewal).
    pub fn replace(&self, identity: &crate::NodeIdentity) {
        let credential: &'static [u8] =
            Box::leak(identity.certificate().to_vec().into_boxed_slice());
        *self
            .signer
            .key
            .write()
            .unwrap_or_else(PoisonError::into_inner) = identity.signing_key();
        *self
            .signer
            .bundle
            .write()
            .unwrap_or_else(PoisonError::into_inner) = identity.trust_bundles();
        *self
            .signer
            .credential
            .write()
            .unwrap_or_else(PoisonError::into_inner) = credential;
    }
}

/// Signs with the node's SVID key; verifies with the trust bundle of the credential's
/// trust domain (ours or a federated one), and binds node names to trust domains.
pub(crate) struct SvidAuthenticator {
    signer: Arc<Signer>,
    random: SystemRandom,
    cache: Mutex<VerifiedCache>,
}

impl SvidAuthenticator {
    pub(crate) fn new(
        credential: Vec<u8>,
        key: Arc<EcdsaKeyPair>,
        bundle: Arc<TrustBundles>,
        bindings: Arc<NameBindings>,
    ) -> Self {
        let signer = Arc::new(Signer {
            credential: RwLock::new(Box::leak(credential.into_boxed_slice())),
            key: RwLock::new(key),
            bundle: RwLock::new(bundle),
            bindings,
        });
        SvidAuthenticator {
            signer,
            random: SystemRandom::new(),
            cache: Mutex::new(VerifiedCache::default()),
        }
    }

    pub(crate) fn handle(&self) -> SignerHandle {
        SignerHandle {
            signer: self.signer.clone(),
        }
    }

    /// Validate `credential` as a node SVID now, from the cache when possible.
    fn node_of(&self, origin: &NodeName, credential: &[u8]) -> Result<NodeName, AuthError> {
        let untrusted = |reason: String| AuthError::UntrustedCredential {
            origin: origin.to_string(),
            reason,
        };
        if credential.len() > CERTIFICATE_LEN_MAX {
            return Err(untrusted(format!(
                "{} bytes; at most {CERTIFICATE_LEN_MAX}",
                credential.len()
            )));
        }
        let hash = sha256(credential);
        let now = UnixTime::now();
        let cached = self.lock_cache().get(&hash).cloned();
        if let Some(verified) = cached {
            // Only validity is rechecked: the chain and the SPIFFE rules passed before.
            return match svid::check_validity(verified.not_before, verified.not_after, now) {
                Ok(()) => Ok(verified.name),
                Err(error) => {
                    self.lock_cache().remove(&hash);
                    Err(untrusted(error.to_string()))
                }
            };
        }
        let der = CertificateDer::from(credential);
        let verified = self
            .bundle()
            .verify(&der, &[], now, KeyUsage::client_auth())
            .map_err(|error| untrusted(error.to_string()))?;
        let name = self
            .signer
            .bindings
            .bind(&verified.spiffe_id)
            .map_err(untrusted)?;
        let entry = Verified {
            name: name.clone(),
            not_before: verified.not_before,
            not_after: verified.not_after,
        };
        self.lock_cache().insert(hash, entry);
        Ok(name)
    }

    /// The trust bundles in force (a renewal may replace them).
    fn bundle(&self) -> Arc<TrustBundles> {
        self.signer
            .bundle
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, VerifiedCache> {
        // The cache holds no invariant a panicking holder could break halfway.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Authenticator for SvidAuthenticator {
    fn credential(&self) -> &[u8] {
        *self
            .signer
            .credential
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let key = self
            .signer
            .key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match key.sign(&self.random, message) {
            Ok(signature) => signature.as_ref().to_vec(),
            Err(_) => {
                // Fail closed: an empty signature never verifies.
                tracing::error!("ECDSA signing with the SVID key failed");
                Vec::new()
            }
        }
    }

    fn verify(
        &self,
        origin: &NodeName,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let name = self.node_of(origin, credential)?;
        if &name != origin {
            return Err(AuthError::WrongOrigin {
                origin: origin.to_string(),
                credential_name: name.to_string(),
            });
        }
        let der = CertificateDer::from(credential);
        let bad_signature = || AuthError::BadSignature {
            origin: origin.to_string(),
        };
        let certificate = EndEntityCert::try_from(&der).map_err(|_| bad_signature())?;
        certificate
            .verify_signature(webpki::aws_lc_rs::ECDSA_P256_SHA256, message, signature)
            .map_err(|_| bad_signature())
    }

    fn verify_revocation(&self, revocation: &[u8]) -> Result<NodeName, AuthError> {
        let bundle = self.bundle();
        let local = bundle.local_bundle();
        crate::Revocation::from_bytes(revocation)
            .and_then(|r| r.verify_with(local.trust_domain(), local.certificates()))
            .map_err(|reason| AuthError::BadRevocation { reason })
    }
}

fn sha256(bytes: &[u8]) -> CredentialHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_forgets_the_oldest() {
        let mut cache = VerifiedCache::default();
        let name = NodeName::new("a").unwrap();
        let entry = Verified {
            name,
            not_before: 0,
            not_after: i64::MAX,
        };
        let hash = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            h
        };
        for i in 0..VERIFIED_CREDENTIALS_MAX + 10 {
            cache.insert(hash(i), entry.clone());
        }
        assert_eq!(cache.entries.len(), VERIFIED_CREDENTIALS_MAX);
        assert!(cache.get(&hash(9)).is_none());
        assert!(cache.get(&hash(10)).is_some());
        cache.remove(&hash(10));
        assert_eq!(cache.order.len(), VERIFIED_CREDENTIALS_MAX - 1);
    }
}
