//! Node names: the identity of a node inside the mesh (the last path segment of its
//! SPIFFE ID `spiffe://TD/node/NAME`).

use std::fmt;
use std::sync::Arc;

/// Longest name accepted, in bytes.
pub const NAME_LEN_MAX: usize = 64;

/// A validated node name: 1 to 64 bytes of `[A-Za-z0-9._-]`. Cheap to clone.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct NodeName(Arc<str>);

impl std::hash::Hash for NodeName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the derived hash: by content, so equal names hash alike.
        self.0.hash(state);
    }
}

impl PartialEq for NodeName {
    /// Clones of one name (the common case: names are cloned, not re-parsed) compare
    /// without reading the bytes, which spares a cache miss per table lookup.
    fn eq(&self, other: &NodeName) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

/// Why a string is not a valid node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("node name is empty: use 1 to {NAME_LEN_MAX} characters of A-Z a-z 0-9 . _ -")]
    Empty,
    /// The name is longer than [`NAME_LEN_MAX`] bytes.
    #[error("node name is {0} bytes long: at most {NAME_LEN_MAX} are allowed")]
    TooLong(usize),
    /// The name is `.` or `..`, which a SPIFFE ID path may not hold.
    #[error("node name may not be \".\" or \"..\": SPIFFE IDs forbid them as path segments")]
    DotSegment,
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error("node name {name:?} holds {bad:?}: only A-Z a-z 0-9 . _ - are allowed")]
    BadCharacter {
        /// The rejected name.
        name: String,
        /// The first character that is not allowed.
        bad: char,
    },
}

impl NodeName {
    /// Validate and wrap `name`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > NAME_LEN_MAX {
            return Err(NameError::TooLong(name.len()));
        }
        if name == "." || name == ".." {
            return Err(NameError::DotSegment);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::BadCharacter {
                name: name.to_owned(),
                bad,
            });
        }
        Ok(NodeName(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for NodeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        NodeName::new(s)
    }
}

impl serde::Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NodeName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(NodeName::new("node-1.a_b").is_ok());
        assert_eq!(NodeName::new(""), Err(NameError::Empty));
        assert_eq!(NodeName::new(&"a".repeat(65)), Err(NameError::TooLong(65)));
        assert!(matches!(
            NodeName::new("a/b"),
            Err(NameError::BadCharacter { bad: '/', .. })
        ));
    }
}
