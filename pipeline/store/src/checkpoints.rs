//! Operator snapshots in the local SQLite state: the in-process bus, where one process
//! owns every partition.

use crate::state::StateStore;
use sqlvigil_core::{async_trait, CheckpointStore, Result, Snapshot};
use std::sync::Arc;

pub struct SqliteCheckpoints(pub Arc<StateStore>);

fn name(topic: &str, partition: u32) -> String {
    format!("operators/{topic}/{partition}")
}

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn save(&self, snapshots: &[Snapshot]) -> Result<()> {
        for s in snapshots {
            self.0
                .save_checkpoint(&name(&s.topic, s.partition), &serde_json::to_value(s)?)?;
        }
        Ok(())
    }

    async fn load(&self, topic: &str, partition: u32) -> Result<Option<Snapshot>> {
        let Some(v) = self.0.load_checkpoint(&name(topic, partition))? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_value(v)?))
    }
}
