//! Flushes the sink in the background while the worker goes on processing, and hands
//! back the bus positions each flush made durable (to acknowledge them).
//!
//! One flush runs at a time. A flush starts when `store.flush_interval` has passed or
//! `store.flush_rows` are buffered; the deliveries processed before it started are the
//! ones it covers. Overlapping the Parquet (or disk-queue) write with decoding and the
//! operators keeps the consumer busy instead of waiting on the disk.

use sqlvigil_core::{Component, Delivery, Error, Result, Sink};
use sqlvigil_store::StoreConfig;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

pub(crate) struct Flusher {
    sink: Arc<dyn Sink>,
    config: StoreConfig,
    /// Told of every finished flush (the sink's progress).
    health: Arc<Component>,
    /// Processed since the last flush started.
    pending: Vec<Delivery>,
    since: Instant,
    /// The flush in flight and the deliveries it covers.
    running: Option<(JoinHandle<Result<()>>, Vec<Delivery>)>,
}

impl Flusher {
    pub(crate) fn new(sink: Arc<dyn Sink>, config: StoreConfig, health: Arc<Component>) -> Self {
        Flusher {
            sink,
            config,
            health,
            pending: Vec::new(),
            since: Instant::now(),
            running: None,
        }
    }

    /// Deliveries processed (their data written to the sink's buffer).
    pub(crate) fn processed(&mut self, batch: &[Delivery]) {
        self.pending.extend(batch.iter().map(Delivery::position));
    }

    /// Forget deliveries of partitions this process no longer owns: never acknowledged.
    pub(crate) fn forget(&mut self, partitions: &[u32]) {
        self.pending.retain(|d| !partitions.contains(&d.partition));
        if let Some((_, covered)) = &mut self.running {
            covered.retain(|d| !partitions.contains(&d.partition));
        }
    }

    /// Collect a finished flush (waiting for it when `force`) and start the next one when
    /// due (or `force`d). Returns the deliveries a flush made durable, if one finished.
    pub(crate) async fn poll(&mut self, force: bool) -> Result<Option<Vec<Delivery>>> {
        let done = match &self.running {
            Some((h, _)) if force || h.is_finished() => self.collect().await?,
            _ => None,
        };
        let due = self.since.elapsed() >= self.config.flush_interval
            || self.sink.buffered_rows() >= self.config.flush_rows;
        if self.running.is_none() && (force || due) {
            let sink = self.sink.clone();
            let handle = tokio::task::spawn_blocking(move || sink.flush());
            self.running = Some((handle, std::mem::take(&mut self.pending)));
            self.since = Instant::now();
        }
        Ok(done)
    }

    async fn collect(&mut self) -> Result<Option<Vec<Delivery>>> {
        let Some((handle, covered)) = self.running.take() else {
            return Ok(None);
        };
        handle.await.map_err(|e| Error::task("flush", e))??;
        self.health.progress();
        Ok(Some(covered))
    }

    /// Flush everything processed so far and wait: the deliveries now durable.
    pub(crate) async fn drain(&mut self) -> Result<Vec<Delivery>> {
        let mut durable = self.collect().await?.unwrap_or_default();
        self.poll(true).await?;
        durable.extend(self.collect().await?.unwrap_or_default());
        Ok(durable)
    }
}
