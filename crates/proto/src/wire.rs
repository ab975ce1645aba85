//! The wire format: versioned, every length prefixed and bounded, every decode checked.
//!
//! ```text
//! frame   = version:u8 (=1) kind:u8 body
//! name    = len:u8 bytes            (1..=64 bytes of [A-Za-z0-9._-])
//! bytes16 = len:u16 bytes
//! Probe    (1) = seq:u32 sent_us:u64
//! ProbeAck (2) = seq:u32 echo_us:u64
//! LsUpdate (3) = count:u16 (lifetime_ms:u32 lsa)*           1..=64 advertisements
//!   lsa        = origin:name sequence:u64 links:u16 (neighbour:name cost:u32)*
//!                credential:bytes16 signature:bytes16
//! LsAck    (4) = count:u16 (origin:name sequence:u64)*       1..=256 acknowledgements
//! Data     (5) = src:name dst:name ttl:u8 channel:u8 id:u64 payload:bytes16
//! Beacon   (6) = name:name port:u16
//! Revocations      (7) = count:u16 bytes16*                   1..=64 revocations
//! RevocationDigest (8) = count:u32 digest:u64 reply_wanted:u8 (0 or 1)
//! Addresses (9) = count:u16 record*                          1..=16 records
//!   record     = origin:name sequence:u64 n:u8 addr*         1..=8 addresses
//!                credential:bytes16 signature:bytes16
//!   addr       = family:u8 (4 or 6) ip:(4 or 16 bytes) port:u16 (not 0)
//! ```
//! All integers are big-endian. A frame with bytes left over after its body is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::name::{NameError, NodeName};

/// The only protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Largest frame accepted from the network, in bytes.
pub const FRAME_BYTES_MAX: usize = 65_535;
/// Most links one advertisement may list.
pub const LINKS_MAX: usize = 1024;
/// Largest credential (certificate) carried with an advertisement.
pub const CREDENTIAL_BYTES_MAX: usize = 8192;
/// Largest signature carried with an advertisement.
pub const SIGNATURE_BYTES_MAX: usize = 1024;
/// Most advertisements in one update frame.
pub const UPDATE_LSAS_MAX: usize = 64;
/// Most acknowledgements in one frame.
pub const ACKS_MAX: usize = 256;
/// Largest application payload the wire can carry (configuration may lower it).
pub const PAYLOAD_BYTES_MAX: usize = 16_384;
/// Largest revocation (opaque, verified by the [`crate::Authenticator`]) on the wire.
pub const REVOCATION_BYTES_MAX: usize = 4096;
/// Most revocations in one frame.
pub const REVOCATIONS_PER_FRAME_MAX: usize = 64;
/// Most addresses one node may advertise in its [`AddressRecord`].
pub const ADDRESSES_PER_RECORD_MAX: usize = 8;
/// Most address records in one frame.
pub const ADDRESS_RECORDS_PER_FRAME_MAX: usize = 16;

/// A frame that could not be decoded. Each is dropped and counted, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame ended inside a field.
    #[error("frame truncated while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The frame is longer than [`FRAME_BYTES_MAX`].
    #[error("frame of {0} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")]
    Oversized(usize),
    /// The version byte names a version this build does not speak.
    #[error("unknown protocol version {0} (this build speaks {VERSION})")]
    UnknownVersion(u8),
    /// The kind byte names no message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A length field exceeds its bound.
    #[error("{field} holds {len} items/bytes, more than the {max} allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A node name field is not a valid name.
    #[error("bad node name in {field}: {source}")]
    BadName {
        /// The field.
        field: &'static str,
        /// Why the name is invalid.
        source: NameError,
    },
    /// A field holds a value outside its domain.
    #[error("bad value {value} in {field}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value read.
        value: u64,
    },
    /// Bytes follow the end of the message.
    #[error("{0} unexpected bytes after the end of the message")]
    TrailingBytes(usize),
}

