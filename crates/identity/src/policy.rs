//! Authorization policy: allow / deny rules by SPIFFE ID pattern that decide who may
//! become a neighbour, who may send messages to whom, and who may call which API
//! endpoint.
//!
//! Evaluation: a matching `deny` rule wins over any matching `allow` rule; with no
//! matching rule, an ID of the node's own trust domain gets `default` (allow unless the
//! file says otherwise) and any other ID is denied. Every [`Verdict`] carries its
//! reason (the rule's name, or which default applied).
//!
//! Patterns are `spiffe://TRUST-DOMAIN/PATH-GLOB`: the trust domain is a name or `*`
//! (any), the path is matched segment by segment, `*` matching within one segment
//! (`edge-*`) and a whole `**` segment matching any number of segments. The pattern
//! `anonymous` matches an API caller that presented no SVID. Parsing is pure; the daemon
//! owns reloading.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::spiffe::{SpiffeId, TrustDomain};

/// Most rules in one policy file.
pub const POLICY_RULES_MAX: usize = 1024;
/// Longest policy file accepted, in bytes.
pub const POLICY_FILE_LEN_MAX: usize = 1024 * 1024;

/// What a decision is about; the `action` label of `x0tta6bl4_policy_decisions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A peer becoming a neighbour (after its SVID was verified).
    Neighbour,
    /// A node sending an application message to another.
    Send,
    /// A caller using an HTTP API endpoint.
    Api,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Neighbour, Action::Send, Action::Api];

    /// The name in policy files and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Neighbour => "neighbour",
            Action::Send => "send",
            Action::Api => "api",
        }
    }
}

/// Allow or deny; the `decision` label of `x0tta6bl4_policy_decisions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Permitted.
    Allow,
    /// Refused.
    Deny,
}

impl Decision {
    /// Both decisions.
    pub const ALL: [Decision; 2] = [Decision::Allow, Decision::Deny];

    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// A decision and why it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub decision: Decision,
    /// The rule that decided (`rule "NAME"`) or the default that applied.
    pub reason: String,
}

impl Verdict {
    /// Whether the action is permitted.
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// Why a policy file was rejected: the rule (when one is at fault) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{reason}", rule.as_ref().map(|r| format!("{r}: ")).unwrap_or_default())]
pub struct PolicyError {
    /// The policy file.
    pub file: String,
    /// The offending rule, e.g. `rule 2 ("no-edge")`, when one is at fault.
    pub rule: Option<String>,
    /// What is wrong and how to fix it.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "default_allow")]
    default: Decision,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

fn default_allow() -> Decision {
    Decision::Allow
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    effect: Decision,
    actions: Vec<String>,
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
}

/// A SPIFFE ID pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// An API caller without an SVID.
    Anonymous,
    Id {
        /// `None`: any trust domain.
        trust_domain: Option<String>,
        /// Path segments (`**` matches any number of segments).
        path: Vec<String>,
    },
}

/// An API endpoint pattern: optional method, path glob.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    method: Option<String>,
    path: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    name: String,
    effect: Decision,
    actions: Vec<Action>,
    from: Pattern,
    to: Option<Pattern>,
    endpoints: Vec<Endpoint>,
}

/// A validated authorization policy for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    trust_domain: TrustDomain,
    default: Decision,
    rules: Vec<Rule>,
}

impl Policy {
    /// The policy without a file: allow the node's own trust domain, deny the rest.
    pub fn default_for(trust_domain: &TrustDomain) -> Policy {
        Policy {
            trust_domain: trust_domain.clone(),
            default: Decision::Allow,
            rules: vec![],
        }
    }

