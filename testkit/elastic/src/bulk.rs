//! `_bulk`: NDJSON parsing, per-item outcomes, data stream and time series rules, mapping
//! and `dynamic: strict` checks, injected faults.

use super::*;

/// Time series defaults: `index.look_back_time` and `index.look_ahead_time`.
const DEFAULT_LOOK_BACK: &str = "2h";
const DEFAULT_LOOK_AHEAD: &str = "30m";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Create,
    Index,
    Delete,
    Update,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Index => "index",
            Op::Delete => "delete",
            Op::Update => "update",
        }
    }
}

/// One bulk action with its source line.
pub(super) struct Action {
    pub(super) op: Op,
    pub(super) index: String,
    pub(super) id: Option<String>,
    pub(super) if_seq_no: Option<u64>,
    pub(super) source: Option<String>,
}

/// Metadata keys Elasticsearch accepts on an action line.
pub(super) const ACTION_PARAMS: [&str; 15] = [
    "_index",
    "_id",
    "routing",
    "pipeline",
    "require_alias",
    "require_data_stream",
    "if_seq_no",
    "if_primary_term",
    "version",
    "version_type",
    "dynamic_templates",
    "list_executed_pipelines",
    "retry_on_conflict",
    "_source",
    "op_type",
];

pub(super) const REJECTED_REASON: &str = "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1048576, max_coordinating_and_primary_bytes=53687091]";

pub(super) fn bulk(
    shared: &Shared,
    req: &Req,
    default_index: Option<&str>,
    started: Instant,
) -> Reply {
    let mut inner = shared.lock();
    inner.stats.bulk_requests += 1;
    inner.stats.max_bulk_bytes = inner.stats.max_bulk_bytes.max(req.body.len());
    if let Some(reply) = take_bulk_fault(&mut inner) {
        inner.stats.requests_faulted += 1;
        return reply;
    }
    let text = match std::str::from_utf8(&req.body) {
        Ok(t) => t,
        Err(e) => {
            return Reply::bad_request(
                "x_content_parse_exception",
                format!("the bulk body is not UTF-8: {e}"),
            )
        }
    };
    let actions = match parse_bulk(text, default_index) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut errors = false;
    let items: Vec<Value> = actions
        .iter()
        .enumerate()
        .map(|(n, action)| {
            let item = inner.bulk_item(n + 1, action);
            errors |= item.get("error").is_some();
            let mut wrapped = Map::new();
            wrapped.insert(action.op.name().to_string(), item);
            Value::Object(wrapped)
        })
        .collect();
    Reply::ok(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": items
    }))
}

/// The whole-request answer of [`Fault::BulkStatus`], counting it down.
pub(super) fn take_bulk_fault(inner: &mut Inner) -> Option<Reply> {
    let Fault::BulkStatus {
        status,
        requests,
        retry_after_secs,
    } = &mut inner.fault
    else {
        return None;
    };
    if *requests == 0 {
        return None;
    }
    *requests -= 1;
    let (status, retry_after, spent) = (*status, *retry_after_secs, *requests == 0);
    if spent {
        inner.fault = Fault::None;
    }
    let (kind, reason) = match status {
        429 => ("es_rejected_execution_exception", REJECTED_REASON.to_string()),
        503 => (
            "unavailable_shards_exception",
            "[_bulk][0] primary shard is not active Timeout: [1m], request: [BulkShardRequest [[_bulk][0]] containing [1] requests]".to_string(),
        ),
        401 => (
            "security_exception",
            "missing authentication credentials for REST request [/_bulk]".to_string(),
        ),
        403 => (
            "security_exception",
            "action [indices:data/write/bulk] is unauthorized".to_string(),
        ),
        500 => ("exception", "injected internal error".to_string()),
        _ => ("status_exception", format!("injected status [{status}]")),
    };
    let mut reply = Reply::error(status, kind, reason);
    if let Some(secs) = retry_after {
        reply = reply.header(header::RETRY_AFTER, secs.to_string());
    }
    Some(reply)
}

