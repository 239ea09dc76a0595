//! Per (rule, series) state, stored column-wise per rule and indexed by the series' slot
//! in its metric group's [`SeriesRegistry`](crate::series::SeriesRegistry).
//!
//! The hot scalars every point touches (last judged time, cooldown, a pointer to the
//! episode) are plain `Vec`s; the rare, heavy parts — the breach/open `Episode` with
//! its evidence and anomaly, a median/MAD or seasonal [`Baseline`], rate-of-change
//! history, the packed key of absence rules — exist only for the slots and rule kinds
//! that need them. [`SeriesState`] is the checkpoint (JSON) form, unchanged from when
//! the state was one struct per (rule, series) in a hash map, so old checkpoints restore.
//!
//! **Bytes per (rule, series)** on a 64-bit target, on top of the registry's 28–48 B
//! per series and metric group (see `SeriesRegistry`):
//!
//! | rule kind | columns | heap |
//! |---|---|---|
//! | every kind | 25 B (last seen, re-arm time and flap level, episode pointer) | episode only while breaching or open |
//! | threshold | – | – |
//! | deviation, EWMA | 24 B ([`EwmaCell`]) | – |
//! | deviation, median/MAD or seasonal | 8 B | [`Baseline::memory_bytes`] ≤ 1968 B (default config) |
//! | rate of change | 32 B | 16 B × points within `over` |
//! | absence | 16 B | the packed key (~20 B + the key's text) |
//!
//! Columns grow by doubling, so up to 2× capacity may be reserved (untouched pages cost
//! no RSS).

use super::EVIDENCE_POINTS;
use crate::baseline::{Baseline, EwmaCell, Params};
use crate::series::CompactKey;
use serde::{Deserialize, Serialize};
use sqlvigil_model::{Anomaly, EvidencePoint, SeriesKey};
use std::collections::VecDeque;

/// `last_seen` value of a slot the rule holds no state for.
pub(crate) const NO_STATE: i64 = i64::MIN;
/// `last_seen` of a state restored without a last-seen time: older than any point.
const NEVER_SEEN: i64 = i64::MIN + 1;

/// Per rule and series, as checkpointed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesState {
    /// The series (kept for rules that fire without a point: absence).
    pub key: Option<SeriesKey>,
    /// Event time of the last point judged (points at or before it are replays).
    pub last_seen: Option<i64>,
    breach_since: Option<i64>,
    clear_since: Option<i64>,
    /// Best (score, value) while breaching.
    peak: Option<(f64, f64)>,
    open: Option<Anomaly>,
    evidence: VecDeque<EvidencePoint>,
    cooldown_until: i64,
    /// Reopenings in a row soon after re-arming (the re-arm delay doubles per level).
    #[serde(default)]
    rearm_level: u8,
    /// Deviation rules.
    pub baseline: Option<Baseline>,
    /// Rate-of-change rules: (time, value) over the comparison span.
    pub history: VecDeque<(i64, f64)>,
}

/// A breach in progress and/or an open anomaly: allocated when a series starts to
/// breach, dropped once it is calm and nothing is open (most series never have one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Episode {
    pub breach_since: Option<i64>,
    pub clear_since: Option<i64>,
    /// Best (score, value) while breaching.
    pub peak: Option<(f64, f64)>,
    pub open: Option<Anomaly>,
    pub evidence: VecDeque<EvidencePoint>,
}

impl Episode {
    /// Nothing left to remember: the box can go.
    pub fn is_empty(&self) -> bool {
        self.breach_since.is_none()
            && self.clear_since.is_none()
            && self.peak.is_none()
            && self.open.is_none()
            && self.evidence.is_empty()
    }

    fn bounded(mut self) -> Self {
        if self.evidence.len() > EVIDENCE_POINTS {
            let extra = self.evidence.len() - EVIDENCE_POINTS;
            self.evidence.drain(..extra);
        }
        self
    }
}

/// The kind-specific column of a rule.
#[derive(Debug)]
pub(crate) enum KindColumn {
    Threshold,
    /// Deviation rules on the EWMA baseline: the estimator inline.
    Ewma(Vec<EwmaCell>),
    /// Deviation rules on median/MAD or seasonal baselines (kilobytes each): boxed.
    Baseline(Vec<Option<Box<Baseline>>>),
    /// Rate-of-change rules: (time, value) over the comparison span.
    History(Vec<VecDeque<(i64, f64)>>),
    /// Absence rules: the series' key, to name it when it falls silent.
    Absence(Vec<Option<CompactKey>>),
}

/// All (rule, series) states of one rule, indexed by slot.
#[derive(Debug)]
pub(crate) struct RuleColumns {
    /// Event time of the last judged point; [`NO_STATE`] when the rule has no state.
    pub last_seen: Vec<i64>,
    pub cooldown_until: Vec<i64>,
    pub rearm_level: Vec<u8>,
    pub episode: Vec<Option<Box<Episode>>>,
    pub kind: KindColumn,
}

impl RuleColumns {
    pub fn new(kind: KindColumn) -> Self {
        RuleColumns {
            last_seen: Vec::new(),
            cooldown_until: Vec::new(),
            rearm_level: Vec::new(),
            episode: Vec::new(),
            kind,
        }
    }

    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    /// Grows every column to `slots` entries (new slots hold no state).
    pub fn resize(&mut self, slots: usize) {
        if slots <= self.len() {
            return;
        }
        self.last_seen.resize(slots, NO_STATE);
        self.cooldown_until.resize(slots, 0);
        self.rearm_level.resize(slots, 0);
        self.episode.resize_with(slots, || None);
        match &mut self.kind {
            KindColumn::Threshold => {}
            KindColumn::Ewma(c) => c.resize(slots, EwmaCell::default()),
            KindColumn::Baseline(c) => c.resize_with(slots, || None),
            KindColumn::History(c) => c.resize_with(slots, VecDeque::new),
            KindColumn::Absence(c) => c.resize_with(slots, || None),
        }
    }

