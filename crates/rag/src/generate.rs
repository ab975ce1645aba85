//! Generated answers through an OpenAI-compatible chat-completions endpoint, sans I/O.
//!
//! The guardian answers extractively (the retrieved passages themselves) unless an
//! endpoint is configured. This module owns everything of generation except the HTTP
//! exchange, which the caller does with the client it has (`x0tta6bl4 rag` uses
//! reqwest): [`chat_request`] builds the request body from the question and the
//! passages (numbered, each with its source and heading path, so the model can cite
//! them as `[n]`), [`parse_response`] reads the endpoint's status and body into a
//! [`Completion`] or a typed [`GenerateError`], and [`Answer`] is what goes back next
//! to the passages: generated text with the model's name, or the best passage
//! (extractive) with the reason generation was not used, never hidden.
//!
//! The wire format is OpenAI's `POST {base}/chat/completions`: `{"model", "messages":
//! [{"role": "system"|"user", "content"}], "max_tokens", "temperature"}` in;
//! `{"model", "choices": [{"message": {"content"}, "finish_reason"}], "usage"}` out;
//! errors as `{"error": {"message", "type"}}`. llama.cpp's `llama-server`, vLLM, Ollama
//! and LocalAI serve the same.

use serde::Serialize;
use serde_json::{json, Value};

/// Most characters of passage text put into one prompt; passages past it are left out
/// of the prompt (not out of the answer) and counted in [`Answer::passages_in_prompt`].
pub const PROMPT_PASSAGE_CHARS_MAX: usize = 12_000;
/// Longest endpoint answer read, in bytes; a longer one is refused as malformed.
pub const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// Longest part of an error body quoted in an error message, in characters.
const QUOTE_CHARS_MAX: usize = 300;

/// The instructions the model gets before the passages.
pub const SYSTEM_PROMPT: &str = "You are the operations assistant of x0tta6bl4, a \
self-healing zero-trust mesh network. Answer the operator's question using only the \
numbered passages given (runbooks and documentation). Cite the passages you use as [1], \
[2]. If the passages do not contain the answer, say so in one sentence instead of \
guessing. Be brief: steps and commands first.";

/// A retrieved passage as the prompt shows it.
#[derive(Clone, Copy, Debug)]
pub struct PromptPassage<'a> {
    /// Document it came from.
    pub source: &'a str,
    /// Section titles, outermost first.
    pub headings: &'a [String],
    /// The passage.
    pub text: &'a str,
}

impl<'a> From<&'a crate::store::Answer> for PromptPassage<'a> {
    fn from(a: &'a crate::store::Answer) -> Self {
        PromptPassage {
            source: &a.source,
            headings: &a.headings,
            text: &a.text,
        }
    }
}

impl<'a> From<&'a crate::advise::Passage> for PromptPassage<'a> {
    fn from(a: &'a crate::advise::Passage) -> Self {
        PromptPassage {
            source: &a.source,
            headings: &a.headings,
            text: &a.text,
        }
    }
}

/// The user message: the numbered passages (source > headings, then text), as many as
/// fit in [`PROMPT_PASSAGE_CHARS_MAX`] (at least the first), then the question. Returns
/// the message and how many passages it holds.
pub fn user_prompt(question: &str, passages: &[PromptPassage<'_>]) -> (String, usize) {
    let mut out = String::from("Passages:\n");
    let mut used_chars = 0usize;
    let mut included = 0usize;
    for (i, p) in passages.iter().enumerate() {
        let chars = p.text.chars().count();
        if included > 0 && used_chars + chars > PROMPT_PASSAGE_CHARS_MAX {
            break;
        }
        let mut place = p.source.to_owned();
        for h in p.headings {
            place.push_str(" > ");
            place.push_str(h);
        }
        out.push_str(&format!("\n[{}] {place}\n{}\n", i + 1, p.text.trim()));
        used_chars += chars;
        included += 1;
    }
    if included == 0 {
        out.push_str("\n(no passages were found)\n");
    }
    out.push_str(&format!("\nQuestion: {}\n", question.trim()));
    (out, included)
}

/// The body of a chat-completions request (temperature 0: answers repeat).
pub fn chat_request(model: &str, max_tokens: u32, user: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": false,
    })
}

