//! Layout endpoints: ILM policies, component and index templates, data streams, plain
//! indices, and resolving search targets to indices.

use super::*;

/// Built-in index templates of a default 8.x cluster (priority 100): user templates
/// overlapping them at the same priority are refused, as on a real cluster.
const BUILT_IN_TEMPLATES: [(&str, &str); 3] = [
    ("logs", "logs-*-*"),
    ("metrics", "metrics-*-*"),
    ("synthetics", "synthetics-*-*"),
];
const BUILT_IN_PRIORITY: i64 = 100;

/// Store a body under `name`, bumping its version.
pub(super) fn store(map: &mut BTreeMap<String, Stored>, name: &str, body: Value) {
    let version = map.get(name).map_or(1, |s| s.version + 1);
    map.insert(
        name.to_string(),
        Stored {
            version,
            modified_ms: now_ms(),
            body,
        },
    );
}

/// Entries whose names match a comma list of globs; `None` when a concrete name (no `*`)
/// has no entry, which is how the GET APIs decide on 404.
pub(super) fn matching<'a>(
    map: &'a BTreeMap<String, Stored>,
    names: &str,
) -> Option<Vec<(&'a String, &'a Stored)>> {
    let mut out = Vec::new();
    for pat in names.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let found: Vec<_> = map
            .iter()
            .filter(|(n, _)| pat == "_all" || glob(pat, n))
            .collect();
        if found.is_empty() && !pat.contains('*') && pat != "_all" {
            return None;
        }
        out.extend(found);
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    Some(out)
}

pub(super) fn delete_stored(
    map: &mut BTreeMap<String, Stored>,
    name: &str,
    missing: impl Fn(&str) -> Reply,
) -> Reply {
    match map.remove(name) {
        Some(_) => Reply::acknowledged(),
        None => missing(name),
    }
}

pub(super) fn required_object<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<&'a Map<String, Value>, Reply> {
    match body.get(field) {
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(Reply::bad_request(
            "x_content_parse_exception",
            format!(
                "[1:2] [{what}] {field} doesn't support values of type: {}",
                token_name(other)
            ),
        )),
        None => Err(Reply::bad_request(
            "x_content_parse_exception",
            format!("[1:2] Required [{field}]"),
        )),
    }
}

pub(super) fn policy_not_found(name: &str) -> Reply {
    Reply::error(
        404,
        "resource_not_found_exception",
        format!("Lifecycle policy not found: {name}"),
    )
}

pub(super) fn put_policy(inner: &mut Inner, name: &str, req: &Req) -> Reply {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = required_object(&body, "policy", "put_lifecycle_request") {
        return r;
    }
    store(&mut inner.policies, name, Value::Object(body));
    Reply::acknowledged()
}

pub(super) fn get_policies(inner: &Inner, names: &str) -> Reply {
    let Some(found) = matching(&inner.policies, names) else {
        return policy_not_found(names);
    };
    let mut out = Map::new();
    for (name, p) in found {
        let in_use = |ds: bool| -> Vec<&String> {
            inner
                .indices
                .values()
                .filter(|i| i.stream.is_some() == ds)
                .filter(|i| i.settings.get("index.lifecycle.name") == Some(&json!(name)))
                .map(|i| &i.name)
                .collect()
        };
        let templates: Vec<&String> = inner
            .templates
            .iter()
            .filter(|(_, t)| {
                inner.composed(&t.body).0.get("index.lifecycle.name") == Some(&json!(name))
            })
            .map(|(n, _)| n)
            .collect();
        out.insert(
            name.clone(),
            json!({
                "version": p.version,
                "modified_date": fmt_millis(p.modified_ms),
                "policy": p.body.get("policy").cloned().unwrap_or_else(|| json!({})),
                "in_use_by": {"indices": in_use(false), "data_streams": in_use(true), "composable_templates": templates}
            }),
        );
    }
    Reply::ok(Value::Object(out))
}

pub(super) fn put_component(inner: &mut Inner, name: &str, req: &Req) -> Reply {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = required_object(&body, "template", "component_template") {
        return r;
    }
    if req.flag("create") && inner.components.contains_key(name) {
        return Reply::bad_request(
            "illegal_argument_exception",
            format!("component template [{name}] already exists"),
        );
    }
    store(&mut inner.components, name, Value::Object(body));
    Reply::acknowledged()
}

