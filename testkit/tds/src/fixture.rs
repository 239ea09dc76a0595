//! Fixtures: parsing the JSON format, choosing a fixture for a batch, and
//! encoding result sets exactly as SQL Server does (COLMETADATA type info, ROW and
//! NBCROW data).

use std::time::Duration;

use bytes::BufMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike};
use serde_json::Value;

use crate::tokens::{put_b_varchar, COLLATION, TOKEN_COLMETADATA, TOKEN_NBCROW, TOKEN_ROW};

/// A parsed fixture.
#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    pub name: String,
    /// `sql` normalised for matching (lower case, whitespace collapsed).
    pub match_sql: Option<String>,
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub body: AnswerBody,
    pub delay: Option<Duration>,
    pub disconnect_after_rows: Option<u64>,
}

#[derive(Debug, Clone)]
pub(crate) enum AnswerBody {
    ResultSets(Vec<ResultSet>),
    Error(ServerError),
}

/// An ERROR token's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerError {
    pub number: u32,
    pub state: u8,
    pub class: u8,
    pub message: String,
}

#[derive(Debug, Clone)]
pub(crate) struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    pub ty: SqlType,
    pub type_name: String,
    pub nullable: bool,
}

/// The column types fixtures can declare. `None` lengths are `(max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlType {
    Int,
    BigInt,
    SmallInt,
    TinyInt,
    Bit,
    Float,
    Real,
    Decimal {
        precision: u8,
        scale: u8,
        numeric: bool,
    },
    NVarChar(Option<u16>),
    VarChar(Option<u16>),
    NChar(u16),
    DateTime,
    DateTime2(u8),
    DateTimeOffset(u8),
    Date,
    VarBinary(Option<u16>),
    UniqueIdentifier,
    Money,
}

/// Normalises SQL text for `"sql"` matching: trimmed, lower case, runs of
/// whitespace collapsed to one space.
pub(crate) fn normalize_sql(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The fixture name of the first `-- sqlvigil:<name>` marker in `text`.
pub(crate) fn marker(text: &str) -> Option<String> {
    const M: &str = "-- sqlvigil:";
    let start = text.find(M)? + M.len();
    let name: String = text[start..]
        .chars()
        .take_while(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
        })
        .collect();
    (!name.is_empty()).then_some(name)
}

const FIXTURE_KEYS: &[&str] = &[
    "sql",
    "answers",
    "delay_ms",
    "disconnect_after_rows",
    "description",
    "comment",
];
const ANSWER_KEYS: &[&str] = &[
    "result_sets",
    "columns",
    "rows",
    "error",
    "delay_ms",
    "disconnect_after_rows",
    "description",
    "comment",
];

fn check_keys(
    obj: &serde_json::Map<String, Value>,
    allowed: &[&str],
    extra: &[&str],
    what: &str,
) -> Result<(), String> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str())
            && !extra.contains(&key.as_str())
            && !key.starts_with('_')
        {
            return Err(format!("{what}: unknown key \"{key}\""));
        }
    }
    Ok(())
}

fn opt_u64(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{what}: \"{key}\" must be a non-negative integer")),
    }
}

impl Fixture {
    pub(crate) fn from_json(name: &str, v: &Value) -> Result<Fixture, String> {
        let what = format!("fixture '{name}'");
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{what}: must be a JSON object"))?;
        check_keys(obj, FIXTURE_KEYS, ANSWER_KEYS, &what)?;
        let match_sql = match obj.get("sql") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(normalize_sql(s)),
            Some(_) => return Err(format!("{what}: \"sql\" must be a string")),
        };
        let default_delay = opt_u64(obj, "delay_ms", &what)?.map(Duration::from_millis);
        let default_disconnect = opt_u64(obj, "disconnect_after_rows", &what)?;
        let raw_answers: Vec<&Value> = match obj.get("answers") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(_) => return Err(format!("{what}: \"answers\" must be an array")),
            None => vec![v],
        };
        if raw_answers.is_empty() {
            return Err(format!("{what}: \"answers\" is empty"));
        }
        let mut answers = Vec::new();
        for (i, a) in raw_answers.into_iter().enumerate() {
            let mut answer = parse_answer(a, &format!("{what} answer {i}"))?;
            answer.delay = answer.delay.or(default_delay);
            answer.disconnect_after_rows = answer.disconnect_after_rows.or(default_disconnect);
            answers.push(answer);
        }
        Ok(Fixture {
            name: name.to_string(),
            match_sql,
            answers,
        })
    }
}

