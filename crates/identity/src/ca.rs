//! The minimum trust-domain CA: one self-signed ECDSA P-256 root that issues node SVIDs.
//!
//! A CA directory holds:
//!
//! | file         | content                                                  | mode |
//! |--------------|----------------------------------------------------------|------|
//! | `ca.pem`     | the CA certificate that signs SVIDs                      | 0644 |
//! | `ca_key.pem` | its PKCS#8 private key                                   | 0600 |
//! | `bundle.pem` | the trust bundle: every CA certificate nodes must trust  | 0644 |
//! | `ca.toml`    | `format_version`, `trust_domain`, `created`, `not_after` | 0644 |
//!
//! `bundle.pem` starts as a copy of `ca.pem`; it is a separate file so that CA rotation
//! can later publish old and new roots side by side, and every issued SVID directory gets
//! a copy of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x0tta6bl4_proto::NodeName;

use crate::error::Error;
use crate::files::{self, bad_file, FileRole, KEY_FILE_MODE, PUBLIC_FILE_MODE};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::svid::{self, Bundle};
use crate::{tls, BUNDLE_FILE, SVID_CERT_FILE, SVID_KEY_FILE};

/// The CA certificate file in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key file in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca_key.pem";
/// The CA description file in a CA directory.
pub const CA_CONFIG_FILE: &str = "ca.toml";
/// Validity of a new CA certificate: ten years.
pub const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// The SVID lifetime the CLI uses unless told otherwise: 24 hours.
pub const SVID_TTL_DEFAULT: Duration = Duration::from_secs(24 * 60 * 60);
/// Certificates start this much before their issue time, so that a peer whose clock
/// is a little behind still accepts them.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);
/// The `format_version` of `ca.toml` this code writes and reads.
const CA_FORMAT_VERSION: u32 = 1;

/// The content of `ca.toml`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaConfig {
    /// Version of the CA directory layout.
    format_version: u32,
    /// The trust domain the CA is authoritative for.
    trust_domain: String,
    /// When the CA was created (RFC 3339, UTC).
    created: String,
    /// When the CA certificate expires (RFC 3339, UTC).
    not_after: String,
}

/// Files written by [`CertificateAuthority::issue_node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFiles {
    /// `OUT/svid.pem`: the leaf certificate.
    pub cert: PathBuf,
    /// `OUT/svid_key.pem`: its private key (mode 0600).
    pub key: PathBuf,
    /// `OUT/bundle.pem`: the trust bundle.
    pub bundle: PathBuf,
    /// The SPIFFE ID of the SVID, `spiffe://TD/node/NAME`.
    pub spiffe_id: SpiffeId,
    /// End of the SVID's validity.
    pub not_after: SystemTime,
}

/// An SVID issued in memory ([`CertificateAuthority::issue_node_der`]).
pub struct IssuedSvid {
    /// The certificate chain, leaf first (DER).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8 DER).
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The CAs of the trust bundle (DER).
    pub bundle: Vec<CertificateDer<'static>>,
    /// The SPIFFE ID of the SVID, `spiffe://TD/node/NAME`.
    pub spiffe_id: SpiffeId,
    /// End of the SVID's validity.
    pub not_after: SystemTime,
}

