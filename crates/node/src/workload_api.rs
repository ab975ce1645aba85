//! The SPIFFE Workload API (X.509-SVID profile): a client that fetches and follows the
//! node's SVID (`[identity] source = "workload-api"`), and a server backed by our CA
//! (`x0tta6bl4 ca workload-api`) for operators without SPIRE and for tests.
//!
//! The API is gRPC over a unix socket: `SpiffeWorkloadAPI.FetchX509SVID` is
//! server-streaming, every request carries the metadata `workload.spiffe.io: true`
//! (a server refuses a request without it with `InvalidArgument`), and each response
//! carries the SVIDs (the first is the default), their keys, the trust bundle and the
//! federated bundles keyed by the foreign trust domain's SPIFFE ID. The server also
//! streams `FetchX509Bundles` (every trust domain's CAs, keyed by SPIFFE ID), and
//! accepts gRPC-core clients' percent-encoded socket path as `:authority`
//! (see `grpc_authority.rs`). The messages below
//! follow the specification's `workload.proto` (SPIFFE Workload API, X.509-SVID
//! profile) field for field, tags included (a unit test pins the wire bytes); they are
//! written by hand with prost derives so that no `protoc` or proto file is needed.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::codegen::http;
use x0tta6bl4_identity::{CertificateAuthority, FederatedBundles, NodeIdentity, TrustDomain};
use x0tta6bl4_proto::NodeName;

/// The gRPC path of `FetchX509SVID` (the service has no protobuf package).
pub const FETCH_X509_SVID_PATH: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
/// The gRPC path of `FetchX509Bundles`, served by [`WorkloadApiServer`] too.
pub const FETCH_X509_BUNDLES_PATH: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";
/// The metadata key every Workload API request must carry, with value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The environment variable naming the Workload API endpoint (SPIFFE convention).
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";
/// Largest Workload API response accepted, in bytes.
pub const RESPONSE_LEN_MAX: usize = 4 * 1024 * 1024;
/// How long connecting and the first response may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `X509SVIDRequest`: no parameters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// The workload's SVIDs; the first is the default.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// ASN.1 DER CRLs.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Foreign trust domains' CAs (concatenated DER), keyed by the domain's SPIFFE ID.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: std::collections::HashMap<String, Vec<u8>>,
}

/// `X509SVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    /// The SVID's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The certificate chain, leaf first, concatenated DER.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// The private key, unencrypted PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// The trust domain's CAs, concatenated DER.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// An operator-given hint to tell several SVIDs apart.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: no parameters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`: every trust domain's CAs, the workload's own included.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// ASN.1 DER CRLs.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// CAs (concatenated DER), keyed by the trust domain's SPIFFE ID.
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: std::collections::HashMap<String, Vec<u8>>,
}

impl X509BundlesResponse {
    /// The bundles an SVID response carries: the default SVID's trust domain and the
    /// federated ones.
    pub fn of(response: &X509SvidResponse) -> X509BundlesResponse {
        let mut bundles = response.federated_bundles.clone();
        if let Some(svid) = response.svids.first() {
            let domain = svid
                .spiffe_id
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            bundles.insert(format!("spiffe://{domain}"), svid.bundle.clone());
        }
        X509BundlesResponse {
            crl: response.crl.clone(),
            bundles,
        }
    }
}

/// The socket path of a Workload API endpoint: `unix:///PATH`, `unix:PATH` (the SPIFFE
/// forms) or a bare absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if path.is_empty() || !path.starts_with('/') {
        return Err(format!(
            "{endpoint:?} is not a unix socket endpoint: write unix:///PATH/TO/agent.sock \
             (TCP endpoints are not supported)"
        ));
    }
    Ok(PathBuf::from(path))
}

