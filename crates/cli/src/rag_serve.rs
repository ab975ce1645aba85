//! `x0tta6bl4 rag serve`: the guardian's HTTPS API, mutual TLS with SVIDs only.
//!
//! Connections are served by the node's own API server
//! ([`x0tta6bl4_node::api_serve::serve`]: connection cap, header and handshake
//! timeouts, refusals counted by reason), with the identity crate's server
//! configuration, which *requires* a client SVID of our (or a federated) trust domain:
//! a caller without one is refused in the TLS handshake and counted in
//! `x0tta6bl4_rag_connections_refused_total{reason="tls_handshake"}`. The
//! authorization [`Policy`] then decides per endpoint (`api` rules, e.g. everyone in
//! the trust domain may query, only `node/ops-*` may ingest). Bodies over their limit
//! get 413 and every error is `{"error": ...}`. Embedding and index searches run on
//! tokio's blocking pool; an ingest rebuilds the store on disk and then swaps it in, so
//! queries keep being answered meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};
use x0tta6bl4_identity::{NodeIdentity, Policy};
use x0tta6bl4_node::api_serve::{self, ApiCounters, Limits};
use x0tta6bl4_node::api_tls::Caller;
use x0tta6bl4_rag::advise::{advise, check_event};
use x0tta6bl4_rag::chunk::{ChunkConfig, Format};
use x0tta6bl4_rag::embed::Embedder;
use x0tta6bl4_rag::index::IndexSpec;
use x0tta6bl4_rag::store::{self, Document, Store, StoreError};

use crate::problem::{problem, Exit, ProblemExt};
use crate::rag_metrics::RagMetrics;

/// Largest query request body, in bytes.
pub const QUERY_BODY_BYTES_MAX: usize = 16 * 1024;
/// Most passages one request may ask for.
pub const K_MAX: usize = 100;
/// Most documents in one ingest request.
pub const DOCUMENTS_MAX: usize = 1000;
/// Longest document source name, in bytes.
pub const SOURCE_LEN_MAX: usize = 512;

/// `rag serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Store directory; created from --docs when it holds no store yet [default:
    /// $X0TTA6BL4_RAG_INDEX or ~/.local/share/x0tta6bl4/rag].
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// SVID directory of the service (svid.pem, svid_key.pem, bundle.pem), as written by
    /// `x0tta6bl4 ca issue`.
    #[arg(long, value_name = "DIR")]
    pub identity: PathBuf,
    /// Authorization policy (TOML, docs/identity.md): `api` rules decide who may call
    /// which endpoint [default: everyone in the trust domain may call everything].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Documents ingested when the store does not exist yet (repeatable): by default
    /// the project's own docs/ (runbooks, for /api/v1/rag/advise).
    #[arg(long = "docs", value_name = "PATH", default_value = "docs")]
    pub docs: Vec<PathBuf>,
    /// Index kind of a store created from --docs.
    #[arg(long, default_value = "int8", value_name = "KIND[:PARAMS]")]
    pub kind: String,
    /// Largest ingest request body, in bytes.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub ingest_bytes_max: usize,
    /// Most connections open at once.
    #[arg(long, default_value_t = 64)]
    pub connections_max: usize,
    /// Longest time to receive and answer one request (an ingest embeds every chunk).
    #[arg(long, default_value_t = 120_000, value_name = "MS")]
    pub request_timeout_ms: u64,
    /// Model directory [default: $X0TTA6BL4_MODEL_DIR or ~/.cache/x0tta6bl4/minilm].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
}

/// Everything a request needs.
struct Service {
    dir: PathBuf,
    store: RwLock<Arc<Store>>,
    embedder: Arc<Embedder>,
    policy: Policy,
    ingest_bytes_max: usize,
    request_timeout: Duration,
    /// One ingest at a time (each rewrites the store's files).
    ingesting: tokio::sync::Mutex<()>,
    metrics: RagMetrics,
}

