//! Baseline-deviation rules: a point whose robust z-score against the series' baseline
//! (EWMA, median/MAD or hour-of-week seasonal profile) reaches `deviation` breaches.
//! The baseline does not learn from breaching points or while an anomaly is open, so an
//! incident does not become the new normal; during warm-up nothing breaches.

use super::{rule_err, Direction, Judgement, RuleConfig};
use crate::baseline::{Baseline, BaselineConfig, BaselineKind, EwmaCell, Params};
use crate::error::Result;

/// A compiled baseline-deviation rule.
pub struct Deviation {
    pub baseline: BaselineKind,
    pub k: f64,
    pub direction: Direction,
}

impl Deviation {
    pub fn compile(config: &RuleConfig) -> Result<Deviation> {
        let k = config.deviation.unwrap_or_default();
        if !(k.is_finite() && k > 0.0) {
            return Err(rule_err(
                config,
                "field `deviation` must be a positive number (a robust z-score such as 4)",
            ));
        }
        if config.change.is_some() || config.over.is_some() || config.absent_for.is_some() {
            return Err(rule_err(
                config,
                "fields `change`, `over`, `absent_for` do not go with `deviation`",
            ));
        }
        Ok(Deviation {
            baseline: config.baseline.unwrap_or(BaselineKind::Ewma),
            k,
            direction: config.direction.unwrap_or_default(),
        })
    }

    pub fn baseline_name(&self) -> &'static str {
        match self.baseline {
            BaselineKind::Ewma => "EWMA",
            BaselineKind::MedianMad => "median/MAD",
            BaselineKind::SeasonalHourOfWeek => "hour-of-week",
        }
    }

    fn breaches(&self, z: Option<f64>) -> bool {
        z.is_some_and(|z| match self.direction {
            Direction::Above => z >= self.k,
            Direction::Below => -z >= self.k,
            Direction::Both => z.abs() >= self.k,
        })
    }

    /// Judge against the baseline as it was before this point, then let it learn
    /// (not from a breach, nor while an anomaly is `open`).
    pub fn judge(
        &self,
        baseline: &mut Option<Box<Baseline>>,
        cfg: &BaselineConfig,
        open: bool,
        t: i64,
        v: f64,
    ) -> Judgement {
        let baseline =
            baseline.get_or_insert_with(|| Box::new(Baseline::for_kind(cfg, self.baseline)));
        let expectation = baseline.expect(self.baseline, t);
        let z = baseline.zscore(self.baseline, t, v);
        let breach = self.breaches(z);
        baseline.update(t, v, !breach && !open);
        Judgement {
            breach,
            expected: expectation.map(|e| e.expected),
            score: z.map(f64::abs).unwrap_or(0.0),
        }
    }

    /// [`Deviation::judge`] for the EWMA baseline kept inline in a column (the same
    /// arithmetic as [`Baseline`]'s EWMA).
    pub(crate) fn judge_ewma(
        &self,
        cell: &mut EwmaCell,
        p: &Params,
        open: bool,
        v: f64,
    ) -> Judgement {
        let expectation = cell.expect(p);
        let z = expectation.map(|e| (v - e.expected) / e.scale);
        let breach = self.breaches(z);
        cell.update(p, v, !breach && !open);
        Judgement {
            breach,
            expected: expectation.map(|e| e.expected),
            score: z.map(f64::abs).unwrap_or(0.0),
        }
    }
}
