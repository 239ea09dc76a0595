//! `/api/v1/tokens` (admin): list tokens (never their secrets), create one (the secret
//! is in the answer only) and revoke one. Each change is logged with the admin's token
//! name.

use crate::auth::Caller;
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlvigil_store::{Role, TokenSpec};

/// `POST /api/v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenRequest {
    name: String,
    role: String,
    /// How long the token is valid (`30d`, `12h`); forever if absent.
    expires_in: Option<String>,
    /// Only these instances (tenant isolation); every instance if absent.
    instances: Option<Vec<String>>,
}

pub(crate) async fn list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens = app.on_state(|s| s.tokens()).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

pub(crate) async fn create(
    State(app): State<AppState>,
    Extension(Caller(by)): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewTokenRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"name\", \"role\", \"expires_in\"?, \"instances\"?}}: {e}"
        ))
    })?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`role` must be viewer, operator or admin, got `{}`",
            req.role
        ))
    })?;
    let spec = TokenSpec {
        expires_at: req.expires_in.as_deref().map(expiry).transpose()?,
        instances: req.instances,
        ..TokenSpec::new(role, &req.name)
    };
    if let Some(problem) = spec.problem() {
        return Err(ApiError::BadRequest(problem));
    }
    let made = app.on_state(move |s| s.create_token(&spec)).await?;
    tracing::info!(id = %made.info.id, name = %made.info.name, role = role.as_str(), by = %by.name, "API token created");
    Ok((StatusCode::CREATED, Json(json!(made))))
}

/// The time a token given `expires_in` (a duration such as `30d`) runs out.
pub(crate) fn expiry(expires_in: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    humantime::parse_duration(expires_in)
        .ok()
        .filter(|d| !d.is_zero())
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`expires_in` must be a duration such as 30d or 12h, got `{expires_in}`"
            ))
        })
}

pub(crate) async fn revoke(
    State(app): State<AppState>,
    Extension(Caller(by)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let wanted = id.clone();
    let revoked = app
        .on_state(move |s| s.revoke_token(&wanted))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token `{id}`")))?;
    tracing::info!(id = %revoked.id, name = %revoked.name, by = %by.name, "API token revoked");
    Ok(Json(json!({ "token": revoked })))
}
