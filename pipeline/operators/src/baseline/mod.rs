//! Per-series baselines for anomaly detection: what a series is expected to read at a
//! given time, and how far from that an observation is (a robust z-score).
//!
//! One [`Baseline`] holds three estimators for one series; a rule picks one with
//! [`BaselineKind`]:
//!
//! - **EWMA** ([`BaselineKind::Ewma`]): exponentially weighted mean and variance in
//!   West/Finch incremental form (`d = x - m; m += a*d; v = (1 - a)(v + d*a*d)`). For the
//!   first `1/ewma_alpha` points the weight is `max(alpha, 1/n)`, i.e. the exact running
//!   mean/variance, so the start-up value does not bias the mean. Scale = `sqrt(variance)`.
//! - **Median/MAD** ([`BaselineKind::MedianMad`]): a ring buffer of the last `mad_window`
//!   values (stored as `f32`: 7 significant digits, far below any useful threshold, at
//!   half the memory). Expected = median, scale = `1.4826 * MAD` (normal-consistent).
//!   Computed on demand with `select_nth_unstable` on a scratch copy (O(window)).
//! - **Seasonal hour-of-week** ([`BaselineKind::SeasonalHourOfWeek`]): 168 buckets, one per
//!   UTC hour of the week, **bucket 0 = Monday 00:00–00:59 UTC** (see [`hour_of_week`]).
//!   Points of the hour being observed are accumulated in one open "visit" (count, sum,
//!   sum of absolute deviations from the bucket mean); when a later hour starts, the visit
//!   is folded into its bucket as one weekly observation: `mean += w*(visit_mean - mean)`,
//!   `mad += w*(visit_mad - mad)` with `w = max(seasonal_alpha, 1/visits)`. So
//!   `seasonal_alpha` weighs *weeks*, not scrapes: a 10 s scrape interval (360 points per
//!   visit) and a 5 min one learn the same profile, and an hour-long incident cannot
//!   overwrite a bucket. Scale = `1.253 * bucket MAD` (normal-consistent mean absolute
//!   deviation). A bucket is trusted once the series has been seen in that hour-of-week in
//!   `seasonal_warmup_weeks` distinct weeks *counting the week being evaluated* (so with
//!   the default 3, the third week of data is already scored against the first two), and
//!   always needs at least one completed visit. A visit that is complete but not yet folded
//!   (no later learned point arrived) is counted and folded virtually by [`Baseline::expect`].
//!   Points older than the open visit's hour (late data) are not learnt by this estimator.
//!
//! Every scale is floored at `max(min_scale_fraction * |expected|, min_scale_abs)`, so a
//! flat series gives finite z-scores; scales are therefore always > 0.
//!
//! **Warm-up**: EWMA and median/MAD return `None` until `warmup_points` observations were
//! learnt; seasonal returns `None` per bucket as described above. Non-finite values are
//! never learnt (only the last-seen time moves). With `learn = false` (an anomaly is open
//! on the series) nothing but the last-seen time changes, so the incident is not learnt.
//!
//! **Memory per series** (64-bit target; the `memory` test keeps these honest):
//!
//! | part | inline | heap |
//! |---|---|---|
//! | config copy + counters + last seen | 64 B | – |
//! | EWMA (mean, variance: `f64`) | 16 B | – |
//! | median/MAD ring (`Vec<f32>` + cursor) | 32 B | `4 * mad_window` B: **240 B** at the default 60, 1024 B at the maximum 256 |
//! | seasonal (3 `Vec`s + open visit) | 104 B | 168 × (4 mean + 4 MAD + 1 visits) = **1512 B** |
//! | **total** | **216 B** | |
//!
//! i.e. **1968 B per series with the default config** (≤ 2 KiB for all three kinds
//! together), 2752 B at `mad_window = 256`. [`Baseline::memory_bytes`] reports the actual
//! figure (inline + allocated capacity); buffers are allocated with exact capacity, also
//! when restored from a checkpoint.

use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// Number of hour-of-week buckets of the seasonal estimator.
pub const SEASONAL_BUCKETS: usize = 168;
/// Largest accepted `mad_window`.
pub const MAX_MAD_WINDOW: usize = 256;
/// Inline size budget of [`Baseline`] (bytes), documented in the module doc.
pub const INLINE_BYTES_BUDGET: usize = 216;
/// Heap bytes of the seasonal buckets: 168 × (f32 mean + f32 MAD + u8 visits).
pub const SEASONAL_HEAP_BYTES: usize = SEASONAL_BUCKETS * (4 + 4 + 1);

const NS_PER_HOUR: i64 = 3_600_000_000_000;
/// The Unix epoch (1970-01-01) was a Thursday: hour 72 of a Monday-based week.
const EPOCH_HOUR_OF_WEEK: i64 = 72;
/// Normal-consistency factor of the median absolute deviation.
const MAD_TO_SIGMA: f64 = 1.4826;
/// Normal-consistency factor of the mean absolute deviation (sqrt(pi/2)).
const MEAN_AD_TO_SIGMA: f64 = 1.253;

/// Which baseline a rule compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineKind {
    Ewma,
    MedianMad,
    SeasonalHourOfWeek,
}

/// What a baseline expects at a time: centre and a robust scale (> 0), or None while warming up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    pub expected: f64,
    pub scale: f64,
}

