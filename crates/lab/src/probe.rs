//! The UDP probe agent for kernel-routed daemons (babeld): one runs in each namespace
//! (`x0tta6bl4 lab probe-agent`), sends a small datagram to every target every few
//! milliseconds and records when datagrams from each source arrive. It stops when its
//! standard input closes and returns the arrivals as JSON, which the lab feeds into the
//! same outage code as x0tta6bl4's flows.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::LabError;

/// UDP port of the probe agents.
pub const PROBE_PORT: u16 = 9_470;
/// Most arrivals kept per source.
const ARRIVALS_MAX: usize = 200_000;

/// Unix time in µs.
pub fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Arrivals per source name.
pub type AgentArrivals = BTreeMap<String, Vec<u64>>;

/// Run the agent named `name` until `stop` (standard input) closes; returns the JSON of
/// [`AgentArrivals`].
pub fn run_agent(
    name: &str,
    targets: &[Ipv4Addr],
    interval: Duration,
    mut stop: impl std::io::Read,
) -> Result<String, LabError> {
    let socket = UdpSocket::bind(("0.0.0.0", PROBE_PORT)).map_err(|e| {
        LabError::failed(format!(
            "probe agent {name}: cannot bind UDP {PROBE_PORT}: {e}"
        ))
    })?;
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| LabError::failed(format!("probe agent: {e}")))?;
    let done = Arc::new(AtomicBool::new(false));
    let arrivals: Arc<Mutex<AgentArrivals>> = Arc::default();
    let receiver = {
        let (socket, done, arrivals) = (
            socket
                .try_clone()
                .map_err(|e| LabError::failed(e.to_string()))?,
            done.clone(),
            arrivals.clone(),
        );
        std::thread::spawn(move || receive(&socket, &done, &arrivals))
    };
    let sender = {
        let (socket, done, payload) = (
            socket
                .try_clone()
                .map_err(|e| LabError::failed(e.to_string()))?,
            done.clone(),
            name.as_bytes().to_vec(),
        );
        let targets: Vec<SocketAddr> = targets
            .iter()
            .map(|&t| SocketAddr::from((t, PROBE_PORT)))
            .collect();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for target in &targets {
                    // No route yet or an unreachable neighbour: the probe is lost, as it should be.
                    let _ = socket.send_to(&payload, target);
                }
                std::thread::sleep(interval);
            }
        })
    };
    let mut sink = Vec::new();
    let _ = stop.read_to_end(&mut sink);
    done.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let _ = receiver.join();
    let arrivals = arrivals
        .lock()
        .map_err(|_| LabError::failed("probe agent: poisoned lock"))?;
    serde_json::to_string(&*arrivals).map_err(|e| LabError::failed(e.to_string()))
}

fn receive(socket: &UdpSocket, done: &AtomicBool, arrivals: &Mutex<AgentArrivals>) {
    let mut buffer = [0u8; 128];
    while !done.load(Ordering::Relaxed) {
        let Ok((len, _)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let now = unix_now_us();
        let Ok(source) = std::str::from_utf8(&buffer[..len]) else {
            continue;
        };
        if let Ok(mut map) = arrivals.lock() {
            let list = map.entry(source.to_owned()).or_default();
            if list.len() < ARRIVALS_MAX {
                list.push(now);
            }
        }
    }
}

/// Read the agent's JSON answer.
pub fn parse_agent_output(text: &str) -> Result<AgentArrivals, LabError> {
    serde_json::from_str(text.trim())
        .map_err(|e| LabError::failed(format!("probe agent answered {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_hears_itself_on_loopback() {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        struct Stop(std::sync::mpsc::Receiver<()>);
        impl std::io::Read for Stop {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(0)
            }
        }
        let agent = std::thread::spawn(move || {
            run_agent(
                "n1",
                &[Ipv4Addr::LOCALHOST],
                Duration::from_millis(5),
                Stop(stop_rx),
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(stop_tx);
        let json = agent.join().unwrap();
        // Another test or agent may hold the port; only check a successful run.
        if let Ok(json) = json {
            let arrivals = parse_agent_output(&json).unwrap();
            let heard = &arrivals["n1"];
            assert!(heard.len() > 5, "{heard:?}");
            assert!(heard.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}
