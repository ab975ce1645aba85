//! The federated-learning wire format: versioned, bounded, models and updates chunked.
//!
//! Every frame is
//! `version u8 (=1) | kind u8 | body | signature_len u16 | signature`, little endian,
//! at most [`MAX_FRAME`] bytes; the signature covers everything before it (see
//! [`crate::Signer`]). A frame that is short, long, of an unknown version or kind, or
//! that declares more values than it carries is refused with a [`WireError`] naming the
//! field. The body of each kind:
//!
//! - `RoundStart`: round u64, num_params u32, chunks u16, deadline_ms u32, sampled u16
//! - `ModelChunk`: round u64, index u16, offset u32, count u32, count × f32
//! - `UpdateChunk`: round u64, num_samples u64, num_params u32, index u16, chunks u16,
//!   encoding u8, then by encoding
//!   - 0 dense: offset u32, count u32, count × f32
//!   - 1 sparse: count u32, count × (index u32, value f32)
//!   - 2 sparse 8-bit: min f32, step f32, count u32, count × (index u32, code u8);
//!     value = min + code × step

/// Wire format version.
pub const VERSION: u8 = 1;
/// Largest frame accepted or produced.
pub const MAX_FRAME: usize = 64 * 1024;
/// Dense values per chunk (32 KiB of f32).
pub const DENSE_CHUNK: usize = 8192;
/// (index, value) pairs per sparse chunk.
pub const SPARSE_CHUNK: usize = 4096;
/// (index, code) pairs per 8-bit sparse chunk.
pub const SPARSE_Q8_CHUNK: usize = 6553;
/// Largest model accepted (parameters).
pub const MAX_PARAMS: u32 = 16 * 1024 * 1024;

/// The values of one update chunk.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// `values` are parameters `offset..offset + values.len()`.
    Dense {
        /// First parameter index.
        offset: u32,
        /// Values.
        values: Vec<f32>,
    },
    /// (parameter index, value) pairs; parameters not listed are zero.
    Sparse(Vec<(u32, f32)>),
    /// (parameter index, code) pairs, value = `min + code * step`.
    SparseQ8 {
        /// Value of code 0.
        min: f32,
        /// Value step per code.
        step: f32,
        /// Pairs.
        pairs: Vec<(u32, u8)>,
    },
}

/// A federated-learning message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Coordinator to a sampled participant: a round starts; the model follows in
    /// `chunks` [`Message::ModelChunk`]s.
    RoundStart {
        /// Round number, from 1.
        round: u64,
        /// Model size.
        num_params: u32,
        /// Number of model chunks.
        chunks: u16,
        /// Time left to send the update, in milliseconds.
        deadline_ms: u32,
        /// Participants sampled this round.
        sampled: u16,
    },
    /// Coordinator to participant: part of the global model.
    ModelChunk {
        /// Round number.
        round: u64,
        /// Chunk index.
        index: u16,
        /// First parameter index.
        offset: u32,
        /// Values.
        values: Vec<f32>,
    },
    /// Participant to coordinator: part of its update.
    UpdateChunk {
        /// Round the update answers.
        round: u64,
        /// Samples the participant claims.
        num_samples: u64,
        /// Model size the update is for.
        num_params: u32,
        /// Chunk index.
        index: u16,
        /// Number of chunks of this update.
        chunks: u16,
        /// Values.
        payload: Payload,
    },
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame ends before `field`.
    #[error("frame truncated at {0}")]
    Truncated(&'static str),
    /// The frame is larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Unknown version.
    #[error("unsupported wire version {0} (this build speaks {VERSION})")]
    Version(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// Unknown update encoding.
    #[error("unknown update encoding {0}")]
    Encoding(u8),
    /// Bytes after the signature.
    #[error("{0} trailing bytes after the signature")]
    Trailing(usize),
    /// A field out of its bounds.
    #[error("{0}")]
    Bounds(String),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(WireError::Truncated(field))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, f: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, f)?[0])
    }
    fn u16(&mut self, f: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2, f)?.try_into().expect("2")))
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4, f)?.try_into().expect("4")))
    }
    fn u64(&mut self, f: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8, f)?.try_into().expect("8")))
    }
    fn f32(&mut self, f: &'static str) -> Result<f32, WireError> {
        Ok(f32::from_le_bytes(self.take(4, f)?.try_into().expect("4")))
    }
    /// A count of items of `item_bytes` each, checked against the bytes left.
    fn count(&mut self, item_bytes: usize, f: &'static str) -> Result<usize, WireError> {
        let n = self.u32(f)? as usize;
        if n.saturating_mul(item_bytes) > self.bytes.len() - self.pos {
            return Err(WireError::Truncated(f));
        }
        Ok(n)
    }
    fn f32s(&mut self, f: &'static str) -> Result<Vec<f32>, WireError> {
        let n = self.count(4, f)?;
        (0..n).map(|_| self.f32(f)).collect()
    }
}

