//! The query DSL subset: parsing into [`Query`] and matching documents.

use super::*;

pub(super) enum Query {
    All,
    Nothing,
    Bool {
        must: Vec<Query>,
        filter: Vec<Query>,
        should: Vec<Query>,
        must_not: Vec<Query>,
        min_should: usize,
    },
    Term {
        field: String,
        value: Value,
        case_insensitive: bool,
    },
    Terms {
        field: String,
        values: Vec<Value>,
    },
    Range {
        field: String,
        bounds: Vec<(Bound, Value)>,
        format: Option<String>,
    },
    Exists(String),
    Ids(Vec<String>),
    /// `match`: any (or, with `operator: and`, every) word of the text in the field.
    Match {
        field: String,
        text: String,
        all: bool,
    },
    Prefix {
        field: String,
        prefix: String,
        case_insensitive: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

pub(super) fn parse_query(v: &Value) -> Result<Query, Reply> {
    let Value::Object(m) = v else {
        return Err(parsing(format!(
            "[_na] query malformed, must start with start_object, found [{}]",
            token_name(v)
        )));
    };
    let mut entries = m.iter();
    let (name, body) = match (entries.next(), entries.next()) {
        (Some(first), None) => first,
        (None, _) => return Err(parsing("query malformed, empty clause found")),
        (Some((a, _)), Some((b, _))) => {
            return Err(parsing(format!(
                "[{a}] malformed query, expected [END_OBJECT] but found [FIELD_NAME] ([{b}])"
            )))
        }
    };
    match name.as_str() {
        "match_all" => Ok(Query::All),
        "match_none" => Ok(Query::Nothing),
        "bool" => parse_bool(body),
        "constant_score" => match body.get("filter") {
            Some(f) => parse_query(f),
            None => Err(parsing("[constant_score] requires a 'filter' element")),
        },
        "term" => parse_term(body),
        "terms" => parse_terms(body),
        "range" => parse_range(body),
        "exists" => match body.get("field").and_then(Value::as_str) {
            Some(f) => Ok(Query::Exists(f.to_string())),
            None => Err(parsing("[exists] must be provided with a [field]")),
        },
        "ids" => {
            let values = body
                .get("values")
                .and_then(Value::as_array)
                .ok_or_else(|| parsing("[ids] requires [values]"))?;
            Ok(Query::Ids(values.iter().filter_map(scalar_text).collect()))
        }
        "match" | "match_phrase" => parse_match(name, body),
        "prefix" => parse_prefix(body),
        other => Err(parsing(format!("unknown query [{other}]"))),
    }
}

/// The one `{"field": ...}` entry of a leaf query (ignoring `boost` and `_name`).
pub(super) fn single_field<'a>(
    kind: &str,
    body: &'a Value,
) -> Result<(&'a String, &'a Value), Reply> {
    let Value::Object(m) = body else {
        return Err(parsing(format!(
            "[{kind}] query malformed, no start_object after query name"
        )));
    };
    let mut fields = m
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "boost" | "_name"));
    match (fields.next(), fields.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(parsing(format!(
            "[{kind}] query malformed, no field specified"
        ))),
        (Some((a, _)), Some((b, _))) => Err(parsing(format!(
            "[{kind}] query doesn't support multiple fields, found [{a}] and [{b}]"
        ))),
    }
}

pub(super) fn clauses(v: &Value) -> Result<Vec<Query>, Reply> {
    match v {
        Value::Array(items) => items.iter().map(parse_query).collect(),
        one => Ok(vec![parse_query(one)?]),
    }
}

pub(super) fn parse_bool(body: &Value) -> Result<Query, Reply> {
    let Value::Object(m) = body else {
        return Err(parsing(
            "[bool] query malformed, no start_object after query name",
        ));
    };
    let (mut must, mut filter, mut should, mut must_not) = (vec![], vec![], vec![], vec![]);
    let mut msm: Option<&Value> = None;
    for (k, v) in m {
        match k.as_str() {
            "must" => must = clauses(v)?,
            "filter" => filter = clauses(v)?,
            "should" => should = clauses(v)?,
            "must_not" => must_not = clauses(v)?,
            "minimum_should_match" => msm = Some(v),
            "boost" | "_name" | "adjust_pure_negative" => {}
            other => return Err(parsing(format!("[bool] query does not support [{other}]"))),
        }
    }
    let default = usize::from(must.is_empty() && filter.is_empty() && !should.is_empty());
    let min_should = match msm {
        None => default,
        Some(v) => minimum_should_match(v, should.len())?,
    };
    Ok(Query::Bool {
        must,
        filter,
        should,
        must_not,
        min_should,
    })
}

