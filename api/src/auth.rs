//! Bearer-token authentication and role checks.

use crate::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sqlvigil_store::Role;

/// Require a valid token with at least `min` role; the role is attached to the request.
pub async fn require(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let min = Role::Viewer;
    let header = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("Authorization header must be `Bearer <token>`".into())
        })?;
    let state = app.state.clone();
    let owned = token.to_string();
    let role = tokio::task::spawn_blocking(move || state.verify_token(&owned))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
        .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
    if role < min {
        return Err(ApiError::Forbidden(format!(
            "role {} may not do this",
            role.as_str()
        )));
    }
    req.extensions_mut().insert(role);
    Ok(next.run(req).await)
}

/// `Forbidden` unless `role` is at least `min`, naming what was refused.
pub(crate) fn at_least(role: Role, min: Role, what: &str) -> Result<(), ApiError> {
    if role < min {
        return Err(ApiError::Forbidden(format!(
            "role {} may not {what}; {} or above needed",
            role.as_str(),
            min.as_str()
        )));
    }
    Ok(())
}
