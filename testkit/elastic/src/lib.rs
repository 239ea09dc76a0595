//! A protocol-level Elasticsearch 8 test server ([`ElasticServer`]) on a free 127.0.0.1
//! port, answering the part of the REST API that sqlvigil's Elastic sink and bridge use
//! with Elasticsearch 8.19's JSON shapes, status codes and error types.
//!
//! - Layout: ILM policies, component and composable index templates (with the real
//!   server's `create=true`, missing-component and same-priority-overlap errors, also
//!   against the built-in `logs-*-*`/`metrics-*-*`/`synthetics-*-*` templates), data
//!   streams (explicit or created on first write), time series data streams.
//! - `_bulk` (NDJSON, gzip/deflate): per-item results with version conflicts, data stream
//!   rules, time series `_id`s and time bounds, mapping type and `dynamic: strict` checks.
//! - `_search` / `_count`: `match_all`, `bool`, `term(s)`, `range`, `exists`, `ids`,
//!   `match`, `prefix`; sort, `search_after`; `terms`, `date_histogram`, `filter`,
//!   `top_hits`, metric and `percentiles` aggregations. Field paths resolve through nested
//!   objects and literal dotted keys alike (`{"metrics": {"a.b": 1}}` is `metrics.a.b`).
//! - Faults ([`Fault`]): whole-request 429/503 with `Retry-After`, per-item 429s, slowness;
//!   [`ElasticServer::refuse_connections`] makes the port refuse connections and reopens it.
//!
//! ```no_run
//! # use sqlvigil_testkit_elastic::{ElasticServer, Fault};
//! let es = ElasticServer::start();
//! let url = es.url(); // e.g. http://127.0.0.1:41234
//! es.set_fault(Fault::ItemRejections { every: 2, items: 10 });
//! // ... run the sink against url, then:
//! assert!(es.count("mssql-metrics-*") > 0);
//! ```
//!
//! The server runs on a thread of its own with a single-threaded tokio runtime, so it works
//! from sync tests and any async test flavour; dropping it stops it. A malformed request
//! gets an Elasticsearch-shaped 4xx, never a panic.
//!
//! Parts: this file (public API, serving, refusing connections), `state` (indices, data
//! streams, templates), `http` (decoding, rendering, routing), `layout` (ILM, templates,
//! data stream and index endpoints), `bulk`, `search` (hits, sorting), `query`, `aggs`,
//! `values` (field lookup, typed keys, dates, globs), `tests`.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Run a server in this process, print its URL on the first line of stdout and serve
/// until stdin closes (the parent is done, or died): the server as a separate process,
/// for benchmarks that must not share a process with it.
pub fn serve_until_stdin_closes() {
    use std::io::{BufRead, Write};
    let es = ElasticServer::start();
    println!("{}", es.url());
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}

mod aggs;
mod bulk;
mod http;
mod layout;
mod query;
mod search;
mod state;
#[cfg(test)]
mod tests;
mod values;

// The parts share one namespace: each part does `use super::*`.
use aggs::*;
use bulk::*;
use http::*;
use layout::*;
use query::*;
use search::*;
use state::*;
use values::*;

/// The version the server reports and whose behaviour it follows.
pub const VERSION: &str = "8.19.0";
/// Largest request body accepted (Elasticsearch's default `http.max_content_length`).
pub const MAX_CONTENT_LENGTH: usize = 100 * 1024 * 1024;

/// What the server has been asked so far (see [`ElasticServer::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElasticStats {
    /// Every `_bulk` request received, including faulted and malformed ones.
    pub bulk_requests: u64,
    /// Bulk items that stored a new document.
    pub items_created: u64,
    /// Bulk items answered 409 (version conflict).
    pub items_conflict: u64,
    /// Bulk items answered with an injected 429 ([`Fault::ItemRejections`]).
    pub items_rejected: u64,
    /// Bulk items answered 400 `document_parsing_exception` /
    /// `strict_dynamic_mapping_exception` (bad field values, unmapped fields under
    /// `dynamic: strict`, missing `@timestamp`, no routing fields, unparsable source).
    pub items_failed_mapping: u64,
    /// Whole requests answered with an injected status ([`Fault::BulkStatus`]).
    pub requests_faulted: u64,
    /// PUT/POST/DELETE requests to `_index_template`, `_component_template`,
    /// `_ilm/policy` and `_data_stream`, whatever their outcome.
    pub writes: u64,
    /// `_search` and `_count` requests.
    pub searches: u64,
    /// Largest `_bulk` body seen, in bytes after gzip/deflate decoding.
    pub max_bulk_bytes: usize,
}

