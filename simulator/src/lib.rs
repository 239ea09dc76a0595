//! A deterministic simulator of a small SQL Server fleet that emits OTLP exactly like
//! the OpenTelemetry Collector's `sqlserver` receiver, in either of its modes
//! ([`ReceiverModes`]): over a direct connection (the `…/sec` performance counters as
//! running totals, the DMV metrics, the `db.server.top_query` / `db.server.query_sample`
//! events) or with Windows perf counters (true per-second rates, the Windows-only
//! metrics), each metric only in the mode the receiver's `metadata.yaml` says emits it:
//! the
//! same resource attributes (`host.name`, `server.address`, `server.port`,
//! `service.instance.id`, `service.name`, `sqlserver.instance.name`, plus
//! `sqlserver.database.name` on per-database resources), scope, metric names, units,
//! kinds and point attributes (from `sqlvigil_model::catalogue`). Values follow a daily and a weekly
//! pattern (weekends at ~60 % of weekday load) with smoothed noise, all derived from a
//! seed (per instance, so adding instances changes no other instance), and stay clear
//! of alerting thresholds unless one of the named incidents ([`Scenario::ALL`]: CPU
//! storm, blocking chain, deadlock burst, PLE collapse, full log, tempdb pressure, I/O
//! stall, batch drop, wait-time spike) is injected at an event-time offset, with
//! [`IncidentLabel`]s as ground truth and [`scenario_metric`] naming the metric each
//! one moves. It also emits a few SQL Server error-log lines
//! as OTLP logs, and [`run`] sends everything to an OTLP endpoint over gRPC (tonic) or
//! HTTP/protobuf (reqwest), paced in event time. It is the demo and bench load source.
//!
//! Depends on: `sqlvigil-model` (metric catalogue), `opentelemetry-proto`, `prost`,
//! `tonic`, `reqwest`, `rand`, `tokio`. Must not touch the pipeline or any other
//! sqlvigil crate besides the model: it only speaks OTLP over the wire, like a real
//! Collector, so whatever it exercises is exercised from the outside.
//!
//! ```
//! use sqlvigil_simulator::{Fleet, FleetConfig, Incident};
//! let mut fleet = Fleet::new(FleetConfig {
//!     incidents: vec![Incident::parse("cpu_storm@3m+10m").unwrap()],
//!     ..FleetConfig::default()
//! });
//! let requests = fleet.metrics(0);
//! assert_eq!(requests.len(), 3);
//! assert_eq!(fleet.labels()[0].name, "cpu_storm");
//! ```

mod events;
mod fleet;
mod instance;
mod otlp;
mod scenario;
mod send;

pub use fleet::{Fleet, FleetConfig, ReceiverModes, DEFAULT_START_TIME_NS, LOG_SCOPE_NAME};
pub use instance::WAITS;
pub use otlp::{count_points, SCOPE_NAME, SCOPE_VERSION, SERVER_PORT, SERVICE_NAME};
pub use scenario::{scenario_metric, Incident, IncidentLabel, Scenario};
pub use send::{run, Protocol, RunConfig, RunStats};

/// Everything that can go wrong in the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown scenario `{name}` (valid: {valid})")]
    UnknownScenario { name: String, valid: String },
    #[error("bad incident `{spec}`: {reason}")]
    IncidentSpec { spec: String, reason: String },
    #[error("unknown protocol `{0}` (valid: grpc, http)")]
    UnknownProtocol(String),
    #[error("bad endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests;
