//! The metrics worker: `otlp_metrics` → each partition's records decoded and run through
//! that partition's operator chain (partitions in parallel: they share no state) → sink;
//! anomaly events into the ledger and onto the anomalies topic; operator state
//! checkpointed per partition before offsets are committed.

use super::{stopping, Telemetry};
use crate::flusher::Flusher;
use crate::partitions::{PartitionChain, PartitionChains};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_core::{
    publish_retrying, Component, Delivery, Error, Ledger, MicroBatch, Record, Result, Sink, Stats,
    Subscription,
};
use sqlvigil_model::{Anomaly, AnomalyEvent, AnomalyEventKind, Sample};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Idle partitions are moved on to the event time of the others in steps of this much.
const TICK_STEP: Duration = Duration::from_secs(1);

/// The metrics worker: the shared telemetry parts plus the anomaly ledger.
pub struct MetricsWorker {
    pub telemetry: Telemetry,
    pub ledger: Arc<dyn Ledger>,
    /// This worker's health: progress per batch, what it waits for.
    pub health: Arc<Component>,
}

impl MetricsWorker {
    pub async fn run(
        self,
        mut sub: Box<dyn Subscription>,
        mut chains: PartitionChains,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let t = &self.telemetry;
        let topic = t.topics.metrics.clone();
        let mut flusher = Flusher::new(t.sink.clone(), t.store.clone(), t.sink_health.clone());
        // On a durable bus, flushed positions wait here for the next operator checkpoint,
        // so the committed offsets never run ahead of the saved state: a restart (or the
        // partition's next owner) resumes from the snapshot and is redelivered the rest.
        let mut held: Vec<Delivery> = Vec::new();
        let durable = t.bus.durable();
        let mut last_checkpoint = Instant::now();
        let mut newest = i64::MIN;
        while let Some(batch) = t.next(&mut sub, &topic, &stop).await? {
            let revoked = sub.revoked();
            if !revoked.is_empty() {
                // Not ours to acknowledge any more: the next owner reads them again.
                chains.drop_partitions(&revoked);
                held.retain(|d| !revoked.contains(&d.partition));
                flusher.forget(&revoked);
            }
            if !batch.is_empty() {
                // Positions first: the batch itself moves to the partition threads.
                flusher.processed(&batch);
                self.process(batch, &mut chains, &mut newest).await?;
            }
            if let Some(flushed) = flusher.poll(stopping(&stop)).await? {
                if durable {
                    held.extend(flushed);
                } else {
                    sub.ack(&flushed).await?;
                }
            }
            // Draining, checkpoint whenever flushed positions wait for one: the drain
            // ends when nothing is left unacknowledged, and on a durable bus the
            // acknowledgements wait for the checkpoint.
            let draining = stopping(&stop) && !held.is_empty();
            if draining || last_checkpoint.elapsed() >= t.operators.checkpoint_interval {
                // Snapshots may cover records not flushed yet: a restart stores those
                // again without judging them twice. Without a saved snapshot the offsets
                // stay uncommitted: the next attempt (or the partition's next owner)
                // covers them. (`held` stays empty on an in-process bus.)
                match chains.checkpoint(sub.assignment().as_ref()).await {
                    Ok(()) => sub.ack(&std::mem::take(&mut held)).await?,
                    Err(e) => tracing::warn!("operator checkpoint not saved, will retry: {e}"),
                }
                last_checkpoint = Instant::now();
            }
            self.health.progress();
        }
        held.extend(flusher.drain().await?);
        chains.checkpoint(sub.assignment().as_ref()).await?;
        sub.ack(&held).await
    }

