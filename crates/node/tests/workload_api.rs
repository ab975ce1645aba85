//! SPIFFE Workload API mode against our spec-following Workload API server, over a real
//! unix socket: a node gets its SVID from the API, links with mutual TLS to a node
//! whose SVID is a file, and follows the re-issued SVIDs without losing a message; the
//! security header rule; a clear error when the socket is missing.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, issue, Api};
use tokio::sync::oneshot;
use x0tta6bl4_node::workload_api::{self, ServerSettings, X509SvidRequest, X509SvidResponse};
use x0tta6bl4_node::{load_config, NodeConfig, NodeHandle};
use x0tta6bl4_proto::NodeName;

/// Serve the Workload API for node `name` from the CA in `dir/ca` on `dir/NAME.sock`;
/// returns the socket and the sender that stops the server.
async fn server(dir: &Path, name: &str, ttl: Duration) -> (PathBuf, oneshot::Sender<()>) {
    let socket = dir.join(format!("{name}.sock"));
    let settings = ServerSettings {
        ca_dir: dir.join("ca"),
        name: NodeName::new(name).unwrap(),
        ttl,
        federated: vec![],
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let path = socket.clone();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        workload_api::serve(&path, settings, shutdown)
            .await
            .unwrap();
    });
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (socket, stop)
}

/// Node `name` in Workload API mode, its state in `dir/NAME-state`.
fn api_config(dir: &Path, name: &str, endpoint: &str, peers: &[SocketAddr]) -> NodeConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let path = common::write_config(dir, name, any, any, peers);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("dir = \"{name}\"\n"),
        &format!(
            "dir = \"{name}-state\"\nsource = \"workload-api\"\nworkload_api_socket = \"{endpoint}\"\n"
        ),
    );
    std::fs::write(&path, text).unwrap();
    load_config(&path).unwrap()
}

async fn svid_expiry(api: &Api) -> f64 {
    let metrics = api.text("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("x0tta6bl4_svid_expiry_timestamp_seconds"))
        .expect("expiry metric");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn handshakes_ok(api: &Api) -> String {
    let metrics = api.text("/metrics").await;
    metrics
        .lines()
        .find(|l| l.starts_with("x0tta6bl4_handshakes_total{result=\"ok\"}"))
        .unwrap_or_default()
        .to_owned()
}

/// SVIDs of 4 s, re-issued every 2 s by the server and streamed to the node: the node
/// starts from the API, links to a files-mode peer, keeps that link and loses no message
/// through two re-issues, and a node that joins later links with the new SVID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_from_the_workload_api_links_and_follows_reissued_svids() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["b", "c"]);
    let (socket, stop) = server(dir.path(), "a", Duration::from_secs(4)).await;
    let endpoint = format!("unix://{}", socket.display());
    let a = NodeHandle::start(api_config(dir.path(), "a", &endpoint, &[]))
        .await
        .unwrap();
    assert_eq!(a.name().as_str(), "a");
    let b = NodeHandle::start(common::config(dir.path(), "b", &[a.quic_addr()]))
        .await
        .unwrap();
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    eventually(Duration::from_secs(10), "route b -> a", || async {
        api_b.route("a").await.is_some()
    })
    .await;
    let first_expiry = svid_expiry(&api_a).await;
    let handshakes_before = handshakes_ok(&api_b).await;

    let sent = api_b.send_steadily("a", Duration::from_millis(4500)).await;
    api_a.wait_delivered(sent).await;
    let moved = svid_expiry(&api_a).await - first_expiry;
    assert!(moved >= 2.0, "the node did not take the re-issued SVIDs");
    println!("{sent} messages through SVID re-issues, all delivered; SVID expiry moved {moved} s");
    assert_eq!(
        handshakes_ok(&api_b).await,
        handshakes_before,
        "the link was re-established during rotation"
    );

    // The first SVID has expired: a node that joins now meets only the re-issued one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = NodeHandle::start(common::config(dir.path(), "c", &[a.quic_addr()]))
        .await
        .unwrap();
    let api_c = Api::new(&c);
    eventually(Duration::from_secs(10), "c links to a", || async {
        api_c.route("a").await.is_some()
    })
    .await;
    for node in [a, b, c] {
        node.shutdown().await.unwrap();
    }
    let _ = stop.send(());
}

/// Connect to `socket` with a plain tonic client and call FetchX509SVID, with or
/// without the `workload.spiffe.io: true` header.
async fn raw_fetch(socket: &Path, header: bool) -> Result<X509SvidResponse, tonic::Status> {
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://test")
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(X509SvidRequest {});
    if header {
        request.metadata_mut().insert(
            workload_api::SECURITY_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    let codec = tonic::codec::ProstCodec::<X509SvidRequest, X509SvidResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static(workload_api::FETCH_X509_SVID_PATH);
    let mut stream = grpc
        .server_streaming(request, path, codec)
        .await?
        .into_inner();
    Ok(stream.message().await?.expect("a first response"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_security_header_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &[]);
    let (socket, stop) = server(dir.path(), "w", Duration::from_secs(60)).await;
    let refused = raw_fetch(&socket, false).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("security header"), "{refused:?}");

    let response = raw_fetch(&socket, true).await.unwrap();
    assert_eq!(response.svids.len(), 1);
    let svid = &response.svids[0];
    assert_eq!(svid.spiffe_id, "spiffe://mesh.test/node/w");
    let identity =
        workload_api::identity_of(&response, &dir.path().join("w-state"), "test").unwrap();
    assert_eq!(identity.spiffe_id().to_string(), svid.spiffe_id);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent.sock");
    let endpoint = format!("unix://{}", missing.display());
    let config = api_config(dir.path(), "a", &endpoint, &[]);
    let Err(error) = NodeHandle::start(config).await else {
        panic!("a node started without its Workload API socket");
    };
    let text = format!("{error:#}");
    assert!(text.contains(&endpoint), "{text}");
    assert!(
        text.contains(&format!("socket {} does not exist", missing.display())),
        "{text}"
    );
}
