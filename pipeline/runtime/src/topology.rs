//! The topology: the only place that names concrete component types. It builds every
//! component from its config section, in data-flow order, hands each the same
//! [`BuildContext`], wires what they return to each other and starts the tasks.
//!
//! | configured kind | built here as |
//! |---|---|
//! | `bus.kind: memory` / `kafka` | `MemoryBus` / `KafkaBus`, with `SqliteCheckpoints` / `KafkaCheckpoints` |
//! | `store.backend: embedded` / `elastic` | `Store` + `EmbeddedReader` / the bridge's `ElasticSink` + `ElasticReader` |
//! | `operators:` + rules | the operators crate's one `ChainBuilder` (its `STAGES` list the operator kinds) |
//!
//! Adding a bus or backend kind: one file in its crate (config + `Build` + the trait
//! impl), a variant in its kind enum, and one arm here.

use crate::config::Config;
use crate::partitions::PartitionChains;
use crate::shutdown::{Shutdown, Stage};
use crate::workers::metrics::MetricsWorker;
use crate::workers::{Telemetry, OPERATORS_GROUP};
use crate::{Handles, Pipeline};
use sqlvigil_analytics::service::{StageIo, ANALYTICS_GROUP};
use sqlvigil_analytics::AnalyticsService;
use sqlvigil_bus::BusKind;
use sqlvigil_core::{
    Backend, Build, BuildContext, Bus, CheckpointStore, Result, Stats, Subscription,
};
use sqlvigil_receiver::Ingest;
use sqlvigil_store::{EmbeddedReader, SqliteCheckpoints, StateStore};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The bus of `bus.kind`.
async fn bus(config: &Config, ctx: &BuildContext) -> Result<Arc<dyn Bus>> {
    Ok(match config.bus.kind {
        BusKind::Memory => Arc::new(config.bus.memory().build(ctx).await?),
        BusKind::Kafka => Arc::new(config.bus.kafka.build(ctx).await?),
    })
}

/// Where operator snapshots go: wherever every owner of a partition can read them.
async fn checkpoints(
    config: &Config,
    ctx: &BuildContext,
    state: &Arc<StateStore>,
) -> Result<Arc<dyn CheckpointStore>> {
    Ok(match config.bus.kind {
        BusKind::Memory => Arc::new(SqliteCheckpoints(state.clone())),
        BusKind::Kafka => Arc::new(config.bus.kafka.checkpoints(ctx).await?),
    })
}

/// The telemetry backend of `store.backend`.
async fn backend(config: &Config, ctx: &BuildContext, state: &Arc<StateStore>) -> Result<Backend> {
    use sqlvigil_store::Backend as Kind;
    Ok(match config.store.backend {
        Kind::Embedded => {
            let store = config.store.build(ctx).await?;
            Backend {
                sink: store.clone(),
                reader: Arc::new(EmbeddedReader {
                    store,
                    state: state.clone(),
                }),
            }
        }
        Kind::Elastic => config.elastic.build(ctx).await?,
    })
}

/// The analytics stage over `io`: the model check, the digest schedule and the worker
/// on the anomalies topic.
async fn start_analytics(
    config: &Config,
    ctx: &BuildContext,
    io: StageIo,
    anomalies: Box<dyn Subscription>,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<AnalyticsService>, JoinHandle<Result<()>>)> {
    let analyzer = config.analytics.build(ctx).await?;
    let topics = &ctx.topics;
    let analytics = Arc::new(AnalyticsService::new(
        &config.analytics,
        analyzer,
        io,
        &topics.insights,
        ctx.stats.clone(),
    ));
    tokio::spawn({
        let s = analytics.clone();
        async move { s.check_model().await }
    });
    let digest = &config.analytics.digest;
    if digest.enabled {
        let run = analytics
            .clone()
            .run_digests(digest.interval, digest.window, stop.clone());
        tokio::spawn(run);
    }
    let worker = analytics
        .clone()
        .run_worker(anomalies, topics.anomalies.clone(), stop);
    let handle = crate::spawn_logged("analytics worker", async move { Ok(worker.await?) });
    Ok((analytics, handle))
}

/// Build every component of `config` and start the tasks.
pub async fn start(config: Config) -> Result<Pipeline> {
    config.validate()?;
    let chain = config.chain()?;
    let topics = config.bus.topics.clone();
    let ctx = BuildContext {
        stats: Arc::new(Stats::default()),
        data_dir: config.store.data_dir.clone(),
        topics: topics.clone(),
    };
    let state = Arc::new(StateStore::open(&ctx.data_dir)?);
    let backend = backend(&config, &ctx, &state).await?;
    let bus = bus(&config, &ctx).await?;

    // Subscribe before the receivers open so nothing is published to an unread topic.
    let metrics_sub = bus.subscribe(&topics.metrics, OPERATORS_GROUP).await?;
    let logs_sub = bus.subscribe(&topics.logs, OPERATORS_GROUP).await?;
    let anomalies_sub = bus.subscribe(&topics.anomalies, ANALYTICS_GROUP).await?;

    let chains = PartitionChains::new(
        &topics.metrics,
        chain.build(&ctx).await?,
        checkpoints(&config, &ctx, &state).await?,
        bus.durable(),
        ctx.stats.clone(),
    );
    let receiver = config.receiver.build(&ctx).await?;
    let (grpc_addr, http_addr) = (receiver.grpc_addr, receiver.http_addr);
    let ingest = Arc::new(Ingest::new(bus.clone(), topics.clone(), ctx.stats.clone()));

    let (stop_receivers, rx_receivers) = watch::channel(false);
    let (stop_telemetry, rx_telemetry) = watch::channel(false);
    let (stop_analytics, rx_analytics) = watch::channel(false);
    let receivers = receiver.start(ingest.clone(), rx_receivers);

    let telemetry = Telemetry {
        bus: bus.clone(),
        sink: backend.sink.clone(),
        stats: ctx.stats.clone(),
        topics: topics.clone(),
        operators: config.operators.clone(),
        store: config.store.clone(),
    };
    let metrics = MetricsWorker {
        telemetry: telemetry.clone(),
        ledger: state.clone(),
    };
    let workers = vec![
        crate::spawn_logged(
            "metrics worker",
            metrics.run(metrics_sub, chains, rx_telemetry.clone()),
        ),
        crate::spawn_logged("logs worker", telemetry.run_logs(logs_sub, rx_telemetry)),
    ];

    let io = StageIo {
        reader: backend.reader.clone(),
        sink: backend.sink.clone(),
        ledger: state.clone(),
        bus: bus.clone(),
    };
    let (analytics, analytics_worker) =
        start_analytics(&config, &ctx, io, anomalies_sub, rx_analytics).await?;
    let rule_needs = Arc::new(sqlvigil_operators::rules::coverage::needs(&chain.rules)?);
    tracing::info!(%grpc_addr, %http_addr, rules = chain.rules.len(), "pipeline started");
    Ok(Pipeline {
        handles: Handles {
            reader: backend.reader.clone(),
            state,
            stats: ctx.stats,
            analytics,
            ingest,
            bus,
            grpc_addr,
            http_addr,
            rule_needs,
        },
        shutdown: Shutdown {
            stages: vec![
                Stage::new("receivers", stop_receivers, receivers),
                Stage::new("telemetry workers", stop_telemetry, workers),
                Stage::new("analytics", stop_analytics, vec![analytics_worker]),
            ],
            sink: backend.sink,
        },
    })
}
