//! The CA as a service: one-time join tokens, and SVIDs issued over TLS to nodes that
//! join with a token or renew with their current SVID.
//!
//! Wire protocol (TLS 1.3 over TCP, one exchange per connection): the client writes one
//! JSON line, `{"join": {"token": T, "csr_pem": P}}` or `{"renew": {"csr_pem": P}}`, and
//! the server answers one JSON line, `{"svid_pem", "bundle_pem", "not_after"}` or
//! `{"error": MESSAGE}`. Lines are bounded ([`LINE_LEN_MAX`]). The node's private key
//! never leaves it: it sends a PKCS#10 request and the CA only signs its public key.
//!
//! The server presents the CA certificate itself. A joining node pins it by the SHA-256
//! carried in the token (`x0t1.SECRET.CA_SHA256`); a renewing node accepts any CA of its
//! bundle and authenticates with its current SVID (mutual TLS). The CA's state (tokens,
//! with only their hashes stored, in `tokens.toml`) lives in the CA directory and
//! survives restarts; issued SVIDs need no state.
//!
//! This module does blocking `std::net` I/O, one connection at a time per thread: the
//! callers (the CLI's `ca serve`, the daemon's renewal task) run it off their async
//! runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, CertificateSigningRequestParams, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use x0tta6bl4_proto::NodeName;

use crate::ca::{unix_now, CertificateAuthority};
use crate::error::Error;
use crate::files::{self, bad_file, FileRole, KEY_FILE_MODE, PUBLIC_FILE_MODE};
use crate::svid::{self, Bundle};
use crate::{tls, NodeIdentity, BUNDLE_FILE, CA_CERT_FILE, SVID_CERT_FILE, SVID_KEY_FILE};

