//! Wires the pipeline from [`Config`] and runs it until shutdown.
//!
//! Tasks: the two OTLP listeners; a telemetry worker per telemetry topic (decode →
//! operators → store, acknowledging bus records after the store flushed them); and the
//! analytics worker (anomalies topic → analyzer → insights, see [`crate::analytics`]). Shutdown goes in
//! data-flow order: stop accepting, drain the telemetry topics, flush, checkpoint, then
//! drain the anomalies topic — so everything a client was told is accepted is stored.

use crate::analytics::AnalyticsService;
use crate::bus::kafka::KafkaBus;
use crate::bus::memory::MemoryBus;
use crate::bus::{Bus, Delivery, Record, Subscription};
use crate::checkpoint::kafka::KafkaCheckpoints;
use crate::checkpoint::{Chain, ChainFactory, CheckpointStore, PartitionChains, SqliteCheckpoints};
use crate::config::{parse_addr, Backend, BusKind, Config};
use crate::error::{PipelineError, Result};
use crate::flusher::Flusher;
use crate::operators::rate::RateOperator;
use crate::operators::rules::RuleOperator;
use crate::operators::window::WindowOperator;
use crate::operators::{MicroBatch, Operator};
use crate::receiver::{decode, grpc, http, Ingest};
use crate::sinks::elastic::reader::ElasticReader;
use crate::sinks::elastic::ElasticSink;
use crate::sinks::reader::{EmbeddedReader, Reader};
use crate::sinks::state::StateStore;
use crate::sinks::store::Store;
use crate::sinks::Sink;
use crate::stats::Stats;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sqlvigil_model::AnomalyEvent;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const OPERATORS_GROUP: &str = "sqlvigil-operators";
pub(crate) const ANALYTICS_GROUP: &str = "sqlvigil-analytics";
/// Idle partitions are moved on to the event time of the others in steps of this much.
const TICK_STEP: Duration = Duration::from_secs(1);
/// At shutdown, how long the Elastic queue may take to empty (the rest stays on disk).
const ELASTIC_DRAIN: Duration = Duration::from_secs(5);

/// A running pipeline. Drop without [`Pipeline::shutdown`] aborts it.
pub struct Pipeline {
    pub config: Config,
    pub bus: Arc<dyn Bus>,
    /// The embedded store (empty when the backend is Elastic; `replay` reads it).
    pub store: Arc<Store>,
    pub state: Arc<StateStore>,
    /// Where the API and the analyzer read telemetry, anomalies and insights.
    pub reader: Arc<dyn Reader>,
    /// The Elastic sink and bridge, when `store.backend` is `elastic`.
    pub elastic: Option<Arc<ElasticBackend>>,
    pub stats: Arc<Stats>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The receiver core, for in-process producers (benchmarks).
    pub ingest: Arc<Ingest>,
    /// Insights on demand (the API) and the anomaly worker's analyzer.
    pub analytics: Arc<AnalyticsService>,
    stop_receivers: watch::Sender<bool>,
    stop_telemetry: watch::Sender<bool>,
    stop_analytics: watch::Sender<bool>,
    receivers: Vec<JoinHandle<()>>,
    telemetry: Vec<JoinHandle<Result<()>>>,
    analytics_task: JoinHandle<Result<()>>,
}

/// The Elasticsearch side of a pipeline: the sink and the bridge reader.
pub struct ElasticBackend {
    pub sink: Arc<ElasticSink>,
    pub reader: Arc<ElasticReader>,
}

/// Sink, reader and (for Elastic) the backend, from `store.backend`.
async fn backend(
    config: &Config,
    store: &Arc<Store>,
    state: &Arc<StateStore>,
    stats: &Arc<Stats>,
) -> Result<(Arc<dyn Sink>, Arc<dyn Reader>, Option<Arc<ElasticBackend>>)> {
    match config.store.backend {
        Backend::Embedded => Ok((
            store.clone(),
            Arc::new(EmbeddedReader {
                store: store.clone(),
                state: state.clone(),
            }),
            None,
        )),
        Backend::Elastic => {
            let es = sqlvigil_bridge::Elastic::connect(&config.elastic.connection())?;
            let sink = ElasticSink::start(
                &config.elastic,
                &config.store.data_dir,
                es.clone(),
                stats.clone(),
            )
            .await?;
            let reader = Arc::new(ElasticReader {
                es,
                options: config.elastic.read_options(),
                stats: stats.clone(),
            });
            let backend = Arc::new(ElasticBackend {
                sink: sink.clone(),
                reader: reader.clone(),
            });
            Ok((sink, reader, Some(backend)))
        }
    }
}

