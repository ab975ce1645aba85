//! Fault injection for the chaos lab: delay, jitter and loss on what this node sends,
//! since `tc netem` is not available everywhere. Off unless the node is started with
//! `--chaos FILE`; the file is re-read every 100 ms, so the lab injects and lifts faults
//! by rewriting it. A missing file means no fault; a malformed one is logged and the
//! previous settings stay.
//!
//! ```toml
//! delay_ms = 20          # added to every frame sent (default 0)
//! jitter_ms = 5          # plus a uniform 0..jitter_ms (default 0)
//! loss = 0.1             # fraction of frames dropped (default 0)
//! neighbours = ["n2"]    # only frames to these neighbours (default: all)
//! byzantine = true       # also send forged (bit-flipped) and stale (replayed) frames
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use x0tta6bl4_proto::ByzantineSender;

/// How often the chaos file is re-read.
const RELOAD_INTERVAL: Duration = Duration::from_millis(100);
/// Largest delay or jitter accepted, so a typo cannot stall a node for hours.
const DELAY_MS_MAX: u64 = 60_000;

/// The settings in the chaos file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSettings {
    /// Fixed delay added to every frame sent, ms.
    #[serde(default)]
    pub delay_ms: u64,
    /// Extra uniform random delay 0..jitter_ms, ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Fraction of frames dropped.
    #[serde(default)]
    pub loss: f64,
    /// Neighbours the fault applies to (empty: all).
    #[serde(default)]
    pub neighbours: Vec<String>,
    /// Behave like a Byzantine node: with every frame, also send a forged copy (bytes
    /// flipped, so signatures and decoders must refuse it) and replay older frames
    /// (stale link-state and probes).
    #[serde(default)]
    pub byzantine: bool,
}

impl ChaosSettings {
    /// Parse and check a chaos file.
    pub fn from_toml(text: &str) -> Result<ChaosSettings, String> {
        let settings: ChaosSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        if !(0.0..=1.0).contains(&settings.loss) {
            return Err(format!(
                "loss = {}: use a fraction from 0 to 1",
                settings.loss
            ));
        }
        if settings.delay_ms > DELAY_MS_MAX || settings.jitter_ms > DELAY_MS_MAX {
            return Err(format!(
                "delay_ms and jitter_ms must be at most {DELAY_MS_MAX}"
            ));
        }
        Ok(settings)
    }
}

/// What to do with one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Send it now.
    Send,
    /// Drop it.
    Drop,
    /// Send it after this delay.
    Delay(Duration),
}

/// The live fault-injection state of one node.
#[derive(Debug)]
pub struct Chaos {
    settings: RwLock<ChaosSettings>,
    rng: AtomicU64,
    /// The Byzantine sender (the sans-IO core's, shared with the digital twin).
    byzantine: std::sync::Mutex<ByzantineSender<bytes::Bytes>>,
}

impl Chaos {
    /// A state with fixed settings (tests) and a seed.
    pub fn new(settings: ChaosSettings, seed: u64) -> Chaos {
        Chaos {
            settings: RwLock::new(settings),
            rng: AtomicU64::new(seed | 1),
            byzantine: std::sync::Mutex::new(ByzantineSender::new()),
        }
    }