pub(super) fn get_components(inner: &Inner, names: &str) -> Reply {
    let Some(found) = matching(&inner.components, names) else {
        return Reply::error(
            404,
            "resource_not_found_exception",
            format!("component template matching [{names}] not found"),
        );
    };
    let list: Vec<Value> = found
        .into_iter()
        .map(|(n, c)| json!({"name": n, "component_template": c.body}))
        .collect();
    Reply::ok(json!({ "component_templates": list }))
}

pub(super) fn delete_component(inner: &mut Inner, name: &str) -> Reply {
    let users: Vec<&String> = inner
        .templates
        .iter()
        .filter(|(_, t)| composed_of(&t.body).iter().any(|c| c == name))
        .map(|(n, _)| n)
        .collect();
    if !users.is_empty() {
        return Reply::bad_request(
            "illegal_argument_exception",
            format!(
                "component templates [{name}] cannot be removed as they are still in use by index templates [{}]",
                join_names(&users)
            ),
        );
    }
    delete_stored(&mut inner.components, name, |n| {
        Reply::error(
            404,
            "resource_not_found_exception",
            format!("component template matching [{n}] not found"),
        )
    })
}

pub(super) fn join_names<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn put_template(inner: &mut Inner, name: &str, req: &Req) -> Reply {
    let body = match req.json_object() {
        Ok(b) => Value::Object(b),
        Err(r) => return r,
    };
    if let Err(r) = check_template(inner, name, &body, req.flag("create")) {
        return r;
    }
    store(&mut inner.templates, name, body);
    Reply::acknowledged()
}

