//! Protocol timers and limits. Every queue, table and retry count has a named bound here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::heal::HealingConfig;

/// Settings of one protocol instance. The node daemon reads them from the `[protocol]`
/// table of its TOML file (every key is shown in `examples/node.toml`); the twin builds
/// them in code. [`Config::validate`] refuses inconsistent settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Interval between link probes to each neighbour.
    pub probe_interval_ms: u64,
    /// A neighbour is declared down after this many probe intervals without hearing it.
    pub probe_misses_max: u32,
    /// When true the dead interval also grows with the measured RTT
    /// (`srtt + 4 * rttvar + probe_interval`), so slow links are not declared dead early,
    /// and with the link's measured probe loss (more misses in a row on a lossy link, so
    /// that a run of losses fakes a failure with chance 1e-3 at most).
    pub adaptive_timeout: bool,
    /// Suspicion before "down" (0, the default, turns it off). When a probe to a
    /// neighbour goes unanswered past its retransmission timeout (`srtt + 4 * rttvar`,
    /// at least this interval) and nothing else was heard from it, the neighbour is
    /// suspected and probed again at that pace instead of waiting for the next probe
    /// interval; anything heard from it clears the suspicion, and it is declared down
    /// once `probe_misses_max` probes in a row went unanswered (more on a lossy link:
    /// a run of losses may fake a failure with chance 1e-5 at most, for a loss two
    /// standard deviations above the estimate, against 1e-3 for the silence rule,
    /// because suspicion probes come in quick succession) and nothing was heard for a
    /// probe interval. The silence rule (`probe_interval_ms * probe_misses_max`) stays
    /// as the upper bound.
    /// Detection then takes up to one probe interval to notice the first miss plus about
    /// `probe_misses_max` of these intervals, instead of `probe_misses_max` probe
    /// intervals, while steady links carry the same probes as without it.
    pub suspect_probe_interval_ms: u64,
    /// Delay between a link-state change and the route computation it triggers, so a
    /// burst of advertisements costs one computation.
    pub spf_delay_ms: u64,
    /// First retransmission delay of an unacknowledged advertisement (it doubles per try),
    /// or the link's RTT plus four times its variation when that is longer.
    pub flood_retransmit_ms: u64,
    /// Delay before acknowledgements leave, so one frame acknowledges many
    /// advertisements (well below `flood_retransmit_ms`; 0 sends them at once).
    pub ack_delay_ms: u64,
    /// Retransmissions of one advertisement to one neighbour before giving up on it.
    pub flood_retransmits_max: u32,
    /// Interval at which a node re-originates its advertisement even without change.
    pub lsa_refresh_ms: u64,
    /// Lifetime of an advertisement; it is aged out when not refreshed within it.
    pub lsa_lifetime_ms: u64,
    /// Shortest interval between two originations of this node's advertisement; changes
    /// within it are folded into one (it bounds flooding during bursts of link changes).
    pub lsa_min_interval_ms: u64,
    /// Shortest interval between two advertisements that only change link costs.
    pub cost_update_interval_ms: u64,
    /// Relative cost change (percent) that is worth a new advertisement (a change under
    /// half a hop's cost, 5, never is).
    pub cost_change_percent: u32,
    /// Initial hop limit of application messages.
    pub ttl_default: u8,
    /// Largest application payload accepted, in bytes.
    pub payload_bytes_max: usize,
    /// Neighbours kept at once; more are refused.
    pub neighbours_max: usize,
    /// Advertisements kept in the link-state database; new origins beyond it are refused.
    pub lsdb_entries_max: usize,
    /// Transmits queued for the driver; beyond it new ones are dropped and counted.
    pub transmit_queue_max: usize,
    /// Events queued for the driver; beyond it the oldest is dropped and counted.
    pub event_queue_max: usize,
    /// Interval of LAN discovery beacons (0 disables beacons).
    pub beacon_interval_ms: u64,
    /// First redial delay after a failed or lost connection to a known peer address.
    pub dial_backoff_min_ms: u64,
    /// Largest redial delay.
    pub dial_backoff_max_ms: u64,
    /// A dial whose handshake has not completed within this fails and is retried (the
    /// daemon's transport applies it; the twin models it).
    pub dial_timeout_ms: u64,
    /// Interval of the revocation anti-entropy round: each node sends every neighbour a
    /// digest of the revocations it holds, and a neighbour holding others answers with
    /// them (they are also exchanged whenever a link comes up).
    pub revocation_sync_ms: u64,
    /// Revocations kept; beyond it new ones are refused and counted.
    pub revocations_max: usize,
    /// Seed of the instance's random choices (timer jitter). The daemon draws it from
    /// the OS; the twin derives it from the run's seed.
    #[serde(skip)]
    pub rng_seed: u64,
    /// Initial sequence number of this node's advertisements. The daemon uses wall-clock
    /// milliseconds so a restarted node outranks its old advertisements at once.
    #[serde(skip)]
    pub initial_sequence: u64,
    /// The healing loop's thresholds.
    pub healing: HealingConfig,
    /// How a link's advertised cost is computed from its probes: `measured` (the
    /// default: hop, base RTT and loss) or `etx` (De Couto et al.: 10 per expected
    /// transmission, from probe loss alone).
    pub link_cost: LinkCost,
}