    /// Number of rules.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// Read and validate the policy file at `path` for a node of `trust_domain`.
    pub fn load(path: &Path, trust_domain: &TrustDomain) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let error = |reason: String| PolicyError {
            file: file.clone(),
            rule: None,
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|e| error(format!("cannot read: {e}")))?;
        if metadata.len() > POLICY_FILE_LEN_MAX as u64 {
            return Err(error(format!(
                "{} bytes long; at most {POLICY_FILE_LEN_MAX} are accepted",
                metadata.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        Policy::parse(&text, &file, trust_domain)
    }

    /// Parse and validate `text`, the content of `file` (named in errors).
    pub fn parse(
        text: &str,
        file: &str,
        trust_domain: &TrustDomain,
    ) -> Result<Policy, PolicyError> {
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            PolicyError {
                file: line.map_or(file.to_owned(), |l| format!("{file}:{l}")),
                rule: None,
                reason: e.message().trim_end().to_owned(),
            }
        })?;
        if parsed.rule.len() > POLICY_RULES_MAX {
            return Err(PolicyError {
                file: file.to_owned(),
                rule: None,
                reason: format!(
                    "{} rules; at most {POLICY_RULES_MAX} are accepted",
                    parsed.rule.len()
                ),
            });
        }
        let mut rules = Vec::with_capacity(parsed.rule.len());
        for (index, rule) in parsed.rule.into_iter().enumerate() {
            let label = format!("rule {} ({:?})", index + 1, rule.name);
            let checked = check_rule(rule).map_err(|reason| PolicyError {
                file: file.to_owned(),
                rule: Some(label.clone()),
                reason,
            })?;
            if rules.iter().any(|r: &Rule| r.name == checked.name) {
                return Err(PolicyError {
                    file: file.to_owned(),
                    rule: Some(label),
                    reason: "another rule has this name: names must be unique, they are the reasons logged".into(),
                });
            }
            rules.push(checked);
        }
        Ok(Policy {
            trust_domain: trust_domain.clone(),
            default: parsed.default,
            rules,
        })
    }

    /// May `peer` become a neighbour?
    pub fn neighbour(&self, peer: &SpiffeId) -> Verdict {
        self.decide(Action::Neighbour, Some(peer), |rule| rule.to.is_none())
    }

    /// May `from` send an application message to `to`?
    pub fn send(&self, from: &SpiffeId, to: &SpiffeId) -> Verdict {
        self.decide(Action::Send, Some(from), |rule| {
            rule.to
                .as_ref()
                .is_none_or(|pattern| pattern.matches(Some(to)))
        })
    }

    /// May `caller` (`None`: no SVID presented) call `method path`?
    pub fn api(&self, caller: Option<&SpiffeId>, method: &str, path: &str) -> Verdict {
        self.decide(Action::Api, caller, |rule| {
            rule.endpoints.is_empty() || rule.endpoints.iter().any(|e| e.matches(method, path))
        })
    }

    fn decide(
        &self,
        action: Action,
        subject: Option<&SpiffeId>,
        applies: impl Fn(&Rule) -> bool,
    ) -> Verdict {
        let matching = |effect: Decision| {
            self.rules.iter().find(|rule| {
                rule.effect == effect
                    && rule.actions.contains(&action)
                    && rule.from.matches(subject)
                    && applies(rule)
            })
        };
        if let Some(rule) = matching(Decision::Deny) {
            return verdict(Decision::Deny, format!("rule {:?}", rule.name));
        }
        if let Some(rule) = matching(Decision::Allow) {
            return verdict(Decision::Allow, format!("rule {:?}", rule.name));
        }
        match subject {
            Some(id) if id.trust_domain() != &self.trust_domain => verdict(
                Decision::Deny,
                format!(
                    "default: {} is outside trust domain {}",
                    id, self.trust_domain
                ),
            ),
            _ => verdict(
                self.default,
                format!("default for trust domain {}", self.trust_domain),
            ),
        }
    }
}

fn verdict(decision: Decision, reason: String) -> Verdict {
    Verdict { decision, reason }
}

fn check_rule(rule: RuleFile) -> Result<Rule, String> {
    if rule.name.trim().is_empty() {
        return Err("`name` is empty: give every rule a name, it is logged as the reason".into());
    }
    if rule.actions.is_empty() {
        return Err("`actions` is empty: list \"neighbour\", \"send\" and/or \"api\"".into());
    }
    let mut actions = Vec::new();
    for action in &rule.actions {
        let found = Action::ALL.into_iter().find(|a| a.as_str() == action);
        let found = found.ok_or_else(|| {
            format!("`actions`: unknown action {action:?}: use \"neighbour\", \"send\" or \"api\"")
        })?;
        actions.push(found);
    }
    let from = Pattern::parse(&rule.from).map_err(|e| format!("`from`: {e}"))?;
    let to = match &rule.to {
        Some(to) if !actions.contains(&Action::Send) || actions.len() > 1 => {
            return Err(format!(
                "`to` ({to:?}) only applies to the \"send\" action: put it in a rule whose actions are [\"send\"]"
            ))
        }
        Some(to) => Some(Pattern::parse(to).map_err(|e| format!("`to`: {e}"))?),
        None => None,
    };
    if !rule.endpoints.is_empty() && (actions != [Action::Api]) {
        return Err(
            "`endpoints` only applies to the \"api\" action: put it in a rule whose actions are [\"api\"]"
                .into(),
        );
    }
    let endpoints = rule
        .endpoints
        .iter()
        .map(|e| Endpoint::parse(e).map_err(|reason| format!("`endpoints`: {reason}")))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        name: rule.name,
        effect: rule.effect,
        actions,
        from,
        to,
        endpoints,
    })
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        if text == "anonymous" {
            return Ok(Pattern::Anonymous);
        }
        let hint = "write spiffe://TRUST-DOMAIN/PATH-GLOB, e.g. \"spiffe://example.org/node/edge-*\", \"spiffe://*/**\" or \"anonymous\"";
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("{text:?} is not a SPIFFE ID pattern: {hint}"))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let trust_domain = match domain {
            "*" => None,
            domain => Some(
                TrustDomain::new(domain)
                    .map_err(|e| format!("{text:?}: trust domain {domain:?}: it {e}"))?
                    .to_string(),
            ),
        };
        let path: Vec<String> = if path.is_empty() {
            vec![]
        } else {
            path.split('/').map(str::to_owned).collect()
        };
        for segment in &path {
            let valid = !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
                && (segment == "**" || !segment.contains("**"));
            if !valid {
                return Err(format!(
                    "{text:?}: path segment {segment:?} is not valid: use a-z A-Z 0-9 . _ - and * (one segment) or a whole ** segment; {hint}"
                ));
            }
        }
        Ok(Pattern::Id { trust_domain, path })
    }

    fn matches(&self, id: Option<&SpiffeId>) -> bool {
        match (self, id) {
            (Pattern::Anonymous, None) => true,
            (Pattern::Id { trust_domain, path }, Some(id)) => {
                trust_domain
                    .as_ref()
                    .is_none_or(|td| td == id.trust_domain().as_str())
                    && {
                        let segments: Vec<&str> =
                            id.path().split('/').filter(|s| !s.is_empty()).collect();
                        path_matches(path, &segments)
                    }
            }
            _ => false,
        }
    }
}

