//! What guards the API besides authentication (`api:` settings): per-token rate limits
//! (a GCRA bucket per token id, `governor`: 429 with `Retry-After`), a deadline per
//! request (503 naming `api.request_timeout`; not the live stream), the body size (413),
//! compression (gzip or brotli, never the live stream) and CORS for the configured
//! origins (tower-http).

use crate::{ApiConfig, ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The API's settings and the per-token buckets they made.
pub struct Guard {
    pub config: ApiConfig,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl Guard {
    pub fn new(config: &ApiConfig) -> Arc<Guard> {
        let limiter = NonZeroU32::new(config.rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Guard {
            config: config.clone(),
            limiter,
        })
    }

    /// Let one more request of token `id` through, or say when it may come back.
    pub(crate) fn admit(&self, id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&id.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                message: format!(
                    "token `{id}` is over api.rate_per_second ({} a second, bursts of {})",
                    self.config.rate_per_second, self.config.rate_burst
                ),
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })?;
        // Keys of tokens no longer calling would pile up.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        Ok(())
    }

    /// The CORS layer, when origins are configured.
    pub(crate) fn cors(&self) -> Option<CorsLayer> {
        let origins = &self.config.cors_origins;
        if origins.is_empty() {
            return None;
        }
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static("last-event-id"),
                    header::HeaderName::from_static("x-request-id"),
                ])
                .expose_headers([
                    header::HeaderName::from_static("x-request-id"),
                    header::RETRY_AFTER,
                ]),
        )
    }
}

/// Refuse a declared body over `api.max_body_bytes` before reading it (a body without a
/// length is cut at the limit by axum's own limit, also 413).
pub(crate) async fn body_limit(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let max = app.guard.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is {} bytes; api.max_body_bytes allows {max}",
            declared.unwrap_or_default()
        )));
    }
    Ok(next.run(req).await)
}

/// Answer 503 when the handler takes longer than `api.request_timeout`.
pub(crate) async fn deadline(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let limit = app.guard.config.request_timeout;
    let what = format!("{} {}", req.method(), req.uri().path());
    tokio::time::timeout(limit, next.run(req))
        .await
        .map_err(|_| {
            tracing::warn!(request = %what, "request timed out after {limit:?}");
            ApiError::Unavailable(format!(
                "{what} took longer than api.request_timeout ({}); narrow the range or retry",
                humantime::format_duration(limit)
            ))
        })
}
