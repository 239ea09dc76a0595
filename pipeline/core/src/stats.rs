//! Self metrics: counters every component bumps, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    (counters { $($name:ident: $help:literal),* $(,)? } gauges { $($g:ident: $ghelp:literal),* $(,)? }) => {
        /// Process-wide counters (monotonic since start) and gauges (current values).
        #[derive(Debug, Default)]
        pub struct Stats { $(pub $name: AtomicU64,)* $(pub $g: AtomicU64,)* }

        impl Stats {
            /// Prometheus exposition text, one metric per line with its help.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $( render_one(&mut out, stringify!($name), $help, "counter", &self.$name); )*
                $( render_one(&mut out, stringify!($g), $ghelp, "gauge", &self.$g); )*
                out
            }
        }
    };
}

fn render_one(out: &mut String, name: &str, help: &str, kind: &str, v: &AtomicU64) {
    let _ = writeln!(out, "# HELP sqlvigil_{name} {help}");
    let _ = writeln!(out, "# TYPE sqlvigil_{name} {kind}");
    let _ = writeln!(out, "sqlvigil_{name} {}", v.load(Ordering::Relaxed));
}

counters! {
counters {
    received_points: "Metric data points accepted by the OTLP receiver.",
    rejected_points: "Metric data points refused by the OTLP receiver (partial success).",
    received_log_records: "Log records accepted by the OTLP receiver.",
    dropped_spans: "Spans received and dropped: traces are not processed yet.",
    receiver_errors: "OTLP requests answered with an error.",
    bus_full: "Publishes refused because the in-process bus was at capacity.",
    processed_points: "Raw points that went through the operators.",
    derived_points: "Per-second points derived from cumulative counters.",
    late_points: "Points older than their series' last point (not used for rates).",
    counter_resets: "Counter resets detected by the rate operator.",
    units_converted: "Points converted to their metric's catalogue unit (% vs 1, ms vs s, By vs KB).",
    unit_mismatches: "Points whose unit contradicts the catalogue and cannot be converted (stored as sent).",
    query_events: "Top-query and query-sample events parsed from the receiver's log records.",
    stored_rows: "Rows written to Parquet.",
    stored_log_records: "Log records written to Parquet.",
    anomalies_opened: "Anomalies opened.",
    anomalies_resolved: "Anomalies resolved.",
    anomalies_folded: "Anomalies past their rule's open-rate limit on an instance, folded into a storm anomaly.",
    worker_restarts: "Workers that failed and were started again.",
    analytics_coalesced: "Opened anomalies analysed together with others of their instance (one insight per burst).",
    analytics_rules_fallback: "Anomalies the LLM had no free slot for in time, analysed by the rules analyzer instead.",
    analytics_spooled: "Anomaly events kept for the next start because shutdown came first.",
    analytics_failed: "Analyses that failed (their anomalies got no insight; they can be analysed on request).",
    insights_written: "Insights written.",
    decode_errors: "Bus records that could not be decoded.",
    elastic_bulk_requests: "_bulk requests sent to Elasticsearch (including retries).",
    elastic_indexed_docs: "Documents Elasticsearch stored.",
    elastic_duplicate_docs: "Documents Elasticsearch already had (409 on create: a retry or replay).",
    elastic_retried_docs: "Documents sent again after a per-item 429 or 5xx.",
    elastic_request_errors: "_bulk requests that failed as a whole (unreachable, 429, 5xx) and were retried.",
    elastic_dead_letter_docs: "Documents Elasticsearch refused for good (written to the dead-letter file).",
    bridge_malformed_docs: "Elasticsearch documents the bridge could not normalize.",
    kafka_produce_errors: "Records Kafka did not take (the OTLP client was told to retry).",
    window_points: "Aggregate points emitted by closed event-time windows.",
    window_late_points: "Points that arrived after every window containing them was emitted (not used).",
    operator_checkpoints: "Per-partition operator state snapshots saved.",
    operator_state_restored: "Partitions whose operator state was restored from a snapshot.",
}
gauges {
    elastic_queue_bytes: "Bytes in the on-disk queue waiting for Elasticsearch.",
    kafka_consumer_lag: "Records in the consumed Kafka partitions not yet read by this process.",
    kafka_producer_queue: "Records in the Kafka producer's queue awaiting delivery.",
    analytics_backlog: "Anomaly events waiting for the analytics stage (topic and current window).",
}
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
