//! Anomaly rules from YAML and the anomaly lifecycle.
//!
//! Four kinds of rule, each in its own file, chosen by the fields a rule sets:
//!
//! ```yaml
//! - name: cpu_storm                  # threshold for a duration (threshold.rs)
//!   when: "cpu_percent > 85"         #   DataFusion SQL over one metric
//!   for: 5m
//! - name: wait_time_spike            # baseline deviation (deviation.rs)
//!   metric: wait_seconds_per_sec
//!   baseline: seasonal_hour_of_week  #   ewma | median_mad | seasonal_hour_of_week
//!   deviation: 4.0                   #   robust z-score ≥ 4
//! - name: batch_request_drop         # rate of change (change.rs)
//!   metric: batch_requests_per_sec
//!   change: -60%                     #   relative to the value `over` ago
//!   over: 5m
//! - name: cpu_series_absent          # absence (absence.rs)
//!   metric: cpu_percent
//!   absent_for: 5m
//! ```
//!
//! Every kind judges each point (breach or not, expected value, score); the lifecycle
//! here turns judgements into events: a breach held for `for` opens an anomaly (once the
//! fingerprint's re-arm delay has passed: `cooldown`, doubling while the series flaps,
//! up to `cooldown_max`), a worse score updates it, and `resolve_after` of calm resolves
//! it (hysteresis). Storm control ([`storm`]) folds opens past a rule's rate limit per
//! instance into one storm anomaly. Rules are validated at load; errors name the rule and
//! the field.

pub mod absence;
pub mod change;
pub mod compile;
pub mod config;
pub mod coverage;
pub mod deviation;
pub mod lifecycle;
pub mod operator;
pub mod state;
pub mod storm;
pub mod threshold;

pub use compile::{CompiledRule, Judgement, RuleKind};
pub(crate) use config::rule_err;
pub use config::{parse_rules, Direction, RuleConfig, DEFAULT_RULES_YAML};
pub use operator::RuleOperator;
pub use state::SeriesState;
use std::time::Duration;
pub use storm::StormConfig;

