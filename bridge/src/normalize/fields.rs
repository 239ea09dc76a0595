//! Reading a `_source`: the hit envelope, field access by dotted or expanded keys
//! (and what was read), timestamps, and the pieces every layout parser shares.

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};
use sqlvigil_model::catalogue::MetricDef;
use sqlvigil_model::{BlockingEvent, LogRecord, Sample, SeriesKey, TopQuery};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn hit_str(hit: &Value, key: &str) -> String {
    hit.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn source_of(hit: &Value) -> Result<&Map<String, Value>, String> {
    let envelope = hit.as_object().ok_or("hit is not a JSON object")?;
    let source = envelope
        .get("_source")
        .ok_or("hit has no `_source` (searched with `_source: false`?)")?;
    let source = source.as_object().ok_or("`_source` is not an object")?;
    if source.is_empty() {
        return Err("`_source` is empty".into());
    }
    Ok(source)
}

pub(crate) fn unknown_layout(source: &Map<String, Value>) -> String {
    let keys: Vec<&str> = source.keys().map(String::as_str).take(8).collect();
    format!(
        "no known document layout (no `metric.name`, flat seed 002 fields or OTel `metrics`/`resource`/`body`; fields: {})",
        keys.join(", ")
    )
}

// Field access: dotted or expanded keys, and what was read

/// The value at a dotted path, written as a literal dotted key, as nested objects, or
/// any mix (`{"a.b": {"c": 1}}`), with the top-level key it was found under.
pub(crate) fn find<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<(&'a str, &'a Value)> {
    if let Some((key, value)) = obj.get_key_value(path) {
        return Some((key.as_str(), value));
    }
    for (dot, _) in path.match_indices('.') {
        let (head, rest) = (&path[..dot], &path[dot + 1..]);
        if let Some((key, Value::Object(child))) = obj.get_key_value(head) {
            if let Some((_, value)) = find(child, rest) {
                return Some((key.as_str(), value));
            }
        }
    }
    None
}

/// A `_source` plus the top-level keys read so far: whatever was not read is kept in
/// [`Document::extra`], so adding a reader for a field is what makes it "understood".
pub(crate) struct Fields<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) used: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(obj: &'a Map<String, Value>) -> Self {
        Fields {
            obj,
            used: BTreeSet::new(),
        }
    }

    pub(crate) fn get(&mut self, path: &str) -> Option<&'a Value> {
        let (key, value) = find(self.obj, path)?;
        self.used.insert(key);
        Some(value).filter(|v| !v.is_null())
    }

    pub(crate) fn has(&self, path: &str) -> bool {
        find(self.obj, path).is_some_and(|(_, v)| !v.is_null())
    }

    /// Count a top-level field as understood without reading it.
    pub(crate) fn mark(&mut self, key: &str) {
        if let Some((key, _)) = self.obj.get_key_value(key) {
            self.used.insert(key.as_str());
        }
    }

    /// A scalar as text (numbers and booleans as their JSON text).
    pub(crate) fn text(&mut self, path: &str) -> Result<Option<String>, String> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(v) => Err(format!("`{path}` is not a string: {}", preview(v))),
        }
    }

    /// A non-empty text, or the reason it is required.
    pub(crate) fn required_text(&mut self, path: &str, what: &str) -> Result<String, String> {
        self.text(path)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no {what} (`{path}`)"))
    }

    pub(crate) fn number(&mut self, path: &str) -> Result<Option<f64>, String> {
        self.get(path).map(|v| number(v, path)).transpose()
    }

    /// The first of several field names that is present, as a number.
    pub(crate) fn first_number(&mut self, paths: &[&str]) -> Result<Option<f64>, String> {
        for path in paths {
            if let Some(n) = self.number(path)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    pub(crate) fn integer(&mut self, path: &str) -> Result<Option<i64>, String> {
        self.get(path).map(|v| integer(v, path)).transpose()
    }

    pub(crate) fn boolean(&mut self, path: &str) -> Result<Option<bool>, String> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!("`{path}` is not a boolean: {}", preview(v))),
        }
    }

    /// An object's leaves as dotted keys (see [`flatten`]); absent → empty.
    pub(crate) fn object(&mut self, path: &str) -> Result<BTreeMap<String, &'a Value>, String> {
        match self.get(path) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(obj)) => {
                let mut out = BTreeMap::new();
                flatten(obj, "", &mut out);
                Ok(out)
            }
            Some(v) => Err(format!("`{path}` is not an object: {}", preview(v))),
        }
    }

    pub(crate) fn extra(&self) -> Map<String, Value> {
        self.obj
            .iter()
            .filter(|(k, _)| !self.used.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Nested objects → dotted keys, so `{"wait": {"type": "X"}}` and `{"wait.type": "X"}`
/// read the same. Arrays and scalars are leaves; nulls are dropped.
pub(crate) fn flatten<'a>(
    obj: &'a Map<String, Value>,
    prefix: &str,
    out: &mut BTreeMap<String, &'a Value>,
) {
    for (key, value) in obj {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(child) => flatten(child, &path, out),
            Value::Null => {}
            leaf => {
                out.insert(path, leaf);
            }
        }
    }
}

