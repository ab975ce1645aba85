//! A Byzantine sender, for fault injection: with every frame it sends, it also sends a
//! forged copy (one byte flipped, so signatures and decoders must refuse it) and replays
//! of frames it sent before (stale link-state, probes and data).
//!
//! The node daemon's chaos layer (`--chaos` with `byzantine = true`) and the digital
//! twin's `byzantine` scenario both use [`ByzantineSender`], so the lab's fault and the
//! twin's model of it send the same extra frames. Like the rest of this crate it does no
//! I/O and draws no randomness of its own: the caller passes a source of uniform numbers.

use std::collections::VecDeque;

/// Frames kept for replay.
pub const REPLAY_FRAMES_MAX: usize = 64;
/// Extra frames sent per real frame: one forged copy and up to this many minus one
/// replays.
pub const BYZANTINE_EXTRA_FRAMES: usize = 3;
/// What the forged copy's flipped byte is XORed with.
const FORGE_MASK: u8 = 0x5a;

/// The frames a Byzantine sender recorded, generic over the byte container (`Vec<u8>`,
/// `Box<[u8]>`, or the daemon's reference-counted `bytes::Bytes`).
#[derive(Clone, Debug)]
pub struct ByzantineSender<F> {
    /// The last frames sent, oldest first, at most [`REPLAY_FRAMES_MAX`].
    recorded: VecDeque<F>,
}

impl<F> Default for ByzantineSender<F> {
    fn default() -> Self {
        ByzantineSender {
            recorded: VecDeque::with_capacity(REPLAY_FRAMES_MAX),
        }
    }
}

impl<F: Clone + AsRef<[u8]> + From<Vec<u8>>> ByzantineSender<F> {
    /// A sender that has recorded nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames recorded for replay.
    pub fn recorded(&self) -> usize {
        self.recorded.len()
    }

    /// The extra frames to send along with `frame`: a forged copy (the byte at a random
    /// position XOR 0x5a) first, then up to two replays drawn from the last
    /// [`REPLAY_FRAMES_MAX`] frames (with replacement). `frame` is then recorded.
    /// `unit` returns uniform numbers in `[0, 1)`; it is called once for the position
    /// and once per replay, in that order. An empty frame gets no extras.
    pub fn extras(&mut self, frame: &F, mut unit: impl FnMut() -> f64) -> Vec<F> {
        let bytes = frame.as_ref();
        if bytes.is_empty() {
            return Vec::new();
        }
        let mut extras = Vec::with_capacity(BYZANTINE_EXTRA_FRAMES);
        let mut forged = bytes.to_vec();
        let at = pick(unit(), forged.len());
        forged[at] ^= FORGE_MASK;
        extras.push(F::from(forged));
        while extras.len() < BYZANTINE_EXTRA_FRAMES && !self.recorded.is_empty() {
            let k = pick(unit(), self.recorded.len());
            extras.push(self.recorded[k].clone());
        }
        if self.recorded.len() >= REPLAY_FRAMES_MAX {
            self.recorded.pop_front();
        }
        self.recorded.push_back(frame.clone());
        debug_assert!(self.recorded.len() <= REPLAY_FRAMES_MAX);
        debug_assert!(!extras.is_empty() && extras.len() <= BYZANTINE_EXTRA_FRAMES);
        extras
    }
}

/// An index in `0..len` (`len` > 0) from a uniform number in `[0, 1)`.
fn pick(uniform: f64, len: usize) -> usize {
    (uniform * len as f64) as usize % len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forges_one_byte_then_replays_recorded_frames() {
        let mut sender = ByzantineSender::<Vec<u8>>::new();
        let mut draws = [0.5, 0.0, 0.99, 0.25].into_iter().cycle();
        assert!(sender.extras(&Vec::new(), || 0.0).is_empty());
        let first = sender.extras(&b"frame-1".to_vec(), || draws.next().unwrap());
        assert_eq!(first.len(), 1, "nothing to replay yet: one forged copy");
        let differing: Vec<usize> = (0..7).filter(|&i| first[0][i] != b"frame-1"[i]).collect();
        assert_eq!(differing, [3], "exactly the drawn byte is flipped");
        assert_eq!(first[0][3], b'm' ^ FORGE_MASK);
        let second = sender.extras(&b"frame-2".to_vec(), || draws.next().unwrap());
        assert_eq!(second.len(), BYZANTINE_EXTRA_FRAMES);
        assert_eq!(second[1], b"frame-1", "a stale replay");
        assert_eq!(second[2], b"frame-1");
        assert_eq!(sender.recorded(), 2);
    }

    #[test]
    fn keeps_at_most_the_last_frames() {
        let mut sender = ByzantineSender::<Box<[u8]>>::new();
        for i in 0..200u32 {
            let frame: Box<[u8]> = i.to_be_bytes().to_vec().into();
            sender.extras(&frame, || 0.0);
        }
        assert_eq!(sender.recorded(), REPLAY_FRAMES_MAX);
        // Draw 0 picks the oldest recorded frame: number 200 - 64.
        let extras = sender.extras(&vec![1u8].into(), || 0.0);
        assert_eq!(extras[1].as_ref(), (200u32 - 64).to_be_bytes());
    }
}
