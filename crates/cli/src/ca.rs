//! `x0tta6bl4 ca init`, `ca issue` and `ca inspect`.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use x0tta6bl4_identity::{CertificateAuthority, CertificateReport, Error, TrustDomain};
use x0tta6bl4_proto::NodeName;

use crate::args::{
    CaInitArgs, CaInspectArgs, CaIssueArgs, CaJoinArgs, CaRevokeArgs, CaRotateRootArgs,
    CaServeArgs, CaTokenArgs, CaWorkloadApiArgs,
};
use crate::problem::{problem, Exit, ProblemExt};

/// Run `ca init`.
pub fn init(args: &CaInitArgs) -> anyhow::Result<()> {
    let trust_domain: TrustDomain = args.trust_domain.parse().problem(
        Exit::Usage,
        "invalid --trust-domain",
        &args.trust_domain,
        "use a name such as example.org: lowercase a-z, 0-9, '.', '-' and '_'",
    )?;
    let dir = args.dir.display();
    CertificateAuthority::init(&args.dir, &trust_domain).map_err(|e| {
        let fix = match e {
            Error::CaExists { .. } => "choose another --dir; an existing CA is never overwritten",
            _ => "see the cause below",
        };
        identity_problem(e, "cannot create the CA", &dir, fix)
    })?;
    println!("created CA for spiffe://{trust_domain} in {dir}");
    println!("next: x0tta6bl4 ca issue --dir {dir} --name NAME");
    Ok(())
}

/// Run `ca issue`.
pub fn issue(args: &CaIssueArgs) -> anyhow::Result<()> {
    let name = node_name_arg(&args.name)?;
    let ca = open_ca(&args.dir)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join(name.as_str()));
    let files = ca.issue_node(&name, args.ttl, &out).map_err(|e| {
        identity_problem(
            e,
            "cannot issue the SVID",
            out.display(),
            "see the cause below",
        )
    })?;
    println!(
        "issued {} valid for {}",
        files.spiffe_id,
        human_duration(args.ttl)
    );
    println!("  certificate  {}", files.cert.display());
    println!("  key          {}", files.key.display());
    println!("  bundle       {}", files.bundle.display());
    println!(
        "use it with `[identity] dir = {:?}` in the node's config",
        out.display().to_string()
    );
    Ok(())
}

/// `--name`, checked as a node name.
fn node_name_arg(name: &str) -> anyhow::Result<NodeName> {
    name.parse().problem(
        Exit::Usage,
        "invalid --name",
        name,
        "use 1 to 64 characters of A-Z a-z 0-9 . _ -",
    )
}

fn open_ca(dir: &std::path::Path) -> anyhow::Result<CertificateAuthority> {
    let fix = "create one with `x0tta6bl4 ca init` or fix --dir";
    CertificateAuthority::open(dir)
        .map_err(|e| identity_problem(e, "cannot open the CA", dir.display(), fix))
}

/// Run `ca token`: print the token alone on stdout (scripts capture it).
pub fn token(args: &CaTokenArgs) -> anyhow::Result<()> {
    let name = node_name_arg(&args.name)?;
    let ca = open_ca(&args.dir)?;
    let created = if args.reusable {
        ca.create_reusable_token(&name, args.ttl)
    } else {
        ca.create_token(&name, args.ttl)
    };
    let token = created.map_err(|e| {
        identity_problem(
            e,
            "cannot create the token",
            args.dir.display(),
            "see the cause below",
        )
    })?;
    println!("{token}");
    let kind = if args.reusable {
        "reusable"
    } else {
        "one-time"
    };
    eprintln!(
        "{kind} token for node {name}, valid for {}; join with: x0tta6bl4 ca join --server ADDR --token TOKEN --out DIR",
        human_duration(args.ttl)
    );
    Ok(())
}

