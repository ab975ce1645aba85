//! Outages seen by this node's probe-flow receiver: the source of the
//! `x0tta6bl4_flow_outage_seconds` histogram, from which the Prometheus recording rules
//! derive MTTR quantiles.
//!
//! A probe-flow payload carries the sender's tick number and send time (Unix µs, both
//! u64 big-endian; `docs/api.md`). Between two consecutive arrivals from one source, the
//! sender's interval is `(sent_after - sent_before) / (tick_after - tick_before)`: ticks
//! count on while probes are lost or unroutable, so the estimate holds across an outage,
//! and a sender that skipped ticks while busy stretches its send times too, so a late
//! sender is not mistaken for an outage. When the arrival gap exceeds
//! [`OUTAGE_INTERVALS_MIN`] times that interval, the gap (last probe delivered before,
//! first after) is an outage, measured as `x0tta6bl4_proto::measure` measures it.
//!
//! A probe counts once. One whose tick this receiver already counted, or that is older
//! than the last [`RECENT_TICKS`] ticks and not sent later than the newest (a Byzantine
//! neighbour's replay of a stale frame: the mesh's replay memory covers the last few
//! seconds, not every frame ever sent), is [`Arrival::Replayed`]: not an arrival, so it
//! neither inflates the delivery ratio nor hides an outage. A tick number that does not
//! increase while its send time does (flows restarted, the sender restarted) starts the
//! source afresh: it can hide an outage, never invent one. A genuine probe overtaken by a
//! later one (reordered while routes change) still counts as delivered.

use std::collections::HashMap;

use x0tta6bl4_proto::NodeName;

use crate::state::FLOW_SOURCES_MAX;

/// An arrival gap longer than this many sender intervals is an outage.
pub(crate) const OUTAGE_INTERVALS_MIN: u64 = 3;
/// Bytes of a probe-flow payload: tick number and send time.
pub(crate) const PROBE_PAYLOAD_BYTES: usize = 16;

/// Upper bounds (seconds) of the `x0tta6bl4_flow_outage_seconds` buckets: 10 ms to 30 s,
/// finest around the 100 to 300 ms where a healthy mesh heals.
pub(crate) const OUTAGE_BUCKETS_SECONDS: [f64; 16] = [
    0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// Ticks below the newest one whose arrival a receiver remembers (a bitmap).
pub(crate) const RECENT_TICKS: u64 = 64;

/// The last probe heard from one source.
#[derive(Clone, Copy, Debug)]
struct LastProbe {
    tick: u64,
    sent_us: u64,
    arrival_us: u64,
    /// Bit `i`: tick `tick - i` arrived.
    seen: u64,
}

/// What a probe-flow arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Counted: a probe not seen before (or not a probe payload), with the outage it
    /// ends, in microseconds, if the gap since the previous probe of its source was one.
    Counted(Option<u64>),
    /// A probe counted already, or a stale one: not an arrival.
    Replayed,
}

/// Per-source state of the probe-flow receiver, at most [`FLOW_SOURCES_MAX`] sources
/// (further sources are ignored here; `record_arrival` counts them as dropped).
#[derive(Debug, Default)]
pub(crate) struct OutageTracker {
    sources: HashMap<NodeName, LastProbe>,
}

/// Tick number and send time of a probe-flow payload; `None` if it is not one.
pub(crate) fn parse_probe(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() != PROBE_PAYLOAD_BYTES {
        return None;
    }
    let (tick, sent) = payload.split_at(8);
    let tick = u64::from_be_bytes(tick.try_into().ok()?);
    let sent_us = u64::from_be_bytes(sent.try_into().ok()?);
    Some((tick, sent_us))
}

impl OutageTracker {
    /// A probe from `source` with `payload` arrived at `arrival_us` (Unix µs): counted
    /// (with the outage it ends, if any) or a replay (see the module's documentation).
    pub fn arrival(&mut self, source: &NodeName, payload: &[u8], arrival_us: u64) -> Arrival {
        let Some((tick, sent_us)) = parse_probe(payload) else {
            return Arrival::Counted(None);
        };
        let probe = LastProbe {
            tick,
            sent_us,
            arrival_us,
            seen: 1,
        };
        debug_assert!(self.sources.len() <= FLOW_SOURCES_MAX);
        let Some(last) = self.sources.get_mut(source) else {
            if self.sources.len() < FLOW_SOURCES_MAX {
                self.sources.insert(source.clone(), probe);
            }
            return Arrival::Counted(None);
        };
        if tick > last.tick {
            let outage_us = outage(*last, probe);
            let shift = tick - last.tick;
            let seen = if shift < RECENT_TICKS {
                last.seen << shift
            } else {
                0
            };
            *last = LastProbe {
                seen: seen | 1,
                ..probe
            };
            return Arrival::Counted(outage_us);
        }
        if sent_us > last.sent_us {
            // Tick numbers start again, at a later time: the flows were restarted.
            *last = probe;
            return Arrival::Counted(None);
        }
        let back = last.tick - tick;
        let bit = 1u64.checked_shl(u32::try_from(back).unwrap_or(u32::MAX));
        match bit {
            Some(bit) if back < RECENT_TICKS && last.seen & bit == 0 => {
                last.seen |= bit;
                Arrival::Counted(None)
            }
            _ => Arrival::Replayed,
        }
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.sources.len()
    }
}

