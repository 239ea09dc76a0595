//! The OTLP receiver: gRPC ([`grpc`], :4317) and HTTP ([`http`], :4318; protobuf or JSON
//! ([`json`]), gzip) front ends over one [`Ingest`] core ([`ingest`]) that validates a
//! request, splits it by SQL Server instance and publishes it on the bus. A client is
//! answered only after the bus accepted its data; a full or unreachable bus is gRPC
//! UNAVAILABLE / HTTP 503 with Retry-After, so the client retries and nothing is lost.
//!
//! [`ReceiverConfig`] (`receiver:`) binds the listeners; [`Receiver::start`] serves them.
//!
//! Depends on: `sqlvigil-core` (the `Bus` it publishes to, `Stats`), `sqlvigil-otlp`
//! (validation, split), tonic/axum. Must not touch the operators, the stores or the API:
//! the receiver's only output is the bus.

pub mod config;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod json;

pub use config::{bind, parse_addr, stopped, Receiver, ReceiverConfig};
pub use ingest::{Ingest, IngestError};
