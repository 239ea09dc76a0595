//! The OTLP wire format as sqlvigil reads it: validation with partial success
//! ([`validate`]), where a resource comes from and the split of a request by SQL Server
//! instance ([`resource`]), and decoding into typed samples and log records ([`decode`]).
//!
//! Bus records carry OTLP protobuf exactly as the Collector's kafka exporter writes it,
//! one instance per record, so the receiver validates and splits, and the consumer
//! decodes.
//!
//! ```
//! use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
//! let req = ExportMetricsServiceRequest::default();
//! assert_eq!(sqlvigil_otlp::request_points(&req), 0);
//! assert!(sqlvigil_otlp::split_metrics(req).is_empty());
//! ```
//!
//! Depends on: `sqlvigil-model`, opentelemetry-proto. Must not touch the bus, sockets or
//! any component: this is data in, data out.

pub mod decode;
pub mod resource;
pub mod validate;

pub use decode::{logs_to_records, metrics_to_samples};
pub use resource::{instance_key, origin, split_logs, split_metrics, Origin};
pub use validate::{point_count, request_log_records, request_points, validate_metrics, Rejected};

#[cfg(test)]
mod tests;
