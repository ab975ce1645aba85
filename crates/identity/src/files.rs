//! Reading and writing the PEM and TOML files of a CA directory and an SVID directory.
//!
//! Reads are bounded ([`FILE_LEN_MAX`]); writes of files that may be replaced (SVIDs)
//! go through a temporary file and a rename, so a reader never sees half a file; private
//! keys are created with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::error::Error;

/// Largest file read, in bytes: far above any PEM or TOML file this crate writes.
pub(crate) const FILE_LEN_MAX: u64 = 1024 * 1024;
/// Mode of private key files.
pub(crate) const KEY_FILE_MODE: u32 = 0o600;
/// Mode of certificate, bundle and configuration files.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of directories this crate creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// What reading a file means and how to fix it when it is missing or broken; used in
/// messages such as "cannot read SVID key /x/svid_key.pem: ... (run ...)".
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRole<'a> {
    /// The action, e.g. "read SVID key".
    pub(crate) read: &'static str,
    /// How to fix a missing or broken file.
    pub(crate) hint: &'a str,
}

pub(crate) fn bad_file(path: &Path, reason: impl Into<String>, hint: &str) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
        hint: hint.to_owned(),
    }
}

/// An I/O error; a permission problem gets a hint about permissions, not `hint` (which
/// says how to create a missing or broken file).
fn io_error(what: &'static str, path: &Path, source: std::io::Error, hint: &str) -> Error {
    let hint = match source.kind() {
        std::io::ErrorKind::PermissionDenied => permission_hint(path),
        _ => hint.to_owned(),
    };
    Error::Io {
        what,
        path: path.to_path_buf(),
        source,
        hint,
    }
}

/// How to fix a permission problem on `path`: who owns it, and which user we are.
fn permission_hint(path: &Path) -> String {
    #[cfg(unix)]
    let (owner, user) = {
        use std::os::unix::fs::MetadataExt as _;
        let owner = fs::metadata(path)
            .map(|m| {
                format!(
                    ", owned by uid {} with mode {:o},",
                    m.uid(),
                    m.mode() & 0o7777
                )
            })
            .unwrap_or_default();
        let user = fs::metadata("/proc/self")
            .map(|m| format!(" (uid {})", m.uid()))
            .unwrap_or_default();
        (owner, user)
    };
    #[cfg(not(unix))]
    let (owner, user) = (String::new(), String::new());
    format!(
        "a permission problem, not a missing file: the file{owner} or a directory above it \
         is not accessible to this process{user}; give the user running it access (e.g. \
         `chown` the files to that user) or run it as their owner"
    )
}

/// Read a whole file of at most [`FILE_LEN_MAX`] bytes.
pub(crate) fn read(path: &Path, what: &'static str, hint: &str) -> Result<Vec<u8>, Error> {
    let metadata = fs::metadata(path).map_err(|e| io_error(what, path, e, hint))?;
    if !metadata.is_file() {
        return Err(bad_file(path, "is not a regular file", hint));
    }
    if metadata.len() > FILE_LEN_MAX {
        let reason = format!(
            "is {} bytes long; at most {FILE_LEN_MAX} are expected",
            metadata.len()
        );
        return Err(bad_file(path, reason, hint));
    }
    fs::read(path).map_err(|e| io_error(what, path, e, hint))
}

/// Read the `CERTIFICATE` PEM blocks of a file (at least one), in file order.
pub(crate) fn read_certificates(
    path: &Path,
    role: FileRole<'_>,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path, role.read, role.hint)?;
    let mut certificates = Vec::new();
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(der)) => certificates.push(der),
            Ok(_) => {
                let reason =
                    "holds a PEM block other than CERTIFICATE; only certificates belong here";
                return Err(bad_file(path, reason, role.hint));
            }
            Err(e) => {
                return Err(bad_file(
                    path,
                    format!("is not valid PEM: {e:?}"),
                    role.hint,
                ))
            }
        }
    }
    if certificates.is_empty() {
        return Err(bad_file(path, "holds no CERTIFICATE PEM block", role.hint));
    }
    Ok(certificates)
}

/// Read a file holding exactly one `PRIVATE KEY` (PKCS#8) PEM block.
pub(crate) fn read_private_key(
    path: &Path,
    role: FileRole<'_>,
) -> Result<PrivatePkcs8KeyDer<'static>, Error> {
    let bytes = read(path, role.read, role.hint)?;
    let mut keys = Vec::new();
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(key)) => keys.push(key),
            Ok(rustls_pemfile::Item::Sec1Key(_) | rustls_pemfile::Item::Pkcs1Key(_)) => {
                let reason = "holds a SEC1 or PKCS#1 key; a PKCS#8 (\"PRIVATE KEY\") ECDSA \
                              P-256 key is expected";
                return Err(bad_file(path, reason, role.hint));
            }
            Ok(_) => {
                let reason =
                    "holds a PEM block other than PRIVATE KEY; the key file holds only its key";
                return Err(bad_file(path, reason, role.hint));
            }
            Err(e) => {
                return Err(bad_file(
                    path,
                    format!("is not valid PEM: {e:?}"),
                    role.hint,
                ))
            }
        }
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(bad_file(path, "holds no PRIVATE KEY PEM block", role.hint)),
        n => Err(bad_file(
            path,
            format!("holds {n} private keys; exactly one is expected"),
            role.hint,
        )),
    }
    .inspect(|_| warn_if_readable_by_others(path))
}

/// Log a warning when a private key file is readable by group or others.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "private key is readable by other users; run `chmod 600` on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Create `dir` and its parents (new directories get mode 0700).
pub(crate) fn create_dir(dir: &Path, what: &'static str, hint: &str) -> Result<(), Error> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder
        .create(dir)
        .map_err(|e| io_error(what, dir, e, hint))
}

fn open_options(mode: u32) -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
}

fn write_synced(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = open_options(mode).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Write a file that must not exist yet (`O_EXCL`).
pub(crate) fn write_new(
    path: &Path,
    contents: &[u8],
    mode: u32,
    what: &'static str,
    hint: &str,
) -> Result<(), Error> {
    write_synced(path, contents, mode).map_err(|e| io_error(what, path, e, hint))
}

/// Replace a file atomically: write `.NAME.tmp` next to it, then rename over it.
pub(crate) fn write_replace(
    path: &Path,
    contents: &[u8],
    mode: u32,
    what: &'static str,
    hint: &str,
) -> Result<(), Error> {
    let temporary = temporary_path(path);
    // A stale temporary file may have other permissions: never reuse it.
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(what, &temporary, e, hint)),
    }
    let written =
        write_synced(&temporary, contents, mode).and_then(|()| fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(io_error(what, path, e, hint));
    }
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}
