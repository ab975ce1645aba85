//! Dials refused because of identity: the peer refused our certificate (or refused us
//! right after the handshake: revoked, denied by its policy), or we do not trust the
//! peer's. Each is counted in `x0tta6bl4_dial_refusals_total{reason}` and logged at INFO
//! once per peer address: again only when the reason changes or after
//! [`LOG_INTERVAL`], with the number of refusals in between (issue 11: a rogue or
//! revoked dialer retries for as long as it runs, and an operator must see why its
//! links never come up without a line per retry).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use quinn::{ConnectionError, TransportErrorCode};

/// A refused dial is logged again for the same peer and reason after this long.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(300);
/// Peer addresses whose last logged refusal is remembered (the oldest is forgotten).
const TRACKED_MAX: usize = 1024;

/// Who refused; the `reason` label of `dial_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DialRefusal {
    /// The peer refused our certificate, or closed the link at once as unauthorised.
    PeerRefused,
    /// We do not trust the peer's certificate (or our policy denies it).
    PeerUntrusted,
}

impl DialRefusal {
    pub const ALL: [DialRefusal; 2] = [DialRefusal::PeerRefused, DialRefusal::PeerUntrusted];

    pub fn as_str(self) -> &'static str {
        match self {
            DialRefusal::PeerRefused => "peer_refused",
            DialRefusal::PeerUntrusted => "peer_untrusted",
        }
    }
}

/// The last line logged for one peer address.
#[derive(Debug)]
struct Logged {
    /// Kind and reason with digits removed (times and counters in reasons vary).
    key: String,
    at: Instant,
    suppressed: u64,
}

/// Counts refused dials and decides which are logged.
#[derive(Debug, Default)]
pub(crate) struct DialRefusals {
    counts: [AtomicU64; DialRefusal::ALL.len()],
    logged: Mutex<HashMap<SocketAddr, Logged>>,
}

impl DialRefusals {
    /// Count a refusal of the dial to `addr` and log it when it is the first for that
    /// address, its reason changed, or [`LOG_INTERVAL`] passed since the last line.
    pub fn record(&self, addr: SocketAddr, kind: DialRefusal, reason: &str) {
        let index = DialRefusal::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        let total = self.counts[index].fetch_add(1, Ordering::Relaxed) + 1;
        let Some(suppressed) = self.should_log(addr, kind, reason, Instant::now()) else {
            return;
        };
        let what = match kind {
            DialRefusal::PeerRefused => "dial refused by the peer: it does not accept us",
            DialRefusal::PeerUntrusted => "dial refused: we do not trust the peer",
        };
        tracing::info!(
            peer = %addr,
            %reason,
            suppressed,
            total,
            "{what} (retrying with backoff; logged again for this peer when the reason \
             changes or after {} s)",
            LOG_INTERVAL.as_secs()
        );
    }

    /// Forget `addr`: a link to it came up and went down normally.
    pub fn clear(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }

    /// Refusals counted of `kind`.
    pub fn count(&self, kind: DialRefusal) -> u64 {
        let index = DialRefusal::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        self.counts[index].load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Logged>> {
        self.logged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Some(refusals not logged since the last line)` when this one is to be logged.
    fn should_log(
        &self,
        addr: SocketAddr,
        kind: DialRefusal,
        reason: &str,
        now: Instant,
    ) -> Option<u64> {
        let key: String = kind
            .as_str()
            .chars()
            .chain(reason.chars().filter(|c| !c.is_ascii_digit()))
            .collect();
        let mut logged = self.lock();
        if let Some(entry) = logged.get_mut(&addr) {
            if entry.key == key && now.duration_since(entry.at) < LOG_INTERVAL {
                entry.suppressed += 1;
                return None;
            }
            let suppressed = entry.suppressed;
            *entry = Logged {
                key,
                at: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if logged.len() >= TRACKED_MAX {
            let oldest = logged.iter().min_by_key(|(_, e)| e.at).map(|(a, _)| *a);
            oldest.map(|addr| logged.remove(&addr));
        }
        let entry = Logged {
            key,
            at: now,
            suppressed: 0,
        };
        logged.insert(addr, entry);
        Some(0)
    }
}

/// Whether a connection error is an identity refusal, by whom, and why.
pub(crate) fn classify(error: &ConnectionError) -> Option<(DialRefusal, String)> {
    use crate::transport::close;
    let crypto = |code: TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match error {
        ConnectionError::ConnectionClosed(frame) if crypto(frame.error_code) => Some((
            DialRefusal::PeerRefused,
            format!("the peer aborted the TLS handshake: {frame}"),
        )),
        ConnectionError::ApplicationClosed(frame)
            if [close::UNAUTHORISED, close::REVOKED]
                .map(u64::from)
                .contains(&frame.error_code.into_inner()) =>
        {
            let reason = String::from_utf8_lossy(&frame.reason);
            Some((
                DialRefusal::PeerRefused,
                format!("the peer closed the link after the handshake: {reason}"),
            ))
        }
        ConnectionError::TransportError(error) if crypto(error.code) => Some((
            DialRefusal::PeerUntrusted,
            format!("the peer's certificate was refused: {error}"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_peer_until_the_reason_changes_or_the_interval_passes() {
        let refusals = DialRefusals::default();
        let (a, b) = (
            "10.0.0.1:7001".parse().unwrap(),
            "10.0.0.2:7001".parse().unwrap(),
        );
        let start = Instant::now();
        let expired = "certificate expired at 1700000000";
        let kind = DialRefusal::PeerUntrusted;
        assert_eq!(refusals.should_log(a, kind, expired, start), Some(0));
        for i in 1..100u64 {
            let reason = format!("certificate expired at {}", 1_700_000_000 + i);
            let now = start + Duration::from_millis(100 * i);
            assert_eq!(refusals.should_log(a, kind, &reason, now), None);
        }
        assert_eq!(refusals.should_log(b, kind, expired, start), Some(0));
        let later = start + Duration::from_secs(20);
        let refused = DialRefusal::PeerRefused;
        assert_eq!(refusals.should_log(a, refused, "bad", later), Some(99));
        assert_eq!(refusals.should_log(a, refused, "bad", later), None);
        let after = later + LOG_INTERVAL;
        assert_eq!(refusals.should_log(a, refused, "bad", after), Some(1));
        refusals.clear(a);
        assert_eq!(refusals.should_log(a, refused, "bad", after), Some(0));
    }

    #[test]
    fn remembers_a_bounded_number_of_peers() {
        let refusals = DialRefusals::default();
        let now = Instant::now();
        for port in 0..(TRACKED_MAX as u16 + 10) {
            let addr = SocketAddr::from(([10, 0, 0, 1], port));
            let at = now + Duration::from_millis(u64::from(port));
            refusals.should_log(addr, DialRefusal::PeerRefused, "x", at);
        }
        assert_eq!(refusals.lock().len(), TRACKED_MAX);
    }
}