fn parse_answer(v: &Value, what: &str) -> Result<Answer, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what}: must be a JSON object"))?;
    let is_top = obj.contains_key("sql") || obj.contains_key("answers");
    if !is_top {
        check_keys(obj, ANSWER_KEYS, &[], what)?;
    }
    let delay = opt_u64(obj, "delay_ms", what)?.map(Duration::from_millis);
    let disconnect_after_rows = opt_u64(obj, "disconnect_after_rows", what)?;
    let body = if let Some(e) = obj.get("error") {
        AnswerBody::Error(parse_error(e, what)?)
    } else if let Some(sets) = obj.get("result_sets") {
        let sets = sets
            .as_array()
            .ok_or_else(|| format!("{what}: \"result_sets\" must be an array"))?;
        let mut out = Vec::new();
        for (i, s) in sets.iter().enumerate() {
            out.push(parse_result_set(s, &format!("{what} result set {i}"))?);
        }
        AnswerBody::ResultSets(out)
    } else if obj.contains_key("columns") {
        AnswerBody::ResultSets(vec![parse_result_set(v, what)?])
    } else {
        return Err(format!(
            "{what}: needs \"result_sets\", \"columns\"/\"rows\" or \"error\""
        ));
    };
    Ok(Answer {
        body,
        delay,
        disconnect_after_rows,
    })
}

fn parse_error(v: &Value, what: &str) -> Result<ServerError, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what}: \"error\" must be an object"))?;
    let num = |key: &str, default: u64, max: u64| -> Result<u64, String> {
        match obj.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{what}: error \"{key}\" must be an integer 0..={max}")),
        }
    };
    Ok(ServerError {
        number: num("number", 50000, u32::MAX as u64)? as u32,
        state: num("state", 1, 255)? as u8,
        class: num("class", 16, 25)? as u8,
        message: obj
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what}: error \"message\" must be a string"))?
            .to_string(),
    })
}

fn parse_result_set(v: &Value, what: &str) -> Result<ResultSet, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what}: must be an object"))?;
    let cols = obj
        .get("columns")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: \"columns\" must be an array"))?;
    if cols.is_empty() {
        return Err(format!("{what}: \"columns\" is empty"));
    }
    let mut columns = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let c = c
            .as_object()
            .ok_or_else(|| format!("{what}: column {i} must be an object"))?;
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what}: column {i} needs a string \"name\""))?;
        let type_name = c
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what}: column '{name}' needs a string \"type\""))?;
        let ty = parse_type(type_name).map_err(|e| format!("{what}: column '{name}': {e}"))?;
        let nullable = match c.get("nullable") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(format!(
                    "{what}: column '{name}': \"nullable\" must be a boolean"
                ))
            }
        };
        columns.push(Column {
            name: name.to_string(),
            ty,
            type_name: type_name.to_string(),
            nullable,
        });
    }
    let rows = match obj.get("rows") {
        None => Vec::new(),
        Some(Value::Array(rows)) => {
            let mut out = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                let r = r
                    .as_array()
                    .ok_or_else(|| format!("{what}: row {i} must be an array"))?;
                if r.len() != columns.len() {
                    return Err(format!(
                        "{what}: row {i} has {} values for {} columns",
                        r.len(),
                        columns.len()
                    ));
                }
                out.push(r.clone());
            }
            out
        }
        Some(_) => return Err(format!("{what}: \"rows\" must be an array")),
    };
    Ok(ResultSet { columns, rows })
}