/// A trust-domain CA loaded from (or created in) its directory.
pub struct CertificateAuthority {
    dir: PathBuf,
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    /// Unix seconds.
    not_after: i64,
    /// The bytes of `bundle.pem`, copied into every SVID directory.
    bundle_pem: Vec<u8>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &svid::rfc3339(self.not_after))
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Create a new CA for `trust_domain` in `dir` (created if missing). Refuses when a
    /// CA already exists there.
    pub fn init(dir: &Path, trust_domain: &TrustDomain) -> Result<Self, Error> {
        let hint = "choose a directory you can write to";
        files::create_dir(dir, "create CA directory", hint)?;
        for file in [CA_CONFIG_FILE, CA_CERT_FILE, CA_KEY_FILE, BUNDLE_FILE] {
            let found = dir.join(file);
            if found.symlink_metadata().is_ok() {
                return Err(Error::CaExists {
                    dir: dir.to_path_buf(),
                    found,
                });
            }
        }
        let now = unix_now();
        let not_after = now.saturating_add(secs(CA_TTL));
        let key = generate_key("generating the CA key")?;
        let params = ca_params(trust_domain, now, not_after)?;
        let certificate = params.self_signed(&key).map_err(|e| Error::Crypto {
            what: "signing the CA certificate",
            reason: e.to_string(),
        })?;
        let config = CaConfig {
            format_version: CA_FORMAT_VERSION,
            trust_domain: trust_domain.to_string(),
            created: svid::rfc3339(now),
            not_after: svid::rfc3339(not_after),
        };
        let config_toml = toml::to_string(&config).map_err(|e| Error::Crypto {
            what: "encoding ca.toml",
            reason: e.to_string(),
        })?;
        let header = "# x0tta6bl4 trust-domain CA, written by `x0tta6bl4 ca init`. Do not edit.";
        let config_toml = format!("{header}\n{config_toml}");
        let certificate_pem = certificate.pem();
        let write = |file: &str, contents: &[u8], mode: u32, what: &'static str| {
            files::write_new(&dir.join(file), contents, mode, what, hint)
        };
        write(
            CA_KEY_FILE,
            key.serialize_pem().as_bytes(),
            KEY_FILE_MODE,
            "write CA key",
        )?;
        write(
            CA_CERT_FILE,
            certificate_pem.as_bytes(),
            PUBLIC_FILE_MODE,
            "write CA certificate",
        )?;
        write(
            BUNDLE_FILE,
            certificate_pem.as_bytes(),
            PUBLIC_FILE_MODE,
            "write trust bundle",
        )?;
        write(
            CA_CONFIG_FILE,
            config_toml.as_bytes(),
            PUBLIC_FILE_MODE,
            "write CA configuration",
        )?;
        tracing::info!(dir = %dir.display(), %trust_domain, "created trust-domain CA");
        Ok(CertificateAuthority {
            dir: dir.to_path_buf(),
            trust_domain: trust_domain.clone(),
            issuer: Issuer::new(params, key),
            not_after,
            bundle_pem: certificate_pem.into_bytes(),
        })
    }

    /// Load the CA in `dir`, checking that its files agree with each other.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let hint = format!(
            "create a CA with `x0tta6bl4 ca init --dir {} --trust-domain TD`, or restore the \
             directory from a backup",
            dir.display()
        );
        let trust_domain = read_config(&dir.join(CA_CONFIG_FILE), &hint)?;
        let certificate_path = dir.join(CA_CERT_FILE);
        let (certificate, not_after) =
            read_ca_certificate(&certificate_path, &trust_domain, &hint)?;
        let key_path = dir.join(CA_KEY_FILE);
        let key = read_ca_key(&key_path, &certificate, &hint)?;
        let bundle_path = dir.join(BUNDLE_FILE);
        let role = FileRole {
            read: "read trust bundle",
            hint: &hint,
        };
        let bundle_certificates = files::read_certificates(&bundle_path, role)?;
        let bundle = Bundle::new(bundle_certificates, tls::algorithms())
            .map_err(|e| bad_file(&bundle_path, e.to_string(), &hint))?;
        if bundle.trust_domain() != &trust_domain
            || !bundle.certificates().any(|c| *c == certificate)
        {
            let reason = format!("does not contain the CA certificate of {CA_CERT_FILE}");
            return Err(bad_file(&bundle_path, reason, &hint));
        }
        let issuer = Issuer::from_ca_cert_der(&certificate, key)
            .map_err(|e| bad_file(&certificate_path, e.to_string(), &hint))?;
        let bundle_pem = files::read(&bundle_path, "read trust bundle", &hint)?;
        Ok(CertificateAuthority {
            dir: dir.to_path_buf(),
            trust_domain,
            issuer,
            not_after,
            bundle_pem,
        })
    }

    /// The trust domain this CA is authoritative for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// End of the CA certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        system_time(self.not_after)
    }

    /// Issue an SVID `spiffe://TD/node/NAME` valid for `ttl`, in memory (DER), with a
    /// fresh key: what a SPIFFE Workload API server hands a workload. A revoked name
    /// gets [`Error::Config`].
    pub fn issue_node_der(&self, name: &NodeName, ttl: Duration) -> Result<IssuedSvid, Error> {
        let (certificate, key, spiffe_id, not_after) = self.issue(name, ttl)?;
        let bundle = rustls_pemfile::certs(&mut self.bundle_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("bundle.pem of the CA: {e}")))?;
        Ok(IssuedSvid {
            chain: vec![certificate.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            bundle,
            spiffe_id,
            not_after: system_time(not_after),
        })
    }

    fn issue(
        &self,
        name: &NodeName,
        ttl: Duration,
    ) -> Result<(rcgen::Certificate, KeyPair, SpiffeId, i64), Error> {
        let spiffe_id = SpiffeId::for_node(&self.trust_domain, name).map_err(|e| {
            Error::Config(format!(
                "node name {name:?} cannot be a SPIFFE path segment: it {e}"
            ))
        })?;
        if self.is_revoked(name)? {
            return Err(Error::Config(format!(
                "node {name} is revoked (see revocations.toml): the CA issues it nothing; \
                 use a new name"
            )));
        }
        let now = unix_now();
        let not_after = self.check_ttl(ttl, now)?;
        let key = generate_key("generating the SVID key")?;
        let params = leaf_params(&spiffe_id, name, now, not_after)?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Crypto {
                what: "signing the SVID",
                reason: e.to_string(),
            })?;
        tracing::info!(%spiffe_id, not_after = %svid::rfc3339(not_after), "issued node SVID");
        Ok((certificate, key, spiffe_id, not_after))
    }

    /// Issue an SVID `spiffe://TD/node/NAME` valid for `ttl` and write `out_dir/svid.pem`,
    /// `out_dir/svid_key.pem` (mode 0600) and `out_dir/bundle.pem`, replacing older ones.
    /// A name revoked by this CA (`revocations.toml`) gets [`Error::Config`] and no file.
    pub fn issue_node(
        &self,
        name: &NodeName,
        ttl: Duration,
        out_dir: &Path,
    ) -> Result<SvidFiles, Error> {
        let (certificate, key, spiffe_id, not_after) = self.issue(name, ttl)?;
        let hint = "choose an output directory you can write to";
        files::create_dir(out_dir, "create SVID directory", hint)?;
        let files = SvidFiles {
            cert: out_dir.join(SVID_CERT_FILE),
            key: out_dir.join(SVID_KEY_FILE),
            bundle: out_dir.join(BUNDLE_FILE),
            spiffe_id,
            not_after: system_time(not_after),
        };
        // Key first: a reader that sees the new certificate always finds its key.
        let key_pem = key.serialize_pem();
        files::write_replace(
            &files.key,
            key_pem.as_bytes(),
            KEY_FILE_MODE,
            "write SVID key",
            hint,
        )?;
        let cert_pem = certificate.pem();
        files::write_replace(
            &files.cert,
            cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
            "write SVID certificate",
            hint,
        )?;
        files::write_replace(
            &files.bundle,
            &self.bundle_pem,
            PUBLIC_FILE_MODE,
            "write trust bundle",
            hint,
        )?;
        tracing::debug!(spiffe_id = %files.spiffe_id, out = %out_dir.display(), "wrote node SVID");
        Ok(files)
    }

    /// Sign an SVID for node `name` over a public key from a signing request; returns
    /// the certificate PEM and its `not_after` (Unix seconds).
    pub(crate) fn sign_public_key(
        &self,
        name: &NodeName,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
    ) -> Result<(String, i64), Error> {
        let spiffe_id = SpiffeId::for_node(&self.trust_domain, name).map_err(|e| {
            Error::Config(format!(
                "node name {name:?} cannot be a SPIFFE path segment: it {e}"
            ))
        })?;
        if self.is_revoked(name)? {
            return Err(Error::Config(format!(
                "node {name} is revoked (see revocations.toml): the CA issues it nothing; \
                 use a new name"
            )));
        }
        let now = unix_now();
        let not_after = self.check_ttl(ttl, now)?;
        let params = leaf_params(&spiffe_id, name, now, not_after)?;
        let certificate =
            params
                .signed_by(public_key, &self.issuer)
                .map_err(|e| Error::Crypto {
                    what: "signing the SVID",
                    reason: e.to_string(),
                })?;
        tracing::info!(%spiffe_id, not_after = %svid::rfc3339(not_after), "issued node SVID over a signing request");
        Ok((certificate.pem(), not_after))
    }

    /// The bytes of `bundle.pem`.
    pub(crate) fn bundle_pem(&self) -> &[u8] {
        &self.bundle_pem
    }

    /// The SVID's `not_after` for `ttl`, refused when it is zero or outlives the CA.
    fn check_ttl(&self, ttl: Duration, now: i64) -> Result<i64, Error> {
        if ttl.as_secs() == 0 {
            return Err(Error::Config(
                "SVID TTL must be at least one second (e.g. 24h)".into(),
            ));
        }
        let not_after = now.saturating_add(secs(ttl));
        if not_after > self.not_after {
            return Err(Error::Config(format!(
                "an SVID with a TTL of {}s would outlive the CA in {} (valid until {}): use a \
                 shorter TTL",
                ttl.as_secs(),
                self.dir.display(),
                svid::rfc3339(self.not_after)
            )));
        }
        Ok(not_after)
    }
}

