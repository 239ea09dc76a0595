//! OTLP/JSON leniency: the spec encodes 64-bit integers as strings, and senders differ in
//! how strictly they follow it. `opentelemetry-proto`'s serde derive accepts times only
//! as strings and counts / `asInt` only as numbers, so requests are normalised to that
//! before decoding (and replies' int64 counters are written as strings, as the spec asks).

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

fn walk(v: &mut Value, f: &impl Fn(&str, &mut Value)) {
    match v {
        Value::Object(map) => {
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