impl Message {
    /// The round the message belongs to.
    pub fn round(&self) -> u64 {
        match self {
            Message::RoundStart { round, .. }
            | Message::ModelChunk { round, .. }
            | Message::UpdateChunk { round, .. } => *round,
        }
    }

    /// The unsigned part of the frame (what a [`crate::Signer`] signs).
    pub fn encode_body(&self) -> Vec<u8> {
        let mut b = vec![VERSION];
        match self {
            Message::RoundStart {
                round,
                num_params,
                chunks,
                deadline_ms,
                sampled,
            } => {
                b.push(1);
                b.extend(round.to_le_bytes());
                b.extend(num_params.to_le_bytes());
                b.extend(chunks.to_le_bytes());
                b.extend(deadline_ms.to_le_bytes());
                b.extend(sampled.to_le_bytes());
            }
            Message::ModelChunk {
                round,
                index,
                offset,
                values,
            } => {
                b.push(2);
                b.extend(round.to_le_bytes());
                b.extend(index.to_le_bytes());
                b.extend(offset.to_le_bytes());
                put_f32s(&mut b, values);
            }
            Message::UpdateChunk {
                round,
                num_samples,
                num_params,
                index,
                chunks,
                payload,
            } => {
                b.push(3);
                b.extend(round.to_le_bytes());
                b.extend(num_samples.to_le_bytes());
                b.extend(num_params.to_le_bytes());
                b.extend(index.to_le_bytes());
                b.extend(chunks.to_le_bytes());
                match payload {
                    Payload::Dense { offset, values } => {
                        b.push(0);
                        b.extend(offset.to_le_bytes());
                        put_f32s(&mut b, values);
                    }
                    Payload::Sparse(pairs) => {
                        b.push(1);
                        b.extend((pairs.len() as u32).to_le_bytes());
                        for (i, v) in pairs {
                            b.extend(i.to_le_bytes());
                            b.extend(v.to_le_bytes());
                        }
                    }
                    Payload::SparseQ8 { min, step, pairs } => {
                        b.push(2);
                        b.extend(min.to_le_bytes());
                        b.extend(step.to_le_bytes());
                        b.extend((pairs.len() as u32).to_le_bytes());
                        for (i, c) in pairs {
                            b.extend(i.to_le_bytes());
                            b.push(*c);
                        }
                    }
                }
            }
        }
        b
    }

    /// The full frame: body, then the signature with its length.
    pub fn encode(&self, signature: &[u8]) -> Vec<u8> {
        let mut b = self.encode_body();
        b.extend((signature.len() as u16).to_le_bytes());
        b.extend(signature);
        b
    }