fn read_config(path: &Path, hint: &str) -> Result<TrustDomain, Error> {
    let bytes = files::read(path, "read CA configuration", hint)?;
    let text = String::from_utf8(bytes).map_err(|_| bad_file(path, "is not UTF-8 text", hint))?;
    let config: CaConfig = toml::from_str(&text)
        .map_err(|e| bad_file(path, format!("is not a valid CA configuration: {e}"), hint))?;
    if config.format_version != CA_FORMAT_VERSION {
        let reason = format!(
            "has format_version {}; this build reads version {CA_FORMAT_VERSION}",
            config.format_version
        );
        return Err(bad_file(
            path,
            reason,
            "use the x0tta6bl4 release that created this CA",
        ));
    }
    TrustDomain::new(&config.trust_domain).map_err(|e| {
        bad_file(
            path,
            format!("trust_domain {:?} {e}", config.trust_domain),
            hint,
        )
    })
}

/// Read `ca.pem`: one signing certificate whose SPIFFE ID is `spiffe://TD`. Returns it
/// and its `not_after`.
fn read_ca_certificate(
    path: &Path,
    trust_domain: &TrustDomain,
    hint: &str,
) -> Result<(CertificateDer<'static>, i64), Error> {
    let mut certificates = files::read_certificates(
        path,
        FileRole {
            read: "read CA certificate",
            hint,
        },
    )?;
    if certificates.len() != 1 {
        let reason = format!(
            "holds {} certificates; exactly one is expected",
            certificates.len()
        );
        return Err(bad_file(path, reason, hint));
    }
    let certificate = certificates.remove(0);
    let x509 = svid::parse(&certificate).map_err(|e| bad_file(path, e.to_string(), hint))?;
    let id = svid::check_signing_certificate(&x509, Some(trust_domain))
        .map_err(|e| bad_file(path, e.to_string(), hint))?;
    if id.as_ref() != Some(&trust_domain.id()) {
        let reason = format!("is not a CA certificate for {}", trust_domain.id());
        return Err(bad_file(path, reason, hint));
    }
    let (_, not_after) = svid::validity(&x509);
    Ok((certificate, not_after))
}

