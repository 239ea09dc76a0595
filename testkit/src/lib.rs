//! Test-only support for sqlvigil's end-to-end tests.
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
//! - [`elastic`]: [`ElasticServer`], a protocol-level Elasticsearch 8 test server (ILM,
//!   templates, data streams incl. time series, `_bulk` with per-item errors, `_search`
//!   with aggregations) with faults ([`Fault`]: 429/503 with Retry-After, per-item 429s,
//!   slowness) and refused connections.
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

pub mod elastic;
pub mod kafka;
pub mod llm;
pub use elastic::{ElasticServer, Fault};
pub use kafka::KafkaBroker;
pub use llm::{OllamaServer, OpenAiServer};

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long [`Sqlvigil::start`] waits for `GET /health` to answer 200.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Sqlvigil::stop`] waits after SIGINT before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// File in the data dir receiving the binary's stdout.
pub const STDOUT_LOG: &str = "sqlvigil.stdout.log";
/// File in the data dir receiving the binary's stderr.
pub const STDERR_LOG: &str = "sqlvigil.stderr.log";

const POLL_INTERVAL: Duration = Duration::from_millis(250);
const HEALTH_POLL: Duration = Duration::from_millis(100);
const STDERR_TAIL_LINES: usize = 40;
const STDERR_TAIL_BYTES: u64 = 16 * 1024;
const START_ATTEMPTS: usize = 3;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Python modules the OTLP client needs, with the pip package providing each.
const PYTHON_MODULES: [(&str, &str); 3] = [
    ("opentelemetry.sdk", "opentelemetry-sdk"),
    (
        "opentelemetry.exporter.otlp.proto.grpc",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
    (
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry-exporter-otlp-proto-http",
    ),
];

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

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let context = context.into();
    move |source| TestkitError::Io { context, source }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read, drop).
///
/// Panics only if the loopback interface cannot be bound at all, which leaves no
/// test able to run.
pub fn free_port() -> u16 {
    match try_free_ports(1) {
        Ok(ports) => ports[0],
        Err(e) => panic!("free_port: {e}"),
    }
}

/// A free loopback listener and a current-thread runtime to serve it on (the test
/// servers run on their own thread so they work under any test's runtime).
pub(crate) fn loopback_server(
) -> Result<(SocketAddr, tokio::runtime::Runtime, tokio::net::TcpListener), String> {
    let listener = free_listener().map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?
    };
    Ok((addr, runtime, listener))
}

/// A listener on a free 127.0.0.1 port, for fake servers inside a test. Its port is
/// recorded so that [`free_port`] in the same process never hands it out (binding
/// `127.0.0.1:0` directly could get a port just returned by `free_port` and not
/// yet bound by its taker).
pub fn free_listener() -> Result<TcpListener, TestkitError> {
    let mut listeners = bind_unique(1)?;
    listeners
        .pop()
        .ok_or_else(|| no_port("bind_unique(1) returned nothing"))
}

/// `n` distinct free loopback ports (all listeners are held until every port is
/// chosen, so they differ from each other).
fn try_free_ports(n: usize) -> Result<Vec<u16>, TestkitError> {
    let listeners = bind_unique(n)?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(io_err("local_addr of 127.0.0.1:0 listener"))
        })
        .collect()
}

fn no_port(why: &str) -> TestkitError {
    TestkitError::Io {
        context: "finding a free loopback port".to_string(),
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, why.to_string()),
    }
}

/// `n` listeners on 127.0.0.1 whose ports were never handed out before in this
/// process: parallel tests in one test binary would otherwise race for a port the
/// kernel gives out again right after the first caller released it.
fn bind_unique(n: usize) -> Result<Vec<TcpListener>, TestkitError> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut rejected = Vec::new();
    let mut chosen = Vec::with_capacity(n);
    while chosen.len() < n {
        if rejected.len() > 200 {
            return Err(no_port(
                "bind 127.0.0.1:0 kept returning ports already handed out",
            ));
        }
        let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
        let port = l
            .local_addr()
            .map_err(io_err("local_addr of 127.0.0.1:0 listener"))?
            .port();
        if handed_out.insert(port) {
            chosen.push(l);
        } else {
            // Held until we return, so the next bind gets another port.
            rejected.push(l);
        }
    }
    Ok(chosen)
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

/// A running `sqlvigil` binary for end-to-end tests. Killed (SIGKILL) on drop if
/// still running; call [`Sqlvigil::stop`] to test a graceful shutdown.
#[derive(Debug)]
pub struct Sqlvigil {
    child: Option<Child>,
    exit_status: Option<ExitStatus>,
    pid: u32,
    bin: PathBuf,
    data_dir: PathBuf,
    grpc_port: u16,
    http_port: u16,
    api_port: u16,
    stderr_offset: u64,
    client: reqwest::Client,
}

impl Sqlvigil {
    /// Starts `bin SUBCOMMAND_ARGS... --otlp-grpc-addr 127.0.0.1:P --otlp-http-addr
    /// 127.0.0.1:P --api-addr 127.0.0.1:P --data-dir DATA_DIR` on free ports and
    /// returns once `GET /health` answers 200.
    ///
    /// stdout and stderr are appended to `sqlvigil.stdout.log` and
    /// `sqlvigil.stderr.log` in `data_dir` (created if missing), so a restart on the
    /// same data dir keeps the earlier run's output. Fails with the stderr tail if
    /// the process exits first or [`START_TIMEOUT`] passes. If it exits because a
    /// chosen port was taken meanwhile, it is started again on new ports (3 tries).
    ///
    /// Blocking: call it before starting async work that must make progress on the
    /// same runtime thread.
    pub fn start(
        bin: &Path,
        subcommand_args: &[&str],
        data_dir: &Path,
    ) -> Result<Sqlvigil, TestkitError> {
        Self::start_with_env(bin, subcommand_args, data_dir, &[])
    }

    /// [`Sqlvigil::start`] with extra environment variables for the process.
    pub fn start_with_env(
        bin: &Path,
        subcommand_args: &[&str],
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Sqlvigil, TestkitError> {
        std::fs::create_dir_all(data_dir)
            .map_err(io_err(format!("create data dir {}", data_dir.display())))?;
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(TestkitError::HttpClient)?;
        let mut attempt = 1;
        loop {
            match Self::start_once(bin, subcommand_args, data_dir, env, client.clone()) {
                Err(TestkitError::ExitedDuringStart { stderr_tail, .. })
                    if attempt < START_ATTEMPTS && looks_like_port_clash(&stderr_tail) =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(
        bin: &Path,
        subcommand_args: &[&str],
        data_dir: &Path,
        env: &[(&str, &str)],
        client: reqwest::Client,
    ) -> Result<Sqlvigil, TestkitError> {
        let ports = try_free_ports(3)?;
        let (grpc_port, http_port, api_port) = (ports[0], ports[1], ports[2]);
        let stdout_path = data_dir.join(STDOUT_LOG);
        let stderr_path = data_dir.join(STDERR_LOG);
        let stdout = open_append(&stdout_path)?;
        let mut stderr = open_append(&stderr_path)?;
        let stderr_offset = stderr
            .seek(SeekFrom::End(0))
            .map_err(io_err(format!("seek {}", stderr_path.display())))?;
        let grpc_addr = format!("127.0.0.1:{grpc_port}");
        let http_addr = format!("127.0.0.1:{http_port}");
        let api_addr = format!("127.0.0.1:{api_port}");

        let mut cmd = Command::new(bin);
        cmd.args(subcommand_args)
            .arg("--otlp-grpc-addr")
            .arg(&grpc_addr)
            .arg("--otlp-http-addr")
            .arg(&http_addr)
            .arg("--api-addr")
            .arg(&api_addr)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            bin: bin.to_path_buf(),
            source,
        })?;
        let mut me = Sqlvigil {
            pid: child.id(),
            child: Some(child),
            exit_status: None,
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            grpc_port,
            http_port,
            api_port,
            stderr_offset,
            client,
        };
        me.wait_healthy()?;
        Ok(me)
    }

    /// Waits until `GET /health` answers 200; on failure the process is killed.
    fn wait_healthy(&mut self) -> Result<(), TestkitError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.api_port));
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(TestkitError::ExitedDuringStart {
                    status,
                    stderr_tail: self.stderr_tail(),
                });
            }
            let last = match health_status(addr) {
                Ok(200) => return Ok(()),
                Ok(code) => format!("HTTP {code}"),
                Err(e) => e,
            };
            if started.elapsed() >= START_TIMEOUT {
                self.kill9();
                return Err(TestkitError::StartTimeout {
                    url: format!("{}/health", self.api_base()),
                    waited: started.elapsed(),
                    last,
                    stderr_tail: self.stderr_tail(),
                });
            }
            std::thread::sleep(HEALTH_POLL);
        }
    }

    /// `http://127.0.0.1:P` of the OTLP gRPC receiver.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:P` of the OTLP HTTP receiver (append `/v1/metrics` etc.).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:P` of the API.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The (gRPC, HTTP, API) ports.
    pub fn ports(&self) -> (u16, u16, u16) {
        (self.grpc_port, self.http_port, self.api_port)
    }

    /// Process id of the binary.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The binary this was started from.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The data dir given with `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.data_dir.join(STDOUT_LOG)
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.data_dir.join(STDERR_LOG)
    }

    /// The last lines this run wrote to stderr (for failure messages).
    pub fn stderr_tail(&self) -> String {
        tail_of(&self.stderr_path(), self.stderr_offset)
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// The exit status, once the process has exited and been reaped.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let _ = self.try_wait();
        self.exit_status
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>, TestkitError> {
        if let Some(status) = self.exit_status {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Err(TestkitError::NotRunning);
        };
        match child
            .try_wait()
            .map_err(io_err(format!("wait for sqlvigil pid {}", self.pid)))?
        {
            Some(status) => {
                self.exit_status = Some(status);
                self.child = None;
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    /// The admin token the `demo` subcommand writes to `<data_dir>/admin.token`
    /// (waits up to 10 s for the file to be written).
    ///
    /// Panics with the reason if the file is missing or empty, failing the test;
    /// [`Sqlvigil::try_admin_token`] returns the error instead.
    pub fn admin_token(&self) -> String {
        match self.try_admin_token() {
            Ok(token) => token,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Sqlvigil::admin_token`] returning an error instead of panicking.
    pub fn try_admin_token(&self) -> Result<String, TestkitError> {
        let path = self.data_dir.join("admin.token");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reason = match std::fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
                Ok(_) => "file is empty".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::AdminToken { path, reason });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Graceful stop: SIGINT (via `kill -INT`), wait up to [`STOP_GRACE`], then
    /// SIGKILL. Returns the exit status; after a SIGKILL it is not `success()`, so
    /// `assert!(sv.stop()?.success())` checks the shutdown was clean. Calling it
    /// again returns the same status.
    pub fn stop(&mut self) -> Result<ExitStatus, TestkitError> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let pid = self.pid.to_string();
        let out = Command::new("kill")
            .args(["-INT", &pid])
            .output()
            .map_err(io_err("run `kill -INT`"))?;
        // kill may fail if the process exited in between; the wait below tells.
        let _ = out;
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_and_reap()
    }

    /// SIGKILL now, as in a crash; the data dir is left as the crash left it.
    /// Does nothing if the process has already exited.
    pub fn kill9(&mut self) {
        let _ = self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) -> Result<ExitStatus, TestkitError> {
        if let Some(status) = self.exit_status {
            return Ok(status);
        }
        let Some(mut child) = self.child.take() else {
            return Err(TestkitError::NotRunning);
        };
        // An error here means it has already exited; wait() reaps it either way.
        let _ = child.kill();
        let status = child
            .wait()
            .map_err(io_err(format!("wait for sqlvigil pid {}", self.pid)))?;
        self.exit_status = Some(status);
        Ok(status)
    }

    /// `GET {api_base}{path_and_query}` with `Authorization: Bearer TOKEN` when a
    /// token is given. Returns the status and the body: parsed JSON, or
    /// `Value::Null` for an empty body, or `Value::String` for a non-JSON body, so
    /// error statuses (401, 404 ...) can be asserted too.
    pub async fn get_json(
        &self,
        path_and_query: &str,
        token: Option<&str>,
    ) -> Result<(u16, serde_json::Value), TestkitError> {
        let url = format!("{}{}", self.api_base(), path_and_query);
        let mut req = self.client.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send_json("GET", url, req).await
    }

    /// `POST {api_base}{path}` with a JSON body; the answer as in
    /// [`Sqlvigil::get_json`].
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> Result<(u16, serde_json::Value), TestkitError> {
        let url = format!("{}{}", self.api_base(), path);
        let mut req = self.client.post(&url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send_json("POST", url, req).await
    }
}

impl Drop for Sqlvigil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn send_json(
    method: &'static str,
    url: String,
    req: reqwest::RequestBuilder,
) -> Result<(u16, serde_json::Value), TestkitError> {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(source) => {
            return Err(TestkitError::Http {
                method,
                url,
                source,
            })
        }
    };
    let status = resp.status().as_u16();
    let text = match resp.text().await {
        Ok(t) => t,
        Err(source) => {
            return Err(TestkitError::Http {
                method,
                url,
                source,
            })
        }
    };
    let value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    Ok((status, value))
}

/// Creates an API token with `BIN token create --role ROLE --data-dir DATA_DIR`
/// and returns the last non-empty line of its stdout, trimmed.
pub fn create_token(bin: &Path, data_dir: &Path, role: &str) -> Result<String, TestkitError> {
    let command = format!(
        "{} token create --role {role} --data-dir {}",
        bin.display(),
        data_dir.display()
    );
    let out = Command::new(bin)
        .args(["token", "create", "--role", role, "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestkitError::Spawn {
            bin: bin.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(TestkitError::CommandFailed {
            command,
            status: out.status,
            stderr,
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(token) => Ok(token.to_string()),
        None => Err(TestkitError::NoTokenPrinted { command, stderr }),
    }
}

/// Path of `tests/otlp_client.py`, after checking that `python3` can import the
/// OpenTelemetry SDK and both OTLP exporters. The error names the exact
/// `python3 -m pip install ...` command that is missing.
pub fn python_otlp_client() -> Result<PathBuf, TestkitError> {
    // The running test's package first (cargo sets it at run time): a build shared by
    // two checkouts of the repository may carry the other checkout's compile-time path.
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates: Vec<PathBuf> = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .flat_map(|dir| [dir.join("tests"), dir.join("../tests")])
        .collect();
    candidates.push(compiled.join("../tests"));
    let tests_dir = candidates
        .iter()
        .find(|d| d.join("otlp_client.py").is_file())
        .unwrap_or(&candidates[candidates.len() - 1])
        .clone();
    let script = tests_dir.join("otlp_client.py");
    let requirements = tests_dir.join("requirements.txt");
    let all_fix = format!("python3 -m pip install -r {}", requirements.display());
    if !script.is_file() {
        return Err(TestkitError::PythonOtlpClient {
            reason: format!("{} does not exist", script.display()),
            fix: "restore tests/otlp_client.py from the repository".to_string(),
        });
    }
    let pins = read_pins(&requirements);
    let mut missing = Vec::new();
    let mut details = String::new();
    for (module, package) in PYTHON_MODULES {
        let out = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                return Err(TestkitError::PythonOtlpClient {
                    reason: format!("cannot run python3: {e}"),
                    fix: format!(
                        "install Python 3 (apt-get install python3 python3-pip), then {all_fix}"
                    ),
                })
            }
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            let _ = writeln!(details, "  python3 -c 'import {module}': {}", last.trim());
            let pinned = pins
                .iter()
                .find(|p| requirement_name(p).eq_ignore_ascii_case(package))
                .cloned()
                .unwrap_or_else(|| package.to_string());
            missing.push(pinned);
        }
    }
    if missing.is_empty() {
        return Ok(script);
    }
    Err(TestkitError::PythonOtlpClient {
        reason: format!(
            "python3 lacks the OpenTelemetry packages the OTLP end-to-end tests need:\n{details}"
        ),
        fix: format!(
            "python3 -m pip install {}   (or all pins: {all_fix})",
            missing.join(" ")
        ),
    })
}

/// Runs `python3 tests/otlp_client.py ARGS...` (after [`python_otlp_client`]'s
/// check) and returns its JSON summary line, e.g.
/// `{"exported_points": 3, "exported_logs": 0, "protocol": "grpc", ...}`.
/// A non-zero exit (any failed export) is an error carrying the script's stderr.
/// Blocking.
pub fn run_python_otlp_client(args: &[&str]) -> Result<serde_json::Value, TestkitError> {
    let script = python_otlp_client()?;
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("run python3 tests/otlp_client.py"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(TestkitError::CommandFailed {
            command: format!("python3 {} {}", script.display(), args.join(" ")),
            status: out.status,
            stderr,
        });
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.trim())
                .ok()
                .filter(|v| v.is_object())
        })
        .ok_or_else(|| TestkitError::OtlpClientOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout,
            stderr,
        })
}

/// Non-comment lines of a requirements file (empty if unreadable).
fn read_pins(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `opentelemetry-sdk` of `opentelemetry-sdk==1.45.2`.
fn requirement_name(line: &str) -> &str {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(line.len());
    &line[..end]
}

fn open_append(path: &Path) -> Result<File, TestkitError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))
}

/// The last lines of `path` written after byte `from`.
fn tail_of(path: &Path, from: u64) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(STDERR_TAIL_BYTES));
    if f.seek(SeekFrom::Start(start)).is_err() {
        return format!("<cannot seek {}>", path.display());
    }
    let mut buf = Vec::new();
    if let Err(e) = f.read_to_end(&mut buf) {
        return format!("<cannot read {}: {e}>", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    if tail.trim().is_empty() {
        "<stderr empty>".to_string()
    } else {
        tail
    }
}

fn looks_like_port_clash(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("address already in use") || s.contains("addrinuse") || s.contains("os error 98")
}

/// Status code of `GET /health` on `addr`, by a minimal HTTP/1.1 exchange (no
/// async runtime needed), or why there was none.
fn health_status(addr: SocketAddr) -> Result<u16, String> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("set timeouts: {e}"))?;
    let req =
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status_line = line.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {status_line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn free_port_is_bindable_and_nonzero() {
        // Another process may take a released port at any moment (that is why
        // Sqlvigil::start retries on "address in use"), so allow a few tries.
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            assert_ne!(port, 0);
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => return,
                Err(e) => errors.push(format!("{port}: {e}")),
            }
        }
        panic!("no port from free_port() was bindable: {errors:?}");
    }

    #[test]
    fn free_port_never_repeats_in_a_process() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = try_free_ports(3).expect("loopback bind");
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
    }

    #[tokio::test]
    async fn wait_for_returns_value_once_ready() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let got = wait_for(Duration::from_secs(5), move || {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                (n >= 3).then_some(n)
            }
        })
        .await;
        assert_eq!(got, Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wait_for_times_out_with_none() {
        let started = Instant::now();
        let got: Option<()> = wait_for(Duration::from_millis(600), || async { None }).await;
        assert_eq!(got, None);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(600), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn health_status_reads_status_line() {
        let l = free_listener().expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        assert_eq!(health_status(addr), Ok(200));
        assert_eq!(health_status(addr), Ok(503));
        server.join().expect("server thread");
        assert!(health_status(addr).is_err());
    }

    #[test]
    fn start_reports_early_exit_with_stderr_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake-sqlvigil.sh");
        std::fs::write(&script, "#!/bin/sh\necho \"boom: args $*\" >&2\nexit 3\n")
            .expect("write script");
        let chmod = Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        assert!(chmod.success());
        let data = dir.path().join("data");
        let err = Sqlvigil::start(&script, &["demo"], &data).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("boom: args demo --otlp-grpc-addr 127.0.0.1:"),
            "{msg}"
        );
        assert!(msg.contains("--data-dir"), "{msg}");
        assert!(data.join(STDERR_LOG).is_file());
    }

    #[test]
    fn start_stop_against_fake_server() {
        // A stand-in binary: python3 serving GET /health on --api-addr, exiting 0
        // on SIGINT (python3 is needed by the e2e tests anyway).
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake.py");
        std::fs::write(
            &script,
            r#"#!/usr/bin/env python3
import sys, signal, os
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
api = args[args.index("--api-addr") + 1]
data = args[args.index("--data-dir") + 1]
with open(os.path.join(data, "admin.token"), "w") as f:
    f.write("tok-123\n")
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        body = ('{"path": "%s", "auth": "%s"}' % (self.path, auth)).encode()
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        sys.stderr.write("req\n")
def on_int(*_):
    sys.stderr.write("got SIGINT\n"); sys.stderr.flush(); os._exit(0)
signal.signal(signal.SIGINT, on_int)
host, port = api.rsplit(":", 1)
HTTPServer((host, int(port)), H).serve_forever()
"#,
        )
        .expect("write fake");
        let chmod = Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        assert!(chmod.success());
        let data = dir.path().join("data");
        let mut sv = Sqlvigil::start(&script, &["demo"], &data).expect("start");
        assert!(sv.api_base().starts_with("http://127.0.0.1:"));
        assert!(sv.grpc_endpoint().starts_with("http://127.0.0.1:"));
        assert_ne!(sv.grpc_endpoint(), sv.http_endpoint());
        assert_eq!(sv.admin_token(), "tok-123");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (code, body) = rt
            .block_on(sv.get_json("/x?y=1", Some("tok-123")))
            .expect("get");
        assert_eq!(code, 200);
        assert_eq!(body["path"], "/x?y=1");
        assert_eq!(body["auth"], "Bearer tok-123");
        let (code, _) = rt.block_on(sv.get_json("/missing", None)).expect("get");
        assert_eq!(code, 404);
        let status = sv.stop().expect("stop");
        assert!(status.success(), "{status:?}");
        assert!(!sv.is_running());
        assert_eq!(sv.stop().expect("second stop"), status);
        let stderr = std::fs::read_to_string(data.join(STDERR_LOG)).expect("stderr log");
        assert!(stderr.contains("got SIGINT"), "{stderr}");
    }

    #[test]
    fn kill9_and_drop_end_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake.py");
        std::fs::write(
            &script,
            r#"#!/usr/bin/env python3
import sys, signal
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
api = args[args.index("--api-addr") + 1]
signal.signal(signal.SIGINT, signal.SIG_IGN)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
host, port = api.rsplit(":", 1)
HTTPServer((host, int(port)), H).serve_forever()
"#,
        )
        .expect("write fake");
        let ok = Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        assert!(ok.success());
        let mut sv = Sqlvigil::start(&script, &["run"], dir.path()).expect("start");
        sv.kill9();
        assert!(!sv.is_running());
        assert!(!sv.exit_status().expect("status").success());

        let sv2 = Sqlvigil::start(&script, &["run"], dir.path()).expect("start again");
        let pid = sv2.pid().to_string();
        drop(sv2);
        let alive = Command::new("kill")
            .args(["-0", &pid])
            .stderr(Stdio::null())
            .status()
            .expect("kill -0");
        assert!(!alive.success(), "pid {pid} still alive after drop");
    }

    #[test]
    fn create_token_takes_last_nonempty_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake-cli.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1 $2 $3 $4 $5\" = \"token create --role viewer --data-dir\" ] || { echo \"bad args: $*\" >&2; exit 2; }\necho created\necho '  svt_abc123  '\necho\n",
        )
        .expect("write script");
        let ok = Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        assert!(ok.success());
        let token = create_token(&script, dir.path(), "viewer").expect("token");
        assert_eq!(token, "svt_abc123");
        let err = create_token(&script, dir.path(), "admin").expect_err("bad role");
        assert!(err.to_string().contains("bad args"), "{err}");
    }

    #[test]
    fn requirement_names_parse() {
        assert_eq!(
            requirement_name("opentelemetry-sdk==1.45.2"),
            "opentelemetry-sdk"
        );
        assert_eq!(requirement_name("foo"), "foo");
    }

    /// Minimal OTLP/HTTP receiver: answers every request 200 with an empty
    /// protobuf body (a valid empty Export*ServiceResponse); returns the paths seen.
    fn fake_otlp_http(requests: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = free_listener().expect("bind");
        let port = l.local_addr().expect("addr").port();
        let h = std::thread::spawn(move || {
            let mut paths = Vec::new();
            while paths.len() < requests {
                let (mut s, _) = l.accept().expect("accept");
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Read headers, then Content-Length bytes of body.
                let body_len = loop {
                    let n = s.read(&mut buf).expect("read");
                    assert!(n > 0, "client closed early");
                    req.extend_from_slice(&buf[..n]);
                    if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break end + 4 + len;
                    }
                };
                while req.len() < body_len {
                    let n = s.read(&mut buf).expect("read body");
                    assert!(n > 0, "client closed mid-body");
                    req.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&req);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                paths.push(path);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
            paths
        });
        (port, h)
    }

    #[test]
    fn python_otlp_client_exports_each_value_and_a_log() {
        let (port, server) = fake_otlp_http(4);
        let endpoint = format!("http://127.0.0.1:{port}");
        let summary = run_python_otlp_client(&[
            "--protocol",
            "http",
            "--endpoint",
            &endpoint,
            "--instance",
            "SQL01",
            "--host",
            "db1",
            "--metric",
            "sqlserver.cpu.percent",
            "--values",
            "1.5,2.5,3.5",
            "--attr",
            "db=master",
            "--log",
            "deadlock detected",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summary["exported_points"], 3, "{summary}");
        assert_eq!(summary["exported_logs"], 1, "{summary}");
        assert_eq!(summary["protocol"], "http", "{summary}");
        let paths = server.join().expect("server");
        assert_eq!(
            paths,
            ["/v1/metrics", "/v1/metrics", "/v1/metrics", "/v1/logs"]
        );
    }

    #[test]
    fn python_otlp_client_fails_loudly_when_export_fails() {
        let port = free_port(); // nothing listens there
        let endpoint = format!("http://127.0.0.1:{port}");
        let err = run_python_otlp_client(&[
            "--protocol",
            "grpc",
            "--endpoint",
            &endpoint,
            "--instance",
            "SQL01",
            "--host",
            "db1",
            "--metric",
            "m",
            "--values",
            "1",
            "--timeout",
            "1",
        ])
        .expect_err("export to a closed port must fail");
        let msg = err.to_string();
        assert!(msg.contains("export result ['FAILURE']"), "{msg}");
    }

    #[test]
    fn python_otlp_client_path_points_at_script() {
        // Must not skip: with the deps missing this fails with the pip command.
        match python_otlp_client() {
            Ok(p) => assert!(p.ends_with("otlp_client.py") && p.is_file()),
            Err(e) => panic!("{e}"),
        }
    }
}
