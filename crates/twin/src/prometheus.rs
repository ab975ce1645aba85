//! Building a twin from live Prometheus: nodes, links and their measured RTT and loss
//! from the metrics the nodes export. The caller runs the three instant queries
//! ([`QUERIES`]) against the Prometheus HTTP API and hands the answers in.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::topology::{LinkParams, Topology, TopologyError};

/// A link as (smaller name, larger name).
type LinkKey = (String, String);

/// The instant queries whose answers [`topology_from_prometheus`] needs, in order:
/// node identities, link RTTs, link losses.
pub const QUERIES: [&str; 3] = [
    "x0tta6bl4_node_info",
    "x0tta6bl4_link_rtt_seconds",
    "x0tta6bl4_link_loss_ratio",
];

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn series(answer: &str, query: &str) -> Result<Vec<Series>, TopologyError> {
    let bad =
        |why: String| TopologyError::BadDocument(format!("Prometheus answer to {query}: {why}"));
    let answer: Answer = serde_json::from_str(answer).map_err(|e| bad(e.to_string()))?;
    if answer.status != "success" {
        return Err(bad(answer.error.unwrap_or(answer.status)));
    }
    Ok(answer.data.map(|d| d.result).unwrap_or_default())
}

/// Build the topology from the answers to [`QUERIES`]. A link is included when both of
/// its ends report it or one end does and the other is a known node; its latency is
/// half the mean reported RTT and its loss the largest reported loss.
pub fn topology_from_prometheus(
    info: &str,
    rtt: &str,
    loss: &str,
) -> Result<Topology, TopologyError> {
    let mut name_of_instance = BTreeMap::new();
    for s in series(info, QUERIES[0])? {
        if let (Some(instance), Some(name)) = (s.metric.get("instance"), s.metric.get("name")) {
            name_of_instance.insert(instance.clone(), name.clone());
        }
    }
    if name_of_instance.is_empty() {
        return Err(TopologyError::BadDocument(
            "Prometheus has no x0tta6bl4_node_info series: is it scraping the nodes' /metrics?"
                .into(),
        ));
    }
    let mut links: BTreeMap<(String, String), (Vec<f64>, f64)> = BTreeMap::new();
    let key = |a: &str, b: &str| {
        if a < b {
            (a.to_owned(), b.to_owned())
        } else {
            (b.to_owned(), a.to_owned())
        }
    };
    // Each series is (reporting node's instance, neighbour label, value).
    let link_values = |answer: &str, query: &str| -> Result<Vec<(LinkKey, f64)>, TopologyError> {
        Ok(series(answer, query)?
            .into_iter()
            .filter_map(|s| {
                let node = name_of_instance.get(s.metric.get("instance")?)?;
                let value = s.value.1.parse::<f64>().ok()?;
                Some((key(node, s.metric.get("neighbour")?), value))
            })
            .collect())
    };
    for (link, seconds) in link_values(rtt, QUERIES[1])? {
        links
            .entry(link)
            .or_insert((Vec::new(), 0.0))
            .0
            .push(seconds);
    }
    for (link, ratio) in link_values(loss, QUERIES[2])? {
        let entry = links.entry(link).or_insert((Vec::new(), 0.0));
        entry.1 = entry.1.max(ratio.clamp(0.0, 1.0));
    }
    let mut doc_links = Vec::new();
    for ((a, b), (rtts, loss)) in &links {
        let mut entry = serde_json::json!({"source": a, "target": b, "loss": loss});
        if !rtts.is_empty() {
            let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
            entry["latency_ms"] = serde_json::json!(mean * 1e3 / 2.0);
        }
        doc_links.push(entry);
    }
    let nodes: Vec<&String> = name_of_instance.values().collect();
    let doc = serde_json::json!({"nodes": nodes, "links": doc_links});
    let defaults = LinkParams {
        jitter: Duration::ZERO,
        ..LinkParams::default()
    };
    Topology::from_json(&doc.to_string(), &defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(series: &[(&[(&str, &str)], &str)]) -> String {
        let result: Vec<_> = series
            .iter()
            .map(|(labels, value)| {
                let metric: BTreeMap<_, _> = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                serde_json::json!({"metric": metric, "value": [1.0, value]})
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string()
    }

    #[test]
    fn builds_nodes_and_links_with_measurements() {
        let info = answer(&[
            (&[("instance", "h:1"), ("name", "a")], "1"),
            (&[("instance", "h:2"), ("name", "b")], "1"),
            (&[("instance", "h:3"), ("name", "c")], "1"),
        ]);
        let rtt = answer(&[
            (&[("instance", "h:1"), ("neighbour", "b")], "0.004"),
            (&[("instance", "h:2"), ("neighbour", "a")], "0.002"),
            (&[("instance", "h:2"), ("neighbour", "c")], "0.001"),
        ]);
        let loss = answer(&[(&[("instance", "h:1"), ("neighbour", "b")], "0.05")]);
        let t = topology_from_prometheus(&info, &rtt, &loss).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.links.len(), 2);
        let ab = &t.links[0];
        assert_eq!(ab.params.latency, Duration::from_micros(1_500));
        assert_eq!(ab.params.loss, 0.05);
    }

    #[test]
    fn explains_missing_series_and_errors() {
        let empty = answer(&[]);
        let err = topology_from_prometheus(&empty, &empty, &empty).unwrap_err();
        assert!(err.to_string().contains("x0tta6bl4_node_info"));
        let failed = r#"{"status": "error", "error": "bad query"}"#;
        assert!(topology_from_prometheus(failed, &empty, &empty)
            .unwrap_err()
            .to_string()
            .contains("bad query"));
    }
}
