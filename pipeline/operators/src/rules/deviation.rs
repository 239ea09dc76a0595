//! Baseline-deviation rules: a point whose robust z-score against the series' baseline
//! (EWMA, median/MAD or hour-of-week seasonal profile) reaches `deviation` breaches.
//! The baseline does not learn from breaching points or while an anomaly is open, so an
//! incident does not become the new normal; during warm-up nothing breaches.

use super::{rule_err, Direction, Judgement, RuleConfig};
use crate::baseline::{Baseline, BaselineConfig, BaselineKind, EwmaCell, Expectation, Params};
use sqlvigil_model::{band, Sample, SeriesKey};

/// A band point per judged series and minute (`sqlvigil_model::band`).
const MINUTE_NS: i64 = 60_000_000_000;

/// Whether a point at `t` starts a new minute since the series' previous judged point
/// `prev` (none: [`super::state::NO_STATE`] or older), so a band point is written.
pub(crate) fn new_minute(prev: i64, t: i64) -> bool {
    prev.div_euclid(MINUTE_NS) != t.div_euclid(MINUTE_NS)
}
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

    /// The band points of `s` judged by rule `rule` against `e` ([`band`]).
    pub(crate) fn band(&self, rule: &str, s: &Sample, e: Expectation) -> [Sample; 3] {
        let half = self.k * e.scale;
        let values = [e.expected, e.expected - half, e.expected + half];
        let id = s.key.id_hex();
        std::array::from_fn(|i| {
            let mut key = SeriesKey::new(
                &s.key.instance,
                &s.key.host,
                &s.key.database,
                band::METRICS[i],
            );
            key.attributes = s.key.attributes.clone();
            let key = key.with_attr(band::OF, &id).with_attr(band::RULE, rule);
            Sample::gauge(key, s.time_ns, values[i], &s.unit)
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
    ) -> (Judgement, Option<Expectation>) {
        let baseline =
            baseline.get_or_insert_with(|| Box::new(Baseline::for_kind(cfg, self.baseline)));
        let expectation = baseline.expect(self.baseline, t);
        let z = baseline.zscore(self.baseline, t, v);
        let breach = self.breaches(z);
        baseline.update(t, v, !breach && !open);
        let judgement = Judgement {
            breach,
            expected: expectation.map(|e| e.expected),
            score: z.map(f64::abs).unwrap_or(0.0),
        };
        (judgement, expectation)
    }

    /// [`Deviation::judge`] for the EWMA baseline kept inline in a column (the same
    /// arithmetic as [`Baseline`]'s EWMA).
    pub(crate) fn judge_ewma(
        &self,
        cell: &mut EwmaCell,
        p: &Params,
        open: bool,
        v: f64,
    ) -> (Judgement, Option<Expectation>) {
        let expectation = cell.expect(p);
        let z = expectation.map(|e| (v - e.expected) / e.scale);
        let breach = self.breaches(z);
        cell.update(p, v, !breach && !open);
        let judgement = Judgement {
            breach,
            expected: expectation.map(|e| e.expected),
            score: z.map(f64::abs).unwrap_or(0.0),
        };
        (judgement, expectation)
    }
}
