//! The runtime: the root [`Config`] composed of every crate's section, the
//! [`topology`] that builds the components from it and starts them, the [`workers`]
//! that move data from the bus through the operators into the stores, and the
//! [`shutdown`] order. Also the engines of the `sqlvigil` commands that run the
//! pipeline's chain without the live topology: [`replay`] and [`eval`], and [`serve`]
//! (the pipeline with the API until a signal).
//!
//! ```text
//! receiver (gRPC 4317, HTTP 4318) ─publish─> bus (otlp_metrics, otlp_logs)
//!     ─> metrics worker, one operator chain per partition (in parallel):
//!        decode → rates → windows → rules → sink (Parquet or Elasticsearch)
//!     ─> anomalies topic ─> analytics stage ─> insights
//! ```
//!
//! The receiver answers an OTLP client only after the bus has accepted the data, and the
//! workers acknowledge bus records only after the sink has made them durable (and the
//! operator checkpoint covers them, on a durable bus), so nothing accepted is lost.
//!
//! Depends on: every component crate (it is the one place that wires them) and the
//! API (it serves it). Must not be depended on by any of them.

pub mod config;
pub mod eval;
mod flusher;
pub mod health;
mod housekeeping;
pub mod partitions;
pub mod replay;
pub mod serve;
pub mod shutdown;
mod supervise;
pub mod topology;
pub mod workers;

pub use config::Config;
use sqlvigil_model::catalogue::RuleNeeds;

use sqlvigil_analytics::AnalyticsService;
use sqlvigil_api::AppState;
use sqlvigil_core::{Bus, Health, Reader, Result, Stats};
use sqlvigil_receiver::Ingest;
use sqlvigil_store::StateStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A running pipeline: what its users may reach ([`Handles`]) and how it stops.
/// Dropping it without [`Pipeline::shutdown`] aborts it.
pub struct Pipeline {
    handles: Handles,
    shutdown: shutdown::Shutdown,
}

/// What the API, the demo and the benches use of a running pipeline.
#[derive(Clone)]
pub struct Handles {
    /// Telemetry, anomalies and insights, from whichever backend holds them.
    pub reader: Arc<dyn Reader>,
    /// The SQLite state: tokens, the ledger of anomalies and insights.
    pub state: Arc<StateStore>,
    pub stats: Arc<Stats>,
    /// What each part is doing (`/health`, `/ready`).
    pub health: Arc<Health>,
    /// Insights on demand (the API).
    pub analytics: Arc<AnalyticsService>,
    /// The receiver core, for in-process producers (benchmarks, examples).
    pub ingest: Arc<Ingest>,
    /// The bus, for in-process consumers of its topics (benchmarks, examples).
    pub bus: Arc<dyn Bus>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// What each rule in force reads (for `/api/v1/coverage`).
    pub rule_needs: Arc<Vec<RuleNeeds>>,
    /// The rules in force, as configured (for `/api/v1/rules`).
    pub rules: Arc<Vec<serde_json::Value>>,
    /// The config in force, secrets redacted (for `/api/v1/config`).
    pub config: Arc<serde_json::Value>,
    /// The live monitor, when `monitor.instances` lists any.
    pub live: Option<Arc<dyn sqlvigil_core::Live>>,
}

impl Handles {
    /// The API's view of the pipeline.
    pub fn app_state(&self) -> AppState {
        AppState {
            reader: self.reader.clone(),
            state: self.state.clone(),
            stats: self.stats.clone(),
            health: self.health.clone(),
            analytics: self.analytics.clone(),
            rule_needs: self.rule_needs.clone(),
            rules: self.rules.clone(),
            config: self.config.clone(),
            live: self.live.clone(),
            started: Instant::now(),
            metrics_require_token: false,
            closing: Default::default(),
            guard: sqlvigil_api::Guard::new(&Default::default()),
        }
    }
}

impl Pipeline {
    /// Build every component of `config` and start the tasks ([`topology::start`]).
    pub async fn start(config: Config) -> Result<Pipeline> {
        topology::start(config).await
    }

    pub fn handles(&self) -> &Handles {
        &self.handles
    }

    /// Stop accepting, drain, flush and checkpoint, within `shutdown.timeout`. Returns
    /// the first error (a worker that failed while stopping, or the timeout).
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.run().await
    }
}

/// Logs to stderr, filtered by `SQLVIGIL_LOG` (an `EnvFilter`, e.g. `debug` or
/// `info,sqlvigil_bus=debug`); by default info, with the chattiest libraries at warn.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SQLVIGIL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,datafusion=warn,h2=warn,tower=warn,hyper=warn,tiberius=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
