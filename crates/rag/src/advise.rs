//! Runbook passages for a fault or healing event named by an alert or the healing loop.
//!
//! An event name (`X0tta6bl4NeighbourDown`, `NeighbourDown`, `neighbour_down`,
//! `node-kill`) is reduced to a key: lowercase letters and digits, the `x0tta6bl4`
//! prefix dropped. Runbook sections are titled by their alert names, so when a chunk's
//! heading path has a heading whose key equals the event's, that section is the answer:
//! its chunks are returned in document order (a runbook reads top to bottom), unscored.
//! Otherwise the name is spelled out as words (`neighbour down`, `node kill`) and the
//! most similar passages are returned with their scores.

use serde::Serialize;

use crate::embed::Embedder;
use crate::store::{Store, StoreError};

/// Longest event name accepted, in bytes.
pub const EVENT_LEN_MAX: usize = 128;

/// How the passages were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matched {
    /// A section titled by the event (a runbook entry).
    Heading,
    /// Semantic similarity with the event's words (no section is titled by it).
    Similarity,
}

/// One passage of advice.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Passage {
    /// Cosine similarity with the event's words; `None` for a heading match.
    pub score: Option<f32>,
    /// Document it came from.
    pub source: String,
    /// Section titles, outermost first.
    pub headings: Vec<String>,
    /// The passage.
    pub text: String,
}

/// What [`advise`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Advice {
    /// The event name asked about.
    pub event: String,
    /// The words searched for when no heading matched.
    pub query: String,
    /// How the passages were found.
    pub matched: Matched,
    /// The passages, best (or first) first.
    pub passages: Vec<Passage>,
}

/// Check an event name: 1 to [`EVENT_LEN_MAX`] bytes of letters, digits, `_ - . :`.
pub fn check_event(event: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
    if event.is_empty() || event.len() > EVENT_LEN_MAX || !event.chars().all(allowed) {
        return Err(format!(
            "event names are 1 to {EVENT_LEN_MAX} letters, digits, `_`, `-`, `.` or `:` \
             (an alert name such as X0tta6bl4NeighbourDown, or a fault such as node-kill)"
        ));
    }
    Ok(())
}

/// The comparison key of a name or heading: lowercase ASCII letters and digits, without
/// a leading `x0tta6bl4`.
pub fn key(name: &str) -> String {
    let k: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    k.strip_prefix("x0tta6bl4").map(str::to_owned).unwrap_or(k)
}

/// The event name as words: `X0tta6bl4NeighbourDown` → `neighbour down`.
pub fn words(event: &str) -> String {
    let chars: Vec<char> = event.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            out.push(' ');
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        let after_lower = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
        let acronym_end = prev.is_some_and(|p| p.is_ascii_uppercase())
            && next.is_some_and(char::is_ascii_lowercase);
        if c.is_ascii_uppercase() && (after_lower || acronym_end) {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    let joined = out.split_whitespace().collect::<Vec<_>>().join(" ");
    joined
        .strip_prefix("x0tta6bl4 ")
        .map(str::to_owned)
        .unwrap_or(joined)
}

/// The passages of `store` for `event`, at most `k` (see the module doc).
pub fn advise(
    store: &Store,
    embedder: &Embedder,
    event: &str,
    k: usize,
) -> Result<Advice, StoreError> {
    let wanted = key(event);
    let query = words(event);
    let titled = |h: &String| !wanted.is_empty() && key(h) == wanted;
    let section: Vec<Passage> = store
        .chunks()
        .iter()
        .filter(|c| c.headings.iter().any(titled))
        .take(k)
        .map(|c| Passage {
            score: None,
            source: c.source.clone(),
            headings: c.headings.clone(),
            text: c.text.clone(),
        })
        .collect();
    if !section.is_empty() {
        return Ok(Advice {
            event: event.to_owned(),
            query,
            matched: Matched::Heading,
            passages: section,
        });
    }
    let passages = store
        .query(embedder, &query, k)?
        .into_iter()
        .map(|a| Passage {
            score: Some(a.score),
            source: a.source,
            headings: a.headings,
            text: a.text,
        })
        .collect();
    Ok(Advice {
        event: event.to_owned(),
        query,
        matched: Matched::Similarity,
        passages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_keys_and_words() {
        assert_eq!(key("X0tta6bl4NeighbourDown"), "neighbourdown");
        assert_eq!(key("neighbour_down"), "neighbourdown");
        assert_eq!(words("X0tta6bl4NeighbourDown"), "neighbour down");
        assert_eq!(words("node-kill"), "node kill");
        assert_eq!(words("SvidExpiringSoon"), "svid expiring soon");
        assert_eq!(words("MTTRHigh"), "mttr high");
        assert!(check_event("X0tta6bl4MttrHigh").is_ok());
        assert!(check_event("").is_err());
        assert!(check_event("a b").is_err());
        assert!(check_event(&"a".repeat(EVENT_LEN_MAX + 1)).is_err());
    }
}
