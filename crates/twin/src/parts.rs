//! Sharded runs: shard `I` of `N` runs a contiguous range of a run's iterations and
//! writes a *part*; [`merge`] turns the `N` parts back into exactly the report of the
//! unsharded run.
//!
//! Key design decision: a part carries every iteration's raw results (each outage
//! sample, each count, each simulated duration), not statistics, and the merge feeds
//! them, in iteration order, to the same summary code as `run`. Percentiles of
//! percentiles would be wrong; raw samples merged in order give the same floating-point
//! sums, hence the same bytes. Floats are stored as their IEEE-754 bits (JSON numbers
//! read back by a default `serde_json` may lose the last bit). The cost: a part holds
//! about 30 bytes per outage sample (100 flows per iteration: ~3 KB per iteration).
//!
//! Iteration `k` is independent of every other: it runs on its own copy of the
//! converged mesh (which is a function of the run's parameters alone) and draws from
//! `iteration_seed(seed, k)`. Every shard converges the mesh itself, so a shard costs
//! one convergence plus its iterations.
//!
//! A part file is one header line, `x0tta6bl4-twin-part 1 sha256:<hex of the body>`,
//! then the JSON body. The digest catches truncated or altered files; the body names the
//! run (`RunIdentity`: version, topology and its digest, scenario, seed, iterations,
//! shard count, every setting that decides results), so parts of different runs are
//! refused instead of mixed.

use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::runner::{self, Report, ReportHeader, RunError, RunOptions};
use crate::scenario::{IterationResult, Scenario};
use crate::topology::Topology;

/// First word of a part file.
pub const PART_MAGIC: &str = "x0tta6bl4-twin-part";
/// Version of the part format this build writes and reads.
pub const PART_FORMAT: u32 = 1;

/// Shard `index` of `count` (0-based, as Kubernetes' `JOB_COMPLETION_INDEX`): iterations
/// `index * K / count .. (index + 1) * K / count` of a K-iteration run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, `0..count`.
    pub index: usize,
    /// How many shards the run is split into.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not I/N (e.g. 0/4: the first of 4 shards)"))?;
        let number = |part: &str, what: &str| {
            part.trim().parse::<usize>().map_err(|_| {
                format!("{what} {part:?} in {text:?} is not a whole number (write I/N, e.g. 3/8)")
            })
        };
        let shard = Shard {
            index: number(index, "shard index")?,
            count: number(count, "shard count")?,
        };
        if shard.count == 0 {
            return Err(format!("{text:?} has 0 shards: N must be at least 1"));
        }
        if shard.index >= shard.count {
            return Err(format!(
                "shard index {} is out of range for {} shards: I is 0-based, 0 to {}",
                shard.index,
                shard.count,
                shard.count - 1
            ));
        }
        Ok(shard)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The iterations of a run of `iterations` that this shard runs.
    pub fn range(&self, iterations: usize) -> Range<usize> {
        assert!(self.index < self.count, "validated shard");
        let bound = |i: usize| (i as u128 * iterations as u128 / self.count as u128) as usize;
        bound(self.index)..bound(self.index + 1)
    }
}

/// What makes two parts pieces of the same run: every part of a merge must carry the
/// same identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// Version of x0tta6bl4 that ran the shard.
    pub version: String,
    /// The topology as given (`--topology`).
    pub topology: String,
    /// SHA-256 of the topology built from it (nodes, links, link parameters): a file
    /// or live topology that changed between shards is caught here.
    pub topology_sha256: String,
    /// The scenario as given.
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// Iterations of the whole run.
    pub iterations: usize,
    /// Shards the run is split into.
    pub shards: usize,
    /// Every setting that decides results (engine, protocol, measurement, start), as
    /// this version prints them.
    pub settings: String,
}

