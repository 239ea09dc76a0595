//! The read side ("Collector Bridge Service" of seed 002): [`query`] searches and
//! aggregates the telemetry indices and normalizes what it finds into the typed models,
//! whatever layout wrote the documents; [`reader`] serves it as `sqlvigil-core`'s
//! `Reader`, counting and logging malformed documents.

pub mod query;
pub mod reader;

pub use query::ReadOptions;
pub use reader::ElasticReader;
