//! `waits.sql` (`waits_azure.sql` on Azure SQL Database): cumulative waits, diffed into
//! the interval's waits per type with the receiver's wait categories; idle waits left out.

use super::counters::{deltas, sample, sub, Cumulative, Sample};
use sqlvigil_model::live::{wait_category, WaitRow};
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("waits.sql");
pub(crate) const SQL_AZURE: &str = include_str!("waits_azure.sql");

/// waiting tasks, wait time, signal wait time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Waits([i64; 3]);

impl Cumulative for Waits {
    fn minus(&self, earlier: &Self) -> Option<Self> {
        sub(self.0, earlier.0).map(Waits)
    }
}

pub(crate) fn parse(rows: &[Row], taken: chrono::DateTime<chrono::Utc>) -> Sample<Waits> {
    sample(rows, taken, |c| {
        let counters =
            ["waiting_tasks_count", "wait_time_ms", "signal_wait_time_ms"].map(|n| c.count(n));
        Some((c.text("wait_type")?, Waits(counters)))
    })
}

/// The waits between two samples, most wait time first; `true` when counters reset.
pub(crate) fn diff(earlier: &Sample<Waits>, now: &Sample<Waits>) -> (Vec<WaitRow>, bool) {
    let (d, reset) = deltas(earlier, now);
    let mut rows: Vec<WaitRow> = d
        .into_iter()
        .filter(|(w, v)| v.0[1] > 0 && wait_category(w) != "Idle")
        .map(|(wait_type, Waits([tasks, time, signal]))| WaitRow {
            wait_category: wait_category(&wait_type).to_string(),
            wait_type,
            waiting_tasks: tasks,
            wait_time_ms: time,
            signal_wait_time_ms: signal,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.wait_time_ms
            .cmp(&a.wait_time_ms)
            .then(a.wait_type.cmp(&b.wait_type))
    });
    (rows, reset)
}
