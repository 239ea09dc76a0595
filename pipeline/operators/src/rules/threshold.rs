//! Threshold rules: `when`, a DataFusion SQL expression over one metric, planned once
//! against a one-column schema and evaluated on an Arrow batch of each micro-batch's
//! matching points. Plain comparisons (`cpu_percent > 85`) also give the expected value
//! and a score (observed / threshold, or its inverse for "below" rules).

use super::{rule_err, CompiledRule, Judgement, RuleConfig};
use crate::error::{eval_failed, Result};
use arrow::array::{Array, BooleanArray, Float64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator as Op};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use sqlvigil_model::catalogue;
use std::sync::Arc;

/// Which way the threshold points, when the expression is a plain comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Above,
    Below,
}

/// A planned `when` predicate.
pub struct Threshold {
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    threshold: Option<(Side, f64)>,
}

/// Every name an expression may use: `value`, aliases, metric names and rate names.
fn vocabulary() -> Vec<String> {
    let mut names = vec!["value".to_string()];
    names.extend(catalogue::ALIASES.iter().map(|(a, _)| a.to_string()));
    for m in catalogue::METRICS {
        names.push(m.name.to_string());
        names.push(catalogue::rate_name(m.name));
    }
    names.extend(catalogue::DERIVED.iter().map(|d| d.to_string()));
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

fn threshold_of(expr: &Expr) -> Option<(Side, f64)> {
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
    literal_f64(lit).map(|v| (if up { Side::Above } else { Side::Below }, v))
}

impl Threshold {
    /// Plan `when`; returns the series metric it reads and the planned predicate.
    pub fn compile(config: &RuleConfig, when: &str) -> Result<(String, Threshold)> {
        let ctx = SessionContext::new();
        let all = DFSchema::try_from(float_schema(&vocabulary()))
            .map_err(|e| eval_failed("the metric vocabulary schema", e))?;
        let expr = ctx
            .parse_sql_expr(when, &all)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        let mut columns: Vec<String> = expr.column_refs().iter().map(|c| c.name.clone()).collect();
        columns.sort();
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
            ("value", Some(m)) => catalogue::resolve_alias(m).unwrap_or(m).to_string(),
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
        let df_schema = DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        let expr = ctx
            .parse_sql_expr(when, &df_schema)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        let predicate = ctx
            .create_physical_expr(expr.clone(), &df_schema)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        let data_type = predicate
            .data_type(&schema)
            .map_err(|e| rule_err(config, format!("field `when`: {e}")))?;
        if data_type != DataType::Boolean {
            return Err(rule_err(
                config,
                "field `when` must be a condition (true/false)",
            ));
        }
        Ok((
            metric,
            Threshold {
                schema,
                predicate,
                threshold: threshold_of(&expr),
            },
        ))
    }

    /// Evaluate the predicate on `values`; null results count as false.
    fn evaluate(&self, rule: &CompiledRule, values: &[f64]) -> Result<Vec<bool>> {
        let n = values.len();
        let what = || format!("evaluating rule `{}`", rule.config.name);
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![Arc::new(Float64Array::from(values.to_vec()))],
        )
        .map_err(|e| eval_failed(&what(), e))?;
        let result = self
            .predicate
            .evaluate(&batch)
            .and_then(|v| v.into_array(n))
            .map_err(|e| eval_failed(&what(), e))?;
        let bools = result
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| rule_err(&rule.config, "predicate did not return booleans"))?;
        Ok((0..n)
            .map(|i| bools.is_valid(i) && bools.value(i))
            .collect())
    }

    /// Observed/threshold (or its inverse for "below" rules): > 1 means past the line.
    fn score(&self, observed: f64) -> f64 {
        match self.threshold {
            Some((Side::Above, t)) if t != 0.0 => observed / t,
            Some((Side::Below, t)) if observed != 0.0 => t / observed,
            Some((Side::Below, _)) => f64::MAX,
            _ => 1.0,
        }
    }

    /// Judge every point's value at once (one DataFusion evaluation per micro-batch and rule).
    pub fn judge_all(&self, rule: &CompiledRule, values: &[f64]) -> Result<Vec<Judgement>> {
        let breaches = self.evaluate(rule, values)?;
        let expected = self.threshold.map(|(_, t)| t);
        Ok(values
            .iter()
            .zip(breaches)
            .map(|(v, breach)| Judgement {
                breach,
                expected,
                score: self.score(*v),
            })
            .collect())
    }
}
