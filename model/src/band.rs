//! Where the deviation rules keep the baseline they judge against: per judged series
//! and minute, the expected value and the band `expected ± deviation × scale` outside
//! which a point breaches, as three gauge series that carry the judged series'
//! attributes plus [`OF`] (its id) and [`RULE`]. The operators write them; the API's
//! `/api/v1/baselines` reads them.

/// The expected value, the band's low and high edge.
pub const METRICS: [&str; 3] = [
    "sqlvigil.baseline.expected",
    "sqlvigil.baseline.low",
    "sqlvigil.baseline.high",
];
/// The attribute naming the judged series (16 hex digits, as the API lists it).
pub const OF: &str = "sqlvigil.series_id";
/// The attribute naming the rule.
pub const RULE: &str = "sqlvigil.rule";
