//! Root rotation in three steps, each a separate `x0tta6bl4 ca rotate-root` run, so that
//! no node ever meets an SVID its bundle cannot verify:
//!
//! 1. **prepare** (no flag): a new root key and certificate are written to
//!    `next_ca.pem`/`next_ca_key.pem` and added to `bundle.pem`; SVIDs are still signed
//!    by the old root. Nodes pick up the two-root bundle at their next renewal.
//! 2. **activate** (`--activate`, once every node renewed: wait at least one SVID TTL):
//!    the new root signs from now on (`ca.pem`/`ca_key.pem`); the old one moves to
//!    `retired_ca.pem`/`retired_ca_key.pem` and stays in the bundle.
//! 3. **retire** (`--retire`, once every node renewed again): the old root leaves the
//!    bundle and its files are removed.
//!
//! The CA service re-reads the directory for every request, so it follows each step
//! without a restart.

use std::path::Path;

use crate::ca::{ca_params, generate_key, unix_now, CertificateAuthority, CA_TTL};
use crate::error::Error;
use crate::files::{self, KEY_FILE_MODE, PUBLIC_FILE_MODE};
use crate::{BUNDLE_FILE, CA_CERT_FILE, CA_KEY_FILE};

/// The prepared next root's certificate.
pub const NEXT_CA_CERT_FILE: &str = "next_ca.pem";
/// The prepared next root's key.
pub const NEXT_CA_KEY_FILE: &str = "next_ca_key.pem";
/// The former root's certificate, trusted until retired.
pub const RETIRED_CA_CERT_FILE: &str = "retired_ca.pem";
/// The former root's key.
pub const RETIRED_CA_KEY_FILE: &str = "retired_ca_key.pem";

/// Which step of a rotation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// A new root was added to the bundle; the old one still signs.
    Prepared,
    /// The new root signs; both are trusted.
    Activated,
    /// The old root left the bundle.
    Retired,
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        source,
        hint: "check the CA directory's permissions".into(),
    }
}

fn read_text(path: &Path, what: &'static str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| io(what, path, e))
}

impl CertificateAuthority {
    /// Run the rotation step `step` in `dir` (see the module documentation).
    pub fn rotate_root(dir: &Path, step: RotationStep) -> Result<RotationStep, Error> {
        let ca = CertificateAuthority::open(dir)?;
        let exists = |file: &str| dir.join(file).exists();
        let hint = "check the CA directory's permissions";
        let write = |file: &str, text: &str, mode: u32, what: &'static str| {
            files::write_replace(&dir.join(file), text.as_bytes(), mode, what, hint)
        };
        let refuse = |message: &str| Err(Error::Config(message.to_owned()));
        match step {
            RotationStep::Prepared => {
                if exists(NEXT_CA_CERT_FILE) || exists(RETIRED_CA_CERT_FILE) {
                    return refuse("a rotation is already in progress: finish it with --activate, then --retire");
                }
                let now = unix_now();
                let not_after =
                    now.saturating_add(i64::try_from(CA_TTL.as_secs()).unwrap_or(i64::MAX));
                let key = generate_key("generating the new CA key")?;
                let certificate = ca_params(ca.trust_domain(), now, not_after)?
                    .self_signed(&key)
                    .map_err(|e| Error::Crypto {
                        what: "signing the new CA certificate",
                        reason: e.to_string(),
                    })?;
                write(
                    NEXT_CA_KEY_FILE,
                    &key.serialize_pem(),
                    KEY_FILE_MODE,
                    "write new CA key",
                )?;
                write(
                    NEXT_CA_CERT_FILE,
                    &certificate.pem(),
                    PUBLIC_FILE_MODE,
                    "write new CA certificate",
                )?;
                let bundle = read_text(&dir.join(CA_CERT_FILE), "read CA certificate")?;
                write(
                    BUNDLE_FILE,
                    &format!("{bundle}{}", certificate.pem()),
                    PUBLIC_FILE_MODE,
                    "write trust bundle",
                )?;
            }
            RotationStep::Activated => {
                if !exists(NEXT_CA_CERT_FILE) {
                    return refuse("no prepared root: run `x0tta6bl4 ca rotate-root` first");
                }
                let rename = |from: &str, to: &str| {
                    std::fs::rename(dir.join(from), dir.join(to))
                        .map_err(|e| io("rename", &dir.join(from), e))
                };
                rename(CA_CERT_FILE, RETIRED_CA_CERT_FILE)?;
                rename(CA_KEY_FILE, RETIRED_CA_KEY_FILE)?;
                rename(NEXT_CA_KEY_FILE, CA_KEY_FILE)?;
                rename(NEXT_CA_CERT_FILE, CA_CERT_FILE)?;
            }
            RotationStep::Retired => {
                if !exists(RETIRED_CA_CERT_FILE) {
                    return refuse(
                        "no activated rotation: run `x0tta6bl4 ca rotate-root --activate` first",
                    );
                }
                let current = read_text(&dir.join(CA_CERT_FILE), "read CA certificate")?;
                write(
                    BUNDLE_FILE,
                    &current,
                    PUBLIC_FILE_MODE,
                    "write trust bundle",
                )?;
                for file in [RETIRED_CA_CERT_FILE, RETIRED_CA_KEY_FILE] {
                    std::fs::remove_file(dir.join(file))
                        .map_err(|e| io("remove", &dir.join(file), e))?;
                }
            }
        }
        // The directory must still open as a consistent CA.
        CertificateAuthority::open(dir)?;
        tracing::info!(dir = %dir.display(), ?step, "root rotation step done");
        Ok(step)
    }
}
