//! The server's state: templates, policies, indices and data streams with their documents,
//! and the mapping facts writes and searches need.

use super::*;

/// State shared between the handlers and the test.
#[derive(Clone)]
pub(super) struct Shared(pub(super) Arc<Mutex<Inner>>);

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) fault: Fault,
    pub(super) stats: ElasticStats,
    pub(super) policies: BTreeMap<String, Stored>,
    pub(super) components: BTreeMap<String, Stored>,
    pub(super) templates: BTreeMap<String, Stored>,
    /// Plain indices and data streams, by name.
    pub(super) indices: BTreeMap<String, Index>,
    /// Global write counter: the order of documents across indices (and `_doc` sort).
    pub(super) order: u64,
    /// Counter feeding generated ids and uuids.
    pub(super) serial: u64,
}

/// A stored policy or template: the body as PUT plus what the server adds.
pub(super) struct Stored {
    pub(super) version: u64,
    pub(super) modified_ms: i64,
    pub(super) body: Value,
}

/// A plain index or a data stream (with its single backing index).
pub(super) struct Index {
    pub(super) name: String,
    pub(super) uuid: String,
    pub(super) created_ms: i64,
    pub(super) stream: Option<Stream>,
    /// Effective settings, flattened to `index.*` keys.
    pub(super) settings: BTreeMap<String, Value>,
    pub(super) mappings: Value,
    /// Mapped field paths (dotted) and their types.
    pub(super) fields: BTreeMap<String, Mapped>,
    /// Globs of dimension fields (routing path and `time_series_dimension` fields).
    pub(super) dimensions: Vec<String>,
    pub(super) routing_path: Vec<String>,
    pub(super) docs: Vec<Option<Doc>>,
    pub(super) ids: HashMap<String, usize>,
    pub(super) seq_no: u64,
}

pub(super) struct Stream {
    pub(super) template: String,
    pub(super) backing: String,
    pub(super) backing_uuid: String,
    pub(super) meta: Option<Value>,
}

pub(super) struct Mapped {
    pub(super) ty: String,
    /// A multi-field (`fields`): typed, but fed from its parent's value.
    pub(super) multi: bool,
}

pub(super) struct Doc {
    pub(super) id: String,
    pub(super) source: Value,
    pub(super) version: u64,
    pub(super) seq_no: u64,
    pub(super) order: u64,
}

pub(super) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Inner {
    pub(super) fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }

    /// A 20-character id in the alphabet of Elasticsearch's generated ids.
    pub(super) fn next_id(&mut self) -> String {
        self.random_id(15)
    }

    /// base64url of `bytes` unpredictable-looking bytes (16 give a 22-character uuid).
    pub(super) fn random_id(&mut self, bytes: usize) -> String {
        self.serial += 1;
        let seed = format!(
            "{}/{}",
            self.serial,
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        base64url(&Sha256::digest(seed.as_bytes())[..bytes.min(32)])
    }

    /// Names of indices and data streams matching a comma list of `*` globs.
    pub(super) fn names_matching(&self, pattern: &str) -> Vec<String> {
        let pats: Vec<&str> = pattern.split(',').map(str::trim).collect();
        self.indices
            .keys()
            .filter(|n| pats.iter().any(|p| *p == "_all" || glob(p, n)))
            .cloned()
            .collect()
    }

    /// The template a new index or data stream `name` gets: the highest priority match.
    pub(super) fn matching_template(&self, name: &str) -> Option<(&String, &Stored)> {
        self.templates
            .iter()
            .filter(|(_, t)| patterns(&t.body).iter().any(|p| glob(p, name)))
            .max_by_key(|(_, t)| priority(&t.body))
    }

    /// Settings (flattened) and mappings of a template: its component templates merged
    /// in order, then its own `template`.
    pub(super) fn composed(&self, template: &Value) -> (BTreeMap<String, Value>, Value) {
        let mut settings = BTreeMap::new();
        let mut mappings = json!({});
        let own = template.get("template");
        let parts = composed_of(template)
            .into_iter()
            .filter_map(|c| self.components.get(&c).and_then(|s| s.body.get("template")))
            .chain(own);
        for part in parts {
            if let Some(s) = part.get("settings") {
                flatten_settings(s, "", &mut settings);
            }
            if let Some(m) = part.get("mappings") {
                merge(&mut mappings, m);
            }
        }
        (settings, mappings)
    }

    /// Create a plain index or data stream with the matching template applied, then
    /// `extra` (a create-index body) on top.
    pub(super) fn create_index(&mut self, name: &str, stream: bool, extra: Option<&Value>) {
        let template = self
            .matching_template(name)
            .map(|(n, t)| (n.clone(), t.body.clone()));
        let (mut settings, mut mappings) = match &template {
            Some((_, body)) => self.composed(body),
            None => (BTreeMap::new(), json!({})),
        };
        if let Some(extra) = extra {
            if let Some(s) = extra.get("settings") {
                flatten_settings(s, "", &mut settings);
            }
            if let Some(m) = extra.get("mappings") {
                merge(&mut mappings, m);
            }
        }
        let created_ms = now_ms();
        let uuid = self.random_id(16);
        let stream = stream.then(|| {
            let (template, body) = template.clone().unwrap_or_default();
            let day = DateTime::from_timestamp_millis(created_ms)
                .map(|d| d.format("%Y.%m.%d").to_string())
                .unwrap_or_default();
            Stream {
                template,
                backing: format!(".ds-{name}-{day}-000001"),
                backing_uuid: uuid.clone(),
                meta: body.get("_meta").cloned(),
            }
        });
        let index = Index::new(name, uuid, created_ms, stream, settings, mappings);
        self.indices.insert(name.to_string(), index);
    }
}

