//! Routes and handlers.

use crate::params::Params;
use crate::{auth, ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::{json, Value};
use sqlvigil_model::Sample;
use sqlvigil_pipeline::sinks::state::AnomalyFilter;
use sqlvigil_pipeline::sinks::store::MetricFilter;
use std::collections::HashMap;

const MAX_POINTS: usize = 100_000;
const DEFAULT_POINTS: usize = 10_000;
const PAGE: &str = include_str!("../static/index.html");

pub fn router(app: AppState) -> Router {
    let protected = Router::new()
        .route("/series", get(series))
        .route("/metrics", get(metrics))
        .route("/anomalies", get(anomalies))
        .route("/anomalies/{id}", get(anomaly))
        .route("/insights", get(insights))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::require));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .nest("/api/v1", protected)
        .fallback(|| async {
            ApiError::NotFound(
                "no such endpoint; see /api/v1/{series,metrics,anomalies,insights}".into(),
            )
        })
        .with_state(app)
}

async fn health(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
    }))
}

async fn prometheus(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.stats.render(),
    )
        .into_response()
}

fn metric_filter(p: &Params) -> Result<MetricFilter, ApiError> {
    let f = MetricFilter {
        series_id: p.series_id("series")?,
        metric: p.string("metric"),
        instance: p.string("instance"),
        from_ns: p.time_ns("from")?,
        to_ns: p.time_ns("to")?,
        limit: None,
    };
    if let (Some(from), Some(to)) = (f.from_ns, f.to_ns) {
        if from > to {
            return Err(ApiError::BadRequest("`from` is after `to`".into()));
        }
    }
    Ok(f)
}

async fn series(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["metric", "instance", "from", "to"])?;
    let list = app.store.series(&metric_filter(&p)?).await?;
    Ok(Json(json!({ "series": list })))
}

fn point_json(s: &Sample) -> Value {
    json!({
        "series_id": s.key.id_hex(),
        "time": sqlvigil_model::ns_to_datetime(s.time_ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "time_unix_nano": s.time_ns.to_string(),
        "instance": s.key.instance,
        "host": s.key.host,
        "database": s.key.database,
        "metric": s.key.metric,
        "attributes": s.key.attributes,
        "value": s.value,
        "unit": s.unit,
        "kind": s.kind,
        "histogram": s.histogram,
    })
}

async fn metrics(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["series", "metric", "instance", "from", "to", "limit"])?;
    let mut f = metric_filter(&p)?;
    if f.series_id.is_none() && f.metric.is_none() {
        return Err(ApiError::BadRequest(
            "give `series` (an id from /api/v1/series) or `metric`".into(),
        ));
    }
    let limit = p.usize("limit", MAX_POINTS)?.unwrap_or(DEFAULT_POINTS);
    f.limit = Some(limit);
    let points = app.store.query_metrics(&f).await?;
    Ok(Json(
        json!({ "points": points.iter().map(point_json).collect::<Vec<_>>(), "limit": limit }),
    ))
}

async fn anomalies(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["state", "instance", "rule", "limit"])?;
    let f = AnomalyFilter {
        state: p.one_of("state", &["open", "resolved"])?,
        instance: p.string("instance"),
        rule: p.string("rule"),
        limit: p.usize("limit", 10_000)?,
    };
    let state = app.state.clone();
    let list = tokio::task::spawn_blocking(move || state.anomalies(&f))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "anomalies": list })))
}

async fn anomaly(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = app
        .state
        .anomaly(&id)?
        .ok_or_else(|| ApiError::NotFound(format!("no anomaly `{id}`")))?;
    let insights = app.state.insights(Some(&id), 100)?;
    Ok(Json(json!({ "anomaly": a, "insights": insights })))
}

async fn insights(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["anomaly_id", "limit"])?;
    let limit = p.usize("limit", 10_000)?.unwrap_or(1000);
    let anomaly_id = p.string("anomaly_id");
    let state = app.state.clone();
    let list = tokio::task::spawn_blocking(move || state.insights(anomaly_id.as_deref(), limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "insights": list })))
}
