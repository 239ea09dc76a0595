//! # sqlvigil-testkit-tds — a TDS (SQL Server protocol) test server
//!
//! A small server that speaks the real SQL Server wire protocol (MS-TDS, TDS 7.4)
//! well enough for the `tiberius` client and Python's `python-tds` to connect, log
//! in and run queries, and answers SQL batches and `sp_executesql` RPCs from
//! recorded JSON fixtures. It lets the live monitor's collectors be tested against
//! the protocol without a SQL Server.
//!
//! What it does:
//! - PRELOGIN with the MS-TDS encryption negotiation ([`Encryption`]); TLS carried
//!   inside PRELOGIN packets during the handshake, for the login only (client
//!   `ENCRYPT_OFF`) or for the whole connection. The certificate is generated at
//!   start (a throw-away CA plus a `localhost`/`127.0.0.1` leaf); clients trust
//!   [`TdsServer::ca_path`].
//! - LOGIN7 with SQL authentication against configured users (error 18456 on a wrong
//!   password), optionally FEDAUTH security tokens ([`TdsConfig::aad_tokens`]); every
//!   login is recorded ([`LoginRecord`]).
//! - Batches and RPCs are matched to fixtures by a `-- sqlvigil:<name>` marker in the
//!   text or by the fixture's `"sql"`; unmatched text gets error 208. Result sets are
//!   encoded with SQL Server's own type info (see [`TdsServer::add_fixture`] for the
//!   format and the types), split into packets of the negotiated size.
//! - Faults: failing logins, delays (ATTENTION stops them; a disconnect during one is
//!   recorded as abandoned), dropping the connection after n rows, denying a fixture.
//! - Counters and records for tests ([`Stats`], [`QueryRecord`]).
//!
//! Dependencies: tokio, rustls/tokio-rustls (ring) and rcgen for TLS, serde_json and
//! chrono for fixtures. It is test-only: never a dependency of product code, and it
//! depends on no sqlvigil crate. It touches nothing outside its own temporary
//! directory (the CA file) and the listening socket.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sqlvigil_testkit_tds::TdsError> {
//! use sqlvigil_testkit_tds::{Encryption, TdsConfig, TdsServer};
//! let server = TdsServer::start(TdsConfig {
//!     encryption: Encryption::Off,
//!     users: vec![("sqlvigil".into(), "Pa55w0rd!".into())],
//!     ..TdsConfig::default()
//! })
//! .await?;
//! server.add_fixture("one", serde_json::json!({
//!     "sql": "SELECT 1 AS x",
//!     "columns": [{"name": "x", "type": "int"}], "rows": [[1]]
//! }))?;
//! println!("{} trusts {}", server.addr(), server.ca_path().display());
//! # Ok(()) }
//! ```

mod conn;
mod fixture;
mod requests;
mod tls;
mod tokens;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};

use crate::fixture::{Fixture, ServerError};

/// The server's encryption setting, answered in PRELOGIN as SQL Server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// No certificate: answers `ENCRYPT_NOT_SUP`, never does TLS.
    NotSupported,
    /// TLS available, not forced: login-only TLS for clients sending `ENCRYPT_OFF`,
    /// full TLS for `ENCRYPT_ON`/`ENCRYPT_REQ`, none for `ENCRYPT_NOT_SUP`.
    #[default]
    Off,
    /// "Force encryption": full TLS for every client; a client that cannot do TLS
    /// (`ENCRYPT_NOT_SUP`) gets `ENCRYPT_REQ` and the connection is closed.
    On,
}

/// Start-up configuration of a [`TdsServer`].
#[derive(Debug, Clone)]
pub struct TdsConfig {
    /// Where to listen; the default `127.0.0.1:0` picks a free port.
    pub bind_addr: SocketAddr,
    pub encryption: Encryption,
    /// SQL logins: (user name, password).
    pub users: Vec<(String, String)>,
    /// FEDAUTH (Azure AD) access tokens accepted as logins.
    pub aad_tokens: Vec<String>,
    /// A directory of `<name>.json` fixtures loaded at start.
    pub fixtures_dir: Option<PathBuf>,
    /// Every login fails with 18456.
    pub fail_logins: bool,
}

