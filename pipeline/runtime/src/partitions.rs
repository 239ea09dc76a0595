//! Operator state per bus partition, so it moves with the partition.
//!
//! Records are keyed by instance, so each partition carries a disjoint set of series.
//! The metrics worker therefore runs one operator chain per partition it owns
//! ([`PartitionChains`]) and checkpoints each chain on its own, as a [`Snapshot`] that
//! names the bus offset it covers. When a partition moves to another process (a
//! consumer joins or leaves the group), the new owner loads that partition's latest
//! snapshot before judging its first record, so baselines, threshold-for-duration
//! clocks and open anomalies carry on there instead of starting cold.
//!
//! Where snapshots live depends on the bus (the topology picks the `CheckpointStore`):
//! a compacted Kafka topic, reachable from every process of the group, or the local
//! SQLite state for the in-process bus. Every chain comes from the one
//! [`ChainBuilder`], so a restored chain judges like a fresh one.
//!
//! Must not touch the sinks: the worker orders flush → snapshot → offset commit.

use sqlvigil_core::{
    run_chain, Chain, CheckpointStore, Error, MicroBatch, Result, Snapshot, Stats,
};
use sqlvigil_model::Sample;
use sqlvigil_operators::chain::ChainBuilder;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One partition's operators and how far they have read. Taken out of
/// [`PartitionChains`] to run on its own thread, then put back.
pub struct PartitionChain {
    ops: Chain,
    /// Records before this offset are already in the restored state: they are stored
    /// again (harmlessly) but not judged twice.
    judged_below: u64,
    /// Offset after the last record processed, once any was.
    next_offset: Option<u64>,
    /// Processed something since the last snapshot.
    dirty: bool,
    /// Newest event time this chain has been told about (its own points or a tick).
    seen_until: i64,
    /// The last batch's sample vector, emptied, for the next batch: growing a fresh one
    /// per batch (tens of MB) cost page faults and copies on every batch.
    spare: Vec<Sample>,
}

/// The operator chains of the partitions this process owns.
pub struct PartitionChains {
    topic: String,
    build: ChainBuilder,
    store: Arc<dyn CheckpointStore>,
    /// Whether bus offsets survive a restart (Kafka); else snapshots carry state only.
    durable_offsets: bool,
    chains: HashMap<u32, PartitionChain>,
    stats: Arc<Stats>,
}

impl PartitionChains {
    pub fn new(
        topic: &str,
        build: ChainBuilder,
        store: Arc<dyn CheckpointStore>,
        durable_offsets: bool,
        stats: Arc<Stats>,
    ) -> Self {
        PartitionChains {
            topic: topic.to_string(),
            build,
            store,
            durable_offsets,
            chains: HashMap::new(),
            stats,
        }
    }

    /// The chain of `partition`, restored from its latest snapshot the first time.
    async fn chain(&mut self, partition: u32) -> Result<&mut PartitionChain> {
        if !self.chains.contains_key(&partition) {
            // Owned handles: `self` holds non-`Sync` operators and must not be borrowed
            // shared across the await.
            let (build, store) = (self.build.clone(), self.store.clone());
            let (topic, stats) = (self.topic.clone(), self.stats.clone());
            let chain = load(build, store, topic, partition, self.durable_offsets, stats).await?;
            self.chains.insert(partition, chain);
        }
        self.chains
            .get_mut(&partition)
            .ok_or_else(|| Error::Bug(format!("the chain of partition {partition} vanished")))
    }
}

impl PartitionChain {
    /// Records before this offset are already judged by the restored state: store them,
    /// but do not run them through the operators again.
    pub fn judged_below(&self) -> u64 {
        self.judged_below
    }

    /// Run the operators over `batch`, whose last record is at `last_offset`.
    pub fn process(&mut self, last_offset: u64, batch: &mut MicroBatch) -> Result<()> {
        run_chain(&mut self.ops, batch)?;
        self.next_offset = Some(last_offset + 1);
        self.dirty = true;
        if let Some(t) = batch.samples.iter().map(|s| s.time_ns).max() {
            self.seen_until = self.seen_until.max(t);
        }
        Ok(())
    }

