//! The eBPF collector on a real veth pair (feature `ebpf`; root). The lab's loss
//! mechanism (an nftables `numgen random` drop on the output hook) must show up as
//! `NETFILTER_DROP` drops of the peer's address on the right interface, and the packets
//! and bytes sent to the peer must be counted exactly. Under `CI=true` a missing
//! prerequisite (root, kernel BTF, ip, nft) fails the test.
#![cfg(feature = "ebpf")]

use std::net::{SocketAddr, UdpSocket};

use x0tta6bl4_node::ebpf::testbed::Testbed;
use x0tta6bl4_node::ebpf::{is_root, EbpfCollector, Interfaces, BTF_PATH};
use x0tta6bl4_node::telemetry::{KernelSource, LinkInput, Telemetry};
use x0tta6bl4_proto::NodeName;

/// UDP payload bytes; IPv4 + UDP headers add 28, Ethernet 14 more on the wire.
const PAYLOAD: usize = 100;

fn prerequisites() -> Result<(), String> {
    if !is_root() {
        return Err("not root: run the test as root (sudo)".into());
    }
    if !std::path::Path::new(BTF_PATH).exists() {
        return Err(format!(
            "no {BTF_PATH}: needs a kernel with CONFIG_DEBUG_INFO_BTF"
        ));
    }
    for tool in ["ip", "nft"] {
        let found = std::process::Command::new(tool).arg("-V").output().is_ok();
        if !found {
            return Err(format!(
                "{tool} missing: apt-get install -y iproute2 nftables"
            ));
        }
    }
    Ok(())
}

/// Send `count` datagrams; returns how many the kernel refused with EPERM (nftables
/// dropped them on the output hook).
fn send(socket: &UdpSocket, to: SocketAddr, count: usize) -> usize {
    let payload = [0x5a_u8; PAYLOAD];
    let mut refused = 0;
    for _ in 0..count {
        match socket.send_to(&payload, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => refused += 1,
            Err(e) => panic!("send to {to}: {e}"),
        }
    }
    refused
}

#[test]
fn nftables_loss_shows_up_as_netfilter_drops_and_traffic_is_counted_per_peer() {
    if let Err(why) = prerequisites() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the eBPF collector test cannot run under CI: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let mut bed = Testbed::create("t").expect("testbed");
    let collector = EbpfCollector::load(&Interfaces::Named(vec![bed.interface.clone()]))
        .expect("the collector loads");
    let socket = UdpSocket::bind((bed.local, 0)).expect("bind");
    let to = SocketAddr::from((bed.peer, 9));

    let clean = 300;
    assert_eq!(send(&socket, to, clean), 0, "no loss yet");
    bed.add_loss(0.3).expect("nftables loss");
    let lossy = 1000;
    let refused = send(&socket, to, lossy);
    assert!(
        (200..=400).contains(&refused),
        "nftables dropped {refused} of {lossy} at 30 %"
    );

    let counters = collector.read().expect("read the maps");
    let peer = counters
        .peers
        .get(&bed.peer.into())
        .unwrap_or_else(|| panic!("no counters for {}: {counters:#?}", bed.peer));
    let delivered = (clean + lossy - refused) as u64;
    let wire = (PAYLOAD + 28 + 14) as u64;
    assert_eq!(peer.sent.packets, delivered, "{peer:#?}");
    assert_eq!(peer.sent.bytes, delivered * wire, "{peer:#?}");
    let netfilter = peer
        .drops
        .get("NETFILTER_DROP")
        .copied()
        .unwrap_or_default();
    assert_eq!(netfilter.packets, refused as u64, "{peer:#?}");
    assert_eq!(netfilter.bytes, refused as u64 * (PAYLOAD + 28) as u64);
    // The far end has no listener: it drops with NO_SOCKET in its own namespace, which
    // the collector (restricted to this namespace) must not count.
    assert!(
        peer.drops.keys().all(|reason| reason == "NETFILTER_DROP"),
        "drops from another namespace counted: {peer:#?}"
    );
    // Those drops are answered with ICMP port unreachable (rate-limited): received.
    assert!(peer.received.packets >= 1, "{peer:#?}");

    let interface = &counters.interfaces[&bed.interface];
    assert_eq!(interface.drops["NETFILTER_DROP"].packets, refused as u64);
    assert!(interface.sent.packets >= delivered, "{interface:#?}");
    assert!(interface.received.packets >= peer.received.packets);
    // The same counters reach the link's feature vector through the kernel source.
    let source = KernelSource::from_collector(collector);
    let mut telemetry = Telemetry::with_sources(vec![Box::new(source)], true);
    let peer_name = NodeName::new("peer").unwrap();
    let link = LinkInput {
        neighbour: &peer_name,
        address: Some(bed.peer.into()),
        probe: None,
        connection: None,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let sample = loop {
        telemetry.sample(std::time::Instant::now(), &[link]);
        let last = telemetry.features()[0].last.clone();
        if last.kernel_packets.is_some() || std::time::Instant::now() > deadline {
            break last;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        sample.kernel_packets >= Some(delivered + peer.received.packets),
        "{sample:?}"
    );
    assert_eq!(sample.kernel_drops, Some(refused as u64), "{sample:?}");
    eprintln!(
        "sent {} to {}, nftables dropped {refused}: collector counted {} sent ({} bytes), \
         {} NETFILTER_DROP, {} received",
        clean + lossy,
        bed.peer,
        peer.sent.packets,
        peer.sent.bytes,
        netfilter.packets,
        peer.received.packets
    );
}
