//! `x0tta6bl4 status` and `x0tta6bl4 send`: a person's view of one node's API.

use serde_json::Value;

use crate::api::{unanswered_fix, Api, HttpError};
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
/// Longest wait of `status --wait-routes`.
const WAIT_ROUTES_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Run `status`.
pub async fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let api = api_for(&args.api, args.svid.as_deref())?;
    let svid_given = args.svid.is_some();
    let read = |path: &'static str| {
        let api = &api;
        async move {
            api.get::<Value>(path).await.map_err(|error| {
                let fix = match error.downcast_ref::<HttpError>() {
                    Some(_) => "see the node's answer below and its log".to_owned(),
                    None => unanswered_fix(&error, api.base(), svid_given),
                };
                let what = "cannot read the node's state";
                error.context(problem(Exit::Failure, what, api.base(), fix))
            })
        }
    };
    if let Some(wanted) = args.wait_routes {
        wait_for_routes(&read, wanted, api.base()).await?;
    }
    let status = read("/api/v1/status").await?;
    let peers = read("/api/v1/peers").await?;
    let routes = read("/api/v1/routes").await?;
    if args.json {
        let all = serde_json::json!({ "status": status, "peers": peers, "routes": routes });
        println!("{all}");
        return Ok(());
    }
    println!("{}", headline(&status));
    println!("\nPeers (COST: the link's cost measured now)");
    print!("{}", table(&PEER_COLUMNS, rows(&peers, &PEER_COLUMNS)));
    println!(
        "\nRoutes (COST: sum of the advertised link costs along the path; a link's cost is \
         re-advertised when it moved by cost_change_percent, so it may differ from the peer's)"
    );
    print!("{}", table(&ROUTE_COLUMNS, rows(&routes, &ROUTE_COLUMNS)));
    Ok(())
}

/// Wait until the node answers and routes to `wanted` other nodes, or fail after
/// [`WAIT_ROUTES_MAX`] with what it last saw.
async fn wait_for_routes<F, Fut>(read: &F, wanted: u64, base: &str) -> anyhow::Result<()>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let deadline = tokio::time::Instant::now() + WAIT_ROUTES_MAX;
    loop {
        let last = read("/api/v1/status").await;
        let routes = last.as_ref().ok().and_then(|s| s["routes"].as_u64());
        if routes.is_some_and(|r| r >= wanted) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let seen = match (&last, routes) {
                (Err(_), _) => "no answer".to_owned(),
                (Ok(_), Some(r)) => format!("routes to {r}"),
                (Ok(_), None) => "an answer without routes".to_owned(),
            };
            let error = problem(
                Exit::Failure,
                format!(
                    "the node does not route to {wanted} other node(s) after {} s ({seen})",
                    WAIT_ROUTES_MAX.as_secs()
                ),
                base,
                "check the node's log and that its peers run and list each other",
            );
            return Err(match last {
                Err(cause) => cause.context(error),
                Ok(_) => error.into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Run `send`.
pub async fn send(args: &SendArgs) -> anyhow::Result<()> {
    let api = api_for(&args.api, args.svid.as_deref())?;
    match api.send(&args.to, &args.text).await {
        Ok(answer) => {
            let id = cell(answer.get("id"));
            let next_hop = cell(answer.get("next_hop"));
            println!("sent message {id} to {} via {next_hop}", args.to);
            Ok(())
        }
        Err(error) => Err(send_problem(
            error,
            &args.to,
            api.base(),
            args.svid.is_some(),
        )),
    }
}

fn send_problem(error: anyhow::Error, to: &str, base: &str, svid_given: bool) -> anyhow::Error {
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
        None => (Exit::Failure, unanswered_fix(&error, base, svid_given)),
    };
    error.context(problem(exit, format!("cannot send to {to}"), base, fix))
}

/// The API client for `--api URL [--svid DIR]`, or a usage problem saying how to fix them.
pub(crate) fn api_for(url: &str, svid: Option<&std::path::Path>) -> anyhow::Result<Api> {
    Api::with_svid(url, svid).problem(
        Exit::Usage,
        "invalid --api or --svid",
        url,
        "give the node's API as http://HOST:PORT, or https://HOST:PORT with --svid DIR naming an SVID directory",
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
