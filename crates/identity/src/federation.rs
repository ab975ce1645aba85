//! SPIFFE federation: the trust bundles of other trust domains, the verification that
//! picks a bundle by the peer's trust domain, and the one node name → trust domain
//! binding that keeps two domains' nodes of the same name apart.
//!
//! Rules (SPIFFE federation semantics): a peer whose SPIFFE ID is in trust domain `D`
//! must chain to `D`'s bundle; a CA of another domain never vouches for it, and a
//! domain with no bundle is refused. Which foreign IDs may do what is the
//! authorization policy's business (default: deny every foreign ID).
//!
//! Node names: the mesh (`crates/proto`) names a node by the last segment of
//! `spiffe://TD/node/NAME`, whatever its trust domain. A node binds each name to the
//! trust domain of the first verified credential that claims it ([`NameBindings`]):
//! a later credential of another trust domain claiming a bound name is refused, in
//! link-state and as a neighbour. Its own name is bound from the start. Names must
//! therefore be unique across federated trust domains (e.g. prefix a partner's nodes).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::KeyUsage;
use x0tta6bl4_proto::NodeName;

use crate::error::{Error, SvidError};
use crate::files::{self, bad_file, FileRole};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::{self, Bundle, VerifiedSvid};
use crate::tls;

/// Most federated trust domains one node trusts.
pub const FEDERATED_DOMAINS_MAX: usize = 64;
/// Most node names bound to a trust domain at once; beyond it new names are refused
/// (fail closed) until the process restarts.
pub const NAME_BINDINGS_MAX: usize = 65_536;

/// The bundles of other trust domains a node trusts (SPIFFE federation). Cheap to
/// clone; empty by default.
#[derive(Clone, Debug, Default)]
pub struct FederatedBundles {
    bundles: Arc<BTreeMap<TrustDomain, Arc<Bundle>>>,
}

impl FederatedBundles {
    /// Load one PEM bundle file per trust domain. Every CA of a file must be a signing
    /// certificate of the trust domain it is configured for (URI SAN `spiffe://TD`).
    pub fn load(entries: &[(TrustDomain, PathBuf)]) -> Result<Self, Error> {
        let mut bundles = Vec::with_capacity(entries.len());
        for (trust_domain, path) in entries {
            let hint = format!(
                "give the trust bundle of {trust_domain}: the bundle.pem its operators publish"
            );
            let role = FileRole {
                read: "read federated trust bundle",
                hint: &hint,
            };
            let certificates = files::read_certificates(path, role)?;
            let bundle = bundle_of(trust_domain, certificates)
                .map_err(|reason| bad_file(path, reason, &hint))?;
            bundles.push((trust_domain.clone(), bundle));
        }
        FederatedBundles::from_bundles(bundles).map_err(Error::Config)
    }

    /// Bundles received as DER certificates (the Workload API's `federated_bundles`);
    /// `source` names where they came from in errors.
    pub fn from_der(
        entries: Vec<(TrustDomain, Vec<CertificateDer<'static>>)>,
        source: &str,
    ) -> Result<Self, Error> {
        let mut bundles = Vec::with_capacity(entries.len());
        for (trust_domain, certificates) in entries {
            let bundle = bundle_of(&trust_domain, certificates).map_err(|reason| {
                Error::Config(format!(
                    "{source}: federated bundle of {trust_domain} {reason}"
                ))
            })?;
            bundles.push((trust_domain, bundle));
        }
        FederatedBundles::from_bundles(bundles).map_err(|e| Error::Config(format!("{source}: {e}")))
    }

    fn from_bundles(bundles: Vec<(TrustDomain, Bundle)>) -> Result<Self, String> {
        if bundles.len() > FEDERATED_DOMAINS_MAX {
            return Err(format!(
                "{} federated trust domains; at most {FEDERATED_DOMAINS_MAX} are supported",
                bundles.len()
            ));
        }
        let bundles = bundles
            .into_iter()
            .map(|(domain, bundle)| (domain, Arc::new(bundle)))
            .collect();
        Ok(FederatedBundles {
            bundles: Arc::new(bundles),
        })
    }

    /// The federated trust domains, sorted.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.bundles.keys()
    }

    /// Whether no trust domain is federated.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    pub(crate) fn get(&self, trust_domain: &TrustDomain) -> Option<&Arc<Bundle>> {
        self.bundles.get(trust_domain)
    }
}

/// Check `certificates` as the bundle of `trust_domain`; the reason when they are not.
fn bundle_of(
    trust_domain: &TrustDomain,
    certificates: Vec<CertificateDer<'static>>,
) -> Result<Bundle, String> {
    let bundle = Bundle::new(certificates, tls::algorithms())
        .map_err(|e| format!("is not a usable trust bundle: {e}"))?;
    if bundle.trust_domain() != trust_domain {
        return Err(format!(
            "holds CAs of trust domain {}, but is configured as the bundle of {trust_domain}: \
             use the bundle of {trust_domain}, or configure this file under \"{}\"",
            bundle.trust_domain(),
            bundle.trust_domain()
        ));
    }
    Ok(bundle)
}

