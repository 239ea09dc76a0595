//! HTTP plumbing (body decoding, content type, rendering with Elasticsearch's headers,
//! `filter_path`) and the hand-written router.

use super::*;

/// What a handler answers: rendered with Elasticsearch's headers by [`render`].
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) headers: Vec<(HeaderName, String)>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply::with_status(200, body)
    }

    pub(super) fn with_status(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub(super) fn acknowledged() -> Reply {
        Reply::ok(json!({"acknowledged": true}))
    }

    /// `{"error": {"root_cause": [..], "type", "reason"}, "status"}`.
    pub(super) fn error(status: u16, kind: &str, reason: impl Into<String>) -> Reply {
        Reply::error_with(status, kind, reason, Map::new())
    }

    /// An error with extra fields (`index`, `resource.id`, ...) in the cause.
    pub(super) fn error_with(
        status: u16,
        kind: &str,
        reason: impl Into<String>,
        extra: Map<String, Value>,
    ) -> Reply {
        let mut cause = Map::new();
        cause.insert("type".into(), json!(kind));
        cause.insert("reason".into(), json!(reason.into()));
        cause.extend(extra);
        let mut error = cause.clone();
        error.insert("root_cause".into(), json!([Value::Object(cause)]));
        Reply::with_status(status, json!({"error": error, "status": status}))
    }

    pub(super) fn bad_request(kind: &str, reason: impl Into<String>) -> Reply {
        Reply::error(400, kind, reason)
    }

    pub(super) fn index_not_found(name: &str) -> Reply {
        let mut extra = Map::new();
        extra.insert("resource.type".into(), json!("index_or_alias"));
        extra.insert("resource.id".into(), json!(name));
        extra.insert("index_uuid".into(), json!("_na_"));
        extra.insert("index".into(), json!(name));
        Reply::error_with(
            404,
            "index_not_found_exception",
            format!("no such index [{name}]"),
            extra,
        )
    }

    pub(super) fn header(mut self, name: HeaderName, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// A request as the routes see it: decoded path segments, query parameters, and the
/// body after content decoding.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) uri: String,
    pub(super) segments: Vec<String>,
    pub(super) query: Vec<(String, String)>,
    pub(super) body: Bytes,
}

impl Req {
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean flag: present with no value or `true`.
    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("" | "true"))
    }

    /// The body as JSON; an empty body is `None`.
    pub(super) fn json(&self) -> Result<Option<Value>, Reply> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body).map(Some).map_err(|e| {
            Reply::bad_request(
                "x_content_parse_exception",
                format!("[{}:{}] {e}", e.line(), e.column()),
            )
        })
    }

    /// The body as a JSON object; empty is `{}`, anything else a parse error.
    pub(super) fn json_object(&self) -> Result<Map<String, Value>, Reply> {
        match self.json()? {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m),
            Some(other) => Err(Reply::bad_request(
                "parse_exception",
                format!(
                    "request body must be a JSON object, found [{}]",
                    token_name(&other)
                ),
            )),
        }
    }
}

/// The one handler: Elasticsearch answers unknown endpoints itself, so routing is done
/// by hand rather than by axum (which would answer plain-text 404/405s).
pub(super) async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let head = parts.method == Method::HEAD;
    let filter = query_pairs(parts.uri.query().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "filter_path")
        .map(|(_, v)| v);
    let body = axum::body::to_bytes(body, MAX_CONTENT_LENGTH).await;
    let reply = match body {
        Err(_) => Reply::error(
            413,
            "content_too_long_exception",
            format!("request content is larger than [{MAX_CONTENT_LENGTH}] bytes"),
        ),
        Ok(bytes) => match decode_request(&parts.method, &parts.uri, &parts.headers, bytes) {
            Ok(req) => route(&shared, &req, started),
            Err(reply) => reply,
        },
    };
    // Slow means the work is done at once and the answer comes late, so a client that
    // gives up meanwhile has still written (the "timed out but indexed" case).
    let slow = match &shared.lock().fault {
        Fault::Slow(d) => Some(*d),
        _ => None,
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    render(reply, head, filter.as_deref())
}

pub(super) fn decode_request(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Req, Reply> {
    let body = decompress(headers, body)?;
    if !body.is_empty() {
        check_content_type(headers)?;
    }
    Ok(Req {
        method: method.clone(),
        uri: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string()),
        segments: uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect(),
        query: query_pairs(uri.query().unwrap_or("")),
        body,
    })
}

