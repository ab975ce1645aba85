//! Topologies: generated (random geometric, Erdős–Rényi, grid, ring, scale-free), read
//! from JSON (our format, meshnet-lab's, or a live node's `/api/v1/topology`), or
//! built from live Prometheus metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use x0tta6bl4_proto::{NodeName, Rng};

/// Most nodes a topology may have.
pub const NODES_MAX: usize = 100_000;

/// Properties of one link (both directions).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way latency.
    pub latency: Duration,
    /// Extra one-way delay drawn uniformly from `0..jitter` per frame.
    pub jitter: Duration,
    /// Probability that a frame is lost (from `a` to `b`, and back unless
    /// `loss_reverse` says otherwise).
    pub loss: f64,
    /// Probability that a frame from `b` to `a` is lost, where it differs from `loss`
    /// (radio links are often asymmetric).
    pub loss_reverse: Option<f64>,
    /// Bits per second (0: unlimited).
    pub bandwidth_bps: u64,
}

impl LinkParams {
    /// Whether frames are lost in either direction.
    pub fn lossy(&self) -> bool {
        self.loss > 0.0 || self.loss_reverse.is_some_and(|loss| loss > 0.0)
    }

    /// Probability that a frame is lost from `a` to `b` (`a_to_b`) or back.
    pub fn loss_of(&self, a_to_b: bool) -> f64 {
        if a_to_b {
            self.loss
        } else {
            self.loss_reverse.unwrap_or(self.loss)
        }
    }

    /// Whether a routing protocol can be expected to hold a path over the link: at
    /// least 10 % of round trips get through. Below that (a batman-adv TQ near 0 both
    /// ways), no protocol keeps a link up, so the twin's checkers count it as absent:
    /// nodes behind it alone are not "connected".
    pub fn carries_traffic(&self) -> bool {
        (1.0 - self.loss_of(true)) * (1.0 - self.loss_of(false)) >= ROUND_TRIP_DELIVERY_MIN
    }

    /// Latency and jitter of a meshnet-lab link `type`: `wifi` 2 ± 1 ms (one radio hop
    /// with contention), `vpn` 10 ± 2 ms (a tunnel between gateways over the Internet),
    /// anything else 0.5 ± 0.1 ms (cable).
    fn of_link_type(&mut self, kind: &str) {
        let (latency_us, jitter_us) = match kind {
            "wifi" => (2_000, 1_000),
            "vpn" => (10_000, 2_000),
            _ => (500, 100),
        };
        self.latency = Duration::from_micros(latency_us);
        self.jitter = Duration::from_micros(jitter_us);
    }
}

/// Round trips that must get through for a link to count as a path (see
/// [`LinkParams::carries_traffic`]); the protocol stretches failure detection for loss
/// up to the same 90 %.
pub const ROUND_TRIP_DELIVERY_MIN: f64 = 0.1;

/// Frame loss of one direction of a radio link whose batman-adv transmit quality is
/// `tq` (0..1). TQ is measured on broadcast originator messages, which 802.11 sends
/// once; our frames are unicast, which 802.11 retries (3 retries here, 4 attempts), so
/// a frame is lost only when every attempt is: `(1 - tq)^4`.
pub fn loss_of_tq(tq: f64) -> f64 {
    (1.0 - tq.clamp(0.0, 1.0)).powi(4)
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            latency: Duration::from_micros(1_000),
            jitter: Duration::from_micros(200),
            loss: 0.0,
            loss_reverse: None,
            bandwidth_bps: 0,
        }
    }
}

/// One link between nodes `a` and `b` (indices into [`Topology::names`]); `a` dials.
#[derive(Clone, Debug, PartialEq)]
pub struct TopoLink {
    /// The dialing end.
    pub a: u32,
    /// The listening end.
    pub b: u32,
    /// Its properties.
    pub params: LinkParams,
}

/// Nodes and links.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    /// Node names, index = node id.
    pub names: Vec<NodeName>,
    /// Links, at most one per pair, no self-links.
    pub links: Vec<TopoLink>,
}

/// A topology that cannot be built, with what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    /// A parameter is out of range.
    #[error("{0}")]
    BadParameter(String),
    /// A topology file or document is malformed.
    #[error("{0}")]
    BadDocument(String),
}

fn bad(message: impl Into<String>) -> TopologyError {
    TopologyError::BadParameter(message.into())
}