/// Longest request or response line, in bytes.
pub const LINE_LEN_MAX: usize = 64 * 1024;
/// Join tokens kept in `tokens.toml` (used and expired ones are pruned first).
pub const TOKENS_MAX: usize = 10_000;
/// The token file of a CA directory.
pub const TOKENS_FILE: &str = "tokens.toml";
/// Default lifetime of SVIDs the service issues: one hour.
pub const SERVICE_SVID_TTL_DEFAULT: Duration = Duration::from_secs(3600);
/// Time allowed for one exchange with the service.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN_PREFIX: &str = "x0t1";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// SHA-256 of the secret, hex.
    sha256: String,
    name: String,
    /// Unix seconds.
    expires: i64,
    /// Unix seconds of the (last) use; 0 while unused.
    used: i64,
    /// Redeemable again until it expires (`ca token --reusable`): a pod recreated with
    /// an empty identity directory re-enrols with the same token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reusable: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Join { token: String, csr_pem: String },
    Renew { csr_pem: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Response {
    Issued {
        svid_pem: String,
        bundle_pem: String,
        not_after: String,
    },
    Refused {
        error: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

fn service_error(what: &'static str, reason: impl ToString) -> Error {
    Error::Crypto {
        what,
        reason: reason.to_string(),
    }
}

impl CertificateAuthority {
    fn tokens_path(&self) -> std::path::PathBuf {
        self.dir().join(TOKENS_FILE)
    }

    fn read_tokens(&self) -> Result<TokenFile, Error> {
        let path = self.tokens_path();
        if !path.exists() {
            return Ok(TokenFile::default());
        }
        let hint = "restore tokens.toml from a backup, or delete it (outstanding tokens are lost)";
        let bytes = files::read(&path, "read join tokens", hint)?;
        let text = String::from_utf8(bytes).map_err(|_| bad_file(&path, "is not UTF-8", hint))?;
        toml::from_str(&text)
            .map_err(|e| bad_file(&path, format!("is not a token file: {e}"), hint))
    }

    fn write_tokens(&self, tokens: &TokenFile) -> Result<(), Error> {
        let text = toml::to_string(tokens).map_err(|e| service_error("encoding tokens", e))?;
        let hint = "check the CA directory's permissions";
        files::write_replace(
            &self.tokens_path(),
            text.as_bytes(),
            KEY_FILE_MODE,
            "write join tokens",
            hint,
        )
    }

    /// Create a one-time join token for node `name`, valid for `ttl`. Only its hash is
    /// stored; the token itself is returned once.
    pub fn create_token(&self, name: &NodeName, ttl: Duration) -> Result<String, Error> {
        self.create_token_with(name, ttl, false)
    }

    /// Create a join token for node `name`, valid for `ttl`, that can be redeemed again
    /// and again until it expires: the enrolment credential of a Kubernetes pod kept in a
    /// Secret, which must work each time the pod is recreated with an empty identity
    /// directory (as kubeadm's bootstrap tokens are reusable until they expire). It
    /// admits only `name`, a revoked name is still refused, and each use is logged by
    /// the service; whoever reads the Secret can enrol as `name` until `ttl` runs out, so
    /// keep `ttl` to the Secret's intended life and revoke the name if it leaks.
    pub fn create_reusable_token(&self, name: &NodeName, ttl: Duration) -> Result<String, Error> {
        self.create_token_with(name, ttl, true)
    }

    fn create_token_with(
        &self,
        name: &NodeName,
        ttl: Duration,
        reusable: bool,
    ) -> Result<String, Error> {
        if self.is_revoked(name)? {
            return Err(Error::Config(format!(
                "node {name} is revoked (see revocations.toml): it cannot join again; use a new name"
            )));
        }
        let now = unix_now();
        let mut tokens = self.read_tokens()?;
        tokens.token.retain(|t| t.expires > now); // used ones too: reuse says "already used"
        if tokens.token.len() >= TOKENS_MAX {
            return Err(Error::Config(format!(
                "{TOKENS_MAX} unused join tokens are outstanding: let some expire or use them"
            )));
        }
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| service_error("drawing a token", "no randomness"))?;
        let secret = hex(&secret);
        tokens.token.push(TokenEntry {
            sha256: sha256_hex(secret.as_bytes()),
            name: name.to_string(),
            expires: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            used: 0,
            reusable,
        });
        self.write_tokens(&tokens)?;
        let ca_pem = std::fs::read(self.dir().join(CA_CERT_FILE))
            .map_err(|e| service_error("reading ca.pem", e))?;
        let ca_der = rustls_pemfile::certs(&mut ca_pem.as_slice())
            .next()
            .ok_or_else(|| service_error("reading ca.pem", "no certificate"))?
            .map_err(|e| service_error("reading ca.pem", format!("{e:?}")))?;
        Ok(format!("{TOKEN_PREFIX}.{secret}.{}", sha256_hex(&ca_der)))
    }

    /// Redeem `token`: the node name it was made for. Refuses, saying so, an unknown,
    /// expired or already used one-time token; marks it used (a reusable token: records
    /// the time of its last use).
    fn redeem_token(&self, token: &str) -> Result<NodeName, String> {
        let (secret, _) = parse_token(token)?;
        let hash = sha256_hex(secret.as_bytes());
        let mut tokens = self.read_tokens().map_err(|e| e.to_string())?;
        let now = unix_now();
        let entry = tokens
            .token
            .iter_mut()
            .find(|t| t.sha256 == hash)
            .ok_or("unknown join token: create one with `x0tta6bl4 ca token`")?;
        if entry.used != 0 && !entry.reusable {
            return Err(format!(
                "join token already used (at {}): tokens are one-time; create a new one (or a `--reusable` one for a pod that may be recreated)",
                svid::rfc3339(entry.used)
            ));
        }
        if entry.expires < now {
            return Err(format!(
                "join token expired at {}: create a new one",
                svid::rfc3339(entry.expires)
            ));
        }
        entry.used = now;
        let name = NodeName::new(&entry.name).map_err(|e| e.to_string())?;
        self.write_tokens(&tokens).map_err(|e| e.to_string())?;
        Ok(name)
    }

    /// The TLS server configuration of `ca serve`: presents the CA certificate; a client
    /// certificate is optional (renewals present their SVID, joins none).
    pub fn service_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let hint = "check the CA directory";
        let role = |read| FileRole { read, hint };
        let chain =
            files::read_certificates(&self.dir().join(CA_CERT_FILE), role("read CA certificate"))?;
        let key =
            files::read_private_key(&self.dir().join(crate::CA_KEY_FILE), role("read CA key"))?;
        let bundle_certs =
            files::read_certificates(&self.dir().join(BUNDLE_FILE), role("read trust bundle"))?;
        let bundle = Bundle::new(bundle_certs, tls::algorithms())
            .map_err(|e| service_error("loading the bundle", e))?;
        let trust = crate::federation::TrustBundles::local(Arc::new(bundle));
        let verifier = Arc::new(tls::SpiffeClientVerifier::optional(Arc::new(trust)));
        let config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| service_error("building the service TLS configuration", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key))
            .map_err(|e| service_error("building the service TLS configuration", e))?;
        Ok(Arc::new(config))
    }

    /// Serve one connection of `ca serve` (already accepted): read the request, answer
    /// it, close. `ttl` is the lifetime of issued SVIDs. Returns what was done, for the
    /// log.
    pub fn serve_connection(
        &self,
        config: Arc<rustls::ServerConfig>,
        stream: TcpStream,
        ttl: Duration,
    ) -> Result<String, Error> {
        stream.set_read_timeout(Some(EXCHANGE_TIMEOUT)).ok();
        stream.set_write_timeout(Some(EXCHANGE_TIMEOUT)).ok();
        let connection =
            rustls::ServerConnection::new(config).map_err(|e| service_error("starting TLS", e))?;
        let mut tls = rustls::StreamOwned::new(connection, stream);
        let line = read_line(&mut tls).map_err(|e| service_error("reading the request", e))?;
        let peer = tls
            .conn
            .peer_certificates()
            .and_then(|certs| crate::peer_spiffe_id(certs).ok());
        let (response, outcome) = match self.answer(&line, peer, ttl) {
            Ok((response, outcome)) => (response, outcome),
            Err(error) => (
                Response::Refused {
                    error: error.clone(),
                },
                format!("refused: {error}"),
            ),
        };
        let mut text =
            serde_json::to_string(&response).map_err(|e| service_error("encoding", e))?;
        text.push('\n');
        tls.write_all(text.as_bytes())
            .map_err(|e| service_error("answering", e))?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(outcome)
    }

    fn answer(
        &self,
        line: &str,
        peer: Option<crate::SpiffeId>,
        ttl: Duration,
    ) -> Result<(Response, String), String> {
        let request: Request =
            serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
        let (name, csr_pem, how) = match request {
            Request::Join { token, csr_pem } => (self.redeem_token(&token)?, csr_pem, "joined"),
            Request::Renew { csr_pem } => {
                let peer =
                    peer.ok_or("renewal needs the current SVID as TLS client certificate")?;
                let name = peer
                    .node_name()
                    .ok_or_else(|| format!("{peer} is not a node SPIFFE ID"))?;
                (name, csr_pem, "renewed")
            }
        };
        if self.is_revoked(&name).map_err(|e| e.to_string())? {
            return Err(format!("node {name} is revoked: the CA issues it nothing"));
        }
        let csr = CertificateSigningRequestParams::from_pem(&csr_pem)
            .map_err(|e| format!("malformed certificate signing request: {e}"))?;
        let (svid_pem, not_after) = self
            .sign_public_key(&name, &csr.public_key, ttl)
            .map_err(|e| e.to_string())?;
        let bundle_pem = String::from_utf8_lossy(self.bundle_pem()).into_owned();
        let not_after = svid::rfc3339(not_after);
        let outcome = format!("{how}: node {name}, SVID valid until {not_after}");
        Ok((
            Response::Issued {
                svid_pem,
                bundle_pem,
                not_after,
            },
            outcome,
        ))
    }
}

