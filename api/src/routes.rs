//! Routes and handlers.

use crate::auth::Caller;
use crate::params::Params;
use crate::{auth, guard, ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::http::StatusCode;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{middleware, Extension, Json, Router};
use serde_json::{json, Value};
use sqlvigil_analytics::prompt::Subject;
use sqlvigil_model::query::{
    AnomalyCursor, AnomalyFilter, GroupBy, Instances, MetricFilter, PointCursor, Range, Resolution,
};
use sqlvigil_model::Sample;
use sqlvigil_store::Role;
use std::collections::HashMap;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

const MAX_POINTS: usize = 100_000;
const DEFAULT_POINTS: usize = 10_000;
/// Anomalies per page when `limit` is not given.
const DEFAULT_ANOMALIES: usize = 1000;

/// Every route under `/api/v1`: its method, path, the least role it needs and its
/// handler — the one place a route's role is declared.
pub(crate) fn api_routes() -> Vec<(Method, &'static str, Role, MethodRouter<AppState>)> {
    use crate::{handling, live};
    use Role::{Admin, Operator, Viewer};
    vec![
        (Method::GET, "/whoami", Viewer, get(whoami)),
        (Method::GET, "/series", Viewer, get(series)),
        (Method::GET, "/baselines", Viewer, get(baselines)),
        (Method::GET, "/metrics", Viewer, get(metrics)),
        (Method::GET, "/aggregates", Viewer, get(aggregates)),
        (Method::GET, "/anomalies", Viewer, get(anomalies)),
        (Method::GET, "/anomalies/{id}", Viewer, get(anomaly)),
        (
            Method::GET,
            "/anomalies/{id}/root-cause",
            Viewer,
            get(root_cause),
        ),
        (
            Method::POST,
            "/anomalies/{id}/acknowledge",
            Operator,
            post(handling::acknowledge),
        ),
        (
            Method::POST,
            "/anomalies/{id}/resolve",
            Operator,
            post(handling::resolve),
        ),
        (
            Method::POST,
            "/anomalies/{id}/silence",
            Operator,
            post(handling::silence),
        ),
        (Method::GET, "/insights", Viewer, get(insights)),
        (Method::GET, "/stream", Viewer, get(crate::stream::stream)),
        (Method::POST, "/insights", Operator, post(create_insight)),
        (Method::GET, "/insights/failures", Viewer, get(failures)),
        (Method::GET, "/waits", Viewer, get(waits)),
        (Method::GET, "/top-queries", Viewer, get(top_queries)),
        (Method::GET, "/io", Viewer, get(io)),
        (Method::GET, "/blocking", Viewer, get(blocking)),
        (Method::GET, "/coverage", Viewer, get(coverage)),
        (Method::GET, "/rules", Viewer, get(rules)),
        (Method::GET, "/config", Admin, get(config)),
        (Method::GET, "/live", Viewer, get(live::instances)),
        (Method::GET, "/live/{instance}", Viewer, get(live::latest)),
        (
            Method::GET,
            "/live/{instance}/{kind}",
            Operator,
            get(live::adhoc),
        ),
        (Method::GET, "/tokens", Admin, get(crate::tokens::list)),
        (Method::POST, "/tokens", Admin, post(crate::tokens::create)),
        (
            Method::DELETE,
            "/tokens/{id}",
            Admin,
            delete(crate::tokens::revoke),
        ),
    ]
}

/// Method, path (under `/api/v1`) and least role of every protected route.
pub fn route_roles() -> Vec<(Method, &'static str, Role)> {
    api_routes()
        .into_iter()
        .map(|(m, p, r, _)| (m, p, r))
        .collect()
}

pub fn router(app: AppState) -> Router {
    let mut protected = Router::new();
    for (_, path, role, handler) in api_routes() {
        // Innermost first: the deadline applies to the handler, after authentication.
        let handler = if path == "/stream" {
            handler
        } else {
            handler.route_layer(middleware::from_fn_with_state(app.clone(), guard::deadline))
        };
        let checked = handler.route_layer(middleware::from_fn_with_state(
            (app.clone(), role),
            auth::require,
        ));
        protected = protected.route(path, checked);
    }
    let max_body = app.guard.config.max_body_bytes;
    let cors = app.guard.cors();
    // Always layered, so the answer type is one; off by `api.compression: false`. The
    // default predicate never compresses the live stream or tiny answers.
    use tower_http::compression::Predicate as _;
    let enabled = app.guard.config.compression;
    let compression = tower_http::compression::CompressionLayer::new().compress_when(
        tower_http::compression::predicate::DefaultPredicate::new().and(
            move |_: StatusCode,
                  _: axum::http::Version,
                  _: &HeaderMap,
                  _: &axum::http::Extensions| enabled,
        ),
    );
    let router = Router::new()
        .route("/", get(crate::console::index))
        .route("/console/{*path}", get(crate::console::asset))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .nest("/api/v1", protected)
        .fallback(|| async {
            ApiError::NotFound(
                "no such endpoint; see /api/v1/{series,metrics,aggregates,baselines,anomalies,insights,stream,waits,top-queries,io,blocking,coverage,rules,live,tokens,whoami}".into(),
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), guard::body_limit))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(app)
        .layer(compression)
        .layer(tower::util::option_layer(cors));
    // Outermost first: an id for every request (the client's `x-request-id` if it
    // sent one), echoed in the response, in its log lines and in its errors.
    router.layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(middleware::from_fn(crate::error::request_scope)),
    )
}