impl Service {
    fn store(&self) -> Arc<Store> {
        self.store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type Shared = Arc<Service>;

/// An error answer: a status and `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Run `rag serve` until interrupted.
pub async fn serve(args: &ServeArgs, dir: PathBuf) -> anyhow::Result<ExitCode> {
    let identity = NodeIdentity::load(&args.identity).problem(
        Exit::Usage,
        "cannot load the service's SVID",
        args.identity.display(),
        "issue one with `x0tta6bl4 ca issue NAME --out DIR` and pass that DIR as --identity",
    )?;
    let policy = match &args.policy {
        Some(path) => Policy::load(path, identity.trust_domain()).problem(
            Exit::Usage,
            "invalid authorization policy",
            path.display(),
            "fix the rule named above (docs/identity.md describes the format)",
        )?,
        None => Policy::default_for(identity.trust_domain()),
    };
    if args.connections_max == 0 || args.ingest_bytes_max < QUERY_BODY_BYTES_MAX {
        return Err(problem(
            Exit::Usage,
            "invalid limits",
            format!(
                "--connections-max {} --ingest-bytes-max {}",
                args.connections_max, args.ingest_bytes_max
            ),
            format!("use at least 1 connection and at least {QUERY_BODY_BYTES_MAX} ingest bytes"),
        )
        .into());
    }
    let model = Arc::new(crate::rag_cmd::load_model(&args.model_dir)?);
    let store = open_or_create(&dir, args, &model).await?;
    let mut tls = (*identity.server_config().problem(
        Exit::Failure,
        "cannot build the TLS configuration",
        args.identity.display(),
        "check the SVID and key files",
    )?)
    .clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind(args.listen).await.problem(
        Exit::Failure,
        "cannot listen",
        args.listen,
        "choose a free --listen address",
    )?;
    let local = listener.local_addr()?;
    let counters = Arc::new(ApiCounters::default());
    let service = Arc::new(Service {
        dir,
        metrics: RagMetrics::new(counters.clone()),
        store: RwLock::new(Arc::new(store)),
        embedder: model,
        policy,
        ingest_bytes_max: args.ingest_bytes_max,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        ingesting: tokio::sync::Mutex::new(()),
    });
    service.metrics.set_store(&service.store());
    let limits = Limits {
        connections_max: args.connections_max,
        // The node API's default: bursts of new connections wait in the listen queue.
        accepts_per_second: x0tta6bl4_node::ApiConfig::default().accepts_per_second,
        header_timeout: Duration::from_secs(10),
        request_timeout: service.request_timeout,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    eprintln!(
        "rag serve: listening on https://{local} as {} (mutual TLS: callers present an SVID), {} chunks in {}",
        identity.spiffe_id(),
        service.store().manifest.chunks,
        service.dir.display()
    );
    let app = router(service);
    api_serve::serve(
        listener,
        app,
        Some(Arc::new(tls)),
        limits,
        counters,
        stop_rx,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Open the store in `dir`; when there is none yet, create it from `--docs`. A store
/// that exists but cannot be opened (corrupt, another version) is refused, never
/// rebuilt over.
async fn open_or_create(
    dir: &Path,
    args: &ServeArgs,
    model: &Arc<Embedder>,
) -> anyhow::Result<Store> {
    if !dir.join("manifest.json").exists() {
        let spec = crate::rag_cmd::spec(&args.kind)?;
        let (dir2, docs, model) = (dir.to_path_buf(), args.docs.clone(), model.clone());
        let report = tokio::task::spawn_blocking(move || {
            store::ingest(&dir2, &docs, &spec, &model, ChunkConfig::default(), &mut |l| {
                eprintln!("{l}")
            })
        })
        .await?
        .problem(
            Exit::Failure,
            "cannot create the store from --docs",
            dir.display(),
            "pass --docs with readable documents (e.g. the repository's docs/) or ingest first with `x0tta6bl4 rag ingest`",
        )?;
        eprintln!(
            "rag serve: ingested {} files ({} chunks) from {} into {}",
            report.files,
            report.total,
            args.docs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        );
    }
    Store::open(dir).problem(
        Exit::Failure,
        "cannot open the store",
        dir.display(),
        "see the cause below; a damaged store is left as it is (restore it, or ingest into a new directory)",
    )
}

fn router(service: Shared) -> Router {
    let ingest_limit = service.ingest_bytes_max;
    Router::new()
        .route(
            "/api/v1/rag/query",
            post(query).layer(DefaultBodyLimit::max(QUERY_BODY_BYTES_MAX)),
        )
        .route(
            "/api/v1/rag/ingest",
            post(ingest).layer(DefaultBodyLimit::max(ingest_limit)),
        )
        .route("/api/v1/rag/advise", get(advise_handler))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            observe,
        ))
        .with_state(service)
}

/// Time-limit each request (408 when over), and count it by endpoint and status.
async fn observe(
    State(service): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = api_serve::within_request_timeout(
        service.request_timeout,
        &service.metrics.counters,
        "or raise --request-timeout-ms",
        request,
        next,
    )
    .await;
    let endpoint = crate::rag_metrics::endpoint_label(&path);
    service
        .metrics
        .observe(endpoint, response.status().as_u16(), started.elapsed());
    response
}

/// The authorization policy's `api` check, for every endpoint (`/metrics` included).
async fn authorize(
    State(service): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<ConnectInfo<Caller>>()
        .and_then(|info| info.0.id.clone());
    let (method, path) = (request.method().as_str(), request.uri().path());
    let endpoint = crate::rag_metrics::endpoint_label(path);
    let Some(caller) = caller else {
        // The TLS configuration requires a client SVID; this is a guard, not a path.
        let message = format!("{method} {path} needs a client SVID (mutual TLS)");
        return ApiError(StatusCode::UNAUTHORIZED, message).into_response();
    };
    let verdict = service.policy.api(Some(&caller), method, path);
    service.metrics.decision(endpoint, verdict.allowed());
    if verdict.allowed() {
        return next.run(request).await;
    }
    let message = format!(
        "the authorization policy denies {method} {path} to {caller} ({})",
        verdict.reason
    );
    ApiError(StatusCode::FORBIDDEN, message).into_response()
}

/// A body extractor's rejection as a JSON error: 413 with the limit when too large.
fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes; send at most that"),
        );
    }
    ApiError(rejection.status(), rejection.body_text())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("invalid JSON body: {e}; expected {example}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    text: String,
    #[serde(default = "default_k")]
    k: usize,
}

fn default_k() -> usize {
    5
}

fn check_k(k: usize) -> Result<(), ApiError> {
    if k == 0 || k > K_MAX {
        return Err(bad_request(format!("k={k}: ask for 1 to {K_MAX} passages")));
    }
    Ok(())
}

/// A store or embedding failure while answering.
fn internal(e: StoreError) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(internal),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("worker failed: {e}"),
        )),
    }
}

