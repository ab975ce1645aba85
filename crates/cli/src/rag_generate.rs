//! Generation for `rag query` and `rag serve`: the `--llm-*` flags and the HTTP exchange
//! with an OpenAI-compatible chat-completions endpoint (reqwest). The prompt, the wire
//! format and the answer are `x0tta6bl4_rag::generate`'s; without `--llm-endpoint`, or
//! when the endpoint fails, the answer is extractive and says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use x0tta6bl4_rag::generate::{
    self, chat_request, parse_response, user_prompt, Answer, GenerateError, PromptPassage,
    RESPONSE_BYTES_MAX,
};

use crate::problem::{problem, Exit, ProblemExt};

/// Where a system CA bundle is looked for, for an `https://` endpoint without
/// `--llm-ca-file` (Debian/Ubuntu, Fedora/RHEL, Alpine/macOS).
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The `--llm-*` flags of `rag query` and `rag serve`.
#[derive(Clone, Debug, Default, Args)]
pub struct GenerateArgs {
    /// OpenAI-compatible endpoint that generates an answer from the retrieved passages,
    /// e.g. http://127.0.0.1:8080/v1 (llama.cpp's llama-server, vLLM, Ollama, LocalAI);
    /// `/chat/completions` is appended unless the URL ends with it. Without it, answers
    /// are extractive (the best passage).
    #[arg(long, env = "X0TTA6BL4_LLM_ENDPOINT", value_name = "URL")]
    pub llm_endpoint: Option<String>,
    /// Model name sent to the endpoint (required with --llm-endpoint).
    #[arg(long, env = "X0TTA6BL4_LLM_MODEL", value_name = "NAME")]
    pub llm_model: Option<String>,
    /// Name of the environment variable that holds the endpoint's API key, sent as
    /// `Authorization: Bearer KEY` [default: no key sent].
    #[arg(long, env = "X0TTA6BL4_LLM_API_KEY_ENV", value_name = "VAR")]
    pub llm_api_key_env: Option<String>,
    /// Longest wait for the endpoint's whole answer; past it the answer is extractive.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub llm_timeout_ms: u64,
    /// Most tokens the endpoint may generate.
    #[arg(long, default_value_t = 384, value_name = "N")]
    pub llm_max_tokens: u32,
    /// PEM bundle of the CAs trusted for an https:// endpoint [default: the system's
    /// bundle, /etc/ssl/certs/ca-certificates.crt or the like].
    #[arg(long, value_name = "FILE")]
    pub llm_ca_file: Option<PathBuf>,
}

/// A configured endpoint, ready to call.
pub struct Generator {
    url: String,
    model: String,
    api_key: Option<String>,
    max_tokens: u32,
    timeout_ms: u64,
    http: reqwest::Client,
}

/// `base` as the chat-completions URL.
fn completions_url(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with("/chat/completions") {
        base.to_owned()
    } else {
        format!("{base}/chat/completions")
    }
}

fn read_ca_bundle(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let fix = "pass --llm-ca-file with a PEM file of CA certificates";
    let bytes = std::fs::read(path).problem(
        Exit::Usage,
        "cannot read the CA bundle",
        path.display(),
        fix,
    )?;
    let certs = reqwest::Certificate::from_pem_bundle(&bytes).problem(
        Exit::Usage,
        "the CA bundle is not PEM",
        path.display(),
        fix,
    )?;
    if certs.is_empty() {
        return Err(problem(
            Exit::Usage,
            "the CA bundle holds no certificate",
            path.display(),
            fix,
        )
        .into());
    }
    Ok(certs)
}

/// The roots to trust for an `https://` endpoint.
fn ca_roots(ca_file: &Option<PathBuf>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    if let Some(path) = ca_file {
        return read_ca_bundle(path);
    }
    let Some(system) = SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        return Err(problem(
            Exit::Usage,
            "no CA bundle to check the endpoint's certificate with",
            SYSTEM_CA_BUNDLES.join(", "),
            "install the ca-certificates package or pass --llm-ca-file",
        )
        .into());
    };
    read_ca_bundle(system)
}