/// Evidence points kept per open or breaching series.
pub(crate) const EVIDENCE_POINTS: usize = 30;
const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(60);
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// The longest a flapping series' re-arm delay grows to.
const DEFAULT_COOLDOWN_MAX: Duration = Duration::from_secs(12 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineConfig, BaselineKind};
    use sqlvigil_core::{MicroBatch, Operator, Stats};
    use sqlvigil_model::{
        Anomaly, AnomalyEvent, AnomalyEventKind, AnomalyState, Sample, SeriesKey, Severity,
    };
    use std::sync::Arc;

    fn rule(when: &str, for_: u64) -> RuleConfig {
        RuleConfig {
            resolve_after: Some(Duration::from_secs(30)),
            severity: Severity::Critical,
            ..RuleConfig::threshold("cpu_storm", when, Duration::from_secs(for_))
        }
    }

    fn key(metric: &str) -> SeriesKey {
        SeriesKey::new("sql1", "h", "", metric)
    }

    fn cpu(t_s: i64, v: f64) -> Sample {
        Sample::gauge(
            key("sqlserver.cpu.utilization"),
            t_s * 1_000_000_000,
            v,
            "%",
        )
    }

    fn op(rules: &[RuleConfig]) -> RuleOperator {
        RuleOperator::new(rules, BaselineConfig::default(), Arc::new(Stats::default())).unwrap()
    }

    fn run(op: &mut RuleOperator, samples: Vec<Sample>) -> Vec<AnomalyEvent> {
        let mut b = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut b).unwrap();
        b.events
    }

    fn kinds(ev: &[AnomalyEvent]) -> Vec<AnomalyEventKind> {
        ev.iter().map(|e| e.event).collect()
    }

    /// A series of `metric` on instance `inst` with attribute `n`.
    fn point(inst: &str, n: usize, t_s: i64, v: f64) -> Sample {
        let attributes = [("n".to_string(), n.to_string())].into();
        let key = SeriesKey::from_parts(inst, "h", "", "sqlserver.cpu.utilization", attributes);
        Sample::gauge(key, t_s * 1_000_000_000, v, "%")
    }

    #[test]
    fn a_storm_folds_past_the_open_rate_limit_and_resolves_with_its_last_anomaly() {
        let stats = Arc::new(Stats::default());
        let storm = StormConfig {
            max_opens: 3,
            per: Duration::from_secs(60),
        };
        let mut op = RuleOperator::new(
            &[rule("cpu_percent > 85", 0)],
            BaselineConfig::default(),
            stats.clone(),
        )
        .unwrap()
        .with_storm(storm);
        // 50 series on sql1 and 2 on sql2 breach at once.
        let mut batch: Vec<Sample> = (0..50).map(|n| point("sql1", n, 0, 99.0)).collect();
        batch.extend((0..2).map(|n| point("sql2", n, 0, 99.0)));
        let ev = run(&mut op, batch);
        let opens: Vec<&Anomaly> = ev
            .iter()
            .filter(|e| e.event == AnomalyEventKind::Open)
            .map(|e| &e.anomaly)
            .collect();
        // 3 on sql1 + the storm + 2 on sql2 (under its limit).
        assert_eq!(opens.len(), 6, "{:?}", kinds(&ev));
        let storm_anomaly = opens
            .iter()
            .find(|a| a.condition.starts_with("storm"))
            .unwrap();
        assert_eq!(&*storm_anomaly.series.instance, "sql1");
        assert_eq!(
            storm_anomaly
                .series
                .attributes
                .get(storm::STORM_ATTRIBUTE)
                .map(String::as_str),
            Some("true")
        );
        // One update carries the count (47 folded), not one event per fold.
        let updates: Vec<&AnomalyEvent> = ev
            .iter()
            .filter(|e| e.event == AnomalyEventKind::Update)
            .collect();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].anomaly.folded, 47);
        assert_eq!(Stats::get(&stats.anomalies_opened), 6);
        assert_eq!(Stats::get(&stats.anomalies_folded), 47);
        // Folded series calm down one by one: nothing is published for them, and the
        // storm resolves with the last one (resolve_after is 30 s).
        let calm: Vec<Sample> = (0..49).map(|n| point("sql1", n, 40, 10.0)).collect();
        assert!(run(&mut op, calm).is_empty());
        let mut calm: Vec<Sample> = (0..49).map(|n| point("sql1", n, 80, 10.0)).collect();
        calm.push(point("sql1", 49, 40, 10.0));
        let ev = run(&mut op, calm);
        assert!(ev.iter().all(|e| e.event == AnomalyEventKind::Resolve));
        // The 3 admitted resolve on their own; the storm once (its 47 folded are silent).
        assert_eq!(ev.len(), 3, "{:?}", kinds(&ev));
        let ev = run(&mut op, vec![point("sql1", 49, 80, 10.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Resolve]);
        assert_eq!(ev[0].anomaly.folded, 47);
        assert_eq!(Stats::get(&stats.anomalies_resolved), 4);
    }

    #[test]
    fn storm_state_survives_a_checkpoint() {
        let storm = StormConfig {
            max_opens: 1,
            per: Duration::from_secs(60),
        };
        let build = || op(&[rule("cpu_percent > 85", 0)]).with_storm(storm);
        let mut a = build();
        run(&mut a, (0..3).map(|n| point("sql1", n, 0, 99.0)).collect());
        let mut b = build();
        b.restore(a.checkpoint().unwrap()).unwrap();
        // Folded series resolving in the restored operator still resolve the storm.
        run(&mut b, (0..3).map(|n| point("sql1", n, 40, 10.0)).collect());
        let ev = run(&mut b, (0..3).map(|n| point("sql1", n, 80, 10.0)).collect());
        assert_eq!(
            kinds(&ev),
            vec![AnomalyEventKind::Resolve, AnomalyEventKind::Resolve]
        );
        assert!(ev.iter().any(|e| e.anomaly.folded == 2));
    }

    #[test]
    fn a_flapping_series_waits_longer_each_time_it_reopens() {
        let flappy = RuleConfig {
            resolve_after: Some(Duration::from_secs(10)),
            cooldown: Some(Duration::from_secs(60)),
            cooldown_max: Some(Duration::from_secs(240)),
            ..RuleConfig::threshold("cpu_storm", "cpu_percent > 85", Duration::ZERO)
        };
        let mut op = op(&[flappy]);
        // Breach one point, calm 10 s: resolves. Then breach every second from then on
        // with calm gaps, and see when it reopens.
        let mut opens = Vec::new();
        let mut t = 0;
        while t < 2000 {
            // 1 s breach, 11 s calm: opens (if armed) and resolves each cycle.
            for (dt, v) in [(0, 99.0), (1, 10.0), (12, 10.0)] {
                for e in run(&mut op, vec![cpu(t + dt, v)]) {
                    if e.event == AnomalyEventKind::Open {
                        opens.push(t);
                    }
                }
            }
            t += 13;
        }
        let gaps: Vec<i64> = opens.windows(2).map(|w| w[1] - w[0]).collect();
        // Re-arm delays 60, 120, 240, then capped at 240 (plus the cycle's rounding).
        assert!(gaps.len() >= 5, "{opens:?}");
        assert!(gaps[0] >= 60 + 12 && gaps[0] < 120, "{gaps:?}");
        assert!(gaps[1] >= 120 + 12 && gaps[1] < 240, "{gaps:?}");
        assert!(gaps[2] >= 240 + 12, "{gaps:?}");
        assert!(
            gaps[3..].iter().all(|g| *g >= 240 + 12 && *g < 240 + 40),
            "{gaps:?}"
        );
    }

    #[test]
    fn threshold_opens_after_the_duration_and_resolves_with_hysteresis() {
        let mut op = op(&[rule("cpu_percent > 85", 60)]);
        // Breach from t=10; 59 s is not enough, 60 s opens.
        assert!(run(
            &mut op,
            vec![cpu(0, 50.0), cpu(10, 90.0), cpu(40, 95.0), cpu(69, 91.0)]
        )
        .is_empty());
        let ev = run(&mut op, vec![cpu(70, 92.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        let a = &ev[0].anomaly;
        assert_eq!((a.observed, a.expected), (95.0, Some(85.0)));
        assert!((a.score - 95.0 / 85.0).abs() < 1e-9);
        assert_eq!(a.evidence.len(), 4);
        assert_eq!(a.condition, "cpu_percent > 85 for 1m");
        // A dip shorter than resolve_after does not resolve; a long one does.
        let ev = run(
            &mut op,
            vec![cpu(80, 10.0), cpu(90, 99.0), cpu(100, 10.0), cpu(129, 10.0)],
        );
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Update]);
        let ev = run(&mut op, vec![cpu(130, 10.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Resolve]);
        assert_eq!(ev[0].anomaly.state, AnomalyState::Resolved);
        // Cooldown (default 5m): a new breach right away does not reopen…
        assert!(run(&mut op, vec![cpu(140, 99.0), cpu(300, 99.0)]).is_empty());
        // …but one after the cooldown does.
        assert_eq!(
            kinds(&run(&mut op, vec![cpu(440, 99.0)])),
            vec![AnomalyEventKind::Open]
        );
        // Replayed (already judged) points are ignored.
        assert!(run(&mut op, vec![cpu(70, 99.0), cpu(440, 99.0)]).is_empty());
    }

    #[test]
    fn points_beyond_the_allowed_lateness_are_counted_not_judged() {
        let stats = Arc::new(Stats::default());
        let mut op = RuleOperator::new(
            &[rule("cpu_percent > 85", 0)],
            BaselineConfig::default(),
            stats.clone(),
        )
        .unwrap()
        .with_allowed_lateness(Duration::from_secs(60));
        assert!(run(&mut op, vec![cpu(1000, 10.0)]).is_empty());
        let other = Sample::gauge(
            key("sqlserver.cpu.utilization").with_attr("cpu", "2"),
            900 * 1_000_000_000,
            99.0,
            "%",
        );
        assert!(
            run(&mut op, vec![other]).is_empty(),
            "100 s late: not judged"
        );
        assert_eq!(Stats::get(&stats.late_points), 1);
    }

    #[test]
    fn idle_series_are_forgotten_but_open_anomalies_are_kept() {
        let mut op = op(&[rule("cpu_percent > 85", 0)]);
        let at = |cpu: &str, t: i64, v: f64| {
            Sample::gauge(
                key("sqlserver.cpu.utilization").with_attr("cpu", cpu),
                t * 1_000_000_000,
                v,
                "%",
            )
        };
        run(&mut op, vec![at("quiet", 0, 10.0), at("hot", 0, 99.0)]);
        assert_eq!(op.state_count(), 2);
        run(&mut op, vec![at("new", 7200, 10.0)]);
        assert_eq!(
            op.state_count(),
            2,
            "the idle quiet series went, the open one stayed"
        );
    }

    #[test]
    fn below_rules_and_value_with_metric() {
        let mut cfg = rule("value < 100", 0);
        cfg.metric = Some("sqlserver.page.life_expectancy".into());
        let mut op = op(&[cfg]);
        let ple = Sample::gauge(key("sqlserver.page.life_expectancy"), 1, 20.0, "s");
        assert_eq!(run(&mut op, vec![ple])[0].anomaly.score, 5.0);
    }

    #[test]
    fn bad_rules_name_the_rule_and_field() {
        let err = |r: RuleConfig| {
            CompiledRule::compile(&r)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(rule("nosuch > 1", 1)).contains("rule `cpu_storm`: field `when`"));
        assert!(err(rule("cpu_percent + 1", 1)).contains("must be a condition"));
        assert!(err(rule("cpu_percent > 1 and blocked_processes > 2", 1))
            .contains("exactly one metric"));
        assert!(err(rule("value > 1", 1)).contains("field `metric` is required"));
        assert!(err(rule("cpu_percent >", 1)).contains("field `when`"));
        let mut both = rule("cpu_percent > 1", 1);
        both.deviation = Some(3.0);
        assert!(err(both).contains("exactly one of"));
        let mut dev = RuleConfig {
            when: None,
            deviation: Some(-1.0),
            metric: Some("cpu_percent".into()),
            ..rule("", 0)
        };
        dev.name = "d".into();
        assert!(err(dev.clone()).contains("field `deviation`"));
        dev.deviation = Some(3.0);
        dev.metric = None;
        assert!(err(dev).contains("field `metric` is required"));
        let ch = RuleConfig {
            when: None,
            change: Some("half".into()),
            metric: Some("cpu_percent".into()),
            ..rule("", 0)
        };
        assert!(err(ch).contains("field `change`"));
        let ab = RuleConfig {
            when: None,
            absent_for: Some(Duration::ZERO),
            metric: Some("cpu_percent".into()),
            ..rule("", 0)
        };
        assert!(err(ab).contains("field `absent_for`"));
    }

    #[test]
    fn checkpoint_restores_an_open_anomaly() {
        let mut a = op(&[rule("cpu_percent > 85", 0)]);
        assert_eq!(run(&mut a, vec![cpu(0, 90.0)]).len(), 1);
        let mut b = op(&[rule("cpu_percent > 85", 0)]);
        b.restore(a.checkpoint().unwrap()).unwrap();
        assert!(run(&mut b, vec![cpu(100, 10.0)]).is_empty());
        assert_eq!(
            kinds(&run(&mut b, vec![cpu(140, 10.0)])),
            vec![AnomalyEventKind::Resolve]
        );
    }

    #[test]
    fn deviation_fires_on_an_outlier_after_warm_up_only() {
        let cfg = RuleConfig {
            when: None,
            metric: Some("cpu_percent".into()),
            deviation: Some(4.0),
            baseline: Some(BaselineKind::Ewma),
            ..rule("", 0)
        };
        let mut op = op(&[RuleConfig {
            name: "cpu_spike".into(),
            ..cfg
        }]);
        // Warm-up: even a wild value does not fire before the baseline is trusted.
        assert!(run(&mut op, vec![cpu(0, 500.0)]).is_empty());
        let normal: Vec<Sample> = (1..200)
            .map(|i| cpu(i * 10, 40.0 + (i % 5) as f64))
            .collect();
        assert!(run(&mut op, normal).is_empty());
        let ev = run(&mut op, vec![cpu(2000, 95.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        let a = &ev[0].anomaly;
        assert!(
            a.expected.is_some_and(|e| (38.0..46.0).contains(&e)),
            "{:?}",
            a.expected
        );
        assert!(a.score >= 4.0 && a.condition.contains("EWMA"), "{a:?}");
    }

    #[test]
    fn rate_of_change_fires_on_a_drop() {
        let cfg = RuleConfig {
            name: "batch_drop".into(),
            when: None,
            metric: Some("batch_requests_per_sec".into()),
            change: Some("-60%".into()),
            over: Some(Duration::from_secs(60)),
            ..rule("", 0)
        };
        let mut op = op(&[cfg]);
        let br = |t: i64, v: f64| {
            Sample::gauge(
                key("sqlserver.batch.request.rate.per_second"),
                t * 1_000_000_000,
                v,
                "/s",
            )
        };
        assert!(run(&mut op, (0..10).map(|i| br(i * 10, 1000.0)).collect()).is_empty());
        let ev = run(&mut op, vec![br(100, 300.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        assert_eq!(ev[0].anomaly.expected, Some(1000.0));
    }

    #[test]
    fn absence_fires_on_silence_against_the_watermark_and_resolves_on_return() {
        let cfg = RuleConfig {
            name: "cpu_absent".into(),
            when: None,
            metric: Some("cpu_percent".into()),
            absent_for: Some(Duration::from_secs(60)),
            resolve_after: Some(Duration::ZERO),
            ..rule("", 0)
        };
        let mut op = op(&[cfg]);
        let other = |t: i64| {
            Sample::gauge(
                key("sqlserver.user.connection.count"),
                t * 1_000_000_000,
                1.0,
                "1",
            )
        };
        assert!(run(&mut op, vec![cpu(0, 10.0), other(0)]).is_empty());
        assert!(run(&mut op, vec![other(50)]).is_empty());
        let ev = run(&mut op, vec![other(61)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        assert_eq!(&*ev[0].anomaly.series.metric, "sqlserver.cpu.utilization");
        let ev = run(&mut op, vec![cpu(70, 10.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Resolve]);
    }

    #[test]
    fn absence_fires_when_event_time_moves_on_elsewhere() {
        let cfg = RuleConfig {
            name: "cpu_absent".into(),
            when: None,
            metric: Some("cpu_percent".into()),
            absent_for: Some(Duration::from_secs(60)),
            ..rule("", 0)
        };
        let mut op = op(&[cfg]);
        assert!(run(&mut op, vec![cpu(0, 10.0)]).is_empty());
        let mut out = MicroBatch::default();
        op.advance(30 * 1_000_000_000, &mut out).unwrap();
        assert!(out.events.is_empty());
        op.advance(61 * 1_000_000_000, &mut out).unwrap();
        assert_eq!(kinds(&out.events), vec![AnomalyEventKind::Open]);
    }

    fn wait_spike() -> RuleConfig {
        RuleConfig {
            name: "wait_spike".into(),
            when: None,
            metric: Some("wait_seconds_per_sec".into()),
            deviation: Some(4.0),
            baseline: Some(BaselineKind::Ewma),
            ..rule("", 0)
        }
    }

    fn wait(series: &str, t_s: i64, v: f64) -> Sample {
        Sample::gauge(
            key("sqlserver.os.wait.duration.per_second").with_attr("wait.type", series),
            t_s * 1_000_000_000,
            v,
            "s/s",
        )
    }

    #[test]
    fn columnar_ewma_state_round_trips_through_the_checkpoint_format() {
        let rules = [wait_spike(), rule("cpu_percent > 85", 0)];
        let mut a = op(&rules);
        let warm: Vec<Sample> = (0..100)
            .flat_map(|i| [wait("a", i * 10, 1.0 + (i % 4) as f64), cpu(i * 10, 10.0)])
            .collect();
        assert!(run(&mut a, warm).is_empty());
        let json = a.checkpoint().unwrap();
        // The JSON keeps the old per-(rule, series) shape: the EWMA as a full baseline.
        let states = json["states"].as_array().unwrap();
        assert_eq!(states.len(), 2);
        let dev = states.iter().find(|s| s[0] == "wait_spike").unwrap();
        assert_eq!(dev[2]["baseline"]["only"], "ewma");
        assert_eq!(dev[2]["baseline"]["learned"], 100);
        let mut b = op(&rules);
        b.restore(json.clone()).unwrap();
        assert_eq!(
            b.checkpoint().unwrap()["states"].as_array().unwrap().len(),
            2
        );
        // Both judge the next points identically.
        let next = vec![wait("a", 1000, 2.0), wait("a", 1010, 40.0)];
        let (ea, eb) = (run(&mut a, next.clone()), run(&mut b, next));
        assert_eq!(kinds(&ea), vec![AnomalyEventKind::Open]);
        assert_eq!(ea[0].anomaly.score, eb[0].anomaly.score);
        assert_eq!(ea[0].anomaly.expected, eb[0].anomaly.expected);
    }

    #[test]
    fn expired_series_give_their_slots_back() {
        let mut op = op(&[wait_spike()]).with_idle_after(Duration::from_secs(600));
        for round in 0..5 {
            // 100 new series every round, each round 2 h after the previous one.
            let t = round * 7200;
            let batch = (0..100)
                .map(|i| wait(&format!("{round}-{i}"), t, 1.0))
                .collect();
            run(&mut op, batch);
            assert_eq!(op.series_count(), 100, "round {round}");
        }
        let group = &op.groups[op.group_of[0]];
        assert_eq!(group.registry.slots(), 200, "freed slots are reused");
    }
}