impl Default for TdsConfig {
    fn default() -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            encryption: Encryption::Off,
            users: Vec::new(),
            aad_tokens: Vec::new(),
            fixtures_dir: None,
            fail_logins: false,
        }
    }
}

/// Errors of the server's API (connection problems are logged, never returned).
#[derive(Debug, thiserror::Error)]
pub enum TdsError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("tls setup failed: {0}")]
    Tls(String),
    #[error("invalid fixture: {0}")]
    Fixture(String),
}

/// How TLS was used on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsUse {
    None,
    /// Only the LOGIN7 packet was encrypted (client sent `ENCRYPT_OFF`).
    LoginOnly,
    Full,
}

/// How a login authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    SqlPassword,
    AadToken,
    /// SSPI / Kerberos: always refused.
    Integrated,
}

/// One LOGIN7 the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub connection_id: u64,
    pub succeeded: bool,
    pub user: String,
    pub app_name: String,
    pub database: String,
    pub server_name: String,
    pub host_name: String,
    /// TypeFlags fReadOnlyIntent (ApplicationIntent=ReadOnly).
    pub read_only_intent: bool,
    /// TDSVersion as sent (0x74000004 for TDS 7.4).
    pub tds_version: u32,
    /// Requested packet size (0 = server default).
    pub packet_size: u32,
    pub tls: TlsUse,
    pub auth: AuthKind,
}

/// Whether a query came as a SQL batch or an RPC (`sp_executesql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Batch,
    Rpc,
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    pub connection_id: u64,
    /// The selected fixture; `None` when nothing matched (or a built-in answered).
    pub fixture: Option<String>,
    /// Which of the fixture's answers was given.
    pub answer_index: Option<usize>,
    pub kind: RequestKind,
    pub text: String,
    /// Whether the query travelled inside TLS.
    pub encrypted: bool,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections_total: u64,
    pub open_connections: u64,
    pub logins_ok: u64,
    pub logins_failed: u64,
    /// Batches and RPCs received (transaction requests not counted).
    pub queries: u64,
    pub unmatched_queries: u64,
    pub attentions: u64,
    /// Queries whose client disconnected while the server was delaying the answer.
    pub abandoned_queries: u64,
    pub active_queries: u64,
    pub max_concurrent_queries: u64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub delay: Option<Duration>,
    pub disconnect_after_rows: Option<u64>,
    pub deny: Option<ServerError>,
}

#[derive(Default)]
pub(crate) struct Records {
    pub stats: Stats,
    pub logins: Vec<LoginRecord>,
    pub queries: Vec<QueryRecord>,
}

pub(crate) struct Shared {
    pub encryption: Encryption,
    pub tls: tokio_rustls::TlsAcceptor,
    pub users: Mutex<HashMap<String, String>>,
    pub aad_tokens: Vec<String>,
    pub fail_logins: AtomicBool,
    pub fixtures: RwLock<BTreeMap<String, Arc<Fixture>>>,
    pub selections: Mutex<HashMap<String, u64>>,
    pub faults: Mutex<HashMap<String, Faults>>,
    pub records: Mutex<Records>,
    pub conn_tasks: Mutex<HashMap<u64, AbortHandle>>,
    pub next_conn: AtomicU64,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the
/// server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of choosing a fixture for a query.
pub(crate) struct Selection {
    pub fixture: Arc<Fixture>,
    pub index: usize,
    pub faults: Faults,
}

impl Shared {
    pub(crate) fn select(&self, text: &str) -> Result<Selection, String> {
        let fixtures = self.fixtures.read().unwrap_or_else(|e| e.into_inner());
        let found = match fixture::marker(text) {
            Some(name) => fixtures
                .get(&name)
                .cloned()
                .ok_or_else(|| format!("the batch names fixture '{name}', which does not exist"))?,
            None => {
                let norm = fixture::normalize_sql(text);
                fixtures
                    .values()
                    .find(|f| f.match_sql.as_deref() == Some(norm.as_str()))
                    .cloned()
                    .ok_or_else(|| "no fixture matches the batch".to_string())?
            }
        };
        drop(fixtures);
        let index = {
            let mut sel = lock(&self.selections);
            let n = sel.entry(found.name.clone()).or_insert(0);
            let index = (*n as usize).min(found.answers.len() - 1);
            *n += 1;
            index
        };
        let faults = lock(&self.faults)
            .get(&found.name)
            .cloned()
            .unwrap_or_default();
        Ok(Selection {
            fixture: found,
            index,
            faults,
        })
    }