/// The configured endpoint, or `SPIFFE_ENDPOINT_SOCKET`.
pub fn endpoint(configured: Option<&str>) -> Result<String, String> {
    match configured {
        Some(endpoint) => Ok(endpoint.to_owned()),
        None => std::env::var(ENDPOINT_SOCKET_ENV).map_err(|_| {
            format!(
                "no Workload API endpoint: set [identity] workload_api_socket or the \
                 {ENDPOINT_SOCKET_ENV} environment variable"
            )
        }),
    }
}

/// Concatenated DER certificates, split into certificates.
fn split_der(bytes: &[u8], what: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut rest = bytes;
    let mut certificates = Vec::new();
    while !rest.is_empty() {
        let length = der_length(rest).ok_or_else(|| {
            format!(
                "{what}: not concatenated DER certificates (at byte {})",
                bytes.len() - rest.len()
            )
        })?;
        let (certificate, tail) = rest.split_at(length);
        certificates.push(certificate.to_vec());
        rest = tail;
    }
    Ok(certificates)
}

/// The total length of the DER SEQUENCE at the start of `bytes`, if it is one that fits.
fn der_length(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 2 || bytes[0] != 0x30 {
        return None;
    }
    let (header, length) = match bytes[1] {
        short @ 0..=0x7f => (2, usize::from(short)),
        long @ 0x81..=0x84 => {
            let count = usize::from(long & 0x7f);
            let digits = bytes.get(2..2 + count)?;
            let length = digits
                .iter()
                .fold(0usize, |acc, &d| (acc << 8) | usize::from(d));
            (2 + count, length)
        }
        _ => return None,
    };
    let total = header.checked_add(length)?;
    (total <= bytes.len()).then_some(total)
}

type Der = rustls::pki_types::CertificateDer<'static>;

fn certificates(bytes: &[u8], what: &str) -> Result<Vec<Der>, String> {
    Ok(split_der(bytes, what)?.into_iter().map(Der::from).collect())
}

/// The node identity a response carries: its first (default) SVID, with the federated
/// bundles. `dir` is the node's state directory; `source` names the endpoint in errors.
pub fn identity_of(
    response: &X509SvidResponse,
    dir: &Path,
    source: &str,
) -> anyhow::Result<NodeIdentity> {
    let svid = response.svids.first().with_context(|| {
        format!("{source}: the Workload API answered with no SVID for this workload (is it registered?)")
    })?;
    let chain = certificates(&svid.x509_svid, "x509_svid").map_err(anyhow::Error::msg)?;
    let bundle = certificates(&svid.bundle, "bundle").map_err(anyhow::Error::msg)?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(svid.x509_svid_key.clone());
    let identity = NodeIdentity::from_der(dir, source, chain, key, bundle)?;
    if identity.spiffe_id().to_string() != svid.spiffe_id {
        anyhow::bail!(
            "{source}: the SVID's certificate names {} but its spiffe_id field says {:?}",
            identity.spiffe_id(),
            svid.spiffe_id
        );
    }
    let mut federated = Vec::with_capacity(response.federated_bundles.len());
    for (key, der) in &response.federated_bundles {
        // The specification keys by the domain's SPIFFE ID; accept a bare name too.
        let name = key.strip_prefix("spiffe://").unwrap_or(key);
        let domain = TrustDomain::new(name).map_err(|e| {
            anyhow::anyhow!("{source}: federated bundle key {key:?}: trust domain {e}")
        })?;
        federated.push((domain, certificates(der, key).map_err(anyhow::Error::msg)?));
    }
    let federated = FederatedBundles::from_der(federated, source)?;
    Ok(identity.with_federation(&federated)?)
}

type Stream_ = tonic::codec::Streaming<X509SvidResponse>;

/// An open `FetchX509SVID` stream.
pub struct WorkloadClient {
    endpoint: String,
    stream: Stream_,
}

