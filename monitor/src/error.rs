//! The live monitor's error: each kind says whether to fix the config, wait, or look at
//! the instance (the SQL Server error number and message travel with it).

use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MonitorError {
    /// A `monitor:` value is wrong; the message names the field.
    #[error("invalid config: {0}")]
    Config(String),
    /// The instance could not be reached or the TLS handshake failed: retry later.
    #[error("instance `{instance}`: cannot connect: {message}")]
    Connect { instance: String, message: String },
    /// The server answered with an error (login failed 18456, permission 297/300, …):
    /// fix the login or its grants; retrying as is will fail the same way.
    #[error("SQL Server error {number} (state {state}, class {class}): {message}")]
    Server {
        number: u32,
        state: u8,
        class: u8,
        message: String,
    },
    /// A connection or query took longer than its timeout (the query's connection is
    /// closed, so the server abandons it).
    #[error("{what} timed out after {}ms", after.as_millis())]
    Timeout { what: String, after: Duration },
    /// The connection broke or the server sent something the driver could not read:
    /// the connection is dropped and a new one made next time.
    #[error("{0}")]
    Protocol(String),
    /// No such instance in `monitor.instances`.
    #[error("instance `{0}` is not monitored (not in monitor.instances)")]
    UnknownInstance(String),
    /// Ad-hoc snapshots of one instance are limited to one per `adhoc_min_interval`.
    #[error("instance `{instance}`: ad-hoc snapshots are limited to one per {}s", every.as_secs().max(1))]
    RateLimited {
        instance: String,
        every: Duration,
        retry_after: Duration,
    },
}

pub type Result<T, E = MonitorError> = std::result::Result<T, E>;

impl MonitorError {
    /// The SQL Server error number, when the server gave one.
    pub fn number(&self) -> Option<u32> {
        match self {
            MonitorError::Server { number, .. } => Some(*number),
            _ => None,
        }
    }

    /// Whether the connection that saw this error can still be used (a server error
    /// leaves it usable; a timeout or broken stream does not).
    pub fn keeps_connection(&self) -> bool {
        matches!(self, MonitorError::Server { .. })
    }
}

impl From<tiberius::error::Error> for MonitorError {
    fn from(e: tiberius::error::Error) -> Self {
        match e {
            tiberius::error::Error::Server(t) => MonitorError::Server {
                number: t.code(),
                state: t.state(),
                class: t.class(),
                message: t.message().to_string(),
            },
            other => MonitorError::Protocol(other.to_string()),
        }
    }
}

impl From<MonitorError> for sqlvigil_core::Error {
    fn from(e: MonitorError) -> Self {
        use sqlvigil_core::Error as E;
        match e {
            MonitorError::Config(m) => E::Config(m),
            MonitorError::UnknownInstance(_) => E::NotFound(e.to_string()),
            MonitorError::RateLimited { retry_after, .. } => E::RateLimited {
                what: e.to_string(),
                retry_after,
            },
            MonitorError::Connect { .. } | MonitorError::Timeout { .. } => {
                E::Unavailable(e.to_string())
            }
            other => E::failed("live monitor", other),
        }
    }
}
