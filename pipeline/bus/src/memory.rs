//! The in-process bus: bounded partitioned logs in memory with consumer-group offsets,
//! written ahead to disk ([`crate::wal`]) unless `bus.durability` is `none`.
//!
//! A topic holds at most `capacity` records. While any group is subscribed, records are
//! kept until every group has acknowledged them and a full topic refuses publishes
//! ([`Error::Full`], retryable) — back-pressure instead of loss; an empty topic takes
//! any batch, so one larger than the capacity cannot wait forever. A topic nobody has
//! subscribed to yet behaves like a log with size-based retention: the oldest records go.
//!
//! With the log, a publish is answered once its records are on disk (as far as the
//! durability asks), groups' offsets are saved with each acknowledgement, and a restart
//! reads back every record some group has not acknowledged: the bus is durable.

use crate::wal::{Durability, Share, TopicLog, Wal, WalConfig};
use sqlvigil_core::{
    async_trait, Build, BuildContext, Bus, Delivery, Error, Record, Result, Subscription,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
struct Partition {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<Record>,
    /// Next offset to read per group (everything before is acknowledged).
    committed: HashMap<String, u64>,
}

impl Partition {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    /// Drop records every group has acknowledged.
    fn truncate(&mut self) {
        let Some(low) = self.committed.values().min().copied() else {
            return;
        };
        while self.base < low && self.records.pop_front().is_some() {
            self.base += 1;
        }
    }
}

struct Topic {
    partitions: Vec<Mutex<Partition>>,
    notify: Notify,
    /// Its files, when the bus writes ahead.
    log: Option<TopicLog>,
}

impl Topic {
    /// `n` partitions, read back from the log when there is one.
    fn open(name: &str, n: u32, wal: Option<&Wal>) -> Result<Self> {
        let n = n.max(1);
        let (log, held) = match wal {
            Some(wal) => {
                let (log, held) = wal.open_topic(name, n)?;
                (Some(log), held)
            }
            None => (None, Vec::new()),
        };
        let mut partitions: Vec<Mutex<Partition>> = held
            .into_iter()
            .map(|h| {
                Mutex::new(Partition {
                    base: h.base,
                    records: h.records,
                    committed: h.committed,
                })
            })
            .collect();
        partitions.resize_with(n as usize, || Mutex::new(Partition::default()));
        Ok(Topic {
            partitions,
            notify: Notify::new(),
            log,
        })
    }

    fn partition(&self, i: usize) -> MutexGuard<'_, Partition> {
        // A poisoned lock only means another task panicked mid-update of plain data.
        self.partitions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        (0..self.partitions.len())
            .map(|i| self.partition(i).records.len())
            .sum()
    }
}

/// The in-process bus's settings (`bus.capacity`, `bus.partitions`, `bus.durability`,
/// `bus.commit_interval`, `bus.segment_bytes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    pub capacity: usize,
    pub partitions: u32,
    pub durability: Durability,
    pub commit_interval: Duration,
    pub segment_bytes: u64,
}

#[async_trait]
impl Build for MemoryConfig {
    type Output = MemoryBus;

    fn validate(&self) -> Result<()> {
        if self.capacity == 0 || self.partitions == 0 {
            return Err(Error::Config(
                "bus.capacity and bus.partitions must be greater than 0".into(),
            ));
        }
        if self.durability == Durability::Fsync && self.commit_interval > Duration::from_secs(1) {
            return Err(Error::Config(
                "bus.commit_interval (the least time between two syncs, which each publish may wait) must be at most 1s"
                    .into(),
            ));
        }
        if self.segment_bytes < 4096 {
            return Err(Error::Config(
                "bus.segment_bytes must be at least 4096".into(),
            ));
        }
        Ok(())
    }

    /// The log lives in `<data_dir>/wal`; every topic it holds is read back now, so a
    /// damaged log stops the start rather than the first publish.
    async fn build(&self, ctx: &BuildContext) -> Result<MemoryBus> {
        let bus = match self.durability {
            Durability::None => MemoryBus::new(self.capacity, self.partitions),
            durability => MemoryBus::with_wal(
                self.capacity,
                self.partitions,
                WalConfig {
                    dir: ctx.data_dir.join("wal"),
                    durability,
                    commit_interval: self.commit_interval,
                    segment_bytes: self.segment_bytes,
                },
            )?,
        };
        Ok(bus)
    }
}