/// Run `ca serve` until Ctrl-C or SIGTERM; each connection is served on a blocking
/// thread.
pub async fn serve(args: &CaServeArgs) -> anyhow::Result<()> {
    crate::node_cmd::init_logging(None)?;
    let ca = open_ca(&args.dir)?;
    ca.service_tls_config().map_err(|e| {
        identity_problem(
            e,
            "cannot build the service's TLS configuration",
            args.dir.display(),
            "check the CA directory",
        )
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.problem(
        Exit::Failure,
        "cannot listen",
        args.listen,
        "choose a free address for --listen",
    )?;
    let local = listener.local_addr()?;
    println!(
        "CA service for spiffe://{} listening on {local}",
        ca.trust_domain()
    );
    let ttl = args.svid_ttl;
    let accept = async {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            };
            let dir = args.dir.clone();
            tokio::task::spawn_blocking(move || {
                let stream = match stream
                    .into_std()
                    .and_then(|s| s.set_nonblocking(false).map(|()| s))
                {
                    Ok(stream) => stream,
                    Err(error) => return tracing::warn!(%remote, %error, "bad connection"),
                };
                match x0tta6bl4_identity::serve_from_dir(&dir, stream, ttl) {
                    Ok(outcome) => tracing::info!(%remote, "{outcome}"),
                    Err(error) => tracing::warn!(%remote, %error, "CA service exchange failed"),
                }
            });
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        () = crate::node_cmd::shutdown_signal() => Ok(()),
    }
}

/// Run `ca workload-api`: the SPIFFE Workload API on a unix socket, backed by the CA.
pub async fn workload_api(args: &CaWorkloadApiArgs) -> anyhow::Result<()> {
    crate::node_cmd::init_logging(None)?;
    let name = node_name_arg(&args.name)?;
    let ca = open_ca(&args.dir)?;
    let mut federated = Vec::with_capacity(args.federate.len());
    for entry in &args.federate {
        let parsed = entry.split_once('=').and_then(|(domain, file)| {
            let domain: TrustDomain = domain.parse().ok()?;
            Some((domain, std::path::PathBuf::from(file)))
        });
        federated.push(parsed.ok_or_else(|| {
            problem(
                Exit::Usage,
                "invalid --federate",
                entry,
                "write TRUST_DOMAIN=PEM_FILE, e.g. partner.example=partner-bundle.pem",
            )
        })?);
    }
    let settings = x0tta6bl4_node::workload_api::ServerSettings {
        ca_dir: args.dir.clone(),
        name,
        ttl: args.ttl,
        federated,
    };
    let fix = "check --socket, the CA directory and the --federate files";
    let server = x0tta6bl4_node::workload_api::bind(&args.socket, settings)
        .await
        .problem(
            Exit::Failure,
            "cannot start the Workload API server",
            args.socket.display(),
            fix,
        )?;
    println!(
        "SPIFFE Workload API for spiffe://{}/node/{} on unix://{}",
        ca.trust_domain(),
        args.name,
        args.socket.display()
    );
    let shutdown = crate::node_cmd::shutdown_signal();
    server.run(shutdown).await.problem(
        Exit::Failure,
        "the Workload API server failed",
        args.socket.display(),
        fix,
    )
}

/// Run `ca rotate-root`: one step of a root rotation.
pub fn rotate_root(args: &CaRotateRootArgs) -> anyhow::Result<()> {
    use x0tta6bl4_identity::RotationStep;
    let step = match (args.activate, args.retire) {
        (false, false) => RotationStep::Prepared,
        (true, false) => RotationStep::Activated,
        (false, true) => RotationStep::Retired,
        (true, true) => {
            return Err(problem(
                Exit::Usage,
                "--activate and --retire together",
                "ca rotate-root",
                "run the steps one at a time, each after every node renewed",
            )
            .into())
        }
    };
    CertificateAuthority::rotate_root(&args.dir, step).map_err(|e| {
        identity_problem(
            e,
            "cannot rotate the root",
            args.dir.display(),
            "see the cause below",
        )
    })?;
    let next = match step {
        RotationStep::Prepared => "new root added to bundle.pem; the old one still signs. Once every node renewed (wait one SVID TTL): x0tta6bl4 ca rotate-root --dir DIR --activate",
        RotationStep::Activated => "the new root signs; both are trusted. Once every node renewed again: x0tta6bl4 ca rotate-root --dir DIR --retire",
        RotationStep::Retired => "the old root left bundle.pem: rotation complete",
    };
    println!("{next}");
    Ok(())
}

/// Run `ca revoke`: record and print the revocation; with --api, hand it to a node.
pub async fn revoke(args: &CaRevokeArgs) -> anyhow::Result<()> {
    let name = node_name_arg(&args.name)?;
    // A bad --api or --svid is refused before anything is recorded.
    let api = match &args.api {
        Some(url) => Some((url, crate::status::api_for(url, args.svid.as_deref())?)),
        None => None,
    };
    let ca = open_ca(&args.dir)?;
    let revocation = ca.revoke(&name).map_err(|e| {
        identity_problem(
            e,
            "cannot revoke",
            args.dir.display(),
            "see the cause below",
        )
    })?;
    println!("{}", serde_json::to_string(&revocation)?);
    if let Some((url, api)) = api {
        let answer: serde_json::Value = api
            .post("/api/v1/revocations", &revocation)
            .await
            .map_err(|e| {
                e.context(problem(
                    Exit::Failure,
                    "the node did not take the revocation",
                    url,
                    "check --api; post the JSON above to another node's /api/v1/revocations",
                ))
            })?;
        eprintln!("{url}: {}", answer["result"].as_str().unwrap_or("accepted"));
    }
    Ok(())
}

/// Run `ca join`.
pub async fn join(args: &CaJoinArgs) -> anyhow::Result<()> {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| {
                crate::problem::problem(
                    crate::problem::Exit::Usage,
                    format!("cannot read the join token: {e}"),
                    file.display(),
                    "point --token-file at the file holding the token from `x0tta6bl4 ca token`",
                )
            })?
            .trim()
            .to_owned(),
        (None, None) => unreachable!("clap requires --token or --token-file"),
    };
    let server = std::net::ToSocketAddrs::to_socket_addrs(args.server.as_str())
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            crate::problem::problem(
                crate::problem::Exit::Usage,
                "cannot resolve the CA service's address",
                format!("--server {}", args.server),
                "give HOST:PORT or IP:PORT of `x0tta6bl4 ca serve --listen`",
            )
        })?;
    let out = args.out.clone();
    let identity =
        tokio::task::spawn_blocking(move || x0tta6bl4_identity::join(server, &token, &out))
            .await?
            .map_err(|e| {
                identity_problem(
                    e,
                    "cannot join",
                    server,
                    "check --server and create a new token with `x0tta6bl4 ca token`",
                )
            })?;
    println!("joined as {}", identity.spiffe_id());
    println!(
        "  SVID in {} (renewed by the node at half its life with `[identity] ca_server`)",
        args.out.display()
    );
    Ok(())
}

