//! The buses between the receiver and everything downstream: the in-process
//! [`memory::MemoryBus`] (the embedded default) and [`kafka::KafkaBus`] (rdkafka), both
//! behind `sqlvigil-core`'s `Bus` trait with the same acknowledgement semantics, plus the
//! Kafka checkpoint store ([`kafka::KafkaCheckpoints`]) that lets operator state follow
//! a partition to its next owner.
//!
//! [`BusConfig`] (`bus:`) selects the kind; each kind's config builds its bus. The
//! in-process bus writes ahead to disk ([`wal`]) so what the receiver acknowledged
//! survives a crash.
//!
//! Depends on: `sqlvigil-core`, rdkafka. Must not touch OTLP, the operators, the stores
//! or the API: a bus moves opaque records.

pub mod config;
pub mod kafka;
pub mod memory;
pub mod wal;

pub use config::{BusConfig, BusKind};
pub use wal::Durability;