/// Split the NDJSON body into actions; any malformed action line fails the whole
/// request, as in Elasticsearch (a malformed *source* only fails its item).
pub(super) fn parse_bulk(text: &str, default_index: Option<&str>) -> Result<Vec<Action>, Reply> {
    if text.trim().is_empty() {
        return Err(Reply::bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        ));
    }
    if !text.ends_with('\n') {
        return Err(Reply::bad_request(
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        ));
    }
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    // The piece after the final newline is empty and is no line.
    let count = lines.len().saturating_sub(1);
    let mut actions = Vec::new();
    let mut invalid = Vec::new();
    let mut i = 0;
    while i < count {
        let (n, line) = (i + 1, lines[i]);
        i += 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut action = parse_action_line(n, line, default_index)?;
        if action.index.is_empty() {
            invalid.push("index is missing".to_string());
        }
        match &action.id {
            None if action.op == Op::Delete => invalid.push("id is missing".to_string()),
            Some(id) if id.len() > 512 => invalid.push(format!(
                "id [{id}] is too long, must be no longer than 512 bytes but was: {}",
                id.len()
            )),
            _ => {}
        }
        if action.op != Op::Delete {
            match lines.get(i).filter(|_| i < count) {
                Some(src) if !src.trim().is_empty() => action.source = Some(src.to_string()),
                _ => invalid.push("source is missing".to_string()),
            }
            i += 1;
        }
        actions.push(action);
    }
    if !invalid.is_empty() {
        let list: String = invalid
            .iter()
            .enumerate()
            .map(|(k, e)| format!("{}: {e};", k + 1))
            .collect();
        return Err(Reply::bad_request(
            "action_request_validation_exception",
            format!("Validation Failed: {list}"),
        ));
    }
    Ok(actions)
}

pub(super) fn parse_action_line(
    n: usize,
    line: &str,
    default_index: Option<&str>,
) -> Result<Action, Reply> {
    let malformed = |what: String| {
        Reply::bad_request(
            "illegal_argument_exception",
            format!("Malformed action/metadata line [{n}], {what}"),
        )
    };
    let meta: Value = serde_json::from_str(line).map_err(|e| {
        Reply::bad_request(
            "x_content_parse_exception",
            format!(
                "[1:{}] Malformed action/metadata line [{n}]: {e}",
                e.column()
            ),
        )
    })?;
    let Value::Object(meta) = meta else {
        return Err(malformed(format!(
            "expected START_OBJECT but found [{}]",
            token_name(&meta)
        )));
    };
    let mut entries = meta.iter();
    let (Some((name, params)), None) = (entries.next(), entries.next()) else {
        return Err(malformed(
            "expected exactly one action (create, delete, index, update)".into(),
        ));
    };
    let op = match name.as_str() {
        "create" => Op::Create,
        "index" => Op::Index,
        "delete" => Op::Delete,
        "update" => Op::Update,
        other => {
            return Err(malformed(format!(
                "expected one of [create, delete, index, update] but found [{other}]"
            )))
        }
    };
    let Value::Object(params) = params else {
        return Err(malformed(format!(
            "expected START_OBJECT but found [{}]",
            token_name(params)
        )));
    };
    if let Some(unknown) = params.keys().find(|k| !ACTION_PARAMS.contains(&k.as_str())) {
        return Err(Reply::bad_request(
            "illegal_argument_exception",
            format!("Action/metadata line [{n}] contains an unknown parameter [{unknown}]"),
        ));
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(x) => Some(x.to_string()),
        _ => None,
    };
    Ok(Action {
        op,
        index: params
            .get("_index")
            .and_then(text)
            .or_else(|| default_index.map(String::from))
            .unwrap_or_default(),
        id: params.get("_id").and_then(text),
        if_seq_no: params.get("if_seq_no").and_then(Value::as_u64),
        source: None,
    })
}

/// Why an item failed: its status, error type and reason.
pub(super) struct ItemError {
    pub(super) status: u16,
    pub(super) kind: &'static str,
    pub(super) reason: String,
}