/// See the module docs.
pub struct MemoryBus {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    capacity: usize,
    partitions: u32,
    wal: Option<Arc<Wal>>,
}

impl MemoryBus {
    /// Memory only (`durability: none`).
    pub fn new(capacity: usize, partitions: u32) -> Self {
        MemoryBus {
            topics: Mutex::new(HashMap::new()),
            capacity,
            partitions,
            wal: None,
        }
    }

    /// Written ahead to `wal.dir`, with every topic there read back.
    pub fn with_wal(capacity: usize, partitions: u32, wal: WalConfig) -> Result<Self> {
        let bus = MemoryBus {
            wal: Some(Arc::new(Wal::open(wal)?)),
            ..MemoryBus::new(capacity, partitions)
        };
        for name in bus
            .wal
            .as_deref()
            .map(Wal::topics)
            .transpose()?
            .unwrap_or_default()
        {
            bus.topic(&name)?;
        }
        Ok(bus)
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let t = Arc::new(Topic::open(name, self.partitions, self.wal.as_deref())?);
        topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Put `records` in their partitions, written ahead first (all partitions in one
    /// write, all or nothing); the sync ticket to wait for. (Synchronous: no partition
    /// lock is held across an await.)
    fn append(&self, topic: &Topic, records: Vec<Record>, subscribed: bool) -> Result<Option<u64>> {
        let n = topic.partitions.len();
        let mut by_partition: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for record in records {
            by_partition
                .entry(partition_for(&record.key, n))
                .or_default()
                .push(record);
        }
        // Locked in partition order (no two publishes wait on each other in a cycle).
        let mut parts: Vec<_> = by_partition
            .into_iter()
            .map(|(i, records)| (i, topic.partition(i), records))
            .collect();
        let ticket = match (&self.wal, &topic.log) {
            (Some(wal), Some(log)) => {
                let shares: Vec<Share<'_>> = parts
                    .iter()
                    .map(|(i, p, records)| Share {
                        partition: *i as u32,
                        first: p.end(),
                        records,
                    })
                    .collect();
                wal.append(log, &shares)?
            }
            _ => None,
        };
        for (i, p, records) in &mut parts {
            let before = p.base;
            for record in records.drain(..) {
                p.records.push_back(record);
                if !subscribed && p.records.len() > self.capacity / n {
                    p.records.pop_front();
                    p.base += 1;
                }
            }
            if let (Some(wal), Some(log), true) = (&self.wal, &topic.log, p.base > before) {
                wal.dropped(log, *i as u32, p.base);
            }
        }
        drop(parts);
        topic.notify.notify_waiters();
        Ok(ticket)
    }
}

/// The partition of `n` that records keyed `key` go to.
pub fn partition_for(key: &[u8], n: usize) -> usize {
    // FNV-1a: stable, so a key always maps to the same partition.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % n as u64) as usize
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic_name: &str, records: Vec<Record>) -> Result<()> {
        let topic = self.topic(topic_name)?;
        let subscribed =
            (0..topic.partitions.len()).any(|i| !topic.partition(i).committed.is_empty());
        let held = topic.len();
        if subscribed && held > 0 && held + records.len() > self.capacity {
            return Err(Error::Full(topic_name.to_string()));
        }
        if let (Some(wal), Some(ticket)) = (&self.wal, self.append(&topic, records, subscribed)?) {
            wal.wait(ticket).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, topic_name: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let topic = self.topic(topic_name)?;
        let mut next = Vec::with_capacity(topic.partitions.len());
        for i in 0..topic.partitions.len() {
            let mut p = topic.partition(i);
            let base = p.base;
            let at = *p.committed.entry(group.to_string()).or_insert(base);
            next.push(at);
        }
        Ok(Box::new(MemorySubscription {
            topic,
            wal: self.wal.clone(),
            group: group.to_string(),
            next,
            cursor: 0,
        }))
    }

    /// With the log, acknowledged records outlive the process.
    fn durable(&self) -> bool {
        self.wal.is_some()
    }

    fn pending(&self, topic_name: &str, group: &str) -> u64 {
        let Ok(topic) = self.topic(topic_name) else {
            return 0;
        };
        (0..topic.partitions.len())
            .map(|i| {
                let p = topic.partition(i);
                let low = p.committed.get(group).copied().unwrap_or(p.base);
                p.end().saturating_sub(low)
            })
            .sum()
    }
}

struct MemorySubscription {
    topic: Arc<Topic>,
    wal: Option<Arc<Wal>>,
    group: String,
    /// Next offset to deliver per partition (may run ahead of the committed offset).
    next: Vec<u64>,
    /// Round-robin start so no partition starves.
    cursor: usize,
}

impl MemorySubscription {
    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let n = self.next.len().max(1);
        let mut out = Vec::new();
        // A fair share of every partition first (the consumer works on partitions in
        // parallel), then whatever room is left, round-robin so none starves.
        let share = max.div_ceil(n);
        for limit in [share, max] {
            for step in 0..n {
                let i = (self.cursor + step) % n;
                self.take_from(i, (out.len() + limit).min(max), &mut out);
            }
        }
        self.cursor = (self.cursor + 1) % n;
        out
    }

    /// Deliver records of partition `i` until `out` holds `upto`.
    fn take_from(&mut self, i: usize, upto: usize, out: &mut Vec<Delivery>) {
        let Some(next) = self.next.get(i).copied() else {
            return;
        };
        let p = self.topic.partition(i);
        for offset in next.max(p.base)..p.end() {
            if out.len() >= upto {
                break;
            }
            if let Some(record) = p.records.get((offset - p.base) as usize) {
                out.push(Delivery {
                    partition: i as u32,
                    offset,
                    record: record.clone(),
                });
                self.next[i] = offset + 1;
            }
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let topic = self.topic.clone();
            let notified = topic.notify.notified();
            let batch = self.take(max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut upto: HashMap<u32, u64> = HashMap::new();
        for d in deliveries {
            let e = upto.entry(d.partition).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
        for (partition, offset) in upto {
            let mut p = self.topic.partition(partition as usize);
            let committed = p.committed.entry(self.group.clone()).or_insert(0);
            *committed = (*committed).max(offset);
            p.truncate();
            if let (Some(wal), Some(log)) = (&self.wal, &self.topic.log) {
                wal.commit(log, partition, &p.committed, p.base)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, n: u8) -> Record {
        Record {
            key: key.as_bytes().to_vec().into(),
            payload: vec![n].into(),
        }
    }

    #[tokio::test]
    async fn redelivers_unacknowledged_records_to_a_new_subscription() {
        let bus = MemoryBus::new(100, 2);
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", vec![rec("a", 1), rec("a", 2), rec("b", 3)])
            .await
            .unwrap();
        let got = sub.next_batch(10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(got.len(), 3);
        sub.ack(&got[..1]).await.unwrap();
        assert_eq!(bus.pending("t", "g"), 2);
        drop(sub);
        let mut again = bus.subscribe("t", "g").await.unwrap();
        let got = again
            .next_batch(10, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(got.len(), 2, "the two unacknowledged records come back");
        again.ack(&got).await.unwrap();
        assert_eq!(bus.pending("t", "g"), 0);
    }

    #[tokio::test]
    async fn keeps_per_key_order_and_refuses_when_full() {
        let bus = MemoryBus::new(3, 4);
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", vec![rec("k", 1), rec("k", 2), rec("k", 3)])
            .await
            .unwrap();
        let err = bus.publish("t", vec![rec("k", 4)]).await.unwrap_err();
        assert!(err.is_retryable());
        let got = sub.next_batch(10, Duration::from_millis(50)).await.unwrap();
        let order: Vec<u8> = got.iter().map(|d| d.record.payload[0]).collect();
        assert_eq!(order, vec![1, 2, 3]);
        sub.ack(&got).await.unwrap();
        bus.publish("t", vec![rec("k", 4)]).await.unwrap();
    }

    #[tokio::test]
    async fn waits_for_new_records() {
        let bus = Arc::new(MemoryBus::new(10, 1));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let b = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            b.publish("t", vec![rec("x", 9)]).await
        });
        let got = sub.next_batch(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 1);
    }

    fn wal(dir: &std::path::Path, segment_bytes: u64) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            durability: Durability::Fsync,
            commit_interval: Duration::from_millis(1),
            segment_bytes,
        }
    }

    async fn read_all(bus: &MemoryBus, group: &str) -> Vec<u8> {
        let mut sub = bus.subscribe("t", group).await.unwrap();
        let got = sub
            .next_batch(1000, Duration::from_millis(50))
            .await
            .unwrap();
        got.iter().map(|d| d.record.payload[0]).collect()
    }

    #[tokio::test]
    async fn what_was_not_acknowledged_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let bus = MemoryBus::with_wal(100, 2, wal(dir.path(), 4096)).unwrap();
        assert!(bus.durable());
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let records: Vec<Record> = (0..40).map(|i| rec(&format!("k{}", i % 3), i)).collect();
        bus.publish("t", records).await.unwrap();
        let got = sub
            .next_batch(100, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(got.len(), 40);
        // Acknowledge those of one partition only.
        let first: Vec<Delivery> = got.iter().filter(|d| d.partition == 0).cloned().collect();
        let rest: Vec<u8> = got
            .iter()
            .filter(|d| d.partition != 0)
            .map(|d| d.record.payload[0])
            .collect();
        sub.ack(&first).await.unwrap();
        drop((sub, bus));

        let bus = MemoryBus::with_wal(100, 2, wal(dir.path(), 4096)).unwrap();
        let mut again = read_all(&bus, "g").await;
        again.sort();
        let mut rest = rest;
        rest.sort();
        assert_eq!(again, rest, "exactly the unacknowledged records come back");
        // New records get new offsets after the old ones.
        bus.publish("t", vec![rec("k1", 200)]).await.unwrap();
        assert!(read_all(&bus, "g").await.contains(&200));
    }

    #[tokio::test]
    async fn acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let bus = MemoryBus::with_wal(10_000, 1, wal(dir.path(), 4096)).unwrap();
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        for i in 0..100u8 {
            let big = Record {
                key: "k".as_bytes().to_vec().into(),
                payload: vec![i; 1000].into(),
            };
            bus.publish("t", vec![big]).await.unwrap();
        }
        let part = dir.path().join("t");
        let segments = |p: &std::path::Path| {
            std::fs::read_dir(p)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
                .count()
        };
        assert!(segments(&part) > 10, "100 KB in 4 KB segments");
        let got = sub
            .next_batch(1000, Duration::from_millis(50))
            .await
            .unwrap();
        sub.ack(&got).await.unwrap();
        assert_eq!(segments(&part), 1, "only the segment being written is left");
        drop((sub, bus));
        let bus = MemoryBus::with_wal(10_000, 1, wal(dir.path(), 4096)).unwrap();
        assert!(read_all(&bus, "g").await.is_empty());
    }

    #[tokio::test]
    async fn a_write_torn_by_a_crash_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let bus = MemoryBus::with_wal(100, 1, wal(dir.path(), 1 << 20)).unwrap();
        let _sub = bus.subscribe("t", "g").await.unwrap();
        bus.publish("t", vec![rec("k", 1), rec("k", 2)])
            .await
            .unwrap();
        drop((_sub, bus));
        let segment = std::fs::read_dir(dir.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension() == Some("log".as_ref()))
            .find(|p| std::fs::metadata(p).unwrap().len() > 0)
            .unwrap();
        let whole = std::fs::metadata(&segment).unwrap().len();
        // Half a frame, as a kill -9 in the middle of a write leaves it.
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&segment, bytes).unwrap();

        let bus = MemoryBus::with_wal(100, 1, wal(dir.path(), 1 << 20)).unwrap();
        assert_eq!(read_all(&bus, "g").await, vec![1, 2]);
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            whole,
            "cut back"
        );
        bus.publish("t", vec![rec("k", 3)]).await.unwrap();
        drop(bus);
        let bus = MemoryBus::with_wal(100, 1, wal(dir.path(), 1 << 20)).unwrap();
        assert_eq!(read_all(&bus, "g").await, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_capacity_goes_into_an_empty_topic() {
        let bus = MemoryBus::new(3, 1);
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let five: Vec<Record> = (0..5).map(|i| rec("k", i)).collect();
        bus.publish("t", five.clone()).await.unwrap();
        assert!(bus
            .publish("t", vec![rec("k", 9)])
            .await
            .unwrap_err()
            .is_retryable());
        let got = sub.next_batch(10, Duration::from_millis(50)).await.unwrap();
        sub.ack(&got).await.unwrap();
        bus.publish("t", five).await.unwrap();
    }
}