    pub(crate) fn record<R>(&self, f: impl FnOnce(&mut Records) -> R) -> R {
        f(&mut lock(&self.records))
    }
}

/// A running TDS test server. Stops (listener and all connections) when dropped.
pub struct TdsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    ca_path: PathBuf,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl TdsServer {
    /// Binds, generates the certificate (written to a temporary directory), loads
    /// `fixtures_dir` and starts accepting; each connection runs in its own task.
    pub async fn start(config: TdsConfig) -> Result<TdsServer, TdsError> {
        let tls = tls::generate()?;
        let dir = tempfile::Builder::new().prefix("sqlvigil-tds-").tempdir()?;
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &tls.ca_pem)?;
        let shared = Arc::new(Shared {
            encryption: config.encryption,
            tls: tokio_rustls::TlsAcceptor::from(tls.config),
            users: Mutex::new(config.users.into_iter().collect()),
            aad_tokens: config.aad_tokens,
            fail_logins: AtomicBool::new(config.fail_logins),
            fixtures: RwLock::new(BTreeMap::new()),
            selections: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            records: Mutex::new(Records::default()),
            conn_tasks: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        });
        let listener = TcpListener::bind(config.bind_addr).await?;
        let addr = listener.local_addr()?;
        let server = TdsServer {
            addr,
            accept: tokio::spawn(accept_loop(listener, shared.clone())),
            shared,
            ca_path,
            ca_pem: tls.ca_pem,
            _dir: dir,
        };
        if let Some(dir) = &config.fixtures_dir {
            server.load_fixtures_dir(dir)?;
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// PEM file of the CA that signed the server certificate (SAN `localhost`,
    /// `127.0.0.1`), for tiberius `Config::trust_cert_ca` or pytds `cafile`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Adds or replaces fixture `name` (and restarts its answer sequence).
    ///
    /// Format (`delay_ms` and `disconnect_after_rows` may also sit at the top level
    /// as defaults for every answer; a fixture without `answers` is one answer):
    /// ```json
    /// { "sql": "optional text to match (case-insensitive, whitespace-collapsed)",
    ///   "answers": [
    ///     { "result_sets": [ { "columns": [ {"name": "session_id", "type": "smallint", "nullable": false} ],
    ///                          "rows": [ [52] ] } ],
    ///       "delay_ms": 0, "disconnect_after_rows": null },
    ///     { "columns": [...], "rows": [...] },
    ///     { "error": { "number": 300, "state": 1, "class": 14, "message": "..." } } ] }
    /// ```
    /// The N-th selection (per server) gives `answers[min(N, len-1)]`. Types: `int`,
    /// `bigint`, `smallint`, `tinyint`, `bit`, `float`, `real`, `money`,
    /// `decimal(p,s)`, `numeric(p,s)`, `nvarchar(n|max)`, `varchar(n|max)`,
    /// `nchar(n)` (padded with spaces), `varbinary(n|max)`, `uniqueidentifier`,
    /// `datetime`, `datetime2(s)`, `datetimeoffset(s)`, `date`. Values: JSON numbers
    /// (decimals and money also as strings), strings, `"0x..."` for binary, ISO-8601
    /// strings for dates (with an offset for datetimeoffset), `null`. Structure
    /// errors are returned here; a value that does not fit its type is answered
    /// with an ERROR token naming fixture, row and column.
    pub fn add_fixture(&self, name: &str, fixture: serde_json::Value) -> Result<(), TdsError> {
        let parsed = Fixture::from_json(name, &fixture).map_err(TdsError::Fixture)?;
        self.shared
            .fixtures
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(parsed));
        lock(&self.shared.selections).remove(name);
        Ok(())
    }

