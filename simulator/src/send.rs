//! Sending the fleet's telemetry to an OTLP endpoint (gRPC or HTTP/protobuf), paced in
//! event time, with retries and per-run statistics.

use crate::fleet::Fleet;
use crate::otlp::count_points;
use crate::SimError;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// Attempts per request before it counts as an error.
const MAX_ATTEMPTS: u32 = 4;
/// First retry delay; doubles each attempt.
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest we wait between attempts, even if the server asks for more.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Cap on any single pacing wait, so absurd configurations cannot overflow `Instant`.
const MAX_WAIT_S: f64 = 365.0 * 86_400.0;

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl FromStr for Protocol {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http" => Ok(Protocol::Http),
            other => Err(SimError::UnknownProtocol(other.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        })
    }
}

/// Where and how fast to send.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `http://127.0.0.1:4317` for gRPC; `http://127.0.0.1:4318` for HTTP (the sender
    /// POSTs to `{endpoint}/v1/metrics` and `{endpoint}/v1/logs`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Event-time seconds per wall second (`f64::INFINITY`: as fast as possible), never
    /// letting event time pass the wall clock.
    pub speed: f64,
    /// Stop after this many ticks; `None` runs until shutdown.
    pub ticks: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Ticks whose requests were all attempted.
    pub ticks: u64,
    /// Requests (metrics and logs) the endpoint accepted.
    pub requests: u64,
    /// Metric data points in accepted requests.
    pub points: u64,
    /// Data points the endpoint reported as rejected in `partial_success`.
    pub rejected_points: u64,
    /// Requests that failed after retries.
    pub errors: u64,
}

/// Send the fleet's telemetry, tick by tick, until `cfg.ticks` is reached or `shutdown`
/// resolves. A request that fails is retried with backoff (honouring `Retry-After`) and
/// then counted in [`RunStats::errors`]; bad replies never abort the run. Only an
/// unusable configuration returns an error.
pub async fn run(
    mut fleet: Fleet,
    cfg: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, SimError> {
    if cfg.speed.is_nan() || cfg.speed <= 0.0 {
        return Err(SimError::Config(format!(
            "speed must be > 0, got {}",
            cfg.speed
        )));
    }
    let transport = Transport::new(&cfg)?;
    let pacer = Pacer::start(fleet.event_time_ns(0), cfg.speed);
    let mut stats = RunStats::default();
    tokio::pin!(shutdown);
    let mut tick = 0u64;
    while cfg.ticks.is_none_or(|n| tick < n) {
        let deadline = pacer.deadline(fleet.event_time_ns(tick));
        let work = async {
            tokio::time::sleep_until(deadline.into()).await;
            send_tick(&transport, &mut fleet, tick, &mut stats).await;
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = work => {}
        }
        stats.ticks += 1;
        tick += 1;
    }
    Ok(stats)
}

async fn send_tick(transport: &Transport, fleet: &mut Fleet, tick: u64, stats: &mut RunStats) {
    for req in fleet.metrics(tick) {
        let points = count_points(&req) as u64;
        match with_retries(|| transport.metrics(req.clone())).await {
            Ok(rejected) => {
                stats.requests += 1;
                stats.points += points;
                stats.rejected_points += rejected;
            }
            Err(e) => {
                tracing::warn!(tick, error = %e, "metrics export failed");
                stats.errors += 1;
            }
        }
    }
    for req in fleet.logs(tick) {
        match with_retries(|| transport.logs(req.clone())).await {
            Ok(_) => stats.requests += 1,
            Err(e) => {
                tracing::warn!(tick, error = %e, "logs export failed");
                stats.errors += 1;
            }
        }
    }
}

/// Run `attempt` up to [`MAX_ATTEMPTS`] times while it fails with a retryable error.
async fn with_retries<F, Fut>(mut attempt: F) -> Result<u64, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, Failure>>,
{
    let mut backoff = BASE_BACKOFF;
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(rejected) => return Ok(rejected),
            Err(f) if f.retryable && tries < MAX_ATTEMPTS => {
                let wait = f.retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                tracing::debug!(error = %f, ?wait, "export failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tries += 1;
            }
            Err(f) => return Err(f),
        }
    }
}

