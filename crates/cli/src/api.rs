//! A small client of the node HTTP API (docs/api.md), shared by `status`, `send` and
//! the demo. Every request has a timeout; every failure names the URL.

use std::fmt;
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
    transport: Transport,
}

/// Plain HTTP (reqwest), or HTTP/1.1 over mutual TLS with an SVID for a node whose API
/// requires it (`[identity] api_mtls`): reqwest is built without TLS, so that path uses
/// hyper over tokio-rustls with the identity crate's configuration.
#[derive(Clone)]
enum Transport {
    Plain(reqwest::Client),
    Mtls(std::sync::Arc<rustls::ClientConfig>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plain(_) => "http",
            Transport::Mtls(_) => "https (mutual TLS)",
        })
    }
}

/// Largest answer read over mutual TLS, in bytes.
const ANSWER_LEN_MAX: usize = 16 * 1024 * 1024;

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
        Api::with_tls(url, None)
    }

    /// A client for the API at `url`; with `tls` (a node's `api_mtls` API, `https://`),
    /// over that TLS configuration (an SVID client, [`NodeIdentity::api_client_config`]).
    ///
    /// [`NodeIdentity::api_client_config`]: x0tta6bl4_identity::NodeIdentity::api_client_config
    pub fn with_tls(url: &str, tls: Option<rustls::ClientConfig>) -> anyhow::Result<Self> {
        let url = url.trim().trim_end_matches('/');
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = if url.contains("://") {
            url.to_owned()
        } else {
            format!("{scheme}://{url}")
        };
        let parsed =
            reqwest::Url::parse(&base).with_context(|| format!("{base:?} is not a URL"))?;
        if parsed.scheme() != scheme {
            anyhow::bail!(
                "{base:?} is {}: with an SVID (--cert-dir) use https://, without one http://",
                parsed.scheme()
            );
        }
        let transport = match tls {
            Some(tls) => Transport::Mtls(std::sync::Arc::new(tls)),
            None => Transport::Plain(
                reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .no_proxy()
                    .build()
                    .context("cannot build an HTTP client")?,
            ),
        };
        Ok(Api { base, transport })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, decoded as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let request = format!("GET {}{path}", self.base);
        let (status, body) = self
            .exchange("GET", path, None)
            .await
            .with_context(|| format!("{request} failed"))?;
        decode(status, &body, request)
    }

    /// `POST path` with a JSON body, answer decoded as JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let request = format!("POST {}{path}", self.base);
        let json = serde_json::to_vec(body).context("cannot encode the request body")?;
        let (status, answer) = self
            .exchange("POST", path, Some(json))
            .await
            .with_context(|| format!("{request} failed"))?;
        decode(status, &answer, request)
    }

    /// One request; the answer's status and body.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        match &self.transport {
            Transport::Plain(http) => {
                let method = reqwest::Method::from_bytes(method.as_bytes())?;
                let mut request = http.request(method, &url);
                if let Some(body) = body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body);
                }
                let answer = request.send().await?;
                let status = answer.status().as_u16();
                let text = answer.text().await.context("cannot read the answer")?;
                Ok((status, text))
            }
            Transport::Mtls(tls) => {
                let exchange = mtls_exchange(tls.clone(), &self.base, path, method, body);
                tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
            }
        }
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

    /// Send an application message.
    pub async fn send(&self, to: &str, payload: &str) -> anyhow::Result<serde_json::Value> {
        self.post("/api/v1/send", &SendRequest { to, payload })
            .await
    }
}

/// HTTP/1.1 over TLS 1.3 with our SVID: connect, handshake (the node's SVID verified by
/// `tls`), one request, the whole answer.
async fn mtls_exchange(
    tls: std::sync::Arc<rustls::ClientConfig>,
    base: &str,
    path: &str,
    method: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    use rustls::pki_types::ServerName;
    let parsed = reqwest::Url::parse(base)?;
    let host = parsed.host_str().context("the URL has no host")?;
    let bare = host.trim_matches(['[', ']']);
    let port = parsed.port_or_known_default().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    // SPIFFE authenticates by the SVID's URI SAN; the name only fills SNI.
    let name = ServerName::try_from(bare.to_owned())
        .or_else(|_| ServerName::try_from("x0tta6bl4-node"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake with the node failed (is its API api_mtls, and its SVID of a trust domain in --cert-dir's bundle?)")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", parsed.path().trim_end_matches('/')))
        .header("host", format!("{host}:{port}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(
        body.unwrap_or_default(),
    )))?;
    let answer = sender.send_request(request).await?;
    let status = answer.status().as_u16();
    let limited = http_body_util::Limited::new(answer.into_body(), ANSWER_LEN_MAX);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn decode<T: DeserializeOwned>(status: u16, body: &str, request: String) -> anyhow::Result<T> {
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        return Err(HttpError {
            status,
            request,
            message,
        }
        .into());
    }
    serde_json::from_str(body)
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
