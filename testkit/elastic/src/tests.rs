use super::*;
use std::io::Write as _;

/// A blocking client with a connection pool, like the product's client.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Http {
    fn new(es: &ElasticServer) -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            base: es.url(),
        }
    }

    fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, reqwest::Error> {
        self.rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = self.client.request(method, format!("{}{path}", self.base));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let body = body.map(|b| b.to_string().into_bytes());
        self.try_send(method, path, body, &[("content-type", "application/json")])
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let a = self.send("GET", path, None);
        (a.status, a.body)
    }

    fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let a = self.send("PUT", path, Some(body));
        (a.status, a.body)
    }

    fn search(&self, target: &str, body: &Value) -> Value {
        let a = self.send("POST", &format!("/{target}/_search"), Some(body));
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    fn bulk_raw(&self, path: &str, ndjson: &str) -> Answer {
        self.try_send(
            "POST",
            path,
            Some(ndjson.as_bytes().to_vec()),
            &[("content-type", "application/x-ndjson")],
        )
        .expect("bulk")
    }

    fn bulk(&self, lines: &[Value]) -> Value {
        let a = self.bulk_raw("/_bulk", &ndjson(lines));
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn ok(answer: (u16, Value)) -> Value {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1
}

fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or("")
}

fn reason(body: &Value) -> &str {
    body["error"]["reason"].as_str().unwrap_or("")
}

fn ids(search: &Value) -> Vec<String> {
    search["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["_id"].as_str().unwrap_or("").to_string())
        .collect()
}

fn now_iso(offset_ms: i64) -> String {
    fmt_millis(now_ms() + offset_ms)
}

/// The sink-like layout: ILM policy, mappings component, TSDS template.
fn metrics_layout(http: &Http) -> Value {
    ok(http.put(
        "/_ilm/policy/metrics-policy",
        &json!({"policy": {"phases": {"hot": {"actions": {"rollover": {"max_age": "1d"}}}}}}),
    ));
    ok(http.put(
        "/_component_template/metrics-mappings",
        &json!({"template": {"mappings": {"properties": {
            "@timestamp": {"type": "date_nanos"},
            "series_id": {"type": "keyword", "time_series_dimension": true},
            "metric": {"properties": {
                "name": {"type": "keyword", "time_series_dimension": true},
                "value": {"type": "double", "time_series_metric": "gauge"}
            }}
        }}}}),
    ));
    let template = json!({
        "index_patterns": ["mssql-metrics-*"],
        "data_stream": {},
        "priority": 200,
        "composed_of": ["metrics-mappings"],
        "template": {"settings": {"index": {
            "mode": "time_series",
            "routing_path": ["series_id"],
            "lifecycle": {"name": "metrics-policy"}
        }}},
        "_meta": {"managed_by": "test"}
    });
    ok(http.put("/_index_template/sqlvigil-metrics", &template));
    template
}

#[test]
fn templates_data_streams_and_their_errors() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    let root = http.send("GET", "/", None);
    assert_eq!(root.status, 200);
    assert_eq!(root.body["version"]["number"], "8.19.0");
    assert_eq!(root.body["tagline"], "You Know, for Search");
    assert_eq!(root.headers["x-elastic-product"], "Elasticsearch");
    assert_eq!(root.headers["content-type"], "application/json");
    assert_eq!(ok(http.get("/_cluster/health"))["status"], "green");

    let template = metrics_layout(&http);
    ok(http.put(
        "/_ilm/policy/metrics-policy",
        &json!({"policy": {"phases": {}}}),
    ));
    let policy = ok(http.get("/_ilm/policy/metrics-policy"));
    assert_eq!(policy["metrics-policy"]["version"], 2, "{policy}");
    assert!(policy["metrics-policy"]["modified_date"].is_string());
    let (code, body) = http.get("/_ilm/policy/nope");
    assert_eq!(
        (code, error_type(&body)),
        (404, "resource_not_found_exception")
    );
    assert_eq!(reason(&body), "Lifecycle policy not found: nope");
    assert_eq!(
        body["error"]["root_cause"][0]["type"],
        "resource_not_found_exception"
    );
    assert_eq!(body["status"], 404);
    let (code, body) = http.put("/_ilm/policy/bad", &json!({"phases": {}}));
    assert_eq!(code, 400, "{body}");

    let comp = ok(http.get("/_component_template/metrics-mappings"));
    assert_eq!(comp["component_templates"][0]["name"], "metrics-mappings");
    let (code, body) = http.get("/_component_template/nope");
    assert_eq!(code, 404);
    assert_eq!(
        reason(&body),
        "component template matching [nope] not found"
    );

    let got = ok(http.get("/_index_template/sqlvigil-metrics"));
    assert_eq!(got["index_templates"][0]["name"], "sqlvigil-metrics");
    assert_eq!(got["index_templates"][0]["index_template"], template);
    assert_eq!(
        es.index_template("sqlvigil-metrics"),
        Some(template.clone())
    );
    let (code, body) = http.put("/_index_template/sqlvigil-metrics?create=true", &template);
    assert_eq!(
        (code, error_type(&body)),
        (400, "illegal_argument_exception")
    );
    assert_eq!(
        reason(&body),
        "index template [sqlvigil-metrics] already exists"
    );
    let (code, body) = http.get("/_index_template/nope");
    assert_eq!(code, 404);
    assert_eq!(reason(&body), "index template matching [nope] not found");

    let (code, body) = http.put(
        "/_index_template/broken",
        &json!({"index_patterns": ["broken-*"], "composed_of": ["metrics-mappings", "missing-one"]}),
    );
    assert_eq!(
        (code, error_type(&body)),
        (400, "invalid_index_template_exception")
    );
    assert!(
        reason(&body).contains("specifies component templates [missing-one] that do not exist"),
        "{body}"
    );

    let (code, body) = http.put(
        "/_index_template/overlap",
        &json!({"index_patterns": ["mssql-*"], "priority": 200}),
    );
    assert_eq!(
        (code, error_type(&body)),
        (400, "illegal_argument_exception")
    );
    assert_eq!(
        reason(&body),
        "index template [overlap] has index patterns [mssql-*] matching patterns from existing templates [sqlvigil-metrics] with patterns (sqlvigil-metrics => [mssql-metrics-*]) that have the same priority [200], multiple index templates may not match during index creation, please use a different priority"
    );
    ok(http.put(
        "/_index_template/overlap",
        &json!({"index_patterns": ["mssql-*"], "priority": 199}),
    ));
    // The built-in metrics-*-* template has priority 100 on a real cluster.
    let (code, body) = http.put(
        "/_index_template/mine",
        &json!({"index_patterns": ["metrics-sqlvigil-*"], "priority": 100}),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        reason(&body).contains("existing templates [metrics]"),
        "{body}"
    );

    ok(http.put("/_data_stream/mssql-metrics-default", &json!(null)));
    let (code, body) = http.put("/_data_stream/mssql-metrics-default", &json!(null));
    assert_eq!(
        (code, error_type(&body)),
        (400, "resource_already_exists_exception")
    );
    let (code, body) = http.put("/_data_stream/unmatched-stream", &json!(null));
    assert_eq!(
        (code, error_type(&body)),
        (400, "illegal_argument_exception")
    );
    assert_eq!(
        reason(&body),
        "no matching index template found for data stream [unmatched-stream]"
    );

    let ds = ok(http.get("/_data_stream/mssql-metrics-default"));
    let ds = &ds["data_streams"][0];
    assert_eq!(ds["name"], "mssql-metrics-default");
    assert_eq!(ds["template"], "sqlvigil-metrics");
    assert_eq!(ds["ilm_policy"], "metrics-policy");
    assert_eq!(ds["index_mode"], "time_series");
    assert_eq!(ds["status"], "GREEN");
    assert_eq!(ds["timestamp_field"]["name"], "@timestamp");
    assert_eq!(ds["_meta"]["managed_by"], "test");
    let backing = ds["indices"][0]["index_name"].as_str().expect("backing");
    assert!(
        backing.starts_with(".ds-mssql-metrics-default-") && backing.ends_with("-000001"),
        "{backing}"
    );
    let (code, body) = http.get("/_data_stream/mssql-metrics-other");
    assert_eq!(
        (code, error_type(&body)),
        (404, "index_not_found_exception")
    );
    assert_eq!(reason(&body), "no such index [mssql-metrics-other]");
    let policy = ok(http.get("/_ilm/policy/metrics-policy"));
    assert_eq!(
        policy["metrics-policy"]["in_use_by"]["data_streams"],
        json!(["mssql-metrics-default"])
    );

    assert_eq!(es.data_streams(), vec!["mssql-metrics-default".to_string()]);
    assert_eq!(
        es.ilm_policy("metrics-policy"),
        Some(json!({"policy": {"phases": {}}}))
    );
    // 3 layout PUTs, policy again, bad policy, 4 template attempts, built-in clash, 3 data streams.
    assert_eq!(es.stats().writes, 13, "{:?}", es.stats());
    let (code, body) = http.put(
        "/_index_template/metrics-del",
        &json!({"index_patterns": ["zzz"]}),
    );
    assert_eq!(code, 200, "{body}");
    let deleted = http.send("DELETE", "/_index_template/metrics-del", None);
    assert_eq!(deleted.status, 200);
    let in_use = http.send("DELETE", "/_index_template/sqlvigil-metrics", None);
    assert_eq!(in_use.status, 400, "{}", in_use.body);
}

#[test]
fn bulk_items_report_conflicts_mapping_and_strict_errors() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    ok(http.put(
        "/_index_template/anomalies",
        &json!({"index_patterns": ["anomalies"], "priority": 10, "template": {"mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "score": {"type": "double"},
                "count": {"type": "long"},
                "opened_at": {"type": "date"},
                "flag": {"type": "boolean"},
                "evidence": {"type": "object", "enabled": false},
                "series": {"properties": {"name": {"type": "keyword"}}}
            }
        }}}),
    ));
    ok(http.put(
        "/_index_template/logs",
        &json!({"index_patterns": ["mssql-logs-*"], "data_stream": {}, "priority": 10,
                "template": {"mappings": {"properties": {"severity_number": {"type": "integer"}}}}}),
    ));
    let ts = now_iso(0);
    let lines = vec![
        json!({"create": {"_index": "anomalies", "_id": "a1"}}),
        json!({"id": "a1", "score": 1.5, "count": "7", "opened_at": "2024-05-01T00:00:00Z", "flag": "true", "evidence": {"free": {"form": 1}}, "series": {"name": "cpu"}}),
        json!({"create": {"_index": "anomalies", "_id": "a1"}}),
        json!({"id": "a1"}),
        json!({"index": {"_index": "anomalies", "_id": "a1"}}),
        json!({"id": "a1", "score": 2}),
        json!({"create": {"_index": "anomalies", "_id": "a2"}}),
        json!({"id": "a2", "score": "high"}),
        json!({"create": {"_index": "anomalies", "_id": "a3"}}),
        json!({"id": "a3", "series": {"name": "x", "surprise": 1}}),
        json!({"create": {"_index": "mssql-logs-default"}}),
        json!({"@timestamp": ts, "message": "deadlock"}),
        json!({"index": {"_index": "mssql-logs-default"}}),
        json!({"@timestamp": ts, "message": "index op"}),
        json!({"create": {"_index": "mssql-logs-default"}}),
        json!({"message": "no timestamp"}),
        json!({"create": {"_index": "mssql-logs-default"}}),
        json!({"@timestamp": ts, "severity_number": "abc"}),
        json!({"delete": {"_index": "anomalies", "_id": "a9"}}),
        json!({"create": {"_index": "Anomalies"}}),
        json!({"id": "upper"}),
    ];
    let mut body = ndjson(&lines);
    body.push_str("{\"create\":{\"_index\":\"anomalies\",\"_id\":\"a4\"}}\n{not json\n");
    let answer = http.bulk_raw("/_bulk?refresh=wait_for", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let resp = answer.body;
    assert_eq!(resp["errors"], true);
    let items = resp["items"].as_array().expect("items");
    let ops: Vec<&str> = items
        .iter()
        .map(|i| {
            i.as_object()
                .and_then(|o| o.keys().next())
                .map_or("", |k| k.as_str())
        })
        .collect();
    assert_eq!(
        ops,
        [
            "create", "create", "index", "create", "create", "create", "index", "create", "create",
            "delete", "create", "create"
        ]
    );
    let item = |n: usize| {
        items[n]
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(item(0)["status"], 201);
    assert_eq!(item(0)["result"], "created");
    assert_eq!(item(0)["_version"], 1);
    assert_eq!(item(0)["_index"], "anomalies");
    assert_eq!(item(1)["status"], 409);
    assert_eq!(
        item(1)["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert_eq!(
        item(1)["error"]["reason"],
        "[a1]: version conflict, document already exists (current version [1])"
    );
    assert_eq!(item(2)["status"], 200);
    assert_eq!(item(2)["result"], "updated");
    assert_eq!(item(2)["_version"], 2);
    assert_eq!(item(3)["status"], 400);
    assert_eq!(item(3)["error"]["type"], "document_parsing_exception");
    let r = item(3)["error"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(r.starts_with("[1:") && r.ends_with("failed to parse field [score] of type [double] in document with id 'a2'. Preview of field's value: 'high'"), "{r}");
    assert_eq!(item(4)["error"]["type"], "strict_dynamic_mapping_exception");
    let r = item(4)["error"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(r.ends_with("mapping set to strict, dynamic introduction of [surprise] within [series] is not allowed"), "{r}");
    assert_eq!(item(5)["status"], 201, "{}", item(5));
    let backing = item(5)["_index"].as_str().unwrap_or("").to_string();
    assert!(backing.starts_with(".ds-mssql-logs-default-"), "{backing}");
    assert_eq!(item(5)["_id"].as_str().map(str::len), Some(20));
    assert_eq!(
        item(6)["error"]["reason"],
        "only write ops with an op_type of create are allowed in data streams"
    );
    let r = item(7)["error"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        r.ends_with("data stream timestamp field [@timestamp] is missing"),
        "{r}"
    );
    assert!(item(8)["error"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("[severity_number] of type [integer]"));
    assert_eq!(item(9)["status"], 404);
    assert_eq!(item(9)["result"], "not_found");
    assert!(item(9).get("error").is_none());
    assert_eq!(item(10)["error"]["type"], "invalid_index_name_exception");
    assert_eq!(item(11)["error"]["type"], "document_parsing_exception");

    let docs = es.docs("anomalies");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].1, "a1");
    assert_eq!(docs[0].2, json!({"id": "a1", "score": 2}));
    assert_eq!(es.count("mssql-logs-*"), 1);
    assert_eq!(es.docs("mssql-logs-default")[0].0, "mssql-logs-default");
    assert_eq!(es.data_streams(), vec!["mssql-logs-default".to_string()]);
    let stats = es.stats();
    assert_eq!(stats.bulk_requests, 1);
    assert_eq!(stats.items_created, 2);
    assert_eq!(stats.items_conflict, 1);
    assert_eq!(stats.items_failed_mapping, 5, "{stats:?}");
    assert_eq!(stats.max_bulk_bytes, body.len());

    let clean = http.bulk(&[
        json!({"create": {"_index": "anomalies", "_id": "a5"}}),
        json!({"id": "a5", "opened_at": 1714521600000u64}),
        json!({"delete": {"_index": "anomalies", "_id": "a1"}}),
    ]);
    assert_eq!(clean["errors"], false, "{clean}");
    assert_eq!(clean["items"][1]["delete"]["result"], "deleted");
    assert_eq!(es.count("anomalies"), 1);
    // The path's index is the default for items without _index.
    let a = http.bulk_raw(
        "/anomalies/_bulk",
        &ndjson(&[json!({"index": {"_id": "a6"}}), json!({"id": "a6"})]),
    );
    assert_eq!(a.body["items"][0]["index"]["status"], 201, "{}", a.body);
}

fn series_doc(series: &str, ts: &str, value: f64) -> Value {
    json!({"@timestamp": ts, "series_id": series, "metric": {"name": "cpu", "value": value}})
}

#[test]
fn time_series_ids_are_computed_and_checked() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    metrics_layout(&http);
    let ts = now_iso(-60_000);
    let create = json!({"create": {"_index": "mssql-metrics-default"}});
    let resp = http.bulk(&[
        create.clone(),
        series_doc("s1", &ts, 1.0),
        create.clone(),
        series_doc("s1", &ts, 2.0),
        create.clone(),
        series_doc("s2", &ts, 1.0),
    ]);
    let first = &resp["items"][0]["create"];
    assert_eq!(first["status"], 201, "{resp}");
    let id = first["_id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 20);
    let backing = first["_index"].as_str().expect("index").to_string();
    assert!(backing.starts_with(".ds-mssql-metrics-default-"));
    assert_eq!(resp["items"][1]["create"]["status"], 409);
    assert_eq!(resp["items"][1]["create"]["_id"], id.as_str());
    assert_eq!(resp["items"][2]["create"]["status"], 201);
    assert_ne!(resp["items"][2]["create"]["_id"], id.as_str());

    let resp = http.bulk(&[
        json!({"create": {"_index": "mssql-metrics-default", "_id": "mine"}}),
        series_doc("s1", &ts, 1.0),
        json!({"create": {"_index": "mssql-metrics-default", "_id": id}}),
        series_doc("s1", &ts, 1.0),
        create.clone(),
        json!({"@timestamp": ts, "metric": {"name": "cpu", "value": 1.0}}),
        create.clone(),
        series_doc("s1", "2020-01-01T00:00:00Z", 1.0),
        create.clone(),
        json!({"@timestamp": ts, "series_id": "s3", "metric.value": "abc"}),
    ]);
    let item = |n: usize| resp["items"][n]["create"].clone();
    assert_eq!(item(0)["status"], 400);
    assert_eq!(
        item(0)["error"]["reason"],
        format!("_id must be unset or set to [{id}] but was [mine] because [{backing}] is in time_series mode")
    );
    assert_eq!(item(1)["status"], 409, "{resp}");
    assert_eq!(item(2)["error"]["type"], "document_parsing_exception");
    assert_eq!(
        item(2)["error"]["reason"],
        "Error extracting routing: source didn't contain any routing fields"
    );
    assert_eq!(item(3)["error"]["type"], "illegal_argument_exception");
    assert!(item(3)["error"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("is outside of ranges of currently writable indices"));
    assert!(
        item(4)["error"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("failed to parse field [metric.value] of type [double]"),
        "{resp}"
    );
    assert_eq!(es.count("mssql-metrics-default"), 2);

    // date_nanos sort values are nanoseconds, as on a real cluster.
    let found = http.search(
        "mssql-metrics-default",
        &json!({"sort": [{"@timestamp": "asc"}, {"series_id": "asc"}]}),
    );
    let nanos = parse_date(&ts).expect("ts");
    assert_eq!(found["hits"]["hits"][0]["sort"], json!([nanos, "s1"]));
    assert_eq!(found["hits"]["hits"][0]["_index"], backing.as_str());
    // `numeric_type` and `format` pick one representation across mixed date types.
    let sort = json!([{"@timestamp": {"order": "asc", "numeric_type": "date", "unmapped_type": "date"}}, {"_doc": "asc"}]);
    let found = http.search("mssql-metrics-default", &json!({"sort": sort}));
    let first = &found["hits"]["hits"][0]["sort"];
    assert_eq!(first[0], json!(nanos / 1_000_000));
    let after = http.search(
        "mssql-metrics-default",
        &json!({"sort": sort, "search_after": first}),
    );
    assert_eq!(
        after["hits"]["hits"].as_array().map(Vec::len),
        Some(1),
        "{after}"
    );
    let formatted = http.search(
        "mssql-metrics-default",
        &json!({"sort": [{"@timestamp": {"format": "strict_date_optional_time_nanos"}}]}),
    );
    assert_eq!(
        formatted["hits"]["hits"][0]["sort"][0],
        json!(fmt_nanos(nanos, true))
    );
}

#[test]
fn faults_reject_items_and_requests() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    let four: Vec<Value> = (0..4)
        .flat_map(|i| [json!({"index": {"_index": "faulty"}}), json!({"n": i})])
        .collect();
    es.set_fault(Fault::ItemRejections { every: 2, items: 3 });
    let resp = http.bulk(&four);
    let statuses: Vec<u64> = (0..4)
        .map(|i| resp["items"][i]["index"]["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [201, 429, 201, 429]);
    assert_eq!(
        resp["items"][1]["index"]["error"]["type"],
        "es_rejected_execution_exception"
    );
    assert_eq!(resp["errors"], true);
    let resp = http.bulk(&four);
    let statuses: Vec<u64> = (0..4)
        .map(|i| resp["items"][i]["index"]["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [201, 429, 201, 201]);
    assert_eq!(es.stats().items_rejected, 3);
    assert_eq!(es.count("faulty"), 5);

    es.set_fault(Fault::BulkStatus {
        status: 429,
        requests: 2,
        retry_after_secs: Some(7),
    });
    for _ in 0..2 {
        let a = http.bulk_raw("/_bulk", &ndjson(&four));
        assert_eq!(a.status, 429);
        assert_eq!(a.headers["retry-after"], "7");
        assert_eq!(a.headers["x-elastic-product"], "Elasticsearch");
        assert_eq!(error_type(&a.body), "es_rejected_execution_exception");
        assert_eq!(a.body["status"], 429);
    }
    assert_eq!(es.count("faulty"), 5);
    assert_eq!(http.bulk_raw("/_bulk", &ndjson(&four)).status, 200);
    es.set_fault(Fault::BulkStatus {
        status: 503,
        requests: 1,
        retry_after_secs: None,
    });
    let a = http.bulk_raw("/_bulk", &ndjson(&four));
    assert_eq!(a.status, 503);
    assert!(a.headers.get("retry-after").is_none());
    assert_eq!(error_type(&a.body), "unavailable_shards_exception");
    let stats = es.stats();
    assert_eq!(
        (stats.bulk_requests, stats.requests_faulted),
        (6, 3),
        "{stats:?}"
    );
    assert_eq!(es.count("faulty"), 9);

    es.set_fault(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(http.get("/").0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The work is done even when the client gives up before the answer.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let sent = http.rt.block_on(async {
        impatient
            .post(format!("{}/_bulk", es.url()))
            .header("content-type", "application/x-ndjson")
            .body(ndjson(&[
                json!({"index": {"_index": "late", "_id": "1"}}),
                json!({"a": 1}),
            ]))
            .send()
            .await
    });
    assert!(sent.is_err_and(|e| e.is_timeout()));
    assert_eq!(es.count("late"), 1);
    es.set_fault(Fault::None);
    let started = Instant::now();
    assert_eq!(http.get("/").0, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[test]
fn refused_connections_then_resume_with_the_same_state() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    http.bulk(&[
        json!({"index": {"_index": "kept", "_id": "1"}}),
        json!({"a": 1}),
    ]);
    es.refuse_connections(true);
    es.refuse_connections(true);
    let err = std::net::TcpStream::connect(es.addr()).expect_err("port must be closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The pooled keep-alive connection is closed too.
    let pooled = http.try_send("GET", "/kept/_count", None, &[]);
    assert!(pooled.is_err(), "a request got through while refusing");
    es.refuse_connections(false);
    let (code, body) = http.get("/kept/_count");
    assert_eq!((code, body["count"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(es.docs("kept")[0].2, json!({"a": 1}));
}

fn events(es: &ElasticServer) {
    let docs = [
        (
            "e1",
            json!({"host": "db1", "value": 1, "ts": "2024-05-01T00:00:10Z", "tags": ["a", "b"]}),
        ),
        (
            "e2",
            json!({"host": "db1", "value": 5.5, "ts": "2024-05-01T00:00:50Z", "tags": ["b"]}),
        ),
        (
            "e3",
            json!({"host": "db2", "value": 3, "ts": "2024-05-01T00:03:05Z", "skip": true}),
        ),
        (
            "e4",
            json!({"host": "db2", "value": "4", "ts": "2024-05-01T00:03:40Z"}),
        ),
        (
            "e5",
            json!({"host": "db3", "value": 9, "ts": "2024-05-01T00:04:00Z"}),
        ),
        ("e6", json!({"host": "db1", "ts": "2024-05-01T00:04:30Z"})),
    ];
    for (id, doc) in docs {
        es.insert("events", id, doc);
    }
}

#[test]
fn search_filters_sorts_and_pages() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    events(&es);
    let all = http.search("events", &json!({}));
    assert_eq!(all["hits"]["total"], json!({"value": 6, "relation": "eq"}));
    assert_eq!(ids(&all), ["e1", "e2", "e3", "e4", "e5", "e6"]);

    let q = json!({"query": {"bool": {
        "must": [{"term": {"host.keyword": "db2"}}],
        "filter": {"range": {"ts": {"gte": "2024-05-01T00:03:00Z", "lt": 1714522000000u64}}},
        "must_not": {"exists": {"field": "skip"}}
    }}});
    assert_eq!(ids(&http.search("events", &q)), ["e4"]);
    let q = json!({"query": {"range": {"value": {"gt": 3.5}}}});
    assert_eq!(ids(&http.search("events", &q)), ["e2", "e4", "e5"]);
    let q = json!({"query": {"bool": {"should": [{"term": {"host": "db3"}}, {"terms": {"tags": ["a"]}}]}}});
    assert_eq!(ids(&http.search("events", &q)), ["e1", "e5"]);
    let q = json!({"query": {"bool": {"should": [{"term": {"host": {"value": "db3"}}}, {"ids": {"values": ["e2"]}}], "minimum_should_match": 1}}});
    assert_eq!(ids(&http.search("events", &q)), ["e2", "e5"]);
    let q = json!({"query": {"range": {"ts": {"gte": "now-1h"}}}});
    assert_eq!(ids(&http.search("events", &q)), Vec::<String>::new());
    // Rounding: `lte` rounds up to the end of the minute, `lt` down to its start.
    let q = json!({"query": {"range": {"ts": {"gte": "2024-05-01T00:00:00Z||+3m", "lte": "2024-05-01T00:04:00Z||/m"}}}});
    assert_eq!(ids(&http.search("events", &q)), ["e3", "e4", "e5", "e6"]);
    let q = json!({"query": {"range": {"ts": {"gt": "2024-05-01T00:02:00Z||/m", "lt": "2024-05-01T00:04:20Z||/m"}}}});
    assert_eq!(ids(&http.search("events", &q)), ["e3", "e4"]);

    let sort = json!([{"value": {"order": "desc", "missing": "_last"}}, {"ts": "asc"}]);
    let full = http.search("events", &json!({"sort": sort, "size": 10}));
    assert_eq!(ids(&full), ["e5", "e2", "e4", "e3", "e1", "e6"]);
    assert_eq!(
        full["hits"]["hits"][0]["sort"],
        json!([9, 1714521840000u64])
    );
    assert_eq!(full["hits"]["hits"][0]["_score"], Value::Null);
    let mut paged = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({"sort": sort, "size": 2});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let page = http.search("events", &body);
        let hits = page["hits"]["hits"].as_array().expect("hits").clone();
        if hits.is_empty() {
            break;
        }
        assert_eq!(page["hits"]["total"]["value"], 6);
        paged.extend(ids(&page));
        after = hits.last().map(|h| h["sort"].clone());
    }
    assert_eq!(paged, ids(&full));
    let from = http.search(
        "events",
        &json!({"sort": ["_doc"], "from": 4, "size": 5, "_source": false}),
    );
    assert_eq!(ids(&from), ["e5", "e6"]);
    assert!(from["hits"]["hits"][0].get("_source").is_none());

    let (code, body) = http.get("/nope/_search");
    assert_eq!(
        (code, error_type(&body)),
        (404, "index_not_found_exception")
    );
    assert_eq!(reason(&body), "no such index [nope]");
    let empty = http.search("nope-*", &json!({}));
    assert_eq!(empty["hits"]["total"]["value"], 0);
    let a = http.send(
        "POST",
        "/events,nope/_search?ignore_unavailable=true",
        Some(&json!({})),
    );
    assert_eq!(a.body["hits"]["total"]["value"], 6);
    let count = http.send(
        "POST",
        "/ev*/_count",
        Some(&json!({"query": {"term": {"host": "db1"}}})),
    );
    assert_eq!(count.body["count"], 3, "{}", count.body);

    let (code, body) = ok_or_err(http.send(
        "POST",
        "/events/_search",
        Some(&json!({"query": {"fuzzy_magic": {}}})),
    ));
    assert_eq!((code, error_type(&body)), (400, "parsing_exception"));
    assert_eq!(reason(&body), "unknown query [fuzzy_magic]");
    let (code, body) =
        ok_or_err(http.send("POST", "/events/_search", Some(&json!({"size": 20000}))));
    assert_eq!(code, 400);
    assert!(
        reason(&body).starts_with("Result window is too large"),
        "{body}"
    );
    let (code, body) = ok_or_err(http.send(
        "POST",
        "/events/_search",
        Some(&json!({"search_after": [1], "sort": ["value", "ts"]})),
    ));
    assert_eq!(
        (code, error_type(&body)),
        (400, "illegal_argument_exception")
    );
    assert!(es.stats().searches >= 14);
}

fn ok_or_err(a: Answer) -> (u16, Value) {
    (a.status, a.body)
}

#[test]
fn aggregations_nest_and_format_like_elasticsearch() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    events(&es);
    let resp = http.search("events", &json!({"size": 0, "aggs": {
        "hosts": {
            "terms": {"field": "host", "order": {"max_v": "desc"}},
            "aggs": {
                "max_v": {"max": {"field": "value"}},
                "first": {"min": {"field": "ts"}},
                "latest": {"top_hits": {"size": 1, "sort": [{"ts": "desc"}], "_source": ["ts"]}}
            }
        },
        "by_count": {"terms": {"field": "host", "size": 1}},
        "per_minute": {
            "date_histogram": {"field": "ts", "fixed_interval": "1m"},
            "aggs": {"avg_v": {"avg": {"field": "value"}}}
        },
        "pct": {"percentiles": {"field": "value", "percents": [50, 99.9]}},
        "db1": {"filter": {"term": {"host": "db1"}}, "aggs": {"n": {"value_count": {"field": "value"}}}},
        "hosts_seen": {"cardinality": {"field": "host"}},
        "total": {"sum": {"field": "value"}}
    }}));
    assert_eq!(resp["hits"]["hits"], json!([]));
    let aggs = &resp["aggregations"];
    let hosts = aggs["hosts"]["buckets"].as_array().expect("buckets");
    let keys: Vec<&str> = hosts
        .iter()
        .map(|b| b["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["db3", "db1", "db2"]);
    assert_eq!(hosts[1]["doc_count"], 3);
    assert_eq!(hosts[1]["max_v"]["value"], 5.5);
    assert_eq!(hosts[1]["first"]["value"], 1714521610000.0);
    assert_eq!(
        hosts[1]["first"]["value_as_string"],
        "2024-05-01T00:00:10.000Z"
    );
    let top = &hosts[1]["latest"]["hits"];
    assert_eq!(top["total"]["value"], 3);
    assert_eq!(top["hits"][0]["_id"], "e6");
    assert_eq!(top["hits"][0]["sort"], json!([1714521870000u64]));
    assert_eq!(
        aggs["by_count"]["buckets"],
        json!([{"key": "db1", "doc_count": 3}])
    );
    assert_eq!(aggs["by_count"]["sum_other_doc_count"], 3);
    assert_eq!(aggs["by_count"]["doc_count_error_upper_bound"], 0);

    let minutes = aggs["per_minute"]["buckets"].as_array().expect("buckets");
    let counts: Vec<u64> = minutes
        .iter()
        .map(|b| b["doc_count"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(counts, [2, 0, 0, 2, 2]);
    assert_eq!(minutes[0]["key"], 1714521600000u64);
    assert_eq!(minutes[0]["key_as_string"], "2024-05-01T00:00:00.000Z");
    assert_eq!(minutes[0]["avg_v"]["value"], 3.25);
    assert_eq!(minutes[1]["avg_v"]["value"], Value::Null);
    assert_eq!(minutes[4]["avg_v"]["value"], 9.0);

    let pct = &aggs["pct"]["values"];
    assert_eq!(
        pct.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["50.0".to_string(), "99.9".to_string()])
    );
    assert_eq!(pct["50.0"], 4.0);
    assert!(
        (pct["99.9"].as_f64().unwrap_or(0.0) - 8.986).abs() < 1e-9,
        "{pct}"
    );
    assert_eq!(aggs["db1"], json!({"doc_count": 3, "n": {"value": 2}}));
    assert_eq!(aggs["hosts_seen"]["value"], 3);
    assert_eq!(aggs["total"]["value"], 22.5);

    let (code, body) = ok_or_err(http.send(
        "POST",
        "/events/_search",
        Some(&json!({"aggs": {"x": {"bogus": {"field": "a"}}}})),
    ));
    assert_eq!((code, error_type(&body)), (400, "parsing_exception"));
    assert_eq!(reason(&body), "Unknown aggregation type [bogus]");
    let (code, body) = ok_or_err(http.send(
        "POST",
        "/events/_search",
        Some(&json!({"aggs": {"x": {"date_histogram": {"field": "ts", "fixed_interval": "1M"}}}})),
    ));
    assert_eq!(code, 400, "{body}");
    let (code, body) = ok_or_err(http.send("POST", "/events/_search", Some(&json!({"aggs": {"x": {"date_histogram": {"field": "ts", "fixed_interval": "1ms", "extended_bounds": {"min": 0, "max": "now"}}}}}))));
    assert_eq!(
        (code, error_type(&body)),
        (400, "too_many_buckets_exception")
    );
}

#[test]
fn literal_dotted_keys_resolve_like_nested_objects() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    let doc = |host: &str, cpu: Option<f64>| {
        let mut d = json!({"@timestamp": "2024-05-01T00:00:00Z", "resource": {"attributes": {"host.name": host}}, "metrics": {}});
        if let Some(cpu) = cpu {
            d["metrics"]["sqlserver.cpu.utilization"] = json!(cpu);
        }
        d
    };
    es.insert("metrics-generic.otel-default", "m1", doc("db1", Some(12.5)));
    es.insert("metrics-generic.otel-default", "m2", doc("db2", Some(80.0)));
    es.insert("metrics-generic.otel-default", "m3", doc("db2", None));
    let target = "metrics-*";
    let q = |query: Value| ids(&http.search(target, &json!({"query": query})));
    assert_eq!(
        q(json!({"term": {"resource.attributes.host.name": "db1"}})),
        ["m1"]
    );
    assert_eq!(
        q(json!({"range": {"metrics.sqlserver.cpu.utilization": {"gte": 50}}})),
        ["m2"]
    );
    assert_eq!(
        q(json!({"exists": {"field": "metrics.sqlserver.cpu.utilization"}})),
        ["m1", "m2"]
    );
    let resp = http.search(
        target,
        &json!({"size": 0, "aggs": {"hosts": {
            "terms": {"field": "resource.attributes.host.name", "order": {"_key": "asc"}},
            "aggs": {"cpu": {"max": {"field": "metrics.sqlserver.cpu.utilization"}}}
        }}}),
    );
    let buckets = &resp["aggregations"]["hosts"]["buckets"];
    assert_eq!(
        buckets[0],
        json!({"key": "db1", "doc_count": 1, "cpu": {"value": 12.5}})
    );
    assert_eq!(
        buckets[1],
        json!({"key": "db2", "doc_count": 2, "cpu": {"value": 80.0}})
    );
    let sorted = http.search(
        target,
        &json!({"sort": [{"metrics.sqlserver.cpu.utilization": "desc"}]}),
    );
    assert_eq!(ids(&sorted), ["m2", "m1", "m3"]);
}

#[test]
fn malformed_requests_get_elasticsearch_errors() {
    let es = ElasticServer::start();
    let http = Http::new(&es);
    let json_ct = [("content-type", "application/json")];
    let a = http
        .try_send("POST", "/_search", Some(b"{nope".to_vec()), &json_ct)
        .expect("send");
    assert_eq!(
        (a.status, error_type(&a.body)),
        (400, "x_content_parse_exception"),
        "{}",
        a.body
    );
    assert_eq!(
        a.body["error"]["root_cause"][0]["type"],
        "x_content_parse_exception"
    );
    assert_eq!(a.headers["x-elastic-product"], "Elasticsearch");

    let a = http.bulk_raw("/_bulk", "{\"index\":{\"_index\":\"x\"}}\n{\"a\":1}");
    assert_eq!(a.status, 400);
    assert!(
        reason(&a.body).contains("must be terminated by a newline"),
        "{}",
        a.body
    );
    let a = http.bulk_raw(
        "/_bulk",
        "{\"index\":{\"_index\":\"x\"}}\n{\"a\":1}\n{\"explode\":{}}\n",
    );
    assert_eq!(
        (a.status, error_type(&a.body)),
        (400, "illegal_argument_exception")
    );
    assert!(reason(&a.body).contains("line [3]"), "{}", a.body);
    let a = http.bulk_raw(
        "/_bulk",
        "{\"index\":{\"_index\":\"x\"}}\n{\"a\":1}\n{\"index\":\n",
    );
    assert_eq!(
        (a.status, error_type(&a.body)),
        (400, "x_content_parse_exception")
    );
    assert!(reason(&a.body).contains("line [3]"), "{}", a.body);
    let a = http.bulk_raw("/_bulk", "{\"index\":{\"_id\":\"1\"}}\n{\"a\":1}\n");
    assert_eq!(
        (a.status, error_type(&a.body)),
        (400, "action_request_validation_exception")
    );
    let a = http.bulk_raw(
        "/_bulk",
        "{\"index\":{\"_index\":\"x\",\"colour\":1}}\n{}\n",
    );
    assert!(
        reason(&a.body).contains("unknown parameter [colour]"),
        "{}",
        a.body
    );
    assert_eq!(es.count("*"), 0);
    assert_eq!(es.stats().bulk_requests, 5);

    let a = http
        .try_send(
            "POST",
            "/_bulk",
            Some(b"{}\n".to_vec()),
            &[("content-type", "text/plain")],
        )
        .expect("send");
    assert_eq!(a.status, 406);
    assert_eq!(
        a.body["error"],
        "Content-Type header [text/plain] is not supported"
    );
    let a = http.send("GET", "/_nodes/stats", None);
    assert_eq!(
        (a.status, error_type(&a.body)),
        (400, "illegal_argument_exception")
    );
    assert_eq!(
        reason(&a.body),
        "no handler found for uri [/_nodes/stats] and method [GET]"
    );
    let a = http.send("GET", "/_bulk", None);
    assert_eq!(a.status, 405);
    assert!(reason(&a.body).contains("allowed: [POST, PUT]"));

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let body = ndjson(&[
        json!({"create": {"_index": "zipped", "_id": "z"}}),
        json!({"a": 1}),
        json!({"create": {"_index": "zipped", "_id": "z"}}),
        json!({"a": 1}),
    ]);
    gz.write_all(body.as_bytes()).expect("gzip");
    let a = http
        .try_send(
            "POST",
            "/_bulk?filter_path=errors,items.*.error,items.*._id",
            Some(gz.finish().expect("gzip")),
            &[
                ("content-type", "application/x-ndjson"),
                ("content-encoding", "gzip"),
            ],
        )
        .expect("send");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["errors"], true);
    assert_eq!(a.body["items"][0], json!({"create": {"_id": "z"}}));
    assert_eq!(
        a.body["items"][1]["create"]["error"]["type"],
        "version_conflict_engine_exception"
    );
    assert!(a.body.get("took").is_none());
    assert_eq!(es.stats().max_bulk_bytes, body.len());
    let a = http
        .try_send(
            "POST",
            "/_bulk",
            Some(b"not gzip".to_vec()),
            &[
                ("content-type", "application/x-ndjson"),
                ("content-encoding", "gzip"),
            ],
        )
        .expect("send");
    assert_eq!(a.status, 400);
    assert_eq!(http.get("/").0, 200);
}

#[test]
fn glob_helpers() {
    assert!(glob("mssql-*", "mssql-metrics-default"));
    assert!(glob("*", "x"));
    assert!(!glob("mssql-*-x", "mssql-a-y"));
    assert!(glob("a*b*c", "aXXbYYc"));
    assert!(globs_intersect("metrics-*-*", "metrics-sqlvigil-*"));
    assert!(globs_intersect("mssql-*", "mssql-metrics-*"));
    assert!(globs_intersect("*-logs", "app-*"));
    assert!(!globs_intersect("logs-*", "metrics-*"));
    assert!(!globs_intersect("mssql-metrics-*", "mssql-logs-*"));
    assert!(!globs_intersect("abc", "abd"));
    assert!(globs_intersect("a*", "*z"));
}

#[test]
fn value_helpers() {
    let doc = json!({"a": {"b.c": [1, {"d": 2}]}, "a.b": {"c": 3}, "x": null});
    let found: Vec<String> = lookup(&doc, "a.b.c")
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(found, ["1", "{\"d\":2}", "3"]);
    assert_eq!(lookup(&doc, "a.b.c.d"), vec![&json!(2)]);
    assert!(lookup(&doc, "x").is_empty());
    assert_eq!(parse_date("2024-05-01"), Some(1_714_521_600_000_000_000));
    assert_eq!(
        parse_date("2024-05-01T00:00Z"),
        parse_date("2024-05-01T02:00:00+02:00")
    );
    assert_eq!(
        parse_date("2024-05-01T00:00:00.000000001Z"),
        Some(1_714_521_600_000_000_001)
    );
    assert_eq!(parse_date("12"), None);
    let now = 1_714_525_230_500; // 2024-05-01T01:00:30.500Z
    assert_eq!(
        date_math("now-1h/h", now, false),
        parse_date("2024-05-01T00:00:00Z")
    );
    assert_eq!(
        date_math("now/d", now, true),
        parse_date("2024-05-01T23:59:59.999Z")
    );
    assert_eq!(
        date_math("2024-01-31||+1M", now, false),
        parse_date("2024-02-29")
    );
    assert_eq!(date_math("now-", now, false), None);
    assert_eq!(base64url(&[0u8; 15]).len(), 20);
    assert_eq!(base64url(b"hi"), "aGk");
    assert_eq!(
        filter_path(
            &json!({"a": {"b": 1, "c": 2}, "d": [{"e": 1}, {"f": 2}]}),
            "a.b,d.e"
        ),
        json!({"a": {"b": 1}, "d": [{"e": 1}]})
    );
    assert_eq!(minimum_should_match(&json!("75%"), 4).ok(), Some(3));
    assert_eq!(minimum_should_match(&json!(-1), 4).ok(), Some(3));
    assert_eq!(
        Interval::Week.round(parse_date("2024-05-01T10:00:00Z").unwrap_or(0) / 1_000_000),
        parse_date("2024-04-29").unwrap_or(0) / 1_000_000
    );
    assert_eq!(
        Interval::Month.next(parse_date("2024-01-01").unwrap_or(0) / 1_000_000),
        parse_date("2024-02-01").unwrap_or(0) / 1_000_000
    );
}
