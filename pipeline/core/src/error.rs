//! The contracts' error: every trait of this crate returns it, and every component
//! crate's own error converts into it, keeping its kind.
//!
//! Each variant is a *kind*: it tells the caller what to do about the failure.
//!
//! | variant | the caller should |
//! |---|---|
//! | `Config`, `Rule` | fix the configuration (the message names the field or rule) |
//! | `Invalid` | tell the sender its input is wrong; retrying will not help |
//! | `Unsupported` | use the backend or setting the message names |
//! | `NotFound` | ask for something that exists (the message names what is missing) |
//! | `RateLimited` | wait `retry_after`, then ask again |
//! | `Full`, `Unavailable` | retry later ([`Error::is_retryable`]): back-pressure or a dependency away |
//! | `Io`, `Failed` | stop the component and report it: storage, a query or a dependency failed for good |
//! | `Bug` | report it: an invariant of sqlvigil itself broke (a panicked task, a lost chain) |

use thiserror::Error;

/// Any error a component may carry inside (its own crate's error, a library's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum Error {
    /// A configuration value is wrong; the message names the field.
    #[error("invalid config: {0}")]
    Config(String),
    /// A rule cannot be used; the message names the rule and the field.
    #[error("rule `{rule}`: {message}")]
    Rule { rule: String, message: String },
    /// Input from outside (a request, a record, a stored document) is malformed.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The configured backend cannot answer this question; the message says what can.
    #[error("{0}")]
    Unsupported(String),
    /// The thing asked for does not exist (an instance the monitor does not know).
    #[error("{0}")]
    NotFound(String),
    /// Asked too often; the same request succeeds after `retry_after`.
    #[error("{what}: rate limited, retry in {}s", retry_after.as_secs().max(1))]
    RateLimited {
        what: String,
        retry_after: std::time::Duration,
    },
    /// A topic is at capacity; the publisher should retry later.
    #[error("topic `{0}` is full, retry later")]
    Full(String),
    /// A dependency (broker, Elasticsearch, LLM server) is unreachable, overloaded or did
    /// not answer in time: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Local I/O failed (disk full, permissions, a file that vanished).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An operation failed for good: a query, an encoding, a dependency's refusal.
    #[error("{context}: {source}")]
    Failed {
        context: String,
        #[source]
        source: BoxError,
    },
    /// An invariant of sqlvigil broke: a bug to report, not a condition to handle.
    #[error("internal error (a bug in sqlvigil): {0}")]
    Bug(String),
}

impl Error {
    /// Whether a client should retry (maps to gRPC UNAVAILABLE / HTTP 503).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Full(_) | Error::Unavailable(_))
    }

    /// `Failed` with `context` naming what was being done.
    pub fn failed(context: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Failed {
            context: context.into(),
            source: source.into(),
        }
    }

    /// `Io` with `context` naming the file or operation.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A panicked or cancelled task: always a bug, never a condition to handle.
    pub fn task(what: &str, e: tokio::task::JoinError) -> Error {
        Error::Bug(format!("{what} task failed: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::failed("json", e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