    pub fn has(&self, slot: usize) -> bool {
        self.last_seen.get(slot).is_some_and(|t| *t != NO_STATE)
    }

    pub fn is_open(&self, slot: usize) -> bool {
        self.episode
            .get(slot)
            .is_some_and(|e| e.as_ref().is_some_and(|e| e.open.is_some()))
    }

    /// The last judged time as the lifecycle sees it (None: never judged).
    pub fn last_seen_opt(&self, slot: usize) -> Option<i64> {
        self.last_seen
            .get(slot)
            .copied()
            .filter(|t| *t != NO_STATE && *t != NEVER_SEEN)
    }

    /// Drops the rule's state for `slot` (its heavy parts are freed).
    pub fn clear(&mut self, slot: usize) {
        if slot >= self.len() {
            return;
        }
        self.last_seen[slot] = NO_STATE;
        self.cooldown_until[slot] = 0;
        self.rearm_level[slot] = 0;
        self.episode[slot] = None;
        match &mut self.kind {
            KindColumn::Threshold => {}
            KindColumn::Ewma(c) => c[slot] = EwmaCell::default(),
            KindColumn::Baseline(c) => c[slot] = None,
            KindColumn::History(c) => c[slot] = VecDeque::new(),
            KindColumn::Absence(c) => c[slot] = None,
        }
    }

    /// Number of series the rule holds state for.
    pub fn count(&self) -> usize {
        self.last_seen.iter().filter(|t| **t != NO_STATE).count()
    }

    /// The checkpoint form of `slot`'s state (the slot must hold state).
    pub fn to_wire(&self, slot: usize, params: &Params) -> SeriesState {
        let last_seen = self.last_seen_opt(slot);
        let ep = self.episode[slot].as_deref();
        let (key, baseline, history) = match &self.kind {
            KindColumn::Threshold => (None, None, VecDeque::new()),
            KindColumn::Ewma(c) => (
                None,
                Some(c[slot].to_baseline(params, last_seen)),
                VecDeque::new(),
            ),
            KindColumn::Baseline(c) => (None, c[slot].as_deref().cloned(), VecDeque::new()),
            KindColumn::History(c) => (None, None, c[slot].clone()),
            KindColumn::Absence(c) => {
                (c[slot].as_ref().map(CompactKey::key), None, VecDeque::new())
            }
        };
        SeriesState {
            key,
            last_seen,
            breach_since: ep.and_then(|e| e.breach_since),
            clear_since: ep.and_then(|e| e.clear_since),
            peak: ep.and_then(|e| e.peak),
            open: ep.and_then(|e| e.open.clone()),
            evidence: ep.map(|e| e.evidence.clone()).unwrap_or_default(),
            cooldown_until: self.cooldown_until[slot],
            rearm_level: self.rearm_level[slot],
            baseline,
            history,
        }
    }

    /// Loads a checkpointed state into `slot` (columns already sized).
    pub fn load(&mut self, slot: usize, s: SeriesState) {
        if slot >= self.len() {
            return;
        }
        self.last_seen[slot] = s.last_seen.unwrap_or(NEVER_SEEN).max(NEVER_SEEN);
        self.cooldown_until[slot] = s.cooldown_until;
        self.rearm_level[slot] = s.rearm_level;
        let ep = Episode {
            breach_since: s.breach_since,
            clear_since: s.clear_since,
            peak: s.peak,
            open: s.open,
            evidence: s.evidence,
        }
        .bounded();
        self.episode[slot] = (!ep.is_empty()).then(|| Box::new(ep));
        match &mut self.kind {
            KindColumn::Threshold => {}
            KindColumn::Ewma(c) => {
                c[slot] = s
                    .baseline
                    .as_ref()
                    .map(EwmaCell::from_baseline)
                    .unwrap_or_default();
            }
            KindColumn::Baseline(c) => c[slot] = s.baseline.map(Box::new),
            KindColumn::History(c) => c[slot] = s.history,
            KindColumn::Absence(c) => c[slot] = s.key.as_ref().map(CompactKey::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Keeps the table in the module doc honest.
    #[test]
    fn column_bytes_per_series_match_the_documented_table() {
        assert_eq!(
            size_of::<i64>() * 2 + size_of::<u8>() + size_of::<Option<Box<Episode>>>(),
            25
        );
        assert_eq!(size_of::<EwmaCell>(), 24);
        assert_eq!(size_of::<Option<Box<Baseline>>>(), 8);
        assert_eq!(size_of::<VecDeque<(i64, f64)>>(), 32);
        assert_eq!(size_of::<Option<CompactKey>>(), 16);
    }

    #[test]
    fn a_calm_state_has_no_episode_and_clearing_frees_everything() {
        let mut c = RuleColumns::new(KindColumn::History(Vec::new()));
        c.resize(3);
        assert_eq!(c.count(), 0);
        let mut s = SeriesState {
            last_seen: Some(5),
            history: VecDeque::from([(1, 2.0)]),
            ..SeriesState::default()
        };
        c.load(1, s.clone());
        assert!(c.has(1) && c.episode[1].is_none());
        s.breach_since = Some(4);
        c.load(2, s);
        assert!(c.episode[2].is_some());
        assert_eq!(c.to_wire(2, &Params::default()).breach_since, Some(4));
        c.clear(2);
        assert!(!c.has(2) && c.episode[2].is_none());
        assert_eq!(c.count(), 1);
    }
}
