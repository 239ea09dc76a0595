//! Which layout a `_source` is in.

use super::*;
use serde_json::{Map, Value};
use sqlvigil_model::catalogue::{self};

/// Flat fields that describe a session or a query rather than a metric.
pub(crate) const FLAT_EVENT_FIELDS: &[&str] = &[
    "blocking_session_id",
    "session_id",
    "query_hash",
    "execution_count",
];

/// Flat fields holding a receiver counter under another name and unit.
pub(crate) struct FlatCounter {
    pub(crate) field: &'static str,
    pub(crate) metric: &'static str,
    /// Multiplier from the flat unit to the receiver's.
    pub(crate) scale: f64,
    /// A field without which the value names no series.
    pub(crate) needs: Option<&'static str>,
    /// In a session row the field is that session's own value, not the counter.
    pub(crate) per_session: bool,
}

pub(crate) const FLAT_COUNTERS: &[FlatCounter] = &[
    // `sys.dm_os_wait_stats.wait_time_ms`; the receiver reports seconds.
    FlatCounter {
        field: "wait_time_ms",
        metric: "sqlserver.os.wait.duration",
        scale: 1.0 / 1000.0,
        needs: Some("wait_type"),
        per_session: true,
    },
    FlatCounter {
        field: "physical_io_bytes",
        metric: "sqlserver.database.io",
        scale: 1.0,
        needs: None,
        per_session: false,
    },
];

pub(crate) fn is_otel(obj: &Map<String, Value>) -> bool {
    let otel_dataset = find(obj, "data_stream.dataset")
        .and_then(|(_, v)| v.as_str())
        .is_some_and(|d| d.ends_with(".otel"));
    let otel_object = ["metrics", "resource", "scope", "body"]
        .iter()
        .any(|k| obj.get(*k).is_some_and(Value::is_object));
    otel_dataset
        || otel_object
        || obj.contains_key("severity_text")
        || obj.contains_key("observed_timestamp")
}

pub(crate) fn is_sqlvigil_log(obj: &Map<String, Value>) -> bool {
    obj.contains_key("message") && obj.contains_key("severity_number")
}

pub(crate) fn has_flat_metric(obj: &Map<String, Value>) -> bool {
    let alias = catalogue::ALIASES
        .iter()
        .any(|(a, target)| catalogue::metric(target).is_some() && obj.contains_key(*a));
    alias
        || FLAT_COUNTERS.iter().any(|c| obj.contains_key(c.field))
        || FLAT_EVENT_FIELDS.iter().any(|k| obj.contains_key(*k))
        || obj.contains_key("wait_type")
}

pub(crate) fn is_flat(obj: &Map<String, Value>) -> bool {
    has_flat_metric(obj) || is_flat_log(obj)
}

pub(crate) fn is_flat_log(obj: &Map<String, Value>) -> bool {
    (obj.contains_key("message") || obj.contains_key("severity")) && !has_flat_metric(obj)
}
