//! Field values: typed keys, lookups through nested objects and dotted keys, dates and
//! date math, globs.

use super::*;

/// Epoch millis as Elasticsearch prints dates (`2024-05-01T00:00:00.000Z`).
pub(super) fn fmt_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Epoch nanos as `strict_date_optional_time` (millis) or `..._nanos` (9 digits).
pub(super) fn fmt_nanos(nanos: i64, nano_digits: bool) -> String {
    let d = DateTime::from_timestamp_nanos(nanos);
    if nano_digits {
        d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
    } else {
        fmt_millis(nanos.div_euclid(1_000_000))
    }
}

/// A field value as searching compares it. Dates are nanoseconds since the epoch.
#[derive(Debug, Clone)]
pub(super) enum Key {
    Int(i64),
    Num(f64),
    Str(String),
    Bool(bool),
    Date(i64),
}

impl Key {
    pub(super) fn rank(&self) -> u8 {
        match self {
            Key::Bool(_) => 0,
            Key::Int(_) | Key::Num(_) => 1,
            Key::Date(_) => 2,
            Key::Str(_) => 3,
        }
    }

    pub(super) fn as_f64(&self) -> Option<f64> {
        match self {
            Key::Int(i) => Some(*i as f64),
            Key::Num(n) => Some(*n),
            Key::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Key::Date(n) => Some(*n as f64 / 1e6),
            Key::Str(s) => s.trim().parse().ok(),
        }
    }

    pub(super) fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) | (Key::Date(a), Key::Date(b)) => a.cmp(b),
            (Key::Int(_) | Key::Num(_), Key::Int(_) | Key::Num(_)) => {
                let (a, b) = (self.as_f64().unwrap_or(0.0), other.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            }
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            // A numeric string among numbers (unmapped fields of mixed JSON types) sorts
            // and compares as the number it spells.
            (Key::Str(s), Key::Int(_) | Key::Num(_)) => {
                match (s.trim().parse::<f64>(), other.as_f64()) {
                    (Ok(a), Some(b)) => a.total_cmp(&b),
                    _ => self.rank().cmp(&other.rank()),
                }
            }
            (Key::Int(_) | Key::Num(_), Key::Str(_)) => other.cmp(self).reverse(),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// Identity for grouping (terms buckets, cardinality).
    pub(super) fn canon(&self) -> String {
        format!("{self:?}")
    }

    /// As a sort value: dates as epoch millis (nanos for `date_nanos` fields), booleans
    /// as 1/0, like Elasticsearch.
    pub(super) fn to_json(&self, ty: Ty) -> Value {
        match self {
            Key::Date(n) if ty == Ty::DateNanos => json!(n),
            Key::Date(n) => json!(n.div_euclid(1_000_000)),
            Key::Int(i) => json!(i),
            Key::Num(f) => json!(f),
            Key::Str(s) => json!(s),
            Key::Bool(b) => json!(u8::from(*b)),
        }
    }
}

pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A document value as a key of the field's type; unmapped fields are typed from the
/// value, strings that parse as dates being dates (dynamic date detection).
pub(super) fn to_key(v: &Value, ty: Ty) -> Option<Key> {
    match ty {
        Ty::Date | Ty::DateNanos => date_nanos_of(v).map(Key::Date),
        Ty::Long => number_of(v).map(|n| Key::Int(n.trunc() as i64)),
        Ty::Double => number_of(v).map(Key::Num),
        Ty::Bool => match v {
            Value::Bool(b) => Some(Key::Bool(*b)),
            Value::String(s) if s == "true" || s == "false" => Some(Key::Bool(s == "true")),
            _ => None,
        },
        Ty::Keyword => scalar_text(v).map(Key::Str),
        Ty::Unmapped => match v {
            Value::Number(n) => n
                .as_i64()
                .map(Key::Int)
                .or_else(|| n.as_f64().map(Key::Num)),
            Value::Bool(b) => Some(Key::Bool(*b)),
            Value::String(s) => Some(parse_date(s).map_or_else(|| Key::Str(s.clone()), Key::Date)),
            _ => None,
        },
    }
}

/// A hit's values of a field (`_id` and `_index` included) as keys.
pub(super) fn doc_keys(h: &Hit, field: &str) -> Vec<Key> {
    match field {
        "_id" => return vec![Key::Str(h.doc.id.clone())],
        "_index" => return vec![Key::Str(h.index.response_name().to_string())],
        _ => {}
    }
    let ty = h.index.ty(field);
    field_values(&h.doc.source, field)
        .into_iter()
        .filter_map(|v| to_key(v, ty))
        .collect()
}

