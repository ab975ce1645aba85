//! The HTTP API (`docs/api.md` is the contract).
//!
//! GETs read the driver's snapshot and rings; `send`, `flows` and `topology` go to the
//! driver through a bounded command queue and wait for its reply. Errors are JSON
//! `{"error": ...}` saying what was wrong and how to fix it, axum's own rejections
//! (body too large, bad request line) included: [`json_errors`] rewrites them. Every
//! request, body included, is bounded by `[api] request_timeout_ms` ([`time_limit`]);
//! connections are bounded by [`crate::api_serve`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use x0tta6bl4_proto::{NodeName, SendError};

use crate::config::FLOW_INTERVAL_MS_MAX;
use crate::driver::{
    Command, RevokeError, FIRST_ATTACHED_CHANNEL, FLOW_TARGETS_MAX, MESSAGE_CHANNEL,
};
use crate::metrics::Metrics;
use crate::state::Shared;

/// How long a request waits for the driver's reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request body accepted, in bytes (the API's bodies are small JSON objects);
/// larger ones get `413 {"error": ...}`.
pub(crate) const BODY_BYTES_MAX: usize = 1 << 20;
/// Largest error body of axum's own rejections that [`json_errors`] rewrites.
const REJECTION_BYTES_MAX: usize = 16 * 1024;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub shared: Arc<Shared>,
    /// The configuration in force; reloads it from its file.
    pub reloader: Arc<crate::reload::Reloader>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    /// `[identity] api_mtls`: callers must present an SVID.
    pub mtls: bool,
    /// `[identity] api_open`: `/health/*` and `/metrics` answer without one.
    pub open: bool,
    /// `[api] request_timeout_ms`.
    pub request_timeout: Duration,
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/topology", get(topology))
        .route("/api/v1/send", post(send))
        .route("/api/v1/revocations", post(revoke).get(revoked))
        .route("/api/v1/config", get(config))
        .route("/api/v1/config/reload", post(reload))
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/channels/{channel}/send", post(channel_send))
        .route("/api/v1/channels/{channel}/messages", get(channel_messages))
        .route(
            "/api/v1/flows",
            post(start_flows).delete(stop_flows).get(flows),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_limit,
        ))
        .with_state(state)
}

/// Answer `408 {"error": ...}` when a request, body included, is not handled within
/// `[api] request_timeout_ms` (a client that sends its body slowly, or not at all).
async fn time_limit(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = state.request_timeout;
    let setting = "the limit is [api] request_timeout_ms";
    crate::api_serve::within_request_timeout(limit, &state.metrics.api, setting, request, next)
        .await
}

/// Turn an error answer that is not JSON (axum's rejections: body too large, missing
/// body, bad headers) into `{"error": TEXT}`, as docs/api.md promises; refuse a body
/// whose `Content-Length` is over [`BODY_BYTES_MAX`] before reading it.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // A body announced too large is refused before it is read.
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .filter(|length| *length > BODY_BYTES_MAX as u64);
    if let Some(length) = announced {
        let message = format!(
            "the request body is {length} bytes, larger than {BODY_BYTES_MAX} bytes; send at \
             most that"
        );
        return ApiError(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), REJECTION_BYTES_MAX).await;
    let text = body.map_or_else(
        |_| status.canonical_reason().unwrap_or("error").to_owned(),
        |bytes| String::from_utf8_lossy(&bytes).trim().to_owned(),
    );
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "{text}: the request body is larger than {BODY_BYTES_MAX} bytes; send at most that"
        ),
        _ => text,
    };
    ApiError(status, message).into_response()
}

/// The authorization policy's `api` check; `/health/*` and `/metrics` stay open.
async fn authorize(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let probe = path.starts_with("/health/") || path == "/metrics";
    let connection = request
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::api_tls::Caller>>();
    let caller = connection.and_then(|info| info.0.id.clone());
    if probe && (!state.mtls || state.open) {
        return next.run(request).await;
    }
    if state.mtls && caller.is_none() {
        let message = format!(
            "{} {path} needs a client certificate: this API requires mutual TLS with an SVID",
            request.method()
        );
        return ApiError(StatusCode::UNAUTHORIZED, message).into_response();
    }
    let method = request.method().as_str();
    if state.shared.policy.api(caller.as_ref(), method, path) {
        return next.run(request).await;
    }
    let who = caller.map_or("anonymous callers".to_owned(), |id| id.to_string());
    let message = format!("the authorization policy denies {method} {path} to {who}");
    ApiError(StatusCode::FORBIDDEN, message).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {uri}: see docs/api.md for the paths"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{uri} does not take {method}: see docs/api.md"),
    )
}