/// The checks Elasticsearch makes before storing a composable index template.
pub(super) fn check_template(
    inner: &Inner,
    name: &str,
    body: &Value,
    create: bool,
) -> Result<(), Reply> {
    let pats = patterns(body);
    if pats.is_empty() {
        return Err(Reply::bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: index patterns are missing;",
        ));
    }
    if create && inner.templates.contains_key(name) {
        return Err(Reply::bad_request(
            "illegal_argument_exception",
            format!("index template [{name}] already exists"),
        ));
    }
    let ignored: Vec<&str> = body
        .get("ignore_missing_component_templates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let missing: Vec<String> = composed_of(body)
        .into_iter()
        .filter(|c| !inner.components.contains_key(c) && !ignored.contains(&c.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(Reply::bad_request(
            "invalid_index_template_exception",
            format!(
                "index_template [{name}] invalid, cause [index template [{name}] specifies component templates [{}] that do not exist]",
                join_names(&missing)
            ),
        ));
    }
    check_overlap(inner, name, &pats, priority(body))
}

/// Two templates may not both match a new index at the same priority.
pub(super) fn check_overlap(
    inner: &Inner,
    name: &str,
    pats: &[String],
    prio: i64,
) -> Result<(), Reply> {
    let mut others: Vec<(String, Vec<String>)> = inner
        .templates
        .iter()
        .filter(|(n, t)| n.as_str() != name && priority(&t.body) == prio)
        .map(|(n, t)| (n.clone(), patterns(&t.body)))
        .collect();
    if prio == BUILT_IN_PRIORITY {
        others.extend(
            BUILT_IN_TEMPLATES
                .iter()
                .filter(|(n, _)| *n != name && !inner.templates.contains_key(*n))
                .map(|(n, p)| (n.to_string(), vec![p.to_string()])),
        );
    }
    let overlapping: Vec<(String, Vec<String>)> = others
        .into_iter()
        .filter(|(_, theirs)| {
            pats.iter()
                .any(|a| theirs.iter().any(|b| globs_intersect(a, b)))
        })
        .collect();
    if overlapping.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = overlapping.iter().map(|(n, _)| n.as_str()).collect();
    let detail: Vec<String> = overlapping
        .iter()
        .map(|(n, p)| format!("{n} => [{}]", join_names(p)))
        .collect();
    Err(Reply::bad_request(
        "illegal_argument_exception",
        format!(
            "index template [{name}] has index patterns [{}] matching patterns from existing templates [{}] with patterns ({}) that have the same priority [{prio}], multiple index templates may not match during index creation, please use a different priority",
            join_names(pats),
            names.join(","),
            detail.join(",")
        ),
    ))
}

pub(super) fn get_templates(inner: &Inner, names: &str) -> Reply {
    let Some(found) = matching(&inner.templates, names) else {
        return Reply::error(
            404,
            "resource_not_found_exception",
            format!("index template matching [{names}] not found"),
        );
    };
    let list: Vec<Value> = found
        .into_iter()
        .map(|(n, t)| json!({"name": n, "index_template": t.body}))
        .collect();
    Reply::ok(json!({ "index_templates": list }))
}

pub(super) fn delete_template(inner: &mut Inner, name: &str) -> Reply {
    let streams: Vec<&String> = inner
        .indices
        .values()
        .filter_map(|i| {
            i.stream
                .as_ref()
                .filter(|s| s.template == name)
                .map(|_| &i.name)
        })
        .collect();
    if !streams.is_empty() {
        return Reply::bad_request(
            "illegal_argument_exception",
            format!(
                "unable to remove composable templates [{name}] as they are in use by a data streams [{}]",
                join_names(&streams)
            ),
        );
    }
    delete_stored(&mut inner.templates, name, |n| {
        Reply::error(
            404,
            "resource_not_found_exception",
            format!("index template matching [{n}] not found"),
        )
    })
}

/// Why a data stream named `name` cannot be created, if it cannot.
pub(super) fn data_stream_template_error(inner: &Inner, name: &str) -> Option<Reply> {
    match inner.matching_template(name) {
        None => Some(Reply::bad_request(
            "illegal_argument_exception",
            format!("no matching index template found for data stream [{name}]"),
        )),
        Some((t, body)) if body.body.get("data_stream").is_none() => Some(Reply::bad_request(
            "illegal_argument_exception",
            format!("matching index template [{t}] for data stream [{name}] has no data stream template"),
        )),
        Some(_) => None,
    }
}

pub(super) fn put_data_stream(inner: &mut Inner, name: &str) -> Reply {
    if let Err(reason) = check_index_name(name) {
        return Reply::bad_request("invalid_index_name_exception", reason);
    }
    match inner.indices.get(name) {
        Some(i) if i.stream.is_some() => {
            return Reply::bad_request(
                "resource_already_exists_exception",
                format!("data_stream [{name}] already exists"),
            )
        }
        Some(i) => {
            return Reply::bad_request(
                "resource_already_exists_exception",
                format!("index [{name}/{}] already exists", i.uuid),
            )
        }
        None => {}
    }
    if let Some(err) = data_stream_template_error(inner, name) {
        return err;
    }
    inner.create_index(name, true, None);
    Reply::acknowledged()
}

pub(super) fn get_data_streams(inner: &Inner, names: &str) -> Reply {
    let mut out = Vec::new();
    for pat in names.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let found: Vec<&Index> = inner
            .indices
            .values()
            .filter(|i| i.stream.is_some() && (pat == "_all" || glob(pat, &i.name)))
            .collect();
        if found.is_empty() && !pat.contains('*') && pat != "_all" {
            return Reply::index_not_found(pat);
        }
        out.extend(found.into_iter().map(data_stream_json));
    }
    Reply::ok(json!({ "data_streams": out }))
}

pub(super) fn data_stream_json(index: &Index) -> Value {
    let Some(stream) = &index.stream else {
        return Value::Null;
    };
    let policy = index.settings.get("index.lifecycle.name").cloned();
    let managed_by = if policy.is_some() {
        "Index Lifecycle Management"
    } else {
        "Unmanaged"
    };
    let mut backing = json!({
        "index_name": stream.backing,
        "index_uuid": stream.backing_uuid,
        "prefer_ilm": true,
        "managed_by": managed_by
    });
    let mut out = json!({
        "name": index.name,
        "timestamp_field": {"name": "@timestamp"},
        "indices": [],
        "generation": 1,
        "status": "GREEN",
        "template": stream.template,
        "next_generation_managed_by": managed_by,
        "prefer_ilm": true,
        "hidden": false,
        "system": false,
        "allow_custom_routing": false,
        "replicated": false,
        "rollover_on_write": false,
        "index_mode": if index.time_series() { "time_series" } else { index.mode() }
    });
    if let Some(p) = policy {
        backing["ilm_policy"] = p.clone();
        out["ilm_policy"] = p;
    }
    out["indices"] = json!([backing]);
    if let Some(meta) = &stream.meta {
        out["_meta"] = meta.clone();
    }
    if index.time_series() {
        let (start, end) = time_bounds(index);
        out["time_series"] =
            json!({"temporal_ranges": [{"start": fmt_millis(start), "end": fmt_millis(end)}]});
    }
    out
}

