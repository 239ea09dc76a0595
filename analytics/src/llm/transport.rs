//! HTTP transport shared by the LLM clients: one reqwest client, a per-request timeout,
//! a semaphore bounding requests in flight, and retries with backoff.
//!
//! Retry policy (the one place it lives): an attempt is retried, up to `retries` extra
//! times, when its error [`AnalyticsError::is_retryable`] — connection errors, timeouts, 5xx
//! and 429. The delay doubles from [`BACKOFF_START`] with jitter, capped at
//! [`BACKOFF_CAP`]; a `Retry-After: <seconds>` header on 429/503 replaces it (same cap).
//! A concurrency permit is held for one attempt only, never while sleeping.
//!
//! The clients build URLs and bodies and parse replies; error bodies are read here
//! (`{"error": "..."}` from Ollama, `{"error": {"message": ...}}` from OpenAI-compatible
//! servers, `{"message": ...}` from older vLLM).

use super::{AnalyticsError, LlmConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// First retry delay (before jitter).
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest delay between attempts, whatever the server's `Retry-After` says.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How much of an unexpected body an error message quotes.
const QUOTE_CHARS: usize = 300;

/// A successful (2xx) answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub url: String,
    pub body: Vec<u8>,
    /// Time of the successful attempt: request sent to body read (no queueing, no retries).
    pub latency: Duration,
}

impl Reply {
    /// The body as `T`, or [`AnalyticsError::Protocol`] quoting what came instead.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, AnalyticsError> {
        serde_json::from_slice(&self.body).map_err(|e| AnalyticsError::Protocol {
            url: self.url.clone(),
            message: format!("{e}; body: {}", quote(&self.body)),
        })
    }
}

/// One failed attempt, with the server's `Retry-After` when it sent one.
struct Failure {
    error: AnalyticsError,
    retry_after: Option<Duration>,
}