    /// Loads every `<name>.json` in `dir`; returns how many.
    pub fn load_fixtures_dir(&self, dir: &Path) -> Result<usize, TdsError> {
        let mut n = 0;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for path in entries {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TdsError::Fixture(format!("{}: {e}", path.display())))?;
            self.add_fixture(name, value)?;
            n += 1;
        }
        Ok(n)
    }

    /// Delays every answer of fixture `name` (overrides its `delay_ms`);
    /// `Duration::ZERO` removes the run-time delay.
    pub fn set_delay(&self, name: &str, delay: Duration) {
        lock(&self.shared.faults)
            .entry(name.to_string())
            .or_default()
            .delay = (!delay.is_zero()).then_some(delay);
    }

    /// After the metadata and `rows` rows of fixture `name`, drop the connection.
    pub fn set_disconnect_after_rows(&self, name: &str, rows: u64) {
        lock(&self.shared.faults)
            .entry(name.to_string())
            .or_default()
            .disconnect_after_rows = Some(rows);
    }

    /// Answer fixture `name` with ERROR `number` (class 14 for permission errors
    /// 229/230/262/297/300/916, else 16; state 1) and `message`.
    pub fn deny(&self, name: &str, number: u32, message: &str) {
        let class = if matches!(number, 229 | 230 | 262 | 297 | 300 | 916) {
            14
        } else {
            16
        };
        lock(&self.shared.faults)
            .entry(name.to_string())
            .or_default()
            .deny = Some(ServerError {
            number,
            state: 1,
            class,
            message: message.to_string(),
        });
    }

    /// Removes the run-time delay, disconnect and deny of fixture `name`.
    pub fn clear_faults(&self, name: &str) {
        lock(&self.shared.faults).remove(name);
    }

    /// Makes every following login fail with 18456 (or succeed again).
    pub fn set_fail_logins(&self, fail: bool) {
        self.shared.fail_logins.store(fail, Ordering::SeqCst);
    }

    /// Adds or changes a SQL login.
    pub fn add_user(&self, user: &str, password: &str) {
        lock(&self.shared.users).insert(user.to_string(), password.to_string());
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.records).stats.clone()
    }

    pub fn logins(&self) -> Vec<LoginRecord> {
        lock(&self.shared.records).logins.clone()
    }

    pub fn queries(&self) -> Vec<QueryRecord> {
        lock(&self.shared.records).queries.clone()
    }

    /// Polls [`Self::stats`] until `pred` holds or `timeout` passes; returns the
    /// last stats either way (for effects the server sees asynchronously, such as
    /// a disconnect).
    pub async fn wait_for_stats(&self, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) || tokio::time::Instant::now() >= deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TdsServer {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, task) in lock(&self.shared.conn_tasks).drain() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("tds test server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        let task_shared = shared.clone();
        // Hold the task map lock while spawning so the task cannot remove its
        // entry before it is inserted.
        let mut tasks = lock(&shared.conn_tasks);
        let handle = tokio::spawn(async move {
            conn::run(tcp, peer, task_shared.clone(), id).await;
            lock(&task_shared.conn_tasks).remove(&id);
        });
        tasks.insert(id, handle.abort_handle());
    }
}
