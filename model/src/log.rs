//! SQL Server log lines (the `mssql-logs-*` shape).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    /// OTLP severity text (`ERROR`, `INFO`, …), derived from the number when absent.
    pub severity: String,
    pub severity_number: i32,
    pub message: String,
    /// `log.category` attribute or the scope name.
    pub category: String,
    pub instance: String,
    pub host: String,
    pub attributes: BTreeMap<String, String>,
}
