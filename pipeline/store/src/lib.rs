//! The embedded store: what most users start with and many keep.
//!
//! - [`writer`]: telemetry buffered as Arrow and written as Parquet files per hour
//!   (the [`Store`], a `Sink`);
//! - [`catalog`]: SQLite catalogue of the files (time span, rows, bytes) and of the
//!   metric series (first/last seen), so queries list only the files they need and the
//!   series list reads no data;
//! - [`compact`]: an hour's small files merged into one sorted, deduplicated file,
//!   and its [`rollup`]s (per minute and per hour) written with it;
//! - [`retention`]: raw points and rollups past their age deleted;
//! - [`query`]: DataFusion over those files plus the unflushed buffer;
//! - [`activity`]: the receiver's events (top queries, query samples) as tables of
//!   their own;
//! - [`state`]: SQLite for anomalies, insights, analysis failures, API tokens
//!   ([`tokens`]: salted, with expiry and revocation) and
//!   operator checkpoints ([`StateStore`], the pipeline's `Ledger`;
//!   [`SqliteCheckpoints`]);
//! - [`reader`]: the `Reader` the API and the analytics stage use ([`EmbeddedReader`]);
//! - [`config`]: `store:` ([`StoreConfig`]).
//!
//! Depends on: `sqlvigil-core`, `sqlvigil-model`, DataFusion/Parquet, rusqlite.
//! Must not touch the bus, the operators or the API: the store keeps what the workers
//! hand it and answers readers.

pub mod activity;
pub mod catalog;
pub mod checkpoints;
pub mod compact;
pub mod config;
pub mod error;
pub mod feed;
pub mod handling;
pub mod query;
pub mod reader;
pub mod retention;
pub mod rollup;
mod scope;
pub mod state;
pub mod tokens;
pub mod writer;

pub use checkpoints::SqliteCheckpoints;
pub use compact::Compacted;
pub use config::{Backend, CompactionConfig, RetentionConfig, StoreConfig};
pub use error::StoreError;
pub use reader::EmbeddedReader;
pub use retention::Retired;
pub use state::{Expired, Role, StateStore};
pub use tokens::{NewToken, TokenInfo, TokenSpec, Verdict};
pub use writer::Store;

#[cfg(test)]
mod tests;