/// Undo `content-encoding: gzip|deflate`, as Elasticsearch's HTTP layer does.
pub(super) fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Reply> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let limit = MAX_CONTENT_LENGTH as u64 + 1;
    let mut out = Vec::new();
    let read = match encoding.as_deref() {
        None | Some("" | "identity") => return Ok(body),
        Some("gzip" | "x-gzip") => flate2::read::GzDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut out),
        Some("deflate") => flate2::read::ZlibDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut out),
        Some(other) => {
            return Err(Reply::bad_request(
                "illegal_argument_exception",
                format!("unsupported content-encoding [{other}]"),
            ))
        }
    };
    match read {
        Ok(n) if n as u64 >= limit => Err(Reply::error(
            413,
            "content_too_long_exception",
            format!("decompressed request content is larger than [{MAX_CONTENT_LENGTH}] bytes"),
        )),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(Reply::bad_request(
            "illegal_argument_exception",
            format!("failed to decompress the request body: {e}"),
        )),
    }
}

/// Elasticsearch refuses a body without a JSON/NDJSON content type with this 406 (whose
/// `error` is a plain string).
pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), Reply> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let accepted = [
        "application/json",
        "application/x-ndjson",
        "application/vnd.elasticsearch+json",
        "application/vnd.elasticsearch+x-ndjson",
    ];
    if accepted.contains(&media.as_str()) {
        Ok(())
    } else {
        Err(Reply::with_status(
            406,
            json!({"error": format!("Content-Type header [{raw}] is not supported"), "status": 406}),
        ))
    }
}