impl WorkloadClient {
    /// Connect to `endpoint` and open the `FetchX509SVID` stream.
    pub async fn connect(endpoint: &str) -> anyhow::Result<WorkloadClient> {
        let path = socket_path(endpoint).map_err(anyhow::Error::msg)?;
        let opened = tokio::time::timeout(FETCH_TIMEOUT, open_stream(&path)).await;
        let stream = opened
            .map_err(|_| anyhow::anyhow!("no answer within {FETCH_TIMEOUT:?}"))
            .and_then(|opened| opened)
            .with_context(|| format!("SPIFFE Workload API at {endpoint}"))?;
        Ok(WorkloadClient {
            endpoint: endpoint.to_owned(),
            stream,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next response; `None` when the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<X509SvidResponse>> {
        let endpoint = &self.endpoint;
        self.stream
            .message()
            .await
            .map_err(|status| status_error(endpoint, &status))
    }
}

fn status_error(endpoint: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "SPIFFE Workload API at {endpoint}: {:?}: {}",
        status.code(),
        status.message()
    )
}

async fn open_stream(path: &Path) -> anyhow::Result<Stream_> {
    if !path.exists() {
        anyhow::bail!(
            "socket {} does not exist: is the SPIRE agent (or `x0tta6bl4 ca workload-api`) \
             running, and is the socket mounted here?",
            path.display()
        );
    }
    let socket = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://workload.api")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(RESPONSE_LEN_MAX);
    grpc.ready()
        .await
        .context("the gRPC channel is not ready")?;
    let mut request = tonic::Request::new(X509SvidRequest {});
    request.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let codec = tonic::codec::ProstCodec::<X509SvidRequest, X509SvidResponse>::default();
    let path = http::uri::PathAndQuery::from_static(FETCH_X509_SVID_PATH);
    let response = grpc
        .server_streaming(request, path, codec)
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?;
    Ok(response.into_inner())
}

// ----- server -----

/// What the server streams: the current response, replaced at every re-issue.
type Current = watch::Receiver<Option<Result<X509SvidResponse, tonic::Status>>>;

/// A spec-following Workload API server that hands every caller an SVID of node `name`
/// issued by the CA in `dir`, and re-issues it at half its life.
#[derive(Clone)]
pub struct WorkloadApiServer {
    current: Current,
}

/// Settings of [`serve`].
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The CA directory (`x0tta6bl4 ca init`).
    pub ca_dir: PathBuf,
    /// The node name of the SVIDs handed out.
    pub name: NodeName,
    /// Their lifetime; each is re-issued at half of it.
    pub ttl: Duration,
    /// Federated bundles handed out: trust domain → PEM file.
    pub federated: Vec<(TrustDomain, PathBuf)>,
}

/// Serve the Workload API on the unix socket `socket` until `shutdown` completes
/// ([`bind`], then [`BoundServer::run`]).
pub async fn serve(
    socket: &Path,
    settings: ServerSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    bind(socket, settings).await?.run(shutdown).await
}

/// A Workload API server whose first SVID is issued and whose socket is listening.
pub struct BoundServer {
    socket: PathBuf,
    listener: tokio::net::UnixListener,
    issuer: Issuer,
    due: SystemTime,
    sender: watch::Sender<Option<Result<X509SvidResponse, tonic::Status>>>,
    current: Current,
}

/// Check the settings, issue the first SVID and listen on `socket` (a stale socket
/// file is replaced; one a server still answers on is refused).
pub async fn bind(socket: &Path, settings: ServerSettings) -> anyhow::Result<BoundServer> {
    let issuer = Issuer::new(settings)?;
    let (first, due) = issuer.response()?;
    let (sender, current) = watch::channel(Some(Ok(first)));
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            anyhow::bail!(
                "{} is in use: another server answers on it (stop it, or choose another --socket)",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("cannot replace the stale socket {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on unix socket {}", socket.display()))?;
    Ok(BoundServer {
        socket: socket.to_path_buf(),
        listener,
        issuer,
        due,
        sender,
        current,
    })
}

impl BoundServer {
    /// Serve until `shutdown` completes; the socket file is removed at the end.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tracing::info!(socket = %self.socket.display(), "SPIFFE Workload API serving");
        let reissue = tokio::spawn(self.issuer.run(self.due, self.sender));
        // Every connection goes through the `:authority` relay (see grpc_authority.rs).
        let (accepted, incoming) = tokio::sync::mpsc::channel(16);
        let listener = self.listener;
        let accept = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(error) => {
                        tracing::warn!(%error, "Workload API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (inner, server) = match tokio::net::UnixStream::pair() {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "Workload API: no socket pair for a connection");
                        continue;
                    }
                };
                tokio::spawn(crate::grpc_authority::relay(client, inner));
                if accepted
                    .send(Ok::<_, std::io::Error>(server))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
        let served = tonic::transport::Server::builder()
            .add_service(WorkloadApiServer {
                current: self.current,
            })
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        reissue.abort();
        accept.abort();
        let _ = std::fs::remove_file(&self.socket);
        served.context("Workload API server")
    }
}

