//! SPIFFE IDs and trust domains, validated as the SPIFFE ID specification says
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use x0tta6bl4_proto::NodeName;

/// Longest SPIFFE ID accepted, in bytes (SPIFFE ID spec, section 2.3).
pub const SPIFFE_ID_LEN_MAX: usize = 2048;
/// Longest trust domain name accepted, in bytes (SPIFFE ID spec, section 2.3).
pub const TRUST_DOMAIN_LEN_MAX: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";
/// The path prefix of node SVIDs: `spiffe://TD/node/NAME`.
const NODE_PATH_PREFIX: &str = "/node/";

/// Why a string is not a valid SPIFFE ID or trust domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input is empty.
    #[error("is empty: write it as spiffe://TRUST-DOMAIN/PATH")]
    Empty,
    /// The input is longer than [`SPIFFE_ID_LEN_MAX`] bytes.
    #[error("is {0} bytes long: a SPIFFE ID has at most {SPIFFE_ID_LEN_MAX} bytes")]
    TooLong(usize),
    /// The input does not start with `spiffe://`.
    #[error("does not start with \"spiffe://\" (the scheme must be lowercase spiffe)")]
    WrongScheme,
    /// The trust domain is empty.
    #[error("has no trust domain: write it as spiffe://TRUST-DOMAIN/PATH")]
    MissingTrustDomain,
    /// The trust domain is longer than [`TRUST_DOMAIN_LEN_MAX`] bytes.
    #[error("has a trust domain of {0} bytes: at most {TRUST_DOMAIN_LEN_MAX} are allowed")]
    TrustDomainTooLong(usize),
    /// The trust domain holds a character outside `[a-z0-9._-]` (this rejects ports,
    /// userinfo and uppercase letters).
    #[error(
        "has {bad:?} in its trust domain: only lowercase a-z, 0-9, '.', '-' and '_' are \
         allowed (no port, no user@, no uppercase)"
    )]
    BadTrustDomainCharacter {
        /// The first character that is not allowed.
        bad: char,
    },
    /// The path has an empty segment (`//`) or ends with `/`.
    #[error("has an empty path segment or a trailing '/': remove the extra '/'")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("has a '.' or '..' path segment: these are not allowed")]
    DotSegment,
    /// The path holds a character outside `[A-Za-z0-9._-]` (this rejects queries,
    /// fragments and percent-encoding).
    #[error(
        "has {bad:?} in its path: only A-Z a-z 0-9 '.' '-' '_' and '/' between segments \
         are allowed (no query, fragment or percent-encoding)"
    )]
    BadPathCharacter {
        /// The first character that is not allowed.
        bad: char,
    },
}

/// A SPIFFE trust domain name: 1 to 255 bytes of `[a-z0-9._-]`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(Arc<str>);

impl TrustDomain {
    /// Validate and wrap a trust domain name such as `example.org` (not a URI).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(TrustDomain(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://TD`), carried by its CAs.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: Arc::from(""),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, SpiffeIdError> {
        TrustDomain::new(s)
    }
}

/// A SPIFFE ID `spiffe://TRUST-DOMAIN/PATH`. The path is empty or `/seg(/seg)*`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: Arc<str>,
}

impl SpiffeId {
    /// Parse `spiffe://TRUST-DOMAIN/PATH`.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        if id.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if id.len() > SPIFFE_ID_LEN_MAX {
            return Err(SpiffeIdError::TooLong(id.len()));
        }
        let rest = id
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let (domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(domain)?;
        validate_path(path)?;
        Ok(SpiffeId {
            trust_domain: TrustDomain(Arc::from(domain)),
            path: Arc::from(path),
        })
    }

    /// The SPIFFE ID of node `name`: `spiffe://TD/node/NAME`.
    ///
    /// Fails only for the node names `.` and `..`, which [`NodeName`] accepts but a
    /// SPIFFE path segment does not.
    pub fn for_node(trust_domain: &TrustDomain, name: &NodeName) -> Result<Self, SpiffeIdError> {
        let path = format!("{NODE_PATH_PREFIX}{name}");
        validate_path(&path)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.clone(),
            path: Arc::from(path),
        })
    }

    /// The trust domain (the URI authority).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path: empty for a trust domain's own ID, else `/seg(/seg)*`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The node name when the path is exactly `/node/NAME`.
    pub fn node_name(&self) -> Option<NodeName> {
        let name = self.path.strip_prefix(NODE_PATH_PREFIX)?;
        if name.contains('/') {
            return None;
        }
        NodeName::new(name).ok()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.trust_domain, self.path)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, SpiffeIdError> {
        SpiffeId::parse(s)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > TRUST_DOMAIN_LEN_MAX {
        return Err(SpiffeIdError::TrustDomainTooLong(name.len()));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    match name.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(SpiffeIdError::BadTrustDomainCharacter { bad }),
        None => Ok(()),
    }
}