/// Bind a listener, naming the field and address on failure.
pub async fn bind(field: &str, addr: &str) -> Result<TcpListener> {
    let sock = parse_addr(field, addr)?;
    TcpListener::bind(sock)
        .await
        .map_err(|source| PipelineError::Bind {
            addr: format!("{field} {addr}"),
            source,
        })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Pipeline {
    /// Build every component and start the tasks.
    pub async fn start(config: Config) -> Result<Pipeline> {
        config.validate()?;
        let rules = config.effective_rules()?;
        let stats = Arc::new(Stats::default());
        let data_dir = config.store.data_dir.clone();
        let state = Arc::new(StateStore::open(&data_dir)?);
        let store = Arc::new(Store::open(&data_dir, stats.clone())?);
        let (sink, reader, elastic) = backend(&config, &store, &state, &stats).await?;
        let topics = config.bus.topics.clone();
        let bus: Arc<dyn Bus> = match config.bus.kind {
            BusKind::Memory => Arc::new(MemoryBus::new(config.bus.capacity, config.bus.partitions)),
            BusKind::Kafka => {
                let names = [
                    &topics.metrics,
                    &topics.logs,
                    &topics.anomalies,
                    &topics.insights,
                ];
                let names: Vec<&str> = names.iter().map(|t| t.as_str()).collect();
                Arc::new(KafkaBus::connect(&config.bus.kafka, &names, stats.clone()).await?)
            }
        };

        // Subscribe before the receivers open so nothing is published to an unread topic.
        let metrics_sub = bus.subscribe(&topics.metrics, OPERATORS_GROUP).await?;
        let logs_sub = bus.subscribe(&topics.logs, OPERATORS_GROUP).await?;
        let anomalies_sub = bus.subscribe(&topics.anomalies, ANALYTICS_GROUP).await?;

        let build = chain_factory(&config, rules.clone(), stats.clone());
        build()?; // a rule that does not compile stops start-up here
        let checkpoints: Arc<dyn CheckpointStore> = match config.bus.kind {
            BusKind::Memory => Arc::new(SqliteCheckpoints(state.clone())),
            BusKind::Kafka => {
                Arc::new(KafkaCheckpoints::connect(&config.bus.kafka, &topics.checkpoints).await?)
            }
        };
        let chains = PartitionChains::new(
            &topics.metrics,
            build,
            checkpoints,
            bus.durable(),
            stats.clone(),
        );

        let grpc_listener = bind("receiver.grpc_addr", &config.receiver.grpc_addr).await?;
        let http_listener = bind("receiver.http_addr", &config.receiver.http_addr).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;

        let (stop_receivers, rx_receivers) = watch::channel(false);
        let (stop_telemetry, rx_telemetry) = watch::channel(false);
        let (stop_analytics, rx_analytics) = watch::channel(false);

        let ingest = Arc::new(Ingest::new(bus.clone(), topics.clone(), stats.clone()));
        let limit = config.receiver.max_body_bytes;
        let grpc_task = {
            let (ingest, rx) = (ingest.clone(), rx_receivers.clone());
            tokio::spawn(async move {
                if let Err(e) = grpc::serve(grpc_listener, ingest, limit, stopped(rx)).await {
                    tracing::error!("OTLP/gRPC server failed: {e}");
                }
            })
        };
        let http_task = {
            let router = http::router(ingest.clone(), limit);
            let rx = rx_receivers.clone();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(http_listener, router)
                    .with_graceful_shutdown(stopped(rx))
                    .await
                {
                    tracing::error!("OTLP/HTTP server failed: {e}");
                }
            })
        };

        let worker = TelemetryWorker {
            bus: bus.clone(),
            sink: sink.clone(),
            state: state.clone(),
            stats: stats.clone(),
            config: config.clone(),
        };
        let metrics_task = tokio::spawn(logged(
            "metrics worker",
            worker
                .clone()
                .run_metrics(metrics_sub, chains, rx_telemetry.clone()),
        ));
        let logs_task = tokio::spawn(logged(
            "logs worker",
            worker.run_logs(logs_sub, rx_telemetry),
        ));
        let analytics_service = Arc::new(AnalyticsService::new(
            &config,
            reader.clone(),
            sink.clone(),
            state.clone(),
            bus.clone(),
            stats.clone(),
        )?);
        {
            let s = analytics_service.clone();
            tokio::spawn(async move { s.check_model().await });
        }
        if config.analytics.digest.enabled {
            tokio::spawn(analytics_service.clone().run_digests(
                config.analytics.digest.interval,
                config.analytics.digest.window,
                rx_analytics.clone(),
            ));
        }
        let analytics_task = tokio::spawn(analytics_service.clone().run_worker(
            anomalies_sub,
            topics.anomalies.clone(),
            rx_analytics,
        ));
        tracing::info!(%grpc_addr, %http_addr, rules = rules.len(), "pipeline started");
        Ok(Pipeline {
            config,
            bus,
            store,
            state,
            reader,
            elastic,
            stats,
            grpc_addr,
            http_addr,
            ingest,
            analytics: analytics_service,
            stop_receivers,
            stop_telemetry,
            stop_analytics,
            receivers: vec![grpc_task, http_task],
            telemetry: vec![metrics_task, logs_task],
            analytics_task,
        })
    }

    /// Stop accepting, drain, flush and checkpoint. Returns the first worker error.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop_receivers.send(true);
        for r in self.receivers {
            let _ = r.await;
        }
        let _ = self.stop_telemetry.send(true);
        let mut first_err = None;
        for t in self.telemetry {
            if let Err(e) = join(t).await {
                first_err.get_or_insert(e);
            }
        }
        let _ = self.stop_analytics.send(true);
        if let Err(e) = join(self.analytics_task).await {
            first_err.get_or_insert(e);
        }
        if let Some(e) = &self.elastic {
            e.sink.close(ELASTIC_DRAIN).await;
        }
        tracing::info!("pipeline stopped");
        first_err.map_or(Ok(()), Err)
    }
}