/// Attribute values as strings: text as is, numbers and booleans (and arrays) as JSON.
pub(crate) fn stringify(attrs: &BTreeMap<String, &Value>) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

pub(crate) fn number(value: &Value, path: &str) -> Result<f64, String> {
    value
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("`{path}` is not a number: {}", preview(value)))
}

pub(crate) fn integer(value: &Value, path: &str) -> Result<i64, String> {
    let whole = || {
        value
            .as_f64()
            .filter(|n| n.fract() == 0.0 && n.abs() < 9.0e15)
            .map(|n| n as i64)
    };
    value
        .as_i64()
        .or_else(whole)
        .ok_or_else(|| format!("`{path}` is not an integer: {}", preview(value)))
}

/// A value for an error message, cut short: documents can hold whole query plans.
pub(crate) fn preview(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

// Timestamps

/// Nanoseconds since the Unix epoch from an Elasticsearch date value.
///
/// Accepts RFC 3339 (up to nanoseconds; without an offset it is UTC, as Elasticsearch
/// reads it), epoch milliseconds as a number (fractions allowed, sub-microsecond
/// precision is lost to f64) or as a digit string, and the Collector exporter's
/// `"<millis>.<nanos>"` string. The exporter writes the nanoseconds within the
/// millisecond **unpadded** (`…000.42` is 42 ns), so a fraction is read as that integer;
/// with six digits — the usual case — it is the same as a decimal fraction of a millisecond.
pub(crate) fn parse_time(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(millis) => millis.checked_mul(1_000_000),
            None => n.as_f64().and_then(millis_f64),
        },
        Value::String(s) => time_from_str(s.trim()),
        _ => None,
    }
}

/// Whole and fractional milliseconds apart: multiplying the whole value by 10⁶ would
/// round away the sub-millisecond part at today's epoch values.
pub(crate) fn millis_f64(millis: f64) -> Option<i64> {
    if !millis.is_finite() || millis.abs() >= 9.2e12 {
        return None;
    }
    let whole = millis.trunc();
    let nanos = ((millis - whole) * 1e6).round();
    (whole as i64)
        .checked_mul(1_000_000)?
        .checked_add(nanos as i64)
}

