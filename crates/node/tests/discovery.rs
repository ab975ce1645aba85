//! LAN discovery: nodes with no configured peers find each other by beacons on a shared
//! UDP port and link up within a second (issue: mesh core, "neighbours").

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{eventually, issue, write_config, Api};
use x0tta6bl4_node::{load_config, NodeHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_segment_find_each_other_by_beacons() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["d1", "d2", "d3"]);
    // A free UDP port for the beacons, shared by the three nodes.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut nodes = Vec::new();
    for name in ["d1", "d2", "d3"] {
        let path = write_config(dir.path(), name, any, any, &[]);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "[discovery]\nenabled = true\nport = {port}\nbroadcast = \"127.255.255.255\"\n"
        ));
        std::fs::write(&path, text).unwrap();
        nodes.push(
            NodeHandle::start(load_config(&path).unwrap())
                .await
                .unwrap(),
        );
    }
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let took = eventually(
        Duration::from_secs(5),
        "every node routes to the two others",
        || async {
            for api in &apis {
                let (status, routes) = api.get("/api/v1/routes").await;
                if status != 200 || routes.as_array().map_or(0, Vec::len) != 2 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // Beacons go out every 250 ms (±20 %); the issue asks for discovery within a second.
    assert!(
        took < Duration::from_secs(1),
        "found each other only after {took:?}"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