    /// Decode a batch and run each partition's records through that partition's
    /// operators into the sink — partitions in parallel, each on its own thread, since
    /// they share no state — then publish the anomaly events. Records a restored
    /// snapshot already covers are stored (idempotently) but not judged twice.
    async fn process(
        &self,
        batch: Vec<Delivery>,
        chains: &mut PartitionChains,
        newest: &mut i64,
    ) -> Result<()> {
        let t = &self.telemetry;
        let mut by_partition: BTreeMap<u32, Vec<Delivery>> = BTreeMap::new();
        let full = batch.len() >= t.operators.batch_records;
        for d in batch {
            by_partition.entry(d.partition).or_default().push(d);
        }
        let mut jobs = Vec::with_capacity(by_partition.len());
        for (partition, records) in by_partition {
            jobs.push((partition, chains.take(partition).await?, records));
        }
        // One blocking-pool task per partition: the pool's threads live on between
        // batches (no OS thread started per batch, and their allocator heaps stay warm).
        let running: Vec<_> = jobs
            .into_iter()
            .map(|(p, chain, records)| {
                let (sink, stats) = (t.sink.clone(), t.stats.clone());
                tokio::task::spawn_blocking(move || {
                    (
                        p,
                        run_partition(chain, &records, sink.as_ref(), stats.as_ref()),
                    )
                })
            })
            .collect();
        let mut events = Vec::new();
        let mut failed = None;
        let mut busy = Vec::new();
        for job in running {
            let (p, (chain, result)) = match job.await {
                Ok(done) => done,
                Err(e) => {
                    failed.get_or_insert(Error::task("operator", e));
                    continue;
                }
            };
            busy.push(p);
            *newest = (*newest).max(chain.seen_until());
            chains.put(p, chain);
            match result {
                Ok(mut evs) => events.append(&mut evs),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // Partitions that got nothing follow the event time of the others — once the
        // consumer has caught up (a batch that is not full): while it works through a
        // backlog, an idle-looking partition may just not have been fetched yet, and
        // moving it on would make its own points late.
        if !full {
            let mut idle = chains.tick_idle(*newest, TICK_STEP.as_nanos() as i64, &busy)?;
            t.sink.write_samples(&idle.samples)?;
            events.append(&mut idle.events);
        }
        self.publish_events(&events).await
    }

    /// Store anomaly events (the latest state of each anomaly, in one transaction) and
    /// hand opens and resolves to analytics through the bus. Updates only refresh the
    /// stored anomaly: a storm's thousands of "worse score" events would otherwise fill
    /// the anomalies topic with records nobody acts on.
    async fn publish_events(&self, events: &[AnomalyEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let t = &self.telemetry;
        let latest = latest_states(events);
        t.sink.write_anomalies(&latest)?;
        self.ledger.record_anomalies(&latest, events)?;
        let mut records = Vec::new();
        for ev in events
            .iter()
            .filter(|e| e.event != AnomalyEventKind::Update)
        {
            records.push(Record {
                key: ev.anomaly.series.instance.as_bytes().to_vec().into(),
                payload: serde_json::to_vec(ev)?.into(),
            });
            tracing::info!(
                event = ?ev.event, rule = %ev.anomaly.rule, instance = %ev.anomaly.series.instance,
                observed = ev.anomaly.observed, folded = ev.anomaly.folded, "anomaly"
            );
        }
        if records.is_empty() {
            return Ok(());
        }
        publish_retrying(
            t.bus.as_ref(),
            &t.topics.anomalies,
            records,
            Some(&self.health),
        )
        .await
    }
}

/// The last state of each anomaly among `events`, in the order each first appears.
fn latest_states(events: &[AnomalyEvent]) -> Vec<Anomaly> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Anomaly> = Vec::new();
    for ev in events {
        match index.get(ev.anomaly.id.as_str()) {
            Some(&i) => out[i] = ev.anomaly.clone(),
            None => {
                index.insert(&ev.anomaly.id, out.len());
                out.push(ev.anomaly.clone());
            }
        }
    }
    out
}

/// One partition's share of a batch: decode, operators, sink. Returns the chain (to be
/// put back whatever happened) and the anomaly events.
fn run_partition(
    mut chain: PartitionChain,
    records: &[Delivery],
    sink: &dyn Sink,
    stats: &Stats,
) -> (PartitionChain, Result<Vec<AnomalyEvent>>) {
    let mut stored = Vec::new();
    let mut mb = MicroBatch {
        samples: chain.take_buffer(),
        events: Vec::new(),
    };
    let mut last = None;
    for d in records {
        if d.offset < chain.judged_below() {
            decode_metrics(d, &mut stored, stats);
        } else {
            decode_metrics(d, &mut mb.samples, stats);
            last = Some(d.offset);
        }
    }
    let result = (|| {
        if let Some(last) = last {
            Stats::add(&stats.processed_points, mb.samples.len() as u64);
            chain.process(last, &mut mb)?;
        }
        if stored.is_empty() {
            std::mem::swap(&mut stored, &mut mb.samples);
        } else {
            stored.append(&mut mb.samples);
        }
        sink.write_samples(&stored)?;
        Ok(std::mem::take(&mut mb.events))
    })();
    chain.give_back(stored);
    (chain, result)
}

fn decode_metrics(d: &Delivery, out: &mut Vec<Sample>, stats: &Stats) {
    match ExportMetricsServiceRequest::decode(d.record.payload.as_ref()) {
        Ok(req) => sqlvigil_otlp::metrics_to_samples(&req, out),
        Err(e) => {
            Stats::add(&stats.decode_errors, 1);
            tracing::warn!(
                partition = d.partition,
                offset = d.offset,
                "undecodable metrics record skipped: {e}"
            );
        }
    }
}
