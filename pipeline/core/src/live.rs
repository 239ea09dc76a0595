//! The live monitor as the rest of the pipeline sees it: the latest DMV snapshot of an
//! instance, a new one on demand, and how each instance's collectors are doing.
//! `sqlvigil-monitor` implements it; the API and analytics hold an `Arc<dyn Live>`
//! and never touch a SQL Server connection themselves.

use crate::error::Result;
use crate::health::prometheus_label;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlvigil_model::live::{CollectorKind, LiveSnapshot};
use std::sync::Arc;

/// How one instance's live monitoring is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub instance: String,
    /// The last attempt connected and logged in.
    pub reachable: bool,
    pub last_snapshot: Option<DateTime<Utc>>,
    pub snapshots: u64,
    /// The last connection failure, if the last attempt failed.
    pub connection_error: Option<CollectorFailure>,
    /// Per collector: its runs, failures and last failure.
    pub collectors: Vec<CollectorStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorStatus {
    pub collector: CollectorKind,
    pub runs: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub last_duration_ms: u64,
    pub last_error: Option<CollectorFailure>,
}

/// A failure with the SQL Server error number when the server gave one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorFailure {
    pub at: DateTime<Utc>,
    pub number: Option<u32>,
    pub message: String,
}

#[crate::async_trait]
pub trait Live: Send + Sync {
    /// The instances the monitor connects to, with their status.
    fn status(&self) -> Vec<LiveStatus>;
    /// The newest snapshot of `instance`, if one was taken.
    fn latest(&self, instance: &str) -> Option<Arc<LiveSnapshot>>;
    /// Take a snapshot now: all collectors, or only `only`. `NotFound` for an instance
    /// the monitor does not know; `RateLimited` when asked too often.
    async fn snapshot(
        &self,
        instance: &str,
        only: Option<CollectorKind>,
        trigger: &str,
    ) -> Result<Arc<LiveSnapshot>>;
    /// The moment of an anomaly that opened at `opened_at`: the newest snapshot when it
    /// was taken after that, else a new one (not rate-limited, at most one in flight per
    /// instance). `None` when the instance is not monitored or cannot be reached.
    async fn for_anomaly(
        &self,
        instance: &str,
        opened_at: DateTime<Utc>,
        trigger: &str,
    ) -> Option<Arc<LiveSnapshot>>;
}

/// The live monitor's state in Prometheus text format: per instance whether it is
/// reachable and its snapshots; per collector its runs, failures, timeouts, last
/// duration, and the SQL Server error number of a failing one.
pub fn render(statuses: &[LiveStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    type Field = fn(&LiveStatus) -> f64;
    let per_instance: [(&str, &str, &str, Field); 2] = [
        (
            "instance_up",
            "gauge",
            "1 when the last connection to the instance succeeded.",
            |s| s.reachable as u8 as f64,
        ),
        (
            "snapshots_total",
            "counter",
            "Snapshots taken of the instance.",
            |s| s.snapshots as f64,
        ),
    ];
    for (name, kind, help, field) in per_instance {
        let _ = writeln!(
            out,
            "# HELP sqlvigil_monitor_{name} {help}\n# TYPE sqlvigil_monitor_{name} {kind}"
        );
        for s in statuses {
            let _ = writeln!(
                out,
                "sqlvigil_monitor_{name}{{instance=\"{}\"}} {}",
                prometheus_label(&s.instance),
                field(s)
            );
        }
    }
    type CField = fn(&CollectorStatus) -> f64;
    let per_collector: [(&str, &str, &str, CField); 4] = [
        (
            "collector_runs_total",
            "counter",
            "Runs of the collector's query.",
            |c| c.runs as f64,
        ),
        (
            "collector_failures_total",
            "counter",
            "Runs that failed (server error, timeout, broken connection).",
            |c| c.failures as f64,
        ),
        (
            "collector_timeouts_total",
            "counter",
            "Runs cancelled at the query timeout.",
            |c| c.timeouts as f64,
        ),
        (
            "collector_duration_seconds",
            "gauge",
            "How long the last run took.",
            |c| c.last_duration_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, field) in per_collector {
        let _ = writeln!(
            out,
            "# HELP sqlvigil_monitor_{name} {help}\n# TYPE sqlvigil_monitor_{name} {kind}"
        );
        for s in statuses {
            for c in &s.collectors {
                let _ = writeln!(
                    out,
                    "sqlvigil_monitor_{name}{{instance=\"{}\",collector=\"{}\"}} {}",
                    prometheus_label(&s.instance),
                    c.collector,
                    field(c)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP sqlvigil_monitor_collector_failing 1 while the collector's last run failed, with the SQL Server error number (0: none given).\n# TYPE sqlvigil_monitor_collector_failing gauge"
    );
    for s in statuses {
        for c in &s.collectors {
            if let Some(e) = &c.last_error {
                let _ = writeln!(
                    out,
                    "sqlvigil_monitor_collector_failing{{instance=\"{}\",collector=\"{}\",number=\"{}\"}} 1",
                    prometheus_label(&s.instance),
                    c.collector,
                    e.number.unwrap_or(0)
                );
            }
        }
    }
    out
}
