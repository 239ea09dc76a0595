//! The Elasticsearch sink (`store.backend: elastic`), split like Vector's sinks:
//! [`config`] is the user-facing contract, [`queue`] the bounded on-disk buffer,
//! [`retry`] which answers are retried, [`service`] the `_bulk` I/O, and this file the
//! wiring. Encoding and the index layout live in `sqlvigil-bridge`.
//!
//! Flow: the telemetry worker writes points and log records ([`Sink::write_samples`]),
//! [`Sink::flush`] appends them to the disk queue and makes them durable — after which
//! the worker acknowledges its bus records — and a shipper task sends the queue to
//! Elasticsearch in `_bulk` requests, up to `bulk.concurrency` at a time, moving the
//! queue's cursor past a batch only when all its items are settled.

pub mod queue;
pub mod retry;
pub mod service;

use crate::config::ElasticConfig;
use crate::layout::{self, ANOMALIES_INDEX, INSIGHTS_INDEX};
use crate::{encode, BridgeError, Elastic, Result};
use queue::DiskQueue;
use service::{DeadLetter, Service};
use sqlvigil_core::{async_trait, Sink, Stats};
use sqlvigil_model::{Anomaly, Insight, LogRecord, Sample};
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    rows: usize,
}

pub struct ElasticSink {
    queue: Arc<DiskQueue>,
    buffer: Mutex<Buffer>,
    metrics_stream: String,
    logs_stream: String,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    shipper: Mutex<Option<JoinHandle<()>>>,
}

