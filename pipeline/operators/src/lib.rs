//! Stream operators over micro-batches, and the one builder of their chain.
//!
//! A micro-batch is the decoded samples of a handful of bus records. [`chain`] builds the
//! chain from the config — the same for `run`, `demo`, `replay`, `eval` and the
//! benchmarks — in data-flow order: [`units::UnitOperator`] (values to the catalogue's
//! unit), [`rate::RateOperator`] (cumulative counters → per-second series; the
//! receiver's `…/s` gauges classified per series as running totals or true rates), [`window::WindowOperator`] (event-time windows → aggregate
//! series), then [`rules::RuleOperator`] (threshold rules such as `cpu_percent > 85 for
//! 5m`, whose predicates DataFusion evaluates over Arrow batches; baseline deviation
//! against [`baseline`] estimators; rate of change; absence), each reading the batch and
//! adding derived samples or anomaly events to it. [`config`] is the `operators:`
//! section.
//!
//! Per-series state is columnar: each operator interns series ids
//! ([`SeriesKey::id`](sqlvigil_model::SeriesKey::id), the stable public id) into dense
//! `u32` slots ([`series::SeriesRegistry`]) and keeps the per-series scalars in `Vec`s
//! indexed by slot, with the rare heavy parts (open anomaly, evidence, median/MAD ring,
//! seasonal profile, change history) allocated only when needed. Slots of idle series
//! are reused. About 180 B of RSS per active series with the default rules (measured by
//! `sqlvigil-bench operators`; the byte tables are in [`rate`] and [`rules::state`]).
//! Checkpoints are JSON keyed by series id, so they do not depend on slot numbers.
//!
//! Depends on: `sqlvigil-core` (the `Operator` trait), `sqlvigil-model`, DataFusion.
//! Must not touch the bus, the stores or any I/O: a chain is data in, data out.

pub mod baseline;
pub mod chain;
pub mod config;
pub mod error;
mod memo;
pub mod rate;
pub mod rules;
pub mod series;
pub mod units;
pub mod window;

/// Series silent for this long (event time) have their operator state dropped, unless
/// an anomaly is open on them, so memory follows the active series, not all ever seen.
pub const DEFAULT_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Drop idle state at most every this fraction of the idle period (event time).
pub(crate) fn expiry_due(watermark: i64, last_sweep: &mut i64, idle_ns: i64) -> bool {
    if watermark.saturating_sub(*last_sweep) < idle_ns / 4 {
        return false;
    }
    *last_sweep = watermark;
    true
}