impl RunIdentity {
    /// The identity of a run of `scenario_spec` on `topology`.
    pub fn new(
        topology: &Topology,
        topology_spec: &str,
        scenario_spec: &str,
        options: &RunOptions,
        shards: usize,
    ) -> RunIdentity {
        let topology_text = format!("{:?}\n{:?}", topology.names, topology.links);
        RunIdentity {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            topology: topology_spec.to_owned(),
            topology_sha256: hex(&Sha256::digest(topology_text.as_bytes())),
            scenario: scenario_spec.to_owned(),
            seed: options.sim.seed,
            iterations: options.iterations,
            shards,
            settings: format!(
                "{:?} {:?} converge_max={:?} start={:?} targets={:?}",
                options.sim,
                options.measurement,
                options.converge_max,
                options.start,
                options.targets
            ),
        }
    }

    /// The first field in which `self` and `other` differ, with both values.
    fn difference(&self, other: &RunIdentity) -> Option<(String, String, String)> {
        let (a, b) = (serde_json::json!(self), serde_json::json!(other));
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.iter().find_map(|(key, value)| {
            let theirs = b.get(key).cloned().unwrap_or_default();
            (*value != theirs).then(|| (key.clone(), value.to_string(), theirs.to_string()))
        })
    }
}

/// One iteration's results, as stored in a part (floats as IEEE-754 bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// The iteration's index in the whole run.
    pub k: usize,
    /// (source, destination, outage in ms as `f64::to_bits`).
    pub outages: Vec<(u32, u32, u64)>,
    /// Flows that never delivered again.
    pub unhealed_flows: usize,
    /// Time from the fault to the last route change, ms bits; `None`: no route changed.
    pub reconverged_ms_bits: Option<u64>,
    /// Flows that did not deliver before the fault.
    pub baseline_undelivered: usize,
    /// Largest bystander outage, ms bits.
    pub bystander_outage_max_ms_bits: u64,
    /// Bystander flows measured.
    pub bystander_flows: usize,
    /// Connected pairs without a working path at the end.
    pub unreachable_pairs_after_heal: usize,
    /// False neighbour-down events.
    pub false_down_events: usize,
    /// All neighbour-down events.
    pub down_events: usize,
    /// Simulated time of the iteration, ns.
    pub sim_time_ns: u64,
    /// Control frames sent.
    pub control_frames: u64,
    /// Control bytes sent.
    pub control_bytes: u64,
    /// Delivery, latency and reroute figures.
    #[serde(default)]
    pub routing: crate::scenario::RoutingStats,
}

impl IterationRecord {
    fn new(k: usize, r: &IterationResult) -> IterationRecord {
        IterationRecord {
            k,
            outages: r
                .outages
                .iter()
                .map(|&(s, d, ms)| (s, d, ms.to_bits()))
                .collect(),
            unhealed_flows: r.unhealed_flows,
            reconverged_ms_bits: r.reconverged_ms.map(f64::to_bits),
            baseline_undelivered: r.baseline_undelivered,
            bystander_outage_max_ms_bits: r.bystander_outage_max_ms.to_bits(),
            bystander_flows: r.bystander_flows,
            unreachable_pairs_after_heal: r.unreachable_pairs_after_heal,
            false_down_events: r.false_down_events,
            down_events: r.down_events,
            sim_time_ns: u64::try_from(r.sim_time.as_nanos()).unwrap_or(u64::MAX),
            control_frames: r.control_frames,
            control_bytes: r.control_bytes,
            routing: r.routing.clone(),
        }
    }

    fn result(&self) -> IterationResult {
        IterationResult {
            outages: self
                .outages
                .iter()
                .map(|&(s, d, bits)| (s, d, f64::from_bits(bits)))
                .collect(),
            unhealed_flows: self.unhealed_flows,
            reconverged_ms: self.reconverged_ms_bits.map(f64::from_bits),
            baseline_undelivered: self.baseline_undelivered,
            bystander_outage_max_ms: f64::from_bits(self.bystander_outage_max_ms_bits),
            bystander_flows: self.bystander_flows,
            unreachable_pairs_after_heal: self.unreachable_pairs_after_heal,
            false_down_events: self.false_down_events,
            down_events: self.down_events,
            sim_time: Duration::from_nanos(self.sim_time_ns),
            control_frames: self.control_frames,
            control_bytes: self.control_bytes,
            routing: self.routing.clone(),
        }
    }
}