/// Liveness: `200` while the node can work, `503` once its own SVID has expired without
/// a renewal (no peer accepts its handshakes or link-state any more, and nothing in the
/// process can fix that: a restart re-runs the identity bootstrap).
async fn live(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let not_after = *state
        .shared
        .svid_not_after
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match svid_expired(not_after, std::time::SystemTime::now()) {
        None => (StatusCode::OK, Json(json!({ "status": "live" }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "svid-expired", "reason": reason })),
        ),
    }
}

/// Why a node whose SVID is valid until `not_after` cannot work at `now`, if it cannot.
fn svid_expired(not_after: std::time::SystemTime, now: std::time::SystemTime) -> Option<String> {
    let ago = now.duration_since(not_after).ok()?;
    Some(format!(
        "this node's SVID expired {} s ago and was not renewed, so peers refuse its links: \
         renew it ([identity] ca_server or source = \"workload-api\") or restart the node \
         with a new one (x0tta6bl4_svid_expiry_timestamp_seconds shows its expiry)",
        ago.as_secs()
    ))
}

async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let unwritten = state
        .shared
        .counters
        .state_writes_pending
        .load(std::sync::atomic::Ordering::Relaxed);
    if unwritten > 0 {
        let reason = format!(
            "{unwritten} accepted revocation(s) could not be written to revocations.jsonl and \
             are being retried: check the identity directory's disk space, permissions and \
             open-file limit (x0tta6bl4_state_write_failures_total counts the failures)"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        );
    }
    let up = state.shared.snapshot().neighbours_up();
    if state.shared.standalone || up > 0 {
        return (StatusCode::OK, Json(json!({ "ready": true })));
    }
    let reason = "no neighbour is up yet: check that `peers` are reachable or enable discovery \
                  (set standalone = true for a single-node mesh)";
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "ready": false, "reason": reason })),
    )
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match state.metrics.render() {
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

async fn status(State(state): State<ApiState>) -> Json<Value> {
    let shared = &state.shared;
    let messages_received = shared.messages().total;
    let snapshot = shared.snapshot();
    Json(json!({
        "name": shared.name,
        "spiffe_id": shared.spiffe_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": shared.started.elapsed().as_secs(),
        "neighbours_up": snapshot.neighbours_up(),
        "neighbours": snapshot.neighbours.len(),
        "routes": snapshot.routes.len(),
        "lsdb_entries": snapshot.lsdb_entries,
        "sequence": snapshot.sequence,
        "messages_received": messages_received,
    }))
}

/// `GET /api/v1/config`: the `[protocol]` settings in force.
async fn config(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "protocol": state.reloader.protocol() }))
}

/// `POST /api/v1/config/reload`: read the configuration file again and apply the
/// `[protocol]` settings that change at run time (as `SIGHUP` does).
async fn reload(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    use crate::reload::ReloadError;
    match state.reloader.reload().await {
        Ok(report) => {
            tracing::info!(
                applied = ?report.applied,
                restart_required = ?report.restart_required,
                "configuration reloaded through the API"
            );
            Ok(Json(json!(report)))
        }
        Err(error @ (ReloadError::NoFile | ReloadError::Invalid(_))) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("configuration not reloaded: {error}"),
        )),
        Err(error @ ReloadError::Unavailable(_)) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("configuration not reloaded: {error}"),
        )),
    }
}

async fn peers(State(state): State<ApiState>) -> Json<Value> {
    Json(json!(state.shared.snapshot().neighbours))
}

async fn routes(State(state): State<ApiState>) -> Json<Value> {
    Json(json!(state.shared.snapshot().routes))
}

async fn topology(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (reply, answer) = oneshot::channel();
    let topology = ask(&state, Command::Topology { reply }, answer).await?;
    Ok(Json(json!(topology)))
}

async fn messages(State(state): State<ApiState>) -> Json<Value> {
    let messages: Vec<_> = state.shared.messages().ring.iter().cloned().collect();
    Json(json!(messages))
}

