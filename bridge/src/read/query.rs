//! The read side: searches and aggregations over the telemetry indices, answered in
//! the typed models whatever layout wrote the documents.
//!
//! Three layouts share the indices (see [`crate::normalize`]). Point reads fetch hits and
//! normalize them. Summaries aggregate in Elasticsearch with one `filter` aggregation per
//! layout ([`Family`]), because each layout keeps the same quantity under another field
//! (`metric.value` where `metric.name` is the wait metric, `metrics.sqlserver.os.wait.duration`,
//! or seed 002's `wait_time_ms`); the per-layout answers are then merged.

use crate::client::{read_json, retry_after, status_error, Elastic};
use crate::layout::{ANOMALIES_INDEX, INSIGHTS_INDEX};
use crate::normalize::{self, Document};
use crate::{BridgeError, Result};
use elasticsearch::SearchParts;
use serde_json::{json, Value};
use sqlvigil_model::query::{
    AggregateRow, AnomalyFilter, Answer, GroupBy, Instances, Malformed, MetricFilter, MetricStat,
    MetricStats, Range, SeriesInfo,
};
use sqlvigil_model::{
    catalogue, Anomaly, BlockingEvent, Insight, IoSummary, Sample, TopQuery, WaitSummary,
};
use std::collections::BTreeMap;

/// Which indices the bridge reads and how much one answer may scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Index patterns holding metric documents of any layout.
    pub metrics: Vec<String>,
    /// Index patterns holding log documents (and the Collector's query events).
    pub logs: Vec<String>,
    /// Most documents one point read scans (answers say when they stopped there).
    pub max_docs: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            metrics: vec!["mssql-metrics-*".into(), "metrics-*.otel-*".into()],
            logs: vec!["mssql-logs-*".into(), "logs-*.otel-*".into()],
            max_docs: 10_000,
        }
    }
}

const PAGE: usize = 1_000;

/// Range clauses in Elasticsearch's terms.
trait RangeClause {
    fn clause(&self) -> Option<Value>;
}

impl RangeClause for Range {
    /// Both timestamp spellings (`@timestamp`, seed 002's `timestamp`), in milliseconds
    /// widened to whole milliseconds so no nanosecond point at the edges is lost.
    fn clause(&self) -> Option<Value> {
        if self.from_ns.is_none() && self.to_ns.is_none() {
            return None;
        }
        let mut r = serde_json::Map::new();
        if let Some(f) = self.from_ns {
            r.insert("gte".into(), json!(f.div_euclid(1_000_000)));
        }
        if let Some(t) = self.to_ns {
            r.insert("lte".into(), json!(t.div_euclid(1_000_000) + 1));
        }
        r.insert("format".into(), json!("epoch_millis"));
        let r = Value::Object(r);
        Some(json!({"bool": {"should": [
            {"range": {"@timestamp": r.clone()}},
            {"range": {"timestamp": r}}
        ], "minimum_should_match": 1}}))
    }
}

/// Where one layout keeps what summaries group and measure.
struct Family {
    name: &'static str,
    /// The event-time field (seed 002 spells it `timestamp`).
    time: &'static str,
    instance: &'static str,
    database: &'static str,
    /// Field of a point attribute (`wait.type`, `direction`, …).
    attr: fn(&str) -> String,
    /// Query restricting to this layout's documents of a metric, the value field and the
    /// factor to the metric's own unit.
    metric: fn(&str) -> Option<(Value, String, f64)>,
}