/// A path is empty or a sequence of `/segment`, each segment non-empty, not `.` or `..`,
/// and made of `[A-Za-z0-9._-]`.
fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(segments) = path.strip_prefix('/') else {
        // Unreachable from `parse` (the path starts at a '/'); kept for safety.
        return Err(SpiffeIdError::BadPathCharacter {
            bad: path.chars().next().unwrap_or('?'),
        });
    };
    for segment in segments.split('/') {
        if segment.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if let Some(bad) = segment.chars().find(|&c| !allowed(c)) {
            return Err(SpiffeIdError::BadPathCharacter { bad });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/node/a-1").unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/node/a-1");
        assert_eq!(id.node_name().unwrap().as_str(), "a-1");
        assert_eq!(id.to_string(), "spiffe://example.org/node/a-1");

        let root = SpiffeId::parse("spiffe://td").unwrap();
        assert_eq!(root.path(), "");
        assert_eq!(root, TrustDomain::new("td").unwrap().id());
        assert!(root.node_name().is_none());

        for ok in [
            "spiffe://trustdomain/path",
            "spiffe://trust-domain.example_1/Path/UPPER/a.b-c_d",
            "spiffe://1.2.3.4/x",
            "spiffe://td/..a/.b",
        ] {
            let id: SpiffeId = ok.parse().unwrap();
            assert_eq!(id.to_string(), ok);
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        use SpiffeIdError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("example.org/path", E::WrongScheme),
            ("https://example.org/path", E::WrongScheme),
            ("SPIFFE://example.org/path", E::WrongScheme),
            ("spiffe:/example.org", E::WrongScheme),
            ("spiffe://", E::MissingTrustDomain),
            ("spiffe:///path", E::MissingTrustDomain),
            (
                "spiffe://Example.org/path",
                E::BadTrustDomainCharacter { bad: 'E' },
            ),
            (
                "spiffe://example.org:8080/path",
                E::BadTrustDomainCharacter { bad: ':' },
            ),
            (
                "spiffe://user@example.org/path",
                E::BadTrustDomainCharacter { bad: '@' },
            ),
            (
                "spiffe://exa mple.org",
                E::BadTrustDomainCharacter { bad: ' ' },
            ),
            ("spiffe://example.org/", E::EmptySegment),
            ("spiffe://example.org//path", E::EmptySegment),
            ("spiffe://example.org/path/", E::EmptySegment),
            ("spiffe://example.org/./path", E::DotSegment),
            ("spiffe://example.org/path/..", E::DotSegment),
            (
                "spiffe://example.org/path?query",
                E::BadPathCharacter { bad: '?' },
            ),
            (
                "spiffe://example.org/path#frag",
                E::BadPathCharacter { bad: '#' },
            ),
            (
                "spiffe://example.org?query",
                E::BadTrustDomainCharacter { bad: '?' },
            ),
            (
                "spiffe://example.org/pa%20th",
                E::BadPathCharacter { bad: '%' },
            ),
            (
                "spiffe://example.org/päth",
                E::BadPathCharacter { bad: 'ä' },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SpiffeId::parse(input).as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
        let long_domain = format!("spiffe://{}", "a".repeat(256));
        assert_eq!(
            SpiffeId::parse(&long_domain),
            Err(E::TrustDomainTooLong(256))
        );
        let long_id = format!("spiffe://td/{}", "a".repeat(2048));
        assert_eq!(SpiffeId::parse(&long_id), Err(E::TooLong(2060)));
    }

    #[test]
    fn trust_domains_and_node_ids() {
        assert!(TrustDomain::new("mesh.example").is_ok());
        assert!(TrustDomain::new("").is_err());
        assert!(TrustDomain::new("spiffe://mesh").is_err());
        assert!(TrustDomain::new("Mesh").is_err());

        let td: TrustDomain = "mesh".parse().unwrap();
        let name = NodeName::new("Node_7").unwrap();
        let id = SpiffeId::for_node(&td, &name).unwrap();
        assert_eq!(id.to_string(), "spiffe://mesh/node/Node_7");
        assert_eq!(id.node_name(), Some(name));
        assert!(
            NodeName::new("..").is_err(),
            "proto refuses dot segments before SPIFFE sees them"
        );

        for not_node in [
            "spiffe://mesh/node",
            "spiffe://mesh/node/a/b",
            "spiffe://mesh/nodes/a",
        ] {
            assert_eq!(
                SpiffeId::parse(not_node).unwrap().node_name(),
                None,
                "{not_node}"
            );
        }
    }
}