impl ItemError {
    pub(super) fn new(status: u16, kind: &'static str, reason: impl Into<String>) -> ItemError {
        ItemError {
            status,
            kind,
            reason: reason.into(),
        }
    }

    pub(super) fn parsing(reason: impl Into<String>) -> ItemError {
        ItemError::new(400, "document_parsing_exception", reason)
    }

    /// Counted in [`ElasticStats::items_failed_mapping`].
    pub(super) fn is_mapping(&self) -> bool {
        matches!(
            self.kind,
            "document_parsing_exception" | "strict_dynamic_mapping_exception"
        )
    }

    /// The item body; shard-level failures name the index and its uuid like the real ones.
    pub(super) fn item(&self, index: &str, id: Option<&str>, uuid: Option<&str>) -> Value {
        let mut error = json!({"type": self.kind, "reason": self.reason});
        if let Some(uuid) = uuid {
            error["index_uuid"] = json!(uuid);
            error["shard"] = json!("0");
            error["index"] = json!(index);
        }
        json!({"_index": index, "_id": id, "status": self.status, "error": error})
    }
}

pub(super) fn only_create_in_data_streams() -> ItemError {
    ItemError::new(
        400,
        "illegal_argument_exception",
        "only write ops with an op_type of create are allowed in data streams",
    )
}

impl Inner {
    /// Apply one bulk action; the item body (without the action-name wrapper).
    pub(super) fn bulk_item(&mut self, n: usize, a: &Action) -> Value {
        let name = a.index.as_str();
        let id = a.id.as_deref();
        if self.reject_item(n) {
            self.stats.items_rejected += 1;
            let e = ItemError::new(429, "es_rejected_execution_exception", REJECTED_REASON);
            return e.item(name, id, None);
        }
        if let Err(reason) = check_index_name(name) {
            return ItemError::new(400, "invalid_index_name_exception", reason)
                .item(name, id, None);
        }
        if let Err(e) = self.ensure_write_target(name, a.op) {
            return e.item(name, id, None);
        }
        let order = self.next_order();
        let auto_id = a.id.is_none().then(|| self.next_id());
        let Inner { indices, stats, .. } = self;
        let Some(index) = indices.get_mut(name) else {
            return Reply::index_not_found(name).body;
        };
        let outcome = match a.op {
            Op::Delete => Ok(delete_item(index, id.unwrap_or_default())),
            Op::Update => Err((
                ItemError::new(
                    400,
                    "illegal_argument_exception",
                    "the update action is not supported by this test server",
                ),
                a.id.clone(),
            )),
            Op::Create | Op::Index => write_item(index, stats, a, auto_id, order),
        };
        match outcome {
            Ok(item) => item,
            Err((e, id)) => {
                if e.is_mapping() {
                    stats.items_failed_mapping += 1;
                }
                e.item(index.response_name(), id.as_deref(), Some(&index.uuid))
            }
        }
    }

    /// Whether [`Fault::ItemRejections`] rejects item `n` (1-based) of this request.
    pub(super) fn reject_item(&mut self, n: usize) -> bool {
        let Fault::ItemRejections { every, items } = &mut self.fault else {
            return false;
        };
        if *items == 0 || !n.is_multiple_of((*every).max(1)) {
            return false;
        }
        *items -= 1;
        if *items == 0 {
            self.fault = Fault::None;
        }
        true
    }

    /// Make sure `name` can take `op`, creating the index or data stream on first write.
    pub(super) fn ensure_write_target(&mut self, name: &str, op: Op) -> Result<(), ItemError> {
        if let Some(index) = self.indices.get(name) {
            if index.stream.is_some() && op != Op::Create {
                return Err(only_create_in_data_streams());
            }
            return Ok(());
        }
        if matches!(op, Op::Delete | Op::Update) {
            return Err(ItemError::new(
                404,
                "index_not_found_exception",
                format!("no such index [{name}]"),
            ));
        }
        let stream = self
            .matching_template(name)
            .is_some_and(|(_, t)| t.body.get("data_stream").is_some());
        if stream && op != Op::Create {
            return Err(only_create_in_data_streams());
        }
        self.create_index(name, stream, None);
        Ok(())
    }
}