const FAMILIES: [Family; 3] = [
    Family {
        name: "sqlvigil",
        time: "@timestamp",
        instance: "instance_name",
        database: "database_name",
        attr: |k| format!("attributes.{k}"),
        metric: |m| {
            Some((
                json!({"term": {"metric.name": m}}),
                "metric.value".into(),
                1.0,
            ))
        },
    },
    Family {
        name: "otel",
        time: "@timestamp",
        instance: "resource.attributes.sqlserver.instance.name",
        database: "resource.attributes.sqlserver.database.name",
        attr: |k| format!("attributes.{k}"),
        metric: |m| {
            let field = format!("metrics.{m}");
            Some((json!({"exists": {"field": field}}), field, 1.0))
        },
    },
    Family {
        name: "flat",
        time: "timestamp",
        instance: "instance_name",
        database: "database_name",
        attr: |k| match k {
            "wait.type" => "wait_type".into(),
            other => other.replace('.', "_"),
        },
        metric: |m| {
            let (field, scale) = flat_field(m)?;
            // Our own documents carry the flat copies too; count them once.
            // Session rows carry a session's current wait, not the cumulative counter.
            let only = json!({"bool": {
                "filter": [{"exists": {"field": field}}],
                "must_not": [
                    {"exists": {"field": "metric.name"}},
                    {"exists": {"field": "session_id"}},
                    {"exists": {"field": "blocking_session_id"}}
                ]
            }});
            Some((only, field.to_string(), scale))
        },
    },
];

/// Seed 002's field for a metric, and the factor from it to the metric's unit.
fn flat_field(metric: &str) -> Option<(&'static str, f64)> {
    Some(match metric {
        "sqlserver.os.wait.duration" => ("wait_time_ms", 0.001),
        "sqlserver.database.io" => ("physical_io_bytes", 1.0),
        m if catalogue::resolve_alias("cpu_percent") == Some(m) => ("cpu_percent", 1.0),
        _ => return None,
    })
}

/// Documents of any of `instances` (none when the list is empty), whichever field the
/// layout keeps the instance in.
fn instance_clause(instances: &[String]) -> Value {
    let fields = [
        "instance_name",
        "resource.attributes.sqlserver.instance.name",
        "resource.attributes.service.instance.id",
        "resource.attributes.host.name",
    ];
    json!({"bool": {"should": fields.iter().map(|f| json!({"terms": {*f: instances}})).collect::<Vec<_>>(), "minimum_should_match": 1}})
}

fn filters(range: &Range, instances: &Instances, extra: Vec<Value>) -> Value {
    let mut f: Vec<Value> = range.clause().into_iter().collect();
    f.extend(instances.only().map(instance_clause));
    f.extend(extra);
    json!({"bool": {"filter": f}})
}

/// `_search` over index patterns (missing indices are an empty answer, not an error).
pub async fn search(es: &Elastic, patterns: &[String], body: &Value) -> Result<Value> {
    let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let response = es
        .client()
        .search(SearchParts::Index(&refs))
        .ignore_unavailable(true)
        .allow_no_indices(true)
        .body(body.clone())
        .send()
        .await
        .map_err(|e| es.unreachable(e))?;
    let after = retry_after(response.headers());
    let (status, json) = read_json(response, "_search").await?;
    if status != 200 {
        return Err(status_error("_search", status, &json, after));
    }
    Ok(json)
}

fn hits_of(answer: &Value) -> &[Value] {
    answer["hits"]["hits"].as_array().map_or(&[], Vec::as_slice)
}

/// What a scan could not read, and whether it stopped at `max_docs`.
struct Scanned {
    malformed: Vec<Malformed>,
    truncated: bool,
}

impl Scanned {
    fn new(malformed: Vec<Malformed>, truncated: bool) -> Self {
        Scanned {
            malformed,
            truncated,
        }
    }

    fn answer<T>(self, rows: Vec<T>) -> Answer<T> {
        Answer::new(rows, self.malformed, self.truncated)
    }
}

