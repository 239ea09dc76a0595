//! Shared test fixtures.

use chrono::DateTime;
use sqlvigil_model::{Anomaly, AnomalyState, SeriesKey, Severity};

/// An open `cpu_storm` anomaly (observed 97 against 85) on `metric` of `instance`.
pub fn anomaly(instance: &str, metric: &str) -> Anomaly {
    let series = SeriesKey::new(instance, "h", "", metric);
    let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    Anomaly {
        id: "a1".into(),
        fingerprint: Anomaly::fingerprint_for("cpu_storm", &series),
        rule: "cpu_storm".into(),
        condition: "cpu_percent > 85 for 5m".into(),
        series_id: series.id_hex(),
        series,
        severity: Severity::Critical,
        state: AnomalyState::Open,
        opened_at: t,
        updated_at: t,
        resolved_at: None,
        observed: 97.0,
        expected: Some(85.0),
        score: 97.0 / 85.0,
        evidence: vec![],
        folded: 0,
        folded_into: None,
        handling: None,
    }
}
