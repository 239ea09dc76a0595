//! The embedded store: what most users start with and many keep.
//!
//! - [`writer`]: telemetry buffered as Arrow and written as Parquet files per hour
//!   (the [`Store`], a `Sink`);
//! - [`query`]: DataFusion over those files plus the unflushed buffer;
//! - [`activity`]: the receiver's events (top queries, query samples) as tables of
//!   their own;
//! - [`state`]: SQLite for anomalies, insights, analysis failures, API tokens and
//!   operator checkpoints ([`StateStore`], the pipeline's `Ledger`;
//!   [`SqliteCheckpoints`]);
//! - [`reader`]: the `Reader` the API and the analytics stage use ([`EmbeddedReader`]);
//! - [`config`]: `store:` ([`StoreConfig`]).
//!
//! Depends on: `sqlvigil-core`, `sqlvigil-model`, DataFusion/Parquet, rusqlite.
//! Must not touch the bus, the operators or the API: the store keeps what the workers
//! hand it and answers readers.

pub mod activity;
pub mod checkpoints;
pub mod config;
pub mod error;
pub mod query;
pub mod reader;
pub mod state;
pub mod writer;

pub use checkpoints::SqliteCheckpoints;
pub use config::{Backend, StoreConfig};
pub use error::StoreError;
pub use reader::EmbeddedReader;
pub use state::{Role, StateStore};
pub use writer::Store;

#[cfg(test)]
mod tests;