/// Serve one connection with the CA as it is on disk now (re-read for every request,
/// so root rotation steps and revocations apply without a restart).
pub fn serve_from_dir(dir: &Path, stream: TcpStream, ttl: Duration) -> Result<String, Error> {
    let ca = CertificateAuthority::open(dir)?;
    let config = ca.service_tls_config()?;
    ca.serve_connection(config, stream, ttl)
}

fn parse_token(token: &str) -> Result<(&str, &str), String> {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(TOKEN_PREFIX), Some(secret), Some(pin), None)
            if secret.len() == 64 && pin.len() == 64 =>
        {
            Ok((secret, pin))
        }
        _ => Err("malformed join token: expected x0t1.SECRET.CA_SHA256 as printed by `x0tta6bl4 ca token`".into()),
    }
}

fn read_line(stream: &mut impl Read) -> std::io::Result<String> {
    let mut reader = BufReader::new(stream.take(LINE_LEN_MAX as u64 + 1));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.len() > LINE_LEN_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    Ok(line)
}

/// Join the trust domain: redeem `token` at the CA service `server` and write the SVID,
/// its new key and the bundle into `out_dir`. Returns the loaded identity.
pub fn join(server: SocketAddr, token: &str, out_dir: &Path) -> Result<NodeIdentity, Error> {
    let (_, pin) = parse_token(token).map_err(Error::Config)?;
    let verifier = PinnedServer {
        pins: vec![pin.to_owned()],
    };
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| service_error("building the TLS client configuration", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| service_error("generating the SVID key", e))?;
    let request = Request::Join {
        token: token.trim().to_owned(),
        csr_pem: csr(&key)?,
    };
    exchange_and_store(server, Arc::new(config), &request, &key, out_dir)
}

