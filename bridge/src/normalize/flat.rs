//! Layout 2: seed 002's flat fields.

use super::*;
use chrono::{DateTime, Utc};
use sqlvigil_model::catalogue::{self, MetricDef};
use sqlvigil_model::{BlockingEvent, Sample, TopQuery};
use std::collections::BTreeMap;

pub(crate) fn flat(f: &mut Fields) -> Result<Parts, String> {
    if is_flat_log(f.obj) {
        return log_doc(f, &["timestamp", "@timestamp"]);
    }
    let time_ns = doc_time(f, &["timestamp", "@timestamp"])?;
    let origin = flat_origin(f)?;
    // Events first: they decide whether the wait fields describe a session.
    let mut parts = flat_events(f, &origin, time_ns)?;
    let session = f.has("session_id") || !parts.blocking.is_empty();
    parts.samples = alias_samples(f, &origin, time_ns)?;
    parts
        .samples
        .extend(counter_samples(f, &origin, time_ns, session)?);
    Ok(parts)
}

/// `instance_name`, `host_name` (or ECS `host.name`), `database_name` (may be absent).
pub(crate) fn flat_origin(f: &mut Fields) -> Result<Origin, String> {
    let instance = f.required_text("instance_name", "instance")?;
    let host = match f.text("host_name")? {
        Some(h) => h,
        None => f.text("host.name")?.unwrap_or_default(),
    };
    let database = f.text("database_name")?.unwrap_or_default();
    Ok(Origin {
        instance,
        host,
        database,
    })
}

/// Blocking event and top-query observation of a flat document (either may be absent).
pub(crate) fn flat_events(f: &mut Fields, origin: &Origin, time_ns: i64) -> Result<Parts, String> {
    let time = DateTime::from_timestamp_nanos(time_ns);
    let blocking = flat_blocking(f, origin, time)?;
    let top_query = flat_top_query(f, origin, time)?;
    Ok(Parts {
        time_ns,
        instance: origin.instance.clone(),
        blocking: blocking.into_iter().collect(),
        top_queries: top_query.into_iter().collect(),
        ..Parts::default()
    })
}

pub(crate) fn flat_statement(f: &mut Fields) -> Result<String, String> {
    match f.text("statement")? {
        Some(s) => Ok(s),
        None => Ok(f.text("query_text")?.unwrap_or_default()),
    }
}

/// A non-zero `blocking_session_id` (SQL Server uses 0 for "not blocked").
pub(crate) fn flat_blocking(
    f: &mut Fields,
    origin: &Origin,
    time: DateTime<Utc>,
) -> Result<Option<BlockingEvent>, String> {
    let blocker = f.integer("blocking_session_id")?.unwrap_or(0);
    if blocker == 0 {
        return Ok(None);
    }
    Ok(Some(BlockingEvent {
        time,
        instance: origin.instance.clone(),
        session_id: f.integer("session_id")?,
        blocking_session_id: blocker,
        wait_type: f.text("wait_type")?.unwrap_or_default(),
        wait_time_ms: f.number("wait_time_ms")?.unwrap_or(0.0),
        database: origin.database.clone(),
        query_hash: f.text("query_hash")?.unwrap_or_default(),
        statement: flat_statement(f)?,
        wait_resource: f.text("wait_resource")?.unwrap_or_default(),
    }))
}

pub(crate) fn flat_top_query(
    f: &mut Fields,
    origin: &Origin,
    time: DateTime<Utc>,
) -> Result<Option<TopQuery>, String> {
    let Some(query_hash) = f.text("query_hash")?.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(TopQuery {
        last_seen: time,
        instance: origin.instance.clone(),
        query_hash,
        executions: f.number("execution_count")?.unwrap_or(0.0),
        total_cpu_ms: f
            .first_number(&["total_worker_time_ms", "cpu_time_ms"])?
            .unwrap_or(0.0),
        total_elapsed_ms: f.number("total_elapsed_time_ms")?.unwrap_or(0.0),
        total_logical_reads: f
            .first_number(&["total_logical_reads", "logical_reads"])?
            .unwrap_or(0.0),
        statement: flat_statement(f)?,
        database: origin.database.clone(),
        ..TopQuery::default()
    }))
}

/// Seed 002 aliases that name a receiver metric directly (`cpu_percent`, …). Aliases of
/// derived `.per_second` series are the operators' output, not a point: they stay in
/// `extra`.
pub(crate) fn alias_samples(
    f: &mut Fields,
    origin: &Origin,
    time_ns: i64,
) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (alias, target) in catalogue::ALIASES {
        let Some(def) = catalogue::metric(target) else {
            continue;
        };
        if let Some(value) = f.number(alias)? {
            let attributes = flat_attributes(f, def)?;
            out.push(catalogue_sample(origin, def, time_ns, value, attributes));
        }
    }
    Ok(out)
}

pub(crate) fn counter_samples(
    f: &mut Fields,
    origin: &Origin,
    time_ns: i64,
    session: bool,
) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for counter in FLAT_COUNTERS {
        let wanted = !(counter.per_session && session)
            && counter.needs.is_none_or(|n| f.has(n))
            && f.has(counter.field);
        let Some(def) = catalogue::metric(counter.metric).filter(|_| wanted) else {
            continue;
        };
        if let Some(value) = f.number(counter.field)? {
            let attributes = flat_attributes(f, def)?;
            let value = value * counter.scale;
            out.push(catalogue_sample(origin, def, time_ns, value, attributes));
        }
    }
    Ok(out)
}

/// The receiver's point attributes of `def` from flat fields: `wait.type` is read from
/// `wait_type` (or `wait.type`), `direction` from `direction`.
pub(crate) fn flat_attributes(
    f: &mut Fields,
    def: &MetricDef,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for attr in def.attributes {
        let flat_name = attr.replace('.', "_");
        let value = match f.text(&flat_name)? {
            Some(v) => Some(v),
            None => f.text(attr)?,
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(attr.to_string(), v);
        }
    }
    Ok(out)
}
