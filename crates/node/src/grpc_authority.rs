//! The Workload API server's answer to gRPC-core clients on a unix socket.
//!
//! gRPC-core (grpcio for Python, hence py-spiffe; grpc-java does the same) names a
//! unix-socket server by its socket path, percent-encoded, in the HTTP/2 `:authority`
//! pseudo-header (`tmp%2Fagent.sock`). h2, under hyper and tonic, refuses such an
//! authority as malformed and resets the stream with `PROTOCOL_ERROR` (hyperium/h2#487,
//! open; grpc/grpc#38142), so those clients could not fetch an SVID from
//! `x0tta6bl4 ca workload-api` at all.
//!
//! h2 has no option to relax that check, so each connection is relayed through
//! [`relay`]: the client's frames pass unchanged except its header blocks (HEADERS and
//! their CONTINUATION frames), which are decoded with the client's HPACK context
//! (fluke-hpack, a maintained fork of the `hpack` crate) and written again as literals
//! that never touch the server's dynamic table, with an `:authority` that does not parse
//! as a URI authority replaced by `localhost` (what grpc-go and Kubernetes send on a
//! unix socket). The server's frames pass unchanged. The authority carries no meaning
//! on a unix socket: the peer is whoever can open the socket.
//!
//! Written by hand: only the frame layout of RFC 9113 §4.1 and §6.2/§6.10 and the HPACK
//! literal encoding of RFC 7541 §6.2.2 are needed; the HPACK decoding (Huffman, dynamic
//! table) is the library's.

use std::io;

use fluke_hpack::encoder::encode_integer_into;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame written: the SETTINGS_MAX_FRAME_SIZE every peer must accept.
const FRAME_OUT_MAX: usize = 16_384;
/// The largest header block accepted from a client (a Workload API request is < 1 KiB).
pub(crate) const HEADER_BLOCK_MAX: usize = 64 * 1024;
/// The server's HPACK dynamic table size (h2's default; the client's table for us).
const HEADER_TABLE_SIZE: usize = 4096;
/// The authority written in place of one h2 refuses.
const LOCALHOST: &[u8] = b"localhost";

/// Relay one connection: `client` ↔ `server`, the client's header blocks rewritten.
/// Ends when the server's side has ended (the client's requests would go nowhere), or
/// when both have; a malformed client stream closes the server's side (the server then
/// ends the connection).
pub(crate) async fn relay(client: tokio::net::UnixStream, server: tokio::net::UnixStream) {
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    let up = async {
        if let Err(error) = requests(client_read, server_write).await {
            tracing::debug!(%error, "Workload API connection closed");
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => (&mut down).await,
        () = &mut down => {}
    }
}

/// Copy the client's byte stream to the server, header blocks rewritten.
async fn requests(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> io::Result<()> {
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: nothing to rewrite, let the server answer.
        tokio::io::copy(&mut from, &mut to).await?;
        return to.shutdown().await;
    }
    let mut rewriter = Rewriter::default();
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return to.shutdown().await;
            }
            Err(error) => return Err(error),
        }
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; length];
        from.read_exact(&mut payload).await?;
        let out = rewriter
            .frame(head, payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        to.write_all(&out).await?;
    }
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Pending {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// The client-to-server half of a connection, frame by frame (sans-IO: bytes in, bytes out).
pub(crate) struct Rewriter {
    decoder: fluke_hpack::Decoder<'static>,
    pending: Option<Pending>,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        let mut decoder = fluke_hpack::Decoder::new();
        // The client's table may not outgrow the server's SETTINGS_HEADER_TABLE_SIZE
        // (h2's default, which tonic keeps).
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            decoder,
            pending: None,
        }
    }
}