/// Parses a type such as `int`, `nvarchar(128)`, `nvarchar(max)`, `decimal(18, 2)`.
pub(crate) fn parse_type(s: &str) -> Result<SqlType, String> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    let (base, args) = match t.find('(') {
        Some(i) if t.ends_with(')') => (&t[..i], Some(&t[i + 1..t.len() - 1])),
        Some(_) => return Err(format!("malformed type \"{s}\"")),
        None => (t.as_str(), None),
    };
    let len = |default: u16, max: u16, allow_max: bool| -> Result<Option<u16>, String> {
        match args {
            None => Ok(Some(default)),
            Some("max") if allow_max => Ok(None),
            Some(n) => match n.parse::<u16>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "length in \"{s}\" must be 1..={max}{}",
                    if allow_max { " or max" } else { "" }
                )),
            },
        }
    };
    let scale = |default: u8| -> Result<u8, String> {
        match args {
            None => Ok(default),
            Some(n) => n
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= 7)
                .ok_or_else(|| format!("scale in \"{s}\" must be 0..=7")),
        }
    };
    let no_args = |ty: SqlType| -> Result<SqlType, String> {
        match args {
            None => Ok(ty),
            Some(_) => Err(format!("type \"{base}\" takes no arguments")),
        }
    };
    match base {
        "int" => no_args(SqlType::Int),
        "bigint" => no_args(SqlType::BigInt),
        "smallint" => no_args(SqlType::SmallInt),
        "tinyint" => no_args(SqlType::TinyInt),
        "bit" => no_args(SqlType::Bit),
        "float" => no_args(SqlType::Float),
        "real" => no_args(SqlType::Real),
        "money" => no_args(SqlType::Money),
        "datetime" => no_args(SqlType::DateTime),
        "date" => no_args(SqlType::Date),
        "uniqueidentifier" => no_args(SqlType::UniqueIdentifier),
        "decimal" | "numeric" => {
            let (precision, scale) = match args {
                None => (18, 0),
                Some(a) => {
                    let parts: Vec<&str> = a.split(',').collect();
                    let p = parts.first().and_then(|p| p.parse::<u8>().ok());
                    let sc = match parts.get(1) {
                        None => Some(0),
                        Some(x) => x.parse::<u8>().ok(),
                    };
                    match (p, sc, parts.len()) {
                        (Some(p), Some(sc), 1 | 2) if (1..=38).contains(&p) && sc <= p => (p, sc),
                        _ => {
                            return Err(format!(
                                "\"{s}\": precision must be 1..=38 and scale 0..=precision"
                            ))
                        }
                    }
                }
            };
            Ok(SqlType::Decimal {
                precision,
                scale,
                numeric: base == "numeric",
            })
        }
        "nvarchar" => Ok(SqlType::NVarChar(len(4000, 4000, true)?)),
        "varchar" => Ok(SqlType::VarChar(len(8000, 8000, true)?)),
        "nchar" => Ok(SqlType::NChar(len(1, 4000, false)?.unwrap_or(1))),
        "varbinary" => Ok(SqlType::VarBinary(len(8000, 8000, true)?)),
        "datetime2" => Ok(SqlType::DateTime2(scale(7)?)),
        "datetimeoffset" => Ok(SqlType::DateTimeOffset(scale(7)?)),
        other => Err(format!("unsupported column type \"{other}\"")),
    }
}

