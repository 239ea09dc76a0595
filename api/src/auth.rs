//! Bearer-token authentication and the role check each route declares (in
//! [`crate::routes::api_routes`]). A refusal is logged with the path and the reason —
//! never the token — and answered 401 (no, unknown, expired or revoked token) or 403
//! (a role below the route's).

use crate::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use sqlvigil_model::query::Instances;
use sqlvigil_store::{Role, TokenInfo, Verdict};

/// Who called: the verified token (its id, name, role and scope; never its secret).
#[derive(Debug, Clone)]
pub struct Caller(pub TokenInfo);

impl Caller {
    /// Every instance the token may read.
    pub fn scope(&self) -> Instances {
        self.0
            .instances
            .clone()
            .map_or(Instances::All, Instances::Only)
    }

    /// What a request for `asked` (its `instance` parameter; all if absent) may read:
    /// nothing at all when it asks for an instance outside the scope.
    pub fn instances(&self, asked: Option<String>) -> Instances {
        Instances::from_option(asked).within(&self.scope())
    }

    /// Whether the token may see data of `instance`.
    pub fn sees(&self, instance: &str) -> bool {
        self.0
            .instances
            .as_ref()
            .is_none_or(|l| l.iter().any(|i| i == instance))
    }
}

/// Require a valid token of at least role `min`; the caller (and its role) is attached
/// to the request.
pub async fn require(
    State((app, min)): State<(AppState, Role)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let what = format!("{} {}", req.method(), req.uri().path());
    let caller = match authenticate(&app, req.headers()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(request = %what, "authentication refused: {e}");
            return Err(e);
        }
    };
    if caller.role < min {
        let e = ApiError::Forbidden(format!(
            "token `{}` has role {}; {what} needs {} or above",
            caller.name,
            caller.role.as_str(),
            min.as_str()
        ));
        tracing::warn!(request = %what, token_id = %caller.id, "authorization refused: {e}");
        return Err(e);
    }
    app.guard.admit(&caller.id)?;
    req.extensions_mut().insert(caller.role);
    req.extensions_mut().insert(Caller(caller));
    Ok(next.run(req).await)
}

/// The token of `headers`' `Authorization: Bearer …`, verified.
pub(crate) async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<TokenInfo, ApiError> {
    let header = headers.get(header::AUTHORIZATION).ok_or_else(|| {
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
    let owned = token.to_string();
    let verdict = app.on_state(move |s| s.verify_token(&owned)).await?;
    match verdict {
        Verdict::Valid(info) => Ok(info),
        Verdict::Unknown => Err(ApiError::Unauthorized("unknown token".into())),
        Verdict::Expired(at) => Err(ApiError::Unauthorized(format!(
            "token expired at {}",
            at.to_rfc3339()
        ))),
        Verdict::Revoked(at) => Err(ApiError::Unauthorized(format!(
            "token revoked at {}",
            at.to_rfc3339()
        ))),
    }
}