/// What one shard produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The run this part belongs to.
    pub run: RunIdentity,
    /// Which shard, `0..run.shards`.
    pub shard: usize,
    /// Node names, index = node id (outage samples name nodes by index).
    pub names: Vec<String>,
    /// Links simulated.
    pub links: usize,
    /// Simulated time until the mesh first converged, ns (the same in every shard).
    pub converged_ns: u64,
    /// Simulated seconds on the converged mesh's clock, as `f64::to_bits`.
    pub base_seconds_bits: u64,
    /// Wall-clock seconds the shard took (convergence included).
    pub wall_seconds: f64,
    /// The shard's iterations, in order.
    pub iterations: Vec<IterationRecord>,
}

/// Why a part file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartError {
    /// Not a part file at all.
    #[error("not a twin part file: it does not start with {PART_MAGIC:?} ({0})")]
    NotAPart(String),
    /// A format this build does not read.
    #[error("part format {found}, this build reads format {PART_FORMAT}")]
    Format {
        /// The format in the file.
        found: String,
    },
    /// The body does not match its digest.
    #[error("the file is damaged (truncated or altered): its body's SHA-256 is {actual}, the header says {expected}")]
    Checksum {
        /// The digest in the header.
        expected: String,
        /// The digest of the body as read.
        actual: String,
    },
    /// The body is not a part.
    #[error("the body is not a valid part: {0}")]
    Body(String),
    /// The body contradicts itself.
    #[error("the part contradicts itself: {0}")]
    Inconsistent(String),
}