    /// Parse a frame: the message, the signed body and the signature.
    pub fn decode(bytes: &[u8]) -> Result<(Message, &[u8], &[u8]), WireError> {
        if bytes.len() > MAX_FRAME {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let msg = match r.u8("kind")? {
            1 => Message::RoundStart {
                round: r.u64("round")?,
                num_params: r.u32("num_params")?,
                chunks: r.u16("chunks")?,
                deadline_ms: r.u32("deadline_ms")?,
                sampled: r.u16("sampled")?,
            },
            2 => Message::ModelChunk {
                round: r.u64("round")?,
                index: r.u16("index")?,
                offset: r.u32("offset")?,
                values: r.f32s("values")?,
            },
            3 => {
                let round = r.u64("round")?;
                let num_samples = r.u64("num_samples")?;
                let num_params = r.u32("num_params")?;
                let index = r.u16("index")?;
                let chunks = r.u16("chunks")?;
                let payload = match r.u8("encoding")? {
                    0 => Payload::Dense {
                        offset: r.u32("offset")?,
                        values: r.f32s("values")?,
                    },
                    1 => {
                        let n = r.count(8, "pairs")?;
                        Payload::Sparse(
                            (0..n)
                                .map(|_| Ok((r.u32("pairs")?, r.f32("pairs")?)))
                                .collect::<Result<_, WireError>>()?,
                        )
                    }
                    2 => {
                        let min = r.f32("min")?;
                        let step = r.f32("step")?;
                        let n = r.count(5, "pairs")?;
                        Payload::SparseQ8 {
                            min,
                            step,
                            pairs: (0..n)
                                .map(|_| Ok((r.u32("pairs")?, r.u8("pairs")?)))
                                .collect::<Result<_, WireError>>()?,
                        }
                    }
                    e => return Err(WireError::Encoding(e)),
                };
                Message::UpdateChunk {
                    round,
                    num_samples,
                    num_params,
                    index,
                    chunks,
                    payload,
                }
            }
            k => return Err(WireError::Kind(k)),
        };
        if let Message::RoundStart { num_params, .. } | Message::UpdateChunk { num_params, .. } =
            &msg
        {
            if *num_params > MAX_PARAMS {
                return Err(WireError::Bounds(format!(
                    "num_params {num_params} exceeds the limit of {MAX_PARAMS}"
                )));
            }
        }
        let body_end = r.pos;
        let sig_len = r.u16("signature_len")? as usize;
        let sig_start = r.pos;
        r.take(sig_len, "signature")?;
        if r.pos != bytes.len() {
            return Err(WireError::Trailing(bytes.len() - r.pos));
        }
        Ok((
            msg,
            &bytes[..body_end],
            &bytes[sig_start..sig_start + sig_len],
        ))
    }
}

fn put_f32s(b: &mut Vec<u8>, values: &[f32]) {
    b.extend((values.len() as u32).to_le_bytes());
    for v in values {
        b.extend(v.to_le_bytes());
    }
}

/// Split a model into [`Message::ModelChunk`]s of at most [`DENSE_CHUNK`] values.
pub fn model_chunks(round: u64, model: &[f32]) -> Vec<Message> {
    model
        .chunks(DENSE_CHUNK)
        .enumerate()
        .map(|(i, c)| Message::ModelChunk {
            round,
            index: i as u16,
            offset: (i * DENSE_CHUNK) as u32,
            values: c.to_vec(),
        })
        .collect()
}

/// Number of dense chunks for a model of `num_params`.
pub fn dense_chunk_count(num_params: usize) -> usize {
    num_params.div_ceil(DENSE_CHUNK).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::RoundStart {
                round: 3,
                num_params: 10,
                chunks: 1,
                deadline_ms: 500,
                sampled: 4,
            },
            Message::ModelChunk {
                round: 3,
                index: 0,
                offset: 0,
                values: vec![1.0, -2.5],
            },
            Message::UpdateChunk {
                round: 3,
                num_samples: 7,
                num_params: 10,
                index: 0,
                chunks: 1,
                payload: Payload::Sparse(vec![(1, 0.5), (9, -1.0)]),
            },
            Message::UpdateChunk {
                round: 3,
                num_samples: 7,
                num_params: 10,
                index: 0,
                chunks: 1,
                payload: Payload::SparseQ8 {
                    min: -1.0,
                    step: 0.01,
                    pairs: vec![(2, 255)],
                },
            },
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let frame = m.encode(b"sig");
            let (back, body, sig) = Message::decode(&frame).unwrap();
            assert_eq!(back, m);
            assert_eq!(body, &m.encode_body()[..]);
            assert_eq!(sig, b"sig");
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for m in samples() {
            let frame = m.encode(b"");
            for cut in 0..frame.len() {
                assert!(
                    Message::decode(&frame[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
            let mut long = frame.clone();
            long.push(0);
            assert_eq!(Message::decode(&long).unwrap_err(), WireError::Trailing(1));
        }
    }

    #[test]
    fn bad_version_kind_and_huge_counts() {
        assert_eq!(Message::decode(&[2, 1]).unwrap_err(), WireError::Version(2));
        assert_eq!(Message::decode(&[1, 9]).unwrap_err(), WireError::Kind(9));
        let mut f = vec![1, 2];
        f.extend(1u64.to_le_bytes());
        f.extend(0u16.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(u32::MAX.to_le_bytes());
        assert_eq!(
            Message::decode(&f).unwrap_err(),
            WireError::Truncated("values")
        );
        assert!(matches!(
            Message::decode(&vec![0u8; MAX_FRAME + 1]),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn chunks_stay_under_the_frame_limit() {
        let m = vec![0.5f32; DENSE_CHUNK * 2 + 3];
        let chunks = model_chunks(1, &m);
        assert_eq!(chunks.len(), dense_chunk_count(m.len()));
        for c in chunks {
            assert!(c.encode(&[0u8; 256]).len() <= MAX_FRAME);
        }
    }
}