/// Run a worker, logging its failure when it happens (not only at shutdown's join).
async fn logged(name: &str, work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let r = work.await;
    if let Err(e) = &r {
        tracing::error!("{name} stopped: {e}");
    }
    r
}

/// Whether shutdown was requested (read without holding the lock across an await).
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn join(h: JoinHandle<Result<()>>) -> Result<()> {
    h.await
        .map_err(|e| PipelineError::Transport(format!("worker task failed: {e}")))?
}

/// One partition's operator chain: rates, windows, then the rules (which may watch
/// rates and window aggregates).
fn chain_factory(
    config: &Config,
    rules: Vec<crate::operators::rules::RuleConfig>,
    stats: Arc<Stats>,
) -> ChainFactory {
    let ops = config.operators.clone();
    Arc::new(move || {
        Ok(vec![
            Box::new(RateOperator::new(stats.clone()).with_idle_after(ops.idle_series_after))
                as Box<dyn Operator>,
            Box::new(WindowOperator::new(&ops.windows, stats.clone())?),
            Box::new(
                RuleOperator::new(&rules, ops.baseline.clone(), stats.clone())?
                    .with_allowed_lateness(ops.allowed_lateness)
                    .with_idle_after(ops.idle_series_after),
            ),
        ])
    })
}

/// One partition's share of a batch: decode, operators, sink. Returns the chain (to be
/// put back whatever happened) and the anomaly events.
fn run_partition(
    mut chain: Chain,
    records: &[Delivery],
    sink: &dyn Sink,
    stats: &Stats,
) -> (Chain, Result<Vec<AnomalyEvent>>) {
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

fn decode_metrics(d: &Delivery, out: &mut Vec<sqlvigil_model::Sample>, stats: &Stats) {
    match ExportMetricsServiceRequest::decode(d.record.payload.as_ref()) {
        Ok(req) => decode::metrics_to_samples(&req, out),
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

/// Consumes a telemetry topic into the operators and the store.
#[derive(Clone)]
struct TelemetryWorker {
    bus: Arc<dyn Bus>,
    sink: Arc<dyn Sink>,
    state: Arc<StateStore>,
    stats: Arc<Stats>,
    config: Config,
}

impl TelemetryWorker {
    /// Read the next micro-batch, or `None` once stopping and the topic is drained.
    async fn next(
        &self,
        sub: &mut Box<dyn Subscription>,
        topic: &str,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<Vec<Delivery>>> {
        let ops = &self.config.operators;
        // While draining, do not sit out a whole batch interval on an empty topic: the
        // loop only waits for the last flushes to be acknowledged.
        let wait = if stopping(stop) {
            ops.batch_interval.min(Duration::from_millis(20))
        } else {
            ops.batch_interval
        };
        let batch = sub.next_batch(ops.batch_records, wait).await?;
        if batch.is_empty() && *stop.borrow() && self.bus.pending(topic, OPERATORS_GROUP) == 0 {
            return Ok(None);
        }
        Ok(Some(batch))
    }

    async fn run_metrics(
        self,
        mut sub: Box<dyn Subscription>,
        mut chains: PartitionChains,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let topic = self.config.bus.topics.metrics.clone();
        let mut flusher = Flusher::new(self.sink.clone(), self.config.store.clone());
        // On a durable bus, flushed positions wait here for the next operator checkpoint,
        // so the committed offsets never run ahead of the saved state: a restart (or the
        // partition's next owner) resumes from the snapshot and is redelivered the rest.
        let mut held: Vec<Delivery> = Vec::new();
        let durable = self.bus.durable();
        let mut last_checkpoint = Instant::now();
        let mut newest = i64::MIN;
        while let Some(batch) = self.next(&mut sub, &topic, &stop).await? {
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
                self.process_metrics(batch, &mut chains, &mut newest)
                    .await?;
            }
            if let Some(flushed) = flusher.poll(stopping(&stop)).await? {
                if durable {
                    held.extend(flushed);
                } else {
                    sub.ack(&flushed).await?;
                }
            }
            if last_checkpoint.elapsed() >= self.config.operators.checkpoint_interval {
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
        }
        held.extend(flusher.drain().await?);
        chains.checkpoint(sub.assignment().as_ref()).await?;
        sub.ack(&held).await.map_err(Into::into)
    }

    /// Decode a batch and run each partition's records through that partition's
    /// operators into the sink — partitions in parallel, each on its own thread, since
    /// they share no state — then publish the anomaly events. Records a restored
    /// snapshot already covers are stored (idempotently) but not judged twice.
    async fn process_metrics(
        &self,
        batch: Vec<Delivery>,
        chains: &mut PartitionChains,
        newest: &mut i64,
    ) -> Result<()> {
        let mut by_partition: BTreeMap<u32, Vec<Delivery>> = BTreeMap::new();
        let full = batch.len() >= self.config.operators.batch_records;
        for d in batch {
            by_partition.entry(d.partition).or_default().push(d);
        }
        let mut jobs = Vec::with_capacity(by_partition.len());
        for (partition, records) in by_partition {
            jobs.push((partition, chains.take(partition).await?, records));
        }
        let (sink, stats) = (self.sink.clone(), self.stats.clone());
        let done = tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                let running: Vec<_> = jobs
                    .into_iter()
                    .map(|(p, chain, records)| {
                        let (sink, stats) = (sink.as_ref(), stats.as_ref());
                        scope.spawn(move || (p, run_partition(chain, &records, sink, stats)))
                    })
                    .collect();
                running.into_iter().map(|h| h.join()).collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| PipelineError::Transport(format!("operator task failed: {e}")))?;
        let mut events = Vec::new();
        let mut failed = None;
        let mut busy = Vec::new();
        for outcome in done {
            let Ok((p, (chain, result))) = outcome else {
                failed.get_or_insert(PipelineError::Transport(
                    "an operator thread panicked".into(),
                ));
                continue;
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
            self.sink.write_samples(&idle.samples)?;
            events.append(&mut idle.events);
        }
        self.publish_events(&events).await
    }

    /// Store anomaly events and hand them to analytics through the bus.
    async fn publish_events(&self, events: &[AnomalyEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(events.len());
        let anomalies: Vec<_> = events.iter().map(|e| e.anomaly.clone()).collect();
        self.sink.write_anomalies(&anomalies)?;
        for ev in events {
            self.state.upsert_anomaly(&ev.anomaly)?;
            records.push(Record {
                key: ev.anomaly.series.instance.as_bytes().to_vec().into(),
                payload: serde_json::to_vec(ev)?.into(),
            });
            tracing::info!(
                event = ?ev.event, rule = %ev.anomaly.rule, instance = %ev.anomaly.series.instance,
                observed = ev.anomaly.observed, "anomaly"
            );
        }
        publish_retrying(
            self.bus.as_ref(),
            &self.config.bus.topics.anomalies,
            records,
        )
        .await
    }

    async fn run_logs(
        self,
        mut sub: Box<dyn Subscription>,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let topic = self.config.bus.topics.logs.clone();
        let mut flusher = Flusher::new(self.sink.clone(), self.config.store.clone());
        while let Some(batch) = self.next(&mut sub, &topic, &stop).await? {
            flusher.forget(&sub.revoked());
            let mut logs = Vec::new();
            for d in &batch {
                match ExportLogsServiceRequest::decode(d.record.payload.as_ref()) {
                    Ok(req) => decode::logs_to_records(&req, &mut logs),
                    Err(e) => {
                        Stats::add(&self.stats.decode_errors, 1);
                        tracing::warn!("undecodable logs record skipped: {e}");
                    }
                }
            }
            self.sink.write_logs(&logs)?;
            flusher.processed(&batch);
            if let Some(flushed) = flusher.poll(stopping(&stop)).await? {
                sub.ack(&flushed).await?;
            }
        }
        sub.ack(&flusher.drain().await?).await.map_err(Into::into)
    }
}

/// Internal topics wait for room rather than fail: the producer is our own worker.
pub(crate) async fn publish_retrying(
    bus: &dyn Bus,
    topic: &str,
    records: Vec<Record>,
) -> Result<()> {
    let mut delay = Duration::from_millis(10);
    loop {
        match bus.publish(topic, records.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && delay < Duration::from_secs(30) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