/// One link in an advertisement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LsaLink {
    /// The neighbour at the other end.
    pub neighbour: NodeName,
    /// The link's cost (lower is better; derived from RTT and loss).
    pub cost: u32,
}

/// The signed content of a link-state advertisement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lsa {
    /// The node that originated it.
    pub origin: NodeName,
    /// Higher sequence numbers replace lower ones.
    pub sequence: u64,
    /// The origin's usable links, sorted by neighbour name.
    pub links: Vec<LsaLink>,
}

impl Lsa {
    /// The canonical bytes covered by the signature (the lifetime, which ages in flight,
    /// is not covered).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.links.len() * 16);
        out.extend_from_slice(b"x0tta6bl4-lsa-v1");
        put_name(&mut out, &self.origin);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        put_links(&mut out, &self.links);
        out
    }

    /// Whether the advertisement lists a link to `neighbour`.
    pub fn has_link_to(&self, neighbour: &NodeName) -> bool {
        self.links
            .binary_search_by(|l| l.neighbour.cmp(neighbour))
            .is_ok()
    }
}

/// An advertisement with its origin's credential and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedLsa {
    /// The signed content.
    pub lsa: Lsa,
    /// The origin's credential (its DER certificate in the daemon).
    pub credential: Arc<[u8]>,
    /// The signature over [`Lsa::signed_bytes`].
    pub signature: Vec<u8>,
}

/// Where a node says its QUIC endpoint can be reached: flooded through the mesh (kind 9)
/// so that a node whose peer came back at a new address can dial it there. Signed by its
/// origin like an advertisement; a dial to a learnt address still counts only if the
/// handshake proves the origin's SVID (see `Node::handle_link_up`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressRecord {
    /// The node whose addresses these are.
    pub origin: NodeName,
    /// Higher sequence numbers replace lower ones (wall-clock based in the daemon, so a
    /// restarted node outranks its former record).
    pub sequence: u64,
    /// 1..=[`ADDRESSES_PER_RECORD_MAX`] distinct addresses with a non-zero port.
    pub addresses: Vec<SocketAddr>,
    /// The origin's credential (its DER certificate in the daemon).
    pub credential: Arc<[u8]>,
    /// The signature over [`AddressRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

impl AddressRecord {
    /// The canonical bytes covered by the signature.
    pub fn signed_bytes(origin: &NodeName, sequence: u64, addresses: &[SocketAddr]) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"x0tta6bl4-addresses-v1");
        put_name(&mut out, origin);
        out.extend_from_slice(&sequence.to_be_bytes());
        put_addresses(&mut out, addresses);
        out
    }

    /// Whether the addresses are within bounds, distinct and each has a port.
    pub fn well_formed(addresses: &[SocketAddr]) -> bool {
        (1..=ADDRESSES_PER_RECORD_MAX).contains(&addresses.len())
            && addresses.iter().all(|a| a.port() != 0)
            && addresses
                .iter()
                .enumerate()
                .all(|(i, a)| !addresses[..i].contains(a))
    }

    fn encoded_len(&self) -> usize {
        let addresses: usize = self
            .addresses
            .iter()
            .map(|a| if a.is_ipv4() { 7 } else { 19 })
            .sum();
        1 + self.origin.as_str().len()
            + 8
            + 1
            + addresses
            + 2
            + self.credential.len()
            + 2
            + self.signature.len()
    }
}

