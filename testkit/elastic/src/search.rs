//! `_search` and `_count`: request parsing, hits, sorting and `search_after`.

use super::*;

/// Largest `from + size` (the default `index.max_result_window`).
const MAX_RESULT_WINDOW: u64 = 10_000;

/// A stored document with the index it lives in.
#[derive(Clone, Copy)]
pub(super) struct Hit<'a> {
    pub(super) index: &'a Index,
    pub(super) doc: &'a Doc,
}

pub(super) fn parsing(reason: impl Into<String>) -> Reply {
    Reply::bad_request("parsing_exception", reason)
}

pub(super) fn illegal(reason: impl Into<String>) -> Reply {
    Reply::bad_request("illegal_argument_exception", reason)
}

/// Every document of the named indices, in the order written.
pub(super) fn collect_hits<'a>(inner: &'a Inner, names: &[String]) -> Vec<Hit<'a>> {
    let mut hits: Vec<Hit> = names
        .iter()
        .filter_map(|n| inner.indices.get(n))
        .flat_map(|index| index.live_docs().map(move |doc| Hit { index, doc }))
        .collect();
    hits.sort_by_key(|h| h.doc.order);
    hits
}

pub(super) fn count(shared: &Shared, req: &Req, target: &str) -> Reply {
    let mut inner = shared.lock();
    inner.stats.searches += 1;
    let run = || -> Result<Value, Reply> {
        let body = req.json_object()?;
        let mut query = Query::All;
        for (key, v) in &body {
            match key.as_str() {
                "query" => query = parse_query(v)?,
                other => return Err(parsing(format!("request does not support [{other}]"))),
            }
        }
        let names = resolve_target(&inner, req, target)?;
        let now = now_ms();
        let n = collect_hits(&inner, &names)
            .iter()
            .filter(|h| query.matches(h, now))
            .count();
        let shards = names.len();
        Ok(
            json!({"count": n, "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0}}),
        )
    };
    run().map_or_else(|e| e, Reply::ok)
}

/// What a search body asks for.
pub(super) struct SearchRequest {
    pub(super) query: Query,
    pub(super) post_filter: Option<Query>,
    pub(super) size: u64,
    pub(super) from: u64,
    pub(super) sort: Vec<SortSpec>,
    pub(super) search_after: Option<Vec<Value>>,
    pub(super) source: bool,
    /// `None`: no total; `Some(cap)`: count exactly up to `cap` (`u64::MAX` = exact).
    pub(super) track_total_hits: Option<u64>,
    pub(super) aggs: Vec<Agg>,
    pub(super) version: bool,
    pub(super) seq_no_primary_term: bool,
}

/// Body keys Elasticsearch accepts that do not change what this server answers.
pub(super) const IGNORED_SEARCH_KEYS: [&str; 16] = [
    "timeout",
    "track_scores",
    "stored_fields",
    "docvalue_fields",
    "fields",
    "highlight",
    "explain",
    "min_score",
    "terminate_after",
    "runtime_mappings",
    "profile",
    "script_fields",
    "indices_boost",
    "stats",
    "ext",
    "pit",
];

pub(super) fn parse_search(req: &Req) -> Result<SearchRequest, Reply> {
    let body = req.json_object()?;
    let mut s = SearchRequest {
        query: Query::All,
        post_filter: None,
        size: 10,
        from: 0,
        sort: Vec::new(),
        search_after: None,
        source: true,
        track_total_hits: Some(MAX_RESULT_WINDOW),
        aggs: Vec::new(),
        version: false,
        seq_no_primary_term: false,
    };
    for (key, v) in &body {
        match key.as_str() {
            "query" => s.query = parse_query(v)?,
            "post_filter" => s.post_filter = Some(parse_query(v)?),
            "size" => s.size = non_negative(v, "size")?,
            "from" => s.from = non_negative(v, "from")?,
            "sort" => s.sort = parse_sort(v)?,
            "search_after" => match v {
                Value::Array(a) => s.search_after = Some(a.clone()),
                other => {
                    return Err(parsing(format!(
                        "[search_after] expected an array, found [{}]",
                        token_name(other)
                    )))
                }
            },
            "_source" => s.source = v != &Value::Bool(false),
            "track_total_hits" => s.track_total_hits = track_total_hits(v)?,
            "aggs" | "aggregations" => s.aggs = parse_aggs(v)?,
            "version" => s.version = v == &Value::Bool(true),
            "seq_no_primary_term" => s.seq_no_primary_term = v == &Value::Bool(true),
            k if IGNORED_SEARCH_KEYS.contains(&k) => {}
            other => {
                return Err(parsing(format!(
                    "Unknown key for a {} in [{other}].",
                    token_name(v)
                )))
            }
        }
    }
    search_url_params(req, &mut s)?;
    if s.from.saturating_add(s.size) > MAX_RESULT_WINDOW {
        return Err(illegal(format!(
            "Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{}]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting.",
            s.from.saturating_add(s.size)
        )));
    }
    if let Some(after) = &s.search_after {
        if s.sort.is_empty() {
            return Err(illegal("Sort must contain at least one field."));
        }
        if after.len() != s.sort.len() {
            return Err(illegal(format!(
                "search_after has {} value(s) but sort has {}.",
                after.len(),
                s.sort.len()
            )));
        }
    }
    Ok(s)
}

/// `size`, `from`, `sort`, `_source`, `track_total_hits` given in the URL win over the body.
pub(super) fn search_url_params(req: &Req, s: &mut SearchRequest) -> Result<(), Reply> {
    let number = |name: &str| -> Result<Option<u64>, Reply> {
        req.param(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    illegal(format!(
                        "Failed to parse int parameter [{name}] with value [{v}]"
                    ))
                })
            })
            .transpose()
    };
    if let Some(size) = number("size")? {
        s.size = size;
    }
    if let Some(from) = number("from")? {
        s.from = from;
    }
    if let Some(sort) = req.param("sort") {
        let specs: Vec<Value> = sort
            .split(',')
            .map(|item| match item.split_once(':') {
                Some((f, dir)) => json!({ f: dir }),
                None => json!(item),
            })
            .collect();
        s.sort = parse_sort(&Value::Array(specs))?;
    }
    if req.param("_source") == Some("false") {
        s.source = false;
    }
    if let Some(t) = req.param("track_total_hits") {
        let v = t
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or(Value::Bool(t != "false"));
        s.track_total_hits = track_total_hits(&v)?;
    }
    Ok(())
}