/// Why one export attempt failed, and whether trying again could help.
#[derive(Debug)]
struct Failure {
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    fn retryable(message: String) -> Self {
        Failure {
            retryable: true,
            retry_after: None,
            message,
        }
    }

    fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        // The OTLP spec lists these as the retryable gRPC codes.
        let retryable = matches!(
            status.code(),
            Code::Unavailable
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Cancelled
                | Code::OutOfRange
                | Code::DataLoss
        );
        Failure {
            retryable,
            retry_after: None,
            message: format!("gRPC {:?}: {}", status.code(), status.message()),
        }
    }

    fn from_http(status: reqwest::StatusCode, retry_after: Option<Duration>) -> Self {
        // OTLP/HTTP: 429, 502, 503 and 504 are retryable.
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Failure {
            retryable,
            retry_after,
            message: format!("HTTP {status}"),
        }
    }
}

enum Transport {
    /// Clients are made per request from the shared channel (a cheap clone).
    Grpc(Channel),
    Http {
        client: reqwest::Client,
        metrics_url: String,
        logs_url: String,
    },
}

fn with_scheme(endpoint: &str) -> String {
    let trimmed = endpoint.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    }
}

impl Transport {
    fn new(cfg: &RunConfig) -> Result<Self, SimError> {
        let endpoint = with_scheme(&cfg.endpoint);
        match cfg.protocol {
            Protocol::Grpc => {
                // Lazy: the receiver may come up after the simulator; failures surface
                // per request, where they are retried and counted.
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| SimError::Endpoint {
                        endpoint: endpoint.clone(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(REQUEST_TIMEOUT)
                    .connect_lazy();
                Ok(Transport::Grpc(channel))
            }
            Protocol::Http => {
                reqwest::Url::parse(&endpoint).map_err(|e| SimError::Endpoint {
                    endpoint: endpoint.clone(),
                    reason: e.to_string(),
                })?;
                let client = reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .map_err(|e| SimError::Endpoint {
                        endpoint: endpoint.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Transport::Http {
                    client,
                    metrics_url: format!("{endpoint}/v1/metrics"),
                    logs_url: format!("{endpoint}/v1/logs"),
                })
            }
        }
    }

    /// Export metrics; `Ok` carries the rejected data point count.
    async fn metrics(&self, req: ExportMetricsServiceRequest) -> Result<u64, Failure> {
        match self {
            Transport::Grpc(channel) => {
                let reply = MetricsServiceClient::new(channel.clone())
                    .export(req)
                    .await
                    .map_err(|s| Failure::from_status(&s))?;
                Ok(rejected(
                    reply
                        .into_inner()
                        .partial_success
                        .map(|p| p.rejected_data_points),
                ))
            }
            Transport::Http {
                client,
                metrics_url,
                ..
            } => {
                let body = post(client, metrics_url, req.encode_to_vec()).await?;
                let reply =
                    ExportMetricsServiceResponse::decode(body.as_slice()).unwrap_or_default();
                Ok(rejected(
                    reply.partial_success.map(|p| p.rejected_data_points),
                ))
            }
        }
    }

    /// Export logs; `Ok` carries the rejected record count.
    async fn logs(&self, req: ExportLogsServiceRequest) -> Result<u64, Failure> {
        match self {
            Transport::Grpc(channel) => {
                let reply = LogsServiceClient::new(channel.clone())
                    .export(req)
                    .await
                    .map_err(|s| Failure::from_status(&s))?;
                Ok(rejected(
                    reply
                        .into_inner()
                        .partial_success
                        .map(|p| p.rejected_log_records),
                ))
            }
            Transport::Http {
                client, logs_url, ..
            } => {
                let body = post(client, logs_url, req.encode_to_vec()).await?;
                let reply = ExportLogsServiceResponse::decode(body.as_slice()).unwrap_or_default();
                Ok(rejected(
                    reply.partial_success.map(|p| p.rejected_log_records),
                ))
            }
        }
    }
}

/// A rejected count from a reply; negative or missing counts mean none.
fn rejected(count: Option<i64>) -> u64 {
    count.map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// POST a protobuf body; a 2xx reply's body comes back (an undecodable body is treated
/// as "all accepted" by the caller).
async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let reply = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::retryable(format!("POST {url}: {e}")))?;
    let status = reply.status();
    if !status.is_success() {
        return Err(Failure::from_http(status, retry_after(reply.headers())));
    }
    let bytes = reply
        .bytes()
        .await
        .map_err(|e| Failure::retryable(format!("reading reply from {url}: {e}")))?;
    Ok(bytes.to_vec())
}

/// `Retry-After` in delay-seconds form (the HTTP-date form is rare from OTLP receivers).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Maps event time to wall-clock deadlines: event time advances `speed` times faster
/// than wall time from the first tick, but a tick is never sent before the wall clock
/// reaches its event time (so after catching up, pacing is 1x).
#[derive(Debug, Clone, Copy)]
struct Pacer {
    wall0: Instant,
    now0_ns: i64,
    first_event_ns: i64,
    speed: f64,
}

impl Pacer {
    fn start(first_event_ns: i64, speed: f64) -> Self {
        let now0_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Pacer {
            wall0: Instant::now(),
            now0_ns,
            first_event_ns,
            speed,
        }
    }

    fn deadline(&self, event_ns: i64) -> Instant {
        let secs = deadline_offset_s(event_ns, self.first_event_ns, self.now0_ns, self.speed);
        self.wall0 + Duration::from_secs_f64(secs)
    }
}

/// Seconds after the run started at which the tick with event time `event_ns` is due.
fn deadline_offset_s(event_ns: i64, first_event_ns: i64, now0_ns: i64, speed: f64) -> f64 {
    let paced = if speed.is_infinite() {
        0.0
    } else {
        (event_ns - first_event_ns) as f64 / 1e9 / speed
    };
    let real_time = (event_ns as f64 - now0_ns as f64) / 1e9;
    paced.max(real_time).clamp(0.0, MAX_WAIT_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn paces_at_speed_then_real_time() {
        let now = 1_000_000 * S;
        // Start an hour in the past at 60x: the first hour replays in a minute…
        let first = now - 3_600 * S;
        assert_eq!(deadline_offset_s(first, first, now, 60.0), 0.0);
        assert!((deadline_offset_s(first + 600 * S, first, now, 60.0) - 10.0).abs() < 1e-9);
        // …and past the catch-up point event time never runs ahead of the wall clock.
        let after = now + 120 * S;
        assert!((deadline_offset_s(after, first, now, 60.0) - 120.0).abs() < 1e-9);
        assert!((deadline_offset_s(after, first, now, f64::INFINITY) - 120.0).abs() < 1e-9);
        assert_eq!(deadline_offset_s(now - S, first, now, f64::INFINITY), 0.0);
    }

    #[test]
    fn parses_protocols() {
        assert_eq!("grpc".parse::<Protocol>().ok(), Some(Protocol::Grpc));
        assert_eq!("HTTP".parse::<Protocol>().ok(), Some(Protocol::Http));
        let err = "kafka".parse::<Protocol>().expect_err("unknown");
        assert!(err.to_string().contains("kafka"));
    }

    #[test]
    fn endpoint_gets_a_scheme() {
        assert_eq!(with_scheme("127.0.0.1:4317/"), "http://127.0.0.1:4317");
        assert_eq!(with_scheme("https://x:4318"), "https://x:4318");
    }
}