/// Storage size (sign byte included) of a decimal of this precision.
fn decimal_size(precision: u8) -> u8 {
    match precision {
        1..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// Length of time(n) data in bytes.
fn time_len(scale: u8) -> u8 {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

impl SqlType {
    /// TYPE_INFO as SQL Server sends it in COLMETADATA.
    fn write_type_info(&self, nullable: bool, buf: &mut Vec<u8>) {
        match *self {
            SqlType::Int if !nullable => buf.put_u8(0x38),
            SqlType::BigInt if !nullable => buf.put_u8(0x7F),
            SqlType::SmallInt if !nullable => buf.put_u8(0x34),
            SqlType::TinyInt if !nullable => buf.put_u8(0x30),
            SqlType::Bit if !nullable => buf.put_u8(0x32),
            SqlType::Float if !nullable => buf.put_u8(0x3E),
            SqlType::Real if !nullable => buf.put_u8(0x3B),
            SqlType::Money if !nullable => buf.put_u8(0x3C),
            SqlType::DateTime if !nullable => buf.put_u8(0x3D),
            SqlType::Int => buf.extend_from_slice(&[0x26, 4]),
            SqlType::BigInt => buf.extend_from_slice(&[0x26, 8]),
            SqlType::SmallInt => buf.extend_from_slice(&[0x26, 2]),
            SqlType::TinyInt => buf.extend_from_slice(&[0x26, 1]),
            SqlType::Bit => buf.extend_from_slice(&[0x68, 1]),
            SqlType::Float => buf.extend_from_slice(&[0x6D, 8]),
            SqlType::Real => buf.extend_from_slice(&[0x6D, 4]),
            SqlType::Money => buf.extend_from_slice(&[0x6E, 8]),
            SqlType::DateTime => buf.extend_from_slice(&[0x6F, 8]),
            SqlType::Decimal {
                precision,
                scale,
                numeric,
            } => buf.extend_from_slice(&[
                if numeric { 0x6C } else { 0x6A },
                decimal_size(precision),
                precision,
                scale,
            ]),
            SqlType::NVarChar(n) => {
                buf.put_u8(0xE7);
                buf.put_u16_le(n.map(|n| n * 2).unwrap_or(0xFFFF));
                buf.extend_from_slice(&COLLATION);
            }
            SqlType::VarChar(n) => {
                buf.put_u8(0xA7);
                buf.put_u16_le(n.unwrap_or(0xFFFF));
                buf.extend_from_slice(&COLLATION);
            }
            SqlType::NChar(n) => {
                buf.put_u8(0xEF);
                buf.put_u16_le(n * 2);
                buf.extend_from_slice(&COLLATION);
            }
            SqlType::VarBinary(n) => {
                buf.put_u8(0xA5);
                buf.put_u16_le(n.unwrap_or(0xFFFF));
            }
            SqlType::DateTime2(s) => buf.extend_from_slice(&[0x2A, s]),
            SqlType::DateTimeOffset(s) => buf.extend_from_slice(&[0x2B, s]),
            SqlType::Date => buf.put_u8(0x28),
            SqlType::UniqueIdentifier => buf.extend_from_slice(&[0x24, 16]),
        }
    }

    fn is_plp(&self) -> bool {
        matches!(
            self,
            SqlType::NVarChar(None) | SqlType::VarChar(None) | SqlType::VarBinary(None)
        )
    }

    /// The NULL marker in a ROW token.
    fn write_null(&self, buf: &mut Vec<u8>) {
        match self {
            t if t.is_plp() => buf.put_u64_le(u64::MAX),
            SqlType::NVarChar(_)
            | SqlType::VarChar(_)
            | SqlType::NChar(_)
            | SqlType::VarBinary(_) => buf.put_u16_le(0xFFFF),
            _ => buf.put_u8(0),
        }
    }

    /// Encodes a non-null value. The error says why the value does not fit.
    fn write_value(&self, nullable: bool, v: &Value, buf: &mut Vec<u8>) -> Result<(), String> {
        // Nullable fixed-size types carry a length byte in front of the data.
        let len_prefix = |buf: &mut Vec<u8>, n: u8| {
            if nullable {
                buf.put_u8(n)
            }
        };
        match *self {
            SqlType::Int => {
                let n = int_value(v, i32::MIN as i64, i32::MAX as i64)?;
                len_prefix(buf, 4);
                buf.put_i32_le(n as i32);
            }
            SqlType::BigInt => {
                let n = int_value(v, i64::MIN, i64::MAX)?;
                len_prefix(buf, 8);
                buf.put_i64_le(n);
            }
            SqlType::SmallInt => {
                let n = int_value(v, i16::MIN as i64, i16::MAX as i64)?;
                len_prefix(buf, 2);
                buf.put_i16_le(n as i16);
            }
            SqlType::TinyInt => {
                let n = int_value(v, 0, 255)?;
                len_prefix(buf, 1);
                buf.put_u8(n as u8);
            }
            SqlType::Bit => {
                let b = match v {
                    Value::Bool(b) => *b,
                    Value::Number(n) if n.as_u64() == Some(0) => false,
                    Value::Number(n) if n.as_u64() == Some(1) => true,
                    _ => return Err(format!("{v} is not a bit (true/false/0/1)")),
                };
                len_prefix(buf, 1);
                buf.put_u8(b as u8);
            }
            SqlType::Float => {
                let f = float_value(v)?;
                len_prefix(buf, 8);
                buf.put_f64_le(f);
            }
            SqlType::Real => {
                let f = float_value(v)?;
                if f.is_finite() && f.abs() > f32::MAX as f64 {
                    return Err(format!("{v} is out of range for real"));
                }
                len_prefix(buf, 4);
                buf.put_f32_le(f as f32);
            }
            SqlType::Money => {
                let units = decimal_value(v, 4)?;
                let units =
                    i64::try_from(units).map_err(|_| format!("{v} is out of range for money"))?;
                len_prefix(buf, 8);
                buf.put_i32_le((units >> 32) as i32);
                buf.put_u32_le(units as u32);
            }
            SqlType::Decimal {
                precision, scale, ..
            } => {
                let units = decimal_value(v, scale)?;
                if units.unsigned_abs() >= 10u128.pow(precision as u32) {
                    return Err(format!("{v} does not fit decimal({precision},{scale})"));
                }
                let size = decimal_size(precision);
                buf.put_u8(size);
                buf.put_u8(if units < 0 { 0 } else { 1 });
                let mag = units.unsigned_abs().to_le_bytes();
                buf.extend_from_slice(&mag[..size as usize - 1]);
            }
            SqlType::NVarChar(max) => {
                let s = str_value(v)?;
                let units: Vec<u16> = s.encode_utf16().collect();
                if let Some(max) = max {
                    if units.len() > max as usize {
                        return Err(format!(
                            "string of {} characters is longer than nvarchar({max})",
                            units.len()
                        ));
                    }
                }
                let mut bytes = Vec::with_capacity(units.len() * 2);
                for u in units {
                    bytes.put_u16_le(u);
                }
                write_var_bytes(buf, &bytes, max.is_none());
            }
            SqlType::NChar(n) => {
                let s = str_value(v)?;
                let mut units: Vec<u16> = s.encode_utf16().collect();
                if units.len() > n as usize {
                    return Err(format!(
                        "string of {} characters is longer than nchar({n})",
                        units.len()
                    ));
                }
                // SQL Server pads nchar values with spaces to the declared length.
                units.resize(n as usize, b' ' as u16);
                let mut bytes = Vec::with_capacity(units.len() * 2);
                for u in units {
                    bytes.put_u16_le(u);
                }
                write_var_bytes(buf, &bytes, false);
            }
            SqlType::VarChar(max) => {
                let s = str_value(v)?;
                let bytes = cp1252(s)?;
                if let Some(max) = max {
                    if bytes.len() > max as usize {
                        return Err(format!(
                            "string of {} bytes is longer than varchar({max})",
                            bytes.len()
                        ));
                    }
                }
                write_var_bytes(buf, &bytes, max.is_none());
            }
            SqlType::VarBinary(max) => {
                let bytes = binary_value(v)?;
                if let Some(max) = max {
                    if bytes.len() > max as usize {
                        return Err(format!(
                            "{} bytes are longer than varbinary({max})",
                            bytes.len()
                        ));
                    }
                }
                write_var_bytes(buf, &bytes, max.is_none());
            }
            SqlType::UniqueIdentifier => {
                let g = guid_value(v)?;
                buf.put_u8(16);
                buf.extend_from_slice(&g);
            }
            SqlType::DateTime => {
                let dt = naive_datetime_value(v)?;
                let base = NaiveDate::from_ymd_opt(1900, 1, 1).ok_or("calendar")?;
                if dt.date() < NaiveDate::from_ymd_opt(1753, 1, 1).ok_or("calendar")? {
                    return Err(format!("{v} is before 1753-01-01, the first datetime"));
                }
                let mut days = (dt.date() - base).num_days();
                let ns = dt.time().num_seconds_from_midnight() as u64 * 1_000_000_000
                    + dt.time().nanosecond().min(999_999_999) as u64;
                let mut ticks = (ns * 3 + 5_000_000) / 10_000_000;
                if ticks >= 300 * 86_400 {
                    ticks -= 300 * 86_400;
                    days += 1;
                }
                len_prefix(buf, 8);
                buf.put_i32_le(days as i32);
                buf.put_u32_le(ticks as u32);
            }
            SqlType::Date => {
                let dt = naive_datetime_value(v)?;
                buf.put_u8(3);
                put_date(buf, dt.date())?;
            }
            SqlType::DateTime2(scale) => {
                let dt = naive_datetime_value(v)?;
                buf.put_u8(time_len(scale) + 3);
                put_time_date(buf, dt, scale)?;
            }
            SqlType::DateTimeOffset(scale) => {
                let s = str_value(v)?;
                let dto = parse_offset_datetime(s).ok_or_else(|| {
                    format!("\"{s}\" is not an ISO-8601 date-time with an offset")
                })?;
                let offset_min = dto.offset().local_minus_utc() / 60;
                buf.put_u8(time_len(scale) + 5);
                put_time_date(buf, dto.naive_utc(), scale)?;
                buf.put_i16_le(offset_min as i16);
            }
        }
        Ok(())
    }
}

/// USHORTLEN data, or PLP (known total length, chunks of at most 4000 bytes) for
/// `(max)` types.
fn write_var_bytes(buf: &mut Vec<u8>, bytes: &[u8], plp: bool) {
    if plp {
        buf.put_u64_le(bytes.len() as u64);
        for chunk in bytes.chunks(4000) {
            buf.put_u32_le(chunk.len() as u32);
            buf.extend_from_slice(chunk);
        }
        buf.put_u32_le(0);
    } else {
        buf.put_u16_le(bytes.len() as u16);
        buf.extend_from_slice(bytes);
    }
}

fn put_date(buf: &mut Vec<u8>, d: NaiveDate) -> Result<(), String> {
    let days = chrono::Datelike::num_days_from_ce(&d) - 1;
    if days < 0 {
        return Err("date before 0001-01-01".into());
    }
    buf.extend_from_slice(&(days as u32).to_le_bytes()[..3]);
    Ok(())
}

/// time(n) then date, rounding the fraction to the scale.
fn put_time_date(buf: &mut Vec<u8>, dt: NaiveDateTime, scale: u8) -> Result<(), String> {
    let ns = dt.time().num_seconds_from_midnight() as u64 * 1_000_000_000
        + dt.time().nanosecond().min(999_999_999) as u64;
    let unit = 10u64.pow(9 - scale as u32);
    let mut increments = (ns + unit / 2) / unit;
    let mut date = dt.date();
    let per_day = 86_400 * 10u64.pow(scale as u32);
    if increments >= per_day {
        increments -= per_day;
        date = date.succ_opt().ok_or("date overflow")?;
    }
    let bytes = increments.to_le_bytes();
    buf.extend_from_slice(&bytes[..time_len(scale) as usize]);
    put_date(buf, date)
}

fn int_value(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{v} is not an integer"))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range {min}..={max}"));
    }
    Ok(n)
}

