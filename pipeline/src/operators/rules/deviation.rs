//! Baseline-deviation rules: a point whose robust z-score against the series' baseline
//! (EWMA, median/MAD or hour-of-week seasonal profile) reaches `deviation` breaches.
//! The baseline does not learn from breaching points or while an anomaly is open, so an
//! incident does not become the new normal; during warm-up nothing breaches.

use super::{rule_err, Direction, Judgement, RuleConfig, SeriesState};
use crate::error::Result;
use crate::operators::baseline::{Baseline, BaselineConfig, BaselineKind};

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

    /// Judge against the baseline as it was before this point, then let it learn.
    pub fn judge(&self, st: &mut SeriesState, cfg: &BaselineConfig, t: i64, v: f64) -> Judgement {
        let baseline = st
            .baseline
            .get_or_insert_with(|| Baseline::for_kind(cfg, self.baseline));
        let expectation = baseline.expect(self.baseline, t);
        let z = baseline.zscore(self.baseline, t, v);
        let breach = z.is_some_and(|z| match self.direction {
            Direction::Above => z >= self.k,
            Direction::Below => -z >= self.k,
            Direction::Both => z.abs() >= self.k,
        });
        let learn = !breach && !st.is_open();
        if let Some(b) = st.baseline.as_mut() {
            b.update(t, v, learn);
        }
        Judgement {
            breach,
            expected: expectation.map(|e| e.expected),
            score: z.map(f64::abs).unwrap_or(0.0),
        }
    }
}