fn ok_or_unavailable(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Liveness: 503 while a part is stopped, failing over and over, or stalled.
async fn health(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let report = app.health.report();
    let status = if report.live { "ok" } else { "unhealthy" };
    (
        ok_or_unavailable(report.live),
        Json(json!({
            "status": status,
            "problems": if report.live { Vec::new() } else { report.problems },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": app.started.elapsed().as_secs(),
        })),
    )
}

/// Readiness: 503 while any part is not running, stalled or over its backlog limit;
/// every part's state, backlog and progress either way.
async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let report = app.health.report();
    let status = if report.ready { "ready" } else { "not ready" };
    (
        ok_or_unavailable(report.ready),
        Json(json!({
            "status": status,
            "live": report.live,
            "problems": report.problems,
            "components": report.components,
        })),
    )
}

/// Open unless `api.metrics_require_token`: then any valid token may read it.
async fn prometheus(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if app.metrics_require_token {
        if let Err(e) = auth::authenticate(&app, &headers).await {
            tracing::warn!(request = "GET /metrics", "authentication refused: {e}");
            return e.into_response();
        }
    }
    let mut text = app.stats.render();
    text.push_str(&app.health.render());
    if let Some(live) = &app.live {
        text.push_str(&sqlvigil_core::live::render(&live.status()));
    }
    match app.reader.storage().await {
        Ok(tables) => text.push_str(&sqlvigil_core::reader::render_storage(&tables)),
        Err(e) => tracing::warn!("/metrics: store statistics unavailable: {e}"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The points a request asks for (`series`, `metric`, `instance`, `from`, `to`), within
/// the caller's scope.
fn metric_filter(p: &Params, caller: &Caller) -> Result<MetricFilter, ApiError> {
    let f = MetricFilter {
        series_id: p.series_id("series")?,
        metric: p.string("metric"),
        instances: caller.instances(p.string("instance")),
        from_ns: p.time_ns("from")?,
        to_ns: p.time_ns("to")?,
        ..Default::default()
    };
    if let (Some(from), Some(to)) = (f.from_ns, f.to_ns) {
        if from > to {
            return Err(ApiError::BadRequest("`from` is after `to`".into()));
        }
    }
    Ok(f)
}

/// The caller: its token's name, role and instance scope (the console shows what the
/// role may do).
async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    let t = &caller.0;
    Json(json!({
        "id": t.id,
        "name": t.name,
        "role": t.role.as_str(),
        "instances": t.instances,
        "expires_at": t.expires_at,
    }))
}

/// What the deviation rules expect of a series over a range: per minute, the expected
/// value and the band outside which a point breaches (`sqlvigil_model::band`, written by
/// the operators as they judge). Empty for a series no deviation rule judges.
async fn baselines(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    use sqlvigil_model::band;
    let p = Params::new(q, &["series", "from", "to", "limit"])?;
    let mut f = metric_filter(&p, &caller)?;
    let id = f.series_id.take().ok_or_else(|| {
        ApiError::BadRequest("`series` (an id from /api/v1/series) is required".into())
    })?;
    let limit = p.usize("limit", MAX_POINTS)?.unwrap_or(DEFAULT_POINTS);
    let listed = app
        .reader
        .series(&MetricFilter {
            series_id: Some(id),
            instances: f.instances.clone(),
            ..Default::default()
        })
        .await?;
    let info = listed
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no series `{id:016x}`")))?;
    let hex = format!("{id:016x}");
    // time → [expected, low, high], and the rules that wrote them.
    let mut rows: std::collections::BTreeMap<i64, [Option<f64>; 3]> = Default::default();
    let mut rules = std::collections::BTreeSet::new();
    for (i, metric) in band::METRICS.iter().enumerate() {
        // The band's series of this series, from the series list (no points read when
        // no deviation rule judges it).
        let listed = app
            .reader
            .series(&MetricFilter {
                metric: Some(metric.to_string()),
                instances: Instances::one(info.instance.clone()),
                ..f.clone()
            })
            .await?;
        for band_series in listed
            .iter()
            .filter(|b| b.attributes.get(band::OF) == Some(&hex))
        {
            rules.extend(band_series.attributes.get(band::RULE).cloned());
            let read = MetricFilter {
                series_id: u64::from_str_radix(&band_series.id, 16).ok(),
                limit: Some(limit),
                ..f.clone()
            };
            for s in app.reader.metrics(&read).await? {
                rows.entry(s.time_ns).or_default()[i] = Some(s.value);
            }
        }
    }
    let points: Vec<Value> = rows
        .into_iter()
        .map(|(t, [expected, low, high])| {
            json!({
                "time": sqlvigil_model::ns_to_datetime(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "expected": expected, "low": low, "high": high,
            })
        })
        .collect();
    Ok(Json(json!({
        "series_id": hex,
        "metric": info.metric,
        "instance": info.instance,
        "rules": rules,
        "points": points,
    })))
}

async fn series(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["metric", "instance", "from", "to"])?;
    let f = metric_filter(&p, &caller)?;
    let mut list = app.reader.series(&f).await?;
    // The deviation rules' bands are read through /baselines; listed only when asked
    // for by name.
    if f.metric.is_none() {
        list.retain(|s| !sqlvigil_model::band::METRICS.contains(&s.metric.as_str()));
    }
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
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(
        q,
        &[
            "series", "metric", "instance", "from", "to", "limit", "order", "cursor",
        ],
    )?;
    let mut f = metric_filter(&p, &caller)?;
    if f.series_id.is_none() && f.metric.is_none() {
        return Err(ApiError::BadRequest(
            "give `series` (an id from /api/v1/series) or `metric`".into(),
        ));
    }
    let limit = p.usize("limit", MAX_POINTS)?.unwrap_or(DEFAULT_POINTS);
    let order = p.one_of("order", &["oldest", "newest"])?;
    f.newest_first = order.as_deref() == Some("newest");
    f.after = p.cursor("cursor", PointCursor::decode)?;
    // One more than asked: whether there is more is known, never guessed.
    f.limit = Some(limit + 1);
    let (mut points, served) = app.reader.metrics_served(&f).await?;
    let truncated = points.len() > limit;
    points.truncate(limit);
    let next_cursor = truncated
        .then(|| points.last().map(|s| PointCursor::after(s).encode()))
        .flatten();
    let in_rollups = |ns: i64| {
        let t = sqlvigil_model::ns_to_datetime(ns);
        served.iter().any(|s| s.from <= t && t < s.to)
    };
    let raw_too = points.iter().any(|p| !in_rollups(p.time_ns));
    Ok(Json(json!({
        "points": points.iter().map(point_json).collect::<Vec<_>>(),
        "limit": limit,
        "order": if f.newest_first { "newest" } else { "oldest" },
        "truncated": truncated,
        "next_cursor": next_cursor,
        "resolution": resolution_of(served.iter().map(|s| s.resolution), raw_too),
        "rollups": served,
    })))
}

/// Windowed aggregates of one metric (DataFusion over the store).
async fn aggregates(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(
        q,
        &[
            "metric", "window", "group_by", "series", "instance", "from", "to",
        ],
    )?;
    let f = metric_filter(&p, &caller)?;
    if f.metric.is_none() {
        return Err(ApiError::BadRequest("`metric` is required".into()));
    }
    let window = p.string("window").unwrap_or_else(|| "1m".into());
    let window_ns = humantime::parse_duration(&window)
        .ok()
        .filter(|d| d.as_secs() >= 1 && d.as_secs() <= 31 * 86_400)
        .map(|d| d.as_nanos() as i64)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`window` must be a duration from 1s to 31d such as 1m, got `{window}`"
            ))
        })?;
    let group = p.string("group_by").unwrap_or_else(|| "instance".into());
    let group_by = GroupBy::parse(&group).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`group_by` must be one of {}, got `{group}`",
            GroupBy::NAMES
        ))
    })?;
    let rows = app.reader.aggregates(&f, window_ns, group_by).await?;
    let resolution = resolution_of(rows.iter().map(|r| r.resolution), false);
    Ok(Json(
        json!({ "window": window, "group_by": group, "resolution": resolution, "aggregates": rows }),
    ))
}

