//! People acting on anomalies (operator): `POST /api/v1/anomalies/{id}/acknowledge`,
//! `/resolve` (both with an optional `note`) and `/silence` (`duration`, such as `2h`,
//! and a `reason`, both required). Each action is audited with the token's name and id
//! (listed in `GET /api/v1/anomalies/{id}` as `actions`), announced on the live stream,
//! and laid over the anomaly wherever it is read ([`overlay`]). Acknowledging or
//! resolving what is resolved is 409.

use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlvigil_model::{ActionKind, Anomaly, AnomalyAction, Handled};

/// The longest silence: past it, fix the rule instead.
const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    note: Option<String>,
    /// Silence only: how long (`30m`, `2h`, up to `30d`).
    duration: Option<String>,
    /// Silence only: why.
    reason: Option<String>,
}

/// The anomaly `id` if the caller may see it: one outside the scope is as unknown as
/// one that does not exist.
pub(crate) async fn visible_anomaly(
    app: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<sqlvigil_model::Anomaly, ApiError> {
    app.reader
        .anomaly(id)
        .await?
        .filter(|a| caller.sees(&a.series.instance))
        .ok_or_else(|| ApiError::NotFound(format!("no anomaly `{id}`")))
}

/// Lay what people did over `list` (both backends: the handling lives in the state
/// store, the anomalies wherever the backend keeps them).
pub(crate) async fn overlay(app: &AppState, list: &mut [Anomaly]) -> Result<(), ApiError> {
    let ids: Vec<String> = list.iter().map(|a| a.id.clone()).collect();
    let found = app
        .on_state(move |s| {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            s.handling(&refs)
        })
        .await?;
    for a in list.iter_mut() {
        if let Some(h) = found.get(&a.id) {
            h.apply(a);
        }
    }
    Ok(())
}

fn parse_body(kind: ActionKind, body: &[u8]) -> Result<ActionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let shape = match kind {
            ActionKind::Silence => "{\"duration\", \"reason\", \"note\"?}",
            _ => "{\"note\"?}",
        };
        ApiError::BadRequest(format!("body of {} must be {shape}: {e}", kind.as_str()))
    })
}

/// The end of a silence asked for `duration`.
fn silence_until(duration: Option<&str>) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let text = duration
        .ok_or_else(|| ApiError::BadRequest("a silence needs a `duration` such as 2h".into()))?;
    humantime::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_SILENCE)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| chrono::Utc::now() + d)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`duration` must be a duration from 1s to 30d such as 2h, got `{text}`"
            ))
        })
}

async fn act(
    app: AppState,
    caller: Caller,
    id: String,
    kind: ActionKind,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req = parse_body(kind, &body)?;
    let until = match kind {
        ActionKind::Silence => {
            if req.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(ApiError::BadRequest("a silence needs a `reason`".into()));
            }
            Some(silence_until(req.duration.as_deref())?)
        }
        _ if req.duration.is_some() || req.reason.is_some() => {
            return Err(ApiError::BadRequest(format!(
                "`duration` and `reason` are for silence, not {}",
                kind.as_str()
            )))
        }
        _ => None,
    };
    let mut anomaly = visible_anomaly(&app, &caller, &id).await?;
    overlay(&app, std::slice::from_mut(&mut anomaly)).await?;
    let action = AnomalyAction {
        anomaly_id: id.clone(),
        action: kind,
        handled: Handled {
            by: caller.0.name.clone(),
            token_id: caller.0.id.clone(),
            at: chrono::Utc::now(),
            note: req.note.or(req.reason),
        },
        until,
    };
    let (done, current) = (action.clone(), anomaly.clone());
    let handling = app.on_state(move |s| s.act(&current, &done)).await?;
    tracing::info!(
        anomaly = %id, action = kind.as_str(), by = %caller.0.name, token_id = %caller.0.id,
        "anomaly {}d by hand", kind.as_str().trim_end_matches('e')
    );
    handling.apply(&mut anomaly);
    Ok(Json(json!({ "anomaly": anomaly, "action": action })))
}

pub(crate) async fn acknowledge(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    act(app, caller, id, ActionKind::Acknowledge, body).await
}

pub(crate) async fn resolve(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    act(app, caller, id, ActionKind::Resolve, body).await
}

pub(crate) async fn silence(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    act(app, caller, id, ActionKind::Silence, body).await
}