pub(crate) fn time_from_str(s: &str) -> Option<i64> {
    if let Some(ns) = epoch_millis_str(s) {
        return Some(ns);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    const NAIVE: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
    NAIVE
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
}

pub(crate) fn epoch_millis_str(s: &str) -> Option<i64> {
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let (millis, nanos) = match s.split_once('.') {
        Some((m, n)) if all_digits(n) && n.len() <= 6 => (m, n.parse::<i64>().ok()?),
        Some(_) => return None,
        None => (s, 0),
    };
    if !all_digits(millis) {
        return None;
    }
    millis
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(nanos)
}

/// The document time from the first of `names` present.
pub(crate) fn doc_time(f: &mut Fields, names: &[&str]) -> Result<i64, String> {
    let mut found = None;
    // Read them all: a second timestamp field is a duplicate, not an unknown field.
    for name in names {
        if let Some(value) = f.get(name) {
            found = found.or(Some((*name, value)));
        }
    }
    let Some((name, value)) = found else {
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        return Err(format!("no timestamp ({})", names.join(" or ")));
    };
    parse_time(value).ok_or_else(|| bad_time(name, value))
}

pub(crate) fn optional_time(f: &mut Fields, name: &str) -> Result<Option<i64>, String> {
    f.get(name)
        .map(|v| parse_time(v).ok_or_else(|| bad_time(name, v)))
        .transpose()
}

pub(crate) fn bad_time(name: &str, value: &Value) -> String {
    format!(
        "`{name}` is not a date (RFC 3339 or epoch milliseconds): {}",
        preview(value)
    )
}

// Shared pieces

/// What a layout parser makes of one `_source` ([`hit`] adds index, id and extra).
#[derive(Default)]
pub(crate) struct Parts {
    pub(crate) time_ns: i64,
    pub(crate) instance: String,
    pub(crate) samples: Vec<Sample>,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) blocking: Vec<BlockingEvent>,
    pub(crate) top_queries: Vec<TopQuery>,
}

impl Parts {
    /// A log record, or the receiver event it is (`sqlvigil_model::activity`, the one
    /// parser both stores use): a top query, or the blocking event of a blocked sample
    /// (samples of sessions that are not blocked feed nothing here). `database` fills in
    /// an event without `db.namespace`.
    pub(crate) fn push_log(&mut self, record: LogRecord, database: &str) -> Result<(), String> {
        use sqlvigil_model::Activity;
        match sqlvigil_model::activity::parse(&record)? {
            Some(Activity::TopQuery(mut q)) => {
                if q.database.is_empty() {
                    q.database = database.to_string();
                }
                self.top_queries.push(q);
            }
            Some(Activity::Sample(mut s)) => {
                if s.database.is_empty() {
                    s.database = database.to_string();
                }
                self.blocking.extend(s.blocking_event());
            }
            None => self.logs.push(record),
        }
        Ok(())
    }
}

/// Where a document's telemetry comes from.
pub(crate) struct Origin {
    pub(crate) instance: String,
    pub(crate) host: String,
    pub(crate) database: String,
}

impl Origin {
    pub(crate) fn key(&self, metric: &str, attributes: BTreeMap<String, String>) -> SeriesKey {
        SeriesKey::from_parts(
            self.instance.clone(),
            self.host.clone(),
            self.database.clone(),
            metric.to_string(),
            attributes,
        )
    }
}

/// A sample whose kind and unit come from the receiver's catalogue.
pub(crate) fn catalogue_sample(
    origin: &Origin,
    def: &MetricDef,
    time_ns: i64,
    value: f64,
    attributes: BTreeMap<String, String>,
) -> Sample {
    Sample {
        time_ns,
        start_time_ns: 0,
        key: origin.key(def.name, attributes),
        value,
        kind: def.kind,
        monotonic: def.monotonic,
        unit: sqlvigil_model::catalogue::unit_of(def).into(),
        histogram: None,
    }
}

/// Severity text and number, each derived from the other when missing.
pub(crate) fn severity(text: Option<String>, number: Option<i32>) -> (String, i32) {
    let text = text.filter(|t| !t.is_empty());
    match (text, number) {
        (Some(t), Some(n)) => (t, n),
        (Some(t), None) => {
            let n = sqlvigil_model::log::severity_number(&t);
            (t, n)
        }
        (None, Some(n)) => (sqlvigil_model::log::severity_text(n).to_string(), n),
        (None, None) => (sqlvigil_model::log::severity_text(0).to_string(), 0),
    }
}

pub(crate) fn severity_number_field(f: &mut Fields, path: &str) -> Result<Option<i32>, String> {
    f.integer(path)?
        .map(|n| i32::try_from(n).map_err(|_| format!("`{path}` is out of range: {n}")))
        .transpose()
}
