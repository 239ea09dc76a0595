//! sqlvigil's contracts: the verbs every stage of the pipeline speaks, without any I/O.
//!
//! ```text
//! receiver ──publish──> Bus ──Subscription──> workers: Operator chain ──> Sink
//!                                                  │                       │
//!                                  CheckpointStore (operator state)   Reader (API, analytics)
//! ```
//!
//! - [`bus`]: [`Bus`], [`Subscription`], [`Record`], [`Delivery`], [`Topics`];
//! - [`operator`]: [`Operator`], [`MicroBatch`];
//! - [`sink`]: [`Sink`] and the [`Backend`] pair of sink and [`Reader`] ([`reader`]);
//! - [`checkpoint`]: [`CheckpointStore`], [`Snapshot`]; [`ledger`]: [`Ledger`];
//! - [`live`]: [`Live`], the live monitor's DMV snapshots as the API and analytics see
//!   them;
//! - [`build`]: [`Build`] and [`BuildContext`], the component pattern;
//! - [`stats`]: the self metrics every component bumps; [`health`]: what each part is
//!   doing (live, ready, stalled, backlog); [`error`]: the error kinds.
//!
//! Depends on: `sqlvigil-model` (the nouns), serde, async-trait, tokio's timer.
//! Must not touch: sockets, files, Kafka, Elasticsearch, DataFusion or any other sqlvigil
//! crate — every component crate depends on this one, so it stays small and quick to
//! build.

pub mod build;
pub mod bus;
pub mod checkpoint;
pub mod error;
pub mod health;
pub mod ledger;
pub mod live;
pub mod operator;
pub mod reader;
pub mod sink;
pub mod stats;

pub use async_trait::async_trait;
pub use build::{Build, BuildContext};
pub use bus::{publish_retrying, Bus, Delivery, Record, Subscription, Topics};
pub use checkpoint::{CheckpointStore, Snapshot};
pub use error::{BoxError, Error, Result};
pub use health::{Component, Health};
pub use ledger::Ledger;
pub use live::Live;
pub use operator::{run_chain, Chain, MicroBatch, Operator};
pub use reader::Reader;
pub use sink::{Backend, Sink};
pub use stats::Stats;