/// Run `ca inspect`: exit 0, or 1 when a bundle was given and does not verify.
pub fn inspect(args: &CaInspectArgs) -> anyhow::Result<ExitCode> {
    let report = x0tta6bl4_identity::inspect_certificate(&args.file, args.bundle.as_deref())
        .map_err(|e| {
            identity_problem(
                e,
                "cannot inspect the certificate",
                args.file.display(),
                "see the cause below",
            )
        })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", inspect_text(&report));
    }
    let verified = report.bundle.as_ref().is_none_or(|check| check.verified);
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::problem::Exit::Failure as u8)
    })
}

/// The text form of a report: one `key  value` line per fact.
fn inspect_text(report: &CertificateReport) -> String {
    let spiffe_id = match (&report.spiffe_id, &report.spiffe_id_error) {
        (Some(id), _) => id.clone(),
        (None, Some(error)) => format!("none ({error})"),
        (None, None) => "none".into(),
    };
    let left = if report.expires_in_seconds >= 0 {
        format!(
            "expires in {}",
            rough_duration(report.expires_in_seconds.unsigned_abs())
        )
    } else {
        format!(
            "expired {} ago",
            rough_duration(report.expires_in_seconds.unsigned_abs())
        )
    };
    let mut text = format!(
        "file        {}\nspiffe_id   {spiffe_id}\nsubject     {}\nissuer      {}\n\
         serial      {}\nnot_before  {}\nnot_after   {} ({left})\nvalidity    {}\n\
         key_type    {}\nis_ca       {}\n",
        report.file.display(),
        report.subject,
        report.issuer,
        report.serial,
        report.not_before,
        report.not_after,
        report.validity,
        report.key_type,
        report.is_ca,
    );
    if let Some(check) = &report.bundle {
        let verdict = match &check.reason {
            None => "verified".to_owned(),
            Some(reason) => format!("NOT verified: {reason}"),
        };
        text.push_str(&format!(
            "bundle      {} (spiffe://{}): {verdict}\n",
            check.file.display(),
            check.trust_domain
        ));
    }
    text
}

/// Wrap an identity error; mistakes in the request are usage errors, everything else
/// is a failure.
fn identity_problem(
    error: Error,
    what: &str,
    place: impl fmt::Display,
    fix: &str,
) -> anyhow::Error {
    let exit = match error {
        Error::CaExists { .. } | Error::Config(_) => Exit::Usage,
        _ => Exit::Failure,
    };
    anyhow::Error::new(error).context(problem(exit, what, place, fix))
}

/// Seconds in the two largest units: `1d2h`, `23h59m`, `5m3s`, `42s`.
fn rough_duration(seconds: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|(size, _)| seconds >= *size) else {
        return "0s".into();
    };
    let (size, unit) = units[first];
    let mut text = format!("{}{unit}", seconds / size);
    if let Some((next_size, next_unit)) = units.get(first + 1) {
        let rest = (seconds % size) / next_size;
        if rest > 0 {
            text.push_str(&format!("{rest}{next_unit}"));
        }
    }
    text
}

/// `86400 s` as `24h`, `5400 s` as `90m`.
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 86_400 == 0 && s > 86_400 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_the_largest_whole_unit() {
        assert_eq!(human_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(human_duration(Duration::from_secs(172_800)), "2d");
        assert_eq!(human_duration(Duration::from_secs(7_200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(5_400)), "90m");
        assert_eq!(human_duration(Duration::from_secs(61)), "61s");
    }

    #[test]
    fn rough_durations_keep_two_units() {
        assert_eq!(rough_duration(0), "0s");
        assert_eq!(rough_duration(42), "42s");
        assert_eq!(rough_duration(86_399), "23h59m");
        assert_eq!(rough_duration(93_600), "1d2h");
        assert_eq!(rough_duration(3_600), "1h");
    }
}
