//! Threshold-for-duration rules: `when` (a DataFusion SQL expression over one metric)
//! must hold for `for` of event time before an anomaly opens; it resolves once `when`
//! has been false for `resolve_after` (hysteresis, so a flapping value does not open
//! and close anomalies on every point).
//!
//! ```yaml
//! - name: cpu_storm
//!   when: "cpu_percent > 85"     # alias from the catalogue, or `value` with `metric:`
//!   for: 5m
//!   severity: critical
//! ```
//!
//! The expression is planned once by DataFusion against a one-column schema and
//! evaluated on an Arrow batch of the matching points of each micro-batch; the
//! per-series state machine then walks the boolean results in event-time order.

use super::{MicroBatch, Operator};
use crate::config::{duration_str, opt_duration_str};
use crate::error::{PipelineError, Result};
use crate::stats::Stats;
use arrow::array::{Array, BooleanArray, Float64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator as Op};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use sqlvigil_model::{
    catalogue, ns_to_datetime, Anomaly, AnomalyEvent, AnomalyEventKind, AnomalyState,
    EvidencePoint, Sample, SeriesKey, Severity,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Evidence points kept per open or breaching series.
const EVIDENCE_POINTS: usize = 30;
const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(60);

/// A rule as written in YAML.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique rule name; part of the anomaly fingerprint.
    pub name: String,
    /// Condition over one metric, e.g. `cpu_percent > 85`.
    pub when: String,
    /// Metric the expression's `value` refers to (needed for metrics without an alias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// How long `when` must hold before the anomaly opens.
    #[serde(rename = "for", with = "duration_str")]
    pub for_: Duration,
    /// How long `when` must be false before the anomaly resolves (default 1m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_after: Option<Duration>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

fn default_severity() -> Severity {
    Severity::Warning
}

/// Which way the threshold points, when the expression is a plain comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Above,
    Below,
}

/// A rule ready to evaluate.
pub struct CompiledRule {
    pub config: RuleConfig,
    /// Series metric name the rule reads.
    pub metric: String,
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    threshold: Option<(Direction, f64)>,
}

fn rule_err(rule: &RuleConfig, message: impl Into<String>) -> PipelineError {
    PipelineError::Rule {
        rule: rule.name.clone(),
        message: message.into(),
    }
}

/// Every name an expression may use: `value`, aliases, metric names and rate names.
fn vocabulary() -> Vec<String> {
    let mut names = vec!["value".to_string()];
    names.extend(catalogue::ALIASES.iter().map(|(a, _)| a.to_string()));
    for m in catalogue::METRICS {
        names.push(m.name.to_string());
        names.push(catalogue::rate_name(m.name));
    }
    names.sort();
    names.dedup();
    names
}

fn float_schema(names: &[String]) -> Schema {
    Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Float64, true))
            .collect::<Vec<_>>(),
    )
}

fn literal_f64(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Float64(Some(f)) => Some(*f),
            ScalarValue::Int64(Some(i)) => Some(*i as f64),
            other => other.to_string().parse().ok(),
        },
        Expr::Cast(c) => literal_f64(&c.expr),
        Expr::TryCast(c) => literal_f64(&c.expr),
        _ => None,
    }
}

fn threshold_of(expr: &Expr) -> Option<(Direction, f64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let greater = match op {
        Op::Gt | Op::GtEq => true,
        Op::Lt | Op::LtEq => false,
        _ => return None,
    };
    // `x > 85` points up; `85 < x` too (the literal on the left flips the operator).
    let (lit, up) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(_), lit) => (lit, greater),
        (lit, Expr::Column(_)) => (lit, !greater),
        _ => return None,
    };
    literal_f64(lit).map(|v| {
        (
            if up {
                Direction::Above
            } else {
                Direction::Below
            },
            v,
        )
    })
}