/// A failure mode for later requests ([`ElasticServer::set_fault`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Answer the next `requests` `_bulk` requests as a whole with `status` (e.g. 429 or
    /// 503) and `Retry-After: retry_after_secs` when `Some`; nothing is stored.
    BulkStatus {
        status: u16,
        requests: u64,
        retry_after_secs: Option<u64>,
    },
    /// In each `_bulk` request reject every `every`-th item (1 = all) with a per-item 429
    /// `es_rejected_execution_exception`, until `items` rejections were issued in total.
    ItemRejections { every: usize, items: u64 },
    /// Delay every response by this long. The request is handled at once (a bulk is
    /// stored even if the client times out meanwhile); only the answer is held back.
    Slow(Duration),
}

/// A running fake Elasticsearch; stops on drop.
pub struct ElasticServer {
    addr: SocketAddr,
    shared: Shared,
    control: Option<tokio::sync::mpsc::UnboundedSender<Control>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Asks the server thread to close or reopen the port; the answer says it is done.
struct Control {
    refuse: bool,
    done: std::sync::mpsc::Sender<Result<(), String>>,
}

impl ElasticServer {
    /// Start on a free loopback port with no templates, data streams or documents.
    /// Panics if it cannot bind.
    pub fn start() -> ElasticServer {
        match Self::try_start() {
            Ok(server) => server,
            Err(e) => panic!("fake Elasticsearch server: {e}"),
        }
    }