/// An application message travelling hop by hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// The node that sent it.
    pub source: NodeName,
    /// The node it is for.
    pub destination: NodeName,
    /// Hops left; a node that would forward it with 0 left drops it.
    pub ttl: u8,
    /// Application channel (0: messages, 1: probe flows).
    pub channel: u8,
    /// Identifier chosen by the source.
    pub id: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A link probe.
    Probe {
        /// Probe sequence number.
        seq: u32,
        /// Sender's clock when sent, echoed back.
        sent_us: u64,
    },
    /// The answer to a probe.
    ProbeAck {
        /// The probe's sequence number.
        seq: u32,
        /// The probe's `sent_us`.
        echo_us: u64,
    },
    /// Link-state advertisements being flooded, each with its remaining lifetime (ms).
    LsUpdate {
        /// The advertisements, shared between all copies of them.
        lsas: Vec<(u32, Arc<SignedLsa>)>,
    },
    /// Acknowledges advertisements by origin and sequence number.
    LsAck {
        /// (origin, sequence) pairs.
        acks: Vec<(NodeName, u64)>,
    },
    /// An application message.
    Data(Data),
    /// A LAN discovery beacon.
    Beacon {
        /// The sender's node name.
        name: NodeName,
        /// The UDP port the sender's QUIC endpoint listens on.
        port: u16,
    },
    /// Revocations being flooded or handed over after a digest mismatch.
    Revocations {
        /// Each revocation's bytes (opaque to the core; the authenticator verifies them).
        items: Vec<Arc<[u8]>>,
    },
    /// A summary of the revocations the sender holds (anti-entropy): a receiver holding
    /// a different set answers with all of its own.
    RevocationDigest {
        /// How many revocations the sender holds.
        count: u32,
        /// A hash of them (see `revocations::RevocationSet::digest`).
        digest: u64,
        /// The receiver should answer with its own digest (so the sender learns whether
        /// they agree); answers set it to false, so exchanges end.
        reply_wanted: bool,
    },
    /// Nodes' signed address records being flooded (or handed to a new neighbour).
    Addresses {
        /// The records, shared between all copies of them.
        records: Vec<Arc<AddressRecord>>,
    },
}

const KIND_PROBE: u8 = 1;
const KIND_PROBE_ACK: u8 = 2;
const KIND_LSA: u8 = 3;
const KIND_LSA_ACK: u8 = 4;
const KIND_DATA: u8 = 5;
const KIND_BEACON: u8 = 6;
const KIND_REVOCATIONS: u8 = 7;
const KIND_REVOCATION_DIGEST: u8 = 8;
const KIND_ADDRESSES: u8 = 9;