impl CompiledRule {
    /// Parse and plan the rule; errors name the rule and the field.
    pub fn compile(config: &RuleConfig) -> Result<CompiledRule> {
        if config.name.trim().is_empty() {
            return Err(rule_err(config, "field `name` must not be empty"));
        }
        let ctx = SessionContext::new();
        let all = DFSchema::try_from(float_schema(&vocabulary()))?;
        let expr = ctx
            .parse_sql_expr(&config.when, &all)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        let columns: Vec<String> = {
            let mut c: Vec<String> = expr.column_refs().iter().map(|c| c.name.clone()).collect();
            c.sort();
            c
        };
        let [column] = columns.as_slice() else {
            return Err(rule_err(
                config,
                format!(
                    "field `when` must use exactly one metric, found {}",
                    columns.len()
                ),
            ));
        };
        let metric = match (column.as_str(), &config.metric) {
            ("value", Some(m)) => m.clone(),
            ("value", None) => {
                return Err(rule_err(
                    config,
                    "field `when` uses `value`, so field `metric` is required",
                ))
            }
            (name, None) => catalogue::resolve_alias(name).unwrap_or(name).to_string(),
            (_, Some(_)) => {
                return Err(rule_err(
                    config,
                    "field `metric` goes with `value` in `when`, not with an alias",
                ))
            }
        };
        let schema = Arc::new(float_schema(std::slice::from_ref(column)));
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let expr = ctx
            .parse_sql_expr(&config.when, &df_schema)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        let predicate = ctx
            .create_physical_expr(expr.clone(), &df_schema)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        if predicate.data_type(&schema)? != DataType::Boolean {
            return Err(rule_err(
                config,
                "field `when` must be a condition (true/false)",
            ));
        }
        Ok(CompiledRule {
            config: config.clone(),
            metric,
            schema,
            predicate,
            threshold: threshold_of(&expr),
        })
    }

    /// Evaluate the predicate on `values`; null results count as false.
    fn evaluate(&self, values: Vec<f64>) -> Result<Vec<bool>> {
        let n = values.len();
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![Arc::new(Float64Array::from(values))],
        )?;
        let result = self.predicate.evaluate(&batch)?.into_array(n)?;
        let bools = result
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| rule_err(&self.config, "predicate did not return booleans"))?;
        Ok((0..n)
            .map(|i| bools.is_valid(i) && bools.value(i))
            .collect())
    }

    /// Observed/threshold (or its inverse for "below" rules): > 1 means past the line.
    fn score(&self, observed: f64) -> f64 {
        match self.threshold {
            Some((Direction::Above, t)) if t != 0.0 => observed / t,
            Some((Direction::Below, _)) if observed != 0.0 => {
                self.threshold.map(|(_, t)| t / observed).unwrap_or(1.0)
            }
            _ => 1.0,
        }
    }

    /// Whether `a` is more extreme than `b` in the rule's direction.
    fn worse(&self, a: f64, b: f64) -> bool {
        match self.threshold {
            Some((Direction::Below, _)) => a < b,
            _ => a > b,
        }
    }

    fn condition(&self) -> String {
        format!(
            "{} for {}",
            self.config.when,
            humantime::format_duration(self.config.for_)
        )
    }
}

/// Per rule and series: where the breach started, the open anomaly, the clearing time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeriesState {
    breach_since: Option<i64>,
    clear_since: Option<i64>,
    open: Option<Anomaly>,
    evidence: VecDeque<EvidencePoint>,
}

pub struct ThresholdOperator {
    rules: Vec<CompiledRule>,
    /// (rule index, series id) → state.
    states: HashMap<(usize, u64), SeriesState>,
    stats: Arc<Stats>,
}