/// `minimum_should_match`: `2`, `"2"`, `"-1"`, `"75%"`, `"-25%"`.
pub(super) fn minimum_should_match(v: &Value, clauses: usize) -> Result<usize, Reply> {
    let text = scalar_text(v).unwrap_or_default();
    let bad = || illegal(format!("cannot parse minimum_should_match [{text}]"));
    let n = clauses as i64;
    let wanted = match text.trim().strip_suffix('%') {
        Some(pct) => {
            let p: i64 = pct.trim().parse().map_err(|_| bad())?;
            let part = n * p.clamp(-100, 100).abs() / 100;
            if p < 0 {
                n - part
            } else {
                part
            }
        }
        None => {
            let k: i64 = text.trim().parse().map_err(|_| bad())?;
            if k < 0 {
                n.saturating_add(k)
            } else {
                k
            }
        }
    };
    Ok(usize::try_from(wanted.max(0)).unwrap_or(0))
}

pub(super) fn parse_term(body: &Value) -> Result<Query, Reply> {
    let (field, spec) = single_field("term", body)?;
    let (value, case_insensitive) = match spec {
        Value::Object(o) => (
            o.get("value")
                .cloned()
                .ok_or_else(|| parsing("[term] query requires a [value]"))?,
            o.get("case_insensitive") == Some(&json!(true)),
        ),
        other => (other.clone(), false),
    };
    if value.is_array() || value.is_object() || value.is_null() {
        return Err(parsing(format!(
            "[term] query does not support [{}] values",
            token_name(&value)
        )));
    }
    Ok(Query::Term {
        field: field.clone(),
        value,
        case_insensitive,
    })
}

pub(super) fn parse_terms(body: &Value) -> Result<Query, Reply> {
    let (field, values) = single_field("terms", body)?;
    match values {
        Value::Array(values) => Ok(Query::Terms {
            field: field.clone(),
            values: values.clone(),
        }),
        other => Err(parsing(format!(
            "[terms] query does not support [{field}] with a {} (terms lookup is not supported here)",
            token_name(other)
        ))),
    }
}

pub(super) fn parse_range(body: &Value) -> Result<Query, Reply> {
    let (field, spec) = single_field("range", body)?;
    let Value::Object(o) = spec else {
        return Err(parsing(format!(
            "[range] query malformed, no start_object after [{field}]"
        )));
    };
    let mut bounds = Vec::new();
    let (mut include_lower, mut include_upper) = (true, true);
    let (mut from, mut to) = (None, None);
    let mut format = None;
    for (k, v) in o {
        match k.as_str() {
            "gt" => bounds.push((Bound::Gt, v.clone())),
            "gte" => bounds.push((Bound::Gte, v.clone())),
            "lt" => bounds.push((Bound::Lt, v.clone())),
            "lte" => bounds.push((Bound::Lte, v.clone())),
            "from" => from = Some(v.clone()),
            "to" => to = Some(v.clone()),
            "include_lower" => include_lower = v != &json!(false),
            "include_upper" => include_upper = v != &json!(false),
            "format" => format = v.as_str().map(String::from),
            "time_zone" | "boost" | "relation" | "_name" => {}
            other => return Err(parsing(format!("[range] query does not support [{other}]"))),
        }
    }
    if let Some(f) = from.filter(|v| !v.is_null()) {
        bounds.push((if include_lower { Bound::Gte } else { Bound::Gt }, f));
    }
    if let Some(t) = to.filter(|v| !v.is_null()) {
        bounds.push((if include_upper { Bound::Lte } else { Bound::Lt }, t));
    }
    bounds.retain(|(_, v)| !v.is_null());
    Ok(Query::Range {
        field: field.clone(),
        bounds,
        format,
    })
}