/// Baseline parameters (the `baseline` section of the pipeline config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// EWMA weight of each new point, in (0, 1]. Default 0.05.
    pub ewma_alpha: f64,
    /// Observations before EWMA and median/MAD produce expectations (≥ 1). Default 30.
    pub warmup_points: u32,
    /// Points kept for median/MAD, 1..=256. Default 60.
    pub mad_window: usize,
    /// Weight of each new *week* in an hour-of-week bucket, in (0, 1]. Default 0.2.
    pub seasonal_alpha: f64,
    /// Distinct weeks (counting the evaluated one) a bucket must have seen before it is
    /// trusted, 1..=255. Default 3.
    pub seasonal_warmup_weeks: u32,
    /// Scale floor as a fraction of |expected| (≥ 0), so a flat series does not produce
    /// infinite z-scores. Default 0.05.
    pub min_scale_fraction: f64,
    /// Absolute scale floor (> 0). Default 1e-6.
    pub min_scale_abs: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            ewma_alpha: 0.05,
            warmup_points: 30,
            mad_window: 60,
            seasonal_alpha: 0.2,
            seasonal_warmup_weeks: 3,
            min_scale_fraction: 0.05,
            min_scale_abs: 1e-6,
        }
    }
}

impl BaselineConfig {
    /// Checks every field; the error names the field as `baseline.<field>`.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !unit(self.ewma_alpha) {
            return Err(format!(
                "baseline.ewma_alpha must be in (0, 1], got {}",
                self.ewma_alpha
            ));
        }
        if self.warmup_points == 0 {
            return Err("baseline.warmup_points must be at least 1".into());
        }
        if self.mad_window == 0 || self.mad_window > MAX_MAD_WINDOW {
            return Err(format!(
                "baseline.mad_window must be in 1..={MAX_MAD_WINDOW}, got {}",
                self.mad_window
            ));
        }
        if !unit(self.seasonal_alpha) {
            return Err(format!(
                "baseline.seasonal_alpha must be in (0, 1], got {}",
                self.seasonal_alpha
            ));
        }
        if self.seasonal_warmup_weeks == 0 || self.seasonal_warmup_weeks > u8::MAX as u32 {
            return Err(format!(
                "baseline.seasonal_warmup_weeks must be in 1..=255, got {}",
                self.seasonal_warmup_weeks
            ));
        }
        if !(self.min_scale_fraction.is_finite() && self.min_scale_fraction >= 0.0) {
            return Err(format!(
                "baseline.min_scale_fraction must be finite and >= 0, got {}",
                self.min_scale_fraction
            ));
        }
        if !(self.min_scale_abs.is_finite() && self.min_scale_abs > 0.0) {
            return Err(format!(
                "baseline.min_scale_abs must be finite and > 0, got {}",
                self.min_scale_abs
            ));
        }
        Ok(())
    }
}

/// Hour of the week in UTC for an event time: 0 = Monday 00:00–00:59, 167 = Sunday 23:00–23:59.
pub fn hour_of_week(t_ns: i64) -> usize {
    (t_ns.div_euclid(NS_PER_HOUR) + EPOCH_HOUR_OF_WEEK).rem_euclid(SEASONAL_BUCKETS as i64) as usize
}

/// The parameters a series needs (a compact, already-clamped copy of [`BaselineConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Params {
    ewma_alpha: f64,
    seasonal_alpha: f64,
    min_scale_fraction: f64,
    min_scale_abs: f64,
    warmup_points: u32,
    mad_window: u16,
    seasonal_warmup_weeks: u8,
}

impl Params {
    /// Out-of-range values are clamped into range (configs are validated up front; this only
    /// keeps a bad or hand-edited value from breaking the arithmetic).
    pub(crate) fn from_config(cfg: &BaselineConfig) -> Self {
        let unit = |v: f64, d: f64| {
            if v.is_finite() && v > 0.0 {
                v.min(1.0)
            } else {
                d
            }
        };
        let d = BaselineConfig::default();
        Params {
            ewma_alpha: unit(cfg.ewma_alpha, d.ewma_alpha),
            seasonal_alpha: unit(cfg.seasonal_alpha, d.seasonal_alpha),
            min_scale_fraction: if cfg.min_scale_fraction.is_finite() {
                cfg.min_scale_fraction.max(0.0)
            } else {
                d.min_scale_fraction
            },
            min_scale_abs: if cfg.min_scale_abs.is_finite() && cfg.min_scale_abs > 0.0 {
                cfg.min_scale_abs
            } else {
                d.min_scale_abs
            },
            warmup_points: cfg.warmup_points.max(1),
            mad_window: cfg.mad_window.clamp(1, MAX_MAD_WINDOW) as u16,
            seasonal_warmup_weeks: cfg.seasonal_warmup_weeks.clamp(1, u8::MAX as u32) as u8,
        }
    }

    fn floor(&self, expected: f64, raw_scale: f64) -> f64 {
        let floor = (self.min_scale_fraction * expected.abs()).max(self.min_scale_abs);
        if raw_scale.is_finite() {
            raw_scale.max(floor)
        } else {
            floor
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params::from_config(&BaselineConfig::default())
    }
}

/// Exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Ewma {
    mean: f64,
    var: f64,
}

impl Ewma {
    /// West/Finch step with weight `max(alpha, 1/learned)` (`learned` counts this point),
    /// kept only when the result is finite.
    fn learn(&mut self, p: &Params, learned: u32, value: f64) {
        let w = p.ewma_alpha.max(1.0 / learned as f64);
        let diff = value - self.mean;
        let incr = w * diff;
        let mean = self.mean + incr;
        let var = (1.0 - w) * (self.var + diff * incr);
        if mean.is_finite() && var.is_finite() {
            *self = Ewma { mean, var };
        }
    }
}

/// The EWMA estimator alone: what a deviation rule with `baseline: ewma` keeps per
/// series, inline in a column (24 B: learned count, mean, variance) with the parameters
/// shared by the rule — instead of a whole [`Baseline`] (216 B inline, with its own
/// parameter copy). Same arithmetic as [`Baseline`]'s EWMA (the code is shared), and
/// converted to and from a [`Baseline`] for checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EwmaCell {
    learned: u32,
    ewma: Ewma,
}