    /// Start watching `path` (re-read every 100 ms) until the runtime ends.
    pub fn watch(path: PathBuf) -> Arc<Chaos> {
        let seed = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15;
        let chaos = Arc::new(Chaos::new(ChaosSettings::default(), seed));
        let watched = chaos.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text != last {
                    match ChaosSettings::from_toml(&text) {
                        Ok(settings) => {
                            tracing::info!(file = %path.display(), ?settings, "chaos settings changed");
                            if let Ok(mut current) = watched.settings.write() {
                                *current = settings;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(file = %path.display(), %error, "ignoring a malformed chaos file")
                        }
                    }
                    last = text;
                }
                tokio::time::sleep(RELOAD_INTERVAL).await;
            }
        });
        chaos
    }

    /// A uniform number in 0..1 (xorshift; fault injection needs no better).
    fn uniform(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Byzantine node's extra frames to send along with `frame` to `neighbour`: one
    /// forged copy and replays of older frames. Empty unless `byzantine` is on.
    pub fn byzantine_extras(&self, neighbour: &str, frame: &bytes::Bytes) -> Vec<bytes::Bytes> {
        let on = self.settings.read().is_ok_and(|s| {
            s.byzantine && (s.neighbours.is_empty() || s.neighbours.iter().any(|n| n == neighbour))
        });
        let Ok(mut sender) = self.byzantine.lock() else {
            return Vec::new();
        };
        if !on {
            return Vec::new();
        }
        sender.extras(frame, || self.uniform())
    }

    /// Decide the fate of one frame to `neighbour`.
    pub fn decide(&self, neighbour: &str) -> Verdict {
        let Ok(settings) = self.settings.read() else {
            return Verdict::Send;
        };
        let applies =
            settings.neighbours.is_empty() || settings.neighbours.iter().any(|n| n == neighbour);
        if !applies {
            return Verdict::Send;
        }
        if settings.loss > 0.0 && self.uniform() < settings.loss {
            return Verdict::Drop;
        }
        let jitter = settings.jitter_ms as f64 * self.uniform();
        let delay = Duration::from_secs_f64((settings.delay_ms as f64 + jitter) / 1e3);
        if delay.is_zero() {
            Verdict::Send
        } else {
            Verdict::Delay(delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_proto::byzantine::BYZANTINE_EXTRA_FRAMES;

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../../examples/chaos.toml");
        let settings = ChaosSettings::from_toml(text).unwrap();
        assert_eq!((settings.delay_ms, settings.jitter_ms), (50, 10));
        assert_eq!(settings.neighbours, ["n2"]);
    }

    #[test]
    fn settings_parse_and_apply() {
        assert_eq!(
            ChaosSettings::from_toml("").unwrap(),
            ChaosSettings::default()
        );
        assert!(ChaosSettings::from_toml("loss = 2.0").is_err());
        assert!(
            ChaosSettings::from_toml("delay = 3").is_err(),
            "unknown key"
        );
        let s = ChaosSettings::from_toml("delay_ms = 20\njitter_ms = 10\nneighbours = [\"n2\"]")
            .unwrap();
        let chaos = Chaos::new(s, 7);
        assert_eq!(chaos.decide("n3"), Verdict::Send);
        for _ in 0..100 {
            let Verdict::Delay(d) = chaos.decide("n2") else {
                panic!("delayed")
            };
            assert!(
                d >= Duration::from_millis(20) && d <= Duration::from_millis(30),
                "{d:?}"
            );
        }
        let byzantine = Chaos::new(
            ChaosSettings {
                byzantine: true,
                ..ChaosSettings::default()
            },
            5,
        );
        let first = byzantine.byzantine_extras("n1", &bytes::Bytes::from_static(b"frame-1"));
        assert_eq!(first.len(), 1, "nothing to replay yet: one forged copy");
        assert_ne!(first[0].as_ref(), b"frame-1");
        let second = byzantine.byzantine_extras("n1", &bytes::Bytes::from_static(b"frame-2"));
        assert_eq!(second.len(), BYZANTINE_EXTRA_FRAMES);
        assert_eq!(second[1].as_ref(), b"frame-1", "a stale replay");
        assert!(chaos
            .byzantine_extras("n2", &bytes::Bytes::from_static(b"x"))
            .is_empty());
        let lossy = Chaos::new(
            ChaosSettings {
                loss: 0.5,
                ..ChaosSettings::default()
            },
            3,
        );
        let dropped = (0..1000)
            .filter(|_| lossy.decide("n1") == Verdict::Drop)
            .count();
        assert!((400..600).contains(&dropped), "{dropped}");
    }
}
