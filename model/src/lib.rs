//! Typed models that flow through sqlvigil, defined once.
//!
//! Everything downstream of the OTLP receiver speaks these types: [`Sample`] and
//! [`SeriesKey`] for metric points, [`LogRecord`] for SQL Server error-log lines,
//! [`Anomaly`] for rule firings, [`Insight`] for analyses, and [`live`] rows for DMV
//! snapshots. [`arrow_schema`] gives their columnar (Arrow) form used by the operators
//! and the Parquet store, and [`catalogue`] names the metrics the OpenTelemetry
//! Collector's `sqlserver` receiver emits together with the flat aliases
//! (`cpu_percent`, …) that rules and Elastic documents may use.
//!
//! [`query`] holds what a reader is asked and answers (filters, ranges, aggregates,
//! per-series statistics), and [`duration`] the serde form of config durations.
//!
//! Depends on: arrow, serde, chrono, humantime. Must not touch I/O, sockets, async runtimes or
//! any other sqlvigil crate — every crate depends on this one, never the reverse.
//!
//! ```
//! use sqlvigil_model::{SeriesKey, catalogue};
//! let key = SeriesKey::new("sql1", "db-host-1", "", "sqlserver.cpu.utilization");
//! assert_eq!(key.id(), key.clone().id());
//! assert_eq!(catalogue::resolve_alias("cpu_percent"), Some("sqlserver.cpu.utilization"));
//! ```

pub mod activity;
pub mod anomaly;
pub mod arrow_schema;
pub mod band;
pub mod catalogue;
pub mod duration;
pub mod feed;
pub mod handling;
pub mod insight;
pub mod live;
pub mod log;
pub mod query;
pub mod root_cause;
pub mod sample;
pub mod summary;

pub use activity::{Activity, BlockingChain, QuerySample};
pub use anomaly::{Anomaly, AnomalyEvent, AnomalyEventKind, AnomalyState, EvidencePoint, Severity};
pub use feed::{FeedEntry, FeedKind};
pub use handling::{ActionKind, AnomalyAction, Handled, Handling};
pub use insight::{AnalysisFailure, Insight};
pub use log::LogRecord;
pub use sample::{
    with_database, HistogramPoint, IdPrefix, MetricKind, Sample, SeriesKey, DATABASE_ATTR,
};
pub use summary::{BlockingEvent, IoSummary, TopQuery, WaitSummary};

/// Errors raised while converting between the typed and columnar forms.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("column `{0}` is missing or has the wrong type")]
    Column(&'static str),
    #[error("unknown metric kind `{0}`")]
    Kind(String),
}

/// Nanoseconds since the Unix epoch → UTC time (saturating at the representable range).
pub fn ns_to_datetime(ns: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_nanos(ns)
}