impl Message {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Probe { .. } => "probe",
            Message::ProbeAck { .. } => "probe_ack",
            Message::LsUpdate { .. } => "ls_update",
            Message::LsAck { .. } => "ls_ack",
            Message::Data(_) => "data",
            Message::Beacon { .. } => "beacon",
            Message::Revocations { .. } => "revocations",
            Message::RevocationDigest { .. } => "revocation_digest",
            Message::Addresses { .. } => "addresses",
        }
    }

    /// Append the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        match self {
            Message::Probe { seq, sent_us } => {
                out.push(KIND_PROBE);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&sent_us.to_be_bytes());
            }
            Message::ProbeAck { seq, echo_us } => {
                out.push(KIND_PROBE_ACK);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&echo_us.to_be_bytes());
            }
            Message::LsUpdate { lsas } => {
                out.push(KIND_LSA);
                put_count(out, lsas.len(), UPDATE_LSAS_MAX);
                for (lifetime_ms, lsa) in lsas {
                    out.extend_from_slice(&lifetime_ms.to_be_bytes());
                    put_name(out, &lsa.lsa.origin);
                    out.extend_from_slice(&lsa.lsa.sequence.to_be_bytes());
                    put_links(out, &lsa.lsa.links);
                    put_bytes16(out, &lsa.credential);
                    put_bytes16(out, &lsa.signature);
                }
            }
            Message::LsAck { acks } => {
                out.push(KIND_LSA_ACK);
                put_count(out, acks.len(), ACKS_MAX);
                for (origin, sequence) in acks {
                    put_name(out, origin);
                    out.extend_from_slice(&sequence.to_be_bytes());
                }
            }
            Message::Data(data) => {
                out.push(KIND_DATA);
                put_name(out, &data.source);
                put_name(out, &data.destination);
                out.push(data.ttl);
                out.push(data.channel);
                out.extend_from_slice(&data.id.to_be_bytes());
                put_bytes16(out, &data.payload);
            }
            Message::Beacon { name, port } => {
                out.push(KIND_BEACON);
                put_name(out, name);
                out.extend_from_slice(&port.to_be_bytes());
            }
            Message::Revocations { items } => {
                out.push(KIND_REVOCATIONS);
                put_count(out, items.len(), REVOCATIONS_PER_FRAME_MAX);
                for item in items {
                    put_bytes16(out, item);
                }
            }
            Message::RevocationDigest {
                count,
                digest,
                reply_wanted,
            } => {
                out.push(KIND_REVOCATION_DIGEST);
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(&digest.to_be_bytes());
                out.push(u8::from(*reply_wanted));
            }
            Message::Addresses { records } => {
                out.push(KIND_ADDRESSES);
                put_count(out, records.len(), ADDRESS_RECORDS_PER_FRAME_MAX);
                for record in records {
                    put_name(out, &record.origin);
                    out.extend_from_slice(&record.sequence.to_be_bytes());
                    put_addresses(out, &record.addresses);
                    put_bytes16(out, &record.credential);
                    put_bytes16(out, &record.signature);
                }
            }
        }
    }

    /// The encoded frame as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Length of the encoded frame in bytes (what a simulated link carries).
    pub fn encoded_len(&self) -> usize {
        let name = |n: &NodeName| 1 + n.as_str().len();
        2 + match self {
            Message::Probe { .. } | Message::ProbeAck { .. } => 12,
            Message::LsUpdate { lsas } => {
                2 + lsas
                    .iter()
                    .map(|(_, lsa)| 4 + signed_lsa_len(lsa))
                    .sum::<usize>()
            }
            Message::LsAck { acks } => {
                2 + acks
                    .iter()
                    .map(|(origin, _)| name(origin) + 8)
                    .sum::<usize>()
            }
            Message::Data(d) => name(&d.source) + name(&d.destination) + 10 + 2 + d.payload.len(),
            Message::Beacon { name: n, .. } => name(n) + 2,
            Message::Revocations { items } => {
                2 + items.iter().map(|item| 2 + item.len()).sum::<usize>()
            }
            Message::RevocationDigest { .. } => 13,
            Message::Addresses { records } => {
                2 + records.iter().map(|r| r.encoded_len()).sum::<usize>()
            }
        }
    }

    /// Decode one frame. Every length is checked against its bound before use.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > FRAME_BYTES_MAX {
            return Err(WireError::Oversized(bytes.len()));
        }
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::UnknownVersion(version));
        }
        let message = match r.u8("kind")? {
            KIND_PROBE => Message::Probe {
                seq: r.u32("seq")?,
                sent_us: r.u64("sent_us")?,
            },
            KIND_PROBE_ACK => Message::ProbeAck {
                seq: r.u32("seq")?,
                echo_us: r.u64("echo_us")?,
            },
            KIND_LSA => decode_update(&mut r)?,
            KIND_LSA_ACK => {
                let count = r.count("acks", ACKS_MAX)?;
                let mut acks = Vec::with_capacity(count);
                for _ in 0..count {
                    acks.push((r.name("ack origin")?, r.u64("ack sequence")?));
                }
                Message::LsAck { acks }
            }
            KIND_DATA => Message::Data(Data {
                source: r.name("source")?,
                destination: r.name("destination")?,
                ttl: r.u8("ttl")?,
                channel: r.u8("channel")?,
                id: r.u64("id")?,
                payload: r.bytes16("payload", PAYLOAD_BYTES_MAX)?.to_vec(),
            }),
            KIND_BEACON => Message::Beacon {
                name: r.name("name")?,
                port: r.u16("port")?,
            },
            KIND_REVOCATIONS => {
                let count = r.count("revocations", REVOCATIONS_PER_FRAME_MAX)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(Arc::from(r.bytes16("revocation", REVOCATION_BYTES_MAX)?));
                }
                Message::Revocations { items }
            }
            KIND_REVOCATION_DIGEST => Message::RevocationDigest {
                count: r.u32("revocation count")?,
                digest: r.u64("revocation digest")?,
                reply_wanted: match r.u8("reply_wanted")? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(WireError::TooLong {
                            field: "reply_wanted",
                            len: usize::from(other),
                            max: 1,
                        })
                    }
                },
            },
            KIND_ADDRESSES => decode_addresses(&mut r)?,
            other => return Err(WireError::UnknownKind(other)),
        };
        let left = bytes.len() - r.pos;
        if left != 0 {
            return Err(WireError::TrailingBytes(left));
        }
        Ok(message)
    }
}

