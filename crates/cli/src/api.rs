//! A small client of the node HTTP API (docs/api.md), shared by `status`, `send` and
//! the demo. Every request has a timeout; every failure names the URL.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One node's API.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// A non-2xx answer, with the `error` text of its JSON body when there is one.
#[derive(Debug)]
pub struct HttpError {
    /// The HTTP status code.
    pub status: u16,
    /// The method and URL of the request.
    pub request: String,
    /// The `error` member of the body, else the body itself.
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(
            f,
            "{} answered HTTP {} {}: {}",
            self.request, self.status, reason, self.message
        )
    }
}

impl std::error::Error for HttpError {}

/// One row of `GET /api/v1/routes`.
#[derive(Clone, Debug, Deserialize)]
pub struct RouteRow {
    /// The destination node.
    pub destination: String,
    /// The neighbour messages to it are handed to.
    pub next_hop: String,
}

/// `GET /api/v1/flows`.
#[derive(Clone, Debug, Deserialize)]
pub struct FlowsReport {
    /// Arrivals per source.
    #[serde(default)]
    pub received: Vec<FlowArrivals>,
}

/// The arrivals at one node of the probe flow from `source`.
#[derive(Clone, Debug, Deserialize)]
pub struct FlowArrivals {
    /// The sending node.
    pub source: String,
    /// Arrival times, Unix microseconds, ascending.
    pub arrivals_us: Vec<u64>,
}

/// `GET /api/v1/channels/{channel}/messages`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChannelMessages {
    /// Deliveries, oldest first.
    pub messages: Vec<ChannelMessage>,
    /// Deliveries the node dropped (oldest first) because nobody read them in time.
    pub dropped: u64,
}

/// One delivery on an attached channel.
#[derive(Clone, Debug, Deserialize)]
pub struct ChannelMessage {
    /// Its sequence number at the node.
    pub seq: u64,
    /// The sending node.
    pub from: String,
    /// The payload, hex.
    pub payload_hex: String,
}

#[derive(Serialize)]
struct FlowsRequest<'a> {
    targets: &'a [String],
    interval_ms: u64,
}

#[derive(Serialize)]
struct SendRequest<'a> {
    to: &'a str,
    payload: &'a str,
}