/// The resolution an answer was served at: one of `raw`, `1m`, `1h`, or `mixed` when its
/// parts differ (`raw_too`: raw points served beside those parts).
fn resolution_of(parts: impl Iterator<Item = Resolution>, raw_too: bool) -> &'static str {
    let mut seen: std::collections::BTreeSet<Resolution> = parts.collect();
    if raw_too || seen.is_empty() {
        seen.insert(Resolution::Raw);
    }
    match (seen.len(), seen.first()) {
        (1, Some(Resolution::Minute)) => "1m",
        (1, Some(Resolution::Hour)) => "1h",
        (1, _) => "raw",
        _ => "mixed",
    }
}

async fn anomalies(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(
        q,
        &[
            "state", "instance", "rule", "severity", "from", "to", "limit", "cursor",
        ],
    )?;
    let after = p.cursor("cursor", AnomalyCursor::decode)?;
    let limit = p.usize("limit", 10_000)?.unwrap_or(DEFAULT_ANOMALIES);
    let time = |name| {
        p.time_ns(name)
            .map(|t| t.map(sqlvigil_model::ns_to_datetime))
    };
    let f = AnomalyFilter {
        state: p.one_of("state", &["open", "resolved"])?,
        instances: caller.instances(p.string("instance")),
        rule: p.string("rule"),
        severity: p.one_of("severity", &["critical", "warning", "info"])?,
        from: time("from")?,
        to: time("to")?,
        limit: Some(limit),
        after,
    };
    if let (Some(from), Some(to)) = (f.from, f.to) {
        if from > to {
            return Err(ApiError::BadRequest("`from` is after `to`".into()));
        }
    }
    let (mut list, total) =
        tokio::try_join!(app.reader.anomalies(&f), app.reader.count_anomalies(&f))?;
    // A full page may have more after it; the last page has no cursor.
    let next = (list.len() == limit)
        .then(|| list.last().map(|a| AnomalyCursor::after(a).encode()))
        .flatten();
    crate::handling::overlay(&app, &mut list).await?;
    // A backend that keeps its own copy (Elasticsearch) still has a hand-resolved
    // anomaly open: what people did decides.
    if let Some(state) = &f.state {
        list.retain(|a| a.state.as_str() == state);
    }
    Ok(Json(
        json!({ "anomalies": list, "total": total, "next_cursor": next }),
    ))
}