/// The question put to the model for an alert or fault event ([`crate::advise`]).
pub fn advise_question(event: &str, words: &str) -> String {
    format!(
        "The alert or healing event `{event}` ({words}) fired. What does it mean and what \
         should the operator do?"
    )
}

/// What the endpoint answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// The model the endpoint says answered (its `model` field), if it said.
    pub model: Option<String>,
    /// Why generation stopped (`stop`, `length`, ...), if said.
    pub finish_reason: Option<String>,
    /// Prompt tokens, if the endpoint counted them.
    pub prompt_tokens: Option<u64>,
    /// Generated tokens, if the endpoint counted them.
    pub completion_tokens: Option<u64>,
}

/// Why no generated answer came back. Each names what went wrong and what to check.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GenerateError {
    /// No connection could be made (refused, DNS, TLS).
    #[error("the endpoint {url} cannot be reached: {reason}; check --llm-endpoint and that the server runs")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("the endpoint {url} did not answer within {timeout_ms} ms; raise --llm-timeout-ms or lower --llm-max-tokens")]
    Timeout {
        /// The URL called.
        url: String,
        /// The timeout, milliseconds.
        timeout_ms: u64,
    },
    /// An HTTP status other than 200.
    #[error("the endpoint answered HTTP {status}: {message}; {}", status_fix(*.status))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The endpoint's error message (or the start of its body).
        message: String,
    },
    /// A 200 whose body is not a chat completion.
    #[error("the endpoint's answer is not a chat completion: {0}; check that --llm-endpoint is an OpenAI-compatible API's base URL (e.g. http://127.0.0.1:8080/v1)")]
    Malformed(String),
}

impl GenerateError {
    /// A short, fixed label (for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            GenerateError::Unreachable { .. } => "unreachable",
            GenerateError::Timeout { .. } => "timeout",
            GenerateError::Status { .. } => "status",
            GenerateError::Malformed(_) => "malformed",
        }
    }
}

/// What to check after the endpoint answered HTTP `status`.
fn status_fix(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the API key (the variable --llm-api-key-env names)",
        404 => "check --llm-endpoint (the API's base URL, e.g. http://127.0.0.1:8080/v1) and --llm-model",
        429 => "the endpoint limits its rate: ask again later",
        400..=499 => "check --llm-model, and --llm-max-tokens against the model's context length",
        _ => "the endpoint failed: see its log",
    }
}

/// The first [`QUOTE_CHARS_MAX`] characters of `text`, for error messages.
fn quote(text: &str) -> String {
    let mut q: String = text.chars().take(QUOTE_CHARS_MAX).collect();
    if text.chars().count() > QUOTE_CHARS_MAX {
        q.push('…');
    }
    q
}

/// The endpoint's answer (HTTP `status`, `body`) as a completion or an error.
pub fn parse_response(status: u16, body: &[u8]) -> Result<Completion, GenerateError> {
    if body.len() > RESPONSE_BYTES_MAX {
        return Err(GenerateError::Malformed(format!(
            "the body is {} bytes, more than {RESPONSE_BYTES_MAX}",
            body.len()
        )));
    }
    let text = String::from_utf8_lossy(body);
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status != 200 {
        // OpenAI's {"error": {"message"}}; some servers send {"error": "..."} or text.
        let message = parsed
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                e.get("message")
                    .and_then(Value::as_str)
                    .or_else(|| e.as_str())
                    .map(|m| quote(m.trim()))
            })
            .unwrap_or_else(|| quote(text.trim()));
        let message = if message.is_empty() {
            "(empty body)".to_owned()
        } else {
            message
        };
        return Err(GenerateError::Status { status, message });
    }
    let v = parsed.map_err(|e| {
        GenerateError::Malformed(format!("invalid JSON ({e}): {}", quote(text.trim())))
    })?;
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| {
            GenerateError::Malformed(format!("no `choices[0]` in {}", quote(&v.to_string())))
        })?;
    let content = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            GenerateError::Malformed(format!(
                "no `choices[0].message.content` string in {}",
                quote(&choice.to_string())
            ))
        })?;
    if content.trim().is_empty() {
        return Err(GenerateError::Malformed(
            "`choices[0].message.content` is empty".into(),
        ));
    }
    let string = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    Ok(Completion {
        text: content.trim().to_owned(),
        model: string("/model"),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        prompt_tokens: v.pointer("/usage/prompt_tokens").and_then(Value::as_u64),
        completion_tokens: v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64),
    })
}

