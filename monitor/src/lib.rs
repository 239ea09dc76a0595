//! The live monitor: where a direct connection to SQL Server is allowed, read its DMVs
//! for what the OTLP stream cannot show (who blocks whom right now, what each session
//! runs, waits and file latency over the last interval, tempdb, log space, memory grants),
//! the way sp_WhoIsActive and sp_BlitzFirst do.
//!
//! ```text
//! monitor.instances ──> pool (tiberius, TLS, read-only intent) ──> collectors/*.sql
//!        │                                                        │ rows → live::* models
//!        └── schedule / ad hoc (API) / anomaly ──> LiveSnapshot ──┼──> Ledger (rows, audit)
//!                                                                 └──> metrics topic (sqlvigil.live.*)
//! ```
//!
//! - [`config`]: `monitor:` ([`MonitorConfig`]), credentials as `env:`/`file:` references;
//! - `pool`: deadpool of tiberius clients per instance, connect timeout, login;
//! - `collectors`: one module and one `.sql` file per DMV query, deltas of cumulative
//!   counters with reset detection;
//! - `instance`: one instance's snapshots, one at a time, status per collector;
//! - [`Monitor`]: the schedule per instance and [`sqlvigil_core::Live`] for the API and
//!   analytics; [`telemetry`]: a snapshot's figures as OTLP gauges.
//!
//! Depends on: `sqlvigil-model` (the rows), `sqlvigil-core` (`Live`, `Bus`, `Ledger`),
//! tiberius, deadpool, opentelemetry-proto. Must not touch the API, analytics, a store or
//! a bus implementation: the topology hands it its outputs.

mod cells;
mod collectors;
pub mod config;
pub mod error;
mod instance;
mod monitor;
mod pool;
pub mod telemetry;

pub use config::MonitorConfig;
pub use error::MonitorError;
pub use monitor::{Monitor, Outputs};