pub(super) fn non_negative(v: &Value, name: &str) -> Result<u64, Reply> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| {
            illegal(format!(
                "[{name}] parameter cannot be negative, found [{v}]"
            ))
        })
}

pub(super) fn track_total_hits(v: &Value) -> Result<Option<u64>, Reply> {
    match v {
        Value::Bool(true) => Ok(Some(u64::MAX)),
        Value::Bool(false) => Ok(None),
        Value::Number(n) => n.as_u64().map(Some).ok_or_else(|| {
            illegal(format!(
                "[track_total_hits] parameter must be positive or equals to -1, got {n}"
            ))
        }),
        other => Err(parsing(format!(
            "[track_total_hits] cannot be a {}",
            token_name(other)
        ))),
    }
}

pub(super) fn search(shared: &Shared, req: &Req, target: &str, started: Instant) -> Reply {
    let mut inner = shared.lock();
    inner.stats.searches += 1;
    run_search(&inner, req, target, started).map_or_else(|e| e, Reply::ok)
}

pub(super) fn run_search(
    inner: &Inner,
    req: &Req,
    target: &str,
    started: Instant,
) -> Result<Value, Reply> {
    let s = parse_search(req)?;
    let names = resolve_target(inner, req, target)?;
    let now = now_ms();
    let matched: Vec<Hit> = collect_hits(inner, &names)
        .into_iter()
        .filter(|h| s.query.matches(h, now))
        .collect();
    let aggregations = run_aggs(&s.aggs, &matched, now)?;
    let visible: Vec<Hit> = match &s.post_filter {
        Some(f) => matched.into_iter().filter(|h| f.matches(h, now)).collect(),
        None => matched,
    };
    let page = sorted_page(&visible, &s.sort, s.search_after.as_deref(), s.from, s.size);
    let sorted = !s.sort.is_empty();
    let score = if sorted { Value::Null } else { json!(1.0) };
    let hits: Vec<Value> = page
        .iter()
        .map(|(h, keys)| {
            let mut hit = hit_json(h, s.source, sorted.then_some((&s.sort, keys.as_slice())));
            hit["_score"] = score.clone();
            if s.version {
                hit["_version"] = json!(h.doc.version);
            }
            if s.seq_no_primary_term {
                hit["_seq_no"] = json!(h.doc.seq_no);
                hit["_primary_term"] = json!(1);
            }
            hit
        })
        .collect();
    let mut hits_obj = json!({
        "max_score": if hits.is_empty() { Value::Null } else { score },
        "hits": hits
    });
    if let Some(cap) = s.track_total_hits {
        let total = visible.len() as u64;
        hits_obj["total"] = if req.flag("rest_total_hits_as_int") {
            json!(total)
        } else if total > cap {
            json!({"value": cap, "relation": "gte"})
        } else {
            json!({"value": total, "relation": "eq"})
        };
    }
    let shards = names.len();
    let mut out = json!({
        "took": started.elapsed().as_millis() as u64,
        "timed_out": false,
        "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
        "hits": hits_obj
    });
    if !s.aggs.is_empty() {
        out["aggregations"] = Value::Object(aggregations);
    }
    Ok(out)
}