async fn anomaly(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut a = crate::handling::visible_anomaly(&app, &caller, &id).await?;
    crate::handling::overlay(&app, std::slice::from_mut(&mut a)).await?;
    let insights = app.reader.insights(Some(&id), &caller.scope(), 100).await?;
    let actions = app.on_state(move |s| s.actions(&id)).await?;
    Ok(Json(
        json!({ "anomaly": a, "insights": insights, "actions": actions }),
    ))
}

/// The root-cause chain of one anomaly (see `sqlvigil_analytics::root_cause`).
async fn root_cause(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut a = crate::handling::visible_anomaly(&app, &caller, &id).await?;
    crate::handling::overlay(&app, std::slice::from_mut(&mut a)).await?;
    let live = app.live.as_deref();
    let mut chain = sqlvigil_analytics::root_cause::root_cause(
        app.reader.as_ref(),
        live,
        &a,
        chrono::Utc::now(),
    )
    .await?;
    crate::handling::overlay(&app, &mut chain.related).await?;
    let insights = app.reader.insights(Some(&id), &caller.scope(), 5).await?;
    Ok(Json(json!({ "root_cause": chain, "insights": insights })))
}

async fn insights(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["anomaly_id", "instance", "limit"])?;
    let limit = p.usize("limit", 10_000)?.unwrap_or(1000);
    let anomaly_id = p.string("anomaly_id");
    let instances = caller.instances(p.string("instance"));
    let list = app
        .reader
        .insights(anomaly_id.as_deref(), &instances, limit)
        .await?;
    Ok(Json(json!({ "insights": list })))
}

