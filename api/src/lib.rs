//! The REST API over the pipeline's store — embedded, or Elasticsearch through the
//! bridge: `/health`, `/metrics` (Prometheus self metrics) and the bearer-token protected
//! `/api/v1/{series,metrics,aggregates,anomalies,insights}` (with `POST /api/v1/insights`
//! for on-demand analyses, operator role), `/api/v1/{waits,top-queries,io,blocking}`
//! (Elastic only), plus a small status page at `/`.
//!
//! Tokens are checked against their SHA-256 hashes in the state store; every role may
//! read, and later write endpoints require operator or admin. Errors are JSON
//! `{"error": "..."}` with the right status code.
//!
//! Depends on: model, pipeline (its `Reader`, `StateStore`, `Stats`, and the Elastic
//! backend's bridge), axum. Must not
//! touch the bus or the operators: the API only reads what the pipeline stored.

mod auth;
mod error;
mod params;
mod routes;

pub use error::ApiError;

use axum::Router;
use sqlvigil_pipeline::runtime::ElasticBackend;
use sqlvigil_pipeline::sinks::reader::Reader;
use sqlvigil_pipeline::sinks::state::StateStore;
use sqlvigil_pipeline::stats::Stats;
use std::sync::Arc;
use std::time::Instant;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Telemetry, anomalies and insights, from whichever backend holds them.
    pub reader: Arc<dyn Reader>,
    /// Tokens and analysis failures (always SQLite).
    pub state: Arc<StateStore>,
    /// The bridge's summaries (waits, top queries, I/O, blocking) need Elastic.
    pub elastic: Option<Arc<ElasticBackend>>,
    pub stats: Arc<Stats>,
    /// On-demand insights (`POST /api/v1/insights`).
    pub analytics: Arc<sqlvigil_pipeline::analytics::AnalyticsService>,
    pub started: Instant,
}

/// The whole router.
pub fn router(app: AppState) -> Router {
    routes::router(app)
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}
