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
use crate::health::Lag;
use crate::partitions::PartitionChains;
use crate::shutdown::{Shutdown, Stage};
use crate::supervise::supervise;
use crate::workers::metrics::MetricsWorker;
use crate::workers::{Telemetry, OPERATORS_GROUP};
use crate::{Handles, Pipeline};
use sqlvigil_analytics::service::{StageIo, ANALYTICS_GROUP};
use sqlvigil_analytics::worker::Signals;
use sqlvigil_analytics::AnalyticsService;
use sqlvigil_bus::BusKind;
use sqlvigil_core::{
    Backend, Build, BuildContext, Bus, CheckpointStore, Component, Health, Result, Stats,
    Subscription,
};
use sqlvigil_operators::chain::ChainConfig;
use sqlvigil_receiver::Ingest;
use sqlvigil_store::{EmbeddedReader, SqliteCheckpoints, StateStore, Store};
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

/// The telemetry backend of `store.backend`, and the embedded store itself when it is
/// that (for its background compaction).
async fn backend(
    config: &Config,
    ctx: &BuildContext,
    state: &Arc<StateStore>,
) -> Result<(Backend, Option<Arc<Store>>)> {
    use sqlvigil_store::Backend as Kind;
    Ok(match config.store.backend {
        Kind::Embedded => {
            let store = config.store.build(ctx).await?;
            let backend = Backend {
                sink: store.clone(),
                reader: Arc::new(EmbeddedReader {
                    store: store.clone(),
                    state: state.clone(),
                }),
            };
            (backend, Some(store))
        }
        Kind::Elastic => (config.elastic.build(ctx).await?, None),
    })
}

/// Subscribe `group` to `topic` — the first time with the subscription made before the
/// receivers opened, again on a restart (resuming after the last acknowledged record).
fn resubscriber(
    bus: Arc<dyn Bus>,
    topic: String,
    group: &'static str,
    first: Box<dyn Subscription>,
) -> impl FnMut() -> futures::future::BoxFuture<'static, Result<Box<dyn Subscription>>> {
    let mut first = Some(first);
    move || {
        let (bus, topic, first) = (bus.clone(), topic.clone(), first.take());
        Box::pin(async move {
            match first {
                Some(sub) => Ok(sub),
                None => bus.subscribe(&topic, group).await,
            }
        })
    }
}

/// The analytics stage over `io`: the model check, the digest schedule and the
/// supervised worker on the anomalies topic.
async fn start_analytics(
    config: &Config,
    ctx: &BuildContext,
    io: StageIo,
    anomalies: Box<dyn Subscription>,
    health: Arc<Component>,
    signals: (
        watch::Receiver<bool>,
        watch::Receiver<bool>,
        watch::Receiver<bool>,
    ),
) -> Result<(Arc<AnalyticsService>, JoinHandle<Result<()>>)> {
    let (spool, stop, helpers) = signals;
    let analyzer = config.analytics.build(ctx).await?;
    let topics = &ctx.topics;
    let bus = io.bus.clone();
    let analytics = Arc::new(AnalyticsService::new(
        &config.analytics,
        analyzer,
        io,
        &topics.insights,
        ctx.stats.clone(),
        health.clone(),
    ));
    tokio::spawn({
        let s = analytics.clone();
        async move { s.check_model().await }
    });
    let digest = &config.analytics.digest;
    if digest.enabled {
        let run = analytics
            .clone()
            .run_digests(digest.interval, digest.window, helpers);
        tokio::spawn(run);
    }
    let mut subscribe = resubscriber(bus, topics.anomalies.clone(), ANALYTICS_GROUP, anomalies);
    let (service, topic) = (analytics.clone(), topics.anomalies.clone());
    let handle = supervise(health, ctx.stats.clone(), stop.clone(), move || {
        let (service, topic, next) = (service.clone(), topic.clone(), subscribe());
        let signals = Signals {
            spool: spool.clone(),
            stop: stop.clone(),
        };
        async move { Ok(service.run_worker(next.await?, topic, signals).await?) }
    });
    Ok((analytics, handle))
}