/// Body of `POST /api/v1/insights`: an anomaly id, or an instance and a time range.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InsightRequest {
    anomaly_id: Option<String>,
    instance: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn parse_time(name: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| ApiError::BadRequest(format!("`{name}` must be an RFC 3339 time, got `{v}`")))
}

fn subject_for(app: &AppState, caller: &Caller, req: InsightRequest) -> Result<Subject, ApiError> {
    match req {
        InsightRequest {
            anomaly_id: Some(id),
            instance: None,
            from: None,
            to: None,
        } => {
            let a = app
                .state
                .anomaly(&id)?
                .filter(|a| caller.sees(&a.series.instance))
                .ok_or_else(|| ApiError::NotFound(format!("no anomaly `{id}`")))?;
            Ok(Subject::Anomaly(Box::new(a)))
        }
        InsightRequest {
            anomaly_id: None,
            instance: Some(instance),
            from: Some(from),
            to: Some(to),
        } => {
            if !caller.sees(&instance) {
                return Err(ApiError::Forbidden(format!(
                    "instance `{instance}` is outside this token's scope"
                )));
            }
            let (from, to) = (parse_time("from", &from)?, parse_time("to", &to)?);
            if from >= to {
                return Err(ApiError::BadRequest("`from` must be before `to`".into()));
            }
            Ok(Subject::Window { instance, from, to })
        }
        _ => Err(ApiError::BadRequest(
            "give either `anomaly_id`, or `instance`, `from` and `to`".into(),
        )),
    }
}

async fn create_insight(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: InsightRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not a valid insight request: {e}")))?;
    let subject = subject_for(&app, &caller, req)?;
    let insight = app.analytics.analyze(subject).await?;
    Ok((StatusCode::CREATED, Json(json!({ "insight": insight }))))
}

async fn failures(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["limit"])?;
    let limit = p.usize("limit", 10_000)?.unwrap_or(100);
    let mut list = app.state.failures(limit)?;
    list.retain(|f| caller.sees(&f.instance));
    Ok(Json(json!({ "failures": list })))
}