impl EwmaCell {
    /// As [`Baseline::expect`] for [`BaselineKind::Ewma`].
    pub(crate) fn expect(&self, p: &Params) -> Option<Expectation> {
        if self.learned < p.warmup_points {
            return None;
        }
        let expected = self.ewma.mean;
        if !expected.is_finite() {
            return None;
        }
        Some(Expectation {
            expected,
            scale: p.floor(expected, self.ewma.var.max(0.0).sqrt()),
        })
    }

    /// As [`Baseline::update`] (minus the last-seen time, which the rule keeps).
    pub(crate) fn update(&mut self, p: &Params, value: f64, learn: bool) {
        if !learn || !value.is_finite() {
            return;
        }
        self.learned = self.learned.saturating_add(1);
        self.ewma.learn(p, self.learned, value);
    }

    /// The EWMA part of a (checkpointed) baseline.
    pub(crate) fn from_baseline(b: &Baseline) -> Self {
        EwmaCell {
            learned: b.learned,
            ewma: b.ewma,
        }
    }

    /// An EWMA-only [`Baseline`] holding this state (the checkpoint form).
    pub(crate) fn to_baseline(self, p: &Params, last_seen_ns: Option<i64>) -> Baseline {
        Baseline {
            params: *p,
            learned: self.learned,
            only: Some(BaselineKind::Ewma),
            last_seen_ns,
            ewma: self.ewma,
            ..Baseline::default()
        }
    }
}

/// Ring buffer of recent values for median/MAD.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct MadRing {
    #[serde(deserialize_with = "exact_vec")]
    values: Vec<f32>,
    /// Next slot to overwrite once the ring is full.
    next: u32,
}

/// Hour-of-week profile, stored column-wise (168 entries each once allocated).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
struct Seasonal {
    #[serde(deserialize_with = "exact_vec")]
    mean: Vec<f32>,
    #[serde(deserialize_with = "exact_vec")]
    mad: Vec<f32>,
    /// Completed visits (distinct weeks) folded into each bucket, saturating.
    #[serde(deserialize_with = "exact_vec")]
    visits: Vec<u8>,
    /// Absolute hour (`t_ns / 1 h`) of the open visit; `i64::MIN` when none.
    open_hour: i64,
    open_count: u32,
    open_sum: f64,
    open_abs_dev: f64,
}

impl Default for Seasonal {
    fn default() -> Self {
        Seasonal {
            mean: Vec::new(),
            mad: Vec::new(),
            visits: Vec::new(),
            open_hour: i64::MIN,
            open_count: 0,
            open_sum: 0.0,
            open_abs_dev: 0.0,
        }
    }
}

/// A bucket as seen by a reader: completed visits plus, if finished, the open one.
#[derive(Debug, Clone, Copy)]
struct BucketView {
    mean: f64,
    mad: f64,
    visits: u32,
}

impl Seasonal {
    fn allocated(&self) -> bool {
        self.mean.len() == SEASONAL_BUCKETS
            && self.mad.len() == SEASONAL_BUCKETS
            && self.visits.len() == SEASONAL_BUCKETS
    }

    fn ensure_allocated(&mut self) {
        if !self.allocated() {
            // Fresh, or a checkpoint with inconsistent columns: restart the profile.
            *self = Seasonal::default();
            self.mean = vec![0.0; SEASONAL_BUCKETS];
            self.mad = vec![0.0; SEASONAL_BUCKETS];
            self.visits = vec![0; SEASONAL_BUCKETS];
        }
    }

    fn stored(&self, b: usize) -> Option<BucketView> {
        Some(BucketView {
            mean: *self.mean.get(b)? as f64,
            mad: *self.mad.get(b)? as f64,
            visits: *self.visits.get(b)? as u32,
        })
    }

    /// Mean and mean absolute deviation of the open visit.
    fn open_stats(&self) -> Option<(f64, f64)> {
        if self.open_hour == i64::MIN || self.open_count == 0 {
            return None;
        }
        let n = self.open_count as f64;
        Some((self.open_sum / n, self.open_abs_dev / n))
    }

    fn fold(view: BucketView, visit_mean: f64, visit_mad: f64, alpha: f64) -> BucketView {
        let visits = view.visits + 1;
        let w = alpha.max(1.0 / visits as f64);
        BucketView {
            mean: view.mean + w * (visit_mean - view.mean),
            mad: view.mad + w * (visit_mad - view.mad),
            visits,
        }
    }

    /// The bucket of absolute hour `hour`, with the open visit folded in virtually when it
    /// belongs to the same bucket but an earlier week.
    fn view(&self, hour: i64, alpha: f64) -> Option<BucketView> {
        let b = (hour + EPOCH_HOUR_OF_WEEK).rem_euclid(SEASONAL_BUCKETS as i64) as usize;
        let stored = self.stored(b)?;
        match self.open_stats() {
            Some((m, d))
                if self.open_hour < hour
                    && (self.open_hour + EPOCH_HOUR_OF_WEEK).rem_euclid(SEASONAL_BUCKETS as i64)
                        as usize
                        == b =>
            {
                Some(Seasonal::fold(stored, m, d, alpha))
            }
            _ => Some(stored),
        }
    }

    /// Folds the open visit into its bucket and clears it.
    fn close_visit(&mut self, alpha: f64) {
        if let Some((m, d)) = self.open_stats() {
            let b =
                (self.open_hour + EPOCH_HOUR_OF_WEEK).rem_euclid(SEASONAL_BUCKETS as i64) as usize;
            if let Some(view) = self.stored(b) {
                let next = Seasonal::fold(view, m, d, alpha);
                let (mean, mad) = (next.mean as f32, next.mad as f32);
                if mean.is_finite() && mad.is_finite() {
                    if let (Some(sm), Some(sd), Some(sv)) = (
                        self.mean.get_mut(b),
                        self.mad.get_mut(b),
                        self.visits.get_mut(b),
                    ) {
                        *sm = mean;
                        *sd = mad;
                        *sv = sv.saturating_add(1);
                    }
                }
            }
        }
        self.open_count = 0;
        self.open_sum = 0.0;
        self.open_abs_dev = 0.0;
    }

