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

/// OTLP severity text for a severity number.
pub fn severity_text(number: i32) -> &'static str {
    match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "UNSPECIFIED",
    }
}

/// The lowest OTLP severity number of a severity text (0 when unknown).
pub fn severity_number(text: &str) -> i32 {
    match text.to_ascii_uppercase().as_str() {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" | "INFORMATION" | "INFORMATIONAL" => 9,
        "WARN" | "WARNING" => 13,
        "ERROR" => 17,
        "FATAL" | "CRITICAL" => 21,
        _ => 0,
    }
}