/// `GET /api/v1/revocations`: the names of the nodes this node holds as revoked.
async fn revoked(State(state): State<ApiState>) -> Json<Value> {
    Json(json!(state.shared.policy.revoked()))
}

/// `POST /api/v1/revocations`: a CA revocation (JSON), verified and flooded.
async fn revoke(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let revocation: x0tta6bl4_identity::Revocation = parse_body(
        &body,
        r#"{"target", "issued_at", "signature"} from `x0tta6bl4 ca revoke`"#,
    )?;
    let (reply, answer) = oneshot::channel();
    let command = Command::Revoke {
        bytes: revocation.to_bytes(),
        reply,
    };
    let outcome = ask(&state, command, answer)
        .await?
        .map_err(|error| match error {
            RevokeError::Refused(e) => {
                ApiError(StatusCode::FORBIDDEN, format!("revocation refused: {e}"))
            }
            RevokeError::NotPersisted(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e),
        })?;
    Ok(Json(json!({ "result": outcome })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    to: NodeName,
    payload: String,
}

async fn send(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: SendRequest = parse_body(&body, r#"{"to": NAME, "payload": TEXT}"#)?;
    if !state.shared.policy.send(&state.shared.name, &request.to) {
        let message = format!(
            "the authorization policy denies sending from {} to {}",
            state.shared.name, request.to
        );
        return Err(ApiError(StatusCode::FORBIDDEN, message));
    }
    let (reply, answer) = oneshot::channel();
    let command = Command::Send {
        to: request.to,
        channel: MESSAGE_CHANNEL,
        payload: request.payload.into_bytes(),
        reply,
    };
    let receipt = ask(&state, command, answer).await?.map_err(send_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": receipt.id, "next_hop": receipt.next_hop })),
    ))
}

/// An attached channel (2 to 255) from the path, or `400` saying which channels are.
fn attached_channel(channel: &str) -> Result<u8, ApiError> {
    channel
        .parse::<u8>()
        .ok()
        .filter(|c| *c >= FIRST_ATTACHED_CHANNEL)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "channel {channel} is not an attached channel: use {FIRST_ATTACHED_CHANNEL} to \
                 255 (channel 0 is /api/v1/send and /api/v1/messages, 1 the probe flows)"
            ))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelSendQuery {
    to: NodeName,
}

/// `POST /api/v1/channels/{channel}/send?to=NAME`: the raw body is the payload.
async fn channel_send(
    State(state): State<ApiState>,
    Path(channel): Path<String>,
    query: Result<Query<ChannelSendQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let channel = attached_channel(&channel)?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("{e}: give the destination as ?to=NODE_NAME"))
    })?;
    if !state.shared.policy.send(&state.shared.name, &query.to) {
        let message = format!(
            "the authorization policy denies sending from {} to {}",
            state.shared.name, query.to
        );
        return Err(ApiError(StatusCode::FORBIDDEN, message));
    }
    let (reply, answer) = oneshot::channel();
    let command = Command::Send {
        to: query.to,
        channel,
        payload: body.to_vec(),
        reply,
    };
    let receipt = ask(&state, command, answer).await?.map_err(send_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": receipt.id, "next_hop": receipt.next_hop })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelMessagesQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /api/v1/channels/{channel}/messages?after=SEQ&wait_ms=MS`: the deliveries on
/// the channel after `SEQ`, waiting up to `MS` (at most half the request timeout) for
/// the first one.
async fn channel_messages(
    State(state): State<ApiState>,
    Path(channel): Path<String>,
    query: Result<Query<ChannelMessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let channel = attached_channel(&channel)?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("{e}: the parameters are ?after=SEQ&wait_ms=MS"))
    })?;
    let wait = Duration::from_millis(query.wait_ms).min(state.request_timeout / 2);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the check, so a delivery between the check and the wait
        // still wakes this request.
        let arrived = state.shared.app_arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let (messages, last, dropped) = {
            let app = state.shared.app();
            let messages: Vec<Value> = app
                .ring
                .iter()
                .filter(|m| m.seq > query.after && m.channel == channel)
                .map(|m| {
                    json!({
                        "seq": m.seq,
                        "from": m.from,
                        "hops": m.hops,
                        "payload_hex": hex::encode(&m.payload),
                    })
                })
                .collect();
            (messages, app.last_seq, app.dropped)
        };
        if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(
                json!({ "messages": messages, "last_seq": last, "dropped": dropped }),
            ));
        }
        let _ = tokio::time::timeout_at(deadline, arrived).await;
    }
}