/// The link cost metric (`link_cost` in `[protocol]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkCost {
    /// 10 per hop plus 1 per 100 µs of base RTT, scaled up by probe loss (the default).
    #[default]
    Measured,
    /// ETX (De Couto et al., MobiCom 2003): expected transmissions 1 / (d_f * d_r),
    /// the round-trip probe delivery ratio, times 10 (one loss-free hop costs what it
    /// costs under `measured` on a LAN link); RTT is ignored.
    Etx,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_interval_ms: 50,
            probe_misses_max: 3,
            adaptive_timeout: true,
            suspect_probe_interval_ms: 0,
            spf_delay_ms: 5,
            flood_retransmit_ms: 100,
            flood_retransmits_max: 32,
            ack_delay_ms: 5,
            lsa_refresh_ms: 30_000,
            lsa_lifetime_ms: 120_000,
            lsa_min_interval_ms: 10,
            cost_update_interval_ms: 1_000,
            cost_change_percent: 30,
            ttl_default: 128,
            payload_bytes_max: 1024,
            neighbours_max: 1024,
            lsdb_entries_max: 16_384,
            transmit_queue_max: 65_536,
            event_queue_max: 4_096,
            beacon_interval_ms: 250,
            dial_backoff_min_ms: 100,
            dial_backoff_max_ms: 2_000,
            dial_timeout_ms: 1_000,
            revocation_sync_ms: 30_000,
            revocations_max: 4_096,
            rng_seed: 0,
            initial_sequence: 1,
            healing: HealingConfig::default(),
            link_cost: LinkCost::Measured,
        }
    }
}

/// A setting that cannot work, with the key and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol.{key} = {value}: {fix}")]
pub struct ConfigError {
    /// The offending key.
    pub key: &'static str,
    /// Its value, as written.
    pub value: String,
    /// What would be accepted.
    pub fix: String,
}

fn check(ok: bool, key: &'static str, value: impl ToString, fix: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key,
            value: value.to_string(),
            fix: fix.to_owned(),
        })
    }
}

impl Config {
    /// The round-trip time a dial assumes before it has measured one: a tenth of
    /// `dial_timeout_ms`. QUIC retransmits an unanswered first flight after three times
    /// this (RFC 9002: the initial RTT plus four times half of it), then after twice that
    /// again, so a dial sends its handshake at 0, 3/10 and 9/10 of its timeout and one
    /// that starts while a link is cut completes soon after the link returns. (quinn's
    /// default, 333 ms, put the first retransmission at 999 ms, racing a 1 s timeout.)
    pub fn handshake_initial_rtt(&self) -> Duration {
        Duration::from_millis(self.dial_timeout_ms) / 10
    }

    /// Offsets from the start of a dial at which its handshake flight is sent (the first
    /// and its retransmissions) before `dial_timeout_ms` ends it; see
    /// [`Config::handshake_initial_rtt`].
    pub fn handshake_attempts(&self) -> Vec<Duration> {
        let timeout = Duration::from_millis(self.dial_timeout_ms);
        let mut probe_timeout = self.handshake_initial_rtt() * 3;
        let mut at = Duration::ZERO;
        let mut attempts = Vec::new();
        while at < timeout {
            attempts.push(at);
            at += probe_timeout;
            probe_timeout *= 2;
        }
        attempts
    }