fn decode_update(r: &mut Reader<'_>) -> Result<Message, WireError> {
    let count = r.count("advertisements", UPDATE_LSAS_MAX)?;
    let mut lsas = Vec::with_capacity(count);
    for _ in 0..count {
        let lifetime_ms = r.u32("lifetime_ms")?;
        let origin = r.name("origin")?;
        let sequence = r.u64("sequence")?;
        let links_count = usize::from(r.u16("link count")?);
        if links_count > LINKS_MAX {
            return Err(WireError::TooLong {
                field: "links",
                len: links_count,
                max: LINKS_MAX,
            });
        }
        let mut links = Vec::with_capacity(links_count);
        for _ in 0..links_count {
            links.push(LsaLink {
                neighbour: r.name("link neighbour")?,
                cost: r.u32("link cost")?,
            });
        }
        let credential = Arc::from(r.bytes16("credential", CREDENTIAL_BYTES_MAX)?);
        let signature = r.bytes16("signature", SIGNATURE_BYTES_MAX)?.to_vec();
        let lsa = Lsa {
            origin,
            sequence,
            links,
        };
        lsas.push((
            lifetime_ms,
            Arc::new(SignedLsa {
                lsa,
                credential,
                signature,
            }),
        ));
    }
    Ok(Message::LsUpdate { lsas })
}

fn decode_addresses(r: &mut Reader<'_>) -> Result<Message, WireError> {
    let count = r.count("address records", ADDRESS_RECORDS_PER_FRAME_MAX)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let origin = r.name("address origin")?;
        let sequence = r.u64("address sequence")?;
        let n = usize::from(r.u8("address count")?);
        if n == 0 || n > ADDRESSES_PER_RECORD_MAX {
            return Err(WireError::TooLong {
                field: "addresses",
                len: n,
                max: ADDRESSES_PER_RECORD_MAX,
            });
        }
        let mut addresses = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = match r.u8("address family")? {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("IPv4 address")?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("IPv6 address")?)),
                other => {
                    return Err(WireError::BadValue {
                        field: "address family",
                        value: u64::from(other),
                    })
                }
            };
            let port = r.u16("address port")?;
            let addr = SocketAddr::new(ip, port);
            if port == 0 || addresses.contains(&addr) {
                return Err(WireError::BadValue {
                    field: "address port (0) or repeated address",
                    value: u64::from(port),
                });
            }
            addresses.push(addr);
        }
        let credential = Arc::from(r.bytes16("address credential", CREDENTIAL_BYTES_MAX)?);
        let signature = r
            .bytes16("address signature", SIGNATURE_BYTES_MAX)?
            .to_vec();
        records.push(Arc::new(AddressRecord {
            origin,
            sequence,
            addresses,
            credential,
            signature,
        }));
    }
    Ok(Message::Addresses { records })
}

/// Encoded length of one advertisement inside an update (without its lifetime).
pub fn signed_lsa_len(lsa: &SignedLsa) -> usize {
    let name = |n: &NodeName| 1 + n.as_str().len();
    let links: usize = lsa.lsa.links.iter().map(|l| name(&l.neighbour) + 4).sum();
    name(&lsa.lsa.origin) + 8 + 2 + links + 2 + lsa.credential.len() + 2 + lsa.signature.len()
}