/// The metrics worker, supervised: a restart subscribes again and restores each
/// partition's operator state from its latest checkpoint.
async fn start_metrics_worker(
    (config, chain): (&Config, &ChainConfig),
    ctx: &BuildContext,
    worker: (Telemetry, Arc<StateStore>, Arc<Component>),
    sub: Box<dyn Subscription>,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<()>>> {
    let (telemetry, state, health) = worker;
    let chain = chain.build(ctx).await?;
    let store = checkpoints(config, ctx, &state).await?;
    let topic = ctx.topics.metrics.clone();
    let durable = telemetry.bus.durable();
    let mut subscribe = resubscriber(telemetry.bus.clone(), topic.clone(), OPERATORS_GROUP, sub);
    let stats = ctx.stats.clone();
    Ok(supervise(
        health.clone(),
        stats.clone(),
        stop.clone(),
        move || {
            let chains =
                PartitionChains::new(&topic, chain.clone(), store.clone(), durable, stats.clone());
            let worker = MetricsWorker {
                telemetry: telemetry.clone(),
                ledger: state.clone(),
                health: health.clone(),
            };
            let (next, stop) = (subscribe(), stop.clone());
            async move { worker.run(next.await?, chains, stop).await }
        },
    ))
}

/// Build every component of `config` and start the tasks.
pub async fn start(config: Config) -> Result<Pipeline> {
    config.validate()?;
    let config_view = Arc::new(config.redacted()?);
    let chain = config.chain()?;
    let topics = config.bus.topics.clone();
    let ctx = BuildContext {
        stats: Arc::new(Stats::default()),
        data_dir: config.store.data_dir.clone(),
        topics: topics.clone(),
    };
    let health = Arc::new(Health::new(config.health.stall_after));
    let state = Arc::new(StateStore::open(&ctx.data_dir)?);
    let (backend, embedded) = backend(&config, &ctx, &state).await?;
    let bus = bus(&config, &ctx).await?;

    // Subscribe before the receivers open so nothing is published to an unread topic.
    let metrics_sub = bus.subscribe(&topics.metrics, OPERATORS_GROUP).await?;
    let logs_sub = bus.subscribe(&topics.logs, OPERATORS_GROUP).await?;
    let anomalies_sub = bus.subscribe(&topics.anomalies, ANALYTICS_GROUP).await?;

    let capacity = (config.bus.kind == BusKind::Memory).then_some(config.bus.capacity);
    let lag_limit = config.health.lag_limit(capacity);
    let h = &config.health;
    let receivers_health = health.register("otlp receivers", false, 0);
    let metrics_health = health.register("metrics worker", true, lag_limit);
    let logs_health = health.register("logs worker", true, lag_limit);
    let sink_health = health.register("sink", false, h.sink_backlog_limit);
    let analytics_health = health.register("analytics", false, h.analytics_backlog_limit);

    let receiver = config.receiver.build(&ctx).await?;
    let (grpc_addr, http_addr) = (receiver.grpc_addr, receiver.http_addr);
    let ingest = Arc::new(
        Ingest::new(bus.clone(), topics.clone(), ctx.stats.clone())
            .with_health(health.clone(), receivers_health.clone()),
    );

    let (stop_receivers, rx_receivers) = watch::channel(false);
    let (stop_telemetry, rx_telemetry) = watch::channel(false);
    let (stop_analytics, rx_analytics) = watch::channel(false);
    let (spool_analytics, rx_spool) = watch::channel(false);
    let (stop_helpers, rx_helpers) = watch::channel(false);
    let mut receivers = watched(
        receiver.start(ingest.clone(), rx_receivers.clone()),
        &receivers_health,
    );
    // The live monitor is a source too: it stops with the receivers.
    let monitor = config.monitor.build(&ctx).await?;
    monitor.connect(sqlvigil_monitor::Outputs {
        bus: bus.clone(),
        topic: topics.metrics.clone(),
        ledger: state.clone(),
    });
    receivers.extend(monitor.spawn(rx_receivers));
    let live = (!monitor.is_empty()).then_some(monitor as Arc<dyn sqlvigil_core::Live>);

    let telemetry = Telemetry {
        bus: bus.clone(),
        sink: backend.sink.clone(),
        stats: ctx.stats.clone(),
        topics: topics.clone(),
        operators: config.operators.clone(),
        store: config.store.clone(),
        sink_health: sink_health.clone(),
    };
    sink_health.running();
    let metrics = start_metrics_worker(
        (&config, &chain),
        &ctx,
        (telemetry.clone(), state.clone(), metrics_health.clone()),
        metrics_sub,
        rx_telemetry.clone(),
    )
    .await?;
    let logs = {
        let mut subscribe =
            resubscriber(bus.clone(), topics.logs.clone(), OPERATORS_GROUP, logs_sub);
        let (stop, health) = (rx_telemetry.clone(), logs_health.clone());
        supervise(
            logs_health.clone(),
            ctx.stats.clone(),
            rx_telemetry,
            move || {
                let (t, next, stop, health) =
                    (telemetry.clone(), subscribe(), stop.clone(), health.clone());
                async move { t.run_logs(next.await?, stop, health).await }
            },
        )
    };

    let io = StageIo {
        reader: backend.reader.clone(),
        sink: backend.sink.clone(),
        ledger: state.clone(),
        bus: bus.clone(),
        live: live.clone(),
    };
    let signals = (rx_spool, rx_analytics, rx_helpers.clone());
    let (analytics, analytics_worker) = start_analytics(
        &config,
        &ctx,
        io,
        anomalies_sub,
        analytics_health.clone(),
        signals,
    )
    .await?;
    let lags = vec![
        Lag {
            component: metrics_health,
            topic: topics.metrics.clone(),
            group: OPERATORS_GROUP,
        },
        Lag {
            component: logs_health,
            topic: topics.logs.clone(),
            group: OPERATORS_GROUP,
        },
        Lag {
            component: analytics_health.clone(),
            topic: topics.anomalies.clone(),
            group: ANALYTICS_GROUP,
        },
    ];
    tokio::spawn(crate::health::monitor(
        bus.clone(),
        lags,
        (backend.sink.clone(), sink_health),
        analytics_health,
        ctx.stats.clone(),
        rx_helpers.clone(),
    ));
    if let (Some(store), true) = (embedded.clone(), config.store.compaction.enabled) {
        let cfg = config.store.compaction.clone();
        tokio::spawn(crate::housekeeping::compaction(
            store,
            cfg,
            rx_helpers.clone(),
        ));
    }
    let retention = config.store.retention.clone();
    tokio::spawn(crate::housekeeping::retention(
        state.clone(),
        embedded,
        retention,
        rx_helpers,
    ));
    let rule_needs = Arc::new(sqlvigil_operators::rules::coverage::needs(&chain.rules)?);
    let rules = Arc::new(
        chain
            .rules
            .iter()
            .map(serde_json::to_value)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| sqlvigil_core::Error::Bug(format!("a rule does not serialize: {e}")))?,
    );
    tracing::info!(%grpc_addr, %http_addr, rules = chain.rules.len(), "pipeline started");
    Ok(Pipeline {
        handles: Handles {
            reader: backend.reader.clone(),
            state,
            stats: ctx.stats,
            health: health.clone(),
            analytics,
            ingest,
            bus,
            grpc_addr,
            http_addr,
            rule_needs,
            rules,
            config: config_view,
            live,
        },
        shutdown: Shutdown {
            receivers: Stage::new("receivers", stop_receivers, receivers),
            telemetry: Stage::new("telemetry workers", stop_telemetry, vec![metrics, logs]),
            analytics: Stage::new("analytics", stop_analytics, vec![analytics_worker]),
            spool: spool_analytics,
            helpers: stop_helpers,
            sink: backend.sink,
            health,
            timeout: config.shutdown.timeout,
        },
    })
}

/// The receivers' tasks, reporting as one part: running once started, stopped (with
/// the reason) if one ends before shutdown.
fn watched(
    tasks: Vec<JoinHandle<Result<()>>>,
    health: &Arc<Component>,
) -> Vec<JoinHandle<Result<()>>> {
    health.running();
    tasks
        .into_iter()
        .map(|t| {
            let health = health.clone();
            tokio::spawn(async move {
                let r = t
                    .await
                    .map_err(|e| sqlvigil_core::Error::task("receiver", e))
                    .and_then(|r| r);
                match &r {
                    Ok(()) => health.stopped("shut down"),
                    Err(e) => health.stopped(&e.to_string()),
                }
                r
            })
        })
        .collect()
}
