//! A hierarchical navigable small-world graph (HNSW, Malkov & Yashunin 2016) over int8
//! codes.
//!
//! Every vector is a node with a random top layer (`P(level ≥ l) = m^-l`); layer 0
//! links each node to up to `2m` neighbours, upper layers to up to `m`. A search
//! descends greedily from the entry point through the upper layers and runs a beam
//! search of width `ef` on layer 0, so it scores a few hundred vectors instead of all.
//! Neighbours are chosen by the paper's heuristic (a candidate is kept when it is
//! closer to the node than to any neighbour kept before it, which keeps links to
//! several clusters), then the list is filled up to its degree with the best pruned
//! candidates ("keep pruned connections", so no node ends with few links).
//!
//! Storage: the graph is built on the f32 vectors, but only their int8 codes (the
//! [`Int8Index`] quantizer, per-dimension percentile ranges) are kept; searches score
//! the f32 query against the codes. Memory and file hold the codes, the calibration
//! tables, one level byte and one count byte per node and 4 bytes per link; with
//! `m = 16` that is `384 + 2 + ~4·(2m + m/(m-1))` bytes per 384-d vector, about 3×
//! smaller than f32, versus 4× for the flat int8 scan it replaces.
//!
//! Written by hand: `hnsw_rs` (maintained, builds on 1.95) persists to two files of its
//! own and reloads into an `Hnsw<'a>` that borrows from its loader, which neither fits
//! one checksummed index file nor a `Box<dyn VectorIndex>`, and it keeps full-precision
//! vectors; `instant-distance` keeps f32 points too and has had no release since 2023.
//! Construction is sequential and seeded, so one seed gives the same graph every time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::int8::Int8Index;
use super::{dot, put_u32, Hit, IndexError, IndexKind, Reader, VectorIndex};

/// Largest `m` accepted (layer 0 keeps `2m` links, counted in one byte).
pub const M_MAX: usize = 64;
/// Highest layer a node can get.
const LEVEL_MAX: u8 = 16;
/// Largest beam accepted.
pub const EF_MAX: usize = 4096;

/// Build and search parameters of a [`GraphIndex`].
#[derive(Clone, Debug, PartialEq)]
pub struct GraphParams {
    /// Links per node on the upper layers (`2m` on layer 0).
    pub m: usize,
    /// Beam width while building.
    pub ef_construction: usize,
    /// Beam width of a search (at least `k` is used).
    pub ef_search: usize,
    /// Clipping quantile of the int8 calibration.
    pub clip: f32,
    /// Seed of the level draws.
    pub seed: u64,
}

impl Default for GraphParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            clip: 0.0001,
            seed: 1,
        }
    }
}

impl GraphParams {
    /// Check the ranges, saying which parameter is wrong.
    pub fn check(&self) -> Result<(), IndexError> {
        let bad = |what: String| Err(IndexError::Invalid(what));
        if !(2..=M_MAX).contains(&self.m) {
            return bad(format!("graph m={} must be in 2..={M_MAX}", self.m));
        }
        if !(1..=EF_MAX).contains(&self.ef_construction) || !(1..=EF_MAX).contains(&self.ef_search)
        {
            return bad(format!(
                "graph efc={} and ef={} must be in 1..={EF_MAX}",
                self.ef_construction, self.ef_search
            ));
        }
        if !(0.0..0.5).contains(&self.clip) {
            return bad(format!("graph clip={} must be in [0, 0.5)", self.clip));
        }
        Ok(())
    }
}

/// A similarity and a node, ordered by similarity (ties: lower id first).
#[derive(Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// The links of every node on every layer.
#[derive(Default)]
struct Links {
    /// Layer-0 degree bound (`2m`).
    m0: usize,
    /// Upper-layer degree bound (`m`).
    m: usize,
    /// Each node's top layer.
    levels: Vec<u8>,
    /// Layer 0: `m0` slots per node.
    base: Vec<u32>,
    /// Used slots of each node's layer-0 list.
    base_len: Vec<u8>,
    /// Layers 1..: per node with a level above 0, one list per layer (index l - 1).
    upper: HashMap<u32, Vec<Vec<u32>>>,
}

impl Links {
    fn new(m: usize, levels: Vec<u8>) -> Self {
        let n = levels.len();
        let upper = (0..n as u32)
            .filter(|&i| levels[i as usize] > 0)
            .map(|i| (i, vec![Vec::new(); levels[i as usize] as usize]))
            .collect();
        Self {
            m0: 2 * m,
            m,
            levels,
            base: vec![0; n * 2 * m],
            base_len: vec![0; n],
            upper,
        }
    }