    /// Refuse settings that cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        check(
            (5..=60_000).contains(&c.probe_interval_ms),
            "probe_interval_ms",
            c.probe_interval_ms,
            "use 5 to 60000",
        )?;
        check(
            (2..=100).contains(&c.probe_misses_max),
            "probe_misses_max",
            c.probe_misses_max,
            "use 2 to 100",
        )?;
        check(
            c.suspect_probe_interval_ms == 0
                || (2..=c.probe_interval_ms).contains(&c.suspect_probe_interval_ms),
            "suspect_probe_interval_ms",
            c.suspect_probe_interval_ms,
            "use 0 (off) or 2 up to probe_interval_ms",
        )?;
        check(
            c.spf_delay_ms <= 10_000,
            "spf_delay_ms",
            c.spf_delay_ms,
            "use 0 to 10000",
        )?;
        check(
            c.flood_retransmit_ms >= 1,
            "flood_retransmit_ms",
            c.flood_retransmit_ms,
            "use at least 1",
        )?;
        check(
            c.flood_retransmits_max <= 64,
            "flood_retransmits_max",
            c.flood_retransmits_max,
            "use 0 to 64",
        )?;
        check(
            c.lsa_lifetime_ms >= 2 * c.lsa_refresh_ms && c.lsa_refresh_ms >= 1_000,
            "lsa_lifetime_ms",
            c.lsa_lifetime_ms,
            "use at least twice lsa_refresh_ms (and lsa_refresh_ms >= 1000), so refreshes arrive before expiry",
        )?;
        check(
            c.lsa_lifetime_ms <= u64::from(u32::MAX),
            "lsa_lifetime_ms",
            c.lsa_lifetime_ms,
            "use at most 4294967295",
        )?;
        check(
            (1..=1000).contains(&c.cost_change_percent),
            "cost_change_percent",
            c.cost_change_percent,
            "use 1 to 1000",
        )?;
        check(
            c.ttl_default >= 1,
            "ttl_default",
            c.ttl_default,
            "use 1 to 255",
        )?;
        check(
            (1..=16_384).contains(&c.payload_bytes_max),
            "payload_bytes_max",
            c.payload_bytes_max,
            "use 1 to 16384",
        )?;
        check(
            (100..=3_600_000).contains(&c.revocation_sync_ms),
            "revocation_sync_ms",
            c.revocation_sync_ms,
            "use 100 to 3600000 (an hour)",
        )?;
        check(
            (1..=1_000_000).contains(&c.revocations_max),
            "revocations_max",
            c.revocations_max,
            "use 1 to 1000000",
        )?;
        check(
            (1..=1024).contains(&c.neighbours_max),
            "neighbours_max",
            c.neighbours_max,
            "use 1 to 1024",
        )?;
        check(
            (2..=1_000_000).contains(&c.lsdb_entries_max),
            "lsdb_entries_max",
            c.lsdb_entries_max,
            "use 2 to 1000000",
        )?;
        check(
            c.transmit_queue_max >= 16,
            "transmit_queue_max",
            c.transmit_queue_max,
            "use at least 16",
        )?;
        check(
            c.event_queue_max >= 16,
            "event_queue_max",
            c.event_queue_max,
            "use at least 16",
        )?;
        check(
            c.dial_backoff_min_ms >= 1 && c.dial_backoff_min_ms <= c.dial_backoff_max_ms,
            "dial_backoff_min_ms",
            c.dial_backoff_min_ms,
            "use at least 1 and at most dial_backoff_max_ms",
        )?;
        check(
            (10..=60_000).contains(&c.dial_timeout_ms),
            "dial_timeout_ms",
            c.dial_timeout_ms,
            "use 10 to 60000",
        )?;
        self.healing.validate()
    }

    pub(crate) fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_retransmissions_fall_inside_the_dial_timeout() {
        let ms = Duration::from_millis;
        let config = Config::default();
        assert_eq!(config.handshake_initial_rtt(), ms(100));
        assert_eq!(config.handshake_attempts(), [ms(0), ms(300), ms(900)]);
        let slow = Config {
            dial_timeout_ms: 10,
            ..Config::default()
        };
        assert_eq!(slow.handshake_attempts(), [ms(0), ms(3), ms(9)]);
    }

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn refuses_short_lifetime() {
        let config = Config {
            lsa_lifetime_ms: 1_000,
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, "lsa_lifetime_ms");
        assert!(err.to_string().contains("twice"));
    }

    #[test]
    fn suspicion_paces_between_two_ms_and_the_probe_interval() {
        for (ms, ok) in [(0, true), (1, false), (2, true), (50, true), (51, false)] {
            let config = Config {
                suspect_probe_interval_ms: ms,
                ..Config::default()
            };
            match config.validate() {
                Ok(()) => assert!(ok, "{ms} accepted"),
                Err(err) => {
                    assert!(!ok, "{ms} refused: {err}");
                    assert_eq!(err.key, "suspect_probe_interval_ms");
                    assert!(err.to_string().contains("probe_interval_ms"), "{err}");
                }
            }
        }
    }
}