impl ThresholdOperator {
    pub fn new(rules: &[RuleConfig], stats: Arc<Stats>) -> Result<Self> {
        let rules = rules
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<Vec<_>>>()?;
        Ok(ThresholdOperator {
            rules,
            states: HashMap::new(),
            stats,
        })
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    fn apply_rule(
        &mut self,
        r: usize,
        samples: &[Sample],
        events: &mut Vec<AnomalyEvent>,
    ) -> Result<()> {
        let rule = &self.rules[r];
        let mut points: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.key.metric == rule.metric)
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_cached_key(|s| (s.key.id(), s.time_ns));
        let breaches = rule.evaluate(points.iter().map(|s| s.value).collect())?;
        for (s, breach) in points.into_iter().zip(breaches) {
            let state = self.states.entry((r, s.key.id())).or_default();
            if let Some(ev) = step(&self.rules[r], state, &s.key, s.time_ns, s.value, breach) {
                match ev.event {
                    AnomalyEventKind::Open => Stats::add(&self.stats.anomalies_opened, 1),
                    AnomalyEventKind::Resolve => Stats::add(&self.stats.anomalies_resolved, 1),
                    AnomalyEventKind::Update => {}
                }
                events.push(ev);
            }
        }
        Ok(())
    }
}

/// Advance one series' state by one point; returns the event it caused, if any.
fn step(
    rule: &CompiledRule,
    st: &mut SeriesState,
    key: &SeriesKey,
    t: i64,
    v: f64,
    breach: bool,
) -> Option<AnomalyEvent> {
    let time = ns_to_datetime(t);
    if breach {
        st.clear_since = None;
        let since = *st.breach_since.get_or_insert(t);
        st.evidence.push_back(EvidencePoint { time, value: v });
        if st.evidence.len() > EVIDENCE_POINTS {
            st.evidence.pop_front();
        }
        if let Some(a) = st.open.as_mut() {
            a.updated_at = time;
            if rule.worse(v, a.observed) {
                a.observed = v;
                a.score = rule.score(v);
                a.evidence = st.evidence.iter().cloned().collect();
                return Some(AnomalyEvent {
                    event: AnomalyEventKind::Update,
                    anomaly: a.clone(),
                });
            }
            return None;
        }
        if t - since < rule.config.for_.as_nanos() as i64 {
            return None;
        }
        let observed =
            st.evidence
                .iter()
                .map(|e| e.value)
                .fold(v, |m, x| if rule.worse(x, m) { x } else { m });
        let fingerprint = Anomaly::fingerprint_for(&rule.config.name, key);
        let anomaly = Anomaly {
            id: format!("{fingerprint}-{t}"),
            fingerprint,
            rule: rule.config.name.clone(),
            condition: rule.condition(),
            series_id: key.id_hex(),
            series: key.clone(),
            severity: rule.config.severity,
            state: AnomalyState::Open,
            opened_at: time,
            updated_at: time,
            resolved_at: None,
            observed,
            expected: rule.threshold.map(|(_, t)| t),
            score: rule.score(observed),
            evidence: st.evidence.iter().cloned().collect(),
        };
        st.open = Some(anomaly.clone());
        return Some(AnomalyEvent {
            event: AnomalyEventKind::Open,
            anomaly,
        });
    }
    st.breach_since = None;
    st.evidence.clear();
    let open = st.open.as_ref()?;
    let since = *st.clear_since.get_or_insert(t);
    let resolve_after = rule
        .config
        .resolve_after
        .unwrap_or(DEFAULT_RESOLVE_AFTER)
        .as_nanos() as i64;
    if t - since < resolve_after {
        return None;
    }
    let mut anomaly = open.clone();
    st.open = None;
    st.clear_since = None;
    anomaly.state = AnomalyState::Resolved;
    anomaly.updated_at = time;
    anomaly.resolved_at = Some(time);
    Some(AnomalyEvent {
        event: AnomalyEventKind::Resolve,
        anomaly,
    })
}

