//! `x0tta6bl4 ca inspect`: what a certificate file says (SPIFFE ID, validity, key type,
//! issuer) and whether a trust bundle verifies it.
//!
//! Inspection never fails on a certificate that breaks the SVID rules: it reports what
//! is wrong. It fails only when the file cannot be read or holds no certificate.

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use webpki::KeyUsage;
use x509_parser::certificate::X509Certificate;

use crate::files::{self, bad_file, FileRole};
use crate::svid::{self, Bundle};
use crate::{tls, BUNDLE_FILE};

/// What [`inspect_certificate`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateReport {
    /// The file inspected.
    pub file: PathBuf,
    /// The SPIFFE ID of the first certificate, when it has exactly one valid one.
    pub spiffe_id: Option<String>,
    /// Why there is no SPIFFE ID, when there is none.
    pub spiffe_id_error: Option<String>,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Seconds until `not_after` (negative once expired).
    pub expires_in_seconds: i64,
    /// `valid`, `expired` or `not_yet_valid`.
    pub validity: &'static str,
    /// Key type, e.g. `ECDSA P-256`.
    pub key_type: String,
    /// basicConstraints CA=true.
    pub is_ca: bool,
    /// Certificates in the file (leaf first).
    pub certificates: usize,
    /// The bundle check, when a bundle was given.
    pub bundle: Option<BundleCheck>,
}

/// The result of verifying the certificate against a trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleCheck {
    /// The bundle file used.
    pub file: PathBuf,
    /// The bundle's trust domain.
    pub trust_domain: String,
    /// Whether the bundle verifies the certificate (as a leaf SVID, or as one of its CAs).
    pub verified: bool,
    /// Why it does not, when it does not.
    pub reason: Option<String>,
}

/// Inspect the first certificate of the PEM file `file` (the others are its
/// intermediates). With `bundle`, a directory holding `bundle.pem` or a bundle file,
/// also check whether that trust bundle verifies it, now.
pub fn inspect_certificate(
    file: &Path,
    bundle: Option<&Path>,
) -> Result<CertificateReport, crate::Error> {
    let hint = "give a PEM file holding a certificate, e.g. DIR/svid.pem or CA/ca.pem";
    let role = FileRole {
        read: "read certificate",
        hint,
    };
    let chain = files::read_certificates(file, role)?;
    let leaf = &chain[0];
    let x509 = svid::parse(leaf).map_err(|e| bad_file(file, e.to_string(), hint))?;
    let (spiffe_id, spiffe_id_error) = match svid::spiffe_id_of(&x509) {
        Ok(id) => (Some(id.to_string()), None),
        Err(error) => (None, Some(error.to_string())),
    };
    let (not_before, not_after) = svid::validity(&x509);
    let now = crate::ca::unix_now();
    let validity = match () {
        () if now < not_before => "not_yet_valid",
        () if now > not_after => "expired",
        () => "valid",
    };
    let is_ca = x509
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|ext| ext.value.ca);
    let bundle = bundle
        .map(|path| check_bundle(path, &chain, is_ca))
        .transpose()?;
    Ok(CertificateReport {
        file: file.to_path_buf(),
        spiffe_id,
        spiffe_id_error,
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        serial: x509.raw_serial_as_string().replace(':', ""),
        not_before: svid::rfc3339(not_before),
        not_after: svid::rfc3339(not_after),
        expires_in_seconds: not_after - now,
        validity,
        key_type: key_type(&x509),
        is_ca,
        certificates: chain.len(),
        bundle,
    })
}

/// Verify `chain` against the bundle at `path` (a directory holding `bundle.pem`, or a
/// file). A CA certificate is verified when it is one of the bundle's CAs.
fn check_bundle(
    path: &Path,
    chain: &[CertificateDer<'static>],
    is_ca: bool,
) -> Result<BundleCheck, crate::Error> {
    let file = if path.is_dir() {
        path.join(BUNDLE_FILE)
    } else {
        path.to_path_buf()
    };
    let hint = "give a CA directory, an SVID directory or a bundle.pem file";
    let role = FileRole {
        read: "read trust bundle",
        hint,
    };
    let certificates = files::read_certificates(&file, role)?;
    let bundle = Bundle::new(certificates, tls::algorithms())
        .map_err(|e| bad_file(&file, format!("is not a usable trust bundle: {e}"), hint))?;
    let (leaf, intermediates) = chain
        .split_first()
        .expect("read_certificates: at least one");
    let result = if is_ca {
        if bundle.certificates().any(|root| root == leaf) {
            Ok(())
        } else {
            Err("this CA certificate is not one of the bundle's CAs".to_owned())
        }
    } else {
        bundle
            .verify(
                leaf,
                intermediates,
                UnixTime::now(),
                KeyUsage::client_auth(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    Ok(BundleCheck {
        file,
        trust_domain: bundle.trust_domain().to_string(),
        verified: result.is_ok(),
        reason: result.err(),
    })
}

/// A person's name for the certificate's public key type.
fn key_type(x509: &X509Certificate<'_>) -> String {
    let info = x509.public_key();
    let algorithm = info.algorithm.algorithm.to_id_string();
    let parameter = info
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    match (algorithm.as_str(), parameter.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => "ECDSA P-256".into(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => "ECDSA P-384".into(),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => "ECDSA P-521".into(),
        ("1.2.840.10045.2.1", curve) => format!("ECDSA (curve {})", curve.unwrap_or("?")),
        ("1.2.840.113549.1.1.1", _) => {
            let bits = info.subject_public_key.data.len().saturating_sub(14) * 8;
            format!("RSA (~{bits} bits)")
        }
        ("1.3.101.112", _) => "Ed25519".into(),
        ("1.3.101.113", _) => "Ed448".into(),
        (other, _) => format!("unknown (OID {other})"),
    }
}