struct Issuer {
    ca_dir: PathBuf,
    name: NodeName,
    ttl: Duration,
    federated: std::collections::HashMap<String, Vec<u8>>,
}

impl Issuer {
    fn new(settings: ServerSettings) -> anyhow::Result<Issuer> {
        // Validate first: the errors name the file and the problem.
        FederatedBundles::load(&settings.federated)?;
        let mut federated = std::collections::HashMap::new();
        for (domain, path) in &settings.federated {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let der: Vec<u8> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{}: not PEM certificates", path.display()))?
                .iter()
                .flat_map(|c| c.to_vec())
                .collect();
            federated.insert(domain.id().to_string(), der);
        }
        Ok(Issuer {
            ca_dir: settings.ca_dir,
            name: settings.name,
            ttl: settings.ttl,
            federated,
        })
    }

    /// A response with a freshly issued SVID, and when to re-issue it.
    fn response(&self) -> anyhow::Result<(X509SvidResponse, SystemTime)> {
        // Re-opened each time, so a root rotation in the CA directory is followed.
        let ca = CertificateAuthority::open(&self.ca_dir)?;
        let issued = ca.issue_node_der(&self.name, self.ttl)?;
        let due = SystemTime::now() + self.ttl / 2;
        let concat = |certs: &[Der]| certs.iter().flat_map(|c| c.to_vec()).collect();
        let svid = X509Svid {
            spiffe_id: issued.spiffe_id.to_string(),
            x509_svid: concat(&issued.chain),
            x509_svid_key: issued.key.secret_pkcs8_der().to_vec(),
            bundle: concat(&issued.bundle),
            hint: String::new(),
        };
        let response = X509SvidResponse {
            svids: vec![svid],
            crl: vec![],
            federated_bundles: self.federated.clone(),
        };
        Ok((response, due))
    }

