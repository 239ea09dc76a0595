//! Aggregations: `terms`, `date_histogram`, `filter`, `top_hits`, metrics, `percentiles`.

use super::*;

/// Most buckets one aggregation may build (the default `search.max_buckets`).
const MAX_BUCKETS: usize = 65_536;

pub(super) struct Agg {
    pub(super) name: String,
    pub(super) kind: AggKind,
    pub(super) subs: Vec<Agg>,
}

pub(super) enum AggKind {
    Terms {
        field: String,
        size: usize,
        order: Vec<(String, bool)>,
        min_doc_count: usize,
        missing: Option<Value>,
    },
    DateHistogram {
        field: String,
        interval: Interval,
        offset: i64,
        min_doc_count: usize,
        bounds: Option<(Value, Value)>,
        desc: bool,
    },
    Filter(Query),
    TopHits {
        size: usize,
        from: usize,
        sort: Vec<SortSpec>,
        source: bool,
    },
    Metric {
        op: MetricOp,
        field: String,
        missing: Option<Value>,
    },
    Percentiles {
        field: String,
        percents: Vec<f64>,
        keyed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MetricOp {
    Avg,
    Max,
    Min,
    Sum,
    ValueCount,
    Cardinality,
    Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interval {
    Fixed(i64),
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

pub(super) const WEEK_MS: i64 = 7 * 86_400_000;
/// 1970-01-05, the first Monday after the epoch: weeks start on Mondays.
pub(super) const FIRST_MONDAY_MS: i64 = 4 * 86_400_000;

impl Interval {
    pub(super) fn round(self, ms: i64) -> i64 {
        let floor = |unit: i64| ms.div_euclid(unit).saturating_mul(unit);
        let calendar = |months_per_bucket: u32| {
            let Some(d) = DateTime::from_timestamp_millis(ms) else {
                return ms;
            };
            let month0 = (d.month0() / months_per_bucket) * months_per_bucket;
            NaiveDate::from_ymd_opt(d.year(), month0 + 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(ms, |d| d.and_utc().timestamp_millis())
        };
        match self {
            Interval::Fixed(iv) => floor(iv),
            Interval::Minute => floor(60_000),
            Interval::Hour => floor(3_600_000),
            Interval::Day => floor(86_400_000),
            Interval::Week => ms
                .saturating_sub(FIRST_MONDAY_MS)
                .div_euclid(WEEK_MS)
                .saturating_mul(WEEK_MS)
                .saturating_add(FIRST_MONDAY_MS),
            Interval::Month => calendar(1),
            Interval::Quarter => calendar(3),
            Interval::Year => calendar(12),
        }
    }

    pub(super) fn next(self, key: i64) -> i64 {
        let months = |n: u32| {
            DateTime::from_timestamp_millis(key)
                .and_then(|d| d.checked_add_months(chrono::Months::new(n)))
                .map_or(i64::MAX, |d| d.timestamp_millis())
        };
        match self {
            Interval::Fixed(iv) => key.saturating_add(iv),
            Interval::Minute => key.saturating_add(60_000),
            Interval::Hour => key.saturating_add(3_600_000),
            Interval::Day => key.saturating_add(86_400_000),
            Interval::Week => key.saturating_add(WEEK_MS),
            Interval::Month => months(1),
            Interval::Quarter => months(3),
            Interval::Year => months(12),
        }
    }
}

pub(super) fn parse_aggs(v: &Value) -> Result<Vec<Agg>, Reply> {
    let Value::Object(m) = v else {
        return Err(parsing(format!(
            "Expected [START_OBJECT] under [aggregations], but got a [{}]",
            token_name(v)
        )));
    };
    let mut out = Vec::new();
    for (name, def) in m {
        let Value::Object(def) = def else {
            return Err(parsing(format!(
                "Expected [START_OBJECT] under [{name}], but got a [{}]",
                token_name(def)
            )));
        };
        let mut kind: Option<(String, AggKind)> = None;
        let mut subs = Vec::new();
        for (key, body) in def {
            match key.as_str() {
                "aggs" | "aggregations" => subs = parse_aggs(body)?,
                "meta" => {}
                t => {
                    if let Some((first, _)) = &kind {
                        return Err(parsing(format!(
                            "Found two aggregation type definitions in [{name}]: [{first}] and [{t}]"
                        )));
                    }
                    kind = Some((t.to_string(), parse_agg_kind(t, body)?));
                }
            }
        }
        let Some((type_name, kind)) = kind else {
            return Err(parsing(format!(
                "Missing definition for aggregation [{name}]"
            )));
        };
        let bucket = matches!(
            kind,
            AggKind::Terms { .. } | AggKind::DateHistogram { .. } | AggKind::Filter(_)
        );
        if !subs.is_empty() && !bucket {
            return Err(Reply::bad_request(
                "aggregation_initialization_exception",
                format!("Aggregator [{name}] of type [{type_name}] cannot accept sub-aggregations"),
            ));
        }
        out.push(Agg {
            name: name.clone(),
            kind,
            subs,
        });
    }
    Ok(out)
}

pub(super) fn parse_agg_kind(t: &str, body: &Value) -> Result<AggKind, Reply> {
    let Value::Object(o) = body else {
        return Err(parsing(format!(
            "[{t}] expected START_OBJECT, found [{}]",
            token_name(body)
        )));
    };
    let field = || -> Result<String, Reply> {
        o.get("field")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| {
                illegal("Required one of fields [field, script], but none were specified.")
            })
    };
    let count = |key: &str, default: usize| -> usize {
        o.get(key)
            .and_then(Value::as_u64)
            .map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let op = |op| -> Result<AggKind, Reply> {
        Ok(AggKind::Metric {
            op,
            field: field()?,
            missing: o.get("missing").cloned(),
        })
    };
    match t {
        "terms" => Ok(AggKind::Terms {
            field: field()?,
            size: count("size", 10),
            order: parse_terms_order(o.get("order"))?,
            min_doc_count: count("min_doc_count", 1),
            missing: o.get("missing").cloned(),
        }),
        "date_histogram" => parse_date_histogram(o, field()?),
        "filter" => Ok(AggKind::Filter(parse_query(body)?)),
        "top_hits" => Ok(AggKind::TopHits {
            size: count("size", 3),
            from: count("from", 0),
            sort: o
                .get("sort")
                .map(parse_sort)
                .transpose()?
                .unwrap_or_default(),
            source: o.get("_source") != Some(&json!(false)),
        }),
        "avg" => op(MetricOp::Avg),
        "max" => op(MetricOp::Max),
        "min" => op(MetricOp::Min),
        "sum" => op(MetricOp::Sum),
        "value_count" => op(MetricOp::ValueCount),
        "cardinality" => op(MetricOp::Cardinality),
        "stats" => op(MetricOp::Stats),
        "percentiles" => {
            let percents = match o.get("percents") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|p| p.as_f64().filter(|p| (0.0..=100.0).contains(p)))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| illegal("[percents] must be numbers between 0 and 100"))?,
                Some(other) => {
                    return Err(parsing(format!(
                        "[percents] expected an array, found [{}]",
                        token_name(other)
                    )))
                }
                None => vec![1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0],
            };
            Ok(AggKind::Percentiles {
                field: field()?,
                percents,
                keyed: o.get("keyed") != Some(&json!(false)),
            })
        }
        other => Err(parsing(format!("Unknown aggregation type [{other}]"))),
    }
}

/// `{"_count": "desc"}`, `{"_key": "asc"}`, `{"sub_agg": "desc"}` or a list of them; ties
/// are broken by key ascending.
pub(super) fn parse_terms_order(v: Option<&Value>) -> Result<Vec<(String, bool)>, Reply> {
    let items: Vec<&Value> = match v {
        None => return Ok(vec![("_count".into(), true), ("_key".into(), false)]),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one) => vec![one],
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(m) = item else {
            return Err(parsing("[order] must be an object or an array of objects"));
        };
        for (key, dir) in m {
            let desc = match dir.as_str() {
                Some("desc") => true,
                Some("asc") => false,
                _ => return Err(illegal(format!("Unknown terms order direction [{dir}]"))),
            };
            let key = if key == "_term" {
                "_key".to_string()
            } else {
                key.clone()
            };
            out.push((key, desc));
        }
    }
    out.push(("_key".into(), false));
    Ok(out)
}

pub(super) fn parse_date_histogram(
    o: &Map<String, Value>,
    field: String,
) -> Result<AggKind, Reply> {
    let interval = match (o.get("fixed_interval"), o.get("calendar_interval")) {
        (Some(v), None) => {
            let text = v.as_str().unwrap_or_default();
            let ms = parse_time_value(text).filter(|ms| *ms > 0).ok_or_else(|| {
                illegal(format!("failed to parse setting [date_histogram.fixedInterval] with value [{text}] as a time value: unit is missing or unrecognized"))
            })?;
            Interval::Fixed(ms)
        }
        (None, Some(v)) => match v.as_str().unwrap_or_default() {
            "minute" | "1m" => Interval::Minute,
            "hour" | "1h" => Interval::Hour,
            "day" | "1d" => Interval::Day,
            "week" | "1w" => Interval::Week,
            "month" | "1M" => Interval::Month,
            "quarter" | "1q" => Interval::Quarter,
            "year" | "1y" => Interval::Year,
            other => {
                return Err(illegal(format!(
                    "The supplied interval [{other}] could not be parsed as a calendar interval."
                )))
            }
        },
        (Some(_), Some(_)) => {
            return Err(illegal(
                "Cannot use [fixed_interval] with [calendar_interval] configuration option.",
            ))
        }
        (None, None) => {
            if o.contains_key("interval") {
                return Err(parsing("[date_histogram] unknown field [interval]; use [fixed_interval] or [calendar_interval]"));
            }
            return Err(illegal(
                "Invalid interval specified, must be non-null and non-empty",
            ));
        }
    };
    let offset = match o.get("offset").and_then(Value::as_str) {
        None => 0,
        Some(s) => {
            let (neg, body) = match s.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, s.trim_start_matches('+')),
            };
            let ms = parse_time_value(body)
                .ok_or_else(|| illegal(format!("failed to parse [offset] value [{s}]")))?;
            if neg {
                -ms
            } else {
                ms
            }
        }
    };
    let bounds = o
        .get("extended_bounds")
        .and_then(|b| Some((b.get("min")?.clone(), b.get("max")?.clone())));
    let desc = o
        .get("order")
        .and_then(|v| v.get("_key"))
        .and_then(Value::as_str)
        == Some("desc");
    Ok(AggKind::DateHistogram {
        field,
        interval,
        offset,
        min_doc_count: o
            .get("min_doc_count")
            .and_then(Value::as_u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        bounds,
        desc,
    })
}