pub(super) fn hit_json(
    h: &Hit,
    source: bool,
    sort: Option<(&Vec<SortSpec>, &[Option<Key>])>,
) -> Value {
    let mut hit = json!({"_index": h.index.response_name(), "_id": h.doc.id, "_score": null});
    if source {
        hit["_source"] = h.doc.source.clone();
    }
    if let Some((specs, keys)) = sort {
        let values: Vec<Value> = specs
            .iter()
            .zip(keys)
            .map(|(spec, key)| {
                key.as_ref()
                    .map_or(Value::Null, |k| spec.value_json(k, h.index.ty(&spec.field)))
            })
            .collect();
        hit["sort"] = json!(values);
    }
    hit
}

// ---------------------------------------------------------------- sorting

pub(super) struct SortSpec {
    pub(super) field: String,
    pub(super) desc: bool,
    pub(super) missing_first: bool,
    /// A `missing` value to sort documents without the field by.
    pub(super) missing: Option<Value>,
    /// `numeric_type: date|date_nanos`: one resolution for the dates' sort values across
    /// indices mapping the field differently (otherwise each index uses its own).
    pub(super) numeric_type: Option<Ty>,
    /// `format`: date sort values as formatted strings instead of epoch numbers.
    pub(super) format: Option<String>,
}

impl SortSpec {
    /// The date resolution of sort values for a field of type `ty`.
    pub(super) fn resolution(&self, ty: Ty) -> Ty {
        self.numeric_type.unwrap_or(ty)
    }

    /// A sort value as the response carries it.
    pub(super) fn value_json(&self, k: &Key, ty: Ty) -> Value {
        match (k, &self.format) {
            (Key::Date(n), Some(f)) => json!(fmt_nanos(*n, f.contains("nanos"))),
            _ => k.to_json(self.resolution(ty)),
        }
    }
}

pub(super) fn parse_sort(v: &Value) -> Result<Vec<SortSpec>, Reply> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items.into_iter().map(parse_sort_item).collect()
}

pub(super) fn parse_sort_item(item: &Value) -> Result<SortSpec, Reply> {
    let spec = |field: &str, desc: bool| SortSpec {
        field: field.to_string(),
        desc,
        missing_first: false,
        missing: None,
        numeric_type: None,
        format: None,
    };
    let direction = |d: &str| match d {
        "asc" | "ASC" => Ok(false),
        "desc" | "DESC" => Ok(true),
        other => Err(illegal(format!("Unknown SortOrder [{other}]"))),
    };
    match item {
        Value::String(f) => Ok(spec(f, f == "_score")),
        Value::Object(m) if m.len() == 1 => {
            let Some((field, opts)) = m.iter().next() else {
                return Err(parsing("[sort] malformed"));
            };
            match opts {
                Value::String(d) => Ok(spec(field, direction(d)?)),
                Value::Object(o) => {
                    let desc = match o.get("order").and_then(Value::as_str) {
                        Some(d) => direction(d)?,
                        None => field == "_score",
                    };
                    let mut s = spec(field, desc);
                    match o.get("missing") {
                        Some(Value::String(m)) if m == "_first" => s.missing_first = true,
                        Some(Value::String(m)) if m == "_last" => {}
                        Some(other) => s.missing = Some(other.clone()),
                        None => {}
                    }
                    s.numeric_type = match o.get("numeric_type").and_then(Value::as_str) {
                        Some("date") => Some(Ty::Date),
                        Some("date_nanos") => Some(Ty::DateNanos),
                        _ => None,
                    };
                    s.format = o.get("format").and_then(Value::as_str).map(String::from);
                    Ok(s)
                }
                other => Err(parsing(format!(
                    "[sort] expected an order or an object for [{field}], found [{}]",
                    token_name(other)
                ))),
            }
        }
        other => Err(parsing(format!(
            "[sort] malformed, found [{}]",
            token_name(other)
        ))),
    }
}