fn put_count(out: &mut Vec<u8>, count: usize, max: usize) {
    assert!(count <= max, "{count} items in a frame that holds {max}");
    out.extend_from_slice(&(count as u16).to_be_bytes());
}

fn put_name(out: &mut Vec<u8>, name: &NodeName) {
    let bytes = name.as_str().as_bytes();
    debug_assert!(bytes.len() <= crate::name::NAME_LEN_MAX);
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn put_links(out: &mut Vec<u8>, links: &[LsaLink]) {
    assert!(
        links.len() <= LINKS_MAX,
        "advertisement with {} links",
        links.len()
    );
    out.extend_from_slice(&(links.len() as u16).to_be_bytes());
    for link in links {
        put_name(out, &link.neighbour);
        out.extend_from_slice(&link.cost.to_be_bytes());
    }
}

fn put_addresses(out: &mut Vec<u8>, addresses: &[SocketAddr]) {
    assert!(
        (1..=ADDRESSES_PER_RECORD_MAX).contains(&addresses.len()),
        "address record with {} addresses",
        addresses.len()
    );
    out.push(addresses.len() as u8);
    for addr in addresses {
        match addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&addr.port().to_be_bytes());
    }
}

fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) {
    assert!(
        bytes.len() <= usize::from(u16::MAX),
        "field of {} bytes",
        bytes.len()
    );
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
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
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(WireError::Truncated { field })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, WireError> {
        let count = usize::from(self.u16(field)?);
        if count == 0 || count > max {
            return Err(WireError::TooLong {
                field,
                len: count,
                max,
            });
        }
        Ok(count)
    }

    fn bytes16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(WireError::TooLong { field, len, max });
        }
        self.take(len, field)
    }

    fn name(&mut self, field: &'static str) -> Result<NodeName, WireError> {
        let len = usize::from(self.u8(field)?);
        let raw = self.take(len, field)?;
        let text = std::str::from_utf8(raw).map_err(|_| WireError::BadName {
            field,
            source: NameError::BadCharacter {
                name: String::from_utf8_lossy(raw).into_owned(),
                bad: '\u{FFFD}',
            },
        })?;
        NodeName::new(text).map_err(|source| WireError::BadName { field, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn samples() -> Vec<Message> {
        let lsa = Lsa {
            origin: name("a"),
            sequence: 9,
            links: vec![
                LsaLink {
                    neighbour: name("b"),
                    cost: 12,
                },
                LsaLink {
                    neighbour: name("c"),
                    cost: 3,
                },
            ],
        };
        vec![
            Message::Probe { seq: 1, sent_us: 2 },
            Message::ProbeAck { seq: 3, echo_us: 4 },
            Message::LsUpdate {
                lsas: vec![(
                    5000,
                    Arc::new(SignedLsa {
                        lsa,
                        credential: Arc::from(&b"cert"[..]),
                        signature: vec![1, 2, 3],
                    }),
                )],
            },
            Message::LsAck {
                acks: vec![(name("a"), 9), (name("b"), 1)],
            },
            Message::Data(Data {
                source: name("a"),
                destination: name("z"),
                ttl: 7,
                channel: 0,
                id: 42,
                payload: b"hi".to_vec(),
            }),
            Message::Beacon {
                name: name("n1"),
                port: 7000,
            },
            Message::Revocations {
                items: vec![Arc::from(&b"revoke n5"[..]), Arc::from(&b"x"[..])],
            },
            Message::RevocationDigest {
                count: 2,
                digest: 0xfeed,
                reply_wanted: true,
            },
            Message::Addresses {
                records: vec![
                    Arc::new(AddressRecord {
                        origin: name("a"),
                        sequence: 17,
                        addresses: vec![
                            "10.1.2.3:4433".parse().unwrap(),
                            "[fd00::7]:4433".parse().unwrap(),
                        ],
                        credential: Arc::from(&b"cert"[..]),
                        signature: vec![9, 9],
                    }),
                    Arc::new(AddressRecord {
                        origin: name("b"),
                        sequence: 1,
                        addresses: vec!["192.0.2.1:1".parse().unwrap()],
                        credential: Arc::from(&b""[..]),
                        signature: vec![],
                    }),
                ],
            },
        ]
    }

    #[test]
    fn address_records_refuse_bad_families_ports_repeats_and_counts() {
        let record = |addresses: Vec<SocketAddr>| {
            Message::Addresses {
                records: vec![Arc::new(AddressRecord {
                    origin: name("a"),
                    sequence: 1,
                    addresses,
                    credential: Arc::from(&b"c"[..]),
                    signature: vec![1],
                })],
            }
            .to_bytes()
        };
        let one: SocketAddr = "10.0.0.1:4433".parse().unwrap();
        // frame: version kind count(2) name(2) sequence(8) n(1) family(1)...
        let family_at = 2 + 2 + 2 + 8 + 1;
        let mut bad_family = record(vec![one]);
        bad_family[family_at] = 5;
        assert!(matches!(
            Message::decode(&bad_family),
            Err(WireError::BadValue { value: 5, .. })
        ));
        let mut zero_port = record(vec![one]);
        zero_port[family_at + 5] = 0;
        zero_port[family_at + 6] = 0;
        assert!(matches!(
            Message::decode(&zero_port),
            Err(WireError::BadValue { .. })
        ));
        let two = "10.0.0.2:4433".parse().unwrap();
        let mut repeated = record(vec![one, two]);
        repeated[family_at + 11] = 1; // the second address's last IPv4 byte: now `one`
        assert!(matches!(
            Message::decode(&repeated),
            Err(WireError::BadValue { .. })
        ));
        let mut none = record(vec![one]);
        none[family_at - 1] = 0;
        assert!(matches!(
            Message::decode(&none),
            Err(WireError::TooLong {
                field: "addresses",
                ..
            })
        ));
        let mut nine = record(vec![one]);
        nine[family_at - 1] = 9;
        assert!(matches!(
            Message::decode(&nine),
            Err(WireError::TooLong {
                field: "addresses",
                len: 9,
                ..
            })
        ));
        assert!(AddressRecord::well_formed(&[one, two]));
        assert!(!AddressRecord::well_formed(&[one, one]));
        assert!(!AddressRecord::well_formed(&[]));
        assert!(!AddressRecord::well_formed(&["10.0.0.1:0"
            .parse()
            .unwrap()]));
    }

    #[test]
    fn round_trips_and_lengths() {
        for message in samples() {
            let bytes = message.to_bytes();
            assert_eq!(bytes.len(), message.encoded_len(), "{}", message.kind());
            assert_eq!(Message::decode(&bytes).unwrap(), message);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for message in samples() {
            let bytes = message.to_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{} cut at {cut}",
                    message.kind()
                );
            }
        }
    }

    #[test]
    fn rejects_version_kind_trailing_and_size() {
        assert_eq!(Message::decode(&[2, 1]), Err(WireError::UnknownVersion(2)));
        assert_eq!(Message::decode(&[1, 99]), Err(WireError::UnknownKind(99)));
        let mut bytes = samples()[0].to_bytes();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(WireError::TrailingBytes(1)));
        assert_eq!(
            Message::decode(&vec![1; FRAME_BYTES_MAX + 1]),
            Err(WireError::Oversized(FRAME_BYTES_MAX + 1))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(index in 0usize..9, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = samples()[index].to_bytes();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Ok(message) = Message::decode(&bytes) {
                prop_assert_eq!(message.to_bytes(), bytes);
            }
        }
    }
}