pub(super) fn run_aggs(aggs: &[Agg], hits: &[Hit], now: i64) -> Result<Map<String, Value>, Reply> {
    let mut out = Map::new();
    for agg in aggs {
        out.insert(agg.name.clone(), run_agg(agg, hits, now)?);
    }
    Ok(out)
}

pub(super) fn run_agg(agg: &Agg, hits: &[Hit], now: i64) -> Result<Value, Reply> {
    match &agg.kind {
        AggKind::Terms {
            field,
            size,
            order,
            min_doc_count,
            missing,
        } => terms_agg(
            agg,
            hits,
            now,
            field,
            *size,
            order,
            *min_doc_count,
            missing.as_ref(),
        ),
        AggKind::DateHistogram { .. } => date_histogram_agg(agg, hits, now),
        AggKind::Filter(q) => {
            let subset: Vec<Hit> = hits.iter().copied().filter(|h| q.matches(h, now)).collect();
            let mut out = run_aggs(&agg.subs, &subset, now)?;
            out.insert("doc_count".into(), json!(subset.len()));
            Ok(Value::Object(out))
        }
        AggKind::TopHits {
            size,
            from,
            sort,
            source,
        } => {
            let page = sorted_page(hits, sort, None, *from as u64, *size as u64);
            let sorted = !sort.is_empty();
            let list: Vec<Value> = page
                .iter()
                .map(|(h, keys)| {
                    let mut hit = hit_json(h, *source, sorted.then_some((sort, keys.as_slice())));
                    if !sorted {
                        hit["_score"] = json!(1.0);
                    }
                    hit
                })
                .collect();
            let max_score = if sorted || list.is_empty() {
                Value::Null
            } else {
                json!(1.0)
            };
            Ok(
                json!({"hits": {"total": {"value": hits.len(), "relation": "eq"}, "max_score": max_score, "hits": list}}),
            )
        }
        AggKind::Metric { op, field, missing } => {
            Ok(metric_agg(*op, hits, field, missing.as_ref()))
        }
        AggKind::Percentiles {
            field,
            percents,
            keyed,
        } => Ok(percentiles_agg(hits, field, percents, *keyed)),
    }
}