impl Api {
    /// A client for the API at `url` (`http://HOST:PORT`; `HOST:PORT` alone also works).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Self::with_svid(url, None)
    }

    /// A client for the API at `url` that, given an SVID directory (`svid.pem`,
    /// `svid_key.pem`, `bundle.pem`), speaks HTTPS with mutual TLS: it presents that SVID
    /// and accepts only a server whose certificate is an SVID of the bundle's trust
    /// domain, as a node with `[identity] api_mtls = true` expects. `HOST:PORT` alone
    /// then means `https://HOST:PORT`.
    pub fn with_svid(url: &str, svid: Option<&Path>) -> anyhow::Result<Self> {
        let url = url.trim().trim_end_matches('/');
        let base = match (url.contains("://"), svid) {
            (true, _) => url.to_owned(),
            (false, None) => format!("http://{url}"),
            (false, Some(_)) => format!("https://{url}"),
        };
        let parsed =
            reqwest::Url::parse(&base).with_context(|| format!("{base:?} is not a URL"))?;
        x0tta6bl4_identity::install_default_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy();
        if let Some(dir) = svid {
            if parsed.scheme() != "https" {
                anyhow::bail!("{base:?} is plain HTTP but an SVID was given: use https://");
            }
            let identity = x0tta6bl4_identity::NodeIdentity::load(dir)
                .with_context(|| format!("cannot load the SVID in {}", dir.display()))?;
            builder = builder.use_preconfigured_tls(identity.api_client_config()?);
        }
        let http = builder.build().context("cannot build an HTTP client")?;
        Ok(Api { base, http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, decoded as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url} failed"))?;
        decode(answer, format!("GET {url}")).await
    }

    /// `POST path` with a JSON body, answer decoded as JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url} failed"))?;
        decode(answer, format!("POST {url}")).await
    }

    /// The forwarding table.
    pub async fn routes(&self) -> anyhow::Result<Vec<RouteRow>> {
        self.get("/api/v1/routes").await
    }

    /// Start probe flows to `targets`, one message every `interval_ms`.
    pub async fn start_flows(&self, targets: &[String], interval_ms: u64) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .post(
                "/api/v1/flows",
                &FlowsRequest {
                    targets,
                    interval_ms,
                },
            )
            .await?;
        Ok(())
    }

    /// The probe-flow arrivals at this node.
    pub async fn flows(&self) -> anyhow::Result<FlowsReport> {
        self.get("/api/v1/flows").await
    }

    /// Send `payload` to `to` on attached channel `channel` (2-255).
    pub async fn channel_send(
        &self,
        channel: u8,
        to: &str,
        payload: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/api/v1/channels/{channel}/send", self.base);
        let answer = self
            .http
            .post(&url)
            .query(&[("to", to)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(payload)
            .send()
            .await
            .with_context(|| format!("POST {url} failed"))?;
        decode(answer, format!("POST {url}")).await
    }

    /// The deliveries on attached channel `channel` after sequence number `after`,
    /// waiting up to `wait_ms` for the first.
    pub async fn channel_messages(
        &self,
        channel: u8,
        after: u64,
        wait_ms: u64,
    ) -> anyhow::Result<ChannelMessages> {
        self.get(&format!(
            "/api/v1/channels/{channel}/messages?after={after}&wait_ms={wait_ms}"
        ))
        .await
    }

    /// Send an application message.
    pub async fn send(&self, to: &str, payload: &str) -> anyhow::Result<serde_json::Value> {
        self.post("/api/v1/send", &SendRequest { to, payload })
            .await
    }
}

/// How to fix a request to the API at `base` that got no HTTP answer, from the causes
/// in `error`'s chain: nothing listening, plain HTTP sent to an API that speaks TLS, no
/// client SVID for an API that requires one, or an SVID the API or we do not accept.
pub fn unanswered_fix(error: &anyhow::Error, base: &str, svid_given: bool) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|c| c.to_string().to_lowercase())
        .collect();
    let any = |needle: &str| causes.iter().any(|c| c.contains(needle));
    let refused = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    }) || any("connection refused");
    let https = base.starts_with("https://");
    let tls = ["certificate", "tls", "handshake", "unknownissuer", "alert"]
        .iter()
        .any(|needle| any(needle));
    let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
    if refused {
        "nothing listens there: check that the node runs and that --api matches its api_listen"
            .to_owned()
    } else if !https && (any("invalid http version") || any("invalid http")) {
        format!(
            "the API speaks https (its node has `[identity] api_mtls = true`): use \
             --api https://{authority} with --svid DIR"
        )
    } else if https && !svid_given {
        "the API requires mutual TLS with a client SVID: pass --svid DIR, a directory from \
         `x0tta6bl4 ca issue` holding the SVID to present (svid.pem, svid_key.pem) and the CA \
         bundle that the node's certificate is checked against (bundle.pem)"
            .to_owned()
    } else if https && tls {
        format!(
            "the TLS handshake failed: check that the SVID in --svid is valid and of the node's \
             trust domain and that its bundle.pem holds the node's CA; if the node serves plain \
             HTTP (no api_mtls), use --api http://{authority} without --svid"
        )
    } else {
        "check that the node runs and that --api matches its api_listen".to_owned()
    }
}

async fn decode<T: DeserializeOwned>(
    answer: reqwest::Response,
    request: String,
) -> anyhow::Result<T> {
    let status = answer.status();
    let body = answer
        .text()
        .await
        .with_context(|| format!("{request}: cannot read the answer"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        return Err(HttpError {
            status: status.as_u16(),
            request,
            message,
        }
        .into());
    }
    serde_json::from_str(&body)
        .with_context(|| format!("{request}: the answer is not the expected JSON: {body:.200}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            Api::new("127.0.0.1:8001").unwrap().base(),
            "http://127.0.0.1:8001"
        );
        assert_eq!(
            Api::new("http://127.0.0.1:8001/").unwrap().base(),
            "http://127.0.0.1:8001"
        );
        assert!(Api::new("http://[::1").is_err());
    }

    #[test]
    fn http_error_text() {
        let error = HttpError {
            status: 404,
            request: "POST http://x/api/v1/send".into(),
            message: "unknown node".into(),
        };
        assert_eq!(
            error.to_string(),
            "POST http://x/api/v1/send answered HTTP 404 Not Found: unknown node"
        );
    }
}
