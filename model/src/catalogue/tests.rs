use super::*;
use figment::providers::{Format, Yaml};
use serde_json::Value;

#[test]
fn every_alias_points_at_a_known_metric_or_its_rate() {
    for (alias, target) in ALIASES.iter().filter(|(_, t)| !DERIVED.contains(t)) {
        let base = target.strip_suffix(".per_second").unwrap_or(target);
        let def = metric(base).unwrap_or_else(|| panic!("{alias} → unknown {target}"));
        assert_eq!(target.ends_with(".per_second"), has_rate(def), "{alias}");
    }
}

/// The upstream `metadata.yaml` copied under `tests/fixtures/` (see its SOURCE.md).
fn metadata() -> Value {
    // Cargo's run-time value first: a shared build cache may hold a binary compiled in
    // another checkout (see `sqlvigil_testkit::package_dir`).
    let dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{dir}/../tests/fixtures/sqlserverreceiver/metadata.yaml");
    figment::Figment::from(Yaml::file(path))
        .extract()
        .expect("metadata.yaml parses")
}

fn strip_quotes(u: &str) -> &str {
    u.trim().trim_matches(['\u{201c}', '\u{201d}', '"'])
}

#[test]
fn catalogue_matches_the_receivers_metadata() {
    let meta = metadata();
    let metrics = meta["metrics"].as_object().expect("metrics:");
    assert_eq!(
        metrics.len(),
        METRICS.len(),
        "metric count differs: refresh with scripts/catalogue.py"
    );
    for (name, m) in metrics {
        let def = metric(name).unwrap_or_else(|| panic!("{name} missing from the catalogue"));
        assert_eq!(
            def.unit,
            strip_quotes(m["unit"].as_str().unwrap_or_default()),
            "{name}: unit"
        );
        let (kind, monotonic) = if m.get("gauge").is_some() {
            (MetricKind::Gauge, false)
        } else {
            (
                MetricKind::CumulativeSum,
                m["sum"]["monotonic"].as_bool().unwrap_or(false),
            )
        };
        assert_eq!(
            (def.kind, def.monotonic),
            (kind, monotonic),
            "{name}: instrument"
        );
        assert_eq!(
            def.enabled_by_default,
            m["enabled"].as_bool().unwrap_or(false),
            "{name}: enabled"
        );
        let attrs: Vec<&str> = m["attributes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(def.attributes, attrs.as_slice(), "{name}: attributes");
        let ext = m["extended_documentation"].as_str().unwrap_or_default();
        let mode = if ext.contains("only available when running on Windows") {
            Mode::Windows
        } else if ext.contains("directly connect") {
            Mode::Direct
        } else {
            Mode::Both
        };
        assert_eq!(def.mode, mode, "{name}: mode");
    }
    let events = meta["events"].as_object().expect("events:");
    assert_eq!(events.len(), EVENTS.len());
    for (name, e) in events {
        let def = event(name).unwrap_or_else(|| panic!("event {name} missing"));
        let attrs: Vec<&str> = e["attributes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(def.attributes, attrs.as_slice(), "event {name}: attributes");
    }
    for name in [TOP_QUERY_EVENT, QUERY_SAMPLE_EVENT] {
        assert!(event(name).is_some(), "{name}");
    }
}

#[test]
fn the_default_on_rates_of_the_issue_are_known() {
    for name in [
        "sqlserver.page.checkpoint.flush.rate",
        "sqlserver.page.lazy_write.rate",
        "sqlserver.page.operation.rate",
        "sqlserver.transaction.write.rate",
        "sqlserver.transaction_log.flush.rate",
        "sqlserver.transaction_log.flush.data.rate",
        "sqlserver.transaction_log.flush.wait.rate",
        "sqlserver.login.rate",
        "sqlserver.lock.timeout.rate",
        "sqlserver.index.search.rate",
        "sqlserver.page.lookup.rate",
        "sqlserver.database.full_scan.rate",
        "sqlserver.logout.rate",
    ] {
        assert!(is_per_second_by_mode(name), "{name}");
    }
    assert!(metric("sqlserver.transaction_log.shrink.count").is_some());
    assert!(!is_per_second_by_mode("sqlserver.user.connection.count"));
}

#[test]
fn series_map_back_to_receiver_metrics() {
    assert_eq!(
        receiver_metrics_of("batch_requests_per_sec"),
        vec!["sqlserver.batch.request.rate"]
    );
    assert_eq!(
        receiver_metrics_of("sqlserver.cpu.utilization.p95_5m"),
        vec!["sqlserver.cpu.utilization"]
    );
    assert_eq!(receiver_metrics_of("io_seconds_per_operation").len(), 2);
    assert!(receiver_metrics_of("app.latency").is_empty());
    assert_eq!(unit_of(metric("sqlserver.cpu.utilization").unwrap()), "%");
}

#[test]
fn gaps_name_the_rule_the_metric_and_the_mode() {
    let cpu = RuleNeeds {
        rule: "cpu_storm".into(),
        metrics: receiver_metrics_of("cpu_percent"),
    };
    let gap = cpu.gap(ReceiverMode::Windows).expect("direct-only metric");
    assert_eq!(gap.metric, "sqlserver.cpu.utilization");
    assert!(
        gap.reason.contains("cpu_storm") && gap.reason.contains("Windows"),
        "{}",
        gap.reason
    );
    assert!(cpu.gap(ReceiverMode::Direct).is_none());
    assert_eq!(
        mode_of(["sqlserver.batch.request.rate", "sqlserver.page.split.rate"]),
        Some(ReceiverMode::Windows)
    );
    assert_eq!(mode_of(["sqlserver.batch.request.rate"]), None);
}