pub(super) fn delete_data_stream(inner: &mut Inner, name: &str) -> Reply {
    let doomed: Vec<String> = inner
        .indices
        .values()
        .filter(|i| i.stream.is_some() && glob(name, &i.name))
        .map(|i| i.name.clone())
        .collect();
    if doomed.is_empty() && !name.contains('*') {
        return Reply::index_not_found(name);
    }
    for n in doomed {
        inner.indices.remove(&n);
    }
    Reply::acknowledged()
}

/// Elasticsearch's index name rules.
pub(super) fn check_index_name(name: &str) -> Result<(), String> {
    let invalid = |why: &str| Err(format!("Invalid index name [{name}], {why}"));
    if name.is_empty() {
        return invalid("must not be empty");
    }
    if name != name.to_lowercase() {
        return invalid("must be lowercase");
    }
    if name.starts_with(['_', '-', '+']) {
        return invalid("must not start with '_', '-', or '+'");
    }
    if name == "." || name == ".." {
        return invalid("must not be '.' or '..'");
    }
    if let Some(c) = name.chars().find(|c| r#"\/*?"<>| ,#:"#.contains(*c)) {
        return invalid(&format!("must not contain the following characters [{c}]"));
    }
    if name.len() > 255 {
        return invalid("index name is too long");
    }
    Ok(())
}

/// Resolve a search/refresh target (comma list, `*` globs, `-` exclusions, `_all`, data
/// streams, their backing indices) to index names, Elasticsearch's way: a concrete name
/// that matches nothing is a 404 unless `ignore_unavailable`, a glob that matches nothing
/// is fine unless `allow_no_indices=false`.
pub(super) fn resolve_target(inner: &Inner, req: &Req, target: &str) -> Result<Vec<String>, Reply> {
    let ignore_unavailable = req.flag("ignore_unavailable");
    let allow_no_indices = req.param("allow_no_indices") != Some("false");
    let mut names = BTreeSet::new();
    for (n, raw) in target
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let (exclude, pat) = match raw.strip_prefix('-') {
            Some(p) if n > 0 => (true, p),
            _ => (false, raw),
        };
        let wildcard = pat.contains('*') || pat == "_all";
        let found: Vec<String> = inner
            .indices
            .values()
            .filter(|i| {
                let visible = !i.name.starts_with('.') || pat.starts_with('.');
                let by_name = pat == "_all" || glob(pat, &i.name);
                let by_backing = i.stream.as_ref().is_some_and(|s| glob(pat, &s.backing));
                (wildcard && visible && by_name) || (!wildcard && (by_name || by_backing))
            })
            .map(|i| i.name.clone())
            .collect();
        if found.is_empty() && !exclude {
            if !wildcard && !ignore_unavailable {
                return Err(Reply::index_not_found(pat));
            }
            if wildcard && !allow_no_indices {
                return Err(Reply::index_not_found(pat));
            }
        }
        for f in found {
            if exclude {
                names.remove(&f);
            } else {
                names.insert(f);
            }
        }
    }
    Ok(names.into_iter().collect())
}

pub(super) fn shards_ok() -> Value {
    json!({"total": 1, "successful": 1, "failed": 0})
}

pub(super) fn refresh(inner: &Inner, req: &Req, target: &str) -> Reply {
    match resolve_target(inner, req, target) {
        Ok(_) => Reply::ok(json!({ "_shards": shards_ok() })),
        Err(r) => r,
    }
}