/// `instance`, `from`, `to` (default: the last hour) and `limit` of a summary request.
fn summary_params(
    q: HashMap<String, String>,
    caller: &Caller,
) -> Result<(Instances, Range, usize), ApiError> {
    let p = Params::new(q, &["instance", "from", "to", "limit"])?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let to = p.time_ns("to")?.unwrap_or(now);
    let from = p.time_ns("from")?.unwrap_or(to - 3_600_000_000_000);
    if from > to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    let limit = p.usize("limit", 10_000)?.unwrap_or(100);
    let range = Range::between(from, to);
    Ok((caller.instances(p.string("instance")), range, limit))
}

fn range_json(r: &Range) -> Value {
    let t = |ns: Option<i64>| ns.map(|n| sqlvigil_model::ns_to_datetime(n).to_rfc3339());
    json!({ "from": t(r.from_ns), "to": t(r.to_ns) })
}

/// Wait time per instance and wait type over a range (Elastic).
async fn waits(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (instances, range, limit) = summary_params(q, &caller)?;
    let mut rows = app.reader.waits(&range, &instances).await?;
    rows.truncate(limit);
    Ok(Json(json!({ "range": range_json(&range), "waits": rows })))
}

/// I/O per database and file over a range (Elastic).
async fn io(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (instances, range, limit) = summary_params(q, &caller)?;
    let mut rows = app.reader.io(&range, &instances).await?;
    rows.truncate(limit);
    Ok(Json(json!({ "range": range_json(&range), "io": rows })))
}

/// Per instance: the receiver mode its metrics give away (Windows perf counters or a
/// direct connection) and the rules that cannot fire for it in that mode, with why.
async fn coverage(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q, &["instance", "from", "to"])?;
    let series = app.reader.series(&metric_filter(&p, &caller)?).await?;
    let mut metrics: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in &series {
        metrics.entry(&s.instance).or_default().push(&s.metric);
    }
    let instances: Vec<Value> = metrics
        .into_iter()
        .map(|(instance, names)| {
            let mode = sqlvigil_model::catalogue::mode_of(names.iter().copied());
            let gaps: Vec<_> = mode
                .map(|m| app.rule_needs.iter().filter_map(|n| n.gap(m)).collect())
                .unwrap_or_default();
            json!({
                "instance": instance,
                "receiver_mode": mode.map(|m| m.as_str()),
                "rules_that_cannot_fire": gaps,
            })
        })
        .collect();
    Ok(Json(json!({ "instances": instances })))
}

/// The config in force (defaults filled in), secrets redacted.
async fn config(State(app): State<AppState>) -> Json<Value> {
    Json(json!({ "config": *app.config }))
}

/// The rules in force, as configured (defaults filled in), with what each reads.
async fn rules(State(app): State<AppState>) -> Json<Value> {
    let needs: HashMap<&str, &sqlvigil_model::catalogue::RuleNeeds> = app
        .rule_needs
        .iter()
        .map(|n| (n.rule.as_str(), n))
        .collect();
    let rules: Vec<Value> = app
        .rules
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default();
            json!({ "rule": r, "reads": needs.get(name).map(|n| &n.metrics) })
        })
        .collect();
    Json(json!({ "rules": rules }))
}

/// Queries by CPU over a range: the receiver's `db.server.top_query` events summed
/// per query (both backends).
async fn top_queries(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (instances, range, limit) = summary_params(q, &caller)?;
    let answer = app.reader.top_queries(&range, &instances, limit).await?;
    Ok(Json(
        json!({ "range": range_json(&range), "top_queries": answer }),
    ))
}

/// Blocked sessions over a range, newest first, and the blocking tree they form
/// (`chains`: head blocker, depth, victims, total wait), from the receiver's
/// `db.server.query_sample` events (both backends).
async fn blocking(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (instances, range, limit) = summary_params(q, &caller)?;
    let answer = app.reader.blocking(&range, &instances, limit).await?;
    let chains = sqlvigil_model::activity::blocking_tree(&answer.rows, &HashMap::new());
    Ok(Json(
        json!({ "range": range_json(&range), "blocking": answer, "chains": chains }),
    ))
}