impl Rewriter {
    /// One frame from the client (its 9-byte header and payload) → the bytes to send on.
    pub(crate) fn frame(&mut self, head: [u8; 9], payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let (kind, flags) = (head[3], head[4]);
        let stream = [head[5] & 0x7f, head[6], head[7], head[8]];
        if let Some(pending) = &mut self.pending {
            if kind != CONTINUATION || stream != pending.stream {
                return Err(format!(
                    "frame type {kind} where a CONTINUATION of stream {} was due",
                    u32::from_be_bytes(pending.stream)
                ));
            }
            pending.block.extend_from_slice(&payload);
            if pending.block.len() > HEADER_BLOCK_MAX {
                return Err(format!("a header block over {HEADER_BLOCK_MAX} bytes"));
            }
            if flags & END_HEADERS == 0 {
                return Ok(Vec::new());
            }
            let pending = self.pending.take().expect("pending");
            return self.emit(pending);
        }
        match kind {
            HEADERS => {
                let mut body = &payload[..];
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let (&length, rest) = body.split_first().ok_or("HEADERS: no pad length")?;
                    pad = usize::from(length);
                    body = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let (fields, rest) = body
                        .split_first_chunk::<5>()
                        .ok_or("HEADERS: priority fields cut short")?;
                    priority = Some(*fields);
                    body = rest;
                }
                let body = body
                    .get(
                        ..body
                            .len()
                            .checked_sub(pad)
                            .ok_or("HEADERS: padding longer than the frame")?,
                    )
                    .unwrap_or_default();
                let pending = Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    block: body.to_vec(),
                };
                if flags & END_HEADERS == 0 {
                    self.pending = Some(pending);
                    return Ok(Vec::new());
                }
                self.emit(pending)
            }
            CONTINUATION => Err("a CONTINUATION frame without HEADERS".to_owned()),
            _ => {
                let mut out = head.to_vec();
                out.extend_from_slice(&payload);
                Ok(out)
            }
        }
    }

    /// Decode a complete header block, write it again, frame it.
    fn emit(&mut self, pending: Pending) -> Result<Vec<u8>, String> {
        let mut block = Vec::with_capacity(pending.block.len() + 32);
        let mut decoded = Ok(());
        self.decoder
            .decode_with_cb(&pending.block, |name, value| {
                let value: &[u8] = if &*name == b":authority"
                    && tonic::codegen::http::uri::Authority::try_from(&*value).is_err()
                {
                    LOCALHOST
                } else {
                    &value
                };
                if decoded.is_ok() {
                    decoded = literal(&mut block, &name, value);
                }
            })
            .map_err(|e| format!("header block: HPACK {e:?}"))?;
        decoded.map_err(|e| e.to_string())?;
        Ok(frames(&pending, &block))
    }
}

/// A header field as "literal without indexing, new name" (RFC 7541 §6.2.2), no Huffman.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> io::Result<()> {
    out.push(0x00);
    encode_integer_into(name.len(), 7, 0, out)?;
    out.extend_from_slice(name);
    encode_integer_into(value.len(), 7, 0, out)?;
    out.extend_from_slice(value);
    Ok(())
}

/// A HEADERS frame (and CONTINUATION frames) carrying `block` for the pending stream.
fn frames(pending: &Pending, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 32);
    let priority = pending.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first = block.len().min(FRAME_OUT_MAX - priority.len());
    let (head, mut rest) = block.split_at(first);
    let mut flags = if pending.end_stream { END_STREAM } else { 0 };
    if pending.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_head(
        &mut out,
        priority.len() + head.len(),
        HEADERS,
        flags,
        pending.stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(FRAME_OUT_MAX));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        frame_head(&mut out, chunk.len(), CONTINUATION, flags, pending.stream);
        out.extend_from_slice(chunk);
        rest = tail;
    }
    out
}