/// Scan hits in `@timestamp` order with `search_after`, normalizing each page, until
/// `keep` says stop or `max_docs` were read.
async fn scan(
    es: &Elastic,
    patterns: &[String],
    query: Value,
    ascending: bool,
    max_docs: usize,
    mut keep: impl FnMut(Document) -> bool,
) -> Result<Scanned> {
    let mut malformed = Vec::new();
    let order = if ascending { "asc" } else { "desc" };
    let mut after: Option<Value> = None;
    let mut read = 0;
    while read < max_docs {
        let mut body = json!({
            "size": PAGE.min(max_docs - read),
            "query": query,
            "sort": [{"@timestamp": {"order": order, "unmapped_type": "date"}}, {"_doc": "asc"}],
        });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let answer = search(es, patterns, &body).await?;
        let hits = hits_of(&answer);
        read += hits.len();
        let (docs, bad) = normalize::hits(hits);
        malformed.extend(bad);
        for d in docs {
            if !keep(d) {
                return Ok(Scanned::new(malformed, false));
            }
        }
        match hits.last() {
            Some(last) if hits.len() == body["size"].as_u64().unwrap_or(0) as usize => {
                after = last.get("sort").cloned();
                if after.is_none() {
                    break;
                }
            }
            _ => return Ok(Scanned::new(malformed, false)),
        }
    }
    Ok(Scanned::new(malformed, read >= max_docs))
}

fn metric_query(f: &MetricFilter) -> Value {
    let range = Range {
        from_ns: f.from_ns,
        to_ns: f.to_ns,
    };
    let extra = f
        .metric
        .as_deref()
        .map(|m| {
            let any: Vec<Value> = FAMILIES
                .iter()
                .filter_map(|fam| (fam.metric)(m).map(|(q, _, _)| q))
                .collect();
            json!({"bool": {"should": any, "minimum_should_match": 1}})
        })
        .into_iter()
        .collect();
    filters(&range, &f.instances, extra)
}

fn sample_matches(s: &Sample, f: &MetricFilter) -> bool {
    f.after
        .is_none_or(|c| c.precedes(s.time_ns, s.key.id(), f.newest_first))
        && f.series_id.is_none_or(|id| s.key.id() == id)
        && f.metric.as_deref().is_none_or(|m| &*s.key.metric == m)
        && f.instances.allows(&s.key.instance)
        && Range {
            from_ns: f.from_ns,
            to_ns: f.to_ns,
        }
        .contains(s.time_ns)
}

/// Points matching `f`, oldest (or newest) first by time then series id, after its
/// cursor, at most `f.limit`.
pub async fn metrics(es: &Elastic, o: &ReadOptions, f: &MetricFilter) -> Result<Answer<Sample>> {
    let limit = f.limit.unwrap_or(o.max_docs);
    // The cursor's time bounds the documents to read.
    let mut bounded = f.clone();
    if let Some(c) = f.after {
        if f.newest_first {
            bounded.to_ns = Some(f.to_ns.map_or(c.time_ns, |t| t.min(c.time_ns)));
        } else {
            bounded.from_ns = Some(f.from_ns.map_or(c.time_ns, |t| t.max(c.time_ns)));
        }
    }
    let mut rows = Vec::new();
    let mut last_time = None;
    let scanned = scan(
        es,
        &o.metrics,
        metric_query(&bounded),
        !f.newest_first,
        o.max_docs,
        |d| {
            // Once full, read on only while documents share the last time read: points of
            // one time are ordered by series id, which documents are not.
            let time = d.samples.first().map(|s| s.time_ns);
            if rows.len() >= limit && time != last_time {
                return false;
            }
            last_time = time.or(last_time);
            rows.extend(d.samples.into_iter().filter(|s| sample_matches(s, f)));
            true
        },
    )
    .await?;
    rows.sort_by_key(|s| (s.time_ns, s.key.id()));
    if f.newest_first {
        rows.reverse();
    }
    rows.truncate(limit);
    Ok(scanned.answer(rows))
}