/// A query value as a key comparable to a document's `like` key; dates may be date math
/// (`now-15m/m`), rounded up for `gt`/`lte` bounds as Elasticsearch does.
pub(super) fn coerce(
    q: &Value,
    like: &Key,
    format: Option<&str>,
    round_up: bool,
    now: i64,
) -> Option<Key> {
    match like {
        Key::Date(_) => query_date(q, format, round_up, now).map(Key::Date),
        Key::Int(_) | Key::Num(_) => number_of(q)
            .or_else(|| {
                let nanos = query_date(q, format, round_up, now)?;
                Some(nanos as f64 / 1e6)
            })
            .map(Key::Num),
        Key::Str(s) => match q {
            Value::Number(n) if s.trim().parse::<f64>().is_ok() => n.as_f64().map(Key::Num),
            other => scalar_text(other).map(Key::Str),
        },
        Key::Bool(_) => match q {
            Value::Bool(b) => Some(Key::Bool(*b)),
            Value::String(s) if s == "true" || s == "false" => Some(Key::Bool(s == "true")),
            _ => None,
        },
    }
}

pub(super) fn query_date(q: &Value, format: Option<&str>, round_up: bool, now: i64) -> Option<i64> {
    let unit = if format == Some("epoch_second") {
        1_000_000_000
    } else {
        NANOS_PER_MILLI
    };
    match q {
        Value::Number(n) => epoch_to_nanos(&n.to_string(), unit),
        Value::String(s) if format.is_some_and(|f| f.starts_with("epoch_")) => {
            epoch_to_nanos(s, unit)
        }
        Value::String(s) => {
            date_math(s, now, round_up).or_else(|| epoch_to_nanos(s, NANOS_PER_MILLI))
        }
        _ => None,
    }
}

/// Values at a dotted path, resolving through nested objects and literal dotted keys at
/// any level (`a.b.c` finds `{"a":{"b.c":1}}`, `{"a.b":{"c":1}}`, ...); arrays are
/// flattened and nulls skipped.
pub(super) fn lookup<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let segs: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    lookup_into(v, &segs, &mut out);
    out
}

pub(super) fn lookup_into<'a>(v: &'a Value, segs: &[&str], out: &mut Vec<&'a Value>) {
    match v {
        _ if segs.is_empty() => push_flat(v, out),
        Value::Array(items) => {
            for item in items {
                lookup_into(item, segs, out);
            }
        }
        Value::Object(map) => {
            for n in 1..=segs.len() {
                if let Some(child) = map.get(&segs[..n].join(".")) {
                    lookup_into(child, &segs[n..], out);
                }
            }
        }
        _ => {}
    }
}

pub(super) fn push_flat<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                push_flat(item, out);
            }
        }
        other => out.push(other),
    }
}

/// [`lookup`], with `x.keyword` falling back to `x` (the usual multi-field).
pub(super) fn field_values<'a>(source: &'a Value, field: &str) -> Vec<&'a Value> {
    let found = lookup(source, field);
    match field.strip_suffix(".keyword") {
        Some(base) if found.is_empty() => lookup(source, base),
        _ => found,
    }
}

/// Every leaf of a document with its dotted path (literal dotted keys kept as they are).
pub(super) fn leaves(v: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    collect_leaves(v, "", &mut out);
    out
}

pub(super) fn collect_leaves<'a>(v: &'a Value, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                collect_leaves(child, &join(prefix, k), out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for item in items {
                collect_leaves(item, prefix, out);
            }
        }
        Value::Null => {}
        other if !prefix.is_empty() => out.push((prefix.to_string(), other)),
        _ => {}
    }
}

/// `*`-only glob match.
pub(super) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, ni));
            pi += 1;
        } else if p.get(pi) == n.get(ni) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether some name matches both `*` globs (how index templates "overlap").
pub(super) fn globs_intersect(a: &str, b: &str) -> bool {
    let (p, q) = (a.as_bytes(), b.as_bytes());
    if p.len().saturating_mul(q.len()) > 1 << 20 {
        // Absurdly long patterns (real ones are under 256 bytes): compare literal prefixes
        // rather than build a huge table.
        let prefix = |s: &str| s.split('*').next().unwrap_or("").to_string();
        let (pa, pb) = (prefix(a), prefix(b));
        return pa.starts_with(&pb) || pb.starts_with(&pa);
    }
    // can[i][j]: some string matches both p[i..] and q[j..].
    let mut can = vec![vec![false; q.len() + 1]; p.len() + 1];
    for i in (0..=p.len()).rev() {
        for j in (0..=q.len()).rev() {
            can[i][j] = match (p.get(i), q.get(j)) {
                (None, None) => true,
                (Some(b'*'), _) => can[i + 1][j] || (j < q.len() && can[i][j + 1]),
                (_, Some(b'*')) => can[i][j + 1] || (i < p.len() && can[i + 1][j]),
                (Some(x), Some(y)) => x == y && can[i + 1][j + 1],
                _ => false,
            };
        }
    }
    can[0][0]
}

/// Nanoseconds since the epoch of a `strict_date_optional_time` date: `2024-05-01`,
/// `2024-05-01T10:00`, `2024-05-01T10:00:00.123456789Z`, `...+02:00`; no zone = UTC.
pub(super) fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    let shaped = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-');
    if !shaped {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return d.timestamp_nanos_opt();
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, f) {
            return d.timestamp_nanos_opt();
        }
    }
    let naive = s.strip_suffix('Z').unwrap_or(s);
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(naive, f) {
            return d.and_utc().timestamp_nanos_opt();
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)?
        .and_utc()
        .timestamp_nanos_opt()
}

