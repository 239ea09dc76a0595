//! The REST API over the pipeline's store — embedded, or Elasticsearch through the
//! bridge: `/health` (liveness) and `/ready` (readiness), both 503 naming the part at
//! fault, `/metrics` (Prometheus self metrics and each part's state) and the bearer-token protected
//! `/api/v1/{series,metrics,aggregates,anomalies,insights}` (with `POST /api/v1/insights`
//! for on-demand analyses and `POST /api/v1/anomalies/{id}/{acknowledge,resolve,silence}`,
//! operator role), `/api/v1/anomalies/{id}/root-cause` (the chain in one call),
//! `/api/v1/stream` (Server-Sent Events, resumable with `Last-Event-ID`),
//! `/api/v1/{waits,io}` (Elastic only), `/api/v1/{top-queries,blocking,coverage}`,
//! `/api/v1/live…` (the live monitor's DMV snapshots; ad hoc ones for operators,
//! rate-limited per instance), plus a small status page at `/`.
//!
//! Tokens (`sqlvigil token create|list|revoke`, `/api/v1/tokens` for admins) are
//! checked against their salted SHA-256 hashes in the state store, with expiry and
//! revocation; each route declares the least role it needs in one table
//! (`routes::api_routes`): viewers read, operators also request analyses and ad-hoc live
//! snapshots and act on anomalies, admins also manage tokens. A token scoped to instances
//! reads only those: every read is narrowed by the caller's scope (`auth::Caller`). `/health`, `/ready` and `/metrics` are open
//! (`/metrics` closes with `api.metrics_require_token`). Errors are JSON
//! `{"error": {"code", "message", "request_id"}}` with the right status code; every
//! request has an `x-request-id`, echoed and in its log lines.
//!
//! Every read goes through `sqlvigil-core`'s `Reader`, so both backends answer the same
//! endpoints the same way; what a backend cannot answer is 501 naming the setting that
//! can.
//!
//! Depends on: `sqlvigil-model`, `sqlvigil-core` (`Reader`, `Stats`), `sqlvigil-store`
//! (the SQLite state: tokens, analysis failures), `sqlvigil-analytics` (on-demand
//! analyses), axum. Must not touch the runtime, the bus, the operators or a concrete
//! telemetry backend: the API only reads what the pipeline stored.

mod auth;
pub mod config;
mod console;
mod error;
mod guard;
mod handling;
mod live;
mod params;
mod routes;
mod stream;
pub mod tls;
mod tokens;

pub use config::{ApiConfig, ApiListener};
pub use error::ApiError;
pub use guard::Guard;
pub use routes::route_roles;

use axum::Router;
use sqlvigil_analytics::AnalyticsService;
use sqlvigil_core::{Health, Reader, Stats};
use sqlvigil_store::StateStore;
use std::sync::Arc;
use std::time::Instant;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Telemetry, anomalies and insights, from whichever backend holds them.
    pub reader: Arc<dyn Reader>,
    /// Tokens and analysis failures (always SQLite).
    pub state: Arc<StateStore>,
    pub stats: Arc<Stats>,
    /// What each part of the pipeline is doing (`/health`, `/ready`, `/metrics`).
    pub health: Arc<Health>,
    /// On-demand insights (`POST /api/v1/insights`).
    pub analytics: Arc<AnalyticsService>,
    /// What each rule in force reads: which rules each instance's receiver mode can fire.
    pub rule_needs: Arc<Vec<sqlvigil_model::catalogue::RuleNeeds>>,
    /// The rules in force, as configured (`/api/v1/rules`).
    pub rules: Arc<Vec<serde_json::Value>>,
    /// The config in force with its secrets redacted (`/api/v1/config`, admin).
    pub config: Arc<serde_json::Value>,
    /// The live monitor (`/api/v1/live`), when instances are configured for it.
    pub live: Option<Arc<dyn sqlvigil_core::Live>>,
    pub started: Instant,
    /// `/metrics` answers only with a valid token (`api.metrics_require_token`).
    pub metrics_require_token: bool,
    /// The `api:` settings in force and the per-token rate buckets.
    pub guard: Arc<Guard>,
    /// Cancelled when the API shuts down: long-lived answers (the live stream) end.
    pub closing: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Run `f` on the state store (SQLite: blocking) off the async threads.
    pub(crate) async fn on_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateStore) -> Result<T, sqlvigil_store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)
    }
}

/// The whole router.
pub fn router(app: AppState) -> Router {
    routes::router(app)
}

/// Serve the API on `listener` (HTTPS when it has a TLS acceptor) until `shutdown`
/// resolves.
pub async fn serve(
    listener: ApiListener,
    app: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = app.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.cancel();
    };
    let router = router(app);
    match listener.tls {
        Some(acceptor) => {
            axum::serve(tls::TlsListener::new(listener.tcp, acceptor), router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener.tcp, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
