//! A veth pair into a network namespace, for the collector's test and its overhead
//! benchmark (`examples/ebpf_overhead.rs`): the near end stays in the caller's
//! namespace, where the collector watches it; the far end is the peer. Loss is added
//! as the chaos lab adds it (crates/lab, `Net::drop_on_links`): an nftables rule on the
//! output hook that drops a random fraction (`numgen random`). Everything is removed
//! when the [`Testbed`] is dropped.

use std::net::Ipv4Addr;
use std::process::Command;

/// The veth pair and namespace; removed on drop.
#[derive(Debug)]
pub struct Testbed {
    /// The far end's namespace.
    pub namespace: String,
    /// The near end (in the caller's namespace).
    pub interface: String,
    /// The near end's address.
    pub local: Ipv4Addr,
    /// The far end's address (the peer).
    pub peer: Ipv4Addr,
    /// The nftables table of [`Testbed::add_loss`] (in the caller's namespace).
    table: String,
    loss: bool,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e} (apt-get install -y iproute2 nftables)"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Testbed {
    /// Create it; `tag` (up to 6 characters) keeps concurrent testbeds apart.
    pub fn create(tag: &str) -> Result<Testbed, String> {
        let id = std::process::id() % 100_000;
        let octet = (std::process::id() % 250) as u8 + 1;
        let bed = Testbed {
            namespace: format!("x6e-{tag}-{id}"),
            interface: format!("x6e{tag}{id}"),
            local: Ipv4Addr::new(10, 231, octet, 1),
            peer: Ipv4Addr::new(10, 231, octet, 2),
            table: format!("x6e_{tag}_{id}"),
            loss: false,
        };
        if bed.interface.len() > 15 {
            return Err(format!("testbed tag {tag} too long"));
        }
        // Dropped (and cleaned) on any error below.
        let far = format!("{}p", &bed.interface[..bed.interface.len().min(14)]);
        run("ip", &["netns", "add", &bed.namespace])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &bed.interface,
                "address",
                "02:00:5e:e6:00:01",
                "type",
                "veth",
                "peer",
                "name",
                &far,
                "address",
                "02:00:5e:e6:00:02",
                "netns",
                &bed.namespace,
            ],
        )?;
        let local = format!("{}/30", bed.local);
        let peer = format!("{}/30", bed.peer);
        run("ip", &["addr", "add", &local, "dev", &bed.interface])?;
        run("ip", &["link", "set", &bed.interface, "up"])?;
        let ns = bed.namespace.as_str();
        run("ip", &["-n", ns, "addr", "add", &peer, "dev", &far])?;
        run("ip", &["-n", ns, "link", "set", &far, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        // A permanent neighbour entry: no packet waits for (or is dropped behind) ARP.
        let peer_ip = bed.peer.to_string();
        run(
            "ip",
            &[
                "neigh",
                "replace",
                &peer_ip,
                "lladdr",
                "02:00:5e:e6:00:02",
                "dev",
                &bed.interface,
                "nud",
                "permanent",
            ],
        )?;
        Ok(bed)
    }

    /// Drop `rate` (0 to 1) of what leaves the near end, as the lab's `loss` fault does.
    pub fn add_loss(&mut self, rate: f64) -> Result<(), String> {
        let per_mille = (rate * 1000.0).round() as u32;
        let rules = format!(
            "table inet {table} {{\n chain o {{ type filter hook output priority -10; policy accept; }}\n}}\n\
             add rule inet {table} o oifname \"{interface}\" numgen random mod 1000 < {per_mille} drop\n",
            table = self.table,
            interface = self.interface,
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e} (apt-get install -y nftables)"))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| format!("cannot feed nft: {e}"))?;
        }
        let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "nft refused the loss rule: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        self.loss = true;
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.loss {
            let _ = run("nft", &["delete", "table", "inet", &self.table]);
        }
        // Deleting the namespace deletes the far end, and with it the near end.
        let _ = run("ip", &["netns", "delete", &self.namespace]);
        let _ = run("ip", &["link", "delete", &self.interface]);
    }
}