/// A bucket's key as Elasticsearch prints it, with `key_as_string` for dates and booleans.
pub(super) fn bucket_key(k: &Key, bucket: &mut Map<String, Value>) {
    match k {
        Key::Date(n) => {
            let ms = n.div_euclid(1_000_000);
            bucket.insert("key".into(), json!(ms));
            bucket.insert("key_as_string".into(), json!(fmt_millis(ms)));
        }
        Key::Bool(b) => {
            bucket.insert("key".into(), json!(u8::from(*b)));
            bucket.insert("key_as_string".into(), json!(b.to_string()));
        }
        other => {
            bucket.insert("key".into(), other.to_json(Ty::Unmapped));
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn terms_agg(
    agg: &Agg,
    hits: &[Hit],
    now: i64,
    field: &str,
    size: usize,
    order: &[(String, bool)],
    min_doc_count: usize,
    missing: Option<&Value>,
) -> Result<Value, Reply> {
    let mut groups: Vec<(Key, Vec<Hit>)> = Vec::new();
    let mut positions: HashMap<String, usize> = HashMap::new();
    for h in hits {
        let mut keys = doc_keys(h, field);
        if keys.is_empty() {
            keys.extend(missing.and_then(|m| to_key(m, h.index.ty(field))));
        }
        let mut seen = BTreeSet::new();
        for k in keys {
            let canon = k.canon();
            if !seen.insert(canon.clone()) {
                continue;
            }
            let pos = *positions.entry(canon).or_insert_with(|| {
                groups.push((k, Vec::new()));
                groups.len() - 1
            });
            if let Some(g) = groups.get_mut(pos) {
                g.1.push(*h);
            }
        }
    }
    let mut buckets: Vec<(Key, usize, Map<String, Value>)> = Vec::new();
    for (k, members) in groups.into_iter().filter(|(_, m)| m.len() >= min_doc_count) {
        let subs = run_aggs(&agg.subs, &members, now)?;
        buckets.push((k, members.len(), subs));
    }
    buckets.sort_by(|a, b| {
        order
            .iter()
            .map(|(key, desc)| {
                let o = match key.as_str() {
                    "_count" => a.1.cmp(&b.1),
                    "_key" => a.0.cmp(&b.0),
                    path => cmp_metric(order_value(&a.2, path), order_value(&b.2, path), *desc),
                };
                if *desc && key.starts_with('_') {
                    o.reverse()
                } else {
                    o
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    let other: usize = buckets.iter().skip(size).map(|b| b.1).sum();
    let list: Vec<Value> = buckets
        .into_iter()
        .take(size)
        .map(|(k, n, mut subs)| {
            bucket_key(&k, &mut subs);
            subs.insert("doc_count".into(), json!(n));
            Value::Object(subs)
        })
        .collect();
    Ok(json!({"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": list}))
}

/// Order by a sub-aggregation value; buckets without one go last either way.
pub(super) fn cmp_metric(a: Option<f64>, b: Option<f64>, desc: bool) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) if desc => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The value a terms `order` path names: `agg` / `agg.value` (single-value metric),
/// `agg.max` (stats), `agg.50` (percentiles), `agg` of a filter (its doc_count).
pub(super) fn order_value(subs: &Map<String, Value>, path: &str) -> Option<f64> {
    let (name, metric) = match path.split_once(['.', '[']) {
        Some((n, m)) => (n, Some(m.trim_end_matches(']'))),
        None => (path, None),
    };
    let sub = subs.get(name)?;
    match metric {
        None | Some("value") => sub.get("value").or_else(|| sub.get("doc_count"))?.as_f64(),
        Some(m) => sub
            .get(m)
            .or_else(|| {
                let p: f64 = m.parse().ok()?;
                sub.get("values")?.get(format!("{p:?}"))
            })?
            .as_f64(),
    }
}

pub(super) fn date_histogram_agg(agg: &Agg, hits: &[Hit], now: i64) -> Result<Value, Reply> {
    let AggKind::DateHistogram {
        field,
        interval,
        offset,
        min_doc_count,
        bounds,
        desc,
    } = &agg.kind
    else {
        return Ok(Value::Null);
    };
    let key_of = |ms: i64| {
        interval
            .round(ms.saturating_sub(*offset))
            .saturating_add(*offset)
    };
    let mut groups: BTreeMap<i64, Vec<Hit>> = BTreeMap::new();
    for h in hits {
        let mut keys: Vec<i64> = doc_keys(h, field)
            .iter()
            .filter_map(|k| match k {
                Key::Date(n) => Some(n.div_euclid(1_000_000)),
                Key::Int(ms) => Some(*ms),
                Key::Num(ms) => Some(*ms as i64),
                _ => None,
            })
            .map(key_of)
            .collect();
        keys.dedup();
        for k in keys {
            groups.entry(k).or_default().push(*h);
        }
    }
    if *min_doc_count == 0 {
        let bound = |v: &Value, up: bool| {
            query_date(v, None, up, now).map(|n| key_of(n.div_euclid(1_000_000)))
        };
        let first = groups.keys().next().copied();
        let last = groups.keys().next_back().copied();
        let lo = [first, bounds.as_ref().and_then(|b| bound(&b.0, false))]
            .into_iter()
            .flatten()
            .min();
        let hi = [last, bounds.as_ref().and_then(|b| bound(&b.1, true))]
            .into_iter()
            .flatten()
            .max();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let mut k = lo;
            while k <= hi {
                if groups.len() > MAX_BUCKETS {
                    return Err(Reply::bad_request(
                        "too_many_buckets_exception",
                        format!("Trying to create too many buckets. Must be less than or equal to: [{MAX_BUCKETS}] but was [{}]. This limit can be set by changing the [search.max_buckets] cluster level setting.", groups.len()),
                    ));
                }
                groups.entry(k).or_default();
                let next = interval.next(k);
                if next <= k {
                    break;
                }
                k = next;
            }
        }
    }
    let mut list = Vec::new();
    for (key, members) in groups.iter().filter(|(_, m)| m.len() >= *min_doc_count) {
        let mut bucket = run_aggs(&agg.subs, members, now)?;
        bucket.insert("key_as_string".into(), json!(fmt_millis(*key)));
        bucket.insert("key".into(), json!(key));
        bucket.insert("doc_count".into(), json!(members.len()));
        list.push(Value::Object(bucket));
    }
    if *desc {
        list.reverse();
    }
    Ok(json!({ "buckets": list }))
}

/// Numeric values of a field across hits (numbers, numeric strings, dates as epoch
/// millis), whether any was a date, how many values and distinct values there were.
pub(super) fn metric_values(
    hits: &[Hit],
    field: &str,
    missing: Option<&Value>,
) -> (Vec<f64>, bool, usize, usize) {
    let (mut nums, mut date, mut count) = (Vec::new(), false, 0);
    let mut distinct = BTreeSet::new();
    for h in hits {
        let mut keys = doc_keys(h, field);
        if keys.is_empty() {
            keys.extend(missing.and_then(|m| to_key(m, h.index.ty(field))));
        }
        for k in keys {
            count += 1;
            date |= matches!(k, Key::Date(_));
            nums.extend(k.as_f64());
            distinct.insert(k.canon());
        }
    }
    (nums, date, count, distinct.len())
}

pub(super) fn metric_agg(
    op: MetricOp,
    hits: &[Hit],
    field: &str,
    missing: Option<&Value>,
) -> Value {
    let (nums, date, count, distinct) = metric_values(hits, field, missing);
    let sum: f64 = nums.iter().sum();
    let min = nums.iter().copied().reduce(f64::min);
    let max = nums.iter().copied().reduce(f64::max);
    let avg = (!nums.is_empty()).then(|| sum / nums.len() as f64);
    let value = match op {
        MetricOp::Avg => avg,
        MetricOp::Max => max,
        MetricOp::Min => min,
        MetricOp::Sum => Some(sum),
        MetricOp::ValueCount => return json!({ "value": count }),
        MetricOp::Cardinality => return json!({ "value": distinct }),
        MetricOp::Stats => {
            return json!({"count": nums.len(), "min": min, "max": max, "avg": avg, "sum": sum});
        }
    };
    let mut out = json!({ "value": value });
    if let (true, Some(v), MetricOp::Avg | MetricOp::Max | MetricOp::Min) = (date, value, op) {
        out["value_as_string"] = json!(fmt_millis(v as i64));
    }
    out
}

/// Linear interpolation between the closest ranks; keys printed like Java doubles
/// (`"50.0"`, `"99.9"`).
pub(super) fn percentiles_agg(hits: &[Hit], field: &str, percents: &[f64], keyed: bool) -> Value {
    let (mut nums, ..) = metric_values(hits, field, None);
    nums.sort_by(f64::total_cmp);
    let at = |p: f64| -> Option<f64> {
        let last = nums.len().checked_sub(1)?;
        let rank = p / 100.0 * last as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        let (a, b) = (*nums.get(lo)?, *nums.get(hi.min(last))?);
        Some(a + (b - a) * (rank - lo as f64))
    };
    if keyed {
        let values: Map<String, Value> = percents
            .iter()
            .map(|p| (format!("{p:?}"), json!(at(*p))))
            .collect();
        json!({ "values": values })
    } else {
        let values: Vec<Value> = percents
            .iter()
            .map(|p| json!({"key": p, "value": at(*p)}))
            .collect();
        json!({ "values": values })
    }
}