    fn of(&self, id: u32, layer: u8) -> &[u32] {
        if layer == 0 {
            let start = id as usize * self.m0;
            return &self.base[start..start + self.base_len[id as usize] as usize];
        }
        self.upper
            .get(&id)
            .and_then(|lists| lists.get(layer as usize - 1))
            .map_or(&[], Vec::as_slice)
    }

    fn cap(&self, layer: u8) -> usize {
        if layer == 0 {
            self.m0
        } else {
            self.m
        }
    }

    fn set(&mut self, id: u32, layer: u8, list: &[u32]) {
        debug_assert!(list.len() <= self.cap(layer));
        if layer == 0 {
            let start = id as usize * self.m0;
            self.base[start..start + list.len()].copy_from_slice(list);
            self.base_len[id as usize] = list.len() as u8;
        } else if let Some(lists) = self.upper.get_mut(&id) {
            lists[layer as usize - 1] = list.to_vec();
        }
    }

    fn link_count(&self) -> usize {
        let upper: usize = self.upper.values().flatten().map(Vec::len).sum();
        self.base_len.iter().map(|&l| l as usize).sum::<usize>() + upper
    }

    /// Bytes a search needs: level and count bytes, layer-0 slots, upper links and
    /// their counts.
    fn memory_bytes(&self) -> usize {
        let upper_lists: usize = self.upper.values().map(Vec::len).sum();
        let upper_links: usize = self.upper.values().flatten().map(Vec::len).sum();
        self.levels.len() * 2 + self.base.len() * 4 + upper_lists + upper_links * 4
    }
}

/// Visited marks for one search.
/// The nodes a beam search has seen: a bit per node, reused from search to search on
/// the same thread ([`VISITED`]); only the words a search touched are cleared after it,
/// so a search costs nothing proportional to the number of nodes (a fresh bitset per
/// layer was `n / 8` bytes zeroed, 125 KB per layer at a million nodes).
#[derive(Default)]
struct Visited {
    words: Vec<u64>,
    touched: Vec<u32>,
}

impl Visited {
    /// Clear what the last search marked and make room for `n` nodes.
    fn reset(&mut self, n: usize) {
        for &w in &self.touched {
            self.words[w as usize] = 0;
        }
        self.touched.clear();
        if self.words.len() < n.div_ceil(64) {
            self.words.resize(n.div_ceil(64), 0);
        }
    }

    /// Mark `id`; false when it was marked already.
    #[inline]
    fn insert(&mut self, id: u32) -> bool {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        let w = &mut self.words[word];
        if *w & bit != 0 {
            return false;
        }
        if *w == 0 {
            self.touched.push(word as u32);
        }
        *w |= bit;
        true
    }
}

thread_local! {
    /// The visited set of [`search_layer`] on this thread.
    static VISITED: std::cell::RefCell<Visited> = std::cell::RefCell::default();
}

/// Beam search of width `ef` on one layer from `entries`; the best first.
fn search_layer(
    links: &Links,
    entries: &[Scored],
    ef: usize,
    layer: u8,
    similarity: &dyn Fn(u32) -> f32,
) -> Vec<Scored> {
    VISITED.with(|v| {
        let mut visited = v.borrow_mut();
        visited.reset(links.levels.len());
        beam(&mut visited, links, entries, ef, layer, similarity)
    })
}

fn beam(
    visited: &mut Visited,
    links: &Links,
    entries: &[Scored],
    ef: usize,
    layer: u8,
    similarity: &dyn Fn(u32) -> f32,
) -> Vec<Scored> {
    let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
    let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
    for &entry in entries {
        visited.insert(entry.1);
        candidates.push(entry);
        best.push(std::cmp::Reverse(entry));
    }
    while best.len() > ef {
        best.pop();
    }
    while let Some(current) = candidates.pop() {
        let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0 .0);
        if current.0 < worst && best.len() >= ef {
            break;
        }
        for &next in links.of(current.1, layer) {
            if !visited.insert(next) {
                continue;
            }
            let s = Scored(similarity(next), next);
            let worst = best.peek().map_or(f32::NEG_INFINITY, |w| w.0 .0);
            if best.len() < ef || s.0 > worst {
                candidates.push(s);
                best.push(std::cmp::Reverse(s));
                if best.len() > ef {
                    best.pop();
                }
            }
        }
    }
    let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// Greedy descent from `entry` through layers `top` down to `bottom + 1`.
fn descend(
    links: &Links,
    mut entry: Scored,
    top: u8,
    bottom: u8,
    similarity: &dyn Fn(u32) -> f32,
) -> Scored {
    for layer in (bottom + 1..=top).rev() {
        entry = search_layer(links, &[entry], 1, layer, similarity)[0];
    }
    entry
}