/// Elasticsearch date math: `now`, `now-15m`, `now-1d/d`, `2024-05-01||+1M/M`, or a date.
pub(super) fn date_math(s: &str, now: i64, round_up: bool) -> Option<i64> {
    let s = s.trim();
    let (base, ops) = if let Some(rest) = s.strip_prefix("now") {
        (now.checked_mul(1_000_000)?, rest)
    } else if let Some((date, rest)) = s.split_once("||") {
        (parse_date(date)?, rest)
    } else {
        return parse_date(s);
    };
    let mut t = DateTime::from_timestamp_nanos(base).naive_utc();
    let b = ops.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let op = b[i];
        i += 1;
        match op {
            b'+' | b'-' => {
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let n: i64 = if start == i {
                    1
                } else {
                    ops[start..i].parse().ok()?
                };
                let unit = *b.get(i)?;
                i += 1;
                t = add_unit(t, unit, if op == b'+' { n } else { -n })?;
            }
            b'/' => {
                let unit = *b.get(i)?;
                i += 1;
                let floor = round_unit(t, unit)?;
                t = if round_up {
                    add_unit(floor, unit, 1)?.checked_sub_signed(ChronoDuration::milliseconds(1))?
                } else {
                    floor
                };
            }
            _ => return None,
        }
    }
    t.and_utc().timestamp_nanos_opt()
}

pub(super) fn add_unit(t: NaiveDateTime, unit: u8, n: i64) -> Option<NaiveDateTime> {
    let months = |m: i64| {
        let k = chrono::Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 {
            t.checked_add_months(k)
        } else {
            t.checked_sub_months(k)
        }
    };
    let delta = match unit {
        b'y' => return months(n.checked_mul(12)?),
        b'M' => return months(n),
        b'w' => ChronoDuration::try_weeks(n)?,
        b'd' => ChronoDuration::try_days(n)?,
        b'h' | b'H' => ChronoDuration::try_hours(n)?,
        b'm' => ChronoDuration::try_minutes(n)?,
        b's' => ChronoDuration::try_seconds(n)?,
        _ => return None,
    };
    t.checked_add_signed(delta)
}

pub(super) fn round_unit(t: NaiveDateTime, unit: u8) -> Option<NaiveDateTime> {
    use chrono::Timelike;
    let d = t.date();
    match unit {
        b'y' => NaiveDate::from_ymd_opt(d.year(), 1, 1)?.and_hms_opt(0, 0, 0),
        b'M' => NaiveDate::from_ymd_opt(d.year(), d.month(), 1)?.and_hms_opt(0, 0, 0),
        b'w' => d
            .checked_sub_signed(ChronoDuration::days(i64::from(
                d.weekday().num_days_from_monday(),
            )))?
            .and_hms_opt(0, 0, 0),
        b'd' => d.and_hms_opt(0, 0, 0),
        b'h' | b'H' => d.and_hms_opt(t.hour(), 0, 0),
        b'm' => d.and_hms_opt(t.hour(), t.minute(), 0),
        b's' => d.and_hms_opt(t.hour(), t.minute(), t.second()),
        _ => None,
    }
}

/// URL-safe base64 without padding (the alphabet of Elasticsearch ids and uuids).
pub(super) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// An Elasticsearch time value (`500ms`, `30s`, `5m`, `2h`, `7d`) in milliseconds.
pub(super) fn parse_time_value(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = s[..digits].parse().ok()?;
    let unit = match &s[digits..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// A finite number from a JSON number or numeric string.
pub(super) fn number_of(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    n.is_finite().then_some(n)
}

/// Nanoseconds since the epoch of a date value: an ISO 8601 string, or epoch millis as a
/// number or numeric string (the default `strict_date_optional_time||epoch_millis`).
pub(super) fn date_nanos_of(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_date(s).or_else(|| epoch_to_nanos(s, NANOS_PER_MILLI)),
        Value::Number(n) => epoch_to_nanos(&n.to_string(), NANOS_PER_MILLI),
        _ => None,
    }
}

pub(super) const NANOS_PER_MILLI: i64 = 1_000_000;

/// An epoch time in units of `unit_nanos` as nanoseconds: whole numbers exactly (an
/// `f64` cannot hold nanosecond timestamps), fractions as closely as an `f64` allows.
pub(super) fn epoch_to_nanos(text: &str, unit_nanos: i64) -> Option<i64> {
    let t = text.trim();
    if let Ok(whole) = t.parse::<i64>() {
        return whole.checked_mul(unit_nanos);
    }
    let nanos = t.parse::<f64>().ok()? * unit_nanos as f64;
    (nanos.is_finite() && nanos.abs() < 9.2e18).then_some(nanos as i64)
}

/// How Elasticsearch previews a rejected value: strings bare, anything else as JSON.
pub(super) fn preview(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