impl Endpoint {
    fn parse(text: &str) -> Result<Endpoint, String> {
        let (method, path) = match text.split_once(' ') {
            Some((method, path)) => (Some(method.to_ascii_uppercase()), path.trim()),
            None => (None, text),
        };
        let hint = "write \"METHOD /path\" or \"/path\", with * within a segment and ** for any segments, e.g. \"POST /api/v1/send\" or \"GET /api/v1/**\"";
        let path = path
            .strip_prefix('/')
            .ok_or_else(|| format!("{text:?} does not start with / : {hint}"))?;
        if let Some(method) = &method {
            if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(format!(
                    "{text:?}: method {method:?} is not an HTTP method: {hint}"
                ));
            }
        }
        let path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Endpoint { method, path })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && {
                let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
                path_matches(&self.path, &segments)
            }
    }
}

/// Glob match of path segments: `**` any number of segments, `*` within a segment.
fn path_matches(pattern: &[String], segments: &[&str]) -> bool {
    match pattern.split_first() {
        None => segments.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=segments.len()).any(|skip| path_matches(rest, &segments[skip..]))
        }
        Some((first, rest)) => match segments.split_first() {
            Some((segment, remaining)) => {
                segment_matches(first, segment) && path_matches(rest, remaining)
            }
            None => false,
        },
    }
}

/// Glob match within one segment: `*` matches any run of characters.
fn segment_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("mesh.test").unwrap()
    }

    fn id(text: &str) -> SpiffeId {
        SpiffeId::parse(text).unwrap()
    }

    const POLICY: &str = r#"
default = "allow"

[[rule]]
name = "no-edge-neighbours"
effect = "deny"
actions = ["neighbour"]
from = "spiffe://mesh.test/node/edge-*"

[[rule]]
name = "partner"
effect = "allow"
actions = ["neighbour", "send"]
from = "spiffe://partner.org/node/gw"

[[rule]]
name = "no-send-to-db"
effect = "deny"
actions = ["send"]
from = "spiffe://mesh.test/**"
to = "spiffe://mesh.test/node/db-*"

