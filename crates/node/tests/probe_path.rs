//! The probe path (`[transport] probe_path`): probes and answers as authenticated UDP
//! datagrams outside the links' QUIC connections, a fallback to QUIC for a peer that does
//! not offer it or whose probe port is out of reach, hellos before probes, refusal of
//! forged, replayed and truncated packets, and links that heal.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config_with, eventually, issue, restart, write_config, Api};
use tokio::net::UdpSocket;
use x0tta6bl4_node::probe_path::{self, HEADER_BYTES, HELLO, HELLO_ANSWER};
use x0tta6bl4_node::{load_config, NodeHandle};
use x0tta6bl4_proto::{Message, NodeName};

/// The value of the series `series` (name and labels, as exposed) on `api`'s `/metrics`.
async fn metric(api: &Api, series: &str) -> u64 {
    let text = api.text("/metrics").await;
    let line = text
        .lines()
        .find(|line| line.split(' ').next() == Some(series))
        .unwrap_or_else(|| panic!("{series} not exposed"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

async fn path_packets(api: &Api, direction: &str) -> u64 {
    let series = format!("x0tta6bl4_probe_path_packets_total{{direction=\"{direction}\"}}");
    metric(api, &series).await
}

async fn refused(api: &Api, reason: &str) -> u64 {
    let series = format!("x0tta6bl4_probe_path_refused_total{{reason=\"{reason}\"}}");
    metric(api, &series).await
}

async fn neighbour_up(api: &Api, name: &str) -> bool {
    let (_, peers) = api.get("/api/v1/peers").await;
    peers.as_array().is_some_and(|peers| {
        peers
            .iter()
            .any(|p| p["name"] == name && p["state"] == "up" && !p["rtt_ms"].is_null())
    })
}

/// The APIs of nodes a and b, once each sees the other up.
async fn both_up(a: &NodeHandle, b: &NodeHandle) -> (Api, Api) {
    let (api_a, api_b) = (Api::new(a), Api::new(b));
    eventually(Duration::from_secs(10), "a and b up", || async {
        neighbour_up(&api_a, "b").await && neighbour_up(&api_b, "a").await
    })
    .await;
    (api_a, api_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_probe_over_the_probe_path_and_heal_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    let b = NodeHandle::start(config_with(dir.path(), "b", &[], ""))
        .await
        .unwrap();
    let b_quic = b.quic_addr();
    let a = NodeHandle::start(config_with(dir.path(), "a", &[b_quic], ""))
        .await
        .unwrap();
    assert!(a.probe_addr().is_some(), "udp is the default probe path");
    let (api_a, api_b) = both_up(&a, &b).await;
    let links = "x0tta6bl4_probe_path_links";
    eventually(
        Duration::from_secs(5),
        "both probe over the path",
        || async { metric(&api_a, links).await == 1 && metric(&api_b, links).await == 1 },
    )
    .await;
    // Both ways, probes and answers: 50 ms probes give 40 packets a second per node.
    let (sent, received) = (
        path_packets(&api_a, "sent").await,
        path_packets(&api_a, "received").await,
    );
    eventually(
        Duration::from_secs(5),
        "probes flow both ways over the path",
        || async {
            path_packets(&api_a, "sent").await >= sent + 20
                && path_packets(&api_a, "received").await >= received + 20
                && path_packets(&api_b, "received").await >= 20
        },
    )
    .await;
    for reason in probe_path::Refusal::ALL {
        assert_eq!(refused(&api_a, reason.as_str()).await, 0, "{reason:?}");
        assert_eq!(refused(&api_b, reason.as_str()).await, 0, "{reason:?}");
    }

    // b stops: a detects it from the path's silence, as it did over QUIC.
    b.shutdown().await.unwrap();
    eventually(Duration::from_secs(5), "a sees b gone", || async {
        !neighbour_up(&api_a, "b").await
    })
    .await;
    // b comes back on its address: a new link, new keys and tags, probes on the path.
    let b = restart(dir.path(), "b", b_quic).await;
    let api_b = Api::new(&b);
    eventually(Duration::from_secs(15), "the link heals", || async {
        neighbour_up(&api_a, "b").await && neighbour_up(&api_b, "a").await
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the new link probes over the path",
        || async {
            metric(&api_b, links).await == 1 && path_packets(&api_b, "received").await >= 20
        },
    )
    .await;
    assert_eq!(metric(&api_a, links).await, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_probe_path_is_probed_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    // b stands for an older node: it neither offers the path nor takes a's offer.
    let quic = "[transport]\nprobe_path = \"quic\"\n";
    let b = NodeHandle::start(config_with(dir.path(), "b", &[], quic))
        .await
        .unwrap();
    assert_eq!(b.probe_addr(), None);
    let a = NodeHandle::start(config_with(dir.path(), "a", &[b.quic_addr()], ""))
        .await
        .unwrap();
    let (api_a, api_b) = both_up(&a, &b).await;
    // Up, with RTTs measured, for a few dead intervals: the probes flow over QUIC.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(neighbour_up(&api_a, "b").await && neighbour_up(&api_b, "a").await);
    assert_eq!(metric(&api_a, "x0tta6bl4_probe_path_links").await, 0);
    assert_eq!(path_packets(&api_a, "sent").await, 0);
    assert_eq!(path_packets(&api_a, "received").await, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A QUIC client with b's SVID, standing in for node b, so that the test holds b's keys.
async fn fake_peer(dir: &Path, to: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    let identity = x0tta6bl4_identity::NodeIdentity::load(&dir.join("b")).unwrap();
    let (tls, _record) = identity.client_config_recorded(Default::default()).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint.connect_with(client, to, "x0tta6bl4").unwrap();
    (endpoint.clone(), connecting.await.unwrap())
}

/// The first stream on `conn` that holds an offer: the node's probe port and tag.
async fn offer_from(conn: &quinn::Connection) -> (u16, u64) {
    loop {
        let mut stream = conn.accept_uni().await.unwrap();
        let bytes = stream.read_to_end(64 * 1024).await.unwrap();
        if bytes.starts_with(probe_path::OFFER_MAGIC) {
            return probe_path::decode_offer(&bytes).unwrap();
        }
    }
}

/// The next packet on `socket` (within 6 s), checked to carry `tag` and opened.
async fn next_frame(
    socket: &UdpSocket,
    tag: u64,
    key: &aws_lc_rs::aead::LessSafeKey,
    window: &mut probe_path::ReplayWindow,
) -> Vec<u8> {
    let mut packet = vec![0u8; 2048];
    let len = tokio::time::timeout(Duration::from_secs(6), socket.recv(&mut packet))
        .await
        .expect("a sends on the path")
        .unwrap();
    packet.truncate(len);
    assert_eq!(probe_path::packet_tag(&packet), Ok(tag));
    probe_path::open(key, window, &mut packet).unwrap().to_vec()
}

/// The next packet on `socket` that is not a hello (a keeps sending them until answered).
async fn next_frame_but_hellos(
    socket: &UdpSocket,
    tag: u64,
    key: &aws_lc_rs::aead::LessSafeKey,
    window: &mut probe_path::ReplayWindow,
) -> Vec<u8> {
    loop {
        let frame = next_frame(socket, tag, key, window).await;
        if frame != HELLO {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_truncated_probe_packets_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    // Slow probes: the fake peer answers none, and a must not declare it down meanwhile.
    let slow = "[protocol]\nprobe_interval_ms = 2000\n";
    let a = NodeHandle::start(config_with(dir.path(), "a", &[], slow))
        .await
        .unwrap();
    let api = Api::new(&a);
    let a_probe = a.probe_addr().unwrap();
    let (_endpoint, conn) = fake_peer(dir.path(), a.quic_addr()).await;
    let (port, tag) = tokio::time::timeout(Duration::from_secs(5), offer_from(&conn))
        .await
        .expect("a offers its probe path on a new link");
    assert_eq!(port, a_probe.port());
    let (name_a, name_b) = (NodeName::new("a").unwrap(), NodeName::new("b").unwrap());
    let to_a = probe_path::derive_key(&conn, &name_b, &name_a).unwrap();
    let from_a = probe_path::derive_key(&conn, &name_a, &name_b).unwrap();

    // The fake's own offer: a's probes come to its socket, sealed with a's key.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_tag = 0x0123_4567_89ab_cdef;
    let offer = probe_path::encode_offer(socket.local_addr().unwrap().port(), fake_tag);
    let mut stream = conn.open_uni().await.unwrap();
    stream.write_all(&offer).await.unwrap();
    stream.finish().unwrap();
    let mut window = probe_path::ReplayWindow::default();
    // Before a round trip worked, a sends hellos on the path and probes over QUIC.
    assert_eq!(
        next_frame(&socket, fake_tag, &from_a, &mut window).await,
        HELLO
    );
    // a answers a hello on the path; the fake answers a's: a's probes take the path.
    let hello = probe_path::seal(&to_a, tag, 1, HELLO);
    socket.send_to(&hello, a_probe).await.unwrap();
    let frame = next_frame_but_hellos(&socket, fake_tag, &from_a, &mut window).await;
    assert_eq!(frame, HELLO_ANSWER);
    let answer = probe_path::seal(&to_a, tag, 2, HELLO_ANSWER);
    socket.send_to(&answer, a_probe).await.unwrap();
    let frame = next_frame_but_hellos(&socket, fake_tag, &from_a, &mut window).await;
    assert!(
        matches!(Message::decode(&frame), Ok(Message::Probe { .. })),
        "{frame:?}"
    );

    // A genuine answer from "b" is taken, and counted.
    let answer = Message::ProbeAck { seq: 1, echo_us: 1 }.to_bytes();
    let genuine = probe_path::seal(&to_a, tag, 3, &answer);
    let received = path_packets(&api, "received").await;
    socket.send_to(&genuine, a_probe).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the genuine packet taken",
        || async { path_packets(&api, "received").await == received + 1 },
    )
    .await;
    // The same packet again; one with a flipped bit; one cut short; a stranger's tag.
    socket.send_to(&genuine, a_probe).await.unwrap();
    let mut forged = probe_path::seal(&to_a, tag, 4, &answer);
    forged[HEADER_BYTES] ^= 1;
    socket.send_to(&forged, a_probe).await.unwrap();
    socket
        .send_to(&genuine[..HEADER_BYTES + 3], a_probe)
        .await
        .unwrap();
    let stranger = probe_path::seal(&to_a, tag ^ 1, 5, &answer);
    socket.send_to(&stranger, a_probe).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "each refused and counted",
        || async {
            refused(&api, "replayed").await == 1
                && refused(&api, "forged").await == 1
                && refused(&api, "malformed").await == 1
                && refused(&api, "unknown_link").await == 1
        },
    )
    .await;
    assert_eq!(path_packets(&api, "received").await, received + 1);
    // The forgery did not use up its counter: the genuine packet 4 is still taken.
    socket
        .send_to(&probe_path::seal(&to_a, tag, 4, &answer), a_probe)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "packet 4 taken", || async {
        path_packets(&api, "received").await == received + 2
    })
    .await;
    conn.close(0u32.into(), b"done");
    a.shutdown().await.unwrap();
}

/// A UDP relay from `front` to `to` for one client, standing in for a NAT or a port
/// mapping: what goes to the relay reaches `to` while `open`, nothing else does.
async fn relay(front: &str, to: SocketAddr, open: Arc<AtomicBool>) -> SocketAddr {
    let front = UdpSocket::bind(front).await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(to).await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client = None;
        loop {
            tokio::select! {
                Ok((len, from)) = front.recv_from(&mut up) => {
                    client = Some(from);
                    if open.load(Ordering::Relaxed) {
                        let _ = back.send(&up[..len]).await;
                    }
                }
                Ok(len) = back.recv(&mut down) => {
                    if let Some(client) = client.filter(|_| open.load(Ordering::Relaxed)) {
                        let _ = front.send_to(&down[..len], client).await;
                    }
                }
            }
        }
    });
    addr
}

/// Nodes a and b, b on 127.0.0.2 (QUIC and probe socket), which a reaches through relays
/// on 127.0.0.1, as behind a NAT or a port mapping: one to b's QUIC port, and one at the
/// port b offers for its probe path, which forwards to b's probe socket while the
/// returned switch is on (`probe_open`). b reaches a's probe socket directly.
async fn a_and_b_behind_relays(
    dir: &Path,
    probe_open: bool,
) -> (NodeHandle, NodeHandle, Arc<AtomicBool>) {
    issue(dir, &["a", "b"]);
    let b_any: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let api_any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let b_config = load_config(&write_config(dir, "b", b_any, api_any, &[])).unwrap();
    let b = NodeHandle::start(b_config).await.unwrap();
    let b_probe = b.probe_addr().unwrap();
    let open = Arc::new(AtomicBool::new(probe_open));
    let front = format!("127.0.0.1:{}", b_probe.port());
    relay(&front, b_probe, open.clone()).await;
    let always = Arc::new(AtomicBool::new(true));
    let via = relay("127.0.0.1:0", b.quic_addr(), always).await;
    let a = NodeHandle::start(config_with(dir, "a", &[via], ""))
        .await
        .unwrap();
    (a, b, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_probe_port_is_out_of_reach_stays_up_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    // The relay at b's probe port forwards nothing: a's hellos, and its answers to b's
    // hellos, go nowhere.
    let (a, b, _closed) = a_and_b_behind_relays(dir.path(), false).await;
    let (api_a, api_b) = both_up(&a, &b).await;
    // 2 s, 40 probe intervals, several dead intervals and every hello: no flap.
    stay_up(&api_a, &api_b, Duration::from_secs(2)).await;
    // Each gave up on the path after its hellos went unanswered; probes stay on QUIC.
    let links = "x0tta6bl4_probe_path_links";
    assert_eq!(metric(&api_a, links).await, 0);
    assert_eq!(metric(&api_b, links).await, 0);
    let unproven = "x0tta6bl4_probe_path_fallbacks_total{reason=\"unproven\"}";
    assert!(metric(&api_a, unproven).await >= 1);
    assert!(metric(&api_b, unproven).await >= 1);
    let lost = "x0tta6bl4_probe_path_fallbacks_total{reason=\"lost\"}";
    assert_eq!(metric(&api_a, lost).await, 0);
    // a sent hellos (and answers) that b never got; b's reached a.
    let sent = path_packets(&api_a, "sent").await;
    assert!(sent >= u64::from(probe_path::HELLO_TRIES), "{sent} sent");
    assert_eq!(path_packets(&api_b, "received").await, 0);
    assert!(path_packets(&api_a, "received").await >= 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// a and b see each other up all through `span`, with no neighbour-down event.
async fn stay_up(api_a: &Api, api_b: &Api, span: Duration) {
    let until = std::time::Instant::now() + span;
    while std::time::Instant::now() < until {
        assert!(neighbour_up(api_a, "b").await, "a lost b");
        assert!(neighbour_up(api_b, "a").await, "b lost a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let down = "x0tta6bl4_neighbour_down_total";
    assert_eq!(metric(api_a, down).await, 0);
    assert_eq!(metric(api_b, down).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_path_lost_at_run_time_falls_back_to_quic_without_a_flap() {
    let dir = tempfile::tempdir().unwrap();
    // The relay at b's probe port forwards until the test switches it off: the path
    // works, then breaks.
    let (a, b, open) = a_and_b_behind_relays(dir.path(), true).await;
    let (api_a, api_b) = both_up(&a, &b).await;
    let links = "x0tta6bl4_probe_path_links";
    eventually(Duration::from_secs(5), "both on the path", || async {
        metric(&api_a, links).await == 1 && metric(&api_b, links).await == 1
    })
    .await;
    open.store(false, Ordering::Relaxed);
    stay_up(&api_a, &api_b, Duration::from_secs(2)).await;
    // Both gave up on the path (a's probes and b's answers were lost), probing over QUIC.
    assert_eq!(metric(&api_a, links).await, 0);
    assert_eq!(metric(&api_b, links).await, 0);
    let lost = "x0tta6bl4_probe_path_fallbacks_total{reason=\"lost\"}";
    assert!(metric(&api_a, lost).await >= 1);
    assert!(metric(&api_b, lost).await >= 1);
    let unproven = "x0tta6bl4_probe_path_fallbacks_total{reason=\"unproven\"}";
    assert_eq!(metric(&api_a, unproven).await, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The next packet on `socket` (within 6 s): its packet number, and its frame opened
/// with `key` (or why it was refused).
async fn next_numbered(
    socket: &UdpSocket,
    key: &aws_lc_rs::aead::LessSafeKey,
    window: &mut probe_path::ReplayWindow,
) -> (u64, Result<Vec<u8>, probe_path::Refusal>) {
    let mut packet = vec![0u8; 2048];
    let len = tokio::time::timeout(Duration::from_secs(6), socket.recv(&mut packet))
        .await
        .expect("a sends on the path")
        .unwrap();
    packet.truncate(len);
    let number = u64::from_be_bytes(packet[8..HEADER_BYTES].try_into().unwrap());
    let frame = probe_path::open(key, window, &mut packet).map(<[u8]>::to_vec);
    (number, frame)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_offer_on_a_link_does_not_restart_its_packet_numbers() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), &["a", "b"]);
    // Hellos every 200 ms; the fake peer answers none, and a keeps it up meanwhile.
    let slow = "[protocol]\nprobe_interval_ms = 200\nprobe_misses_max = 100\n";
    let a = NodeHandle::start(config_with(dir.path(), "a", &[], slow))
        .await
        .unwrap();
    let (_endpoint, conn) = fake_peer(dir.path(), a.quic_addr()).await;
    let (name_a, name_b) = (NodeName::new("a").unwrap(), NodeName::new("b").unwrap());
    let from_a = probe_path::derive_key(&conn, &name_a, &name_b).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_tag = 0x0123_4567_89ab_cdef;
    let offer = probe_path::encode_offer(socket.local_addr().unwrap().port(), fake_tag);
    let send_offer = || async {
        let mut stream = conn.open_uni().await.unwrap();
        stream.write_all(&offer).await.unwrap();
        stream.finish().unwrap();
    };
    send_offer().await;
    let mut window = probe_path::ReplayWindow::default();
    let mut newest = 0;
    for _ in 0..2 {
        let (number, frame) = next_numbered(&socket, &from_a, &mut window).await;
        assert_eq!(frame.as_deref(), Ok(HELLO));
        newest = number;
    }
    // The same offer again over the same connection (a misbehaving or confused peer):
    // a's key for this link is the same, so its packet numbers (the nonces) must go on.
    send_offer().await;
    for _ in 0..4 {
        let (number, frame) = next_numbered(&socket, &from_a, &mut window).await;
        assert!(
            number > newest,
            "packet number {number} after {newest}: a nonce used twice"
        );
        assert_eq!(frame.as_deref(), Ok(HELLO));
        newest = number;
    }
    conn.close(0u32.into(), b"done");
    a.shutdown().await.unwrap();
}