    fn learn(&mut self, t_ns: i64, value: f64, alpha: f64) {
        self.ensure_allocated();
        let hour = t_ns.div_euclid(NS_PER_HOUR);
        if hour < self.open_hour {
            return; // late point for an hour already closed
        }
        if hour > self.open_hour {
            self.close_visit(alpha);
            self.open_hour = hour;
        }
        let b = hour_of_week(t_ns);
        let reference = match self.stored(b) {
            Some(v) if v.visits > 0 => v.mean,
            // First visit: deviation from the visit's running mean.
            _ if self.open_count > 0 => self.open_sum / self.open_count as f64,
            _ => value,
        };
        self.open_count = self.open_count.saturating_add(1);
        self.open_sum += value;
        self.open_abs_dev += (value - reference).abs();
    }
}

/// All three estimators for one series (see the module doc).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Baseline {
    params: Params,
    /// Observations learnt (saturating).
    learned: u32,
    /// The only estimator kept up to date (`None`: all three). A rule needs one, and the
    /// others' buffers (most of the bytes) are then never allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    only: Option<BaselineKind>,
    /// Latest event time seen (learnt or not).
    last_seen_ns: Option<i64>,
    ewma: Ewma,
    mad: MadRing,
    seasonal: Seasonal,
}

impl Baseline {
    pub fn new(cfg: &BaselineConfig) -> Self {
        Baseline {
            params: Params::from_config(cfg),
            ..Baseline::default()
        }
    }

    /// A baseline that maintains only `kind` (what a deviation rule uses).
    pub fn for_kind(cfg: &BaselineConfig, kind: BaselineKind) -> Self {
        Baseline {
            only: Some(kind),
            ..Baseline::new(cfg)
        }
    }

    fn tracks(&self, kind: BaselineKind) -> bool {
        self.only.is_none_or(|k| k == kind)
    }

    /// Expectation for a value observed at `t_ns` (BEFORE updating with it), None during warm-up.
    pub fn expect(&self, kind: BaselineKind, t_ns: i64) -> Option<Expectation> {
        let p = &self.params;
        let (expected, raw_scale) = match kind {
            BaselineKind::Ewma => {
                return EwmaCell::from_baseline(self).expect(p);
            }
            BaselineKind::MedianMad => {
                if self.learned < p.warmup_points {
                    return None;
                }
                let window = p.mad_window as usize;
                let vals = &self.mad.values[..self.mad.values.len().min(window)];
                let mut scratch: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
                let med = median(&mut scratch)?;
                for v in scratch.iter_mut() {
                    *v = (*v - med).abs();
                }
                (med, MAD_TO_SIGMA * median(&mut scratch)?)
            }
            BaselineKind::SeasonalHourOfWeek => {
                let view = self
                    .seasonal
                    .view(t_ns.div_euclid(NS_PER_HOUR), p.seasonal_alpha)?;
                let needed = (p.seasonal_warmup_weeks as u32).saturating_sub(1).max(1);
                if view.visits < needed {
                    return None;
                }
                (view.mean, MEAN_AD_TO_SIGMA * view.mad)
            }
        };
        if !expected.is_finite() {
            return None;
        }
        Some(Expectation {
            expected,
            scale: p.floor(expected, raw_scale),
        })
    }

    /// Feed one observation (event time, value). Values while an anomaly is open may be fed
    /// with `learn = false` to avoid learning the incident: then only bookkeeping (last time)
    /// changes. Non-finite values are never learnt.
    pub fn update(&mut self, t_ns: i64, value: f64, learn: bool) {
        self.last_seen_ns = Some(self.last_seen_ns.map_or(t_ns, |l| l.max(t_ns)));
        if !learn || !value.is_finite() {
            return;
        }
        self.learned = self.learned.saturating_add(1);
        let p = self.params;

        // EWMA, West/Finch, with 1/n weights while n < 1/alpha.
        self.ewma.learn(&p, self.learned, value);

        // Median/MAD ring.
        let window = p.mad_window as usize;
        let v = value as f32;
        if v.is_finite() && self.tracks(BaselineKind::MedianMad) {
            let ring = &mut self.mad;
            if ring.values.len() > window {
                ring.values.truncate(window);
                ring.values.shrink_to_fit();
            }
            if ring.values.len() < window {
                ring.values.reserve_exact(window - ring.values.len());
                ring.values.push(v);
            } else {
                let i = ring.next as usize % window;
                if let Some(slot) = ring.values.get_mut(i) {
                    *slot = v;
                }
                ring.next = ((i + 1) % window) as u32;
            }
        }

        // Seasonal profile.
        if self.tracks(BaselineKind::SeasonalHourOfWeek) {
            self.seasonal.learn(t_ns, value, p.seasonal_alpha);
        }
    }

    /// Robust z-score of `value` against `kind`: (value - expected) / scale, None in warm-up.
    pub fn zscore(&self, kind: BaselineKind, t_ns: i64, value: f64) -> Option<f64> {
        let e = self.expect(kind, t_ns)?;
        Some((value - e.expected) / e.scale)
    }

    /// Latest event time passed to [`Baseline::update`] (late points do not move it back);
    /// `i64::MIN` if there was none.
    pub fn last_seen_ns(&self) -> i64 {
        self.last_seen_ns.unwrap_or(i64::MIN)
    }

    /// True when nothing was seen for longer than `idle_after` before `now_ns` (or ever), so
    /// the caller can drop the series' state.
    pub fn is_idle(&self, now_ns: i64, idle_after: Duration) -> bool {
        let Some(last) = self.last_seen_ns else {
            return true;
        };
        let idle = i64::try_from(idle_after.as_nanos()).unwrap_or(i64::MAX);
        now_ns.saturating_sub(last) > idle
    }

    /// Observations learnt so far (saturating at `u32::MAX`).
    pub fn learned_points(&self) -> u32 {
        self.learned
    }

