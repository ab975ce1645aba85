//! The names of `enum skb_drop_reason` from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), so drop reasons are labelled as the kernel names them
//! (`NETFILTER_DROP`, `NO_SOCKET`, ...) whatever its version. Written by hand: aya-obj
//! parses BTF but keeps its type accessors crate-private, and tracefs (whose format file
//! would name them too) is not mounted everywhere. The BTF layout is the kernel's
//! (Documentation/bpf/btf.rst): a header, then `struct btf_type` records, each followed
//! by data whose size depends on its kind, then the string section.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;

/// Why BTF could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed BTF: {0}")]
pub struct BtfError(String);

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError(format!("truncated at byte {at}")))
}

fn string_at(strings: &[u8], offset: u32) -> Result<&str, BtfError> {
    let start = offset as usize;
    let rest = strings
        .get(start..)
        .ok_or_else(|| BtfError(format!("string offset {offset} out of range")))?;
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).map_err(|_| BtfError(format!("string {offset} not UTF-8")))
}

/// Bytes of kind-specific data after a 12-byte `btf_type` of `kind` with `vlen` entries.
fn extra_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                   // ARRAY
        4 | 5 | 15 => 12 * vlen,   // STRUCT, UNION, DATASEC
        6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
        19 => 12 * vlen,           // ENUM64
        other => return Err(BtfError(format!("unknown BTF kind {other}"))),
    })
}

/// The values and names (without `prefix`) of the enum called `name` in little-endian
/// BTF `data`; `None` when there is no such enum.
pub fn enum_names(
    data: &[u8],
    name: &str,
    prefix: &str,
) -> Result<Option<HashMap<u32, String>>, BtfError> {
    let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if magic != Some(MAGIC) {
        return Err(BtfError("not little-endian BTF (bad magic)".into()));
    }
    let header_len = u32_at(data, 4)? as usize;
    let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
    let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
    let section = |off: usize, len: usize| {
        data.get(header_len + off..header_len + off + len)
            .ok_or_else(|| BtfError("section beyond the end of the file".into()))
    };
    let types = section(type_off, type_len)?;
    let strings = section(str_off, str_len)?;
    let mut at = 0;
    while at < types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = extra_len(kind, vlen)?;
        let is_enum = kind == KIND_ENUM || kind == KIND_ENUM64;
        if is_enum && string_at(strings, name_off)? == name {
            let entry = if kind == KIND_ENUM { 8 } else { 12 };
            let mut names = HashMap::with_capacity(vlen);
            for i in 0..vlen {
                let record = at + 12 + i * entry;
                let variant = string_at(strings, u32_at(types, record)?)?;
                let value = u32_at(types, record + 4)?;
                let short = variant.strip_prefix(prefix).unwrap_or(variant);
                names.insert(value, short.to_owned());
            }
            return Ok(Some(names));
        }
        at += 12 + extra;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with one INT and one ENUM `colour { COLOUR_RED = 1, COLOUR_BLUE = 7 }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0colour\0COLOUR_RED\0COLOUR_BLUE\0".to_vec();
        let mut types = Vec::new();
        for word in [1u32, 1 << 24, 4, 32] {
            types.extend(word.to_le_bytes()); // int: name, kind 1, size, encoding
        }
        for word in [5u32, (6 << 24) | 2, 4, 12, 1, 23, 7] {
            types.extend(word.to_le_bytes()); // enum colour, 2 variants
        }
        let mut data = Vec::new();
        data.extend(MAGIC.to_le_bytes());
        data.extend([1u8, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(word.to_le_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    #[test]
    fn finds_the_enum_and_strips_the_prefix() {
        let names = enum_names(&blob(), "colour", "COLOUR_").unwrap().unwrap();
        assert_eq!(names[&1], "RED");
        assert_eq!(names[&7], "BLUE");
        assert!(enum_names(&blob(), "shape", "").unwrap().is_none());
    }

    #[test]
    fn truncated_or_foreign_data_is_an_error_not_a_panic() {
        let data = blob();
        for len in 0..data.len() - 1 {
            let _ = enum_names(&data[..len], "colour", "");
        }
        assert!(enum_names(b"\x7fELF", "colour", "").is_err());
        assert!(enum_names(&data[..30], "colour", "").is_err());
    }

    /// On a kernel with BTF, the drop reasons the collector labels with are there.
    #[test]
    fn running_kernel_names_netfilter_drop() {
        let data = match std::fs::read("/sys/kernel/btf/vmlinux") {
            Ok(data) => data,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("no kernel BTF under CI (/sys/kernel/btf/vmlinux: {e})")
            }
            Err(e) => {
                eprintln!("skipped: /sys/kernel/btf/vmlinux: {e}");
                return;
            }
        };
        let names = enum_names(&data, "skb_drop_reason", "SKB_DROP_REASON_")
            .unwrap()
            .unwrap();
        assert!(names.values().any(|n| n == "NETFILTER_DROP"), "{names:?}");
    }
}