/// Every bundle a node verifies peers with: its own trust domain's and the federated
/// ones. Verification picks the bundle by the peer's trust domain.
#[derive(Debug, Clone)]
pub(crate) struct TrustBundles {
    local: Arc<Bundle>,
    federated: FederatedBundles,
}

impl TrustBundles {
    /// Only the node's own trust domain.
    pub(crate) fn local(local: Arc<Bundle>) -> Self {
        TrustBundles {
            local,
            federated: FederatedBundles::default(),
        }
    }

    /// The own bundle and federated ones; refuses to federate the own trust domain.
    pub(crate) fn new(local: Arc<Bundle>, federated: FederatedBundles) -> Result<Self, Error> {
        if federated.get(local.trust_domain()).is_some() {
            return Err(Error::Config(format!(
                "[identity] federation lists {}, the node's own trust domain: remove it (its \
                 bundle comes with the SVID)",
                local.trust_domain()
            )));
        }
        Ok(TrustBundles { local, federated })
    }

    pub(crate) fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        self.local.algorithms()
    }

    /// The node's own trust domain's bundle (revocations are signed by its CAs).
    pub(crate) fn local_bundle(&self) -> &Bundle {
        &self.local
    }

    /// The subjects of every CA, sent as hints in a TLS CertificateRequest.
    pub(crate) fn subjects(&self) -> Vec<rustls::DistinguishedName> {
        let mut subjects = self.local.subjects();
        for bundle in self.federated.bundles.values() {
            subjects.extend(bundle.subjects());
        }
        subjects
    }

    /// Validate a leaf SVID against the bundle of its own trust domain.
    pub(crate) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<VerifiedSvid, SvidError> {
        let claimed = svid::spiffe_id_of(&svid::parse(end_entity)?)?;
        let domain = claimed.trust_domain();
        let bundle = if domain == self.local.trust_domain() {
            &self.local
        } else {
            self.federated
                .get(domain)
                .ok_or_else(|| SvidError::UnknownTrustDomain {
                    found: claimed.clone(),
                    local: self.local.trust_domain().clone(),
                })?
        };
        bundle.verify(end_entity, intermediates, now, usage)
    }
}

/// Node name → trust domain, bound by the first verified credential that claims the
/// name (see the module documentation). Shared by the link-state authenticator and the
/// node's neighbour checks.
#[derive(Debug)]
pub struct NameBindings {
    own: TrustDomain,
    names: Mutex<HashMap<NodeName, TrustDomain>>,
}

impl NameBindings {
    /// Bindings of a node whose own ID is `own` (its name is bound at once).
    pub fn new(own: &SpiffeId) -> Arc<Self> {
        let mut names = HashMap::new();
        if let Some(name) = own.node_name() {
            names.insert(name, own.trust_domain().clone());
        }
        Arc::new(NameBindings {
            own: own.trust_domain().clone(),
            names: Mutex::new(names),
        })
    }

    /// Bind `id`'s node name to its trust domain, or check that it already is. Returns
    /// the name; the reason when the name belongs to another trust domain, when `id` is
    /// not a node ID, or when the table is full.
    pub fn bind(&self, id: &SpiffeId) -> Result<NodeName, String> {
        let name = id
            .node_name()
            .ok_or_else(|| format!("{id} is not a node SPIFFE ID (spiffe://TD/node/NAME)"))?;
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        match names.get(&name) {
            Some(bound) if bound == id.trust_domain() => Ok(name),
            Some(bound) => Err(format!(
                "node name {name} is already bound to spiffe://{bound}/node/{name}: a node of \
                 another trust domain cannot take it (names must be unique across federated \
                 trust domains)"
            )),
            None if names.len() >= NAME_BINDINGS_MAX => Err(format!(
                "{NAME_BINDINGS_MAX} node names are bound already: {id} is refused"
            )),
            None => {
                names.insert(name.clone(), id.trust_domain().clone());
                Ok(name)
            }
        }
    }

    /// The SPIFFE ID node `name` stands for: in the trust domain it is bound to, or the
    /// node's own when unbound.
    pub fn spiffe_id(&self, name: &NodeName) -> Option<SpiffeId> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let domain = names.get(name).unwrap_or(&self.own);
        SpiffeId::for_node(domain, name).ok()
    }
}

/// `[identity] federation` as configured: trust domain → bundle file.
pub fn parse_federation(
    entries: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(TrustDomain, PathBuf)>, String> {
    entries
        .iter()
        .map(|(domain, path)| {
            let trust_domain = TrustDomain::new(domain).map_err(|e| {
                format!(
                    "{domain:?} is not a trust domain name: it {e} (write a bare name such as \
                     \"partner.example\")"
                )
            })?;
            Ok((trust_domain, path.clone()))
        })
        .collect()
}