    /// Bytes used by this series: inline size plus allocated buffer capacity.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.mad.values.capacity() * std::mem::size_of::<f32>()
            + self.seasonal.mean.capacity() * std::mem::size_of::<f32>()
            + self.seasonal.mad.capacity() * std::mem::size_of::<f32>()
            + self.seasonal.visits.capacity()
    }
}

/// Median of `xs` (mean of the two middle values for an even length); reorders `xs`.
fn median(xs: &mut [f64]) -> Option<f64> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (lower, m, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        return Some(m);
    }
    let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((below + m) / 2.0)
}

/// Deserializes a `Vec` with exact capacity (JSON gives no length hint, so the default
/// growth would over-allocate up to 2× the documented memory).
fn exact_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut v = Vec::<T>::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;
    const HOUR: i64 = 3600 * SEC;
    const WEEK: i64 = 168 * HOUR;
    /// 2024-01-01 00:00:00 UTC, a Monday.
    const MONDAY: i64 = 1_704_067_200 * SEC;

    /// Deterministic standard-normal noise (xorshift64* + Box–Muller).
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.uniform(), self.uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn ewma(b: &Baseline, t: i64) -> Option<Expectation> {
        b.expect(BaselineKind::Ewma, t)
    }

    #[test]
    fn ewma_cell_matches_the_baseline_ewma() {
        let cfg = BaselineConfig {
            warmup_points: 5,
            ..BaselineConfig::default()
        };
        let p = Params::from_config(&cfg);
        let mut b = Baseline::for_kind(&cfg, BaselineKind::Ewma);
        let mut cell = EwmaCell::default();
        let mut noise = Noise(3);
        for i in 0..300 {
            let v = if i == 40 {
                f64::NAN
            } else {
                50.0 + noise.normal()
            };
            let learn = i % 7 != 0;
            assert_eq!(cell.expect(&p), ewma(&b, i), "point {i}");
            b.update(i, v, learn);
            cell.update(&p, v, learn);
        }
        assert_eq!(
            cell.to_baseline(&p, Some(299))
                .expect(BaselineKind::Ewma, 0),
            ewma(&b, 0)
        );
        assert_eq!(EwmaCell::from_baseline(&b), cell);
        assert_eq!(std::mem::size_of::<EwmaCell>(), 24);
    }

    #[test]
    fn hour_of_week_starts_monday_utc() {
        assert_eq!(hour_of_week(MONDAY), 0);
        assert_eq!(hour_of_week(MONDAY + HOUR - 1), 0);
        assert_eq!(
            hour_of_week(MONDAY + 5 * 24 * HOUR + 13 * HOUR),
            5 * 24 + 13
        );
        assert_eq!(hour_of_week(MONDAY - 1), 167);
        assert_eq!(hour_of_week(0), 72); // 1970-01-01 was a Thursday
        assert_eq!(hour_of_week(-1), 71);
        let ts = chrono::DateTime::parse_from_rfc3339("2025-03-16T23:30:00Z") // a Sunday
            .map(|d| d.timestamp_nanos_opt())
            .ok()
            .flatten();
        assert_eq!(ts.map(hour_of_week), Some(167));
    }

    #[test]
    fn ewma_converges_and_flags_outlier() {
        let mut b = Baseline::new(&BaselineConfig::default());
        let mut noise = Noise(42);
        for i in 0..5000 {
            b.update(i * 10 * SEC, 200.0 + 10.0 * noise.normal(), true);
        }
        let t = 5000 * 10 * SEC;
        let e = ewma(&b, t).expect("warmed up");
        assert!((e.expected - 200.0).abs() < 5.0, "{e:?}");
        assert!((e.scale - 10.0).abs() < 3.0, "{e:?}");
        let z = b.zscore(BaselineKind::Ewma, t, 260.0).expect("warmed up");
        assert!(z > 4.0, "z = {z}");
        let z = b.zscore(BaselineKind::Ewma, t, 205.0).expect("warmed up");
        assert!(z.abs() < 2.0, "z = {z}");
    }

    #[test]
    fn mad_is_robust_to_twenty_percent_outliers() {
        let mut b = Baseline::new(&BaselineConfig::default());
        let mut noise = Noise(7);
        for i in 0..300 {
            let v = if i % 5 == 0 {
                1000.0
            } else {
                50.0 + noise.normal()
            };
            b.update(i * SEC, v, true);
        }
        let e = b.expect(BaselineKind::MedianMad, 300 * SEC).expect("warm");
        assert!((e.expected - 50.0).abs() < 1.0, "{e:?}");
        // Floor is 0.05 * 50 = 2.5; the MAD itself stays near sigma = 1.
        assert!(e.scale <= 3.0, "{e:?}");
        let z = b
            .zscore(BaselineKind::MedianMad, 300 * SEC, 51.0)
            .expect("warm");
        assert!(z.abs() < 1.0, "z = {z}");
        // The EWMA, by contrast, is dragged far away by the outliers.
        let m = ewma(&b, 300 * SEC).expect("warm").expected;
        assert!(m > 150.0, "ewma mean {m}");
    }

    #[test]
    fn median_of_even_and_odd_lengths() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn mad_window_keeps_only_recent_values() {
        let cfg = BaselineConfig {
            mad_window: 10,
            warmup_points: 5,
            min_scale_fraction: 0.0,
            ..BaselineConfig::default()
        };
        let mut b = Baseline::new(&cfg);
        for i in 0..100 {
            b.update(i, 1.0, true);
        }
        for i in 100..110 {
            b.update(i, 9.0 + (i % 2) as f64, true);
        }
        let e = b.expect(BaselineKind::MedianMad, 110).expect("warm");
        assert_eq!(e.expected, 9.5);
        assert!((e.scale - 0.5 * MAD_TO_SIGMA).abs() < 1e-9, "{e:?}");
        assert_eq!(b.mad.values.len(), 10);
        assert_eq!(b.mad.values.capacity(), 10);
    }

    #[test]
    fn warm_up_returns_none() {
        let cfg = BaselineConfig::default();
        let mut b = Baseline::new(&cfg);
        for kind in [
            BaselineKind::Ewma,
            BaselineKind::MedianMad,
            BaselineKind::SeasonalHourOfWeek,
        ] {
            assert_eq!(b.expect(kind, 0), None);
            assert_eq!(b.zscore(kind, 0, 1.0), None);
        }
        for i in 0..cfg.warmup_points as i64 - 1 {
            b.update(i * SEC, 5.0, true);
        }
        assert_eq!(ewma(&b, 0), None);
        assert_eq!(b.expect(BaselineKind::MedianMad, 0), None);
        b.update(100 * SEC, 5.0, true);
        assert!(ewma(&b, 0).is_some());
        assert!(b.expect(BaselineKind::MedianMad, 0).is_some());
        // Seasonal still warming up after one hour of data.
        assert_eq!(b.expect(BaselineKind::SeasonalHourOfWeek, 200 * SEC), None);
        // learn = false points do not count toward warm-up.
        let mut c = Baseline::new(&cfg);
        for i in 0..100 {
            c.update(i * SEC, 5.0, false);
        }
        assert_eq!(ewma(&c, 0), None);
        assert_eq!(c.learned_points(), 0);
    }

    #[test]
    fn flat_series_has_floored_scale() {
        let mut b = Baseline::new(&BaselineConfig::default());
        for i in 0..100 {
            b.update(i * SEC, 10.0, true);
        }
        for kind in [BaselineKind::Ewma, BaselineKind::MedianMad] {
            let e = b.expect(kind, 100 * SEC).expect("warm");
            assert_eq!(e.expected, 10.0);
            assert!((e.scale - 0.5).abs() < 1e-9, "{kind:?} {e:?}");
        }
        let mut z = Baseline::new(&BaselineConfig::default());
        for i in 0..100 {
            z.update(i * SEC, 0.0, true);
        }
        let e = z.expect(BaselineKind::MedianMad, 0).expect("warm");
        assert_eq!(e.scale, 1e-6);
        assert!(z
            .zscore(BaselineKind::Ewma, 0, 1.0)
            .is_some_and(f64::is_finite));
    }

    /// 100 ± 30 daily sine, −40 on weekends, N(0, 2) noise.
    fn weekly(t: i64, noise: &mut Noise) -> f64 {
        let how = hour_of_week(t);
        let hour_of_day = (t.rem_euclid(24 * HOUR)) as f64 / HOUR as f64;
        let weekend = if how >= 5 * 24 { -40.0 } else { 0.0 };
        100.0
            + 30.0 * (2.0 * std::f64::consts::PI * hour_of_day / 24.0).sin()
            + weekend
            + 2.0 * noise.normal()
    }

    #[test]
    fn seasonal_learns_weekly_pattern_at_ten_second_scrapes() {
        let mut b = Baseline::new(&BaselineConfig::default());
        let mut noise = Noise(99);
        let step = 10 * SEC;
        let mut t = MONDAY;
        let mut max_z: f64 = 0.0;
        let (mut sum_z, mut n_z) = (0.0, 0u32);
        let mut none_in_week_two = 0u32;
        while t < MONDAY + 3 * WEEK {
            let v = weekly(t, &mut noise);
            let week = (t - MONDAY) / WEEK;
            let z = b.zscore(BaselineKind::SeasonalHourOfWeek, t, v);
            match week {
                0 => assert_eq!(z, None),
                1 => none_in_week_two += u32::from(z.is_none()),
                _ => {
                    let z = z.expect("trusted in the third week");
                    max_z = max_z.max(z.abs());
                    sum_z += z.abs();
                    n_z += 1;
                }
            }
            b.update(t, v, true);
            t += step;
        }
        // Default seasonal_warmup_weeks = 3: week two is still warming up.
        assert_eq!(none_in_week_two, (WEEK / step) as u32);
        assert!(max_z < 4.0, "max |z| {max_z}");
        assert!(
            sum_z / (n_z as f64) < 1.0,
            "mean |z| {}",
            sum_z / n_z as f64
        );

        // Saturday 06:00 vs Wednesday 06:00 of the next week: same time of day, weekend effect.
        let sat = b
            .expect(
                BaselineKind::SeasonalHourOfWeek,
                t + 5 * 24 * HOUR + 6 * HOUR,
            )
            .expect("trusted");
        let wed = b
            .expect(
                BaselineKind::SeasonalHourOfWeek,
                t + 2 * 24 * HOUR + 6 * HOUR,
            )
            .expect("trusted");
        assert!(
            (wed.expected - sat.expected - 40.0).abs() < 5.0,
            "{wed:?} {sat:?}"
        );
        assert!((wed.expected - 130.0).abs() < 5.0, "{wed:?}");
        // A real spike still stands out against the seasonal baseline.
        let z = b
            .zscore(BaselineKind::SeasonalHourOfWeek, t + 6 * HOUR, 200.0)
            .expect("trusted");
        assert!(z > 6.0, "z {z}");
        // ...while a normal Wednesday-morning value is far off for the flat EWMA, which
        // has just tracked a Sunday night, but unremarkable for the seasonal profile.
        let wed_t = t + 2 * 24 * HOUR + 6 * HOUR;
        let ewma_z = b.zscore(BaselineKind::Ewma, wed_t, 130.0).expect("warm");
        assert!(ewma_z > 4.0, "ewma z {ewma_z}");
        let seasonal_z = b
            .zscore(BaselineKind::SeasonalHourOfWeek, wed_t, 130.0)
            .expect("trusted");
        assert!(seasonal_z.abs() < 1.0, "seasonal z {seasonal_z}");
    }

    #[test]
    fn seasonal_visit_counting_ignores_scrape_rate_and_late_points() {
        let cfg = BaselineConfig {
            seasonal_warmup_weeks: 2,
            ..BaselineConfig::default()
        };
        let mut b = Baseline::new(&cfg);
        // One point per hour for one week (sparse scrapes) is enough for warm-up 2.
        for h in 0..168 {
            b.update(MONDAY + h * HOUR, 10.0 + h as f64, true);
        }
        let e = b
            .expect(BaselineKind::SeasonalHourOfWeek, MONDAY + WEEK + 3 * HOUR)
            .expect("one completed visit + this week");
        assert_eq!(e.expected, 13.0);
        // The last visit (Sunday 23:00) is still open but complete: folded virtually.
        let e = b
            .expect(BaselineKind::SeasonalHourOfWeek, MONDAY + 2 * WEEK - HOUR)
            .expect("virtual fold");
        assert_eq!(e.expected, 177.0);
        // But not while that same hour is still in progress.
        assert_eq!(
            b.expect(BaselineKind::SeasonalHourOfWeek, MONDAY + WEEK - 1),
            None
        );
        // A late point for an earlier hour is not learnt.
        let before = b.seasonal.clone();
        b.update(MONDAY + 5 * HOUR, 1e6, true);
        assert_eq!(before.mean, b.seasonal.mean);
        assert_eq!(before.open_sum, b.seasonal.open_sum);
        assert_eq!(b.last_seen_ns(), MONDAY + 167 * HOUR);
    }

    #[test]
    fn learn_false_does_not_move_the_baseline() {
        let mut b = Baseline::new(&BaselineConfig {
            seasonal_warmup_weeks: 2,
            ..BaselineConfig::default()
        });
        let mut noise = Noise(5);
        let mut t = MONDAY;
        while t < MONDAY + WEEK + 2 * HOUR {
            b.update(t, weekly(t, &mut noise), true);
            t += 60 * SEC;
        }
        let probes = [t, t + HOUR, t + 3 * HOUR, t + 30 * HOUR];
        let kinds = [
            BaselineKind::Ewma,
            BaselineKind::MedianMad,
            BaselineKind::SeasonalHourOfWeek,
        ];
        let snapshot = |b: &Baseline| -> Vec<Option<Expectation>> {
            kinds
                .iter()
                .flat_map(|&k| probes.iter().map(move |&p| (k, p)))
                .map(|(k, p)| b.expect(k, p))
                .collect()
        };
        let before = snapshot(&b);
        assert!(before.iter().all(Option::is_some), "{before:?}");
        let learned = b.learned_points();
        // A two-hour incident at 10x the normal level, not learnt.
        for i in 0..720 {
            b.update(t + i * 10 * SEC, 1000.0, false);
        }
        assert_eq!(snapshot(&b), before);
        assert_eq!(b.learned_points(), learned);
        assert_eq!(b.last_seen_ns(), t + 719 * 10 * SEC);
    }

    #[test]
    fn serde_round_trip_preserves_expectations() {
        let cfg = BaselineConfig {
            seasonal_warmup_weeks: 2,
            ..BaselineConfig::default()
        };
        let mut b = Baseline::new(&cfg);
        let mut noise = Noise(11);
        let mut t = MONDAY;
        while t < MONDAY + WEEK + 5 * HOUR {
            b.update(t, weekly(t, &mut noise), true);
            t += 30 * SEC;
        }
        let json = serde_json::to_string(&b).expect("serialize");
        let r: Baseline = serde_json::from_str(&json).expect("deserialize");
        for kind in [
            BaselineKind::Ewma,
            BaselineKind::MedianMad,
            BaselineKind::SeasonalHourOfWeek,
        ] {
            for probe in [t, t + 7 * HOUR, t + 50 * HOUR] {
                let e = b.expect(kind, probe);
                assert!(e.is_some(), "{kind:?}");
                assert_eq!(r.expect(kind, probe), e, "{kind:?}");
            }
        }
        assert_eq!(r.last_seen_ns(), b.last_seen_ns());
        assert_eq!(r.memory_bytes(), b.memory_bytes());
        // Updating both identically keeps them identical.
        let (mut b2, mut r2) = (b.clone(), r);
        for i in 0..500 {
            let v = weekly(t + i * 30 * SEC, &mut noise);
            b2.update(t + i * 30 * SEC, v, true);
            r2.update(t + i * 30 * SEC, v, true);
        }
        let probe = t + 500 * 30 * SEC;
        assert_eq!(
            b2.expect(BaselineKind::MedianMad, probe),
            r2.expect(BaselineKind::MedianMad, probe)
        );
        assert_eq!(
            b2.expect(BaselineKind::SeasonalHourOfWeek, probe),
            r2.expect(BaselineKind::SeasonalHourOfWeek, probe)
        );
        // An empty or damaged checkpoint is tolerated.
        let empty: Baseline = serde_json::from_str("{}").expect("defaults");
        assert_eq!(empty.expect(BaselineKind::SeasonalHourOfWeek, 0), None);
        let mut bad: Baseline =
            serde_json::from_str(r#"{"seasonal":{"mean":[1.0],"mad":[],"visits":[9]}}"#)
                .expect("lenient");
        assert_eq!(bad.expect(BaselineKind::SeasonalHourOfWeek, 0), None);
        bad.update(0, 1.0, true);
        assert!(bad.seasonal.allocated());
    }

    #[test]
    fn idle_expiry() {
        let mut b = Baseline::new(&BaselineConfig::default());
        assert!(b.is_idle(0, Duration::from_secs(60)));
        assert_eq!(b.last_seen_ns(), i64::MIN);
        b.update(100 * SEC, 1.0, false);
        b.update(50 * SEC, 1.0, true); // late point does not move last seen back
        assert_eq!(b.last_seen_ns(), 100 * SEC);
        assert!(!b.is_idle(160 * SEC, Duration::from_secs(60)));
        assert!(b.is_idle(161 * SEC, Duration::from_secs(60)));
        assert!(!b.is_idle(i64::MAX, Duration::MAX));
    }

    #[test]
    fn non_finite_values_are_not_learnt() {
        let mut b = Baseline::new(&BaselineConfig {
            warmup_points: 1,
            ..BaselineConfig::default()
        });
        b.update(0, f64::NAN, true);
        b.update(1, f64::INFINITY, true);
        assert_eq!(ewma(&b, 2), None);
        b.update(2, 3.0, true);
        assert_eq!(ewma(&b, 3).map(|e| e.expected), Some(3.0));
        assert!(serde_json::to_string(&b).is_ok());
    }

    #[test]
    fn config_defaults_validation_and_parsing() {
        let d = BaselineConfig::default();
        assert_eq!(d.validate(), Ok(()));
        let cases: [(BaselineConfig, &str); 8] = [
            (
                BaselineConfig {
                    ewma_alpha: 0.0,
                    ..d.clone()
                },
                "baseline.ewma_alpha",
            ),
            (
                BaselineConfig {
                    ewma_alpha: f64::NAN,
                    ..d.clone()
                },
                "baseline.ewma_alpha",
            ),
            (
                BaselineConfig {
                    warmup_points: 0,
                    ..d.clone()
                },
                "baseline.warmup_points",
            ),
            (
                BaselineConfig {
                    mad_window: 257,
                    ..d.clone()
                },
                "baseline.mad_window",
            ),
            (
                BaselineConfig {
                    seasonal_alpha: 1.5,
                    ..d.clone()
                },
                "baseline.seasonal_alpha",
            ),
            (
                BaselineConfig {
                    seasonal_warmup_weeks: 0,
                    ..d.clone()
                },
                "baseline.seasonal_warmup_weeks",
            ),
            (
                BaselineConfig {
                    min_scale_fraction: -0.1,
                    ..d.clone()
                },
                "baseline.min_scale_fraction",
            ),
            (
                BaselineConfig {
                    min_scale_abs: 0.0,
                    ..d.clone()
                },
                "baseline.min_scale_abs",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
        assert_eq!(
            BaselineConfig {
                ewma_alpha: 0.0,
                ..d.clone()
            }
            .validate(),
            Err("baseline.ewma_alpha must be in (0, 1], got 0".into())
        );
        let parsed: BaselineConfig =
            serde_json::from_str(r#"{"ewma_alpha": 0.1}"#).expect("partial config");
        assert_eq!(parsed.ewma_alpha, 0.1);
        assert_eq!(parsed.mad_window, 60);
        assert!(serde_json::from_str::<BaselineConfig>(r#"{"ewma_alfa": 0.1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&BaselineKind::SeasonalHourOfWeek).ok(),
            Some("\"seasonal_hour_of_week\"".to_string())
        );
        // Out-of-range values are clamped rather than breaking the arithmetic.
        let b = Baseline::new(&BaselineConfig {
            mad_window: 100_000,
            ewma_alpha: -1.0,
            ..d
        });
        assert_eq!(b.params.mad_window as usize, MAX_MAD_WINDOW);
        assert_eq!(b.params.ewma_alpha, 0.05);
    }

    #[test]
    fn memory_stays_within_documented_budget() {
        use std::mem::size_of;
        assert_eq!(size_of::<Params>(), 40);
        assert_eq!(size_of::<Ewma>(), 16);
        assert!(size_of::<MadRing>() <= 32);
        assert!(size_of::<Seasonal>() <= 104);
        assert!(
            size_of::<Baseline>() <= INLINE_BYTES_BUDGET,
            "{}",
            size_of::<Baseline>()
        );

        let d = BaselineConfig::default();
        let full = |cfg: &BaselineConfig| {
            let mut b = Baseline::new(cfg);
            let mut t = MONDAY;
            while t < MONDAY + WEEK + HOUR {
                b.update(t, (t / SEC % 97) as f64, true);
                t += 10 * SEC;
            }
            b
        };
        let b = full(&d);
        let default_total = INLINE_BYTES_BUDGET + 4 * d.mad_window + SEASONAL_HEAP_BYTES;
        assert_eq!(default_total, 1968);
        assert!(default_total <= 2048);
        assert!(b.memory_bytes() <= default_total, "{}", b.memory_bytes());

        let max = BaselineConfig {
            mad_window: MAX_MAD_WINDOW,
            ..d
        };
        let b = full(&max);
        let max_total = INLINE_BYTES_BUDGET + 4 * MAX_MAD_WINDOW + SEASONAL_HEAP_BYTES;
        assert_eq!(max_total, 2752);
        assert!(b.memory_bytes() <= max_total, "{}", b.memory_bytes());
        // Also after a checkpoint round trip (no over-allocation from JSON decoding).
        let r: Baseline =
            serde_json::from_str(&serde_json::to_string(&b).expect("ser")).expect("de");
        assert!(r.memory_bytes() <= max_total, "{}", r.memory_bytes());
    }

    #[test]
    fn a_single_kind_baseline_allocates_only_what_it_uses() {
        let cfg = BaselineConfig::default();
        let mut ewma = Baseline::for_kind(&cfg, BaselineKind::Ewma);
        let mut all = Baseline::new(&cfg);
        for i in 0..500 {
            let t = i * 10_000_000_000;
            ewma.update(t, 50.0 + (i % 3) as f64, true);
            all.update(t, 50.0 + (i % 3) as f64, true);
        }
        assert_eq!(
            ewma.expect(BaselineKind::Ewma, 0),
            all.expect(BaselineKind::Ewma, 0)
        );
        assert!(
            ewma.memory_bytes() <= INLINE_BYTES_BUDGET,
            "{}",
            ewma.memory_bytes()
        );
        assert!(all.memory_bytes() > ewma.memory_bytes() + SEASONAL_HEAP_BYTES / 2);
    }
}