pub(super) fn render(reply: Reply, head: bool, filter: Option<&str>) -> Response {
    let body = match filter {
        Some(f) if reply.status < 300 => filter_path(&reply.body, f),
        _ => reply.body,
    };
    let bytes = if head {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap_or_default()
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-elastic-product"),
        HeaderValue::from_static("Elasticsearch"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

pub(super) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `filter_path`: keep only the matching paths (`*` one level, `**` any levels; arrays are
/// transparent), dropping objects and arrays left empty, as Elasticsearch does.
pub(super) fn filter_path(body: &Value, spec: &str) -> Value {
    let pats: Vec<Vec<&str>> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with('-'))
        .map(|p| p.split('.').collect())
        .collect();
    if pats.is_empty() {
        return body.clone();
    }
    let refs: Vec<&[&str]> = pats.iter().map(Vec::as_slice).collect();
    filter_value(body, &refs).unwrap_or_else(|| json!({}))
}

pub(super) fn filter_value(v: &Value, pats: &[&[&str]]) -> Option<Value> {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, child) in map {
                let (mut rest, mut whole) = (Vec::new(), false);
                for p in pats {
                    advance_filter(p, key, &mut rest, &mut whole);
                }
                if whole {
                    out.insert(key.clone(), child.clone());
                } else if let Some(kept) = (!rest.is_empty())
                    .then(|| filter_value(child, &rest))
                    .flatten()
                {
                    out.insert(key.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(|i| filter_value(i, pats)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

pub(super) fn advance_filter<'a>(
    p: &'a [&'a str],
    key: &str,
    rest: &mut Vec<&'a [&'a str]>,
    whole: &mut bool,
) {
    match p {
        [] => {}
        ["**"] => *whole = true,
        ["**", tail @ ..] => {
            advance_filter(tail, key, rest, whole);
            rest.push(p);
        }
        [seg, tail @ ..] if glob(seg, key) => {
            if tail.is_empty() {
                *whole = true;
            } else {
                rest.push(tail);
            }
        }
        _ => {}
    }
}

/// Jackson's token name for a JSON value, as Elasticsearch's parse errors print it.
pub(super) fn token_name(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "START_OBJECT",
        Value::Array(_) => "START_ARRAY",
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Null => "VALUE_NULL",
    }
}

// ---------------------------------------------------------------- routing

pub(super) fn route(shared: &Shared, req: &Req, started: Instant) -> Reply {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    match (segs.as_slice(), m) {
        ([], "GET" | "HEAD") => Reply::ok(cluster_info()),
        ([], _) => not_allowed(req, "GET, HEAD"),
        (["_cluster", "health", ..], "GET") => cluster_health(&shared.lock()),
        (["_cluster", "health", ..], _) => not_allowed(req, "GET"),
        (["_ilm", "policy"], "GET") => get_policies(&shared.lock(), "*"),
        (["_ilm", "policy", name], _) => layout_write(shared, req, |inner| match m {
            "GET" => get_policies(inner, name),
            "PUT" => put_policy(inner, name, req),
            "DELETE" => delete_stored(&mut inner.policies, name, policy_not_found),
            _ => not_allowed(req, "GET, PUT, DELETE"),
        }),
        (["_component_template"], "GET") => get_components(&shared.lock(), "*"),
        (["_component_template", name], _) => layout_write(shared, req, |inner| match m {
            "GET" | "HEAD" => get_components(inner, name),
            "PUT" | "POST" => put_component(inner, name, req),
            "DELETE" => delete_component(inner, name),
            _ => not_allowed(req, "GET, HEAD, PUT, POST, DELETE"),
        }),
        (["_index_template"], "GET") => get_templates(&shared.lock(), "*"),
        (["_index_template", name], _) => layout_write(shared, req, |inner| match m {
            "GET" | "HEAD" => get_templates(inner, name),
            "PUT" | "POST" => put_template(inner, name, req),
            "DELETE" => delete_template(inner, name),
            _ => not_allowed(req, "GET, HEAD, PUT, POST, DELETE"),
        }),
        (["_data_stream"], "GET") => get_data_streams(&shared.lock(), "*"),
        (["_data_stream", name], _) => layout_write(shared, req, |inner| match m {
            "GET" => get_data_streams(inner, name),
            "PUT" => put_data_stream(inner, name),
            "DELETE" => delete_data_stream(inner, name),
            _ => not_allowed(req, "GET, PUT, DELETE"),
        }),
        (["_bulk"], "POST" | "PUT") => bulk(shared, req, None, started),
        ([index, "_bulk"], "POST" | "PUT") => bulk(shared, req, Some(index), started),
        (["_bulk"] | [_, "_bulk"], _) => not_allowed(req, "POST, PUT"),
        (["_search"], "GET" | "POST") => search(shared, req, "_all", started),
        ([target, "_search"], "GET" | "POST") => search(shared, req, target, started),
        (["_search"] | [_, "_search"], _) => not_allowed(req, "GET, POST"),
        (["_count"], "GET" | "POST") => count(shared, req, "_all"),
        ([target, "_count"], "GET" | "POST") => count(shared, req, target),
        (["_count"] | [_, "_count"], _) => not_allowed(req, "GET, POST"),
        (["_refresh"], "GET" | "POST") => refresh(&shared.lock(), req, "_all"),
        ([target, "_refresh"], "GET" | "POST") => refresh(&shared.lock(), req, target),
        ([target, "_mapping"], "GET") => get_mapping(&shared.lock(), req, target),
        ([index, "_doc", id], "GET" | "HEAD") => get_doc(&shared.lock(), index, id),
        ([index], _) if !index.starts_with('_') => match m {
            "GET" | "HEAD" => get_index(&shared.lock(), req, index),
            "PUT" => create_index(&mut shared.lock(), req, index),
            "DELETE" => delete_index(&mut shared.lock(), req, index),
            _ => not_allowed(req, "GET, HEAD, PUT, DELETE"),
        },
        _ => Reply::bad_request(
            "illegal_argument_exception",
            format!("no handler found for uri [{}] and method [{m}]", req.uri),
        ),
    }
}

/// Run a layout endpoint under the lock, counting it in `writes` when it writes.
pub(super) fn layout_write(
    shared: &Shared,
    req: &Req,
    f: impl FnOnce(&mut Inner) -> Reply,
) -> Reply {
    let mut inner = shared.lock();
    if matches!(req.method.as_str(), "PUT" | "POST" | "DELETE") {
        inner.stats.writes += 1;
    }
    f(&mut inner)
}

pub(super) fn not_allowed(req: &Req, allowed: &str) -> Reply {
    Reply::error(
        405,
        "illegal_argument_exception",
        format!(
            "Incorrect HTTP method for uri [{}] and method [{}], allowed: [{allowed}]",
            req.uri, req.method
        ),
    )
    .header(header::ALLOW, allowed.replace(' ', ""))
}

pub(super) fn cluster_info() -> Value {
    json!({
        "name": "sqlvigil-testkit-node",
        "cluster_name": "sqlvigil-testkit",
        "cluster_uuid": "c2VydmVyLXRlc3RraXQtMQ",
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "docker",
            "build_hash": "0000000000000000000000000000000000000000",
            "build_date": "2025-07-01T00:00:00.000000000Z",
            "build_snapshot": false,
            "lucene_version": "9.12.2",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    })
}

pub(super) fn cluster_health(inner: &Inner) -> Reply {
    let shards = inner.indices.len();
    Reply::ok(json!({
        "cluster_name": "sqlvigil-testkit",
        "status": "green",
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": shards,
        "active_shards": shards,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "unassigned_primary_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0
    }))
}