pub(super) fn parse_match(kind: &str, body: &Value) -> Result<Query, Reply> {
    let (field, spec) = single_field(kind, body)?;
    let (text, all) = match spec {
        Value::Object(o) => (
            o.get("query")
                .and_then(scalar_text)
                .ok_or_else(|| parsing(format!("[{kind}] requires query value")))?,
            kind == "match_phrase"
                || o.get("operator")
                    .and_then(Value::as_str)
                    .is_some_and(|op| op.eq_ignore_ascii_case("and")),
        ),
        other => (
            scalar_text(other).ok_or_else(|| {
                parsing(format!("[{kind}] unknown token [{}]", token_name(other)))
            })?,
            kind == "match_phrase",
        ),
    };
    Ok(Query::Match {
        field: field.clone(),
        text,
        all,
    })
}

pub(super) fn parse_prefix(body: &Value) -> Result<Query, Reply> {
    let (field, spec) = single_field("prefix", body)?;
    let (prefix, case_insensitive) = match spec {
        Value::Object(o) => (
            o.get("value")
                .and_then(scalar_text)
                .ok_or_else(|| parsing("[prefix] requires a [value]"))?,
            o.get("case_insensitive") == Some(&json!(true)),
        ),
        other => (scalar_text(other).unwrap_or_default(), false),
    };
    Ok(Query::Prefix {
        field: field.clone(),
        prefix,
        case_insensitive,
    })
}

pub(super) fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Query {
    pub(super) fn matches(&self, h: &Hit, now: i64) -> bool {
        match self {
            Query::All => true,
            Query::Nothing => false,
            Query::Bool {
                must,
                filter,
                should,
                must_not,
                min_should,
            } => {
                must.iter().chain(filter).all(|q| q.matches(h, now))
                    && !must_not.iter().any(|q| q.matches(h, now))
                    && should.iter().filter(|q| q.matches(h, now)).count() >= *min_should
            }
            Query::Term {
                field,
                value,
                case_insensitive,
            } => doc_keys(h, field)
                .iter()
                .any(|k| term_eq(k, value, *case_insensitive, now)),
            Query::Terms { field, values } => doc_keys(h, field)
                .iter()
                .any(|k| values.iter().any(|v| term_eq(k, v, false, now))),
            Query::Range {
                field,
                bounds,
                format,
            } => doc_keys(h, field).iter().any(|k| {
                bounds
                    .iter()
                    .all(|(b, v)| in_range(k, *b, v, format.as_deref(), now))
            }),
            Query::Exists(field) => match field.as_str() {
                "_id" | "_index" => true,
                f => !field_values(&h.doc.source, f).is_empty(),
            },
            Query::Ids(ids) => ids.contains(&h.doc.id),
            Query::Match { field, text, all } => {
                let wanted = words(text);
                let keys = doc_keys(h, field);
                let have: BTreeSet<String> = keys
                    .iter()
                    .filter_map(|k| match k {
                        Key::Str(s) => Some(words(s)),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                let numeric = keys.iter().any(|k| term_eq(k, &json!(text), false, now));
                numeric
                    || if *all {
                        !wanted.is_empty() && wanted.iter().all(|w| have.contains(w))
                    } else {
                        wanted.iter().any(|w| have.contains(w))
                    }
            }
            Query::Prefix {
                field,
                prefix,
                case_insensitive,
            } => doc_keys(h, field).iter().any(|k| match k {
                Key::Str(s) if *case_insensitive => {
                    s.to_lowercase().starts_with(&prefix.to_lowercase())
                }
                Key::Str(s) => s.starts_with(prefix.as_str()),
                _ => false,
            }),
        }
    }
}

pub(super) fn term_eq(k: &Key, q: &Value, case_insensitive: bool, now: i64) -> bool {
    match (k, coerce(q, k, None, false, now)) {
        (Key::Str(a), Some(Key::Str(b))) if case_insensitive => {
            a.to_lowercase() == b.to_lowercase()
        }
        (_, Some(qk)) => k.cmp(&qk) == Ordering::Equal,
        (_, None) => false,
    }
}

pub(super) fn in_range(k: &Key, bound: Bound, v: &Value, format: Option<&str>, now: i64) -> bool {
    let round_up = matches!(bound, Bound::Gt | Bound::Lte);
    let Some(qk) = coerce(v, k, format, round_up, now) else {
        return false;
    };
    let o = k.cmp(&qk);
    match bound {
        Bound::Gt => o == Ordering::Greater,
        Bound::Gte => o != Ordering::Less,
        Bound::Lt => o == Ordering::Less,
        Bound::Lte => o != Ordering::Greater,
    }
}
