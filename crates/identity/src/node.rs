//! A node's loaded SVID and the TLS configurations and authenticator built from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use webpki::KeyUsage;
use x0tta6bl4_proto::{Authenticator, NodeName};

use crate::auth::{SignerHandle, SvidAuthenticator};
use crate::ca::system_time;
use crate::error::{Error, SvidError};
use crate::federation::{FederatedBundles, NameBindings, TrustBundles};
use crate::files::{self, bad_file, FileRole};
use crate::kx::{self, KxMode, KxRecord};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::{self, Bundle};
use crate::tls::{self, SpiffeClientVerifier, SpiffeServerVerifier};
use crate::{ALPN, BUNDLE_FILE, SVID_CERT_FILE, SVID_KEY_FILE};

/// A node's X.509-SVID, loaded and validated: certificate chain, private key and trust
/// bundle. Cheap to clone.
#[derive(Clone)]
pub struct NodeIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Leaf first, then intermediates (none for SVIDs of the minimum CA).
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    signing_key: Arc<EcdsaKeyPair>,
    /// Our own trust domain's bundle.
    bundle: Arc<Bundle>,
    /// Ours and the federated ones: what peers are verified against.
    trust: Arc<TrustBundles>,
    federated: FederatedBundles,
    spiffe_id: SpiffeId,
    name: NodeName,
    not_before: SystemTime,
    not_after: SystemTime,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("dir", &self.inner.dir)
            .field("spiffe_id", &self.inner.spiffe_id)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Load `dir/svid.pem`, `dir/svid_key.pem` and `dir/bundle.pem`, and check that they
    /// form a node SVID (`spiffe://TD/node/NAME`) valid now, that chains to the bundle and
    /// whose ECDSA P-256 key matches.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let hint = format!(
            "run `x0tta6bl4 ca issue --dir CA --name NAME --out {}`",
            dir.display()
        );
        let cert_path = dir.join(SVID_CERT_FILE);
        let key_path = dir.join(SVID_KEY_FILE);
        let bundle_path = dir.join(BUNDLE_FILE);
        let role = |read| FileRole { read, hint: &hint };
        let chain = files::read_certificates(&cert_path, role("read SVID certificate"))?;
        let key = files::read_private_key(&key_path, role("read SVID key"))?;
        let bundle_certificates =
            files::read_certificates(&bundle_path, role("read trust bundle"))?;
        let sources = Sources {
            dir,
            cert: &cert_path,
            key: &key_path,
            bundle: &bundle_path,
            hint: &hint,
        };
        NodeIdentity::from_parts(chain, key, bundle_certificates, &sources)
    }

    /// An identity from DER values received rather than read from files (the SPIFFE
    /// Workload API): `chain` leaf first, `key` PKCS#8, `bundle` the trust domain's CAs.
    /// `source` (e.g. the socket) names where they came from in errors; `dir` is the
    /// node's state directory.
    pub fn from_der(
        dir: &Path,
        source: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        let label = |part: &str| PathBuf::from(format!("{source} ({part})"));
        let (cert, key_label, bundle_label) =
            (label("x509_svid"), label("x509_svid_key"), label("bundle"));
        let hint = format!(
            "check the registration entry the Workload API at {source} serves this workload"
        );
        if chain.is_empty() {
            return Err(bad_file(&cert, "holds no certificate", &hint));
        }
        if bundle.is_empty() {
            return Err(bad_file(&bundle_label, "holds no certificate", &hint));
        }
        let sources = Sources {
            dir,
            cert: &cert,
            key: &key_label,
            bundle: &bundle_label,
            hint: &hint,
        };
        NodeIdentity::from_parts(chain, key, bundle, &sources)
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
        bundle_certificates: Vec<CertificateDer<'static>>,
        sources: &Sources<'_>,
    ) -> Result<Self, Error> {
        let hint = sources.hint;
        let bundle = Bundle::new(bundle_certificates, tls::algorithms()).map_err(|e| {
            let reason = format!("is not a usable trust bundle: {e}");
            bad_file(sources.bundle, reason, hint)
        })?;
        let signing_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_pkcs8_der())
                .map_err(|e| {
                    bad_file(sources.key, format!("is not an ECDSA P-256 key: {e}"), hint)
                })?;
        let (spiffe_id, name, not_before, not_after) =
            verify_own_svid(&bundle, &chain, sources.cert, hint)?;
        let x509 =
            svid::parse(&chain[0]).map_err(|e| bad_file(sources.cert, e.to_string(), hint))?;
        if x509.public_key().subject_public_key.data.as_ref() != signing_key.public_key().as_ref() {
            let reason = format!(
                "does not match the certificate in {}",
                sources.cert.display()
            );
            return Err(bad_file(sources.key, reason, hint));
        }
        tracing::info!(%spiffe_id, not_after = %svid::rfc3339(not_after), "loaded node SVID");
        let bundle = Arc::new(bundle);
        Ok(NodeIdentity {
            inner: Arc::new(Inner {
                dir: sources.dir.to_path_buf(),
                chain,
                key,
                signing_key: Arc::new(signing_key),
                trust: Arc::new(TrustBundles::local(bundle.clone())),
                bundle,
                federated: FederatedBundles::default(),
                spiffe_id,
                name,
                not_before: system_time(not_before),
                not_after: system_time(not_after),
                provider: tls::provider(),
            }),
        })
    }

    /// This identity, also trusting the SVIDs of `federated`'s trust domains (each
    /// verified against its own domain's bundle). Replaces earlier federated bundles;
    /// refuses a bundle for our own trust domain.
    pub fn with_federation(&self, federated: &FederatedBundles) -> Result<Self, Error> {
        let trust = TrustBundles::new(self.inner.bundle.clone(), federated.clone())?;
        let inner = &self.inner;
        Ok(NodeIdentity {
            inner: Arc::new(Inner {
                dir: inner.dir.clone(),
                chain: inner.chain.clone(),
                key: inner.key.clone_key(),
                signing_key: inner.signing_key.clone(),
                bundle: inner.bundle.clone(),
                trust: Arc::new(trust),
                federated: federated.clone(),
                spiffe_id: inner.spiffe_id.clone(),
                name: inner.name.clone(),
                not_before: inner.not_before,
                not_after: inner.not_after,
                provider: inner.provider.clone(),
            }),
        })
    }

    /// The federated trust bundles this identity trusts besides its own.
    pub fn federated(&self) -> &FederatedBundles {
        &self.inner.federated
    }

    /// The SVID directory this identity was loaded from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Our SPIFFE ID, `spiffe://TD/node/NAME`.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.inner.spiffe_id
    }

    /// Our node name (the last segment of the SPIFFE ID).
    pub fn name(&self) -> &NodeName {
        &self.inner.name
    }

    /// Our own trust domain (others whose SVIDs we accept: [`Self::federated`]).
    pub fn trust_domain(&self) -> &TrustDomain {
        self.inner.bundle.trust_domain()
    }

    /// End of the SVID's validity.
    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// Our leaf certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.inner.chain[0]
    }

    /// A TLS 1.3 server configuration that presents our SVID, offers ALPN [`ALPN`] and
    /// requires a client certificate that is an SVID of our trust domain or of a federated one
    /// (see [`Self::with_federation`]). Session
    /// resumption is off, so every connection validates the peer's SVID afresh.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        self.server_config_with(self.inner.provider.clone())
    }

    /// A TLS 1.3 server configuration for the node's HTTP API: presents our SVID, offers
    /// ALPN `http/1.1`, and verifies a client SVID of our (or a federated) trust domain when one is
    /// presented (optional at the TLS level: the API decides per path).
    pub fn api_server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let tls_error = |e: rustls::Error| Error::Crypto {
            what: "building the API TLS configuration",
            reason: e.to_string(),
        };
        let verifier = Arc::new(SpiffeClientVerifier::optional(self.inner.trust.clone()));
        let mut config = ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.inner.chain.clone(), self.private_key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// [`Self::server_config`] for one connection: key exchange restricted to `kx`'s
    /// groups, and the returned [`KxRecord`] tells which group the handshake used.
    pub fn server_config_recorded(
        &self,
        kx: KxMode,
    ) -> Result<(Arc<ServerConfig>, KxRecord), Error> {
        let (provider, record) = kx::recording_provider(kx);
        Ok((self.server_config_with(Arc::new(provider))?, record))
    }

    /// [`Self::client_config`] for one connection: key exchange restricted to `kx`'s
    /// groups, and the returned [`KxRecord`] tells which group the handshake used.
    pub fn client_config_recorded(
        &self,
        kx: KxMode,
    ) -> Result<(Arc<ClientConfig>, KxRecord), Error> {
        let (provider, record) = kx::recording_provider(kx);
        Ok((self.client_config_with(Arc::new(provider))?, record))
    }

    fn server_config_with(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<ServerConfig>, Error> {
        let tls_error = |e: rustls::Error| Error::Crypto {
            what: "building the TLS server configuration",
            reason: e.to_string(),
        };
        let verifier = Arc::new(SpiffeClientVerifier::new(self.inner.trust.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.inner.chain.clone(), self.private_key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// A TLS 1.3 client configuration that presents our SVID, offers ALPN [`ALPN`] and
    /// accepts a server whose certificate is an SVID of our (or a federated) trust domain. The server name
    /// given when connecting is not checked (SPIFFE authenticates by URI SAN): after the
    /// handshake, call [`crate::peer_spiffe_id`] to learn who answered.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        self.client_config_with(self.inner.provider.clone())
    }

    /// A TLS 1.3 client configuration for calling a node's HTTP API over mutual TLS
    /// (`[identity] api_mtls`): presents our SVID, offers ALPN `http/1.1`, and accepts a
    /// server whose certificate is an SVID of our (or a federated) trust domain.
    pub fn api_client_config(&self) -> Result<ClientConfig, Error> {
        let mut config = (*self.client_config()?).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn client_config_with(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<ClientConfig>, Error> {
        let tls_error = |e: rustls::Error| Error::Crypto {
            what: "building the TLS client configuration",
            reason: e.to_string(),
        };
        let verifier = Arc::new(SpiffeServerVerifier::new(self.inner.trust.clone()));
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.inner.chain.clone(), self.private_key())
            .map_err(tls_error)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// The link-state authenticator: `credential()` is our leaf DER, `sign()` is ECDSA
    /// P-256 SHA-256 with the SVID key, `verify()` accepts a credential that is a node SVID
    /// of our (or a federated) trust domain naming the claimed origin, whose name no
    /// other trust domain holds (verified credentials are cached, up
    /// to [`crate::VERIFIED_CREDENTIALS_MAX`]).
    pub fn authenticator(&self) -> Box<dyn Authenticator> {
        self.authenticator_with_handle().0
    }

    /// Our certificate chain, leaf first.
    pub(crate) fn chain(&self) -> &[CertificateDer<'static>] {
        &self.inner.chain
    }

    /// The CA certificates of our trust bundle.
    pub(crate) fn bundle_certificates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.inner.bundle.certificates()
    }

    pub(crate) fn trust_bundles(&self) -> Arc<TrustBundles> {
        self.inner.trust.clone()
    }

    pub(crate) fn signing_key(&self) -> Arc<EcdsaKeyPair> {
        self.inner.signing_key.clone()
    }

    /// [`Self::authenticator`] and a handle that switches it to a renewed SVID.
    pub fn authenticator_with_handle(&self) -> (Box<dyn Authenticator>, SignerHandle) {
        self.authenticator_with_bindings(NameBindings::new(self.spiffe_id()))
    }

    /// [`Self::authenticator_with_handle`] sharing `bindings` (node name → trust domain)
    /// with the node's neighbour checks.
    pub fn authenticator_with_bindings(
        &self,
        bindings: Arc<NameBindings>,
    ) -> (Box<dyn Authenticator>, SignerHandle) {
        let authenticator = SvidAuthenticator::new(
            self.inner.chain[0].to_vec(),
            self.inner.signing_key.clone(),
            self.inner.trust.clone(),
            bindings,
        );
        let handle = authenticator.handle();
        (Box::new(authenticator), handle)
    }

    /// Start of the SVID's validity.
    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before
    }

    /// Verify `leaf`, a certificate a neighbour sends over a link it already
    /// authenticated (its renewed SVID), as the handshake verifiers would verify it now:
    /// a leaf SVID of our trust domain chaining to our bundle. Returns its SPIFFE ID and
    /// the instant it stops being valid (as [`crate::peer_svid_expiry`]).
    pub fn verify_peer_svid(
        &self,
        leaf: &CertificateDer<'_>,
    ) -> Result<(SpiffeId, SystemTime), Error> {
        let verified =
            self.inner
                .bundle
                .verify(leaf, &[], UnixTime::now(), KeyUsage::client_auth())?;
        Ok((verified.spiffe_id, svid::refused_from(verified.not_after)))
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.inner.key.clone_key())
    }
}

/// Where the parts of an identity came from, for error messages.
struct Sources<'a> {
    dir: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    bundle: &'a Path,
    hint: &'a str,
}

/// Validate our own chain as a node SVID valid now. Returns its SPIFFE ID, node name and
/// `not_after` (Unix seconds).
fn verify_own_svid(
    bundle: &Bundle,
    chain: &[CertificateDer<'static>],
    cert_path: &Path,
    hint: &str,
) -> Result<(SpiffeId, NodeName, i64, i64), Error> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| bad_file(cert_path, "is empty", hint))?;
    let now = UnixTime::now();
    let verified = bundle
        .verify(leaf, intermediates, now, KeyUsage::client_auth())
        .map_err(|e| {
            let reason = format!("is not a valid SVID for {}: {e}", bundle.trust_domain());
            bad_file(cert_path, reason, hint)
        })?;
    let Some(name) = verified.spiffe_id.node_name() else {
        let reason = SvidError::NotANode(verified.spiffe_id).to_string();
        return Err(bad_file(cert_path, reason, hint));
    };
    Ok((
        verified.spiffe_id,
        name,
        verified.not_before,
        verified.not_after,
    ))
}
