//! X.509-SVID validation: the SPIFFE X509-SVID rules on leaf and signing certificates,
//! and path validation against the trust bundle with webpki. The TLS verifiers, the
//! link-state authenticator and [`crate::NodeIdentity::load`] all go through
//! [`Bundle::verify`] (the first two by way of the federation module's `TrustBundles`,
//! which picks the bundle of the peer's trust domain), so the three apply exactly the
//! same rules.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::SvidError;
use crate::spiffe::{SpiffeId, TrustDomain};

/// Largest DER certificate accepted, in bytes (ours are under 1 KiB).
pub(crate) const CERTIFICATE_LEN_MAX: usize = 16 * 1024;
/// Most intermediate certificates a peer may present with its leaf.
pub(crate) const INTERMEDIATES_MAX: usize = 4;
/// Most CA certificates in a trust bundle.
pub(crate) const BUNDLE_CERTIFICATES_MAX: usize = 16;

/// The context tag of a URI in a GeneralName (RFC 5280: `uniformResourceIdentifier [6]`).
const GENERAL_NAME_URI_TAG: u32 = 6;

/// One CA certificate of the trust bundle.
#[derive(Debug, Clone)]
struct Root {
    der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
    not_before: i64,
    not_after: i64,
}

/// The trust bundle of one trust domain: the CA certificates SVIDs must chain to.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    trust_domain: TrustDomain,
    roots: Vec<Root>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// What a successful validation established about a leaf.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedSvid {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl Bundle {
    /// Build a bundle from CA certificates, each checked as an X509-SVID signing
    /// certificate (CA=true, keyCertSign, URI SAN `spiffe://TD`), all of one trust domain.
    pub(crate) fn new(
        certificates: Vec<CertificateDer<'static>>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Result<Self, SvidError> {
        if certificates.is_empty() {
            return Err(SvidError::BadSigningCertificate(
                "the bundle holds no certificate".into(),
            ));
        }
        if certificates.len() > BUNDLE_CERTIFICATES_MAX {
            return Err(SvidError::BadSigningCertificate(format!(
                "the bundle holds {} certificates; at most {BUNDLE_CERTIFICATES_MAX} are allowed",
                certificates.len()
            )));
        }
        let mut trust_domain: Option<TrustDomain> = None;
        let mut roots = Vec::with_capacity(certificates.len());
        for der in certificates {
            let x509 = parse(&der)?;
            let id = check_signing_certificate(&x509, trust_domain.as_ref())?.ok_or_else(|| {
                SvidError::BadSigningCertificate(
                    "a bundle CA must carry the URI SAN spiffe://TRUST-DOMAIN".into(),
                )
            })?;
            let (not_before, not_after) = validity(&x509);
            trust_domain.get_or_insert_with(|| id.trust_domain().clone());
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| SvidError::BadSigningCertificate(e.to_string()))?
                .to_owned();
            roots.push(Root {
                der: der.clone(),
                anchor,
                not_before,
                not_after,
            });
        }
        let trust_domain = trust_domain.ok_or(SvidError::Missing)?;
        Ok(Bundle {
            trust_domain,
            roots,
            algorithms,
        })
    }

    pub(crate) fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub(crate) fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algorithms
    }

    /// The DER certificates, in file order.
    pub(crate) fn certificates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.roots.iter().map(|root| &root.der)
    }

    /// The subjects of the bundle CAs, sent as hints in a TLS CertificateRequest: each a
    /// DER `Name` (RFC 5280), i.e. webpki's subject contents wrapped in their SEQUENCE.
    /// Without the wrapping OpenSSL and Go clients refuse the CertificateRequest
    /// (`parse_ca_names ... wrong tag`; issue 11).
    pub(crate) fn subjects(&self) -> Vec<rustls::DistinguishedName> {
        let subject = |root: &Root| rustls::DistinguishedName::in_sequence(&root.anchor.subject);
        self.roots.iter().map(subject).collect()
    }

    /// Validate `end_entity` (with optional `intermediates`) as a leaf X.509-SVID of our
    /// trust domain, valid at `now` for `usage`, chaining to a CA of the bundle that is
    /// itself valid at `now`.
    pub(crate) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<VerifiedSvid, SvidError> {
        if intermediates.len() > INTERMEDIATES_MAX {
            return Err(SvidError::Chain(format!(
                "{} intermediate certificates presented; at most {INTERMEDIATES_MAX} are allowed",
                intermediates.len()
            )));
        }
        let x509 = parse(end_entity)?;
        let spiffe_id = check_leaf(&x509, &self.trust_domain)?;
        let (not_before, not_after) = validity(&x509);
        check_validity(not_before, not_after, now)?;

        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let anchors: Vec<TrustAnchor<'_>> = self
            .roots
            .iter()
            .filter(|root| root.not_before <= now_secs && now_secs <= root.not_after)
            .map(|root| root.anchor.clone())
            .collect();
        if anchors.is_empty() {
            return Err(SvidError::Chain(format!(
                "no CA of the trust bundle of {} is valid now (all expired or not yet valid)",
                self.trust_domain
            )));
        }
        let cert =
            EndEntityCert::try_from(end_entity).map_err(|e| SvidError::Malformed(e.to_string()))?;
        let trust_domain = &self.trust_domain;
        // The reason an intermediate broke the signing certificate rules, if one did.
        let intermediate_error = std::cell::RefCell::new(None);
        let check_path = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            for intermediate in path.intermediate_certificates() {
                let der = intermediate.der();
                let checked = parse(&der)
                    .and_then(|x509| check_signing_certificate(&x509, Some(trust_domain)));
                if let Err(error) = checked {
                    *intermediate_error.borrow_mut() = Some(error);
                    return Err(webpki::Error::UnknownIssuer);
                }
            }
            Ok(())
        };
        let verified = cert.verify_for_usage(
            self.algorithms.all,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            Some(&check_path),
        );
        if let Err(error) = verified {
            return Err(match intermediate_error.into_inner() {
                Some(intermediate) => intermediate,
                None => map_webpki_error(error, trust_domain),
            });
        }
        Ok(VerifiedSvid {
            spiffe_id,
            not_before,
            not_after,
        })
    }
}

