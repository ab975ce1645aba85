//! The digital twin of an x0tta6bl4 mesh.
//!
//! Key design decision: the twin does not model the protocol, it *runs* it. Every
//! simulated node is an `x0tta6bl4_proto::Node`, the same state machine the daemon
//! drives, stepped by a discrete-event engine with a simulated clock and link models
//! (latency, jitter, loss, bandwidth, up/down, one-way blocks). MTTR is measured on the
//! simulated data plane with probe flows, exactly as the demo and the chaos lab measure
//! it on real processes, and computed by the same `x0tta6bl4_proto::measure` code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod topology;

pub use engine::{Sim, SimConfig, Status};
pub use topology::{LinkParams, TopoLink, Topology, TopologyError};
pub mod check;
pub mod runner;
pub mod scenario;

pub use runner::{run, Report, RunError, RunOptions};
pub use scenario::{Measurement, Scenario, SCENARIO_HELP};
pub mod fuzz;
pub mod plot;
pub mod prometheus;
pub mod spec;
pub mod tune;

pub use spec::{TopologySpec, TOPOLOGY_HELP};