    fn try_start() -> Result<ElasticServer, String> {
        let (addr, runtime, listener) = sqlvigil_testkit::loopback_server()?;
        let shared = Shared(Arc::new(Mutex::new(Inner::default())));
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (control, commands) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("fake-elastic-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, addr, app, commands));
                runtime.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(|e| format!("thread: {e}"))?;
        Ok(ElasticServer {
            addr,
            shared,
            control: Some(control),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the current fault; [`Fault::None`] clears it.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.lock().fault = fault;
    }

    /// Stop accepting connections (drop the listener and close open connections) so
    /// clients get "connection refused"; `false` binds the same port again and serves the
    /// same state. Returns once done; panics if the port cannot be bound again.
    pub fn refuse_connections(&self, refuse: bool) {
        let (done, answer) = std::sync::mpsc::channel();
        let sent = self
            .control
            .as_ref()
            .is_some_and(|c| c.send(Control { refuse, done }).is_ok());
        let outcome = if sent {
            answer
                .recv()
                .unwrap_or_else(|_| Err("server thread ended".into()))
        } else {
            Err("server thread ended".into())
        };
        if let Err(e) = outcome {
            panic!("fake Elasticsearch server: refuse_connections({refuse}): {e}");
        }
    }

    /// Documents stored in indices/data streams whose name matches `pattern` (comma list,
    /// `*` wildcards): (index or data stream name, `_id`, `_source`), in the order written.
    pub fn docs(&self, pattern: &str) -> Vec<(String, String, Value)> {
        let inner = self.shared.lock();
        let mut found: Vec<(u64, String, String, Value)> = Vec::new();
        for name in inner.names_matching(pattern) {
            if let Some(index) = inner.indices.get(&name) {
                for doc in index.live_docs() {
                    found.push((doc.order, name.clone(), doc.id.clone(), doc.source.clone()));
                }
            }
        }
        found.sort_by_key(|d| d.0);
        found.into_iter().map(|(_, n, id, s)| (n, id, s)).collect()
    }

    /// How many documents [`ElasticServer::docs`] would return.
    pub fn count(&self, pattern: &str) -> usize {
        let inner = self.shared.lock();
        inner
            .names_matching(pattern)
            .iter()
            .filter_map(|n| inner.indices.get(n))
            .map(|i| i.ids.len())
            .sum()
    }

    /// Store a document as a fixture written "by someone else", without any checks:
    /// creates the plain index, or the data stream when a data stream template matches;
    /// an existing `_id` is replaced.
    pub fn insert(&self, index: &str, id: &str, source: Value) {
        let mut inner = self.shared.lock();
        if !inner.indices.contains_key(index) {
            let stream = inner
                .matching_template(index)
                .is_some_and(|(_, t)| t.body.get("data_stream").is_some());
            inner.create_index(index, stream, None);
        }
        let order = inner.next_order();
        if let Some(idx) = inner.indices.get_mut(index) {
            idx.put(id, source, order);
        }
    }

    pub fn stats(&self) -> ElasticStats {
        self.shared.lock().stats.clone()
    }

    /// The index template's body as PUT.
    pub fn index_template(&self, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .templates
            .get(name)
            .map(|t| t.body.clone())
    }

    /// The ILM policy's body as PUT (`{"policy": {...}}`).
    pub fn ilm_policy(&self, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .policies
            .get(name)
            .map(|p| p.body.clone())
    }

    /// Names of the data streams, sorted.
    pub fn data_streams(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner
            .indices
            .values()
            .filter(|i| i.stream.is_some())
            .map(|i| i.name.clone())
            .collect()
    }
}

impl Drop for ElasticServer {
    fn drop(&mut self) {
        // Closing the control channel ends the serve loop.
        self.control.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------- serving

/// Serve until the control channel closes, closing and reopening the port on request.
async fn serve(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    app: Router,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Control>,
) {
    let conns = Conns::default();
    let mut serving = Some(spawn_serve(listener, app.clone(), conns.clone()));
    while let Some(Control { refuse, done }) = commands.recv().await {
        let outcome = if refuse {
            stop_serving(&mut serving, &conns).await;
            Ok(())
        } else if serving.is_some() {
            Ok(())
        } else {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    serving = Some(spawn_serve(l, app.clone(), conns.clone()));
                    Ok(())
                }
                Err(e) => Err(format!("bind {addr} again: {e}")),
            }
        };
        let _ = done.send(outcome);
    }
    stop_serving(&mut serving, &conns).await;
}

fn spawn_serve(
    listener: tokio::net::TcpListener,
    app: Router,
    conns: Conns,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(TrackedListener { listener, conns }, app).await;
    })
}

/// Drop the listener (aborting the accept loop drops it) and shut down every open
/// connection: a pooled keep-alive connection would otherwise keep working.
async fn stop_serving(serving: &mut Option<tokio::task::JoinHandle<()>>, conns: &Conns) {
    if let Some(task) = serving.take() {
        task.abort();
        let _ = task.await;
    }
    conns.close_all();
}

/// A listener that remembers a duplicate of every accepted socket, so that
/// [`Conns::close_all`] can shut down connections whose tasks axum spawned on its own.
struct TrackedListener {
    listener: tokio::net::TcpListener,
    conns: Conns,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => return (self.conns.track(stream), peer),
                // E.g. too many open files: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[derive(Clone, Default)]
struct Conns(Arc<Mutex<ConnsInner>>);

#[derive(Default)]
struct ConnsInner {
    next: u64,
    open: HashMap<u64, std::net::TcpStream>,
}

impl Conns {
    fn lock(&self) -> MutexGuard<'_, ConnsInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn track(&self, stream: tokio::net::TcpStream) -> TrackedStream {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        if let Some(dup) = duplicate(&stream) {
            inner.open.insert(id, dup);
        }
        TrackedStream {
            inner: stream,
            id,
            conns: self.clone(),
        }
    }

    fn close_all(&self) {
        for (_, stream) in self.lock().open.drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(unix)]
fn duplicate(stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    Some(std::net::TcpStream::from(fd))
}

#[cfg(not(unix))]
fn duplicate(_stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    None
}

/// An accepted connection; forgets its duplicate when closed (the duplicate would
/// otherwise keep the socket open after the server side is done with it).
struct TrackedStream {
    inner: tokio::net::TcpStream,
    id: u64,
    conns: Conns,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
