//! The OpenTelemetry Collector `sqlserver` receiver's schema as data: every metric
//! (default and optional) with unit, instrument, attributes and the receiver mode that
//! emits it, and every event. [`receiver`] is generated from the receiver's
//! `metadata.yaml` (kept at `tests/fixtures/sqlserverreceiver/metadata.yaml`, the
//! upstream commit in [`SOURCE_COMMIT`]) by `scripts/catalogue.py`, which also says how
//! to refresh it; a test fails while the two disagree.
//!
//! On top of the receiver's own schema, sqlvigil adds: the flat aliases of seed 002
//! (`cpu_percent`, …) that rules and Elastic documents may use, the unit sqlvigil stores
//! where the receiver's versions disagree ([`unit_of`]), and the series the operators
//! derive (`<metric>.per_second`, [`LATENCY_PER_OPERATION`]).
//!
//! The receiver's `…/s` gauges mean different things by mode: the Windows perf-counter
//! scraper sends true per-second rates, the direct-connection scraper sends SQL Server's
//! raw cumulative `cntr_value` under the same names (upstream issue #50772).
//! [`is_per_second_by_mode`] names them; the rate operator decides per series which one
//! it is seeing.

mod receiver;

use crate::MetricKind;
use std::collections::HashMap;
use std::sync::LazyLock;

pub use receiver::{EVENTS, METRICS, SOURCE_COMMIT};

/// Which of the receiver's scrapers emits a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Both,
    /// Only the Windows perf-counter scraper (`metadata.yaml`: "only available when
    /// running on Windows").
    Windows,
    /// Only a direct connection to SQL Server (the only mode on Linux and in containers).
    Direct,
}

/// How an instance's receiver reads SQL Server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverMode {
    /// Windows performance counters.
    Windows,
    /// A direct connection (DMV queries).
    Direct,
}

impl ReceiverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverMode::Windows => "windows",
            ReceiverMode::Direct => "direct",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ReceiverMode::Windows => "Windows performance counters",
            ReceiverMode::Direct => "a direct connection",
        }
    }
}

impl Mode {
    pub fn emits_in(self, mode: ReceiverMode) -> bool {
        matches!(
            (self, mode),
            (Mode::Both, _)
                | (Mode::Windows, ReceiverMode::Windows)
                | (Mode::Direct, ReceiverMode::Direct)
        )
    }
}

/// One metric of the receiver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    /// The unit in the receiver's metadata (typographic quotes removed).
    pub unit: &'static str,
    pub kind: MetricKind,
    pub monotonic: bool,
    /// Point attribute keys.
    pub attributes: &'static [&'static str],
    /// On without configuration in the receiver.
    pub enabled_by_default: bool,
    pub mode: Mode,
    pub description: &'static str,
}

/// One event (a log record with an event name) of the receiver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventDef {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub attributes: &'static [&'static str],
    pub description: &'static str,
}

/// The receiver's top-query event: one query's resource use since the previous scrape.
pub const TOP_QUERY_EVENT: &str = "db.server.top_query";
/// The receiver's query-sample event: one active request (session, wait, blocker).
pub const QUERY_SAMPLE_EVENT: &str = "db.server.query_sample";

static BY_NAME: LazyLock<HashMap<&'static str, &'static MetricDef>> =
    LazyLock::new(|| METRICS.iter().map(|m| (m.name, m)).collect());

/// Look a metric up by its receiver name.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    BY_NAME.get(name).copied()
}

/// Look an event up by its name.
pub fn event(name: &str) -> Option<&'static EventDef> {
    EVENTS.iter().find(|e| e.name == name)
}

/// Where the receiver's versions disagree on a unit, the one sqlvigil stores (points
/// in the other are converted by the unit operator): `sqlserver.cpu.utilization` was
/// proposed as a `1` fraction (upstream #49862 / PR #49798; the metadata and golden
/// copied here have `1`), while builds of the receiver have sent `%` 0–100; rules
/// (`cpu_percent > 85`) and dashboards read 0–100 either way.
pub const UNIT_OVERRIDES: &[(&str, &str)] = &[("sqlserver.cpu.utilization", "%")];

/// The unit sqlvigil stores `def` in.
pub fn unit_of(def: &MetricDef) -> &'static str {
    UNIT_OVERRIDES
        .iter()
        .find(|(m, _)| *m == def.name)
        .map_or(def.unit, |(_, u)| u)
}

/// The receiver mode a metric gives away: only the Windows perf-counter scraper sends
/// the Windows-only ones, only a direct connection the direct-only ones.
pub fn mode_evidence(name: &str) -> Option<ReceiverMode> {
    match metric(name)?.mode {
        Mode::Windows => Some(ReceiverMode::Windows),
        Mode::Direct => Some(ReceiverMode::Direct),
        Mode::Both => None,
    }
}

/// What a rule reads, in receiver metrics (from [`receiver_metrics_of`] its series).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleNeeds {
    pub rule: String,
    pub metrics: Vec<&'static str>,
}

/// A rule that cannot fire for an instance read in `mode`, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub rule: String,
    pub mode: ReceiverMode,
    /// The receiver metric the mode does not send.
    pub metric: &'static str,
    pub reason: String,
}

