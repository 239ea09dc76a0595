//! All of Elasticsearch for sqlvigil: the `elastic:` section ([`config`], which builds
//! the backend), the connection ([`client`]), the index layout it installs — composable
//! templates, data streams and an ILM policy ([`layout`]) — the documents it writes
//! ([`encode`]), the sink that writes them (`store.backend: elastic`; [`sink`]: disk
//! queue, retry policy, `_bulk` service), and the read side ("Collector Bridge Service"
//! of seed 002, [`read`]): searches and aggregations whose hits are normalized into the
//! typed models of `sqlvigil-model`, whatever layout wrote them ([`normalize`], one file
//! per layout: our own sink, seed 002's flat documents, or the OpenTelemetry
//! Collector's `elasticsearch` exporter in OTel mapping mode).
//!
//! ```
//! use sqlvigil_bridge::encode;
//! use sqlvigil_model::{Sample, SeriesKey};
//! let s = Sample::gauge(SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization"), 1_000_000_000, 42.5, "%");
//! let doc = encode::metric_doc(&s);
//! assert_eq!(doc["cpu_percent"], 42.5);
//! ```
//!
//! Depends on: the official `elasticsearch` client, `sqlvigil-core` (the `Sink` and
//! `Reader` it implements, `Stats`), `sqlvigil-model`, serde_json, tokio.
//! Must not touch: the bus, the operators, the embedded store or the API — the runtime
//! builds this crate's backend and the API reads it through `Reader`, never the reverse.

pub mod backend;
pub mod client;
pub mod config;
pub mod encode;
pub mod layout;
pub mod normalize;
pub mod read;
pub mod sink;

pub use client::{Auth, Connection, Elastic};
pub use config::ElasticConfig;
pub use read::ElasticReader;
pub use sink::ElasticSink;

/// Errors of the Elastic client side.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A connection setting is unusable (bad URL, unreadable CA file).
    #[error("elastic connection settings: {0}")]
    Config(String),
    /// Could not reach Elasticsearch (connection refused, timeout, TLS): retryable.
    #[error("elasticsearch at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// Elasticsearch answered with an error status.
    #[error("elasticsearch {what} answered {status}: {reason}")]
    Status {
        what: String,
        status: u16,
        reason: String,
        /// Seconds from a `Retry-After` header, when given.
        retry_after: Option<u64>,
    },
    /// The index layout cannot be installed as configured (e.g. a conflicting template).
    #[error("index layout: {0}")]
    Layout(String),
    #[error("unexpected elasticsearch response to {what}: {reason}")]
    Response { what: String, reason: String },
    /// The sink's disk queue could not be read or written.
    #[error("elastic queue {what} {}: {source}", path.display())]
    Queue {
        what: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An invariant of the sink broke (a bug).
    #[error("{0}")]
    Invariant(String),
}

/// What the caller can do: fix the config, retry later, or report a failure.
impl From<BridgeError> for sqlvigil_core::Error {
    fn from(e: BridgeError) -> Self {
        use sqlvigil_core::Error;
        match e {
            BridgeError::Config(m) | BridgeError::Layout(m) => Error::Config(m),
            e if e.is_retryable() => Error::Unavailable(e.to_string()),
            BridgeError::Queue { what, path, source } => {
                Error::io(format!("elastic queue {what} {}", path.display()), source)
            }
            BridgeError::Invariant(m) => Error::Bug(m),
            e => Error::failed("elasticsearch", e),
        }
    }
}

impl BridgeError {
    /// Worth retrying later: the cluster is unreachable, overloaded or failing.
    pub fn is_retryable(&self) -> bool {
        match self {
            BridgeError::Unreachable { .. } => true,
            BridgeError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            BridgeError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub type Result<T, E = BridgeError> = std::result::Result<T, E>;
