//! Self metrics: counters every component bumps, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Process-wide counters (monotonic since start).
        #[derive(Debug, Default)]
        pub struct Stats { $(pub $name: AtomicU64,)* }

        impl Stats {
            /// Prometheus exposition text, one counter per line with its help.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP sqlvigil_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE sqlvigil_{} counter", stringify!($name));
                    let _ = writeln!(out, "sqlvigil_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                out
            }
        }
    };
}

counters! {
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
    stored_rows: "Rows written to Parquet.",
    stored_log_records: "Log records written to Parquet.",
    anomalies_opened: "Anomalies opened.",
    anomalies_resolved: "Anomalies resolved.",
    insights_written: "Insights written.",
    decode_errors: "Bus records that could not be decoded.",
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