/// The answer returned next to the passages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// Whether `text` was generated by the endpoint (else: the best passage).
    pub generated: bool,
    /// The model that answered (the endpoint's word, else the configured name); the
    /// configured name when generation failed; `null` when none is configured.
    pub model: Option<String>,
    /// The generated answer, or the best passage's text (empty when none was found).
    pub text: String,
    /// Passages shown to the model (the first ones; 0 when nothing was generated).
    pub passages_in_prompt: usize,
    /// Why generation stopped, when generated.
    pub finish_reason: Option<String>,
    /// Prompt and generated tokens, when the endpoint counted them.
    pub prompt_tokens: Option<u64>,
    /// Generated tokens, when the endpoint counted them.
    pub completion_tokens: Option<u64>,
    /// Why the endpoint's answer is not used, when one is configured and failed.
    pub error: Option<String>,
}

impl Answer {
    /// The extractive answer: the best passage's text. `model` and `error` say whether
    /// an endpoint was configured and why it was not used.
    pub fn extractive(
        best: Option<&str>,
        model: Option<String>,
        error: Option<&GenerateError>,
    ) -> Self {
        Answer {
            generated: false,
            model,
            text: best.unwrap_or_default().to_owned(),
            passages_in_prompt: 0,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            error: error.map(ToString::to_string),
        }
    }

    /// A generated answer from `completion`, asked of `configured_model`.
    pub fn generated(completion: Completion, configured_model: &str, in_prompt: usize) -> Self {
        Answer {
            generated: true,
            model: Some(
                completion
                    .model
                    .unwrap_or_else(|| configured_model.to_owned()),
            ),
            text: completion.text,
            passages_in_prompt: in_prompt,
            finish_reason: completion.finish_reason,
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage<'a>(source: &'a str, headings: &'a [String], text: &'a str) -> PromptPassage<'a> {
        PromptPassage {
            source,
            headings,
            text,
        }
    }