    /// Re-issue at every half-life; a failure is streamed as `Unavailable` and retried.
    async fn run(
        self,
        mut due: SystemTime,
        sender: watch::Sender<Option<Result<X509SvidResponse, tonic::Status>>>,
    ) {
        loop {
            let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(wait).await;
            match self.response() {
                Ok((response, next)) => {
                    tracing::info!(name = %self.name, "SVID re-issued at half its life");
                    due = next;
                    sender.send_replace(Some(Ok(response)));
                }
                Err(error) => {
                    tracing::error!(%error, "cannot re-issue the SVID; retrying in 1 s");
                    due = SystemTime::now() + Duration::from_secs(1);
                }
            }
        }
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<X509SvidResponse, tonic::Status>> + Send + 'static>>;

struct FetchX509Svid(WorkloadApiServer);

impl tonic::server::ServerStreamingService<X509SvidRequest> for FetchX509Svid {
    type Response = X509SvidResponse;
    type ResponseStream = ResponseStream;
    type Future = std::future::Ready<Result<tonic::Response<ResponseStream>, tonic::Status>>;

    /// Check the security header, then stream the current response and every re-issue.
    fn call(&mut self, request: tonic::Request<X509SvidRequest>) -> Self::Future {
        if let Some(status) = refusal(request.metadata()) {
            return std::future::ready(Err(status));
        }
        let updates = tokio_stream::wrappers::WatchStream::new(self.0.current.clone());
        let stream: ResponseStream =
            Box::pin(tokio_stream::StreamExt::filter_map(updates, |update| {
                update
            }));
        std::future::ready(Ok(tonic::Response::new(stream)))
    }
}

type BundlesStream =
    Pin<Box<dyn Stream<Item = Result<X509BundlesResponse, tonic::Status>> + Send + 'static>>;

struct FetchX509Bundles(WorkloadApiServer);

impl tonic::server::ServerStreamingService<X509BundlesRequest> for FetchX509Bundles {
    type Response = X509BundlesResponse;
    type ResponseStream = BundlesStream;
    type Future = std::future::Ready<Result<tonic::Response<BundlesStream>, tonic::Status>>;

    /// Check the security header, then stream the bundles of every (re-)issue.
    fn call(&mut self, request: tonic::Request<X509BundlesRequest>) -> Self::Future {
        if let Some(status) = refusal(request.metadata()) {
            return std::future::ready(Err(status));
        }
        let updates = tokio_stream::wrappers::WatchStream::new(self.0.current.clone());
        let stream: BundlesStream = Box::pin(tokio_stream::StreamExt::filter_map(
            updates,
            |update| match update {
                Some(Ok(response)) => Some(Ok(X509BundlesResponse::of(&response))),
                Some(Err(status)) => Some(Err(status)),
                None => None,
            },
        ));
        std::future::ready(Ok(tonic::Response::new(stream)))
    }
}

/// The specification's rule: a request without `workload.spiffe.io: true` is refused
/// (the status to answer with).
fn refusal(metadata: &tonic::metadata::MetadataMap) -> Option<tonic::Status> {
    let header = metadata.get(SECURITY_HEADER);
    if header.is_none_or(|value| value != "true") {
        tracing::info!("Workload API request refused: no `workload.spiffe.io: true` header");
        return Some(tonic::Status::invalid_argument(
            "security header missing from request",
        ));
    }
    None
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for WorkloadApiServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.uri().path() {
            FETCH_X509_SVID_PATH => {
                let service = FetchX509Svid(self.clone());
                Box::pin(async move {
                    let codec =
                        tonic::codec::ProstCodec::<X509SvidResponse, X509SvidRequest>::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.server_streaming(service, request).await)
                })
            }
            FETCH_X509_BUNDLES_PATH => {
                let service = FetchX509Bundles(self.clone());
                Box::pin(async move {
                    let codec = tonic::codec::ProstCodec::<
                        X509BundlesResponse,
                        X509BundlesRequest,
                    >::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.server_streaming(service, request).await)
                })
            }
            other => {
                let status = tonic::Status::unimplemented(format!(
                    "{other} is not served here: only {FETCH_X509_SVID_PATH} and \
                     {FETCH_X509_BUNDLES_PATH} (X.509 SVIDs; no JWT SVIDs)"
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

impl tonic::server::NamedService for WorkloadApiServer {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

/// Keep the node's identity current from the stream: every response builds a new
/// identity, handed to `apply` when it names the node `expected` still (a node cannot
/// change its name while running); a broken stream is reopened with backoff.
pub(crate) async fn follow(
    mut client: WorkloadClient,
    expected: x0tta6bl4_identity::SpiffeId,
    dir: PathBuf,
    apply: impl Fn(NodeIdentity) + Send,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let next = tokio::select! {
            _ = crate::state::stopped(&mut stop) => return,
            next = client.next() => next,
        };
        let failure = match next {
            Ok(Some(response)) => match identity_of(&response, &dir, client.endpoint()) {
                Ok(identity) if identity.spiffe_id() != &expected => {
                    tracing::warn!(found = %identity.spiffe_id(), %expected, "Workload API update refused: it names another workload; restart the node to take a new name");
                    continue;
                }
                Ok(identity) => {
                    retry = Duration::from_secs(1);
                    apply(identity);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "Workload API update refused; the current SVID stays");
                    continue;
                }
            },
            Ok(None) => anyhow::anyhow!("the server closed the stream"),
            Err(error) => error,
        };
        tracing::warn!(error = %format!("{failure:#}"), ?retry, "Workload API stream lost; reconnecting");
        loop {
            tokio::select! {
                _ = crate::state::stopped(&mut stop) => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(Duration::from_secs(30));
            match WorkloadClient::connect(client.endpoint()).await {
                Ok(reopened) => {
                    client = reopened;
                    break;
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "Workload API reconnect failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn messages_use_the_field_numbers_of_the_specification() {
        let svid = X509Svid {
            spiffe_id: "i".into(),
            x509_svid: vec![1],
            x509_svid_key: vec![2],
            bundle: vec![3],
            hint: "h".into(),
        };
        // (field number << 3) | 2 (length-delimited): 1 -> 0x0a, 2 -> 0x12, ... 5 -> 0x2a.
        let expected = [
            0x0a, 1, b'i', 0x12, 1, 1, 0x1a, 1, 2, 0x22, 1, 3, 0x2a, 1, b'h',
        ];
        assert_eq!(svid.encode_to_vec(), expected);
        let response = X509SvidResponse {
            svids: vec![],
            crl: vec![vec![9]],
            federated_bundles: [("spiffe://p".to_owned(), vec![7])].into(),
        };
        // crl = 2; federated_bundles = 3, an entry {key = 1, value = 2}.
        let expected = [
            0x12, 1, 9, 0x1a, 15, 0x0a, 10, b's', b'p', b'i', b'f', b'f', b'e', b':', b'/', b'/',
            b'p', 0x12, 1, 7,
        ];
        assert_eq!(response.encode_to_vec(), expected);
        assert_eq!(X509SvidResponse::decode(&expected[..]).unwrap(), response);
    }

    #[test]
    fn endpoints_follow_the_spiffe_forms() {
        for (endpoint, path) in [
            ("unix:///run/spire/agent.sock", "/run/spire/agent.sock"),
            ("unix:/run/spire/agent.sock", "/run/spire/agent.sock"),
            ("/tmp/a.sock", "/tmp/a.sock"),
        ] {
            assert_eq!(socket_path(endpoint).unwrap(), Path::new(path));
        }
        for bad in ["tcp://127.0.0.1:1", "unix://", "unix:relative.sock", ""] {
            let error = socket_path(bad).unwrap_err();
            assert!(error.contains("unix:///PATH"), "{bad}: {error}");
        }
    }

    #[test]
    fn concatenated_der_is_split_and_garbage_refused() {
        let one = [0x30, 3, 1, 2, 3];
        let long = {
            let mut v = vec![0x30, 0x81, 200];
            v.extend([0u8; 200]);
            v
        };
        let joined: Vec<u8> = one.iter().chain(long.iter()).copied().collect();
        let parts = split_der(&joined, "x").unwrap();
        assert_eq!(parts, vec![one.to_vec(), long.clone()]);
        for bad in [
            &[0x31, 1, 0][..],
            &[0x30, 5, 1],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            let error = split_der(bad, "bundle").unwrap_err();
            assert!(error.starts_with("bundle: not concatenated DER"), "{error}");
        }
        assert!(split_der(&[], "x").unwrap().is_empty());
    }

    #[test]
    fn a_response_without_an_svid_is_refused() {
        let error = identity_of(&X509SvidResponse::default(), Path::new("/x"), "unix:///s")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no SVID"), "{error}");
        let garbage = X509SvidResponse {
            svids: vec![X509Svid {
                x509_svid: vec![0x30, 1, 0],
                ..X509Svid::default()
            }],
            ..X509SvidResponse::default()
        };
        let error = format!(
            "{:#}",
            identity_of(&garbage, Path::new("/x"), "unix:///s").unwrap_err()
        );
        assert!(error.contains("unix:///s"), "{error}");
    }
}