impl RuleNeeds {
    /// Why this rule cannot fire in `mode`, if it cannot.
    pub fn gap(&self, mode: ReceiverMode) -> Option<Gap> {
        let missing = self
            .metrics
            .iter()
            .find(|m| metric(m).is_some_and(|d| !d.mode.emits_in(mode)))?;
        let only = match mode {
            ReceiverMode::Windows => ReceiverMode::Direct,
            ReceiverMode::Direct => ReceiverMode::Windows,
        };
        Some(Gap {
            rule: self.rule.clone(),
            mode,
            metric: missing,
            reason: format!(
                "rule `{}` reads {missing}, which the sqlserver receiver sends only through {}: it cannot fire for instances read through {}",
                self.rule,
                only.describe(),
                mode.describe()
            ),
        })
    }
}

/// The mode an instance's receiver runs in, from the metric names it sends (None when
/// nothing it sends gives the mode away).
pub fn mode_of<'a>(metrics: impl IntoIterator<Item = &'a str>) -> Option<ReceiverMode> {
    metrics.into_iter().find_map(mode_evidence)
}

/// A `…/s` gauge whose value is a rate with Windows perf counters and a running total
/// with a direct connection. Also any `sqlserver.*.rate` gauge a newer receiver adds.
pub fn is_per_second_by_mode(name: &str) -> bool {
    match metric(name) {
        Some(def) => def.kind == MetricKind::Gauge && def.unit.ends_with("/s"),
        None => name.starts_with("sqlserver.") && name.ends_with(".rate"),
    }
}

/// Whether the operators derive a `.per_second` series from `def`.
pub fn has_rate(def: &MetricDef) -> bool {
    (def.kind == MetricKind::CumulativeSum && def.monotonic) || is_per_second_by_mode(def.name)
}

/// Average I/O stall per operation on a file (seconds), derived by the rate operator
/// from `sqlserver.database.latency` and `sqlserver.database.operations` of the same
/// file and direction — the classic `io_stall_read_ms / num_of_reads` of
/// `sys.dm_io_virtual_file_stats`, which no single receiver metric gives.
pub const LATENCY_PER_OPERATION: &str = "sqlserver.database.latency.per_operation";

/// Series the operators derive that are not `<metric>.per_second` rates.
pub const DERIVED: &[&str] = &[LATENCY_PER_OPERATION];

/// Name of the per-second series the rate operator derives from `metric`.
pub fn rate_name(metric: &str) -> String {
    format!("{metric}.per_second")
}

/// The receiver metrics a series is computed from: itself, the metric of a
/// `<metric>.per_second` or window series (`<metric>.<stat>_<window>`), or both inputs
/// of a derived series. Aliases are resolved first. Empty for series of other sources.
pub fn receiver_metrics_of(series: &str) -> Vec<&'static str> {
    let series = resolve_alias(series).unwrap_or(series);
    if series == LATENCY_PER_OPERATION {
        return vec![
            "sqlserver.database.latency",
            "sqlserver.database.operations",
        ];
    }
    METRICS
        .iter()
        .filter(|m| {
            series == m.name
                || series
                    .strip_prefix(m.name)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|m| m.name.len())
        .map(|m| vec![m.name])
        .unwrap_or_default()
}

/// Seed 002 / rule aliases → the series name they read (derived rate series end in
/// `.per_second`). Aliases always mean the unit sqlvigil stores: `cpu_percent` is 0–100.
pub const ALIASES: &[(&str, &str)] = &[
    ("cpu_percent", "sqlserver.cpu.utilization"),
    ("user_connections", "sqlserver.user.connection.count"),
    ("blocked_processes", "sqlserver.processes.blocked"),
    ("lock_wait_time_avg_ms", "sqlserver.lock.wait_time.avg"),
    ("lock_waits_per_sec", "sqlserver.lock.wait.rate.per_second"),
    (
        "lock_timeouts_per_sec",
        "sqlserver.lock.timeout.rate.per_second",
    ),
    (
        "batch_requests_per_sec",
        "sqlserver.batch.request.rate.per_second",
    ),
    (
        "compilations_per_sec",
        "sqlserver.batch.sql_compilation.rate.per_second",
    ),
    (
        "recompilations_per_sec",
        "sqlserver.batch.sql_recompilation.rate.per_second",
    ),
    ("deadlocks_per_sec", "sqlserver.deadlock.rate.per_second"),
    (
        "page_splits_per_sec",
        "sqlserver.page.split.rate.per_second",
    ),
    ("logins_per_sec", "sqlserver.login.rate.per_second"),
    (
        "full_scans_per_sec",
        "sqlserver.database.full_scan.rate.per_second",
    ),
    (
        "buffer_cache_hit_ratio",
        "sqlserver.page.buffer_cache.hit_ratio",
    ),
    ("page_life_expectancy", "sqlserver.page.life_expectancy"),
    ("log_used_percent", "sqlserver.transaction_log.usage"),
    (
        "memory_grants_pending",
        "sqlserver.memory.grants.pending.count",
    ),
    (
        "physical_io_bytes_per_sec",
        "sqlserver.database.io.per_second",
    ),
    (
        "io_stall_seconds_per_sec",
        "sqlserver.database.latency.per_second",
    ),
    ("io_seconds_per_operation", LATENCY_PER_OPERATION),
    (
        "wait_seconds_per_sec",
        "sqlserver.os.wait.duration.per_second",
    ),
];

/// The series name an alias stands for.
pub fn resolve_alias(alias: &str) -> Option<&'static str> {
    ALIASES.iter().find(|(a, _)| *a == alias).map(|(_, m)| *m)
}

#[cfg(test)]
mod tests;