    #[test]
    fn the_prompt_numbers_passages_with_their_sources_and_ends_with_the_question() {
        let h = vec!["Runbook".to_owned(), "X0tta6bl4NeighbourDown".to_owned()];
        let p = [
            passage("docs/runbook-mttr.md", &h, "Check the peer's process."),
            passage("docs/b.md", &[], "Second."),
        ];
        let (user, n) = user_prompt("a neighbour is down", &p);
        assert_eq!(n, 2);
        assert!(user.contains(
            "[1] docs/runbook-mttr.md > Runbook > X0tta6bl4NeighbourDown\nCheck the peer's process."
        ));
        assert!(user.contains("[2] docs/b.md\nSecond."));
        assert!(user.trim_end().ends_with("Question: a neighbour is down"));
        let body = chat_request("m", 64, &user);
        assert_eq!(body["model"], "m");
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], user.as_str());
    }

    #[test]
    fn the_prompt_keeps_within_its_character_budget_but_always_holds_the_first_passage() {
        let big = "x".repeat(PROMPT_PASSAGE_CHARS_MAX / 2 + 1);
        let p = [
            passage("a", &[], &big),
            passage("b", &[], &big),
            passage("c", &[], "small"),
        ];
        let (user, n) = user_prompt("q", &p);
        assert_eq!(n, 1);
        assert!(!user.contains("[2] b"));
        let huge = "y".repeat(PROMPT_PASSAGE_CHARS_MAX * 2);
        let (_, n) = user_prompt("q", &[passage("a", &[], &huge)]);
        assert_eq!(n, 1);
        let (user, n) = user_prompt("q", &[]);
        assert_eq!(n, 0);
        assert!(user.contains("no passages"));
    }

    #[test]
    fn a_chat_completion_is_read_with_its_model_and_usage() {
        let body = br#"{"id":"x","object":"chat.completion","model":"tiny-q4",
            "choices":[{"index":0,"message":{"role":"assistant","content":" Restart it [1]. "},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":7}}"#;
        let c = parse_response(200, body).unwrap();
        assert_eq!(c.text, "Restart it [1].");
        assert_eq!(c.model.as_deref(), Some("tiny-q4"));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(120), Some(7)));
        let a = Answer::generated(c, "configured", 3);
        assert!(a.generated);
        assert_eq!(a.model.as_deref(), Some("tiny-q4"));
        let no_model = br#"{"choices":[{"message":{"content":"ok"}}]}"#;
        let a = Answer::generated(parse_response(200, no_model).unwrap(), "configured", 1);
        assert_eq!(a.model.as_deref(), Some("configured"));
    }

    #[test]
    fn errors_say_what_the_endpoint_answered() {
        let e = parse_response(
            401,
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            GenerateError::Status {
                status: 401,
                message: "Incorrect API key provided".into()
            }
        );
        assert_eq!(e.kind(), "status");
        let e = parse_response(503, br#"{"error":"model is loading"}"#).unwrap_err();
        assert!(e.to_string().contains("HTTP 503: model is loading"), "{e}");
        let e = parse_response(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(e.to_string().contains("<html>Bad Gateway"), "{e}");
        let e = parse_response(500, b"").unwrap_err();
        assert!(e.to_string().contains("(empty body)"), "{e}");
    }

    #[test]
    fn status_errors_say_what_to_check_and_quote_a_long_message_in_part() {
        for (status, fix) in [
            (401, "--llm-api-key-env"),
            (404, "--llm-endpoint"),
            (400, "--llm-max-tokens"),
            (503, "see its log"),
        ] {
            let e = parse_response(status, br#"{"error":{"message":"no"}}"#).unwrap_err();
            assert!(e.to_string().contains(fix), "{status}: {e}");
        }
        // An endpoint's message is quoted like a body is: a megabyte of it is not.
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "m".repeat(100_000));
        let e = parse_response(400, long.as_bytes()).unwrap_err();
        assert!(
            e.to_string().len() < 2 * QUOTE_CHARS_MAX,
            "{} chars",
            e.to_string().len()
        );
        let e = parse_response(200, b"<html>").unwrap_err();
        assert!(e.to_string().contains("--llm-endpoint"), "{e}");
    }

    #[test]
    fn malformed_completions_are_refused_with_the_reason() {
        for (body, wanted) in [
            (&b"not json"[..], "invalid JSON"),
            (br#"{"choices":[]}"#, "no `choices[0]`"),
            (br#"{"object":"list"}"#, "no `choices[0]`"),
            (br#"{"choices":[{"text":"legacy"}]}"#, "message.content"),
            (br#"{"choices":[{"message":{"content":"  "}}]}"#, "empty"),
        ] {
            let e = parse_response(200, body).unwrap_err();
            assert_eq!(e.kind(), "malformed");
            assert!(e.to_string().contains(wanted), "{e}");
        }
        let long = vec![b' '; RESPONSE_BYTES_MAX + 1];
        assert!(parse_response(200, &long)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }

    #[test]
    fn the_extractive_answer_is_the_best_passage_and_carries_the_error() {
        let e = GenerateError::Timeout {
            url: "http://127.0.0.1:9/v1/chat/completions".into(),
            timeout_ms: 100,
        };
        let a = Answer::extractive(Some("best"), Some("m".into()), Some(&e));
        assert!(!a.generated);
        assert_eq!(a.text, "best");
        assert!(a.error.unwrap().contains("within 100 ms"));
        let a = Answer::extractive(None, None, None);
        assert_eq!((a.text.as_str(), a.error), ("", None));
    }
}
