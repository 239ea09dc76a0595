//! Deltas of cumulative DMV counters between two samples (waits, query stats, file IO),
//! like sp_BlitzFirst: a counter that went down, or a new `sqlserver_start_time`, means
//! the instance restarted (or the DMV was cleared), and the new values count from zero.

use crate::cells::Cells;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tiberius::Row;

/// Cumulative values of one key (a wait type, a query, a file).
pub(crate) trait Cumulative: Clone {
    /// `self - earlier`; `None` when any counter went down.
    fn minus(&self, earlier: &Self) -> Option<Self>;
    /// A key the earlier sample did not have: what of it falls in the interval (all of
    /// it by default; a cached plan compiled before `since` is not known, so dropped).
    fn appeared(&self, _since: DateTime<Utc>) -> Option<Self> {
        Some(self.clone())
    }
}

/// One sample of a cumulative DMV.
#[derive(Debug, Clone)]
pub(crate) struct Sample<V> {
    pub taken: DateTime<Utc>,
    /// `sqlserver_start_time`, when the DMV query reads it.
    pub start: Option<DateTime<Utc>>,
    pub values: HashMap<String, V>,
}

/// A sample of `rows`: each read as (key, counters) by `read`; the start time from the
/// `sqlserver_start_time` column when the query has one.
pub(crate) fn sample<V>(
    rows: &[Row],
    taken: DateTime<Utc>,
    read: impl Fn(&Cells) -> Option<(String, V)>,
) -> Sample<V> {
    let start = rows
        .first()
        .and_then(|r| Cells(r).time("sqlserver_start_time"));
    let values = rows.iter().filter_map(|r| read(&Cells(r))).collect();
    Sample {
        taken,
        start,
        values,
    }
}

/// The interval's deltas per key and whether the counters were reset in between.
pub(crate) fn deltas<V: Cumulative>(
    earlier: &Sample<V>,
    now: &Sample<V>,
) -> (Vec<(String, V)>, bool) {
    let restarted = matches!((earlier.start, now.start), (Some(a), Some(b)) if a != b);
    if !restarted {
        let mut out = Vec::with_capacity(now.values.len());
        let mut went_down = false;
        for (key, v) in &now.values {
            let delta = match earlier.values.get(key) {
                Some(before) => match v.minus(before) {
                    Some(d) => Some(d),
                    None => {
                        went_down = true;
                        break;
                    }
                },
                None => v.appeared(earlier.taken),
            };
            out.extend(delta.map(|d| (key.clone(), d)));
        }
        if !went_down {
            return (out, false);
        }
    }
    let all = now
        .values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (all, true)
}

/// Field-wise `a - b` of counter arrays; `None` when any went down.
pub(crate) fn sub<const N: usize>(a: [i64; N], b: [i64; N]) -> Option<[i64; N]> {
    let mut out = [0; N];
    for i in 0..N {
        out[i] = a[i].checked_sub(b[i]).filter(|d| *d >= 0)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct C([i64; 2]);
    impl Cumulative for C {
        fn minus(&self, e: &Self) -> Option<Self> {
            sub(self.0, e.0).map(C)
        }
    }

    fn sample(start: i64, values: &[(&str, [i64; 2])]) -> Sample<C> {
        Sample {
            taken: Utc::now(),
            start: DateTime::from_timestamp(start, 0),
            values: values.iter().map(|(k, v)| (k.to_string(), C(*v))).collect(),
        }
    }

    #[test]
    fn deltas_and_resets() {
        let a = sample(1, &[("x", [10, 100]), ("y", [1, 1])]);
        let b = sample(1, &[("x", [15, 160]), ("y", [1, 1]), ("z", [2, 3])]);
        let (mut d, reset) = deltas(&a, &b);
        d.sort_by(|l, r| l.0.cmp(&r.0));
        assert!(!reset);
        assert_eq!(
            d,
            vec![
                ("x".into(), C([5, 60])),
                ("y".into(), C([0, 0])),
                ("z".into(), C([2, 3]))
            ]
        );
        // A counter went down: everything counts from zero.
        let c = sample(1, &[("x", [3, 30])]);
        assert_eq!(deltas(&b, &c), (vec![("x".into(), C([3, 30]))], true));
        // A restart with counters already above the old ones is still a reset.
        let d2 = sample(2, &[("x", [50, 500])]);
        assert!(deltas(&b, &d2).1);
    }
}