impl Generator {
    /// The generator the flags configure; `None` without `--llm-endpoint`. Bad flags,
    /// an unset key variable or an unreadable CA bundle are usage errors.
    pub fn from_args(args: &GenerateArgs) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = &args.llm_endpoint else {
            return Ok(None);
        };
        let url = completions_url(endpoint);
        let parsed = reqwest::Url::parse(&url).problem(
            Exit::Usage,
            "the generation endpoint is not a URL",
            format!("--llm-endpoint {endpoint}"),
            "give the API's base URL, e.g. http://127.0.0.1:8080/v1",
        )?;
        let usage = |what: String, place: &str, fix: &str| -> anyhow::Error {
            problem(Exit::Usage, what, place, fix).into()
        };
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            let fix = "use an http:// or https:// URL, e.g. http://127.0.0.1:8080/v1";
            return Err(usage(
                format!("{url} is not an HTTP URL"),
                "--llm-endpoint",
                fix,
            ));
        }
        let model = match args.llm_model.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => {
                let fix =
                    "name the model the endpoint serves, e.g. --llm-model qwen2.5-0.5b-instruct";
                return Err(usage(
                    "--llm-endpoint needs a model".into(),
                    "--llm-model",
                    fix,
                ));
            }
        };
        if args.llm_timeout_ms == 0 || args.llm_max_tokens == 0 {
            let place = format!(
                "--llm-timeout-ms {} --llm-max-tokens {}",
                args.llm_timeout_ms, args.llm_max_tokens
            );
            return Err(usage(
                "zero timeout or token budget".into(),
                &place,
                "give both above 0",
            ));
        }
        let api_key = match &args.llm_api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key.trim().to_owned()),
                _ => {
                    let what = format!("the API key variable {var} is not set or empty");
                    let fix = "export it with the key, or drop --llm-api-key-env";
                    return Err(usage(what, "--llm-api-key-env", fix));
                }
            },
        };
        x0tta6bl4_identity::install_default_crypto_provider();
        let timeout = Duration::from_millis(args.llm_timeout_ms);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)));
        let loopback = parsed.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        });
        // A proxy from the environment would carry a loopback call off the host.
        if loopback {
            builder = builder.no_proxy();
        }
        if parsed.scheme() == "https" {
            for cert in ca_roots(&args.llm_ca_file)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().problem(
            Exit::Failure,
            "cannot build the HTTP client for generation",
            &url,
            "see the cause below",
        )?;
        Ok(Some(Generator {
            url,
            model,
            api_key,
            max_tokens: args.llm_max_tokens,
            timeout_ms: args.llm_timeout_ms,
            http,
        }))
    }

    /// The URL called.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configured model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Ask the endpoint; the answer is generated or an error says why not.
    async fn ask(
        &self,
        question: &str,
        passages: &[PromptPassage<'_>],
    ) -> Result<Answer, GenerateError> {
        let (user, in_prompt) = user_prompt(question, passages);
        let mut request =
            self.http
                .post(&self.url)
                .json(&chat_request(&self.model, self.max_tokens, &user));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| self.transport_error(&e);
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            body.extend_from_slice(&chunk);
            if body.len() > RESPONSE_BYTES_MAX {
                break; // parse_response refuses it, with the limit named
            }
        }
        let completion = parse_response(status, &body)?;
        Ok(Answer::generated(completion, &self.model, in_prompt))
    }

    fn transport_error(&self, e: &reqwest::Error) -> GenerateError {
        if e.is_timeout() {
            return GenerateError::Timeout {
                url: self.url.clone(),
                timeout_ms: self.timeout_ms,
            };
        }
        // reqwest's own text says only "error sending request": add the causes.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        GenerateError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }
}

/// The answer to `question` from `passages` (best first): generated when `generator`
/// is configured and answers, else extractive (the best passage) with the endpoint's
/// error, which is also returned for the caller to report.
pub async fn answer(
    generator: Option<&Generator>,
    question: &str,
    passages: &[PromptPassage<'_>],
) -> (Answer, Option<GenerateError>) {
    let best = passages.first().map(|p| p.text);
    let Some(g) = generator else {
        return (Answer::extractive(best, None, None), None);
    };
    match g.ask(question, passages).await {
        Ok(answer) => (answer, None),
        Err(e) => (
            Answer::extractive(best, Some(g.model.clone()), Some(&e)),
            Some(e),
        ),
    }
}

/// The answer to a `rag query` question over the store's `answers`.
pub async fn answer_query(
    generator: Option<&Generator>,
    question: &str,
    answers: &[x0tta6bl4_rag::store::Answer],
) -> (Answer, Option<GenerateError>) {
    let passages: Vec<PromptPassage<'_>> = answers.iter().map(PromptPassage::from).collect();
    answer(generator, question, &passages).await
}

/// The answer to an advise request over its `advice`.
pub async fn answer_advice(
    generator: Option<&Generator>,
    advice: &x0tta6bl4_rag::advise::Advice,
) -> (Answer, Option<GenerateError>) {
    let passages: Vec<PromptPassage<'_>> =
        advice.passages.iter().map(PromptPassage::from).collect();
    let question = generate::advise_question(&advice.event, &advice.query);
    answer(generator, &question, &passages).await
}