/// Distinct series among the newest `max_docs` documents matching `f`.
pub async fn series(es: &Elastic, o: &ReadOptions, f: &MetricFilter) -> Result<Answer<SeriesInfo>> {
    let mut by_id: BTreeMap<u64, SeriesInfo> = BTreeMap::new();
    let scanned = scan(es, &o.metrics, metric_query(f), false, o.max_docs, |d| {
        for s in d.samples.iter().filter(|s| sample_matches(s, f)) {
            let time = sqlvigil_model::ns_to_datetime(s.time_ns);
            let e = by_id.entry(s.key.id()).or_insert_with(|| SeriesInfo {
                id: s.key.id_hex(),
                instance: s.key.instance.to_string(),
                host: s.key.host.to_string(),
                database: s.key.database.to_string(),
                metric: s.key.metric.to_string(),
                attributes: s.key.attributes.clone(),
                unit: s.unit.to_string(),
                kind: s.kind.as_str().into(),
                points: 0,
                last_time: time,
            });
            e.points += 1;
            e.last_time = e.last_time.max(time);
        }
        true
    })
    .await?;
    let mut rows: Vec<SeriesInfo> = by_id.into_values().collect();
    rows.sort_by(|a, b| (&a.metric, &a.instance, &a.id).cmp(&(&b.metric, &b.instance, &b.id)));
    Ok(scanned.answer(rows))
}

/// Average/min/max/count per gauge series of `instance` in `range`, folded page by page
/// from the newest `max_docs` documents into [`MetricStats`] (no point list is kept).
pub async fn metric_stats(
    es: &Elastic,
    o: &ReadOptions,
    range: &Range,
    instance: &str,
) -> Result<Answer<MetricStat>> {
    let f = MetricFilter {
        instances: Instances::one(instance),
        from_ns: range.from_ns,
        to_ns: range.to_ns,
        ..Default::default()
    };
    let mut stats = MetricStats::default();
    let scanned = scan(es, &o.metrics, metric_query(&f), false, o.max_docs, |d| {
        for s in d.samples.iter().filter(|s| sample_matches(s, &f)) {
            stats.add_sample(s);
        }
        true
    })
    .await?;
    Ok(scanned.answer(stats.finish()))
}

fn bucket_list<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    v[name]["buckets"].as_array().map_or(&[], Vec::as_slice)
}