impl Topology {
    /// `n` nodes named `n0001`…, no links.
    pub fn with_nodes(n: usize) -> Result<Topology, TopologyError> {
        if !(2..=NODES_MAX).contains(&n) {
            return Err(bad(format!("--nodes {n}: use 2 to {NODES_MAX}")));
        }
        let width = n.to_string().len().max(4);
        let names = (1..=n)
            .map(|i| NodeName::new(&format!("n{i:0width$}")).expect("valid generated name"))
            .collect();
        Ok(Topology {
            names,
            links: Vec::new(),
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn add(
        &mut self,
        a: usize,
        b: usize,
        params: &LinkParams,
        seen: &mut BTreeSet<(usize, usize)>,
    ) {
        if a != b && seen.insert((a.min(b), a.max(b))) {
            self.links.push(TopoLink {
                a: a as u32,
                b: b as u32,
                params: params.clone(),
            });
        }
    }

    /// Ring: node i links to i+1.
    pub fn ring(n: usize, params: &LinkParams) -> Result<Topology, TopologyError> {
        let mut t = Topology::with_nodes(n)?;
        let mut seen = BTreeSet::new();
        for i in 0..n {
            t.add(i, (i + 1) % n, params, &mut seen);
        }
        Ok(t)
    }

    /// A gateway: node 0 linked to every other node, which form a ring among themselves
    /// (the hub-and-spoke shape of community meshes, whose gateways have 60 to 660
    /// neighbours).
    pub fn gateway(n: usize, params: &LinkParams) -> Result<Topology, TopologyError> {
        if n < 4 {
            return Err(bad(format!("gateway of {n} nodes: use at least 4")));
        }
        let mut t = Topology::with_nodes(n)?;
        let mut seen = BTreeSet::new();
        for i in 1..n {
            t.add(0, i, params, &mut seen);
            t.add(i, if i + 1 < n { i + 1 } else { 1 }, params, &mut seen);
        }
        Ok(t)
    }

    /// Grid `width` columns wide (default: square), 4-neighbour links.
    pub fn grid(
        n: usize,
        width: Option<usize>,
        params: &LinkParams,
    ) -> Result<Topology, TopologyError> {
        let mut t = Topology::with_nodes(n)?;
        let width = width.unwrap_or_else(|| (n as f64).sqrt().ceil() as usize);
        if width == 0 || width > n {
            return Err(bad(format!("grid width {width}: use 1 to {n}")));
        }
        let mut seen = BTreeSet::new();
        for i in 0..n {
            if (i + 1) % width != 0 && i + 1 < n {
                t.add(i, i + 1, params, &mut seen);
            }
            if i + width < n {
                t.add(i, i + width, params, &mut seen);
            }
        }
        Ok(t)
    }

    /// Erdős–Rényi G(n, p) with `connectivity` = p; components are then joined by one
    /// random link each, so the mesh is connected (as the seeds' `create_test_topology`).
    pub fn erdos_renyi(
        n: usize,
        connectivity: f64,
        rng: &mut Rng,
        params: &LinkParams,
    ) -> Result<Topology, TopologyError> {
        if !(connectivity > 0.0 && connectivity <= 1.0) {
            return Err(bad(format!("connectivity {connectivity}: use a probability in (0, 1], e.g. erdos-renyi:connectivity=0.05")));
        }
        let mut t = Topology::with_nodes(n)?;
        let mut seen = BTreeSet::new();
        if connectivity * (n as f64) * (n as f64) > 5.0e7 {
            return Err(bad(format!(
                "connectivity {connectivity} with {n} nodes gives too many links: lower it"
            )));
        }
        // Geometric skipping keeps sparse graphs O(links) instead of O(n^2).
        let log_q = (1.0 - connectivity).ln();
        for a in 0..n {
            let mut b = a;
            loop {
                let skip = if connectivity >= 1.0 {
                    1
                } else {
                    1 + ((1.0 - rng.unit()).ln() / log_q).floor() as usize
                };
                b = b.saturating_add(skip);
                if b >= n {
                    break;
                }
                t.add(a, b, params, &mut seen);
            }
        }
        t.connect_components(rng, params, &mut seen);
        Ok(t)
    }

    /// Random geometric (radio-like): nodes uniform in the unit square, linked when
    /// closer than `radius` (default: a mean degree of about 6); latency grows with
    /// distance from the base latency up to twice it. Components are then joined.
    pub fn random_geometric(
        n: usize,
        radius: Option<f64>,
        rng: &mut Rng,
        params: &LinkParams,
    ) -> Result<Topology, TopologyError> {
        let radius = radius.unwrap_or_else(|| (6.0 / (std::f64::consts::PI * n as f64)).sqrt());
        if !(radius > 0.0 && radius <= 1.5) {
            return Err(bad(format!("radius {radius}: use a value in (0, 1.5]")));
        }
        let mut t = Topology::with_nodes(n)?;
        let points: Vec<(f64, f64)> = (0..n).map(|_| (rng.unit(), rng.unit())).collect();
        // Bucket points into cells of side `radius` so only nearby pairs are compared.
        let cells = ((1.0 / radius).floor() as usize).clamp(1, 4096);
        let cell_of = |p: (f64, f64)| {
            (
                ((p.0 * cells as f64) as usize).min(cells - 1),
                ((p.1 * cells as f64) as usize).min(cells - 1),
            )
        };
        let mut grid: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (i, &p) in points.iter().enumerate() {
            grid.entry(cell_of(p)).or_default().push(i);
        }
        let mut seen = BTreeSet::new();
        for (i, &p) in points.iter().enumerate() {
            let (cx, cy) = cell_of(p);
            for x in cx.saturating_sub(1)..=(cx + 1).min(cells - 1) {
                for y in cy.saturating_sub(1)..=(cy + 1).min(cells - 1) {
                    for &j in grid.get(&(x, y)).map(Vec::as_slice).unwrap_or(&[]) {
                        let d = ((points[j].0 - p.0).powi(2) + (points[j].1 - p.1).powi(2)).sqrt();
                        if j > i && d <= radius {
                            let mut link = params.clone();
                            link.latency += params.latency.mul_f64(d / radius);
                            t.add(i, j, &link, &mut seen);
                        }
                    }
                }
            }
        }
        t.connect_components(rng, params, &mut seen);
        Ok(t)
    }

    /// Scale-free (Barabási–Albert): each new node links to `m` existing nodes chosen
    /// with probability proportional to their degree.
    pub fn scale_free(
        n: usize,
        m: usize,
        rng: &mut Rng,
        params: &LinkParams,
    ) -> Result<Topology, TopologyError> {
        if m == 0 || m >= n {
            return Err(bad(format!(
                "scale-free m={m}: use 1 to {}",
                n.saturating_sub(1)
            )));
        }
        let mut t = Topology::with_nodes(n)?;
        let mut seen = BTreeSet::new();
        let mut endpoints: Vec<usize> = Vec::new();
        for i in 1..=m {
            t.add(0, i, params, &mut seen);
            endpoints.extend([0, i]);
        }
        for i in (m + 1)..n {
            let mut chosen = BTreeSet::new();
            while chosen.len() < m {
                chosen.insert(endpoints[rng.below(endpoints.len() as u64) as usize]);
            }
            for j in chosen {
                t.add(i, j, params, &mut seen);
                endpoints.extend([i, j]);
            }
        }
        Ok(t)
    }

    /// Connected components, as sorted lists of node indices.
    pub fn components(&self) -> Vec<Vec<usize>> {
        let mut parent: Vec<usize> = (0..self.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for link in &self.links {
            let (ra, rb) = (
                find(&mut parent, link.a as usize),
                find(&mut parent, link.b as usize),
            );
            parent[ra.max(rb)] = ra.min(rb);
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..self.len() {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        groups.into_values().collect()
    }

    fn connect_components(
        &mut self,
        rng: &mut Rng,
        params: &LinkParams,
        seen: &mut BTreeSet<(usize, usize)>,
    ) {
        let components = self.components();
        for pair in components.windows(2) {
            let a = pair[0][rng.below(pair[0].len() as u64) as usize];
            let b = pair[1][rng.below(pair[1].len() as u64) as usize];
            self.add(a, b, params, seen);
        }
    }

    /// Parse a JSON topology: ours, meshnet-lab's network JSON, or a node's
    /// `/api/v1/topology` answer. `nodes` is optional (names are taken from links) and
    /// each node is a string or an object with `id` or `name`; each link has `source`
    /// and `target` (names or numbers) and optionally `latency_ms` (or `rtt_ms`, halved),
    /// `jitter_ms`, `loss` (0..1) and `bandwidth_mbps`; meshnet-lab's `type` sets
    /// latency and jitter (see `LinkParams::of_link_type`) and its `source_tq` /
    /// `target_tq` the loss of each direction ([`loss_of_tq`]); explicit keys win; other
    /// keys are ignored.
    pub fn from_json(text: &str, defaults: &LinkParams) -> Result<Topology, TopologyError> {
        let doc: JsonTopology = serde_json::from_str(text).map_err(|e| {
            TopologyError::BadDocument(format!("line {}, column {}: {e}", e.line(), e.column()))
        })?;
        let mut names: Vec<String> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut intern = |raw: String, names: &mut Vec<String>| -> usize {
            *index.entry(raw.clone()).or_insert_with(|| {
                names.push(raw);
                names.len() - 1
            })
        };
        for node in doc.nodes.unwrap_or_default() {
            intern(node.id(), &mut names);
        }
        let mut pairs = Vec::new();
        for (k, mut link) in doc.links.into_iter().enumerate() {
            let source = std::mem::replace(&mut link.source, IdOrNumber::Number(0)).text();
            let target = std::mem::replace(&mut link.target, IdOrNumber::Number(0)).text();
            let (a, b) = (intern(source, &mut names), intern(target, &mut names));
            if a == b {
                return Err(TopologyError::BadDocument(format!(
                    "links[{k}] links {:?} to itself",
                    names[a]
                )));
            }
            pairs.push((k, a, b, link));
        }
        if names.len() < 2 || names.len() > NODES_MAX {
            return Err(TopologyError::BadDocument(format!(
                "{} nodes: a topology needs 2 to {NODES_MAX}",
                names.len()
            )));
        }
        let mut t = Topology {
            names: Vec::with_capacity(names.len()),
            links: Vec::new(),
        };
        for raw in &names {
            let sanitized: String = raw
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let name = NodeName::new(&sanitized)
                .map_err(|e| TopologyError::BadDocument(format!("node {raw:?}: {e}")))?;
            t.names.push(name);
        }
        let mut seen = BTreeSet::new();
        for (k, a, b, link) in pairs {
            let mut params = defaults.clone();
            if let Some(kind) = &link.kind {
                params.of_link_type(kind);
            }
            for (key, tq) in [("source_tq", link.source_tq), ("target_tq", link.target_tq)] {
                if tq.is_some_and(|tq| !(0.0..=1.0).contains(&tq)) {
                    return Err(TopologyError::BadDocument(format!(
                        "links[{k}]: {key} {} is not in 0..1",
                        tq.unwrap_or_default()
                    )));
                }
            }
            if link.source_tq.is_some() || link.target_tq.is_some() {
                params.loss = loss_of_tq(link.source_tq.unwrap_or(1.0));
                params.loss_reverse = Some(loss_of_tq(link.target_tq.unwrap_or(1.0)));
            }
            if let Some(ms) = link.latency_ms.or(link.rtt_ms.map(|r| r / 2.0)) {
                params.latency = duration_ms(ms).ok_or_else(|| {
                    TopologyError::BadDocument(format!(
                        "links[{k}]: latency {ms} ms is not a valid duration"
                    ))
                })?;
            }
            if let Some(ms) = link.jitter_ms {
                params.jitter = duration_ms(ms).ok_or_else(|| {
                    TopologyError::BadDocument(format!(
                        "links[{k}]: jitter {ms} ms is not a valid duration"
                    ))
                })?;
            }
            if let Some(loss) = link.loss {
                if !(0.0..=1.0).contains(&loss) {
                    return Err(TopologyError::BadDocument(format!(
                        "links[{k}]: loss {loss} is not in 0..1"
                    )));
                }
                params.loss = loss;
            }
            if let Some(mbps) = link.bandwidth_mbps {
                params.bandwidth_bps = (mbps.max(0.0) * 1e6) as u64;
            }
            t.add(a, b, &params, &mut seen);
        }
        Ok(t)
    }
}

fn duration_ms(ms: f64) -> Option<Duration> {
    (ms.is_finite() && (0.0..1e7).contains(&ms)).then(|| Duration::from_secs_f64(ms / 1e3))
}

#[derive(Deserialize)]
struct JsonTopology {
    nodes: Option<Vec<JsonNode>>,
    links: Vec<JsonLink>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonNode {
    Name(String),
    Object {
        id: Option<IdOrNumber>,
        name: Option<String>,
    },
}

impl JsonNode {
    fn id(self) -> String {
        match self {
            JsonNode::Name(name) => name,
            JsonNode::Object { id: Some(id), .. } => id.text(),
            JsonNode::Object {
                name: Some(name), ..
            } => name,
            JsonNode::Object { .. } => String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdOrNumber {
    Text(String),
    Number(u64),
}

impl IdOrNumber {
    fn text(self) -> String {
        match self {
            IdOrNumber::Text(s) => s,
            IdOrNumber::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct JsonLink {
    source: IdOrNumber,
    target: IdOrNumber,
    latency_ms: Option<f64>,
    rtt_ms: Option<f64>,
    jitter_ms: Option<f64>,
    loss: Option<f64>,
    bandwidth_mbps: Option<f64>,
    /// meshnet-lab: transmit quality from source to target (0..1).
    source_tq: Option<f64>,
    /// meshnet-lab: transmit quality from target to source (0..1).
    target_tq: Option<f64>,
    /// meshnet-lab: `wifi`, `vpn` or `other`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(t: &Topology) -> bool {
        t.components().len() == 1
    }

    #[test]
    fn generators_are_connected_and_simple() {
        let p = LinkParams::default();
        let mut rng = Rng::seed(1);
        let all = [
            Topology::ring(10, &p).unwrap(),
            Topology::grid(10, None, &p).unwrap(),
            Topology::erdos_renyi(200, 0.01, &mut rng, &p).unwrap(),
            Topology::random_geometric(200, None, &mut rng, &p).unwrap(),
            Topology::scale_free(200, 2, &mut rng, &p).unwrap(),
            Topology::gateway(71, &p).unwrap(),
        ];
        for t in &all {
            assert!(connected(t));
            let mut pairs = BTreeSet::new();
            for l in &t.links {
                assert_ne!(l.a, l.b);
                assert!(pairs.insert((l.a.min(l.b), l.a.max(l.b))), "duplicate link");
            }
        }
        assert_eq!(all[0].links.len(), 10);
        assert_eq!(all[1].links.len(), 13); // 4 columns: 7 horizontal + 6 vertical... for 10 nodes
                                            // 70 spokes and a ring of 70: the gateway has 70 neighbours, the others 3.
        assert_eq!(all[5].links.len(), 140);
        let gateway_degree = all[5].links.iter().filter(|l| l.a == 0 || l.b == 0).count();
        assert_eq!(gateway_degree, 70);
    }

    #[test]
    fn impossible_parameters_are_refused() {
        let p = LinkParams::default();
        let mut rng = Rng::seed(1);
        assert!(Topology::erdos_renyi(10, 1.5, &mut rng, &p)
            .unwrap_err()
            .to_string()
            .contains("connectivity"));
        assert!(Topology::erdos_renyi(10, 0.0, &mut rng, &p).is_err());
        assert!(Topology::ring(1, &p).is_err());
        assert!(Topology::gateway(3, &p).is_err());
        assert!(Topology::scale_free(5, 5, &mut rng, &p).is_err());
    }

    #[test]
    fn meshnet_link_types_and_transmit_qualities_become_latency_and_directed_loss() {
        let doc = r#"{"links": [
            {"source": 0, "target": 1, "source_tq": 1.0, "target_tq": 0.5, "type": "wifi"},
            {"source": 1, "target": 2, "type": "vpn"},
            {"source": 2, "target": 3, "source_tq": 0.0, "type": "other", "latency_ms": 7}]}"#;
        let t = Topology::from_json(doc, &LinkParams::default()).unwrap();
        let [wifi, vpn, other] = [&t.links[0], &t.links[1], &t.links[2]].map(|l| &l.params);
        assert_eq!(
            (wifi.latency, wifi.jitter),
            (Duration::from_millis(2), Duration::from_millis(1))
        );
        assert_eq!((wifi.loss, wifi.loss_reverse), (0.0, Some(0.0625)));
        assert_eq!(vpn.latency, Duration::from_millis(10));
        assert!(!vpn.lossy());
        // A direction with no quality loses everything; explicit keys win over the type.
        assert_eq!((other.loss, other.loss_reverse), (1.0, Some(0.0)));
        assert_eq!(other.latency, Duration::from_millis(7));
        let bad = r#"{"links": [{"source": 0, "target": 1, "target_tq": 1.5}]}"#;
        let err = Topology::from_json(bad, &LinkParams::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("links[0]: target_tq 1.5 is not in 0..1"),
            "{err}"
        );
    }

    #[test]
    fn reads_meshnet_lab_and_node_api_json() {
        let meshnet = r#"{"nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "links": [{"source": "a", "target": "b"}, {"source": "b", "target": "c", "rtt_ms": 8}]}"#;
        let t = Topology::from_json(meshnet, &LinkParams::default()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.links[1].params.latency, Duration::from_millis(4));
        let numbers = r#"{"links": [{"source": 0, "target": 1}, {"source": 1, "target": 2}]}"#;
        assert_eq!(
            Topology::from_json(numbers, &LinkParams::default())
                .unwrap()
                .len(),
            3
        );
        let api =
            r#"{"nodes": ["n1", "n2"], "links": [{"source": "n1", "target": "n2", "cost": 12}]}"#;
        assert_eq!(
            Topology::from_json(api, &LinkParams::default())
                .unwrap()
                .links
                .len(),
            1
        );
        let err = Topology::from_json("{\"links\": [", &LinkParams::default()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let selfie = r#"{"links": [{"source": "a", "target": "a"}]}"#;
        assert!(Topology::from_json(selfie, &LinkParams::default()).is_err());
    }
}
