//! Sentiment of proposal texts and discussion comments: VADER (Hutto & Gilbert 2014, the
//! `vader_sentiment` crate with its 7,500-word lexicon) over a lexicon extended with the
//! words of mesh operations.
//!
//! VADER's valences (−4 … +4) were rated by people reading social-media text. Some words of
//! a mesh operator's vocabulary are missing from it (`outage`, `latency`, `failover`,
//! `revoke`…) and a few carry an everyday sense that misleads here (`ban` −2.6 and `exploit`
//! −0.4: in a proposal "ban node n7" is the name of a template, not an outburst, while an
//! exploit is always an attack). [`DOMAIN_LEXICON`] adds or overrides those words; each value
//! is anchored to a word VADER already rates, given next to it, so that the scale stays
//! VADER's. The rules (negation, boosters, "but", capitals, punctuation) are VADER's own.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Serialize;
use unicase::UniCase;
use vader_sentiment::SentimentIntensityAnalyzer;

/// The domain lexicon: word, valence, and the VADER word (with its valence) it is anchored to.
pub const DOMAIN_LEXICON: &[(&str, f64, &str)] = &[
    // Faults: a loss of service reads like VADER's failure words.
    ("outage", -2.0, "failure −2.3, crash −1.7"),
    ("outages", -2.0, "failures −2.0"),
    ("downtime", -1.8, "degraded −1.8"),
    ("unreachable", -1.6, "crash −1.7, lost −1.3"),
    (
        "flapping",
        -1.2,
        "between drop −1.1 and loss −1.3: a link that comes and goes",
    ),
    ("congestion", -1.0, "drop −1.1"),
    ("congested", -1.0, "drop −1.1"),
    // Metrics named in complaints: mild, since they are also neutral measurements.
    (
        "latency",
        -0.8,
        "vulnerable −0.9; named mostly when it is too high",
    ),
    ("jitter", -0.8, "as latency"),
    ("partitioned", -1.0, "drop −1.1"),
    ("regression", -1.2, "between loss −1.3 and blocked −1.1"),
    (
        "rollback",
        -0.6,
        "a fix that undoes a change: half of drop −1.1",
    ),
    // Security: attacks and compromises are as bad as VADER's attack words.
    ("compromised", -2.3, "failure −2.3; attack −2.1"),
    ("rogue", -1.9, "misbehaving −1.7, attacker −2.7"),
    ("sybil", -1.9, "as rogue"),
    (
        "exploit",
        -2.0,
        "attack −2.1 (VADER's −0.4 is 'make use of')",
    ),
    ("exploited", -2.0, "attacked −2.0"),
    ("unpatched", -1.5, "insecure −1.8, vulnerable −0.9"),
    // Sanctions: protective acts, mildly negative (VADER's ban −2.6 and banned −2.0 rate
    // the everyday outrage, not a proposal's template).
    ("ban", -0.9, "blocked −1.1, less the outrage"),
    ("banned", -0.9, "as ban"),
    (
        "revoke",
        -0.6,
        "a sanction that protects: half of blocked −1.1",
    ),
    ("revoked", -0.6, "as revoke"),
    ("revocation", -0.6, "as revoke"),
    // Good operation.
    (
        "secure",
        1.4,
        "VADER's own secure 1.4, kept: listed for the docs",
    ),
    ("hardened", 1.4, "secure 1.4"),
    (
        "encrypted",
        0.8,
        "between stable 1.2 and neutral: expected, not praise",
    ),
    ("resilient", 1.6, "robust 1.4, secured 1.7"),
    ("reliable", 1.5, "robust 1.4, secured 1.7"),
    (
        "redundant",
        0.6,
        "in a mesh: a spare path (everyday 'superfluous' is not the sense)",
    ),
    ("redundancy", 0.8, "as redundant"),
    ("failover", 0.6, "as redundant"),
    ("uptime", 1.2, "stable 1.2"),
    ("patched", 0.9, "improve 1.9, halved: repairs a fault"),
    ("healed", 1.4, "robust 1.4"),
    ("self-healing", 1.4, "robust 1.4"),
];

