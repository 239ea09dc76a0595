//! `bus:` — which bus, its topics, and each kind's settings.

use crate::kafka::KafkaConfig;
use crate::memory::MemoryConfig;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Result, Topics};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process bus (the embedded default).
    Memory,
    /// Kafka (`bus.kafka`).
    Kafka,
}

/// The bus between the receiver and the operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Records a topic may hold before publishers are told to retry (back-pressure;
    /// in-process bus).
    pub capacity: usize,
    /// Partitions per topic; records with the same key (instance) share one
    /// (in-process bus; Kafka topics sqlvigil creates use `bus.kafka.partitions`).
    pub partitions: u32,
    pub topics: Topics,
    /// Brokers and client settings when `kind` is `kafka`.
    pub kafka: KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            capacity: 20_000,
            partitions: 4,
            topics: Topics::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl BusConfig {
    /// The in-process bus's settings.
    pub fn memory(&self) -> MemoryConfig {
        MemoryConfig {
            capacity: self.capacity,
            partitions: self.partitions,
        }
    }

    /// The section of the configured kind must be valid; the others are ignored.
    pub fn validate(&self) -> Result<()> {
        use sqlvigil_core::Build;
        for (field, value) in [
            ("bus.capacity", self.capacity),
            ("bus.partitions", self.partitions as usize),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{field} must be greater than 0")));
            }
        }
        match self.kind {
            BusKind::Memory => self.memory().validate(),
            BusKind::Kafka => self.kafka.validate(),
        }
    }
}
