//! The in-process bus: bounded partitioned logs in memory with consumer-group offsets.
//!
//! A topic holds at most `capacity` records. While any group is subscribed, records are
//! kept until every group has acknowledged them and a full topic refuses publishes
//! ([`Error::Full`], retryable) — back-pressure instead of loss. A topic nobody has
//! subscribed to yet behaves like a log with size-based retention: the oldest records go.

use sqlvigil_core::{
    async_trait, Build, BuildContext, Bus, Delivery, Error, Record, Result, Subscription,
};
use std::collections::{HashMap, VecDeque};
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
}

impl Topic {
    fn new(n: u32) -> Self {
        Topic {
            partitions: (0..n.max(1))
                .map(|_| Mutex::new(Partition::default()))
                .collect(),
            notify: Notify::new(),
        }
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

/// The in-process bus's settings (`bus.capacity`, `bus.partitions`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    pub capacity: usize,
    pub partitions: u32,
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
        Ok(())
    }

    async fn build(&self, _ctx: &BuildContext) -> Result<MemoryBus> {
        Ok(MemoryBus::new(self.capacity, self.partitions))
    }
}

/// See the module docs.
pub struct MemoryBus {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    capacity: usize,
    partitions: u32,
}

impl MemoryBus {
    pub fn new(capacity: usize, partitions: u32) -> Self {
        MemoryBus {
            topics: Mutex::new(HashMap::new()),
            capacity,
            partitions,
        }
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Topic::new(self.partitions)))
            .clone()
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
        let topic = self.topic(topic_name);
        let subscribed =
            (0..topic.partitions.len()).any(|i| !topic.partition(i).committed.is_empty());
        if subscribed && topic.len() + records.len() > self.capacity {
            return Err(Error::Full(topic_name.to_string()));
        }
        let n = topic.partitions.len();
        for record in records {
            let mut p = topic.partition(partition_for(&record.key, n));
            p.records.push_back(record);
            if !subscribed && p.records.len() > self.capacity / n {
                p.records.pop_front();
                p.base += 1;
            }
        }
        topic.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, topic_name: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let topic = self.topic(topic_name);
        let mut next = Vec::with_capacity(topic.partitions.len());
        for i in 0..topic.partitions.len() {
            let mut p = topic.partition(i);
            let base = p.base;
            let at = *p.committed.entry(group.to_string()).or_insert(base);
            next.push(at);
        }
        Ok(Box::new(MemorySubscription {
            topic,
            group: group.to_string(),
            next,
            cursor: 0,
        }))
    }

    fn pending(&self, topic_name: &str, group: &str) -> u64 {
        let topic = self.topic(topic_name);
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
}