/// Why parts cannot be merged; file names are as the caller gave them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no parts given")]
    Empty,
    /// Parts of different runs.
    #[error("{file} is a part of another run than {first}: {field} is {theirs} there and {ours} in {first}")]
    DifferentRuns {
        /// The first part.
        first: String,
        /// The part that differs.
        file: String,
        /// The field that differs.
        field: String,
        /// Its value in the first part.
        ours: String,
        /// Its value in `file`.
        theirs: String,
    },
    /// A part written by another version than this build.
    #[error("{file} was written by x0tta6bl4 {found}, this is {ours}")]
    Version {
        /// The part.
        file: String,
        /// Its version.
        found: String,
        /// This build's.
        ours: String,
    },
    /// The same shard twice.
    #[error("shard {shard} is given twice: {first} and {second}")]
    Duplicate {
        /// The shard.
        shard: usize,
        /// One file.
        first: String,
        /// The other.
        second: String,
    },
    /// Shards missing.
    #[error("shards {missing:?} of {count} are missing")]
    Missing {
        /// The missing shard indices.
        missing: Vec<usize>,
        /// Shards of the run.
        count: usize,
    },
    /// A part that contradicts itself.
    #[error("{file}: the part contradicts itself: {reason}")]
    Corrupt {
        /// The part.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Parts with the same identity but a different converged mesh: nondeterminism.
    #[error("{file} and {first} have the same run parameters but a different converged mesh ({what}): the twin was not deterministic, which is a bug; report it with both files")]
    Diverged {
        /// The first part.
        first: String,
        /// The part that differs.
        file: String,
        /// What differs.
        what: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Part {
    /// The file's bytes: the header line with the body's digest, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a part serialises");
        let mut out = format!(
            "{PART_MAGIC} {PART_FORMAT} sha256:{}\n",
            hex(&Sha256::digest(&body))
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out.push(b'\n');
        out
    }

    /// Read a part file's bytes, checking its digest and its consistency.
    pub fn decode(bytes: &[u8]) -> Result<Part, PartError> {
        let newline = bytes.iter().position(|&b| b == b'\n');
        let (header, body) = match newline {
            Some(at) => (&bytes[..at], &bytes[at + 1..]),
            None => (bytes, &[][..]),
        };
        let header = String::from_utf8_lossy(header);
        let mut words = header.split(' ');
        if words.next() != Some(PART_MAGIC) {
            let start: String = header.chars().take(40).collect();
            return Err(PartError::NotAPart(format!("it starts with {start:?}")));
        }
        let format = words.next().unwrap_or_default();
        if format != PART_FORMAT.to_string() {
            return Err(PartError::Format {
                found: format.to_owned(),
            });
        }
        let expected = words
            .next()
            .and_then(|w| w.strip_prefix("sha256:"))
            .unwrap_or_default()
            .to_owned();
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        let actual = hex(&Sha256::digest(body));
        if expected != actual {
            return Err(PartError::Checksum { expected, actual });
        }
        let part: Part =
            serde_json::from_slice(body).map_err(|e| PartError::Body(e.to_string()))?;
        part.check().map_err(PartError::Inconsistent)?;
        Ok(part)
    }

    /// The part agrees with itself: its shard exists, it holds exactly its shard's
    /// iterations in order, and its samples name nodes that exist.
    fn check(&self) -> Result<(), String> {
        let run = &self.run;
        if run.shards == 0 || self.shard >= run.shards || run.shards > run.iterations {
            return Err(format!(
                "shard {} of {} in a run of {} iterations",
                self.shard, run.shards, run.iterations
            ));
        }
        let shard = Shard {
            index: self.shard,
            count: run.shards,
        };
        let range = shard.range(run.iterations);
        let ks: Vec<usize> = self.iterations.iter().map(|r| r.k).collect();
        if !ks.iter().copied().eq(range.clone()) {
            return Err(format!(
                "shard {shard} must hold iterations {range:?}, it holds {} iterations",
                ks.len()
            ));
        }
        let nodes = self.names.len() as u32;
        let outside = self
            .iterations
            .iter()
            .flat_map(|r| &r.outages)
            .find(|&&(s, d, _)| s >= nodes || d >= nodes);
        if let Some((s, d, _)) = outside {
            return Err(format!("a sample names node {s} or {d} of {nodes}"));
        }
        Ok(())
    }
}

/// Run shard `shard` of a run: converge as the run does, run the shard's iterations,
/// and return them as a part. `progress` counts the shard's iterations.
pub fn run_shard(
    topology: &Topology,
    topology_spec: &str,
    scenario: &Scenario,
    scenario_spec: &str,
    options: &RunOptions,
    shard: Shard,
    progress: &mut dyn FnMut(usize),
) -> Result<Part, RunError> {
    if shard.count > options.iterations {
        return Err(RunError::Config(format!(
            "{} shards for {} iterations: use at most as many shards as iterations",
            shard.count, options.iterations
        )));
    }
    let range = shard.range(options.iterations);
    let executed = runner::execute(topology, scenario, options, range.clone(), progress)?;
    Ok(Part {
        run: RunIdentity::new(topology, topology_spec, scenario_spec, options, shard.count),
        shard: shard.index,
        names: topology.names.iter().map(|n| n.to_string()).collect(),
        links: topology.links.len(),
        converged_ns: u64::try_from(executed.converged.as_nanos()).unwrap_or(u64::MAX),
        base_seconds_bits: executed.base_seconds.to_bits(),
        wall_seconds: executed.wall_seconds,
        iterations: range
            .zip(&executed.results)
            .map(|(k, r)| IterationRecord::new(k, r))
            .collect(),
    })
}

/// Merge the parts of one run (`(file name, part)`, any order) into the report the
/// unsharded run prints. `wall_seconds` is the sum of the shards' wall-clock seconds
/// (the compute the study took), and the speed is computed from it.
pub fn merge(parts: &[(String, Part)]) -> Result<Report, MergeError> {
    let (first_file, first) = parts.first().ok_or(MergeError::Empty)?;
    for (file, part) in parts {
        compatible(first_file, first, file, part)?;
    }
    let by_shard = shard_order(parts)?;
    let results: Vec<IterationResult> = by_shard
        .iter()
        .flat_map(|&i| parts[i].1.iterations.iter().map(IterationRecord::result))
        .collect();
    assert_eq!(
        results.len(),
        first.run.iterations,
        "checked parts cover the run"
    );
    let header = ReportHeader {
        names: first.names.clone(),
        links: first.links,
        topology_spec: first.run.topology.clone(),
        scenario_spec: first.run.scenario.clone(),
        seed: first.run.seed,
    };
    let mut report = runner::summarise(&header, &results);
    report.converged_ms = Duration::from_nanos(first.converged_ns).as_secs_f64() * 1e3;
    report.sim_seconds = runner::sim_seconds(f64::from_bits(first.base_seconds_bits), &results);
    report.wall_seconds = parts.iter().map(|(_, p)| p.wall_seconds).sum();
    report.sim_seconds_per_wall_second = report.sim_seconds / report.wall_seconds.max(1e-9);
    Ok(report)
}

/// `part` (from `file`) agrees with itself and is a part of the same run as `first`.
fn compatible(first_file: &str, first: &Part, file: &str, part: &Part) -> Result<(), MergeError> {
    part.check().map_err(|reason| MergeError::Corrupt {
        file: file.to_owned(),
        reason,
    })?;
    let ours = env!("CARGO_PKG_VERSION");
    if part.run.version != ours {
        return Err(MergeError::Version {
            file: file.to_owned(),
            found: part.run.version.clone(),
            ours: ours.to_owned(),
        });
    }
    if let Some((field, ours, theirs)) = first.run.difference(&part.run) {
        return Err(MergeError::DifferentRuns {
            first: first_file.to_owned(),
            file: file.to_owned(),
            field,
            ours,
            theirs,
        });
    }
    let diverged = |what: &str| MergeError::Diverged {
        first: first_file.to_owned(),
        file: file.to_owned(),
        what: what.to_owned(),
    };
    if part.names != first.names || part.links != first.links {
        return Err(diverged("node names or link count"));
    }
    if (part.converged_ns, part.base_seconds_bits) != (first.converged_ns, first.base_seconds_bits)
    {
        return Err(diverged("convergence time"));
    }
    Ok(())
}

/// The index in `parts` of shard 0, 1, ...: each shard exactly once.
fn shard_order(parts: &[(String, Part)]) -> Result<Vec<usize>, MergeError> {
    let count = parts.first().map_or(0, |(_, p)| p.run.shards);
    let mut by_shard: Vec<Option<usize>> = vec![None; count];
    for (i, (file, part)) in parts.iter().enumerate() {
        assert!(part.shard < count, "checked by compatible()");
        if let Some(seen) = by_shard[part.shard].replace(i) {
            return Err(MergeError::Duplicate {
                shard: part.shard,
                first: parts[seen].0.clone(),
                second: file.clone(),
            });
        }
    }
    let missing: Vec<usize> = (0..count).filter(|&s| by_shard[s].is_none()).collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { missing, count });
    }
    Ok(by_shard.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::LinkParams;

    #[test]
    fn shards_cover_every_iteration_once_in_order() {
        for iterations in [1, 2, 7, 8, 20, 100_000] {
            for count in [1, 2, 3, 4, 7, 8, 1000]
                .into_iter()
                .filter(|&c| c <= iterations)
            {
                let mut next = 0;
                for index in 0..count {
                    let range = Shard { index, count }.range(iterations);
                    assert_eq!(range.start, next, "{index}/{count} of {iterations}");
                    assert!(!range.is_empty(), "{index}/{count} of {iterations}");
                    next = range.end;
                }
                assert_eq!(next, iterations);
            }
        }
        assert_eq!("2/8".parse::<Shard>(), Ok(Shard { index: 2, count: 8 }));
        for bad in ["8/8", "0/0", "1", "/", "x/2", "1/2/3", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?} accepted");
        }
    }

    fn study() -> (Topology, Scenario, RunOptions) {
        let topology = Topology::ring(12, &LinkParams::default()).unwrap();
        let mut options = RunOptions::new(21);
        options.iterations = 5;
        options.threads = 2;
        (topology, "node-failure".parse().unwrap(), options)
    }

    fn part(shard: Shard) -> Part {
        let (topology, scenario, options) = study();
        run_shard(
            &topology,
            "ring",
            &scenario,
            "nf",
            &options,
            shard,
            &mut |_| {},
        )
        .unwrap()
    }

    /// The report without its wall-clock figures, as JSON.
    fn figures(report: &Report) -> String {
        let mut value = serde_json::to_value(report).unwrap();
        let map = value.as_object_mut().unwrap();
        map.remove("wall_seconds");
        map.remove("sim_seconds_per_wall_second");
        let samples: Vec<String> = report.samples.iter().map(|s| format!("{s:?}")).collect();
        format!("{value} {samples:?}")
    }

    #[test]
    fn merged_parts_give_the_whole_runs_report_and_survive_their_file_format() {
        let (topology, scenario, options) = study();
        let whole = runner::run(&topology, "ring", &scenario, "nf", &options, &mut |_| {}).unwrap();
        assert!(whole.mttr_ms.samples > 0);
        let parts: Vec<(String, Part)> = (0..3)
            .rev()
            .map(|index| {
                let bytes = part(Shard { index, count: 3 }).encode();
                (format!("p{index}"), Part::decode(&bytes).unwrap())
            })
            .collect();
        let merged = merge(&parts).unwrap();
        assert_eq!(figures(&merged), figures(&whole));
        let wall: f64 = parts.iter().map(|(_, p)| p.wall_seconds).sum();
        assert_eq!(merged.wall_seconds, wall);
    }

    #[test]
    fn damaged_and_foreign_files_are_named_for_what_they_are() {
        let bytes = part(Shard { index: 0, count: 1 }).encode();
        let cut = Part::decode(&bytes[..bytes.len() - 30]).unwrap_err();
        assert!(matches!(cut, PartError::Checksum { .. }), "{cut}");
        assert!(matches!(Part::decode(b"{}"), Err(PartError::NotAPart(_))));
        let newer = String::from_utf8_lossy(&bytes).replacen(" 1 sha256:", " 2 sha256:", 1);
        let err = Part::decode(newer.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "part format 2, this build reads format 1");
        // A body that hashes right but lies about its shard.
        let mut liar = part(Shard { index: 0, count: 1 });
        liar.iterations.pop();
        let err = Part::decode(&liar.encode()).unwrap_err();
        assert!(matches!(err, PartError::Inconsistent(_)), "{err}");
    }

    #[test]
    fn merge_refuses_what_is_not_one_whole_run() {
        let a = part(Shard { index: 0, count: 2 });
        let b = part(Shard { index: 1, count: 2 });
        let named = |parts: &[(&str, &Part)]| -> Vec<(String, Part)> {
            parts
                .iter()
                .map(|(n, p)| (n.to_string(), (*p).clone()))
                .collect()
        };
        assert_eq!(merge(&[]).unwrap_err(), MergeError::Empty);
        let missing = merge(&named(&[("a", &a)])).unwrap_err();
        assert_eq!(
            missing,
            MergeError::Missing {
                missing: vec![1],
                count: 2
            }
        );
        let twice = merge(&named(&[("a", &a), ("a2", &a), ("b", &b)])).unwrap_err();
        assert!(
            matches!(twice, MergeError::Duplicate { shard: 0, .. }),
            "{twice}"
        );
        let mut other = b.clone();
        other.run.topology_sha256 = "0".repeat(64);
        let err = merge(&named(&[("a", &a), ("b", &other)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("b is a part of another run than a: topology_sha256"),
            "{err}"
        );
        let mut old = b.clone();
        old.run.version = "0.0.1".to_owned();
        let err = merge(&named(&[("a", &a), ("b", &old)])).unwrap_err();
        assert!(matches!(err, MergeError::Version { .. }), "{err}");
        let mut diverged = b.clone();
        diverged.converged_ns += 1;
        let err = merge(&named(&[("a", &a), ("b", &diverged)])).unwrap_err();
        assert!(matches!(err, MergeError::Diverged { .. }), "{err}");
    }
}
