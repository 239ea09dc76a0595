//! The sqlvigil pipeline: OTLP in, through a bus, into operators and sinks.
//!
//! ```text
//! receiver (gRPC 4317, HTTP 4318) ─publish─> bus (otlp_metrics, otlp_logs)
//!     ─> consumer, one operator chain per partition (in parallel):
//!        decode → rates → windows → rules → sink (Parquet or Elasticsearch)
//!     ─> anomalies topic ─> analyzer ─> insights
//! ```
//!
//! Operator state is snapshotted per partition ([`checkpoint`]) so it follows the
//! partition to whichever process of the consumer group owns it.
//!
//! Components follow one pattern: a serde config struct (validated at load, errors name
//! the field) builds the running piece behind a small trait — [`bus::Bus`],
//! [`operators::Operator`], [`sinks::Sink`]. [`runtime`] wires them from [`config::Config`].
//! The receiver answers an OTLP client only after the bus has accepted the data, and the
//! consumer acknowledges bus records only after the store has made them durable, so
//! nothing accepted is lost on a clean shutdown.
//!
//! Depends on: model (typed samples), analytics (the rules analyzer), tonic/axum (OTLP
//! transports), DataFusion/Parquet (operators and store), rusqlite (state). Must not
//! touch the API layer or the simulator: those sit on top of this crate.

pub mod analytics;
pub mod bus;
pub mod checkpoint;
pub mod config;
pub mod error;
mod flusher;
pub mod operators;
pub mod receiver;
pub mod runtime;
pub mod sinks;
pub mod stats;

pub use config::Config;
pub use error::PipelineError;
pub use runtime::Pipeline;
