//! The `sqlvigil` binary under test: started on free ports, its output captured, stopped
//! gracefully or killed.

use crate::{io_err, net, TestkitError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`Sqlvigil::start`] waits for `GET /health` to answer 200.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Sqlvigil::stop`] waits after SIGINT before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// File in the data dir receiving the binary's stdout.
pub const STDOUT_LOG: &str = "sqlvigil.stdout.log";
/// File in the data dir receiving the binary's stderr.
pub const STDERR_LOG: &str = "sqlvigil.stderr.log";

const HEALTH_POLL: Duration = Duration::from_millis(100);
const STDERR_TAIL_LINES: usize = 40;
const STDERR_TAIL_BYTES: u64 = 16 * 1024;
const START_ATTEMPTS: usize = 3;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

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
        let ports = net::try_free_ports(3)?;
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
pub(crate) fn health_status(addr: SocketAddr) -> Result<u16, String> {
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