/// Read `ca_key.pem`: an ECDSA P-256 key matching the CA certificate.
fn read_ca_key(
    path: &Path,
    certificate: &CertificateDer<'_>,
    hint: &str,
) -> Result<KeyPair, Error> {
    let der = files::read_private_key(
        path,
        FileRole {
            read: "read CA key",
            hint,
        },
    )?;
    let key = KeyPair::try_from(&der)
        .map_err(|e| bad_file(path, format!("is not a usable private key: {e}"), hint))?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(bad_file(path, "is not an ECDSA P-256 key", hint));
    }
    let x509 = svid::parse(certificate).map_err(|e| bad_file(path, e.to_string(), hint))?;
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad_file(
            path,
            format!("does not match the certificate in {CA_CERT_FILE}"),
            hint,
        ));
    }
    Ok(key)
}

pub(crate) fn generate_key(what: &'static str) -> Result<KeyPair, Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::Crypto {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn ca_params(
    trust_domain: &TrustDomain,
    now: i64,
    not_after: i64,
) -> Result<CertificateParams, Error> {
    let mut params = base_params(now, not_after)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "x0tta6bl4 CA");
    params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
    // No intermediates below this root: it signs leaf SVIDs only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn leaf_params(
    spiffe_id: &SpiffeId,
    name: &NodeName,
    now: i64,
    not_after: i64,
) -> Result<CertificateParams, Error> {
    let mut params = base_params(now, not_after)?;
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    params.subject_alt_names = vec![uri_san(spiffe_id)?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Validity, a random positive 128-bit serial number and `O=x0tta6bl4`.
fn base_params(now: i64, not_after: i64) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let not_before = now.saturating_sub(secs(CLOCK_SKEW_ALLOWANCE));
    params.not_before = offset_date_time(not_before)?;
    params.not_after = offset_date_time(not_after)?;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| Error::Crypto {
        what: "drawing a serial number",
        reason: "no randomness".into(),
    })?;
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive, and exactly 16 bytes long
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "x0tta6bl4");
    Ok(params)
}

fn uri_san(id: &SpiffeId) -> Result<SanType, Error> {
    let uri = rcgen::string::Ia5String::try_from(id.to_string())
        .map_err(|e| Error::Config(format!("SPIFFE ID {id} cannot be a URI SAN: {e}")))?;
    Ok(SanType::URI(uri))
}

fn offset_date_time(unix_secs: i64) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .map_err(|e| Error::Config(format!("certificate time {unix_secs} is out of range: {e}")))
}

pub(crate) fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

pub(crate) fn system_time(unix_secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_secs).unwrap_or(0))
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
