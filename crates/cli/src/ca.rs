//! `x0tta6bl4 ca init` and `x0tta6bl4 ca issue`.

use std::fmt;
use std::time::Duration;

use x0tta6bl4_identity::{CertificateAuthority, Error, TrustDomain};
use x0tta6bl4_proto::NodeName;

use crate::args::{CaInitArgs, CaIssueArgs};
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
    let name: NodeName = args.name.parse().problem(
        Exit::Usage,
        "invalid --name",
        &args.name,
        "use 1 to 64 characters of A-Z a-z 0-9 . _ -",
    )?;
    let dir = args.dir.display();
    let fix = "create one with `x0tta6bl4 ca init` or fix --dir";
    let ca = CertificateAuthority::open(&args.dir)
        .map_err(|e| identity_problem(e, "cannot open the CA", &dir, fix))?;
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
}