/// Renew the SVID in `dir` at the CA service `server`, authenticating with it; replaces
/// the files in `dir` (new key first) and returns the new identity.
pub fn renew(server: SocketAddr, dir: &Path) -> Result<NodeIdentity, Error> {
    let current = NodeIdentity::load(dir)?;
    let pins = current
        .bundle_certificates()
        .map(|c| sha256_hex(c))
        .collect();
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| service_error("building the TLS client configuration", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer { pins }))
        .with_client_auth_cert(current.chain().to_vec(), current.private_key())
        .map_err(|e| service_error("building the TLS client configuration", e))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| service_error("generating the SVID key", e))?;
    let request = Request::Renew {
        csr_pem: csr(&key)?,
    };
    exchange_and_store(server, Arc::new(config), &request, &key, dir)
}

fn csr(key: &KeyPair) -> Result<String, Error> {
    CertificateParams::default()
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| service_error("building the certificate signing request", e))
}

fn exchange_and_store(
    server: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &Request,
    key: &KeyPair,
    out_dir: &Path,
) -> Result<NodeIdentity, Error> {
    let network = |e: &dyn std::fmt::Display| Error::Config(format!("CA service {server}: {e}"));
    let stream = TcpStream::connect_timeout(&server, EXCHANGE_TIMEOUT).map_err(|e| network(&e))?;
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT)).ok();
    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT)).ok();
    let name = ServerName::try_from("x0tta6bl4-ca").map_err(|e| network(&e))?;
    let connection = rustls::ClientConnection::new(config, name).map_err(|e| network(&e))?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut line = serde_json::to_string(request).map_err(|e| network(&e))?;
    line.push('\n');
    tls.write_all(line.as_bytes()).map_err(|e| network(&e))?;
    tls.flush().map_err(|e| network(&e))?;
    let answer = read_line(&mut tls).map_err(|e| network(&e))?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| network(&format!("malformed answer: {e}")))?;
    let (svid_pem, bundle_pem) = match response {
        Response::Issued {
            svid_pem,
            bundle_pem,
            ..
        } => (svid_pem, bundle_pem),
        Response::Refused { error } => {
            return Err(Error::Config(format!("the CA service refused: {error}")))
        }
    };
    let hint = "choose an output directory you can write to";
    files::create_dir(out_dir, "create SVID directory", hint)?;
    let write = |file: &str, bytes: &[u8], mode, what| {
        files::write_replace(&out_dir.join(file), bytes, mode, what, hint)
    };
    write(
        SVID_KEY_FILE,
        key.serialize_pem().as_bytes(),
        KEY_FILE_MODE,
        "write SVID key",
    )?;
    write(
        SVID_CERT_FILE,
        svid_pem.as_bytes(),
        PUBLIC_FILE_MODE,
        "write SVID certificate",
    )?;
    write(
        BUNDLE_FILE,
        bundle_pem.as_bytes(),
        PUBLIC_FILE_MODE,
        "write trust bundle",
    )?;
    NodeIdentity::load(out_dir)
}

/// Accepts a server whose certificate's SHA-256 is one of `pins` (the CA itself).
#[derive(Debug)]
struct PinnedServer {
    pins: Vec<String>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pins.contains(&sha256_hex(end_entity)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the CA service's certificate does not match the pinned CA (wrong server, or a token of another CA)".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &tls::algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &tls::algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::algorithms().supported_schemes()
    }
}
