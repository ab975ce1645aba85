//! `x0tta6bl4 status` and `x0tta6bl4 send`: a person's view of one node's API.

use serde_json::Value;

use crate::api::{Api, HttpError};
use crate::args::{SendArgs, StatusArgs};
use crate::problem::{problem, Exit, ProblemExt};

const PEER_COLUMNS: [&str; 7] = [
    "name",
    "state",
    "rtt_ms",
    "loss",
    "cost",
    "addr",
    "spiffe_id",
];
const ROUTE_COLUMNS: [&str; 4] = ["destination", "next_hop", "cost", "hops"];

/// Run `status`.
pub async fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let api = api_for(&args.api, args.cert_dir.as_deref())?;
    let fix = "check that the node runs and that --api matches its api_listen";
    let unreachable = "cannot read the node's state";
    let status: Value =
        api.get("/api/v1/status")
            .await
            .problem(Exit::Failure, unreachable, api.base(), fix)?;
    let peers: Value =
        api.get("/api/v1/peers")
            .await
            .problem(Exit::Failure, unreachable, api.base(), fix)?;
    let routes: Value =
        api.get("/api/v1/routes")
            .await
            .problem(Exit::Failure, unreachable, api.base(), fix)?;
    if args.json {
        let all = serde_json::json!({ "status": status, "peers": peers, "routes": routes });
        println!("{all}");
        return Ok(());
    }
    println!("{}", headline(&status));
    println!("\nPeers");
    print!("{}", table(&PEER_COLUMNS, rows(&peers, &PEER_COLUMNS)));
    println!("\nRoutes");
    print!("{}", table(&ROUTE_COLUMNS, rows(&routes, &ROUTE_COLUMNS)));
    Ok(())
}

/// Run `send`.
pub async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let api = api_for(&args.api, args.cert_dir.as_deref())?;
    match api.send(&args.to, &args.text).await {
        Ok(answer) => {
            let id = cell(answer.get("id"));
            let next_hop = cell(answer.get("next_hop"));
            println!("sent message {id} to {} via {next_hop}", args.to);
            Ok(())
        }
        Err(error) => Err(send_problem(error, &args.to, api.base())),
    }
}

fn send_problem(error: anyhow::Error, to: &str, base: &str) -> anyhow::Error {
    let status = error.downcast_ref::<HttpError>().map(|e| e.status);
    let (exit, fix) = match status {
        Some(404) => (
            Exit::Failure,
            format!("{to:?} is not a known node; see the names: `x0tta6bl4 status --api {base}`"),
        ),
        Some(503) => (
            Exit::Failure,
            format!("{to:?} is known but has no route now; wait for the mesh to heal and retry"),
        ),
        Some(413) => (
            Exit::Usage,
            "the text is larger than payload_bytes_max; send less".into(),
        ),
        Some(400) => (
            Exit::Usage,
            "the node rejected the request; check --to and TEXT".into(),
        ),
        Some(_) => (
            Exit::Failure,
            "see the node's answer below and its log".into(),
        ),
        None => (
            Exit::Failure,
            "check that the node runs and --api matches its api_listen".into(),
        ),
    };
    error.context(problem(exit, format!("cannot send to {to}"), base, fix))
}

/// The API client of `status` and `send`: plain HTTP, or with `--cert-dir` mutual TLS
/// with the SVID in that directory (for a node with `[identity] api_mtls`).
fn api_for(url: &str, cert_dir: Option<&std::path::Path>) -> anyhow::Result<Api> {
    let tls = match cert_dir {
        None => None,
        Some(dir) => {
            let identity = x0tta6bl4_identity::NodeIdentity::load(dir).problem(
                Exit::Usage,
                "cannot load the SVID of --cert-dir",
                dir.display(),
                "give an SVID directory (svid.pem, svid_key.pem, bundle.pem), e.g. from \
                 `x0tta6bl4 ca issue --name ops-1`",
            )?;
            Some(identity.api_client_config()?)
        }
    };
    Api::with_tls(url, tls).problem(
        Exit::Usage,
        "invalid --api",
        url,
        "give the node's API as http://HOST:PORT, or https://HOST:PORT with --cert-dir",
    )
}

fn headline(status: &Value) -> String {
    let field = |key: &str| cell(status.get(key));
    format!(
        "node {} ({})  version {}  up {} s\nneighbours up {}/{}  routes {}  lsdb entries {}  \
         sequence {}  messages received {}",
        field("name"),
        field("spiffe_id"),
        field("version"),
        field("uptime_s"),
        field("neighbours_up"),
        field("neighbours"),
        field("routes"),
        field("lsdb_entries"),
        field("sequence"),
        field("messages_received"),
    )
}

/// The cells of `columns` for each object of the JSON list `list`.
fn rows(list: &Value, columns: &[&str]) -> Vec<Vec<String>> {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|item| columns.iter().map(|c| cell(item.get(*c))).collect())
        .collect()
}

/// A JSON value as a table cell: strings bare, null and missing as `-`, floats rounded.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or(f64::NAN)),
        Some(other) => other.to_string(),
    }
}

/// Left-aligned columns separated by two spaces, headers in upper case; `(none)` when
/// there is no row.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header_row).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(t, w)| format!("{t:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["n01".into(), "up".into()],
            vec!["node-long".into(), "down".into()],
        ];
        assert_eq!(
            table(&["name", "state"], rows),
            "NAME       STATE\nn01        up\nnode-long  down\n"
        );
        assert_eq!(table(&["a"], vec![]), "A\n(none)\n");
    }

    #[test]
    fn cells_from_json() {
        let item = serde_json::json!({"name": "n1", "rtt_ms": 1.23456, "addr": null, "cost": 7});
        let row = &rows(
            &Value::Array(vec![item]),
            &["name", "rtt_ms", "addr", "cost", "missing"],
        )[0];
        assert_eq!(row, &["n1", "1.23", "-", "7", "-"]);
    }
}