/// The heuristic neighbour selection: `candidates` (best first, by similarity to the
/// node) are kept when closer to the node than to every neighbour kept so far; the
/// list is then filled up to `cap` with the best pruned ones.
fn select(candidates: &[Scored], cap: usize, pair: &dyn Fn(u32, u32) -> f32) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::with_capacity(cap);
    let mut pruned = Vec::new();
    for c in candidates {
        if kept.len() == cap {
            break;
        }
        if kept.iter().all(|&r| pair(c.1, r) < c.0) {
            kept.push(c.1);
        } else {
            pruned.push(c.1);
        }
    }
    for p in pruned {
        if kept.len() == cap {
            break;
        }
        kept.push(p);
    }
    kept
}

/// An HNSW graph over int8 codes.
pub struct GraphIndex {
    params: GraphParams,
    codes: Int8Index,
    links: Links,
    entry: u32,
    max_level: u8,
}

impl GraphIndex {
    /// Build over `data` (`n * dim` floats).
    pub fn build(data: &[f32], dim: usize, params: &GraphParams) -> Result<Self, IndexError> {
        params.check()?;
        let n = data.len() / dim;
        if n > u32::MAX as usize - 1 {
            return Err(IndexError::Invalid(format!(
                "{n} vectors; at most 2^32 - 2"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let ml = 1.0 / (params.m as f64).ln();
        let levels: Vec<u8> = (0..n)
            .map(|_| {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                ((-u.ln() * ml).floor() as u8).min(LEVEL_MAX)
            })
            .collect();
        let mut graph = Self {
            params: params.clone(),
            codes: Int8Index::build(data, dim, params.clip),
            links: Links::new(params.m, levels),
            entry: 0,
            max_level: 0,
        };
        let row = |i: u32| &data[i as usize * dim..(i as usize + 1) * dim];
        for id in 0..n as u32 {
            graph.insert(id, &row);
        }
        Ok(graph)
    }

    /// Link node `id` (its vector is `row(id)`) into the graph.
    fn insert<'a>(&mut self, id: u32, row: &dyn Fn(u32) -> &'a [f32]) {
        let level = self.links.levels[id as usize];
        if id == 0 {
            self.max_level = level;
            return;
        }
        let query = row(id);
        let similarity = |other: u32| dot(query, row(other));
        let pair = |a: u32, b: u32| dot(row(a), row(b));
        let start = Scored(similarity(self.entry), self.entry);
        let entry = descend(&self.links, start, self.max_level, level, &similarity);
        let mut entries = vec![entry];
        for layer in (0..=level.min(self.max_level)).rev() {
            let found = search_layer(
                &self.links,
                &entries,
                self.params.ef_construction,
                layer,
                &similarity,
            );
            let cap = self.links.cap(layer);
            let chosen = select(&found, cap, &pair);
            self.links.set(id, layer, &chosen);
            for &neighbour in &chosen {
                self.link_back(neighbour, id, layer, &pair);
            }
            entries = found;
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = id;
        }
    }

    /// Add `id` to `node`'s list on `layer`, re-selecting when it is full.
    fn link_back(&mut self, node: u32, id: u32, layer: u8, pair: &dyn Fn(u32, u32) -> f32) {
        let cap = self.links.cap(layer);
        let mut list = self.links.of(node, layer).to_vec();
        if list.len() < cap {
            list.push(id);
            return self.links.set(node, layer, &list);
        }
        let mut candidates: Vec<Scored> = list
            .iter()
            .chain([&id])
            .map(|&c| Scored(pair(node, c), c))
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        list = select(&candidates, cap, pair);
        self.links.set(node, layer, &list);
    }

    pub(crate) fn decode(r: &mut Reader<'_>, dim: usize, n: usize) -> Result<Self, String> {
        let m = r.u32()? as usize;
        let ef_construction = r.u32()? as usize;
        let ef_search = r.u32()? as usize;
        let seed = r.u64()?;
        let entry = r.u32()?;
        let max_level = r.u32()?;
        let codes = Int8Index::decode(r, dim, n)?;
        let params = GraphParams {
            m,
            ef_construction,
            ef_search,
            clip: codes.clip(),
            seed,
        };
        params.check().map_err(|e| e.to_string())?;
        let levels = r.bytes(n)?.to_vec();
        let mut links = Links::new(m, levels);
        for id in 0..n as u32 {
            for layer in 0..=links.levels[id as usize] {
                let count = r.bytes(1)?[0] as usize;
                if count > links.cap(layer) {
                    return Err(format!("node {id} has {count} links on layer {layer}"));
                }
                let list = (0..count).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
                if let Some(bad) = list.iter().find(|&&l| l as usize >= n) {
                    return Err(format!("node {id} links to {bad}, past the last node"));
                }
                links.set(id, layer, &list);
            }
        }
        let top = links.levels.get(entry as usize).copied();
        if n > 0 && top != Some(max_level as u8) {
            return Err(format!(
                "entry point {entry} is not a node of level {max_level}"
            ));
        }
        Ok(Self {
            params,
            codes,
            links,
            entry,
            max_level: max_level as u8,
        })
    }

    /// Links in the graph (all layers).
    pub fn link_count(&self) -> usize {
        self.links.link_count()
    }
}

impl VectorIndex for GraphIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Graph
    }

    fn spec(&self) -> String {
        let p = &self.params;
        format!(
            "graph:m={},efc={},ef={},clip={},seed={}",
            p.m, p.ef_construction, p.ef_search, p.clip, p.seed
        )
    }

    fn dim(&self) -> usize {
        self.codes.dim()
    }

    fn len(&self) -> usize {
        self.links.levels.len()
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let prepared = self.codes.prepare(query);
        let similarity = |id: u32| self.codes.score(&prepared, id);
        let start = Scored(similarity(self.entry), self.entry);
        let entry = descend(&self.links, start, self.max_level, 0, &similarity);
        let ef = self.params.ef_search.max(k);
        search_layer(&self.links, &[entry], ef, 0, &similarity)
            .into_iter()
            .take(k)
            .map(|Scored(score, id)| Hit { id, score })
            .collect()
    }

    fn memory_bytes(&self) -> usize {
        self.codes.memory_bytes() + self.links.memory_bytes()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        put_u32(out, p.m as u32);
        put_u32(out, p.ef_construction as u32);
        put_u32(out, p.ef_search as u32);
        out.extend_from_slice(&p.seed.to_le_bytes());
        put_u32(out, self.entry);
        put_u32(out, u32::from(self.max_level));
        self.codes.encode(out);
        out.extend_from_slice(&self.links.levels);
        for id in 0..self.len() as u32 {
            for layer in 0..=self.links.levels[id as usize] {
                let list = self.links.of(id, layer);
                out.push(list.len() as u8);
                for &l in list {
                    put_u32(out, l);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{recall, IndexSpec};

    #[test]
    fn graph_finds_the_true_neighbours_and_every_node_is_linked() {
        let dim = 32;
        let data = crate::data::clustered(3000, dim, 40, 0.35, 3, 4);
        let queries = crate::data::clustered(50, dim, 40, 0.35, 3, 5);
        let params = GraphParams {
            m: 8,
            ef_construction: 64,
            ef_search: 48,
            ..GraphParams::default()
        };
        let graph = GraphIndex::build(&data, dim, &params).unwrap();
        let flat = IndexSpec::Flat.build(&data, dim).unwrap();
        let mut total = 0.0;
        for q in queries.chunks(dim) {
            total += recall(&flat.search(q, 10), &graph.search(q, 10));
        }
        let r = total / 50.0;
        assert!(r >= 0.9, "graph recall@10 {r}");
        assert!((0..3000).all(|i| !graph.links.of(i, 0).is_empty()));
        // Degrees stay within their bounds, and most nodes use them (kept pruned links).
        let full = (0..3000u32)
            .filter(|&i| graph.links.of(i, 0).len() == 16)
            .count();
        assert!(full > 1500, "{full} nodes with a full layer-0 list");
        assert!(graph.search(&queries[..dim], 0).is_empty());
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (p, needle) in [
            (
                GraphParams {
                    m: 1,
                    ..Default::default()
                },
                "m=1",
            ),
            (
                GraphParams {
                    ef_search: 0,
                    ..Default::default()
                },
                "ef=0",
            ),
            (
                GraphParams {
                    clip: 0.6,
                    ..Default::default()
                },
                "clip",
            ),
        ] {
            let e = GraphIndex::build(&[0.0; 8], 8, &p)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_link_past_the_last_node_is_refused() {
        let dim = 8;
        let data = crate::data::clustered(40, dim, 4, 0.3, 1, 2);
        let graph = GraphIndex::build(&data, dim, &GraphParams::default()).unwrap();
        let mut payload = Vec::new();
        graph.encode(&mut payload);
        let back = GraphIndex::decode(&mut Reader::new(&payload), dim, 40).unwrap();
        assert_eq!(back.search(&data[..dim], 3), graph.search(&data[..dim], 3));
        // Parameters (28 bytes), int8 tables and codes, levels, then node 0's count byte.
        let first_link = 28 + 4 + dim * 8 + 40 * dim + 40 + 1;
        payload[first_link..first_link + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = GraphIndex::decode(&mut Reader::new(&payload), dim, 40)
            .err()
            .unwrap();
        assert!(e.contains("past the last node"), "{e}");
    }
}