fn float_value(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{v} is not a number"))
}

fn str_value(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| format!("{v} is not a string"))
}

/// A decimal number (JSON number or string) scaled to `scale` digits, rounded
/// half away from zero as SQL Server converts.
fn decimal_value(v: &Value, scale: u8) -> Result<i128, String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(format!("{v} is not a decimal number")),
    };
    let bad = || format!("{v} is not a decimal number");
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let (mantissa_text, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa_text.find('.') {
        Some(i) => (&mantissa_text[..i], &mantissa_text[i + 1..]),
        None => (mantissa_text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .chars()
            .chain(frac_part.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err(format!("{v} has more than 38 significant digits"));
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    let shift = scale as i32 + exp - frac_part.len() as i32;
    let too_big = || format!("{v} is too large");
    let magnitude = if shift >= 0 {
        10u128
            .checked_pow(shift as u32)
            .and_then(|p| mantissa.checked_mul(p))
            .ok_or_else(too_big)?
    } else if -shift > 38 {
        0
    } else {
        let p = 10u128.pow((-shift) as u32);
        (mantissa + p / 2) / p
    };
    let magnitude = i128::try_from(magnitude).map_err(|_| too_big())?;
    Ok(if neg { -magnitude } else { magnitude })
}

fn binary_value(v: &Value) -> Result<Vec<u8>, String> {
    let s = str_value(v)?;
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| format!("\"{s}\" is not a binary literal \"0x...\""))?;
    if !hex.len().is_multiple_of(2) {
        return Err(format!("\"{s}\" has an odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("\"{s}\" contains a non-hex digit"))
        })
        .collect()
}

/// A GUID in SQL Server's wire order (first three groups little-endian).
fn guid_value(v: &Value) -> Result<[u8; 16], String> {
    let s = str_value(v)?;
    let t = s.trim().trim_start_matches('{').trim_end_matches('}');
    let groups: Vec<&str> = t.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return Err(format!(
            "\"{s}\" is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        ));
    }
    let hex: String = groups.concat();
    let mut b = [0u8; 16];
    for (i, item) in b.iter_mut().enumerate() {
        *item = hex
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("\"{s}\" contains a non-hex digit"))?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Ok(b)
}

fn naive_datetime_value(v: &Value) -> Result<NaiveDateTime, String> {
    let s = str_value(v)?;
    parse_naive_datetime(s).ok_or_else(|| format!("\"{s}\" is not an ISO-8601 date or date-time"))
}

pub(crate) fn parse_naive_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

pub(crate) fn parse_offset_datetime(s: &str) -> Option<DateTime<chrono::FixedOffset>> {
    let s = s.trim();
    let t = if s.len() > 10 && s.as_bytes()[10] == b' ' {
        format!("{}T{}", &s[..10], &s[11..])
    } else {
        s.to_string()
    };
    DateTime::parse_from_rfc3339(&t)
        .ok()
        .or_else(|| DateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f%:z").ok())
        .or_else(|| DateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f%z").ok())
}

/// Encodes to code page 1252 (the collation's code page).
fn cp1252(s: &str) -> Result<Vec<u8>, String> {
    const HIGH: [(u8, char); 27] = [
        (0x80, '\u{20AC}'),
        (0x82, '\u{201A}'),
        (0x83, '\u{0192}'),
        (0x84, '\u{201E}'),
        (0x85, '\u{2026}'),
        (0x86, '\u{2020}'),
        (0x87, '\u{2021}'),
        (0x88, '\u{02C6}'),
        (0x89, '\u{2030}'),
        (0x8A, '\u{0160}'),
        (0x8B, '\u{2039}'),
        (0x8C, '\u{0152}'),
        (0x8E, '\u{017D}'),
        (0x91, '\u{2018}'),
        (0x92, '\u{2019}'),
        (0x93, '\u{201C}'),
        (0x94, '\u{201D}'),
        (0x95, '\u{2022}'),
        (0x96, '\u{2013}'),
        (0x97, '\u{2014}'),
        (0x98, '\u{02DC}'),
        (0x99, '\u{2122}'),
        (0x9A, '\u{0161}'),
        (0x9B, '\u{203A}'),
        (0x9C, '\u{0153}'),
        (0x9E, '\u{017E}'),
        (0x9F, '\u{0178}'),
    ];
    s.chars()
        .map(|c| {
            let u = c as u32;
            if u < 0x80 || (0xA0..=0xFF).contains(&u) {
                Ok(u as u8)
            } else {
                HIGH.iter()
                    .find(|(_, h)| *h == c)
                    .map(|(b, _)| *b)
                    .ok_or_else(|| {
                        format!("character {c:?} is not in code page 1252 (use nvarchar)")
                    })
            }
        })
        .collect()
}

/// COLMETADATA and rows of one result set, at most `row_limit` rows. On a value
/// that does not fit, the error names the column and row.
pub(crate) fn encode_result_set(
    rs: &ResultSet,
    row_limit: Option<u64>,
    buf: &mut Vec<u8>,
) -> Result<u64, String> {
    buf.put_u8(TOKEN_COLMETADATA);
    buf.put_u16_le(rs.columns.len() as u16);
    for c in &rs.columns {
        buf.put_u32_le(0); // user type
        buf.put_u16_le(if c.nullable { 0x0001 } else { 0x0000 });
        c.ty.write_type_info(c.nullable, buf);
        put_b_varchar(buf, &c.name);
    }
    let mut sent = 0u64;
    for (ri, row) in rs.rows.iter().enumerate() {
        if row_limit.is_some_and(|limit| sent >= limit) {
            break;
        }
        let has_null = row.iter().any(Value::is_null);
        if has_null {
            buf.put_u8(TOKEN_NBCROW);
            let mut bitmap = vec![0u8; rs.columns.len().div_ceil(8)];
            for (ci, v) in row.iter().enumerate() {
                if v.is_null() {
                    bitmap[ci / 8] |= 1 << (ci % 8);
                }
            }
            buf.extend_from_slice(&bitmap);
        } else {
            buf.put_u8(TOKEN_ROW);
        }
        for (ci, (c, v)) in rs.columns.iter().zip(row).enumerate() {
            let at = || format!("row {ri}, column {ci} '{}' ({})", c.name, c.type_name);
            if v.is_null() {
                if !c.nullable {
                    return Err(format!(
                        "{}: NULL in a column declared \"nullable\": false",
                        at()
                    ));
                }
                if !has_null {
                    c.ty.write_null(buf);
                }
                continue;
            }
            c.ty.write_value(c.nullable, v, buf)
                .map_err(|e| format!("{}: {e}", at()))?;
        }
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markers_and_normalisation() {
        assert_eq!(
            marker("select 1 -- sqlvigil:sessions.v2 x").as_deref(),
            Some("sessions.v2")
        );
        assert_eq!(
            marker("-- sqlvigil:a_b-c\n-- sqlvigil:other").as_deref(),
            Some("a_b-c")
        );
        assert_eq!(marker("-- sqlvigil:"), None);
        assert_eq!(normalize_sql("  SELECT\n  1\tFROM x "), "select 1 from x");
    }

    #[test]
    fn types_parse() {
        assert_eq!(parse_type("nvarchar(max)"), Ok(SqlType::NVarChar(None)));
        assert_eq!(
            parse_type("NVARCHAR(128)"),
            Ok(SqlType::NVarChar(Some(128)))
        );
        assert_eq!(
            parse_type("decimal(18, 2)"),
            Ok(SqlType::Decimal {
                precision: 18,
                scale: 2,
                numeric: false
            })
        );
        assert_eq!(parse_type("datetime2"), Ok(SqlType::DateTime2(7)));
        assert!(parse_type("nvarchar(5000)").is_err());
        assert!(parse_type("geography").is_err());
        assert!(parse_type("int(3)").is_err());
    }

    #[test]
    fn decimals_scale_and_round() {
        assert_eq!(decimal_value(&json!("12.345"), 2), Ok(1235));
        assert_eq!(decimal_value(&json!(-0.5), 0), Ok(-1));
        assert_eq!(decimal_value(&json!(1e-7), 7), Ok(1));
        assert_eq!(decimal_value(&json!("100"), 4), Ok(1_000_000));
        assert!(decimal_value(&json!("1.2.3"), 2).is_err());
        assert!(decimal_value(&json!("abc"), 2).is_err());
    }

    #[test]
    fn datetimes_parse() {
        assert!(parse_naive_datetime("2026-11-30T14:05:00.123").is_some());
        assert!(parse_naive_datetime("2026-11-30T14:05:00").is_some());
        assert!(parse_naive_datetime("2026-11-30 14:05:00").is_some());
        assert!(parse_naive_datetime("2026-11-30").is_some());
        assert!(parse_offset_datetime("2026-11-30T14:05:00.123+01:00").is_some());
        assert!(parse_offset_datetime("2026-11-30 14:05:00Z").is_some());
    }

    #[test]
    fn nullable_columns_use_the_n_types() {
        let info = |t: &str, nullable: bool| {
            let mut b = Vec::new();
            parse_type(t)
                .expect("type")
                .write_type_info(nullable, &mut b);
            b
        };
        assert_eq!(info("int", false), [0x38]);
        assert_eq!(info("int", true), [0x26, 4]);
        assert_eq!(info("bigint", true), [0x26, 8]);
        assert_eq!(info("float", false), [0x3E]);
        assert_eq!(info("real", true), [0x6D, 4]);
        assert_eq!(info("money", true), [0x6E, 8]);
        assert_eq!(info("datetime", true), [0x6F, 8]);
        assert_eq!(info("decimal(18,2)", false), [0x6A, 9, 18, 2]);
        assert_eq!(info("numeric(38,10)", true), [0x6C, 17, 38, 10]);
        assert_eq!(
            info("nvarchar(max)", true),
            [0xE7, 0xFF, 0xFF, 0x09, 0x04, 0xD0, 0x00, 0x34]
        );
        assert_eq!(info("varbinary(16)", true), [0xA5, 16, 0]);
        assert_eq!(info("datetime2", true), [0x2A, 7]);
        assert_eq!(info("date", false), [0x28]);
    }

    #[test]
    fn guid_wire_order() {
        let g = guid_value(&json!("00112233-4455-6677-8899-aabbccddeeff")).expect("guid");
        assert_eq!(g[..8], [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66]);
        assert_eq!(g[8..], [0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
    }

    #[test]
    fn bad_values_name_row_and_column() {
        let f = Fixture::from_json(
            "f",
            &json!({"columns": [{"name": "a", "type": "int"}, {"name": "b", "type": "tinyint"}],
                    "rows": [[1, 2], [3, 300]]}),
        )
        .expect("parse");
        let AnswerBody::ResultSets(sets) = &f.answers[0].body else {
            panic!("not a result set")
        };
        let err = encode_result_set(&sets[0], None, &mut Vec::new()).expect_err("must fail");
        assert!(err.contains("row 1") && err.contains("'b'"), "{err}");
    }
}
