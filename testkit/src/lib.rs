//! Test-only support for sqlvigil's end-to-end tests: [`net`] (free loopback ports,
//! test-server listeners), [`process`] (the `sqlvigil` binary under test), [`python`]
//! (the independent OTLP client), [`kafka`] (a real broker) and [`llm`] (LLM test servers).
//!
//! What it does: starts what a test needs on 127.0.0.1 with free ports and stops it
//! when the test is done.
//! - [`Sqlvigil`]: a running `sqlvigil` binary (`demo` or `run` subcommand) with its
//!   OTLP gRPC, OTLP HTTP and API listeners on free loopback ports, its stdout and
//!   stderr captured to files in the data dir, started only once `GET /health`
//!   answers 200, stopped with SIGINT ([`Sqlvigil::stop`]) or SIGKILL
//!   ([`Sqlvigil::kill9`], and on drop).
//! - [`create_token`]: an API token made with the `sqlvigil token create` CLI.
//! - [`Sqlvigil::get_json`] / [`Sqlvigil::post_json`]: API calls with an optional
//!   bearer token.
//! - [`wait_for`]: bounded polling for eventually-true conditions.
//! - [`python_otlp_client`] / [`run_python_otlp_client`]: the independent OTLP client
//!   `tests/otlp_client.py` (official OpenTelemetry Python SDK, pinned in
//!   `tests/requirements.txt`). A missing Python dependency is an error naming the
//!   pip command to run: end-to-end tests fail loudly, they never skip.
//! - [`free_port`] / [`free_listener`]: a free loopback TCP port (never the same one
//!   twice in a process) / a listener on one, for fake servers.
//! - [`llm`]: [`OllamaServer`] and [`OpenAiServer`], protocol-level LLM test servers that
//!   check each request's shape and answer like the real APIs, with error modes (model
//!   not found, 500, busy with Retry-After, slow, invalid JSON).
//! - The Elasticsearch API test server is its own crate, `sqlvigil-testkit-elastic`
//!   (with a binary), built on [`net`].
//! - [`kafka`]: [`KafkaBroker`], a real Kafka-protocol broker (tansu 0.6, in-memory
//!   storage) on a free loopback port, with pause/resume for outages.
//!
//! Depends on: reqwest, tokio, axum, serde_json, thiserror, chrono, flate2, sha2, and at
//! run time on the `kill` command (signals) and `python3` (OTLP client). It knows the
//! binary only through its command line (`--otlp-grpc-addr`, `--otlp-http-addr`,
//! `--api-addr`, `--data-dir`, `token create --role`), `<data_dir>/admin.token` and
//! `GET /health`.
//!
//! Must not touch: product code. This crate is a dev-dependency only; no product
//! crate may depend on it, and it depends on no product crate.

pub mod kafka;
pub mod llm;
pub mod net;
pub mod process;
pub mod python;
pub mod tls;

pub use kafka::KafkaBroker;
pub use llm::{OllamaServer, OpenAiServer};
pub use net::{free_listener, free_port, loopback_server};
pub use process::{create_token, Sqlvigil, START_TIMEOUT, STDERR_LOG, STDOUT_LOG, STOP_GRACE};
pub use python::{python_otlp_client, run_python_otlp_client};

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Everything that can go wrong in the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sqlvigil exited during start-up ({status}); stderr tail:\n{stderr_tail}")]
    ExitedDuringStart {
        status: ExitStatus,
        stderr_tail: String,
    },
    #[error(
        "sqlvigil did not answer 200 on GET {url} within {waited:?}; last: {last}; stderr tail:\n{stderr_tail}"
    )]
    StartTimeout {
        url: String,
        waited: Duration,
        last: String,
        stderr_tail: String,
    },
    #[error("sqlvigil is not running (already stopped or killed)")]
    NotRunning,
    /// A test dependency (the Kafka broker, …) is missing or would not start.
    #[error("{0}")]
    Missing(String),
    #[error("could not read admin token {path}: {reason}")]
    AdminToken { path: PathBuf, reason: String },
    #[error("`{command}` failed ({status}); stderr:\n{stderr}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("`{command}` printed no token on stdout; stderr:\n{stderr}")]
    NoTokenPrinted { command: String, stderr: String },
    #[error("HTTP {method} {url}: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("the independent OTLP client is unusable: {reason}\n  fix: {fix}")]
    PythonOtlpClient { reason: String, fix: String },
    #[error("otlp_client.py {args:?} printed no JSON summary line; stdout:\n{stdout}\nstderr:\n{stderr}")]
    OtlpClientOutput {
        args: Vec<String>,
        stdout: String,
        stderr: String,
    },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let context = context.into();
    move |source| TestkitError::Io { context, source }
}

/// Polls `f` every 250 ms until it returns `Some`, or until `timeout` has passed
/// (then `None`). `f` is always tried at least once, and once more at the deadline.
pub async fn wait_for<F, Fut, T>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// The directory of the package whose test is running: cargo's `CARGO_MANIFEST_DIR` at
/// run time, else `compiled` (pass `env!("CARGO_MANIFEST_DIR")`). A build cache shared by
/// two checkouts reuses test binaries compiled in the other one, whose compile-time path
/// may no longer exist; the run-time one is always this checkout's.
pub fn package_dir(compiled: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| compiled.into())
}

#[cfg(test)]
mod tests;