impl Operator for ThresholdOperator {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn process(&mut self, batch: &mut MicroBatch) -> Result<()> {
        for r in 0..self.rules.len() {
            self.apply_rule(r, &batch.samples, &mut batch.events)?;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<serde_json::Value> {
        // Keyed by rule name so a reordered rule file restores correctly.
        let entries: Vec<(String, u64, &SeriesState)> = self
            .states
            .iter()
            .map(|((r, id), s)| (self.rules[*r].config.name.clone(), *id, s))
            .collect();
        Ok(serde_json::to_value(entries)?)
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        let entries: Vec<(String, u64, SeriesState)> = serde_json::from_value(state)?;
        for (name, id, s) in entries {
            if let Some(r) = self.rules.iter().position(|rule| rule.config.name == name) {
                self.states.insert((r, id), s);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(when: &str, for_: u64) -> RuleConfig {
        RuleConfig {
            name: "cpu_storm".into(),
            when: when.into(),
            metric: None,
            for_: Duration::from_secs(for_),
            resolve_after: Some(Duration::from_secs(30)),
            severity: Severity::Critical,
        }
    }

    fn cpu(t_s: i64, v: f64) -> Sample {
        Sample::gauge(
            SeriesKey::new("sql1", "h", "", "sqlserver.cpu.utilization"),
            t_s * 1_000_000_000,
            v,
            "%",
        )
    }

    fn run(op: &mut ThresholdOperator, samples: Vec<Sample>) -> Vec<AnomalyEvent> {
        let mut b = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut b).unwrap();
        b.events
    }

    #[test]
    fn opens_after_the_duration_and_resolves_with_hysteresis() {
        let mut op =
            ThresholdOperator::new(&[rule("cpu_percent > 85", 60)], Arc::new(Stats::default()))
                .unwrap();
        // Breach from t=10; 59 s is not enough, 60 s opens.
        let ev = run(
            &mut op,
            vec![cpu(0, 50.0), cpu(10, 90.0), cpu(40, 95.0), cpu(69, 91.0)],
        );
        assert!(ev.is_empty());
        let ev = run(&mut op, vec![cpu(70, 92.0)]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event, AnomalyEventKind::Open);
        let a = &ev[0].anomaly;
        assert_eq!((a.observed, a.expected), (95.0, Some(85.0)));
        assert!((a.score - 95.0 / 85.0).abs() < 1e-9);
        assert_eq!(a.evidence.len(), 4);
        // A dip shorter than resolve_after does not resolve; a long one does.
        let ev = run(
            &mut op,
            vec![cpu(80, 10.0), cpu(90, 99.0), cpu(100, 10.0), cpu(129, 10.0)],
        );
        assert_eq!(
            ev.iter().map(|e| e.event).collect::<Vec<_>>(),
            vec![AnomalyEventKind::Update]
        );
        let ev = run(&mut op, vec![cpu(130, 10.0)]);
        assert_eq!(ev[0].event, AnomalyEventKind::Resolve);
        assert_eq!(ev[0].anomaly.state, AnomalyState::Resolved);
    }

    #[test]
    fn below_rules_and_value_with_metric() {
        let mut cfg = rule("value < 100", 0);
        cfg.metric = Some("sqlserver.page.life_expectancy".into());
        let mut op = ThresholdOperator::new(&[cfg], Arc::new(Stats::default())).unwrap();
        let ple = Sample::gauge(
            SeriesKey::new("s", "h", "", "sqlserver.page.life_expectancy"),
            1,
            20.0,
            "s",
        );
        let ev = run(&mut op, vec![ple]);
        assert_eq!(ev[0].anomaly.score, 5.0);
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
    }

    #[test]
    fn checkpoint_restores_an_open_anomaly() {
        let stats = Arc::new(Stats::default());
        let mut a = ThresholdOperator::new(&[rule("cpu_percent > 85", 0)], stats.clone()).unwrap();
        assert_eq!(run(&mut a, vec![cpu(0, 90.0)]).len(), 1);
        let mut b = ThresholdOperator::new(&[rule("cpu_percent > 85", 0)], stats).unwrap();
        b.restore(a.checkpoint().unwrap()).unwrap();
        let ev = run(&mut b, vec![cpu(100, 10.0)]);
        let ev2 = run(&mut b, vec![cpu(140, 10.0)]);
        assert!(ev.is_empty());
        assert_eq!(ev2[0].event, AnomalyEventKind::Resolve);
    }
}