impl ElasticSink {
    /// Open the queue, install the index layout (in the background while the cluster is
    /// unreachable; a conflicting layout is an error now) and start shipping.
    pub async fn start(
        cfg: &ElasticConfig,
        data_dir: &Path,
        es: Elastic,
        stats: Arc<Stats>,
    ) -> Result<Arc<ElasticSink>> {
        let queue = Arc::new(DiskQueue::open(
            &cfg.queue_dir(data_dir),
            cfg.queue.max_bytes,
            cfg.queue.segment_bytes,
        )?);
        let (ready_tx, ready) = watch::channel(!cfg.install_layout);
        if cfg.install_layout {
            install_index_layout(es.clone(), cfg.layout(), ready_tx).await?;
        }
        let service = Arc::new(Service {
            es,
            stats: stats.clone(),
            backoff_initial: cfg.bulk.backoff_initial,
            backoff_max: cfg.bulk.backoff_max,
            dead_letter: Mutex::new(DeadLetter::new(cfg.dead_letter_path(data_dir))),
        });
        let layout = cfg.layout();
        let (stop, stop_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let shipper = Shipper {
            queue: queue.clone(),
            service,
            max_bytes: cfg.bulk.max_bytes,
            max_docs: cfg.bulk.max_docs,
            concurrency: cfg.bulk.concurrency,
            wake: wake.clone(),
            stats: stats.clone(),
        };
        let handle = tokio::spawn(shipper.run(ready, stop_rx));
        let sink = Arc::new(ElasticSink {
            queue,
            buffer: Mutex::new(Buffer::default()),
            metrics_stream: layout.metrics_stream(),
            logs_stream: layout.logs_stream(),
            wake,
            stats,
            stop,
            shipper: Mutex::new(Some(handle)),
        });
        sink.update_gauge();
        Ok(sink)
    }

    /// Bytes waiting for Elasticsearch.
    pub fn pending_bytes(&self) -> u64 {
        self.queue.pending_bytes()
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_gauge(&self) {
        self.stats.elastic_queue_bytes.store(
            self.queue.pending_bytes(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn append_now(&self, items: Vec<u8>) -> Result<()> {
        self.queue.append_now(&items)?;
        self.update_gauge();
        self.wake.notify_one();
        Ok(())
    }
}

#[async_trait]
impl Sink for ElasticSink {
    fn name(&self) -> &'static str {
        "elastic"
    }

    fn write_samples(&self, samples: &[Sample]) -> sqlvigil_core::Result<()> {
        let mut b = self.buffer();
        for s in samples {
            encode::push_metric(&mut b.bytes, &self.metrics_stream, s);
        }
        b.rows += samples.len();
        Ok(())
    }

    fn write_logs(&self, logs: &[LogRecord]) -> sqlvigil_core::Result<()> {
        let mut b = self.buffer();
        for l in logs {
            encode::push_log(&mut b.bytes, &self.logs_stream, l);
        }
        b.rows += logs.len();
        Ok(())
    }

    /// Anomalies are written under their id, so each update replaces the last.
    fn write_anomalies(&self, anomalies: &[Anomaly]) -> sqlvigil_core::Result<()> {
        let mut items = Vec::new();
        for a in anomalies {
            let doc = encode::anomaly_doc(a);
            encode::push_item(
                &mut items,
                encode::Op::Index,
                ANOMALIES_INDEX,
                Some(&a.id),
                &doc,
            );
        }
        Ok(self.append_now(items)?)
    }

    fn write_insights(&self, insights: &[Insight]) -> sqlvigil_core::Result<()> {
        let mut items = Vec::new();
        for i in insights {
            let doc = encode::insight_doc(i);
            encode::push_item(
                &mut items,
                encode::Op::Index,
                INSIGHTS_INDEX,
                Some(&i.id),
                &doc,
            );
        }
        Ok(self.append_now(items)?)
    }

    /// Durable on disk (may wait for room in the queue: that is the back-pressure).
    fn flush(&self) -> sqlvigil_core::Result<()> {
        let bytes = std::mem::take(&mut *self.buffer()).bytes;
        self.queue.append(&bytes)?;
        self.update_gauge();
        self.wake.notify_one();
        Ok(())
    }

    fn buffered_rows(&self) -> usize {
        self.buffer().rows
    }

    /// Stop taking data and give the shipper up to `grace` to empty the queue; what is
    /// left stays on disk and is sent after the next start.
    async fn close(&self, grace: Duration) {
        self.queue.close();
        let _ = self.stop.send(true);
        self.wake.notify_one();
        let handle = self
            .shipper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut h) = handle {
            if tokio::time::timeout(grace, &mut h).await.is_err() {
                h.abort();
                tracing::warn!(
                    pending_bytes = self.queue.pending_bytes(),
                    "elastic queue not empty at shutdown; it is sent after the next start"
                );
            }
        }
    }
}

/// Install now; while the cluster is unreachable keep trying in the background (the
/// shipper waits for `ready`, so no data stream is created without its template).
async fn install_index_layout(
    es: Elastic,
    opts: layout::LayoutOptions,
    ready: watch::Sender<bool>,
) -> Result<()> {
    match layout::install(&es, &opts).await {
        Ok(report) => {
            tracing::info!(created = ?report.created, updated = ?report.updated, unchanged = report.unchanged.len(), "elastic index layout installed");
            let _ = ready.send(true);
            Ok(())
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(
                "elastic index layout not installed yet ({e}); retrying in the background"
            );
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(500);
                loop {
                    tokio::time::sleep(delay).await;
                    match layout::install(&es, &opts).await {
                        Ok(_) => {
                            tracing::info!("elastic index layout installed");
                            let _ = ready.send(true);
                            return;
                        }
                        Err(e) if e.is_retryable() => {
                            delay = (delay * 2).min(Duration::from_secs(30))
                        }
                        Err(e) => {
                            tracing::error!("elastic index layout refused: {e}; nothing is sent to Elasticsearch");
                            return;
                        }
                    }
                }
            });
            Ok(())
        }
        Err(e) => Err(BridgeError::Config(format!("elastic at {}: {e}", es.url()))),
    }
}

/// Reads batches off the queue and delivers them, acknowledging in queue order.
struct Shipper {
    queue: Arc<DiskQueue>,
    service: Arc<Service>,
    max_bytes: usize,
    max_docs: usize,
    concurrency: usize,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
}

impl Shipper {
    async fn run(self, mut ready: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        while !*ready.borrow_and_update() {
            tokio::select! {
                r = ready.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        let mut inflight: JoinSet<u64> = JoinSet::new();
        let mut order: VecDeque<(u64, u64)> = VecDeque::new();
        let mut finished: HashSet<u64> = HashSet::new();
        loop {
            while inflight.len() < self.concurrency {
                match self.next_batch().await {
                    Some(b) => {
                        order.push_back((b.start, b.end));
                        let service = self.service.clone();
                        inflight.spawn(async move {
                            service.deliver(b.data).await;
                            b.start
                        });
                    }
                    None => break,
                }
            }
            if inflight.is_empty() {
                if *stop.borrow() {
                    return;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            if let Some(Ok(start)) = inflight.join_next().await {
                finished.insert(start);
            }
            while let Some((start, end)) = order.front().copied() {
                if !finished.remove(&start) {
                    break;
                }
                order.pop_front();
                if let Err(e) = self.queue.ack(end) {
                    tracing::error!("elastic queue: {e}");
                }
            }
            self.stats.elastic_queue_bytes.store(
                self.queue.pending_bytes(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    async fn next_batch(&self) -> Option<queue::Batch> {
        let q = self.queue.clone();
        let (max_bytes, max_docs) = (self.max_bytes, self.max_docs);
        match tokio::task::spawn_blocking(move || q.read_batch(max_bytes, max_docs)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!("elastic queue read failed: {e}");
                None
            }
            Err(e) => {
                tracing::error!("elastic queue read task failed: {e}");
                None
            }
        }
    }
}