async fn query(
    State(service): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|r| body_error(&r, QUERY_BODY_BYTES_MAX))?;
    let q: QueryBody = parse_json(&body, r#"{"text": "a node lost its peers", "k": 5}"#)?;
    if q.text.len() > crate::rag_cmd::MAX_QUERY_BYTES {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the query text is {} bytes, longer than {} bytes; shorten it",
                q.text.len(),
                crate::rag_cmd::MAX_QUERY_BYTES
            ),
        ));
    }
    if q.text.trim().is_empty() {
        return Err(bad_request(
            "`text` is empty: send the question to search for",
        ));
    }
    check_k(q.k)?;
    let (store, model) = (service.store(), service.embedder.clone());
    let answers = blocking(move || store.query(&model, &q.text, q.k)).await?;
    Ok(Json(json!({ "answers": answers })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestBody {
    documents: Vec<IngestDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestDocument {
    source: String,
    text: String,
    #[serde(default)]
    format: Option<String>,
}

fn document(i: usize, d: IngestDocument) -> Result<Document, ApiError> {
    let at = format!("documents[{i}] ({:?})", d.source);
    if d.source.trim().is_empty() || d.source.len() > SOURCE_LEN_MAX {
        return Err(bad_request(format!(
            "{at}: `source` must be 1 to {SOURCE_LEN_MAX} bytes (the name chunks are stored and replaced under)"
        )));
    }
    if d.text.contains('\0') {
        return Err(bad_request(format!(
            "{at}: `text` contains NUL bytes; send text, not binary data"
        )));
    }
    let format = match d.format.as_deref() {
        Some("markdown") => Format::Markdown,
        Some("rst") => Format::Rst,
        Some("html") => Format::Html,
        Some("text") => Format::Text,
        Some(other) => {
            return Err(bad_request(format!(
                "{at}: unknown format {other:?}: use markdown, rst, html or text"
            )))
        }
        None => Format::from_path(Path::new(&d.source)).ok_or_else(|| {
            bad_request(format!(
                "{at}: cannot tell the format from the source name: add \"format\": markdown, rst, html or text"
            ))
        })?,
    };
    Ok(Document {
        source: d.source,
        format,
        text: d.text,
    })
}

async fn ingest(
    State(service): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|r| body_error(&r, service.ingest_bytes_max))?;
    let example =
        r##"{"documents": [{"source": "runbooks/disk.md", "text": "# Disk full\n..."}]}"##;
    let parsed: IngestBody = parse_json(&body, example)?;
    if parsed.documents.is_empty() || parsed.documents.len() > DOCUMENTS_MAX {
        return Err(bad_request(format!(
            "{} documents: send 1 to {DOCUMENTS_MAX} per request",
            parsed.documents.len()
        )));
    }
    let documents = parsed
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| document(i, d))
        .collect::<Result<Vec<_>, _>>()?;
    let _one_at_a_time = service.ingesting.lock().await;
    let spec = IndexSpec::parse(&service.store().manifest.index)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (dir, model) = (service.dir.clone(), service.embedder.clone());
    let (report, reopened) = blocking(move || {
        let report =
            store::ingest_documents(&dir, documents, &spec, &model, ChunkConfig::default())?;
        Ok((report, Store::open(&dir)?))
    })
    .await?;
    service.metrics.set_store(&reopened);
    *service
        .store
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Arc::new(reopened);
    Ok(Json(serde_json::to_value(&report).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdviseParams {
    event: String,
    #[serde(default = "default_k")]
    k: usize,
}

async fn advise_handler(
    State(service): State<Shared>,
    params: Result<Query<AdviseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| {
        bad_request(format!(
            "{}; use ?event=NAME[&k=K], e.g. ?event=X0tta6bl4NeighbourDown",
            e.body_text()
        ))
    })?;
    check_event(&params.event)
        .map_err(|e| bad_request(format!("event {:?}: {e}", params.event)))?;
    check_k(params.k)?;
    let (store, model) = (service.store(), service.embedder.clone());
    let advice = blocking(move || advise(&store, &model, &params.event, params.k)).await?;
    Ok(Json(serde_json::to_value(&advice).unwrap_or_default()))
}

async fn metrics(State(service): State<Shared>) -> Response {
    match service.metrics.render() {
        Ok(text) => {
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(_) => ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed".into(),
        )
        .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {uri}: the guardian serves /api/v1/rag/query, /api/v1/rag/ingest, /api/v1/rag/advise and /metrics (docs/rag.md)"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{uri} does not take {method}: see docs/rag.md"),
    )
}