    /// Tell the operators event time reached `watermark` elsewhere, if that is at least
    /// `step` past what this chain last saw.
    fn tick(&mut self, watermark: i64, step: i64, out: &mut MicroBatch) -> Result<()> {
        if watermark < self.seen_until.saturating_add(step) {
            return Ok(());
        }
        self.seen_until = watermark;
        for op in self.ops.iter_mut() {
            op.advance(watermark, out)?;
        }
        self.dirty = true;
        Ok(())
    }

    /// Newest event time this chain has seen.
    pub fn seen_until(&self) -> i64 {
        self.seen_until
    }

    /// An empty sample vector, with the capacity of an earlier batch's when one was
    /// given back.
    pub fn take_buffer(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.spare)
    }

    /// Keep `samples`' allocation for the next batch.
    pub fn give_back(&mut self, mut samples: Vec<Sample>) {
        samples.clear();
        self.spare = samples;
    }
}

/// A broker that is briefly away should not stop the worker: try a few times.
async fn load_retrying(
    store: &dyn CheckpointStore,
    topic: &str,
    partition: u32,
) -> Result<Option<Snapshot>> {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match store.load(topic, partition).await {
            Err(e) if delay < std::time::Duration::from_secs(16) => {
                tracing::warn!(
                    topic,
                    partition,
                    "loading the operator checkpoint failed, retrying: {e}"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r,
        }
    }
}

/// A fresh chain for `partition`, restored from its latest snapshot if there is one.
async fn load(
    build: ChainBuilder,
    store: Arc<dyn CheckpointStore>,
    topic: String,
    partition: u32,
    durable_offsets: bool,
    stats: Arc<Stats>,
) -> Result<PartitionChain> {
    let mut ops = build.build()?;
    let mut judged_below = 0;
    if let Some(snap) = load_retrying(store.as_ref(), &topic, partition).await? {
        for op in ops.iter_mut() {
            if let Some(s) = snap.operators.get(op.name()) {
                if let Err(e) = op.restore(s.clone()) {
                    tracing::warn!("ignoring unreadable {} checkpoint: {e}", op.name());
                }
            }
        }
        if durable_offsets {
            judged_below = snap.next_offset;
        }
        Stats::add(&stats.operator_state_restored, 1);
        tracing::info!(
            topic = %topic, partition, offset = snap.next_offset,
            "operator state restored from the partition's checkpoint"
        );
    }
    Ok(PartitionChain {
        ops,
        judged_below,
        next_offset: None,
        dirty: false,
        seen_until: i64::MIN,
        spare: Vec::new(),
    })
}

impl PartitionChains {
    /// `partition`'s chain (restored from its snapshot the first time), taken out to be
    /// run; [`PartitionChains::put`] it back.
    pub async fn take(&mut self, partition: u32) -> Result<PartitionChain> {
        self.chain(partition).await?;
        self.chains
            .remove(&partition)
            .ok_or_else(|| Error::Bug(format!("the chain of partition {partition} vanished")))
    }

    pub fn put(&mut self, partition: u32, chain: PartitionChain) {
        self.chains.insert(partition, chain);
    }

    /// Move every chain not in `busy` (they just processed points) on to `watermark`, the
    /// newest event time of this process, at most once per `step` of event time: an
    /// instance alone in its partition that falls silent is still judged (absence) and
    /// its windows close. Returns what the operators emitted.
    pub fn tick_idle(&mut self, watermark: i64, step: i64, busy: &[u32]) -> Result<MicroBatch> {
        let mut out = MicroBatch::default();
        for (p, chain) in self.chains.iter_mut() {
            if !busy.contains(p) {
                chain.tick(watermark, step, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Forget partitions this process no longer owns: their new owner restores them.
    pub fn drop_partitions(&mut self, partitions: &[u32]) {
        for p in partitions {
            if self.chains.remove(p).is_some() {
                tracing::info!(topic = %self.topic, partition = p, "partition moved away; its operator state was dropped");
            }
        }
    }

    /// Snapshot every chain that changed, keeping only `owned` partitions when the bus
    /// says which it assigns (a chain of a partition already given away must not
    /// overwrite its new owner's snapshot).
    pub async fn checkpoint(&mut self, owned: Option<&BTreeSet<u32>>) -> Result<()> {
        if let Some(owned) = owned {
            let gone: Vec<u32> = self
                .chains
                .keys()
                .filter(|p| !owned.contains(p))
                .copied()
                .collect();
            self.drop_partitions(&gone);
        }
        let mut snapshots = Vec::new();
        for (p, chain) in self.chains.iter().filter(|(_, c)| c.dirty) {
            let mut operators = serde_json::Map::new();
            for op in &chain.ops {
                operators.insert(op.name().to_string(), op.checkpoint()?);
            }
            snapshots.push(Snapshot {
                topic: self.topic.clone(),
                partition: *p,
                next_offset: chain.next_offset.unwrap_or(chain.judged_below),
                operators,
            });
        }
        if snapshots.is_empty() {
            return Ok(());
        }
        self.store.save(&snapshots).await?;
        Stats::add(&self.stats.operator_checkpoints, snapshots.len() as u64);
        for chain in self.chains.values_mut() {
            chain.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::{AnomalyEventKind, Sample, SeriesKey};
    use sqlvigil_operators::chain::ChainConfig;
    use sqlvigil_operators::rules::RuleConfig;
    use sqlvigil_store::{SqliteCheckpoints, StateStore};
    use std::time::Duration;

    fn factory(stats: Arc<Stats>) -> ChainBuilder {
        let rule = RuleConfig::threshold("cpu_storm", "cpu_percent > 85", Duration::from_secs(60));
        let config = ChainConfig {
            operators: Default::default(),
            rules: vec![rule],
        };
        ChainBuilder::new(config, stats).unwrap()
    }

    fn cpu(t_s: i64, v: f64) -> Sample {
        let key = SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization");
        Sample::gauge(key, t_s * 1_000_000_000, v, "%")
    }

    async fn feed(chains: &mut PartitionChains, offset: u64, t_s: i64) -> Vec<AnomalyEventKind> {
        let mut mb = MicroBatch {
            samples: vec![cpu(t_s, 95.0)],
            events: vec![],
        };
        let mut chain = chains.take(0).await.unwrap();
        chain.process(offset, &mut mb).unwrap();
        chains.put(0, chain);
        mb.events.into_iter().map(|e| e.event).collect()
    }

    #[tokio::test]
    async fn a_breach_clock_continues_in_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateStore::open(dir.path()).unwrap());
        let store: Arc<dyn CheckpointStore> = Arc::new(SqliteCheckpoints(state));
        let stats = Arc::new(Stats::default());
        let mut a = PartitionChains::new(
            "m",
            factory(stats.clone()),
            store.clone(),
            true,
            stats.clone(),
        );
        for (offset, t) in [(0, 0), (1, 30)] {
            assert!(feed(&mut a, offset, t).await.is_empty());
        }
        a.checkpoint(None).await.unwrap();
        assert_eq!(Stats::get(&stats.operator_checkpoints), 1);
        // A second owner picks the partition up: 30 s of breach are already behind it.
        let mut b = PartitionChains::new("m", factory(stats.clone()), store, true, stats.clone());
        let chain = b.take(0).await.unwrap();
        assert_eq!(chain.judged_below(), 2);
        b.put(0, chain);
        assert_eq!(feed(&mut b, 2, 60).await, vec![AnomalyEventKind::Open]);
        // A partition given away is dropped and not snapshotted again.
        b.checkpoint(Some(&BTreeSet::new())).await.unwrap();
        assert!(b.chains.is_empty());
    }
}