/// Parse DER as one X.509 certificate, with nothing after it.
pub(crate) fn parse<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, SvidError> {
    if der.len() > CERTIFICATE_LEN_MAX {
        return Err(SvidError::Malformed(format!(
            "{} bytes long; at most {CERTIFICATE_LEN_MAX} are accepted",
            der.len()
        )));
    }
    match x509_parser::parse_x509_certificate(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(SvidError::Malformed(format!(
            "{} bytes after the certificate",
            rest.len()
        ))),
        Ok((_, x509)) => Ok(x509),
        Err(e) => Err(SvidError::Malformed(e.to_string())),
    }
}

/// The certificate's single SPIFFE ID (exactly one URI SAN, a valid SPIFFE ID). Checks
/// nothing else.
pub(crate) fn spiffe_id_of(x509: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = x509
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed(format!("subject alternative name: {e}")))?;
    let names = san
        .map(|ext| ext.value.general_names.as_slice())
        .unwrap_or_default();
    let mut uris = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(Ok(*uri)),
        GeneralName::Invalid(tag, _) if tag.0 == GENERAL_NAME_URI_TAG => Some(Err(())),
        _ => None,
    });
    let count = uris.clone().count();
    match (uris.next(), count) {
        (Some(Ok(uri)), 1) => SpiffeId::parse(uri).map_err(|source| SvidError::NotSpiffeId {
            uri: uri.to_owned(),
            source,
        }),
        (Some(Err(())), 1) => Err(SvidError::Malformed("the URI SAN is not valid text".into())),
        (_, count) => Err(SvidError::UriSanCount(count)),
    }
}

/// The X509-SVID leaf rules (spec sections 2, 3.1, 4.1, 4.3, 4.4, 5.2).
pub(crate) fn check_leaf(
    x509: &X509Certificate<'_>,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, SvidError> {
    let spiffe_id = spiffe_id_of(x509)?;
    if spiffe_id.trust_domain() != trust_domain {
        return Err(SvidError::WrongTrustDomain {
            found: spiffe_id,
            expected: trust_domain.clone(),
        });
    }
    if spiffe_id.path().is_empty() {
        return Err(SvidError::RootPath(spiffe_id));
    }
    let constraints = x509
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(format!("basic constraints: {e}")))?;
    if constraints.is_some_and(|ext| ext.value.ca) {
        return Err(SvidError::CaAsLeaf);
    }
    let key_usage = x509
        .key_usage()
        .map_err(|e| SvidError::Malformed(format!("key usage: {e}")))?
        .ok_or(SvidError::KeyUsage(
            "the extension is missing; an SVID must carry it",
        ))?;
    if !key_usage.critical {
        return Err(SvidError::KeyUsage("the extension is not marked critical"));
    }
    if !key_usage.value.digital_signature() {
        return Err(SvidError::KeyUsage("a leaf SVID must set digitalSignature"));
    }
    if key_usage.value.key_cert_sign() || key_usage.value.crl_sign() {
        return Err(SvidError::KeyUsage(
            "a leaf SVID must not set keyCertSign or cRLSign",
        ));
    }
    let extended = x509
        .extended_key_usage()
        .map_err(|e| SvidError::Malformed(format!("extended key usage: {e}")))?;
    if let Some(extended) = extended {
        if !(extended.value.server_auth && extended.value.client_auth) {
            return Err(SvidError::ExtendedKeyUsage(
                "when present it must include both serverAuth and clientAuth",
            ));
        }
    }
    Ok(spiffe_id)
}

