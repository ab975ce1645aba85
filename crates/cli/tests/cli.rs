//! The command line without a running mesh: usage errors, the CA, node configs.

mod common;

use std::path::Path;

use common::{ca_init, code, path, run, stderr, stdout};
use x0tta6bl4_identity::NodeIdentity;

#[test]
fn ca_init_and_issue_write_an_svid_with_the_node_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    for file in ["ca.pem", "ca_key.pem", "bundle.pem"] {
        assert!(ca.join(file).is_file(), "missing {file}");
    }

    // Default output directory: DIR/NAME.
    let output = run(&["ca", "issue", "--dir", path(&ca), "--name", "n1"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("spiffe://example.org/node/n1"),
        "{}",
        stdout(&output)
    );
    check_svid(&ca.join("n1"), "spiffe://example.org/node/n1");

    // Explicit output directory and lifetime.
    let out = dir.path().join("elsewhere");
    let output = run(&[
        "ca",
        "issue",
        "--dir",
        path(&ca),
        "--name",
        "edge-2",
        "--out",
        path(&out),
        "--ttl",
        "2h",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    check_svid(&out, "spiffe://example.org/node/edge-2");
}

fn check_svid(dir: &Path, spiffe_id: &str) {
    for file in ["svid.pem", "svid_key.pem", "bundle.pem"] {
        assert!(
            dir.join(file).is_file(),
            "missing {}",
            dir.join(file).display()
        );
    }
    let identity = NodeIdentity::load(dir).expect("the SVID loads");
    assert_eq!(identity.spiffe_id().to_string(), spiffe_id);
}

#[test]
fn ca_init_twice_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca, "example.org");
    let output = run(&[
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        path(&ca),
    ]);
    assert_eq!(code(&output), 2);
    let text = stderr(&output);
    assert!(
        text.starts_with("x0tta6bl4: cannot create the CA ("),
        "{text}"
    );
    assert!(
        text.contains("already exists") && text.contains(path(&ca)),
        "{text}"
    );
}

#[test]
fn ca_rejects_bad_names_and_missing_cas() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&[
        "ca",
        "init",
        "--trust-domain",
        "Bad_Domain:1",
        "--dir",
        path(dir.path()),
    ]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("invalid --trust-domain"),
        "{}",
        stderr(&output)
    );

    let missing = dir.path().join("no-ca");
    let output = run(&["ca", "issue", "--dir", path(&missing), "--name", "n1"]);
    assert_ne!(code(&output), 0);
    assert!(
        stderr(&output).contains("cannot open the CA"),
        "{}",
        stderr(&output)
    );

    ca_init(&dir.path().join("ca"), "example.org");
    let output = run(&[
        "ca",
        "issue",
        "--dir",
        path(&dir.path().join("ca")),
        "--name",
        "a/b",
    ]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("invalid --name"),
        "{}",
        stderr(&output)
    );

    let output = run(&[
        "ca",
        "issue",
        "--dir",
        path(dir.path()),
        "--name",
        "n1",
        "--ttl",
        "5w",
    ]);
    assert_eq!(
        code(&output),
        2,
        "clap rejects the value: {}",
        stderr(&output)
    );
}

#[test]
fn malformed_config_names_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:7001\"\nlisten_api = \"127.0.0.1:8001\"\n[identity]\ndir = \"x\"\n",
    )
    .unwrap();
    for check in [false, true] {
        let mut args = vec!["node", "--config", path(&config)];
        if check {
            args.push("--check-config");
        }
        let output = run(&args);
        assert_eq!(code(&output), 2, "{}", stderr(&output));
        let text = stderr(&output);
        assert!(
            text.starts_with("x0tta6bl4: invalid node configuration ("),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}:2", path(&config))),
            "file and line: {text}"
        );
        assert!(text.contains("listen_api"), "key: {text}");
    }
    let missing = dir.path().join("missing.toml");
    let output = run(&["node", "--config", path(&missing), "--check-config"]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains(path(&missing)),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_accepts_the_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node.toml");
    if !example.is_file() {
        eprintln!("skipped: {} does not exist", example.display());
        return;
    }
    let output = run(&["node", "--config", path(&example), "--check-config"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "ok");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["demo", "--nodez", "3"],
        &["demo", "--nodes", "many"],
        &["node"],
        &["send", "--api", "http://127.0.0.1:1"],
    ] {
        let output = run(args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
    }
    let output = run(&["demo", "--nodes", "3", "--kill", "2"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--kill 2 leaves fewer than two"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let output = run(&["--help"]);
    assert_eq!(code(&output), 0);
    let text = stdout(&output);
    for word in [
        "node",
        "ca",
        "status",
        "send",
        "demo",
        "Exit codes",
        "usage or configuration error",
    ] {
        assert!(text.contains(word), "missing {word:?} in:\n{text}");
    }
    let output = run(&["demo", "--help"]);
    for flag in [
        "--nodes",
        "--kill",
        "--seed",
        "--json",
        "--keep-dir",
        "--degree",
        "Exit codes",
    ] {
        assert!(stdout(&output).contains(flag), "missing {flag}");
    }
}

#[test]
fn status_of_a_missing_node_fails_clearly() {
    let port = common::free_ports(1)[0].1.port();
    let url = format!("http://127.0.0.1:{port}");
    let output = run(&["status", "--api", &url]);
    assert_eq!(code(&output), 1);
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!("x0tta6bl4: cannot read the node's state ({url})")),
        "{text}"
    );
    assert!(text.contains("api_listen"), "{text}");
}

/// A reader that closes the pipe early ends the output quietly (exit 141, as SIGPIPE
/// would), with no panic or backtrace on stderr.
#[test]
fn a_closed_stdout_ends_the_output_without_a_panic() {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = common::bin()
        .args([
            "twin",
            "topology",
            "--topology",
            "grid",
            "--nodes",
            "2500",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little (the output is some 300 KB, far more than a pipe holds), then close.
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}
