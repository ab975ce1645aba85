//! The digital twin of an x0tta6bl4 mesh.
//!
//! Key design decision: the twin does not model the protocol, it *runs* it. Every
//! simulated node is an `x0tta6bl4_proto::Node`, the same state machine the daemon
//! drives, stepped by a discrete-event engine with a simulated clock and link models
//! (latency, jitter, loss, bandwidth, up/down, one-way blocks). MTTR is measured on the
//! simulated data plane with probe flows, exactly as the demo and the chaos lab measure
//! it on real processes, and computed by the same `x0tta6bl4_proto::measure` code.
//!
//! Scale: every simulated node holds a full link-state database and routing table, so
//! the state of an n-node mesh grows with n². What is identical across nodes is shared
//! rather than copied: advertisements travel and are stored as `Arc`s (one copy per
//! advertisement, however many databases hold it); databases that start from one
//! [`Start::Snapshot`] share one slot table (names ↔ small integers) and one copy of
//! every advertisement's links resolved to slots, so each node keeps 32 bytes per
//! database entry and 16 bytes per route of its own; a run of one iteration works on
//! the converged mesh itself instead of a copy. The event queue is a radix heap over
//! simulated time, and route computation a Dijkstra over slots with a radix heap and no
//! name comparisons. A cold start floods every advertisement over every link (hundreds
//! of millions of duplicate deliveries at 10,000 nodes); [`Start::Snapshot`] skips that
//! flood, not the protocol's checks (see its documentation).
//!
//! Applications run over the simulated mesh too: [`fl`] runs federated learning, one
//! `x0tta6bl4_fl::mesh::MeshRole` per simulated node, its frames carried as mesh
//! application messages by the simulated protocol nodes ([`Sim::collect_channel`]).
//!
//! Link-failure prediction runs in the twin too ([`predict`]): the `degrade-then-fail`
//! scenario ramps loss and jitter before a cut, a predictor trained federatedly on its
//! iterations raises a link's cost through the protocol's own hook
//! (`x0tta6bl4_proto::Node::set_link_risk`), and `--routing cost|etx|predict` runs
//! compare delivery, latency, MTTR and unneeded reroutes (docs/prediction.md).
//!
//! Long studies shard: iteration `k` depends only on (seed, k), so [`run_shard`] runs a
//! range of a run's iterations on any machine and [`merge`] turns the parts (raw
//! per-iteration results, not statistics) into exactly the report [`run`] gives; see
//! [`parts`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod topology;

pub use engine::{Sim, SimConfig, Status};
pub use topology::{LinkParams, TopoLink, Topology, TopologyError};
pub mod check;
pub mod runner;
pub mod scenario;

pub use runner::{run, Report, RoutingSummary, RunError, RunOptions, Start};
pub use scenario::{Measurement, Scenario, Targets, SCENARIO_HELP};
pub mod fl;
pub mod fuzz;
pub mod parts;
pub mod plot;
pub mod ppo;
pub mod predict;
pub mod prometheus;
pub mod spec;
pub mod tune;

pub use parts::{merge, run_shard, Part, Shard};
pub use spec::{TopologySpec, TOPOLOGY_HELP};