/// The X509-SVID signing certificate rules (spec sections 3.2, 4.1, 4.3): CA=true,
/// keyCertSign, and a URI SAN, if any, that is a path-less SPIFFE ID (of
/// `trust_domain` when given). Returns that SPIFFE ID.
pub(crate) fn check_signing_certificate(
    x509: &X509Certificate<'_>,
    trust_domain: Option<&TrustDomain>,
) -> Result<Option<SpiffeId>, SvidError> {
    let bad = |reason: &str| SvidError::BadSigningCertificate(reason.to_owned());
    let constraints = x509
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(format!("basic constraints: {e}")))?;
    if !constraints.is_some_and(|ext| ext.value.ca) {
        return Err(bad("basicConstraints CA=true is missing"));
    }
    let key_usage = x509
        .key_usage()
        .map_err(|e| SvidError::Malformed(format!("key usage: {e}")))?
        .ok_or_else(|| bad("the key usage extension is missing"))?;
    if !key_usage.value.key_cert_sign() {
        return Err(bad("keyCertSign is not set"));
    }
    let has_uri = x509
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|name| matches!(name, GeneralName::URI(_)))
        });
    if !has_uri {
        return Ok(None);
    }
    let id = spiffe_id_of(x509)?;
    if !id.path().is_empty() {
        return Err(SvidError::BadSigningCertificate(format!(
            "its SPIFFE ID {id} has a path; a signing certificate's must not"
        )));
    }
    if let Some(expected) = trust_domain {
        if id.trust_domain() != expected {
            return Err(SvidError::WrongTrustDomain {
                found: id,
                expected: expected.clone(),
            });
        }
    }
    Ok(Some(id))
}

/// `(not_before, not_after)` in Unix seconds.
pub(crate) fn validity(x509: &X509Certificate<'_>) -> (i64, i64) {
    let validity = x509.validity();
    (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    )
}

pub(crate) fn check_validity(
    not_before: i64,
    not_after: i64,
    now: UnixTime,
) -> Result<(), SvidError> {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs < not_before {
        return Err(SvidError::NotYetValid {
            not_before: rfc3339(not_before),
            now: rfc3339(now_secs),
        });
    }
    if now_secs > not_after {
        return Err(SvidError::Expired {
            not_after: rfc3339(not_after),
            now: rfc3339(now_secs),
        });
    }
    Ok(())
}

/// The first instant [`check_validity`] refuses a certificate whose notAfter is
/// `not_after` (Unix seconds): it compares whole seconds.
pub(crate) fn refused_from(not_after: i64) -> std::time::SystemTime {
    crate::ca::system_time(not_after.saturating_add(1))
}

/// Unix seconds as RFC 3339 (UTC), for messages.
pub(crate) fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix_secs}"))
}

fn map_webpki_error(error: webpki::Error, trust_domain: &TrustDomain) -> SvidError {
    let secs = |t: UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match error {
        // A CA of the bundle with the issuer's name exists but did not sign it.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            SvidError::UntrustedIssuer(trust_domain.clone())
        }
        webpki::Error::CaUsedAsEndEntity => SvidError::CaAsLeaf,
        webpki::Error::CertExpired { time, not_after } => SvidError::Expired {
            not_after: rfc3339(secs(not_after)),
            now: rfc3339(secs(time)),
        },
        webpki::Error::CertNotValidYet { time, not_before } => SvidError::NotYetValid {
            not_before: rfc3339(secs(not_before)),
            now: rfc3339(secs(time)),
        },
        webpki::Error::RequiredEkuNotFoundContext(_) => SvidError::ExtendedKeyUsage(
            "the usage needed here (serverAuth or clientAuth) is absent",
        ),
        webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
            SvidError::Malformed(error.to_string())
        }
        other => SvidError::Chain(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer as _;

    /// Issue 11, item 6: the CertificateRequest's CA names are DER `Name`s, byte for
    /// byte the CA certificate's subject (OpenSSL and Go parse them as such).
    #[test]
    fn root_hint_subjects_are_der_names() {
        let dir = tempfile::tempdir().unwrap();
        let domain = TrustDomain::new("example.org").unwrap();
        let ca = crate::CertificateAuthority::init(&dir.path().join("ca"), &domain).unwrap();
        let certificates = rustls_pemfile::certs(&mut ca.bundle_pem())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let algorithms = crate::tls::algorithms();
        let bundle = Bundle::new(certificates.clone(), algorithms).unwrap();
        let subjects = bundle.subjects();
        assert_eq!(subjects.len(), 1);
        let x509 = parse(&certificates[0]).unwrap();
        let subject = x509.tbs_certificate.subject.as_raw();
        assert_eq!(subjects[0].as_ref(), subject);
        let (rest, name) = x509_parser::x509::X509Name::from_der(subjects[0].as_ref()).unwrap();
        assert!(rest.is_empty());
        assert!(name.to_string().contains("x0tta6bl4 CA"), "{name}");
    }
}
