//! The root-cause chain of one anomaly, from the stored telemetry alone (the
//! receiver's wait statistics, its top-query and query-sample events) and from the live
//! monitor's DMV snapshot of the instance when there is one:
//!
//! 1. the window: the anomaly's life with a lead-in ([`LEAD_IN`]), capped at
//!    [`MAX_WINDOW`]; the baseline: the hour before it;
//! 2. waits: seconds waited per second by wait category in the window against the
//!    baseline (the `sqlserver.os.wait.duration` rate series), most increased first;
//! 3. the resource that moved (CPU, reads, or time: from the anomaly's metric, else the
//!    top wait category) ranks the window's top queries;
//! 4. the blocking chain with the most victims in the window, if any;
//! 5. other anomalies of the instance around the window.

use crate::error::AnalyticsError;

type Result<T> = std::result::Result<T, AnalyticsError>;
use chrono::{DateTime, Duration, Utc};
use sqlvigil_core::{Live, Reader};
use sqlvigil_model::activity::blocking_tree;
use sqlvigil_model::live::wait_category;
use sqlvigil_model::query::{AggregateRow, AnomalyFilter, GroupBy, Instances, MetricFilter, Range};
use sqlvigil_model::root_cause::{ChartRef, QueryShare, Resource, RootCause, WaitShift};
use sqlvigil_model::{Anomaly, TopQuery};
use std::collections::{BTreeMap, HashMap};

/// Looked at before the anomaly opened: causes come first.
pub const LEAD_IN: Duration = Duration::minutes(5);
/// The longest window looked at.
pub const MAX_WINDOW: Duration = Duration::hours(6);
const BASELINE: Duration = Duration::hours(1);
/// The receiver's wait statistics as sqlvigil stores their rate.
const WAIT_RATE: &str = "sqlserver.os.wait.duration.per_second";
const TOP_WAITS: usize = 5;
const TOP_QUERIES: usize = 5;
const RELATED: usize = 20;
/// Categories that are idle time, not load.
const IDLE: [&str; 2] = ["Idle", "User Wait"];

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Only [`sqlvigil_core::Error::Unsupported`] is a missing part; anything else fails.
fn optional<T>(r: sqlvigil_core::Result<T>) -> sqlvigil_core::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(sqlvigil_core::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The chain of `anomaly` as of `now`.
pub async fn root_cause(
    reader: &dyn Reader,
    live: Option<&dyn Live>,
    anomaly: &Anomaly,
    now: DateTime<Utc>,
) -> Result<RootCause> {
    let instance = anomaly.series.instance.to_string();
    let start = anomaly.opened_at - LEAD_IN;
    let end = anomaly
        .resolved_at
        .unwrap_or(now)
        .max(anomaly.updated_at)
        .min(anomaly.opened_at + MAX_WINDOW);
    let window = (start, end.max(start + Duration::seconds(1)));
    let baseline = (start - BASELINE, start);
    let chart = |metric: &str, group_by: Option<&str>| ChartRef {
        metric: metric.to_string(),
        instance: instance.clone(),
        group_by: group_by.map(str::to_string),
        series_id: None,
        from: baseline.0,
        to: window.1,
    };
    let mut sources = Vec::new();

    let wait_chart = chart(WAIT_RATE, Some("wait.type"));
    let waits = wait_shifts(reader, &instance, window, baseline, &wait_chart).await?;
    if waits.is_empty() {
        sources.push(format!(
            "waits: no {WAIT_RATE} series for {instance} in the window"
        ));
    } else {
        sources.push("waits: otlp".into());
    }
    let resource = resource_of(&anomaly.series.metric, waits.first());

    let range = Range::between(ns(window.0), ns(window.1));
    let only = Instances::one(instance.clone());
    let snapshot = live.and_then(|l| l.latest(&instance));
    let mut queries = optional(reader.top_queries(&range, &only, 200).await)?
        .map(|a| a.rows)
        .unwrap_or_default();
    if queries.is_empty() {
        if let Some(s) = &snapshot {
            queries = s.top_queries.clone();
            sources.push("top queries: live".into());
        }
    } else {
        sources.push("top queries: otlp".into());
    }
    let top_queries = ranked(queries, resource);

    let blocked = optional(reader.blocking(&range, &only, 10_000).await)?
        .map(|a| a.rows)
        .unwrap_or_default();
    let mut blocking_head = blocking_tree(&blocked, &HashMap::new()).into_iter().next();
    if blocking_head.is_some() {
        sources.push("blocking: otlp".into());
    } else if let Some(s) = &snapshot {
        blocking_head = s.blocking.first().cloned();
        if blocking_head.is_some() {
            sources.push("blocking: live".into());
        }
    }

    let related = related(reader, anomaly, window).await?;
    let mut rc = RootCause {
        anomaly: anomaly.clone(),
        chart: ChartRef {
            series_id: Some(anomaly.series_id.clone()),
            ..chart(&anomaly.series.metric, None)
        },
        window,
        baseline,
        waits,
        resource,
        top_queries,
        blocking_head,
        related,
        summary: String::new(),
        sources,
    };
    rc.summary = summary(&rc);
    Ok(rc)
}

/// Mean seconds waited per second per wait type over `rows` (points-weighted).
fn per_type(rows: &[AggregateRow]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for r in rows {
        let e = sums.entry(r.group.clone()).or_default();
        e.0 += r.avg * r.points as f64;
        e.1 += r.points;
    }
    sums.into_iter()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(k, (sum, n))| (k, sum / n as f64))
        .collect()
}

/// A wait category's seconds per second in the window and the baseline, and each of its
/// types' increase.
type Category = (f64, f64, Vec<(String, f64)>);

