//! The anomaly lifecycle: judgements of one series turned into open, update and resolve
//! events, with `for`, `resolve_after` (hysteresis) and the re-arm delay after a resolve
//! (`cooldown`), which doubles each time the series reopens soon after re-arming, up to
//! `cooldown_max`: a flapping series quietens, a series that stays calm starts afresh.

use super::compile::{CompiledRule, Judgement};
use super::state::Episode;
use super::{DEFAULT_COOLDOWN, DEFAULT_COOLDOWN_MAX, DEFAULT_RESOLVE_AFTER, EVIDENCE_POINTS};
use sqlvigil_model::{
    ns_to_datetime, Anomaly, AnomalyEvent, AnomalyEventKind, AnomalyState, EvidencePoint, SeriesKey,
};

/// Whether an episode is open (an anomaly on the series).
pub(crate) fn is_open(ep: &Option<Box<Episode>>) -> bool {
    ep.as_ref().is_some_and(|e| e.open.is_some())
}

/// When a series may open again after a resolve, and how often it has flapped.
pub(crate) struct Rearm<'a> {
    /// Event time before which it may not reopen.
    pub until: &'a mut i64,
    /// Reopenings in a row soon after re-arming: the delay is `cooldown × 2^level`.
    pub level: &'a mut u8,
}

/// The re-arm delay of `rule` at flap `level`, in ns.
fn rearm_delay(rule: &CompiledRule, level: u8) -> i64 {
    let base = rule.config.cooldown.unwrap_or(DEFAULT_COOLDOWN).as_nanos() as i64;
    let max = rule
        .config
        .cooldown_max
        .unwrap_or(DEFAULT_COOLDOWN_MAX)
        .as_nanos() as i64;
    base.saturating_mul(1i64 << level.min(32))
        .min(max.max(base))
}

/// The lifecycle: advance one series by one judged point; returns the event it caused.
/// The episode is allocated when a breach starts and dropped when nothing is left in it.
pub(crate) fn step(
    rule: &CompiledRule,
    ep: &mut Option<Box<Episode>>,
    rearm: Rearm<'_>,
    key: &SeriesKey,
    t: i64,
    v: f64,
    j: Judgement,
) -> Option<AnomalyEvent> {
    if !j.breach {
        // Calm with no episode: nothing to clear, nothing open (the common case).
        let e = ep.as_mut()?;
        let event = calm(rule, e, rearm, t);
        if e.is_empty() {
            *ep = None;
        }
        return event;
    }
    let e = ep.get_or_insert_with(Box::default);
    let event = breach(rule, e, *rearm.until, key, t, v, j);
    if event
        .as_ref()
        .is_some_and(|ev| ev.event == AnomalyEventKind::Open)
    {
        // Reopened within one re-arm delay of re-arming: flapping, so the next delay
        // doubles; after a longer calm it starts again from `cooldown`.
        let flapping = *rearm.until > 0 && t - *rearm.until < rearm_delay(rule, *rearm.level);
        *rearm.level = if flapping {
            rearm.level.saturating_add(1).min(32)
        } else {
            0
        };
    }
    event
}

/// A calm point: the breach (if any) ends; an open anomaly resolves after `resolve_after`.
fn calm(rule: &CompiledRule, st: &mut Episode, rearm: Rearm<'_>, t: i64) -> Option<AnomalyEvent> {
    st.breach_since = None;
    st.peak = None;
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
    let time = ns_to_datetime(t);
    let mut anomaly = open.clone();
    st.open = None;
    st.clear_since = None;
    *rearm.until = t.saturating_add(rearm_delay(rule, *rearm.level));
    anomaly.state = AnomalyState::Resolved;
    anomaly.updated_at = time;
    anomaly.resolved_at = Some(time);
    Some(AnomalyEvent {
        event: AnomalyEventKind::Resolve,
        anomaly,
    })
}

/// A breaching point: held for `for` (and past the cooldown) it opens an anomaly; a
/// worse score updates the open one.
fn breach(
    rule: &CompiledRule,
    st: &mut Episode,
    cooldown_until: i64,
    key: &SeriesKey,
    t: i64,
    v: f64,
    j: Judgement,
) -> Option<AnomalyEvent> {
    let time = ns_to_datetime(t);
    st.clear_since = None;
    let since = *st.breach_since.get_or_insert(t);
    st.evidence.push_back(EvidencePoint { time, value: v });
    if st.evidence.len() > EVIDENCE_POINTS {
        st.evidence.pop_front();
    }
    if st.peak.is_none_or(|(s, _)| j.score > s) {
        st.peak = Some((j.score, v));
    }
    if let Some(a) = st.open.as_mut() {
        a.updated_at = time;
        if j.score > a.score {
            (a.score, a.observed) = (j.score, v);
            a.evidence = st.evidence.iter().cloned().collect();
            return Some(AnomalyEvent {
                event: AnomalyEventKind::Update,
                anomaly: a.clone(),
            });
        }
        return None;
    }
    if t - since < rule.config.for_.as_nanos() as i64 || t < cooldown_until {
        return None;
    }
    let (score, observed) = st.peak.unwrap_or((j.score, v));
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
        expected: j.expected,
        score,
        evidence: st.evidence.iter().cloned().collect(),
        folded: 0,
        folded_into: None,
        handling: None,
    };
    st.open = Some(anomaly.clone());
    Some(AnomalyEvent {
        event: AnomalyEventKind::Open,
        anomaly,
    })
}