/// The sort value of a hit for one spec: the lowest value ascending, the highest
/// descending (Elasticsearch's default `mode`).
pub(super) fn sort_key(spec: &SortSpec, h: &Hit) -> Option<Key> {
    match spec.field.as_str() {
        "_doc" => Some(Key::Int(i64::try_from(h.doc.order).unwrap_or(i64::MAX))),
        "_score" => Some(Key::Num(1.0)),
        field => {
            let keys = doc_keys(h, field);
            let pick = if spec.desc {
                keys.into_iter().max_by(Key::cmp)
            } else {
                keys.into_iter().min_by(Key::cmp)
            };
            pick.or_else(|| {
                spec.missing
                    .as_ref()
                    .and_then(|m| to_key(m, h.index.ty(field)))
            })
        }
    }
}

pub(super) fn cmp_sort_value(spec: &SortSpec, a: Option<&Key>, b: Option<&Key>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => {
            let o = x.cmp(y);
            if spec.desc {
                o.reverse()
            } else {
                o
            }
        }
        (None, None) => Ordering::Equal,
        (None, Some(_)) if spec.missing_first => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) if spec.missing_first => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    }
}

/// Sort (stable: ties keep the order written), apply `search_after`, then `from`/`size`.
pub(super) fn sorted_page<'a>(
    hits: &[Hit<'a>],
    specs: &[SortSpec],
    after: Option<&[Value]>,
    from: u64,
    size: u64,
) -> Vec<(Hit<'a>, Vec<Option<Key>>)> {
    let mut keyed: Vec<(Hit, Vec<Option<Key>>)> = hits
        .iter()
        .map(|h| (*h, specs.iter().map(|s| sort_key(s, h)).collect()))
        .collect();
    keyed.sort_by(|a, b| {
        specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                cmp_sort_value(
                    s,
                    a.1.get(i).and_then(Option::as_ref),
                    b.1.get(i).and_then(Option::as_ref),
                )
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    if let Some(after) = after {
        keyed.retain(|(h, keys)| is_after(specs, keys, after, h));
    }
    keyed
        .into_iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .collect()
}

/// Whether a hit sorts strictly after the `search_after` values.
pub(super) fn is_after(specs: &[SortSpec], keys: &[Option<Key>], after: &[Value], h: &Hit) -> bool {
    for (i, spec) in specs.iter().enumerate() {
        let mine = keys.get(i).and_then(Option::as_ref);
        let theirs = after.get(i).filter(|v| !v.is_null()).map(|v| match mine {
            Some(like) => after_key(v, like, spec.resolution(h.index.ty(&spec.field))),
            None => Key::Str(preview(v)),
        });
        match cmp_sort_value(spec, mine, theirs.as_ref()) {
            Ordering::Equal => continue,
            o => return o == Ordering::Greater,
        }
    }
    false
}

/// A `search_after` value as a key comparable to `like` (dates come back as the epoch
/// millis, or nanos for `date_nanos`, that the sort values carried).
pub(super) fn after_key(v: &Value, like: &Key, ty: Ty) -> Key {
    let converted = match like {
        Key::Date(_) => match v {
            Value::Number(n) if ty == Ty::DateNanos => n.as_i64().map(Key::Date),
            other => date_nanos_of(other).map(Key::Date),
        },
        Key::Int(_) | Key::Num(_) => number_of(v).map(Key::Num),
        Key::Bool(_) => match v {
            Value::Bool(b) => Some(Key::Bool(*b)),
            other => number_of(other).map(|n| Key::Bool(n != 0.0)),
        },
        Key::Str(_) => match v {
            Value::Number(n) => n.as_f64().map(Key::Num),
            other => scalar_text(other).map(Key::Str),
        },
    };
    converted.unwrap_or_else(|| Key::Str(preview(v)))
}
