//! Errors, split by who is at fault: the environment (I/O), a file on disk, a
//! certificate presented by a peer or found in a file, configuration, and crypto.

use std::path::PathBuf;

use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Everything that can go wrong in this crate. Every message says what failed, where
/// (the file path when there is one) and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read, written or created.
    #[error("cannot {what} {}: {source} ({hint})", path.display())]
    Io {
        /// What we tried to do, e.g. "read SVID key".
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
        /// How to fix it.
        hint: String,
    },
    /// A file exists but its content is unusable (bad PEM, wrong key type, a certificate
    /// that is not a proper SVID, a key that does not match its certificate...).
    #[error("{}: {reason} ({hint})", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// How to fix it.
        hint: String,
    },
    /// `CertificateAuthority::init` found a CA in the directory and refused to replace it.
    #[error(
        "a CA already exists in {} (found {}): refusing to overwrite it; choose another \
         directory, or delete this one if you really mean to discard the CA (every SVID it \
         issued then stops being trusted)",
        dir.display(), found.display()
    )]
    CaExists {
        /// The CA directory.
        dir: PathBuf,
        /// The file that shows a CA is there.
        found: PathBuf,
    },
    /// A certificate (from a peer or a credential) is not a valid X.509-SVID of our
    /// trust domain.
    #[error("certificate rejected: {0}")]
    Certificate(#[from] SvidError),
    /// An argument or setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Key generation, signing or building a TLS configuration failed.
    #[error("{what} failed: {reason}")]
    Crypto {
        /// What we tried to do.
        what: &'static str,
        /// The library's error.
        reason: String,
    },
}

/// Why a certificate is not accepted as an X.509-SVID (the SPIFFE X509-SVID spec, or
/// the path validation against the trust bundle, failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// No certificate was presented.
    #[error("no certificate was presented")]
    Missing,
    /// The DER does not parse as an X.509 certificate, or is too large.
    #[error("not a well-formed X.509 certificate: {0}")]
    Malformed(String),
    /// The certificate does not carry exactly one URI SAN.
    #[error("has {0} URI SANs: an X.509-SVID carries exactly one (its SPIFFE ID)")]
    UriSanCount(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a SPIFFE ID: it {source}")]
    NotSpiffeId {
        /// The URI found.
        uri: String,
        /// Why it is not a SPIFFE ID.
        source: SpiffeIdError,
    },
    /// The SPIFFE ID belongs to another trust domain.
    #[error("SPIFFE ID {found} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The SPIFFE ID found.
        found: SpiffeId,
        /// Our trust domain.
        expected: TrustDomain,
    },
    /// The SPIFFE ID is in a trust domain that is neither ours nor federated.
    #[error(
        "SPIFFE ID {found} is in trust domain {}, which is neither ours ({local}) nor \
         federated: add its bundle to [identity] federation to trust it",
        found.trust_domain()
    )]
    UnknownTrustDomain {
        /// The SPIFFE ID found.
        found: SpiffeId,
        /// Our trust domain.
        local: TrustDomain,
    },
    /// A leaf SVID's SPIFFE ID has no path.
    #[error("leaf SPIFFE ID {0} has no path: leaf SVIDs identify a workload by their path")]
    RootPath(SpiffeId),
    /// The SPIFFE ID is not of the form `spiffe://TD/node/NAME`.
    #[error("SPIFFE ID {0} is not a node ID (spiffe://TRUST-DOMAIN/node/NAME)")]
    NotANode(SpiffeId),
    /// A leaf certificate is a CA (basicConstraints CA=true).
    #[error("is a CA certificate (basicConstraints CA=true): only a leaf SVID may authenticate")]
    CaAsLeaf,
    /// The key usage extension breaks the X509-SVID rules.
    #[error("key usage: {0}")]
    KeyUsage(&'static str),
    /// The extended key usage extension breaks the X509-SVID rules.
    #[error("extended key usage: {0}")]
    ExtendedKeyUsage(&'static str),
    /// A signing (CA) certificate breaks the X509-SVID rules.
    #[error("signing certificate: {0}")]
    BadSigningCertificate(String),
    /// The certificate's validity period ended.
    #[error("expired (valid until {not_after}, now {now})")]
    Expired {
        /// End of validity, RFC 3339.
        not_after: String,
        /// The time of the check, RFC 3339.
        now: String,
    },
    /// The certificate's validity period has not started.
    #[error("not valid yet (valid from {not_before}, now {now}): check the clocks")]
    NotYetValid {
        /// Start of validity, RFC 3339.
        not_before: String,
        /// The time of the check, RFC 3339.
        now: String,
    },
    /// The certificate does not chain to a CA of the trust bundle.
    #[error("not issued by a CA of the trust bundle of {0}")]
    UntrustedIssuer(TrustDomain),
    /// Path validation failed for another reason.
    #[error("path validation against the trust bundle failed: {0}")]
    Chain(String),
}

impl From<SvidError> for rustls::Error {
    fn from(error: SvidError) -> Self {
        use rustls::CertificateError as C;
        let certificate_error = match error {
            SvidError::Malformed(_) => C::BadEncoding,
            SvidError::Expired { .. } => C::Expired,
            SvidError::NotYetValid { .. } => C::NotValidYet,
            SvidError::UntrustedIssuer(_) => C::UnknownIssuer,
            other => C::Other(rustls::OtherError(std::sync::Arc::new(other))),
        };
        rustls::Error::InvalidCertificate(certificate_error)
    }
}