impl Index {
    pub(super) fn new(
        name: &str,
        uuid: String,
        created_ms: i64,
        stream: Option<Stream>,
        settings: BTreeMap<String, Value>,
        mappings: Value,
    ) -> Index {
        let mut fields = BTreeMap::new();
        let mut dimensions = Vec::new();
        if let Some(props) = mappings.get("properties").and_then(Value::as_object) {
            mapped_fields(props, "", &mut fields, &mut dimensions);
        }
        dimensions.extend(dynamic_dimensions(&mappings));
        if stream.is_some() && !fields.contains_key("@timestamp") {
            // Data streams map @timestamp as a date whatever the template says.
            fields.insert(
                "@timestamp".into(),
                Mapped {
                    ty: "date".into(),
                    multi: false,
                },
            );
        }
        let routing_path = match settings.get("index.routing_path") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
            // 8.19 derives the routing path from the dimension fields when unset.
            _ => dimensions.clone(),
        };
        dimensions.extend(routing_path.iter().cloned());
        Index {
            name: name.to_string(),
            uuid,
            created_ms,
            stream,
            settings,
            mappings,
            fields,
            dimensions,
            routing_path,
            docs: Vec::new(),
            ids: HashMap::new(),
            seq_no: 0,
        }
    }

    pub(super) fn time_series(&self) -> bool {
        self.settings.get("index.mode").and_then(Value::as_str) == Some("time_series")
    }

    pub(super) fn mode(&self) -> &str {
        self.settings
            .get("index.mode")
            .and_then(Value::as_str)
            .unwrap_or("standard")
    }

    /// The name hits and bulk items report: the backing index of a data stream.
    pub(super) fn response_name(&self) -> &str {
        self.stream.as_ref().map_or(&self.name, |s| &s.backing)
    }

    pub(super) fn doc(&self, id: &str) -> Option<&Doc> {
        self.ids.get(id).and_then(|&i| self.docs.get(i)?.as_ref())
    }

    pub(super) fn live_docs(&self) -> impl Iterator<Item = &Doc> {
        self.docs.iter().flatten()
    }

    pub(super) fn next_seq_no(&mut self) -> u64 {
        let s = self.seq_no;
        self.seq_no += 1;
        s
    }

    /// Store or replace a document; returns (version, seq_no, created).
    pub(super) fn put(&mut self, id: &str, source: Value, order: u64) -> (u64, u64, bool) {
        let seq_no = self.next_seq_no();
        if let Some(doc) = self
            .ids
            .get(id)
            .and_then(|&i| self.docs.get_mut(i))
            .and_then(Option::as_mut)
        {
            doc.version += 1;
            doc.source = source;
            doc.seq_no = seq_no;
            doc.order = order;
            return (doc.version, seq_no, false);
        }
        self.ids.insert(id.to_string(), self.docs.len());
        self.docs.push(Some(Doc {
            id: id.to_string(),
            source,
            version: 1,
            seq_no,
            order,
        }));
        (1, seq_no, true)
    }

    /// Remove a document; returns its next version and the seq_no, if it existed.
    pub(super) fn remove(&mut self, id: &str) -> Option<(u64, u64)> {
        let pos = self.ids.remove(id)?;
        let doc = self.docs.get_mut(pos)?.take()?;
        Some((doc.version + 1, self.next_seq_no()))
    }

    /// The type of a field for searching: its mapping, `x.keyword` falling back to `x`.
    pub(super) fn ty(&self, field: &str) -> Ty {
        let mapped = self.fields.get(field).or_else(|| {
            field
                .strip_suffix(".keyword")
                .and_then(|f| self.fields.get(f))
        });
        mapped.map_or(Ty::Unmapped, |m| Ty::of(&m.ty))
    }
}