pub(super) fn get_mapping(inner: &Inner, req: &Req, target: &str) -> Reply {
    let names = match resolve_target(inner, req, target) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut out = Map::new();
    for index in names.iter().filter_map(|n| inner.indices.get(n)) {
        out.insert(
            index.response_name().to_string(),
            json!({"mappings": index.mappings}),
        );
    }
    Reply::ok(Value::Object(out))
}

pub(super) fn get_index(inner: &Inner, req: &Req, target: &str) -> Reply {
    let names = match resolve_target(inner, req, target) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut out = Map::new();
    for index in names.iter().filter_map(|n| inner.indices.get(n)) {
        let mut settings = json!({"index": {
            "creation_date": index.created_ms.to_string(),
            "number_of_shards": "1",
            "number_of_replicas": "1",
            "uuid": index.uuid,
            "provided_name": index.response_name(),
            "version": {"created": "8536000"}
        }});
        for (k, v) in &index.settings {
            let path: Vec<&str> = k.split('.').collect();
            set_path(&mut settings, &path, v.clone());
        }
        let mut entry = json!({"aliases": {}, "mappings": index.mappings, "settings": settings});
        if index.stream.is_some() {
            entry["data_stream"] = json!(index.name);
        }
        out.insert(index.response_name().to_string(), entry);
    }
    Reply::ok(Value::Object(out))
}

pub(super) fn set_path(into: &mut Value, path: &[&str], v: Value) {
    match path {
        [] => {}
        [last] => {
            if let Some(o) = into.as_object_mut() {
                o.insert(last.to_string(), v);
            }
        }
        [first, rest @ ..] => {
            if let Some(o) = into.as_object_mut() {
                let child = o.entry(first.to_string()).or_insert_with(|| json!({}));
                if !child.is_object() {
                    *child = json!({});
                }
                set_path(child, rest, v);
            }
        }
    }
}

pub(super) fn create_index(inner: &mut Inner, req: &Req, name: &str) -> Reply {
    let body = match req.json_object() {
        Ok(b) => Value::Object(b),
        Err(r) => return r,
    };
    if let Err(reason) = check_index_name(name) {
        return Reply::bad_request("invalid_index_name_exception", reason);
    }
    if let Some(existing) = inner.indices.get(name) {
        return Reply::bad_request(
            "resource_already_exists_exception",
            format!("index [{name}/{}] already exists", existing.uuid),
        );
    }
    if let Some((t, _)) = inner
        .matching_template(name)
        .filter(|(_, t)| t.body.get("data_stream").is_some())
    {
        return Reply::bad_request(
            "illegal_argument_exception",
            format!("cannot create index with name [{name}], because it matches with template [{t}] that creates data streams only, use create data stream api instead"),
        );
    }
    inner.create_index(name, false, Some(&body));
    Reply::ok(json!({"acknowledged": true, "shards_acknowledged": true, "index": name}))
}

pub(super) fn delete_index(inner: &mut Inner, req: &Req, target: &str) -> Reply {
    let names = match resolve_target(inner, req, target) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Some(ds) = names
        .iter()
        .find(|n| inner.indices.get(*n).is_some_and(|i| i.stream.is_some()))
    {
        return Reply::bad_request(
            "illegal_argument_exception",
            format!("The provided expression [{ds}] matches a data stream, specify the corresponding concrete indices instead."),
        );
    }
    for n in names {
        inner.indices.remove(&n);
    }
    Reply::acknowledged()
}

/// `GET /{index}/_doc/{id}`: plain indices or a data stream's backing index.
pub(super) fn get_doc(inner: &Inner, index: &str, id: &str) -> Reply {
    let found = inner.indices.values().find(|i| {
        (i.stream.is_none() && i.name == index)
            || i.stream.as_ref().is_some_and(|s| s.backing == index)
    });
    let Some(idx) = found else {
        return Reply::index_not_found(index);
    };
    match idx.doc(id) {
        Some(doc) => Reply::ok(json!({
            "_index": idx.response_name(), "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
            "_primary_term": 1, "found": true, "_source": doc.source
        })),
        None => Reply::with_status(
            404,
            json!({"_index": idx.response_name(), "_id": id, "found": false}),
        ),
    }
}