impl From<AnalyticsError> for Failure {
    fn from(error: AnalyticsError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

pub(crate) struct Transport {
    http: reqwest::Client,
    permits: Semaphore,
    timeout: Duration,
    retries: u32,
    bearer: Option<String>,
}

impl Transport {
    /// Checks `cfg` ([`LlmConfig::validate`]) and builds the HTTP client.
    pub(crate) fn new(cfg: &LlmConfig) -> Result<Self, AnalyticsError> {
        cfg.validate().map_err(AnalyticsError::Config)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("sqlvigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AnalyticsError::Config(format!("http client: {}", chain(&e))))?;
        Ok(Transport {
            http,
            permits: Semaphore::new(cfg.max_concurrency),
            timeout: cfg.timeout,
            retries: cfg.retries,
            bearer: cfg.api_key.clone().filter(|k| !k.trim().is_empty()),
        })
    }

    /// `GET url`, with retries.
    pub(crate) async fn get(&self, url: &str) -> Result<Reply, AnalyticsError> {
        self.send(reqwest::Method::GET, url, None).await
    }

    /// `POST url` with `body` as JSON, with retries.
    pub(crate) async fn post_json<B: Serialize>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<Reply, AnalyticsError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| AnalyticsError::Config(format!("cannot encode request for {url}: {e}")))?;
        self.send(reqwest::Method::POST, url, Some(bytes)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, AnalyticsError> {
        let mut attempt: u32 = 0;
        loop {
            let failure = match self.attempt(method.clone(), url, body.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(f) => f,
            };
            if attempt >= self.retries || !failure.error.is_retryable() {
                return Err(failure.error);
            }
            let delay = failure
                .retry_after
                .map_or_else(|| backoff(attempt), |d| d.min(BACKOFF_CAP));
            attempt += 1;
            tracing::warn!(
                error = %failure.error,
                attempt,
                of = self.retries,
                delay_ms = delay.as_millis() as u64,
                "llm request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One request under a concurrency permit and the timeout.
    async fn attempt(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, Failure> {
        let _permit =
            self.permits.acquire().await.map_err(|_| {
                AnalyticsError::Config("llm client concurrency limiter closed".into())
            })?;
        let mut req = self.http.request(method, url);
        if let Some(key) = &self.bearer {
            req = req.bearer_auth(key);
        }
        if let Some(bytes) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let started = Instant::now();
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            let retry_after = retry_after(&resp);
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = match tokio::time::timeout(self.timeout, exchange).await
        {
            Err(_) => return Err(self.timed_out(url).into()),
            Ok(Err(e)) => return Err(self.reqwest_error(url, &e).into()),
            Ok(Ok(answer)) => answer,
        };
        if status.is_success() {
            return Ok(Reply {
                url: url.to_string(),
                body: bytes.to_vec(),
                latency: started.elapsed(),
            });
        }
        Err(Failure {
            error: AnalyticsError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                message: error_message(&bytes, status),
            },
            retry_after,
        })
    }

    fn timed_out(&self, url: &str) -> AnalyticsError {
        AnalyticsError::Timeout {
            url: url.to_string(),
            timeout: self.timeout,
        }
    }

    fn reqwest_error(&self, url: &str, e: &reqwest::Error) -> AnalyticsError {
        if e.is_timeout() {
            self.timed_out(url)
        } else if e.is_builder() {
            AnalyticsError::Config(format!("bad request to {url}: {}", chain(e)))
        } else {
            // reqwest's own message repeats the URL; the causes say what happened.
            let message = match std::error::Error::source(e) {
                Some(cause) => chain(cause),
                None => e.to_string(),
            };
            AnalyticsError::Unreachable {
                url: url.to_string(),
                message,
            }
        }
    }
}

/// `base` + `path` with exactly one `/` between them.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Backoff before retry number `attempt + 1`: 200 ms doubling, capped at 5 s, then a random
/// point in its upper half (so clients that failed together do not retry together).
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    full.mul_f64(0.5 + 0.5 * unit_random())
}

/// A number in [0, 1) that differs between calls (std's per-instance random hash keys).
fn unit_random() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After: <seconds>` on 429/503 (HTTP-date forms are ignored: backoff applies).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let code = resp.status().as_u16();
    if code != 429 && code != 503 {
        return None;
    }
    let value = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The server's own words for an error status, else a quote of the body, else the reason.
fn error_message(body: &[u8], status: reqwest::StatusCode) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let text = match v.get("error") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(obj @ serde_json::Value::Object(_)) => obj
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
                _ => None,
            };
            text.or_else(|| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
        });
    match from_json {
        Some(text) => text,
        None if body.iter().all(u8::is_ascii_whitespace) => {
            status.canonical_reason().unwrap_or("error").to_string()
        }
        None => quote(body),
    }
}

/// At most [`QUOTE_CHARS`] characters of `body`, lossily decoded.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// An error and its sources, `: `-separated (reqwest's own message omits the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        for attempt in 0..8 {
            let full = BACKOFF_START.saturating_mul(1 << attempt).min(BACKOFF_CAP);
            let d = backoff(attempt);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        assert!(backoff(40) <= BACKOFF_CAP);
    }

    #[test]
    fn error_messages_from_each_dialect() {
        let s = reqwest::StatusCode::NOT_FOUND;
        assert_eq!(
            error_message(br#"{"error":"model \"x\" not found"}"#, s),
            "model \"x\" not found"
        );
        assert_eq!(
            error_message(
                br#"{"error":{"message":"no such model","type":"invalid_request_error"}}"#,
                s
            ),
            "no such model"
        );
        assert_eq!(
            error_message(br#"{"object":"error","message":"vllm says no"}"#, s),
            "vllm says no"
        );
        assert_eq!(error_message(b"  ", s), "Not Found");
        assert_eq!(error_message(b"plain text", s), "plain text");
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes(), s).chars().count(),
            QUOTE_CHARS + 1
        );
    }

    #[test]
    fn join_url_has_one_slash() {
        assert_eq!(join_url("http://h:1/", "/api/chat"), "http://h:1/api/chat");
        assert_eq!(join_url("http://h:1", "api/tags"), "http://h:1/api/tags");
    }
}
