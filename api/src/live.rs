//! `/api/v1/live…`: the live monitor's DMV snapshots.
//!
//! - `GET /api/v1/live` (viewer): each monitored instance, reachable or not, its last
//!   snapshot and each collector's runs and last error (SQL Server number and message);
//! - `GET /api/v1/live/{instance}` (viewer): the newest snapshot (`?history=N`: the
//!   newest N recorded);
//! - `GET /api/v1/live/{instance}/{sessions|waits|blocking|top-queries|query-store|tempdb|log-space|memory-grants|io}`
//!   (operator): a snapshot taken now of that collector, at most one per instance per
//!   `monitor.adhoc_min_interval` (429 with `Retry-After` otherwise); top queries by
//!   `?by=cpu|duration|reads|executions` (default cpu).

use crate::auth::Caller;
use crate::params::Params;
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};
use sqlvigil_core::Live;
use sqlvigil_model::live::{CollectorKind, LiveSnapshot};
use sqlvigil_model::TopQuery;
use std::collections::HashMap;
use std::sync::Arc;

const KINDS: &str =
    "sessions, waits, blocking, top-queries, query-store, tempdb, log-space, memory-grants, io";

fn monitor(app: &AppState) -> Result<&Arc<dyn Live>, ApiError> {
    app.live.as_ref().ok_or_else(|| {
        ApiError::NotImplemented(
            "the live monitor is not configured: list SQL Server instances under monitor.instances"
                .into(),
        )
    })
}

/// `instance` is monitored and in the caller's scope (outside it, it is "not
/// monitored" like any unknown name: a scope never learns what else exists).
fn known(live: &dyn Live, caller: &Caller, instance: &str) -> Result<(), ApiError> {
    if caller.sees(instance) && live.status().iter().any(|s| s.instance == instance) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "instance `{instance}` is not monitored (not in monitor.instances)"
        )))
    }
}

pub(crate) async fn instances(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let live = monitor(&app)?;
    let mut list = live.status();
    list.retain(|s| caller.sees(&s.instance));
    Ok(Json(json!({ "instances": list })))
}

pub(crate) async fn latest(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(instance): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let live = monitor(&app)?;
    known(live.as_ref(), &caller, &instance)?;
    let p = Params::new(q, &["history"])?;
    if let Some(n) = p.usize("history", 1000)? {
        let name = instance.clone();
        let history = app.on_state(move |s| s.snapshots(&name, n)).await?;
        return Ok(Json(json!({ "instance": instance, "snapshots": history })));
    }
    let snapshot = live.latest(&instance).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no snapshot of `{instance}` yet (see /api/v1/live for its status)"
        ))
    })?;
    Ok(Json(json!({ "snapshot": snapshot })))
}

/// Top queries heaviest first by `by`.
fn ranked(queries: &[TopQuery], by: &str) -> Result<Vec<TopQuery>, ApiError> {
    let measure: fn(&TopQuery) -> f64 = match by {
        "cpu" => |q| q.total_cpu_ms,
        "duration" => |q| q.total_elapsed_ms,
        "reads" => |q| q.total_logical_reads,
        "executions" => |q| q.executions,
        other => {
            return Err(ApiError::BadRequest(format!(
                "`by` must be cpu, duration, reads or executions, got `{other}`"
            )))
        }
    };
    let mut out = queries.to_vec();
    out.sort_by(|a, b| measure(b).total_cmp(&measure(a)));
    Ok(out)
}

/// What of a snapshot a collector's endpoint answers.
fn part(snap: &LiveSnapshot, kind: &str, by: &str) -> Result<Value, ApiError> {
    Ok(match kind {
        "blocking" => json!(snap.blocking),
        "sessions" => json!({ "sessions": snap.sessions, "blocking": snap.blocking }),
        "waits" => json!(snap.waits),
        "top-queries" => json!(ranked(&snap.top_queries, by)?),
        "query-store" => json!(ranked(&snap.query_store, by)?),
        "tempdb" => json!(snap.tempdb),
        "log-space" => json!(snap.log_space),
        "memory-grants" => json!(snap.memory_grants),
        _ => json!(snap.file_io),
    })
}

pub(crate) async fn adhoc(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((instance, kind)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let live = monitor(&app)?;
    known(live.as_ref(), &caller, &instance)?;
    let by = Params::new(q, &["by"])?
        .string("by")
        .unwrap_or_else(|| "cpu".into());
    ranked(&[], &by)?;
    let collector = CollectorKind::parse(&kind).ok_or_else(|| {
        ApiError::NotFound(format!("no live collector `{kind}`; one of: {KINDS}"))
    })?;
    let snap = live.snapshot(&instance, Some(collector), "ad-hoc").await?;
    let mut body = json!({
        "instance": snap.instance,
        "collected_at": snap.collected_at,
        "interval_ms": snap.interval_ms,
        "counter_reset": snap.counter_reset,
        "server": snap.server,
        "errors": snap.errors,
    });
    body[kind.as_str()] = part(&snap, &kind, &by)?;
    Ok(Json(body))
}