static LEXICON: LazyLock<HashMap<UniCase<&'static str>, f64>> = LazyLock::new(|| {
    let mut lexicon = vader_sentiment::LEXICON.clone();
    for (word, valence, _) in DOMAIN_LEXICON {
        lexicon.insert(UniCase::new(*word), *valence);
    }
    lexicon
});

/// VADER's scores of one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sentiment {
    /// The normalised sum of valences, −1 (most negative) … +1 (most positive).
    pub compound: f64,
    pub positive: f64,
    pub neutral: f64,
    pub negative: f64,
    /// The words of the text that the domain lexicon rated (lowercase, in order).
    pub domain_words: Vec<String>,
}

/// Scores `text` with VADER over the extended lexicon.
pub fn score(text: &str) -> Sentiment {
    score_with(text, SentimentIntensityAnalyzer::from_lexicon(&LEXICON))
}

/// Scores `text` with VADER's own lexicon only (for comparison).
pub fn score_plain(text: &str) -> Sentiment {
    score_with(text, SentimentIntensityAnalyzer::new())
}

fn score_with(text: &str, analyzer: SentimentIntensityAnalyzer<'_>) -> Sentiment {
    let s = analyzer.polarity_scores(text);
    let get = |k: &str| s.get(k).copied().unwrap_or(0.0);
    let domain_words = text
        .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '-'))
        .map(|w| w.trim_matches('-').to_lowercase())
        .filter(|w| DOMAIN_LEXICON.iter().any(|(d, _, _)| d == w))
        .collect();
    Sentiment {
        compound: get("compound"),
        positive: get("pos"),
        neutral: get("neu"),
        negative: get("neg"),
        domain_words,
    }
}

/// The mean compound score of several texts (0 for none): a discussion's sentiment.
pub fn mean_compound<'a>(texts: impl IntoIterator<Item = &'a str>) -> f64 {
    let analyzer = SentimentIntensityAnalyzer::from_lexicon(&LEXICON);
    let (mut sum, mut n) = (0.0, 0usize);
    for t in texts {
        sum += analyzer
            .polarity_scores(t)
            .get("compound")
            .copied()
            .unwrap_or(0.0);
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_cases_have_the_right_sign() {
        assert!(score("This is a great proposal, I fully support it!").compound > 0.5);
        assert!(score("Terrible idea, I hate it.").compound < -0.5);
        assert!(
            score("The parameter is set to 50 milliseconds.")
                .compound
                .abs()
                < 0.05
        );
        // negation is VADER's
        assert!(score("This is not a good idea.").compound < 0.0);
    }

    #[test]
    fn domain_lexicon_is_applied() {
        let text = "Another outage last night and the latency is back";
        let plain = score_plain(text);
        let domain = score(text);
        assert_eq!(plain.compound, 0.0, "VADER alone rates none of these words");
        assert!(domain.compound < -0.4, "{}", domain.compound);
        assert_eq!(domain.domain_words, ["outage", "latency"]);
        // an override: a ban proposal's template is not outrage
        let ban = "Ban node n7";
        assert!(score_plain(ban).compound < score(ban).compound);
        assert!(score(ban).compound < 0.0);
        assert!(score("Failover makes the mesh resilient").compound > 0.3);
        assert!(score("self-healing").domain_words == ["self-healing"]);
    }

    #[test]
    fn every_domain_word_is_on_vaders_scale() {
        for (word, valence, anchor) in DOMAIN_LEXICON {
            assert!(valence.abs() <= 4.0 && !anchor.is_empty(), "{word}");
            assert_eq!(LEXICON.get(&UniCase::new(*word)), Some(valence), "{word}");
        }
        assert!(mean_compound([]) == 0.0);
    }
}