pub(super) fn delete_item(index: &mut Index, id: &str) -> Value {
    let name = index.response_name().to_string();
    let (version, seq_no, result, status) = match index.remove(id) {
        Some((version, seq_no)) => (version, seq_no, "deleted", 200),
        None => (1, index.next_seq_no(), "not_found", 404),
    };
    json!({
        "_index": name, "_id": id, "_version": version, "result": result,
        "_shards": shards_ok(), "_seq_no": seq_no, "_primary_term": 1, "status": status
    })
}

pub(super) type ItemResult = Result<Value, (ItemError, Option<String>)>;

/// `create`/`index` of one document: parse, data stream and time series rules, mapping
/// checks, then store.
pub(super) fn write_item(
    index: &mut Index,
    stats: &mut ElasticStats,
    a: &Action,
    auto_id: Option<String>,
    order: u64,
) -> ItemResult {
    let raw = a.source.as_deref().unwrap_or("");
    let source = match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            let e = ItemError::parsing(format!(
                "[1:1] failed to parse: expected [START_OBJECT] but found [{}]",
                token_name(&other)
            ));
            return Err((e, a.id.clone()));
        }
        Err(e) => {
            let e = ItemError::parsing(format!(
                "[{}:{}] failed to parse: {e}",
                e.line(),
                e.column()
            ));
            return Err((e, a.id.clone()));
        }
    };
    if index.stream.is_some() && lookup(&source, "@timestamp").is_empty() {
        let e = ItemError::parsing(format!(
            "[1:{}] data stream timestamp field [@timestamp] is missing",
            raw.len()
        ));
        return Err((e, a.id.clone()));
    }
    let id = if index.time_series() {
        time_series_id(index, &source, raw, a.id.as_deref()).map_err(|e| (e, a.id.clone()))?
    } else {
        a.id.clone().or(auto_id).unwrap_or_default()
    };
    check_mapping(index, &source, raw, &id).map_err(|e| (e, Some(id.clone())))?;
    check_strict(index, &source, raw).map_err(|e| (e, Some(id.clone())))?;
    let current = index.doc(&id).map(|d| (d.version, d.seq_no));
    if let Some(required) = a.if_seq_no {
        if current.map(|c| c.1) != Some(required) {
            stats.items_conflict += 1;
            let reason = match current {
                Some((_, seq)) => format!("[{id}]: version conflict, required seqNo [{required}], primary term [1]. current document has seqNo [{seq}] and primary term [1]"),
                None => format!("[{id}]: version conflict, required seqNo [{required}], primary term [1] but no document was found"),
            };
            let e = ItemError::new(409, "version_conflict_engine_exception", reason);
            return Err((e, Some(id)));
        }
    }
    if let (Some((version, _)), Op::Create) = (current, a.op) {
        stats.items_conflict += 1;
        let e = ItemError::new(
            409,
            "version_conflict_engine_exception",
            format!(
                "[{id}]: version conflict, document already exists (current version [{version}])"
            ),
        );
        return Err((e, Some(id)));
    }
    let (version, seq_no, created) = index.put(&id, source, order);
    if created {
        stats.items_created += 1;
    }
    Ok(json!({
        "_index": index.response_name(), "_id": id, "_version": version,
        "result": if created { "created" } else { "updated" },
        "_shards": shards_ok(), "_seq_no": seq_no, "_primary_term": 1,
        "status": if created { 201 } else { 200 }
    }))
}