/// Field types as far as searching cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Date,
    DateNanos,
    Long,
    Double,
    Bool,
    Keyword,
    Unmapped,
}

impl Ty {
    pub(super) fn of(ty: &str) -> Ty {
        match ty {
            "date" => Ty::Date,
            "date_nanos" => Ty::DateNanos,
            "long" | "integer" | "short" | "byte" | "unsigned_long" => Ty::Long,
            "double" | "float" | "half_float" | "scaled_float" => Ty::Double,
            "boolean" => Ty::Bool,
            "keyword" | "text" | "constant_keyword" | "wildcard" | "match_only_text" | "ip"
            | "version" => Ty::Keyword,
            _ => Ty::Unmapped,
        }
    }
}

/// Walk a mapping's `properties`, recording every field's dotted path and type, and the
/// `time_series_dimension` fields.
pub(super) fn mapped_fields(
    props: &Map<String, Value>,
    prefix: &str,
    out: &mut BTreeMap<String, Mapped>,
    dimensions: &mut Vec<String>,
) {
    for (key, def) in props {
        let path = join(prefix, key);
        let ty = def.get("type").and_then(Value::as_str).unwrap_or("object");
        if def.get("time_series_dimension") == Some(&Value::Bool(true)) {
            dimensions.push(if ty == "passthrough" {
                format!("{path}.*")
            } else {
                path.clone()
            });
        }
        out.insert(
            path.clone(),
            Mapped {
                ty: ty.to_string(),
                multi: false,
            },
        );
        if let Some(sub) = def.get("properties").and_then(Value::as_object) {
            mapped_fields(sub, &path, out, dimensions);
        }
        for (name, sub) in def
            .get("fields")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let ty = sub.get("type").and_then(Value::as_str).unwrap_or("keyword");
            out.insert(
                join(&path, name),
                Mapped {
                    ty: ty.to_string(),
                    multi: true,
                },
            );
        }
    }
}

/// `path_match` globs of dynamic templates that map fields as dimensions.
pub(super) fn dynamic_dimensions(mappings: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for entry in mappings
        .get("dynamic_templates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        for def in entry.values() {
            let dimension = def.pointer("/mapping/time_series_dimension") == Some(&json!(true));
            match def.get("path_match") {
                Some(Value::String(p)) if dimension => out.push(p.clone()),
                Some(Value::Array(ps)) if dimension => {
                    out.extend(ps.iter().filter_map(|p| p.as_str().map(String::from)))
                }
                _ => {}
            }
        }
    }
    out
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Settings as `index.*` keys whether given nested (`{"index": {"mode": ..}}`), flat
/// (`"index.mode"`) or without the `index.` prefix, as Elasticsearch normalizes them.
pub(super) fn flatten_settings(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten_settings(child, &join(prefix, k), out);
            }
        }
        _ if prefix.is_empty() => {}
        other => {
            let key = if prefix.starts_with("index.") {
                prefix.to_string()
            } else {
                format!("index.{prefix}")
            };
            out.insert(key, other.clone());
        }
    }
}

/// Deep merge: objects merge key by key, anything else replaces.
pub(super) fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

pub(super) fn patterns(template: &Value) -> Vec<String> {
    match template.get("index_patterns") {
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn priority(template: &Value) -> i64 {
    template
        .get("priority")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub(super) fn composed_of(template: &Value) -> Vec<String> {
    template
        .get("composed_of")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}
