//! OTLP/JSON leniency: the spec encodes 64-bit integers as strings, and senders differ in
//! how strictly they follow it. `opentelemetry-proto`'s serde derive accepts times only
//! as strings and counts / `asInt` only as numbers, so requests are normalised to that
//! before decoding (and replies' int64 counters are written as strings, as the spec asks).
//!
//! An empty `AnyValue` (`{}`) is valid protobuf and valid OTLP/JSON ("all values
//! unspecified": an empty value), and the Collector's JSON marshaller writes it that way
//! (its own top-query golden has `body: {}`), but the serde derive refuses it. An empty
//! attribute value or body is therefore dropped (the field is then absent, which decodes
//! to the same empty value), and an empty element of an array value becomes `""`.

use serde_json::Value;

/// Fields the decoder wants as strings (fixed64 times).
const AS_STRING: &[&str] = &["timeUnixNano", "startTimeUnixNano", "observedTimeUnixNano"];
/// Fields the decoder wants as numbers (int64 / fixed64 values and counts).
const AS_NUMBER: &[&str] = &["asInt", "count", "zeroCount", "bucketCounts"];
/// Reply counters written as strings.
const REPLY_INT64: &[&str] = &["rejectedDataPoints", "rejectedLogRecords", "rejectedSpans"];

fn to_number(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Ok(i) = s.parse::<i64>() {
                *v = Value::from(i);
            } else if let Ok(u) = s.parse::<u64>() {
                *v = Value::from(u);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_number),
        _ => {}
    }
}

fn to_string(v: &mut Value) {
    if let Value::Number(n) = v {
        *v = Value::String(n.to_string());
    }
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.is_empty())
}

/// Fields holding one `AnyValue` (`KeyValue.value`, `LogRecord.body`).
const ANY_VALUE: &[&str] = &["value", "body"];

/// Drop empty `AnyValue`s the derive cannot read; see the module doc.
fn drop_empty_values(map: &mut serde_json::Map<String, Value>) {
    map.retain(|k, v| !(ANY_VALUE.contains(&k.as_str()) && is_empty_object(v)));
    if let Some(Value::Array(items)) = map.get_mut("values") {
        for item in items.iter_mut().filter(|i| is_empty_object(i)) {
            *item = serde_json::json!({"stringValue": ""});
        }
    }
}

fn walk(v: &mut Value, f: &impl Fn(&str, &mut Value)) {
    match v {
        Value::Object(map) => {
            drop_empty_values(map);
            for (k, child) in map.iter_mut() {
                f(k, child);
                walk(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| walk(c, f)),
        _ => {}
    }
}

/// Make an OTLP/JSON request decodable whichever way its integers were written.
pub fn normalize_request(v: &mut Value) {
    walk(v, &|key, child| {
        if AS_STRING.contains(&key) {
            to_string(child);
        } else if AS_NUMBER.contains(&key) {
            to_number(child);
        }
    });
}

/// Write a reply's int64 counters as strings.
pub fn normalize_response(v: &mut Value) {
    walk(v, &|key, child| {
        if REPLY_INT64.contains(&key) {
            to_string(child);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as V};

    #[test]
    fn empty_any_values_are_empty_not_errors() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        let mut v = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1", "body": {},
        "attributes": [
            {"key": "empty", "value": {}},
            {"key": "list", "value": {"arrayValue": {"values": [{}, {"intValue": "2"}]}}},
            {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {}}]}}}
        ]}]}]}]});
        normalize_request(&mut v);
        let req: ExportLogsServiceRequest = serde_json::from_value(v).unwrap();
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert!(rec.body.is_none());
        assert!(rec.attributes[0].value.is_none());
        let Some(Any::ArrayValue(list)) = rec.attributes[1]
            .value
            .as_ref()
            .and_then(|a| a.value.clone())
        else {
            panic!("array")
        };
        assert_eq!(list.values[0].value, Some(Any::StringValue(String::new())));
        assert_eq!(list.values[1].value, Some(Any::IntValue(2)));
    }

    #[test]
    fn accepts_int64_as_strings_or_numbers() {
        let mut v = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "a", "gauge": {"dataPoints": [
                {"timeUnixNano": 5, "asInt": "42"},
                {"timeUnixNano": "6", "asDouble": 1.5}]}},
            {"name": "h", "histogram": {"aggregationTemporality": 2, "dataPoints": [
                {"timeUnixNano": "7", "count": "3", "sum": 2.0, "bucketCounts": ["1", "2"], "explicitBounds": [1.0]}]}}
        ]}]}]});
        normalize_request(&mut v);
        let req: ExportMetricsServiceRequest = serde_json::from_value(v).unwrap();
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Gauge(g)) = &metrics[0].data else {
            panic!("gauge")
        };
        assert_eq!(
            (g.data_points[0].time_unix_nano, g.data_points[0].value),
            (5, Some(V::AsInt(42)))
        );
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            panic!("histogram")
        };
        assert_eq!(
            (
                h.data_points[0].count,
                h.data_points[0].bucket_counts.clone()
            ),
            (3, vec![1, 2])
        );
    }
}