fn send_error(error: SendError) -> ApiError {
    let status = match error {
        SendError::UnknownDestination(_) => StatusCode::NOT_FOUND,
        SendError::NoRoute(_) => StatusCode::SERVICE_UNAVAILABLE,
        SendError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    ApiError(status, error.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowsRequest {
    targets: Vec<NodeName>,
    #[serde(default = "default_flow_interval_ms")]
    interval_ms: u64,
}

fn default_flow_interval_ms() -> u64 {
    10
}

async fn start_flows(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: FlowsRequest = parse_body(&body, r#"{"targets": [NAME...], "interval_ms": 10}"#)?;
    if !(1..=FLOW_INTERVAL_MS_MAX).contains(&request.interval_ms) {
        let message = format!(
            "interval_ms = {}: use 1 to {FLOW_INTERVAL_MS_MAX}",
            request.interval_ms
        );
        return Err(ApiError::bad_request(message));
    }
    let mut targets = request.targets;
    targets.sort();
    targets.dedup();
    if targets.len() > FLOW_TARGETS_MAX {
        let message = format!(
            "{} targets: at most {FLOW_TARGETS_MAX} flows per node",
            targets.len()
        );
        return Err(ApiError::bad_request(message));
    }
    let (reply, answer) = oneshot::channel();
    let command = Command::StartFlows {
        targets,
        interval_ms: request.interval_ms,
        reply,
    };
    let flows = ask(&state, command, answer).await?;
    Ok(Json(json!({ "flows": flows })))
}

async fn stop_flows(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (reply, answer) = oneshot::channel();
    let flows = ask(&state, Command::StopFlows { reply }, answer).await?;
    Ok(Json(json!({ "flows": flows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowsQuery {
    since_us: Option<u64>,
}

#[derive(Serialize)]
struct FlowArrivals {
    source: NodeName,
    arrivals_us: Vec<u64>,
}

async fn flows(
    State(state): State<ApiState>,
    query: Result<Query<FlowsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("{}: use ?since_us=MICROSECONDS", e.body_text()))
    })?;
    let since_us = query.since_us;
    let flows = state.shared.flows();
    let received: Vec<FlowArrivals> = flows
        .received
        .iter()
        .map(|(source, ring)| {
            let start = since_us.map_or(0, |since| ring.partition_point(|&t| t <= since));
            FlowArrivals {
                source: source.clone(),
                arrivals_us: ring.range(start..).copied().collect(),
            }
        })
        .collect();
    let (interval_ms, sent, unroutable) = (flows.interval_ms, flows.sent, flows.unroutable);
    drop(flows);
    Ok(Json(
        json!({ "interval_ms": interval_ms, "sent": sent, "unroutable": unroutable, "received": received }),
    ))
}

/// Parse a JSON body whatever its content type; a 400 says what was wrong.
fn parse_body<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}; expected {expected}")))
}

/// Hand `command` to the driver and wait for its answer.
async fn ask<T>(
    state: &ApiState,
    command: Command,
    answer: oneshot::Receiver<T>,
) -> Result<T, ApiError> {
    let unavailable = |message: &str| ApiError(StatusCode::SERVICE_UNAVAILABLE, message.to_owned());
    state
        .commands
        .try_send(command)
        .map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                unavailable("the node is busy (command queue full): retry shortly")
            }
            mpsc::error::TrySendError::Closed(_) => unavailable("the node is shutting down"),
        })?;
    match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(unavailable("the node is shutting down")),
        Err(_) => Err(unavailable(
            "the node did not answer within 2 s: it is overloaded, retry shortly",
        )),
    }
}

#[cfg(test)]
mod liveness_tests {
    use super::svid_expired;
    use std::time::{Duration, SystemTime};

    #[test]
    fn live_until_the_svid_expires() {
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            svid_expired(not_after, not_after - Duration::from_secs(1)),
            None
        );
        let reason = svid_expired(not_after, not_after + Duration::from_secs(90)).unwrap();
        assert!(reason.contains("expired 90 s ago"), "{reason}");
        assert!(reason.contains("ca_server"), "{reason}");
    }
}