[[rule]]
name = "read-only-api"
effect = "deny"
actions = ["api"]
from = "anonymous"
endpoints = ["POST /api/v1/**"]
"#;

    #[test]
    fn deny_wins_and_defaults_depend_on_the_trust_domain() {
        let policy = Policy::parse(POLICY, "p.toml", &td()).unwrap();
        assert_eq!(policy.rules(), 4);
        let v = policy.neighbour(&id("spiffe://mesh.test/node/edge-1"));
        assert_eq!(
            (v.decision, v.reason.as_str()),
            (Decision::Deny, "rule \"no-edge-neighbours\"")
        );
        let v = policy.neighbour(&id("spiffe://mesh.test/node/core-1"));
        assert_eq!(v.decision, Decision::Allow);
        assert!(v.reason.starts_with("default"), "{}", v.reason);
        let v = policy.neighbour(&id("spiffe://other.org/node/x"));
        assert_eq!(v.decision, Decision::Deny);
        assert!(
            v.reason.contains("outside trust domain mesh.test"),
            "{}",
            v.reason
        );
        let v = policy.neighbour(&id("spiffe://partner.org/node/gw"));
        assert_eq!(
            (v.decision, v.reason.as_str()),
            (Decision::Allow, "rule \"partner\"")
        );

        let a = id("spiffe://mesh.test/node/a");
        assert!(!policy
            .send(&a, &id("spiffe://mesh.test/node/db-1"))
            .allowed());
        assert!(policy.send(&a, &id("spiffe://mesh.test/node/b")).allowed());

        assert!(!policy.api(None, "POST", "/api/v1/send").allowed());
        assert!(policy.api(None, "GET", "/api/v1/peers").allowed());
        assert!(policy.api(Some(&a), "POST", "/api/v1/send").allowed());
    }

    #[test]
    fn default_deny_inside_the_domain() {
        let policy = Policy::parse("default = \"deny\"\n", "p.toml", &td()).unwrap();
        assert!(!policy.neighbour(&id("spiffe://mesh.test/node/a")).allowed());
        let policy = Policy::default_for(&td());
        assert!(policy.neighbour(&id("spiffe://mesh.test/node/a")).allowed());
        assert!(!policy.neighbour(&id("spiffe://x.org/node/a")).allowed());
    }

    #[test]
    fn globs() {
        let s = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert!(path_matches(&s("node/**"), &["node", "a", "b"]));
        assert!(path_matches(&s("**"), &[]));
        assert!(path_matches(&s("node/*-x"), &["node", "a-x"]));
        assert!(!path_matches(&s("node/*"), &["node", "a", "b"]));
        assert!(segment_matches("a*b*c", "aXXbYc"));
        assert!(!segment_matches("a*b*c", "acb"));
        assert!(segment_matches("*", ""));
        assert!(!segment_matches("ab*ba", "aba"));
    }

    #[test]
    fn bad_files_name_the_rule_and_the_reason() {
        let bad = [
            ("[[rule]]\nname = \"x\"\neffect = \"allow\"\nactions = [\"fly\"]\nfrom = \"spiffe://*/**\"\n", "rule 1 (\"x\"): `actions`: unknown action \"fly\""),
            ("[[rule]]\nname = \"y\"\neffect = \"allow\"\nactions = [\"send\"]\nfrom = \"node/a\"\n", "rule 1 (\"y\"): `from`: \"node/a\" is not a SPIFFE ID pattern"),
            ("[[rule]]\nname = \"z\"\neffect = \"maybe\"\nactions = [\"send\"]\nfrom = \"anonymous\"\n", "p.toml:3: unknown variant `maybe`"),
            ("[[rule]]\nname = \"w\"\neffect = \"deny\"\nactions = [\"neighbour\"]\nfrom = \"anonymous\"\nto = \"spiffe://*/**\"\n", "`to`"),
            ("[[rule]]\nname = \"v\"\neffect = \"deny\"\nactions = [\"api\"]\nfrom = \"anonymous\"\nendpoints = [\"api\"]\n", "does not start with /"),
            ("[[rule]]\nname = \"u\"\neffect = \"deny\"\nactions = [\"api\"]\nfrom = \"spiffe://a.org/x**\"\n", "path segment \"x**\""),
            ("colour = 1\n", "unknown field `colour`"),
        ];
        for (text, expected) in bad {
            let error = Policy::parse(text, "p.toml", &td())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error} (expected {expected})");
            assert!(error.starts_with("p.toml"), "{error}");
        }
        let twice = "[[rule]]\nname = \"a\"\neffect = \"deny\"\nactions = [\"send\"]\nfrom = \"anonymous\"\n";
        let error = Policy::parse(&format!("{twice}{twice}"), "p.toml", &td()).unwrap_err();
        assert_eq!(error.rule.as_deref(), Some("rule 2 (\"a\")"));
    }
}
