//! Replay protection for data messages: a node forwards or delivers a message (source,
//! identifier, content) at most once among the last [`REMEMBERED`] it handled.
//!
//! Links are authenticated, but a data message is not signed end to end, so a neighbour
//! that turned Byzantine can send old messages again. Without this, every replay is
//! forwarded and delivered as new, and replays that route back through the Byzantine
//! node multiply until their hop limit runs out. With it, each node handles a message
//! once, however often and over whichever link it comes back.
//!
//! The memory is an exact set of recent messages, not a window below the highest
//! identifier seen (as IPsec's, RFC 4303 §3.4.3): a forged identifier far ahead would
//! move such a window and make a node refuse every later message of that source. A
//! source numbers its messages from a start derived from its clock, so a restarted
//! source does not reuse identifiers the nodes still remember.
//!
//! The content (destination, channel, payload; not the hop limit, which every hop
//! lowers) is part of what is remembered, as a digest: a forged variant of a message
//! that arrives first must not shadow the genuine one. (A Byzantine node on the path
//! can still drop or alter what it forwards; only end-to-end signatures would stop it.)

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher as _;

use crate::hash::FastHasher;
use crate::name::NodeName;
use crate::wire::Data;

/// Messages remembered per node: at the 1,500 messages a second a node of the 16-node
/// chaos lab forwards, about 2.7 s of them, far longer than a replay takes to come back.
pub const REMEMBERED: usize = 4_096;

/// The last messages a node handled, oldest first.
#[derive(Clone, Debug, Default)]
pub struct RecentMessages {
    order: VecDeque<Key>,
    set: HashSet<Key>,
}

/// A message as remembered: source, identifier, digest of the content.
type Key = (NodeName, u64, u64);

impl RecentMessages {
    /// Admit `data` unless it is remembered.
    pub fn admit(&mut self, data: &Data) -> bool {
        let mut digest = FastHasher::default();
        digest.write(data.destination.as_str().as_bytes());
        digest.write_u8(data.channel);
        digest.write(&data.payload);
        let key = (data.source.clone(), data.id, digest.finish());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(source: &str, id: u64, payload: &[u8]) -> Data {
        Data {
            source: source.parse().unwrap(),
            destination: "d".parse().unwrap(),
            ttl: 32,
            channel: 0,
            id,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn admits_each_message_once_while_remembered() {
        let mut recent = RecentMessages::default();
        assert!(recent.admit(&message("a", 7, b"x")));
        assert!(!recent.admit(&message("a", 7, b"x")), "a repeat");
        let mut lower_ttl = message("a", 7, b"x");
        lower_ttl.ttl = 3;
        assert!(
            !recent.admit(&lower_ttl),
            "back around a loop: still a repeat"
        );
        assert!(
            recent.admit(&message("a", 7, b"y")),
            "a forged variant does not shadow"
        );
        assert!(
            recent.admit(&message("b", 7, b"x")),
            "another source's message 7"
        );
        assert!(recent.admit(&message("a", u64::MAX, b"x")));
        assert!(
            recent.admit(&message("a", 8, b"x")),
            "no window to push ahead"
        );
        for id in 100..100 + REMEMBERED as u64 {
            assert!(recent.admit(&message("b", id, b"")));
        }
        assert!(
            recent.admit(&message("a", 7, b"x")),
            "forgotten after REMEMBERED others"
        );
        assert_eq!(recent.order.len(), REMEMBERED);
        assert_eq!(recent.set.len(), REMEMBERED);
    }
}
