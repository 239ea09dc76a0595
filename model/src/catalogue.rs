//! The metrics the OpenTelemetry Collector's `sqlserver` receiver emits (names, units,
//! kinds and point attributes as in its `metadata.yaml`), and the flat aliases from
//! seed 002 (`cpu_percent`, …) that rules and Elastic documents may use instead.
//!
//! In direct-connection mode the receiver reports SQL Server's `…/sec` performance
//! counters (`sqlserver.batch.request.rate`, …) as the raw `cntr_value`, which is a
//! running total despite the name: [`MetricDef::raw_counter`] marks those so the rate
//! operator differentiates them like cumulative sums.

use crate::MetricKind;

/// One metric of the receiver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: MetricKind,
    pub monotonic: bool,
    /// Point attribute keys.
    pub attributes: &'static [&'static str],
    /// A `…/sec` counter sent as a running total in direct-connection mode.
    pub raw_counter: bool,
    pub description: &'static str,
}

const fn gauge(name: &'static str, unit: &'static str, description: &'static str) -> MetricDef {
    MetricDef {
        name,
        unit,
        kind: MetricKind::Gauge,
        monotonic: false,
        attributes: &[],
        raw_counter: false,
        description,
    }
}

const fn counter(name: &'static str, unit: &'static str, description: &'static str) -> MetricDef {
    MetricDef {
        raw_counter: true,
        ..gauge(name, unit, description)
    }
}

const fn cumulative(
    name: &'static str,
    unit: &'static str,
    monotonic: bool,
    attributes: &'static [&'static str],
    description: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        unit,
        kind: MetricKind::CumulativeSum,
        monotonic,
        attributes,
        raw_counter: false,
        description,
    }
}

const FILE_ATTRS: &[&str] = &[
    "physical_filename",
    "logical_filename",
    "file_type",
    "direction",
];

/// The receiver's metrics that sqlvigil knows by name.
pub const METRICS: &[MetricDef] = &[
    gauge(
        "sqlserver.cpu.utilization",
        "%",
        "Host CPU utilization seen by the SQL Server scheduler monitor.",
    ),
    gauge(
        "sqlserver.user.connection.count",
        "{connections}",
        "Number of users connected to the SQL Server.",
    ),
    gauge(
        "sqlserver.processes.blocked",
        "{processes}",
        "The number of processes that are currently blocked.",
    ),
    gauge(
        "sqlserver.lock.wait_time.avg",
        "ms",
        "Average wait time for all lock requests that had to wait.",
    ),
    counter(
        "sqlserver.lock.wait.rate",
        "{requests}/s",
        "Number of lock requests resulting in a wait.",
    ),
    counter(
        "sqlserver.batch.request.rate",
        "{requests}/s",
        "Number of batch requests received by SQL Server.",
    ),
    counter(
        "sqlserver.batch.sql_compilation.rate",
        "{compilations}/s",
        "Number of SQL compilations needed.",
    ),
    counter(
        "sqlserver.batch.sql_recompilation.rate",
        "{compilations}/s",
        "Number of SQL recompilations needed.",
    ),
    counter(
        "sqlserver.deadlock.rate",
        "{deadlocks}/s",
        "Total number of deadlocks.",
    ),
    counter(
        "sqlserver.page.split.rate",
        "{pages}/s",
        "Number of pages split as a result of overflowing index pages.",
    ),
    counter(
        "sqlserver.transaction.rate",
        "{transactions}/s",
        "Number of transactions started for the database.",
    ),
    gauge(
        "sqlserver.page.buffer_cache.hit_ratio",
        "%",
        "Pages found in the buffer pool without having to read from disk.",
    ),
    gauge(
        "sqlserver.page.life_expectancy",
        "s",
        "Time a page will stay in the buffer pool.",
    ),
    gauge(
        "sqlserver.transaction_log.usage",
        "%",
        "Percent of transaction log space used.",
    ),
    cumulative(
        "sqlserver.transaction_log.growth.count",
        "{growths}",
        true,
        &[],
        "Total number of transaction log expansions for a database.",
    ),
    cumulative(
        "sqlserver.database.io",
        "By",
        true,
        FILE_ATTRS,
        "The number of bytes of I/O on this file.",
    ),
    cumulative(
        "sqlserver.database.latency",
        "s",
        true,
        FILE_ATTRS,
        "Total time that the users waited for I/O issued on this file.",
    ),
    cumulative(
        "sqlserver.database.operations",
        "{operations}",
        true,
        FILE_ATTRS,
        "The number of operations issued on the file.",
    ),
    cumulative(
        "sqlserver.database.tempdb.space",
        "KB",
        false,
        &["tempdb.state"],
        "Total free space in temporary DB.",
    ),
    cumulative(
        "sqlserver.os.wait.duration",
        "s",
        true,
        &["wait.category", "wait.type"],
        "Total wait time for this wait type.",
    ),
];

/// Look a metric up by its receiver name.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// Name of the per-second series the rate operator derives from `metric`.
/// Average I/O stall per operation on a file (seconds), derived by the rate operator
/// from `sqlserver.database.latency` and `sqlserver.database.operations` of the same
/// file and direction — the classic `io_stall_read_ms / num_of_reads` of
/// `sys.dm_io_virtual_file_stats`, which no single receiver metric gives.
pub const LATENCY_PER_OPERATION: &str = "sqlserver.database.latency.per_operation";

/// Series the operators derive that are not `<metric>.per_second` rates.
pub const DERIVED: &[&str] = &[LATENCY_PER_OPERATION];

pub fn rate_name(metric: &str) -> String {
    format!("{metric}.per_second")
}

/// Seed 002 / rule aliases → the series name they read (derived rate series end in
/// `.per_second`).
pub const ALIASES: &[(&str, &str)] = &[
    ("cpu_percent", "sqlserver.cpu.utilization"),
    ("user_connections", "sqlserver.user.connection.count"),
    ("blocked_processes", "sqlserver.processes.blocked"),
    ("lock_wait_time_avg_ms", "sqlserver.lock.wait_time.avg"),
    ("lock_waits_per_sec", "sqlserver.lock.wait.rate.per_second"),
    (
        "batch_requests_per_sec",
        "sqlserver.batch.request.rate.per_second",
    ),
    (
        "compilations_per_sec",
        "sqlserver.batch.sql_compilation.rate.per_second",
    ),
    ("deadlocks_per_sec", "sqlserver.deadlock.rate.per_second"),
    (
        "buffer_cache_hit_ratio",
        "sqlserver.page.buffer_cache.hit_ratio",
    ),
    ("page_life_expectancy", "sqlserver.page.life_expectancy"),
    ("log_used_percent", "sqlserver.transaction_log.usage"),
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
mod tests {
    use super::*;

    #[test]
    fn every_alias_points_at_a_known_metric_or_its_rate() {
        for (alias, target) in ALIASES.iter().filter(|(_, t)| !DERIVED.contains(t)) {
            let base = target.strip_suffix(".per_second").unwrap_or(target);
            let def = metric(base).unwrap_or_else(|| panic!("{alias} → unknown {target}"));
            let derived = target.ends_with(".per_second");
            let differentiable =
                def.raw_counter || (def.kind == MetricKind::CumulativeSum && def.monotonic);
            assert_eq!(derived, differentiable, "{alias}");
        }
    }
}