/// The gap between two probes of one source, if it was an outage.
fn outage(before: LastProbe, after: LastProbe) -> Option<u64> {
    let ticks = after.tick.checked_sub(before.tick).filter(|&t| t > 0)?;
    let sent_us = after.sent_us.checked_sub(before.sent_us)?;
    let gap_us = after.arrival_us.checked_sub(before.arrival_us)?;
    let interval_us = sent_us / ticks;
    (interval_us > 0 && gap_us > OUTAGE_INTERVALS_MIN.saturating_mul(interval_us)).then_some(gap_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(tick: u64, sent_us: u64) -> Vec<u8> {
        let mut bytes = tick.to_be_bytes().to_vec();
        bytes.extend_from_slice(&sent_us.to_be_bytes());
        bytes
    }

    const INTERVAL_US: u64 = 10_000;

    /// Probe `tick` of a 10 ms flow, sent at `tick * 10 ms` and arriving 1 ms later plus
    /// `delay_us`.
    fn probe(
        tracker: &mut OutageTracker,
        source: &NodeName,
        tick: u64,
        delay_us: u64,
    ) -> Option<u64> {
        match arrive(tracker, source, tick, delay_us) {
            Arrival::Counted(outage) => outage,
            Arrival::Replayed => panic!("probe {tick} taken for a replay"),
        }
    }

    fn arrive(tracker: &mut OutageTracker, source: &NodeName, tick: u64, delay_us: u64) -> Arrival {
        let sent_us = 1_000_000 + tick * INTERVAL_US;
        tracker.arrival(source, &payload(tick, sent_us), sent_us + 1_000 + delay_us)
    }

    /// A Byzantine neighbour's replays (of the latest probe, of a recent one, of a stale
    /// one) are not arrivals and do not hide an outage; a reordered probe counts once.
    #[test]
    fn replayed_probes_count_for_nothing_and_reordered_ones_once() {
        let mut tracker = OutageTracker::default();
        let a = NodeName::new("a").unwrap();
        for tick in 0..100 {
            assert_eq!(probe(&mut tracker, &a, tick, 0), None);
        }
        assert_eq!(arrive(&mut tracker, &a, 99, 500), Arrival::Replayed);
        assert_eq!(arrive(&mut tracker, &a, 90, 500), Arrival::Replayed);
        assert_eq!(arrive(&mut tracker, &a, 3, 900_000), Arrival::Replayed);
        // Probes 100..=119 are lost; replays of old ones arrive meanwhile: still an
        // outage of 20 intervals from 99 to 120.
        assert_eq!(arrive(&mut tracker, &a, 50, 150_000), Arrival::Replayed);
        assert_eq!(probe(&mut tracker, &a, 120, 0), Some(21 * INTERVAL_US));
        // 122 overtakes 121: both count, 121 once.
        assert_eq!(probe(&mut tracker, &a, 122, 0), None);
        assert_eq!(
            arrive(&mut tracker, &a, 121, 20_000),
            Arrival::Counted(None)
        );
        assert_eq!(arrive(&mut tracker, &a, 121, 20_000), Arrival::Replayed);
    }

    #[test]
    fn lost_probes_make_an_outage_of_the_arrival_gap() {
        let mut tracker = OutageTracker::default();
        let a = NodeName::new("a").unwrap();
        assert_eq!(probe(&mut tracker, &a, 0, 0), None);
        assert_eq!(probe(&mut tracker, &a, 1, 0), None);
        // Probes 2..=17 were lost: 160 ms between the last before and the first after.
        assert_eq!(probe(&mut tracker, &a, 18, 0), Some(17 * INTERVAL_US));
        assert_eq!(probe(&mut tracker, &a, 19, 0), None);
        // Two lost probes: a gap of 3 intervals is not more than 3 intervals.
        assert_eq!(probe(&mut tracker, &a, 22, 0), None);
        // A late probe after an on-time one: a gap of 3.5 intervals counts.
        assert_eq!(probe(&mut tracker, &a, 25, 5_000), Some(35_000));
    }

    #[test]
    fn a_late_sender_is_not_an_outage() {
        let mut tracker = OutageTracker::default();
        let a = NodeName::new("a").unwrap();
        let at = |sent_us: u64| sent_us + 500;
        let counted = Arrival::Counted(None);
        assert_eq!(tracker.arrival(&a, &payload(0, 0), at(0)), counted);
        // The sender was busy for 100 ms and skipped ticks: one tick, 100 ms later.
        assert_eq!(
            tracker.arrival(&a, &payload(1, 100_000), at(100_000)),
            counted
        );
    }

    #[test]
    fn restarted_or_reordered_flows_start_afresh() {
        let mut tracker = OutageTracker::default();
        let a = NodeName::new("a").unwrap();
        assert_eq!(probe(&mut tracker, &a, 500, 0), None);
        // The sender restarted its flows a minute later: tick 0 again.
        let later_us = 60_000_000;
        let counted = Arrival::Counted(None);
        assert_eq!(
            tracker.arrival(&a, &payload(0, later_us), later_us),
            counted
        );
        assert_eq!(
            tracker.arrival(
                &a,
                &payload(1, later_us + INTERVAL_US),
                later_us + INTERVAL_US
            ),
            counted
        );
        // Not a probe payload.
        assert_eq!(tracker.arrival(&a, b"hello", later_us * 2), counted);
    }

    #[test]
    fn sources_are_bounded() {
        let mut tracker = OutageTracker::default();
        for i in 0..FLOW_SOURCES_MAX + 5 {
            let source = NodeName::new(&format!("s{i}")).unwrap();
            probe(&mut tracker, &source, 0, 0);
        }
        assert_eq!(tracker.sources(), FLOW_SOURCES_MAX);
    }

    #[test]
    fn buckets_ascend_from_10_ms_to_30_s() {
        let buckets = OUTAGE_BUCKETS_SECONDS;
        assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((buckets[0], buckets[buckets.len() - 1]), (0.01, 30.0));
    }
}