fn key_string(b: &Value) -> String {
    match &b["key"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

/// Windowed aggregates of one metric (`date_histogram` → avg/min/max/percentiles),
/// grouped like the embedded store's. Layouts without a series id group series by instance.
pub async fn aggregates(
    es: &Elastic,
    o: &ReadOptions,
    f: &MetricFilter,
    window_ns: i64,
    group_by: GroupBy,
) -> Result<Vec<AggregateRow>> {
    let Some(metric) = f.metric.as_deref() else {
        return Err(BridgeError::Response {
            what: "aggregates".into(),
            reason: "a metric name is required".into(),
        });
    };
    let interval = format!("{}ms", (window_ns / 1_000_000).max(1));
    let mut aggs = serde_json::Map::new();
    let mut scales = BTreeMap::new();
    for fam in &FAMILIES {
        let Some((only, field, scale)) = (fam.metric)(metric) else {
            continue;
        };
        let stats = json!({
            "avg": {"avg": {"field": field}}, "min": {"min": {"field": field}}, "max": {"max": {"field": field}},
            "pct": {"percentiles": {"field": field, "percents": [50, 95, 99]}}
        });
        let hist = json!({"date_histogram": {"field": fam.time, "fixed_interval": interval, "min_doc_count": 1}, "aggs": stats});
        let group_field = match group_by {
            GroupBy::Series if fam.name == "sqlvigil" => Some("series_id".to_string()),
            GroupBy::Series | GroupBy::Instance => Some(fam.instance.to_string()),
            GroupBy::Database => Some(fam.database.to_string()),
            GroupBy::Host if fam.name == "otel" => Some("resource.attributes.host.name".into()),
            GroupBy::Host => Some("host_name".to_string()),
            GroupBy::WaitCategory | GroupBy::WaitType => group_by.attribute().map(fam.attr),
            GroupBy::All => None,
        };
        let inner = match group_field {
            Some(g) => {
                json!({"terms": {"field": g, "size": 1000, "missing": ""}, "aggs": {"w": hist}})
            }
            None => json!({"filter": {"match_all": {}}, "aggs": {"w": hist}}),
        };
        aggs.insert(
            fam.name.into(),
            json!({"filter": only, "aggs": {"g": inner}}),
        );
        scales.insert(fam.name, scale);
    }
    let range = Range {
        from_ns: f.from_ns,
        to_ns: f.to_ns,
    };
    let body = json!({"size": 0, "query": filters(&range, &f.instances, vec![]), "aggs": aggs});
    let answer = search(es, &o.metrics, &body).await?;
    let mut merged: BTreeMap<(i64, String), AggregateRow> = BTreeMap::new();
    for (fam, scale) in scales {
        let g = &answer["aggregations"][fam]["g"];
        let groups: Vec<(String, &Value)> = match g.get("buckets") {
            Some(Value::Array(bs)) => bs.iter().map(|b| (key_string(b), b)).collect(),
            _ => vec![("all".to_string(), g)],
        };
        for (group, gb) in groups {
            for w in bucket_list(gb, "w") {
                let Some(start_ms) = w["key"].as_i64() else {
                    continue;
                };
                let row = window_row(w, start_ms, group.clone(), scale);
                merge_row(&mut merged, row);
            }
        }
    }
    Ok(merged.into_values().collect())
}

fn window_row(w: &Value, start_ms: i64, group: String, scale: f64) -> AggregateRow {
    let v = |name: &str| num(&w[name]["value"]).unwrap_or(f64::NAN) * scale;
    let pct = |p: &str| num(&w["pct"]["values"][p]).unwrap_or(f64::NAN) * scale;
    AggregateRow {
        window_start: sqlvigil_model::ns_to_datetime(start_ms.saturating_mul(1_000_000)),
        group,
        resolution: sqlvigil_model::query::Resolution::Raw,
        points: w["doc_count"].as_u64().unwrap_or(0),
        avg: v("avg"),
        min: v("min"),
        max: v("max"),
        p50: pct("50.0"),
        p95: pct("95.0"),
        p99: pct("99.0"),
    }
}

/// Two layouts in the same window and group: counts add, extremes combine, the mean is
/// weighted, and percentiles come from the larger side (they cannot be merged exactly).
fn merge_row(into: &mut BTreeMap<(i64, String), AggregateRow>, row: AggregateRow) {
    let key = (row.window_start.timestamp_millis(), row.group.clone());
    match into.get_mut(&key) {
        None => {
            into.insert(key, row);
        }
        Some(old) => {
            let n = (old.points + row.points).max(1) as f64;
            old.avg = (old.avg * old.points as f64 + row.avg * row.points as f64) / n;
            old.min = old.min.min(row.min);
            old.max = old.max.max(row.max);
            if row.points > old.points {
                (old.p50, old.p95, old.p99) = (row.p50, row.p95, row.p99);
            }
            old.points += row.points;
        }
    }
}

/// Per group path (e.g. instance → wait type), the counter's rise within the range
/// (max − min, in the metric's unit) and the newest document of the group.
async fn counter_rise(
    es: &Elastic,
    o: &ReadOptions,
    metric: &str,
    range: &Range,
    instances: &Instances,
    group_fields: impl Fn(&Family) -> Vec<String>,
) -> Result<Vec<(Vec<String>, f64, Option<Document>)>> {
    let mut aggs = serde_json::Map::new();
    let mut plan = Vec::new();
    for fam in &FAMILIES {
        let Some((only, field, scale)) = (fam.metric)(metric) else {
            continue;
        };
        let mut inner = json!({
            "hi": {"max": {"field": field}}, "lo": {"min": {"field": field}},
            "last": {"top_hits": {"size": 1, "sort": [{"@timestamp": {"order": "desc"}}]}}
        });
        let fields = group_fields(fam);
        for g in fields.iter().rev() {
            inner =
                json!({"g": {"terms": {"field": g, "size": 1000, "missing": ""}, "aggs": inner}});
        }
        aggs.insert(fam.name.into(), json!({"filter": only, "aggs": inner}));
        plan.push((fam.name, scale, fields.len()));
    }
    let body = json!({"size": 0, "query": filters(range, instances, vec![]), "aggs": aggs});
    let answer = search(es, &o.metrics, &body).await?;
    let mut out = Vec::new();
    for (fam, scale, depth) in plan {
        collect_rise(
            &answer["aggregations"][fam],
            depth,
            Vec::new(),
            scale,
            &mut out,
        );
    }
    Ok(out)
}

fn collect_rise(
    node: &Value,
    depth: usize,
    path: Vec<String>,
    scale: f64,
    out: &mut Vec<(Vec<String>, f64, Option<Document>)>,
) {
    if depth == 0 {
        let (Some(hi), Some(lo)) = (num(&node["hi"]["value"]), num(&node["lo"]["value"])) else {
            return;
        };
        let last = node["last"]["hits"]["hits"]
            .get(0)
            .and_then(|h| normalize::hit(h).ok());
        out.push((path, (hi - lo) * scale, last));
        return;
    }
    for b in bucket_list(node, "g") {
        let mut p = path.clone();
        p.push(key_string(b));
        collect_rise(b, depth - 1, p, scale, out);
    }
}

fn last_seen(doc: &Option<Document>) -> chrono::DateTime<chrono::Utc> {
    doc.as_ref().map(|d| d.time).unwrap_or_default()
}

/// Time waited per instance and wait type within the range, longest first.
pub async fn waits(
    es: &Elastic,
    o: &ReadOptions,
    range: &Range,
    instances: &Instances,
) -> Result<Vec<WaitSummary>> {
    let rises = counter_rise(es, o, "sqlserver.os.wait.duration", range, instances, |f| {
        vec![f.instance.to_string(), (f.attr)("wait.type")]
    })
    .await?;
    let mut merged: BTreeMap<(String, String), WaitSummary> = BTreeMap::new();
    for (path, secs, last) in rises {
        let [inst, wait_type] = [0, 1].map(|i| path.get(i).cloned().unwrap_or_default());
        let category = last
            .as_ref()
            .and_then(|d| d.samples.first())
            .and_then(|s| s.key.attributes.get("wait.category").cloned())
            .unwrap_or_default();
        let seen = last_seen(&last);
        let e = merged
            .entry((inst.clone(), wait_type.clone()))
            .or_insert_with(|| WaitSummary {
                instance: inst,
                wait_type,
                wait_category: category,
                wait_time_ms: 0.0,
                last_seen: seen,
            });
        e.wait_time_ms += secs * 1000.0;
        e.last_seen = e.last_seen.max(seen);
    }
    let mut rows: Vec<WaitSummary> = merged
        .into_values()
        .filter(|w| w.wait_time_ms > 0.0)
        .collect();
    rows.sort_by(|a, b| b.wait_time_ms.total_cmp(&a.wait_time_ms));
    Ok(rows)
}

/// I/O bytes and stall per instance, database and file within the range.
pub async fn io(
    es: &Elastic,
    o: &ReadOptions,
    range: &Range,
    instances: &Instances,
) -> Result<Vec<IoSummary>> {
    let group = |f: &Family| {
        vec![
            f.instance.to_string(),
            f.database.to_string(),
            (f.attr)("logical_filename"),
            (f.attr)("direction"),
        ]
    };
    let bytes = counter_rise(es, o, "sqlserver.database.io", range, instances, group).await?;
    let stall = counter_rise(es, o, "sqlserver.database.latency", range, instances, group).await?;
    let mut merged: BTreeMap<(String, String, String), IoSummary> = BTreeMap::new();
    for (is_stall, (path, rise, last)) in bytes
        .into_iter()
        .map(|r| (false, r))
        .chain(stall.into_iter().map(|r| (true, r)))
    {
        let [inst, db, file, direction] =
            [0, 1, 2, 3].map(|i| path.get(i).cloned().unwrap_or_default());
        let seen = last_seen(&last);
        let e = merged
            .entry((inst.clone(), db.clone(), file.clone()))
            .or_insert_with(|| IoSummary {
                instance: inst,
                database: db,
                file,
                read_bytes: 0.0,
                write_bytes: 0.0,
                stall_ms: 0.0,
                last_seen: seen,
            });
        match (is_stall, direction.as_str()) {
            (true, _) => e.stall_ms += rise * 1000.0,
            (false, "write") => e.write_bytes += rise,
            (false, _) => e.read_bytes += rise,
        }
        e.last_seen = e.last_seen.max(seen);
    }
    let mut rows: Vec<IoSummary> = merged.into_values().collect();
    rows.sort_by(|a, b| (b.read_bytes + b.write_bytes).total_cmp(&(a.read_bytes + a.write_bytes)));
    Ok(rows)
}

const QUERY_HASH_FIELDS: [&str; 2] = ["query_hash", "attributes.sqlserver.query_hash"];
const BLOCKER_FIELDS: [&str; 2] = [
    "blocking_session_id",
    "attributes.sqlserver.blocking_session_id",
];

fn any_exists(fields: &[&str]) -> Value {
    json!({"bool": {"should": fields.iter().map(|f| json!({"exists": {"field": f}})).collect::<Vec<_>>(), "minimum_should_match": 1}})
}

fn all_patterns(o: &ReadOptions) -> Vec<String> {
    o.metrics.iter().chain(&o.logs).cloned().collect()
}

/// Queries by resource use within the range: each observation (a Collector
/// `db.server.top_query` event or a seed 002 document with `query_hash`) is the use since
/// the previous one, so they add up. Highest total CPU first.
pub async fn top_queries(
    es: &Elastic,
    o: &ReadOptions,
    range: &Range,
    instances: &Instances,
    limit: usize,
) -> Result<Answer<TopQuery>> {
    let query = filters(range, instances, vec![any_exists(&QUERY_HASH_FIELDS)]);
    let mut seen: Vec<TopQuery> = Vec::new();
    let scanned = scan(es, &all_patterns(o), query, false, o.max_docs, |d| {
        seen.extend(d.top_queries);
        true
    })
    .await?;
    let rows = TopQuery::top(seen, limit);
    Ok(scanned.answer(rows))
}

/// Blocked sessions seen within the range, newest first.
pub async fn blocking(
    es: &Elastic,
    o: &ReadOptions,
    range: &Range,
    instances: &Instances,
    limit: usize,
) -> Result<Answer<BlockingEvent>> {
    let query = filters(range, instances, vec![any_exists(&BLOCKER_FIELDS)]);
    let mut rows = Vec::new();
    let scanned = scan(es, &all_patterns(o), query, false, o.max_docs, |d| {
        rows.extend(
            d.blocking
                .into_iter()
                .filter(|b| b.blocking_session_id != 0),
        );
        rows.len() < limit
    })
    .await?;
    rows.truncate(limit);
    Ok(scanned.answer(rows))
}

/// Deserialize the `_source` of each hit, counting those that do not fit the model.
fn sources<T: serde::de::DeserializeOwned>(answer: &Value) -> Answer<T> {
    let mut rows = Vec::new();
    let mut malformed = Vec::new();
    for h in hits_of(answer) {
        match serde_json::from_value::<T>(h["_source"].clone()) {
            Ok(t) => rows.push(t),
            Err(e) => malformed.push(Malformed {
                index: h["_index"].as_str().unwrap_or_default().into(),
                id: h["_id"].as_str().unwrap_or_default().into(),
                reason: e.to_string(),
            }),
        }
    }
    Answer::new(rows, malformed, false)
}

/// The filter terms of an anomalies query.
fn anomaly_terms(f: &AnomalyFilter) -> Vec<Value> {
    let mut terms = Vec::new();
    for (field, v) in [
        ("state", &f.state),
        ("rule", &f.rule),
        ("severity", &f.severity),
    ] {
        if let Some(v) = v {
            terms.push(json!({"term": {field: v}}));
        }
    }
    if let Some(only) = f.instances.only() {
        terms.push(json!({"terms": {"instance_name": only}}));
    }
    let mut opened = serde_json::Map::new();
    if let Some(from) = f.from {
        opened.insert("gte".into(), json!(from.to_rfc3339()));
    }
    if let Some(to) = f.to {
        opened.insert("lte".into(), json!(to.to_rfc3339()));
    }
    if !opened.is_empty() {
        terms.push(json!({"range": {"opened_at": opened}}));
    }
    terms
}

/// Anomalies, most recently opened first (then by id), after `f.after` when given:
/// `search_after` on the same sort, so pages never overlap.
pub async fn anomalies(es: &Elastic, f: &AnomalyFilter) -> Result<Answer<Anomaly>> {
    let mut body = json!({
        "size": f.limit.unwrap_or(100),
        "query": {"bool": {"filter": anomaly_terms(f)}},
        "sort": [
            {"opened_at": {"order": "desc", "unmapped_type": "date"}},
            {"id": {"order": "asc", "unmapped_type": "keyword"}}
        ]
    });
    if let Some(c) = &f.after {
        // Date sort values are epoch milliseconds, the resolution of a `date` field.
        body["search_after"] = json!([c.opened_at.timestamp_millis(), c.id]);
    }
    Ok(sources(
        &search(es, &[ANOMALIES_INDEX.to_string()], &body).await?,
    ))
}

/// How many anomalies match `f` (cursor and limit aside).
pub async fn count_anomalies(es: &Elastic, f: &AnomalyFilter) -> Result<u64> {
    let body = json!({
        "size": 0,
        "track_total_hits": true,
        "query": {"bool": {"filter": anomaly_terms(f)}}
    });
    let answer = search(es, &[ANOMALIES_INDEX.to_string()], &body).await?;
    Ok(answer["hits"]["total"]["value"].as_u64().unwrap_or(0))
}

/// One anomaly by id.
pub async fn anomaly(es: &Elastic, id: &str) -> Result<Option<Anomaly>> {
    let body = json!({"size": 1, "query": {"ids": {"values": [id]}}});
    let answer = search(es, &[ANOMALIES_INDEX.to_string()], &body).await?;
    Ok(sources::<Anomaly>(&answer).rows.into_iter().next())
}

/// Insights, newest first, optionally of one anomaly.
pub async fn insights(
    es: &Elastic,
    anomaly_id: Option<&str>,
    instances: &Instances,
    limit: usize,
) -> Result<Answer<Insight>> {
    let mut filter: Vec<Value> = anomaly_id
        .map(|id| json!({"term": {"anomaly_ids": id}}))
        .into_iter()
        .collect();
    if let Some(only) = instances.only() {
        filter.push(json!({"terms": {"instance_name": only}}));
    }
    let body = json!({
        "size": limit,
        "query": {"bool": {"filter": filter}},
        "sort": [{"generated_at": {"order": "desc", "unmapped_type": "date"}}]
    });
    Ok(sources(
        &search(es, &[INSIGHTS_INDEX.to_string()], &body).await?,
    ))
}

/// Log records of `instance` within the range, oldest first, at most `limit` (the newest).
pub async fn logs(
    es: &Elastic,
    o: &ReadOptions,
    range: &Range,
    instance: &str,
    limit: usize,
) -> Result<Answer<sqlvigil_model::LogRecord>> {
    let query = filters(range, &Instances::one(instance), vec![]);
    let mut rows = Vec::new();
    let scanned = scan(es, &o.logs, query, false, o.max_docs, |d| {
        rows.extend(d.logs.into_iter().filter(|l| l.instance == instance));
        rows.len() < limit
    })
    .await?;
    rows.truncate(limit);
    rows.reverse();
    Ok(scanned.answer(rows))
}