fn frame_head(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    let length = u32::try_from(length)
        .expect("frame under 16 KiB")
        .to_be_bytes();
    out.extend_from_slice(&length[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(decoder: &mut fluke_hpack::Decoder<'static>, block: &[u8]) -> Vec<(String, String)> {
        decoder
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn headers_frame(flags: u8, stream: u8, payload: &[u8]) -> ([u8; 9], Vec<u8>) {
        let mut head = Vec::new();
        frame_head(&mut head, payload.len(), HEADERS, flags, [0, 0, 0, stream]);
        (head.try_into().unwrap(), payload.to_vec())
    }

    /// What grpcio sends on `unix:///tmp/agent.sock`, encoded with indexing as a client
    /// would: the authority becomes `localhost`, everything else stays, and a second
    /// request whose fields come from the client's dynamic table decodes the same.
    #[test]
    fn a_percent_encoded_authority_becomes_localhost() {
        let request: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", b"tmp%2Fagent.sock"),
            (b"workload.spiffe.io", b"true"),
        ];
        let mut client = fluke_hpack::Encoder::new();
        let mut rewriter = Rewriter::default();
        let mut server = fluke_hpack::Decoder::new();
        for stream in [1u8, 3] {
            let block = client.encode(request.iter().copied());
            let (head, payload) = headers_frame(END_HEADERS | END_STREAM, stream, &block);
            let out = rewriter.frame(head, payload).unwrap();
            assert_eq!(out[3], HEADERS);
            assert_eq!(out[4], END_HEADERS | END_STREAM);
            assert_eq!(out[8], stream);
            let fields = decode(&mut server, &out[9..]);
            assert_eq!(fields[3], (":authority".into(), "localhost".into()));
            assert_eq!(fields[2].1, "/SpiffeWorkloadAPI/FetchX509SVID");
            assert_eq!(fields[4], ("workload.spiffe.io".into(), "true".into()));
        }
        // A valid authority is kept.
        let block = client.encode([(&b":authority"[..], &b"localhost:8080"[..])]);
        let (head, payload) = headers_frame(END_HEADERS, 5, &block);
        let out = rewriter.frame(head, payload).unwrap();
        assert_eq!(decode(&mut server, &out[9..])[0].1, "localhost:8080");
    }

    #[test]
    fn padding_priority_and_continuation_are_undone_and_other_frames_pass() {
        let mut client = fluke_hpack::Encoder::new();
        let block = client.encode([
            (&b":authority"[..], &b"%2Frun%2Fagent.sock"[..]),
            (&b":path"[..], &b"/x"[..]),
        ]);
        let (one, two) = block.split_at(3);
        let mut payload = vec![2]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 16]); // priority fields
        payload.extend_from_slice(one);
        payload.extend_from_slice(&[0, 0]);
        let (head, payload) = headers_frame(PADDED | PRIORITY, 7, &payload);
        let mut rewriter = Rewriter::default();
        assert!(rewriter.frame(head, payload).unwrap().is_empty());
        let mut head = Vec::new();
        frame_head(
            &mut head,
            two.len(),
            CONTINUATION,
            END_HEADERS,
            [0, 0, 0, 7],
        );
        let out = rewriter
            .frame(head.try_into().unwrap(), two.to_vec())
            .unwrap();
        assert_eq!(out[4], PRIORITY | END_HEADERS);
        assert_eq!(&out[9..14], &[0x80, 0, 0, 1, 16]);
        let fields = decode(&mut fluke_hpack::Decoder::new(), &out[14..]);
        assert_eq!(fields[0].1, "localhost");
        assert_eq!(fields[1].1, "/x");
        // A DATA frame is copied byte for byte.
        let mut data = Vec::new();
        frame_head(&mut data, 3, 0x0, END_STREAM, [0, 0, 0, 7]);
        let out = rewriter
            .frame(data.clone().try_into().unwrap(), vec![1, 2, 3])
            .unwrap();
        data.extend_from_slice(&[1, 2, 3]);
        assert_eq!(out, data);
    }

    #[test]
    fn a_long_block_is_split_and_broken_input_refused() {
        let long = vec![b'a'; 40_000];
        let mut client = fluke_hpack::Encoder::new();
        let block = client.encode([(&b"x-long"[..], &long[..])]);
        let mut rewriter = Rewriter::default();
        let mut pieces = block.chunks(10_000);
        let first = pieces.next().unwrap();
        let (head, payload) = headers_frame(0, 1, first);
        rewriter.frame(head, payload).unwrap();
        let mut out = Vec::new();
        let count = block.len().div_ceil(10_000);
        for (i, piece) in pieces.enumerate() {
            let flags = if i + 2 == count { END_HEADERS } else { 0 };
            let mut head = Vec::new();
            frame_head(&mut head, piece.len(), CONTINUATION, flags, [0, 0, 0, 1]);
            out = rewriter
                .frame(head.try_into().unwrap(), piece.to_vec())
                .unwrap();
        }
        // HEADERS of 16,384 bytes, then CONTINUATIONs; the block reassembles.
        let mut rest = &out[..];
        let mut reassembled = Vec::new();
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let length = usize::from(rest[1]) << 8 | usize::from(rest[2]);
            assert!(length <= FRAME_OUT_MAX);
            kinds.push((rest[3], rest[4] & END_HEADERS != 0));
            reassembled.extend_from_slice(&rest[9..9 + length]);
            rest = &rest[9 + length..];
        }
        assert_eq!(
            kinds,
            [
                (HEADERS, false),
                (CONTINUATION, false),
                (CONTINUATION, true)
            ]
        );
        let fields = decode(&mut fluke_hpack::Decoder::new(), &reassembled);
        assert_eq!(fields[0].1.len(), 40_000);

        let mut rewriter = Rewriter::default();
        let mut head = Vec::new();
        frame_head(&mut head, 1, CONTINUATION, END_HEADERS, [0, 0, 0, 1]);
        let error = rewriter
            .frame(head.try_into().unwrap(), vec![0])
            .unwrap_err();
        assert!(error.contains("without HEADERS"), "{error}");
        let (head, payload) = headers_frame(PADDED | END_HEADERS, 1, &[9, 1]);
        let error = rewriter.frame(head, payload).unwrap_err();
        assert!(error.contains("padding"), "{error}");
        let (head, payload) = headers_frame(END_HEADERS, 1, &[0xff, 0xff]);
        let error = rewriter.frame(head, payload).unwrap_err();
        assert!(error.contains("HPACK"), "{error}");
        let (head, payload) = headers_frame(0, 1, &[]);
        rewriter.frame(head, payload).unwrap();
        let (head, payload) = headers_frame(END_HEADERS, 1, &[]);
        let error = rewriter.frame(head, payload).unwrap_err();
        assert!(
            error.contains("CONTINUATION of stream 1 was due"),
            "{error}"
        );
    }
}