/// Accepted `@timestamp` range of a time series data stream: from its creation minus
/// `index.look_back_time` to now plus `index.look_ahead_time` (the write index's end
/// time keeps moving forward on a real cluster too).
pub(super) fn time_bounds(index: &Index) -> (i64, i64) {
    let setting = |key: &str, default: &str| {
        index
            .settings
            .get(key)
            .and_then(Value::as_str)
            .and_then(parse_time_value)
            .or_else(|| parse_time_value(default))
            .unwrap_or(0)
    };
    let back = setting("index.look_back_time", DEFAULT_LOOK_BACK);
    let ahead = setting("index.look_ahead_time", DEFAULT_LOOK_AHEAD);
    (
        index.created_ms.saturating_sub(back),
        index.created_ms.max(now_ms()).saturating_add(ahead),
    )
}

/// The `_id` of a time series document: a hash of its dimension values and timestamp,
/// so that the same point written twice is a version conflict.
pub(super) fn time_series_id(
    index: &Index,
    source: &Value,
    raw: &str,
    given: Option<&str>,
) -> Result<String, ItemError> {
    let leaves = leaves(source);
    let routed = leaves
        .iter()
        .any(|(p, _)| index.routing_path.iter().any(|g| glob(g, p)));
    if !routed {
        return Err(ItemError::parsing(
            "Error extracting routing: source didn't contain any routing fields",
        ));
    }
    let stamp = lookup(source, "@timestamp");
    let Some(nanos) = stamp.first().and_then(|v| date_nanos_of(v)) else {
        let shown = stamp.first().map_or_else(String::new, |v| preview(v));
        return Err(ItemError::parsing(format!(
            "[1:{}] failed to parse field [@timestamp] of type [date] in document with id 'null'. Preview of field's value: '{shown}'",
            column_of(raw, "@timestamp")
        )));
    };
    let (start, end) = time_bounds(index);
    let ms = nanos.div_euclid(1_000_000);
    if ms < start || ms >= end {
        return Err(ItemError::new(
            400,
            "illegal_argument_exception",
            format!(
                "the document timestamp [{}] is outside of ranges of currently writable indices [[{},{}]]",
                fmt_millis(ms),
                fmt_millis(start),
                fmt_millis(end)
            ),
        ));
    }
    let mut hasher = Sha256::new();
    let dims: BTreeMap<&str, String> = leaves
        .iter()
        .filter(|(p, _)| index.dimensions.iter().any(|g| glob(g, p)))
        .map(|(p, v)| (p.as_str(), v.to_string()))
        .collect();
    for (path, value) in dims {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher.update(nanos.to_be_bytes());
    let id = base64url(&hasher.finalize()[..15]);
    match given {
        Some(g) if g != id => Err(ItemError::new(
            400,
            "illegal_argument_exception",
            format!(
                "_id must be unset or set to [{id}] but was [{g}] because [{}] is in time_series mode",
                index.response_name()
            ),
        )),
        _ => Ok(id),
    }
}

/// Mapped types whose values are checked on write.
pub(super) const CHECKED_TYPES: [&str; 12] = [
    "long",
    "integer",
    "short",
    "byte",
    "unsigned_long",
    "double",
    "float",
    "half_float",
    "scaled_float",
    "boolean",
    "date",
    "date_nanos",
];

/// Every explicitly mapped numeric, boolean and date field must parse as its type.
pub(super) fn check_mapping(
    index: &Index,
    source: &Value,
    raw: &str,
    id: &str,
) -> Result<(), ItemError> {
    for (path, mapped) in &index.fields {
        if mapped.multi || !CHECKED_TYPES.contains(&mapped.ty.as_str()) {
            continue;
        }
        if let Some(bad) = lookup(source, path)
            .into_iter()
            .find(|v| !fits_type(v, &mapped.ty))
        {
            return Err(ItemError::parsing(format!(
                "[1:{}] failed to parse field [{path}] of type [{}] in document with id '{id}'. Preview of field's value: '{}'",
                column_of(raw, path),
                mapped.ty,
                preview(bad)
            )));
        }
    }
    Ok(())
}

/// Whether a JSON value is accepted by a field of this type (numbers may be numeric
/// strings and are truncated for integer types, as Elasticsearch's `coerce` does).
pub(super) fn fits_type(v: &Value, ty: &str) -> bool {
    let in_range =
        |lo: f64, hi: f64| number_of(v).is_some_and(|n| n.trunc() >= lo && n.trunc() <= hi);
    match ty {
        "long" => in_range(i64::MIN as f64, i64::MAX as f64),
        "integer" => in_range(i32::MIN as f64, i32::MAX as f64),
        "short" => in_range(i16::MIN as f64, i16::MAX as f64),
        "byte" => in_range(i8::MIN as f64, i8::MAX as f64),
        "unsigned_long" => in_range(0.0, u64::MAX as f64),
        "double" | "float" | "half_float" | "scaled_float" => number_of(v).is_some(),
        "boolean" => {
            matches!(v, Value::Bool(_)) || matches!(v.as_str(), Some("true" | "false" | ""))
        }
        "date" => date_nanos_of(v).is_some(),
        "date_nanos" => date_nanos_of(v).is_some_and(|n| n >= 0),
        _ => true,
    }
}

/// A rough `[line:column]` column for a field in the raw source (where its key ends),
/// so messages look like Elasticsearch's.
pub(super) fn column_of(raw: &str, path: &str) -> usize {
    let last = path.rsplit('.').next().unwrap_or(path);
    [path, last]
        .iter()
        .find_map(|k| {
            let quoted = format!("\"{k}\"");
            raw.find(&quoted).map(|i| i + quoted.len() + 2)
        })
        .unwrap_or(1)
}

/// `dynamic: strict` (at the root or on an object, inherited below it): a field the
/// mapping does not declare fails the document.
pub(super) fn check_strict(index: &Index, source: &Value, raw: &str) -> Result<(), ItemError> {
    let strict = strictness(&index.mappings).unwrap_or(false);
    let props = index.mappings.get("properties").and_then(Value::as_object);
    match source.as_object() {
        Some(doc) => strict_object(doc, props, strict, "", raw),
        None => Ok(()),
    }
}

/// `Some(true)` for `dynamic: strict`, `Some(false)` for any other explicit `dynamic`.
pub(super) fn strictness(mapping: &Value) -> Option<bool> {
    mapping.get("dynamic").map(|d| d == "strict")
}

pub(super) fn is_object_mapping(def: &Value) -> bool {
    matches!(
        def.get("type").and_then(Value::as_str),
        None | Some("object" | "nested" | "passthrough")
    )
}

pub(super) fn strict_object(
    doc: &Map<String, Value>,
    props: Option<&Map<String, Value>>,
    strict: bool,
    parent: &str,
    raw: &str,
) -> Result<(), ItemError> {
    for (key, value) in doc {
        // A literal dotted key is the same as nested objects.
        let segs: Vec<&str> = key.split('.').collect();
        let (mut props, mut strict, mut path) = (props, strict, parent.to_string());
        for (i, seg) in segs.iter().enumerate() {
            let Some(def) = props.and_then(|p| p.get(*seg)) else {
                if strict {
                    let within = if path.is_empty() {
                        "_doc"
                    } else {
                        path.as_str()
                    };
                    return Err(ItemError::new(
                        400,
                        "strict_dynamic_mapping_exception",
                        format!(
                            "[1:{}] mapping set to strict, dynamic introduction of [{seg}] within [{within}] is not allowed",
                            column_of(raw, seg)
                        ),
                    ));
                }
                break;
            };
            if !is_object_mapping(def) || def.get("enabled") == Some(&json!(false)) {
                break;
            }
            strict = strictness(def).unwrap_or(strict);
            props = def.get("properties").and_then(Value::as_object);
            path = join(&path, seg);
            if i + 1 == segs.len() {
                let objects: Vec<&Map<String, Value>> = match value {
                    Value::Object(o) => vec![o],
                    Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
                    _ => Vec::new(),
                };
                for o in objects {
                    strict_object(o, props, strict, &path, raw)?;
                }
            }
        }
    }
    Ok(())
}