/// The wait categories of `instance` by how much more they waited in `window` than in
/// `baseline`, each charted by `chart`.
async fn wait_shifts(
    reader: &dyn Reader,
    instance: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
    baseline: (DateTime<Utc>, DateTime<Utc>),
    chart: &ChartRef,
) -> Result<Vec<WaitShift>> {
    let read = |(from, to): (DateTime<Utc>, DateTime<Utc>)| {
        let f = MetricFilter {
            metric: Some(WAIT_RATE.into()),
            instances: Instances::one(instance),
            from_ns: Some(ns(from)),
            to_ns: Some(ns(to)),
            ..Default::default()
        };
        async move {
            let step = (ns(to) - ns(from)).max(1_000_000_000);
            reader.aggregates(&f, step, GroupBy::WaitType).await
        }
    };
    let (now, before) = tokio::try_join!(read(window), read(baseline))?;
    let (now, before) = (per_type(&now), per_type(&before));
    // Per category: window and baseline, and each type's increase.
    let mut cats: BTreeMap<&str, Category> = BTreeMap::new();
    for (wait_type, w) in &now {
        let b = before.get(wait_type).copied().unwrap_or(0.0);
        let c = cats.entry(wait_category(wait_type)).or_default();
        c.0 += w;
        c.1 += b;
        c.2.push((wait_type.clone(), w - b));
    }
    let mut shifts: Vec<WaitShift> = cats
        .into_iter()
        .filter(|(cat, _)| !IDLE.contains(cat))
        .map(|(cat, (w, b, mut types))| {
            types.sort_by(|x, y| y.1.total_cmp(&x.1));
            WaitShift {
                wait_category: cat.to_string(),
                window: w,
                baseline: b,
                increase: w - b,
                ratio: (b > 0.0).then(|| w / b),
                wait_types: types.into_iter().take(3).map(|(t, _)| t).collect(),
                chart: chart.clone(),
            }
        })
        .collect();
    shifts.sort_by(|a, b| b.increase.total_cmp(&a.increase));
    shifts.truncate(TOP_WAITS);
    Ok(shifts)
}

/// The resource the queries are ranked by: what the anomaly's metric measures, else
/// what its top wait category spends.
fn resource_of(metric: &str, top_wait: Option<&WaitShift>) -> Resource {
    let m = metric.to_ascii_lowercase();
    if m.contains("cpu") {
        return Resource::Cpu;
    }
    if ["page", "read", "io", "buffer", "disk", "latency"]
        .iter()
        .any(|k| m.contains(k))
    {
        return Resource::Reads;
    }
    if ["lock", "block", "deadlock", "wait"]
        .iter()
        .any(|k| m.contains(k))
    {
        return Resource::Duration;
    }
    match top_wait.map(|w| w.wait_category.as_str()) {
        Some("CPU") | Some("Parallelism") | Some("Compilation") => Resource::Cpu,
        Some("Buffer IO") | Some("Buffer Latch") | Some("Memory") => Resource::Reads,
        _ => Resource::Duration,
    }
}

fn measure(q: &TopQuery, r: Resource) -> f64 {
    match r {
        Resource::Cpu => q.total_cpu_ms,
        Resource::Reads => q.total_logical_reads + q.total_physical_reads,
        Resource::Duration => q.total_elapsed_ms,
    }
}

fn ranked(mut queries: Vec<TopQuery>, r: Resource) -> Vec<QueryShare> {
    queries.sort_by(|a, b| measure(b, r).total_cmp(&measure(a, r)));
    let total: f64 = queries.iter().map(|q| measure(q, r)).sum();
    queries
        .into_iter()
        .take(TOP_QUERIES)
        .map(|q| QueryShare {
            share: if total > 0.0 {
                measure(&q, r) / total
            } else {
                0.0
            },
            query: q,
        })
        .collect()
}

async fn related(
    reader: &dyn Reader,
    anomaly: &Anomaly,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Anomaly>> {
    let f = AnomalyFilter {
        instances: Instances::one(anomaly.series.instance.to_string()),
        from: Some(window.0 - BASELINE),
        to: Some(window.1),
        limit: Some(RELATED + 1),
        ..Default::default()
    };
    let mut list = reader.anomalies(&f).await?;
    list.retain(|a| a.id != anomaly.id && a.folded_into.is_none());
    list.truncate(RELATED);
    list.reverse();
    Ok(list)
}

fn summary(rc: &RootCause) -> String {
    let a = &rc.anomaly;
    let mut parts = vec![match a.expected {
        Some(e) => format!(
            "{} {} {:.1} (expected {:.1})",
            a.rule, a.series.metric, a.observed, e
        ),
        None => format!("{} {} {:.1}", a.rule, a.series.metric, a.observed),
    }];
    if let Some(w) = rc.waits.first().filter(|w| w.increase > 0.0) {
        let by = match w.ratio {
            Some(r) => format!("{r:.1}× its baseline"),
            None => "from nothing".into(),
        };
        parts.push(format!(
            "{} waits {:.2} s/s, {by} ({})",
            w.wait_category,
            w.window,
            w.wait_types.join(", ")
        ));
    }
    if let Some(q) = rc.top_queries.first() {
        parts.push(format!(
            "query {} {:.0} % of {}",
            q.query.query_hash,
            q.share * 100.0,
            match rc.resource {
                Resource::Cpu => "CPU",
                Resource::Reads => "reads",
                Resource::Duration => "elapsed time",
            }
        ));
    }
    if let Some(b) = &rc.blocking_head {
        parts.push(format!(
            "blocking head session {} ({} blocked, {:.0} ms waited)",
            b.head_session_id, b.victims, b.total_wait_ms
        ));
    }
    parts.join(" ← ")
}
