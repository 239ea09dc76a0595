//! Storm control: one noisy rule cannot flood the ledger, the alerts or the analytics.
//!
//! Per rule and instance, at most `max_opens` anomalies open within `per` (event time).
//! Beyond that, each further anomaly is *folded*: it still tracks its series' episode
//! (so it resolves when the series calms down), but it is never published; one storm
//! anomaly per rule and instance stands for all of them, with their count in `folded`.
//! The storm resolves when the last anomaly folded into it resolves.
//!
//! Rules and instances live in one partition (records are keyed by instance), so the
//! limit is exact whatever the number of partitions.

use super::compile::CompiledRule;
use super::state::Episode;
use serde::{Deserialize, Serialize};
use sqlvigil_core::Stats;
use sqlvigil_model::{
    ns_to_datetime, Anomaly, AnomalyEvent, AnomalyEventKind, AnomalyState, SeriesKey,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The attribute that marks a storm anomaly's series.
pub const STORM_ATTRIBUTE: &str = "sqlvigil.storm";

/// `operators.storm` and a rule's `storm`: the open-rate limit per rule and instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormConfig {
    /// Anomalies of one rule on one instance that may open within `per`; more are folded
    /// into one storm anomaly. 0: no limit.
    pub max_opens: u32,
    #[serde(with = "sqlvigil_model::duration")]
    pub per: Duration,
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            max_opens: 10,
            per: Duration::from_secs(60),
        }
    }
}

impl StormConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_opens > 0 && self.per.is_zero() {
            return Err("storm.per must be greater than 0 when storm.max_opens is set".into());
        }
        Ok(())
    }
}

/// One rule's storm state on one instance (checkpointed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Storm {
    /// Event times of the opens let through within `per`, oldest first.
    opens: VecDeque<i64>,
    /// The storm anomaly, while open.
    anomaly: Option<Anomaly>,
    /// Anomalies folded into it that are still open.
    folded_open: u64,
    /// Folded since the last update event was published.
    #[serde(skip)]
    dirty: bool,
}

/// Every rule's storms, keyed by rule index and instance.
#[derive(Debug)]
pub(crate) struct Storms {
    by: HashMap<(usize, Arc<str>), Storm>,
    /// Opens, resolves and folds are counted here, as they are published.
    stats: Arc<Stats>,
}

/// The checkpoint form: (rule name, instance, state).
pub(crate) type StormWire = (String, String, Storm);

impl Storms {
    pub fn new(stats: Arc<Stats>) -> Self {
        Storms {
            by: HashMap::new(),
            stats,
        }
    }

    /// Pass an event of rule `r`'s lifecycle on to `out` through storm control: count it,
    /// or fold it (marking the series' open anomaly in `ep`), or drop it (events of
    /// folded anomalies).
    pub fn emit(
        &mut self,
        r: usize,
        rule: &CompiledRule,
        limit: &StormConfig,
        ep: &mut Option<Box<Episode>>,
        ev: AnomalyEvent,
        out: &mut Vec<AnomalyEvent>,
    ) {
        let t = ev.anomaly.updated_at.timestamp_nanos_opt().unwrap_or(0);
        if ev.anomaly.folded_into.is_some() {
            if ev.event == AnomalyEventKind::Resolve {
                self.release(r, &ev.anomaly.series.instance, t, out);
            }
            return;
        }
        let stats = &*self.stats;
        if ev.event != AnomalyEventKind::Open || limit.max_opens == 0 {
            count(stats, &ev);
            out.push(ev);
            return;
        }
        let storm = self
            .by
            .entry((r, ev.anomaly.series.instance.clone()))
            .or_default();
        let horizon = t.saturating_sub(limit.per.as_nanos() as i64);
        while storm.opens.front().is_some_and(|o| *o < horizon) {
            storm.opens.pop_front();
        }
        if storm.opens.len() < limit.max_opens as usize {
            storm.opens.push_back(t);
            count(stats, &ev);
            out.push(ev);
            return;
        }
        // Past the limit: fold it.
        Stats::add(&stats.anomalies_folded, 1);
        let storm_anomaly = storm.anomaly.get_or_insert_with(|| {
            let a = open_storm(rule, limit, &ev.anomaly, t);
            let opened = AnomalyEvent {
                event: AnomalyEventKind::Open,
                anomaly: a.clone(),
            };
            count(stats, &opened);
            out.push(opened);
            a
        });
        storm_anomaly.folded += 1;
        storm_anomaly.observed = storm_anomaly.folded as f64;
        storm_anomaly.score = storm_anomaly.folded as f64 / limit.max_opens as f64;
        storm_anomaly.updated_at = ns_to_datetime(t);
        storm.folded_open += 1;
        storm.dirty = true;
        if let Some(open) = ep.as_mut().and_then(|e| e.open.as_mut()) {
            open.folded_into = Some(storm_anomaly.id.clone());
        }
    }

    /// A folded anomaly resolved: the storm resolves with the last of them.
    fn release(&mut self, r: usize, instance: &Arc<str>, t: i64, out: &mut Vec<AnomalyEvent>) {
        let Some(storm) = self.by.get_mut(&(r, instance.clone())) else {
            return;
        };
        storm.folded_open = storm.folded_open.saturating_sub(1);
        if storm.folded_open > 0 {
            return;
        }
        if let Some(mut a) = storm.anomaly.take() {
            let time = ns_to_datetime(t);
            a.state = AnomalyState::Resolved;
            a.updated_at = time;
            a.resolved_at = Some(time);
            storm.dirty = false;
            let ev = AnomalyEvent {
                event: AnomalyEventKind::Resolve,
                anomaly: a,
            };
            count(&self.stats, &ev);
            out.push(ev);
        }
    }

    /// One update per storm that folded anomalies since the last call (not one per fold).
    pub fn flush_updates(&mut self, out: &mut Vec<AnomalyEvent>) {
        for storm in self.by.values_mut().filter(|s| s.dirty) {
            storm.dirty = false;
            if let Some(a) = &storm.anomaly {
                out.push(AnomalyEvent {
                    event: AnomalyEventKind::Update,
                    anomaly: a.clone(),
                });
            }
        }
    }

    /// Forget storms with nothing open and no open within `per` of `now`.
    pub fn expire(&mut self, now: i64, per: Duration) {
        let horizon = now.saturating_sub(per.as_nanos() as i64);
        self.by.retain(|_, s| {
            s.anomaly.is_some()
                || s.folded_open > 0
                || s.opens.back().is_some_and(|o| *o >= horizon)
        });
    }

    pub fn to_wire(&self, rules: &[CompiledRule]) -> Vec<StormWire> {
        self.by
            .iter()
            .map(|((r, instance), s)| {
                (
                    rules[*r].config.name.clone(),
                    instance.to_string(),
                    s.clone(),
                )
            })
            .collect()
    }

    pub fn load(&mut self, rules: &[CompiledRule], wire: Vec<StormWire>) {
        for (name, instance, storm) in wire {
            if let Some(r) = rules.iter().position(|rule| rule.config.name == name) {
                self.by.insert((r, Arc::from(instance)), storm);
            }
        }
    }
}

/// The storm anomaly of `rule` on the instance of `first` (the first anomaly folded).
fn open_storm(rule: &CompiledRule, limit: &StormConfig, first: &Anomaly, t: i64) -> Anomaly {
    let s = &first.series;
    let attributes = [(STORM_ATTRIBUTE.to_string(), "true".to_string())].into();
    let key = SeriesKey::from_parts(
        s.instance.clone(),
        s.host.clone(),
        "",
        s.metric.clone(),
        attributes,
    );
    let fingerprint = Anomaly::fingerprint_for(&rule.config.name, &key);
    let time = ns_to_datetime(t);
    Anomaly {
        id: format!("{fingerprint}-{t}"),
        fingerprint,
        rule: rule.config.name.clone(),
        condition: format!(
            "storm: more than {} anomalies of `{}` on {} within {}",
            limit.max_opens,
            rule.config.name,
            s.instance,
            humantime::format_duration(limit.per)
        ),
        series_id: key.id_hex(),
        series: key,
        severity: rule.config.severity,
        state: AnomalyState::Open,
        opened_at: time,
        updated_at: time,
        resolved_at: None,
        observed: 0.0,
        expected: Some(limit.max_opens as f64),
        score: 0.0,
        evidence: Vec::new(),
        folded: 0,
        folded_into: None,
        handling: None,
    }
}

fn count(stats: &Stats, ev: &AnomalyEvent) {
    match ev.event {
        AnomalyEventKind::Open => Stats::add(&stats.anomalies_opened, 1),
        AnomalyEventKind::Resolve => Stats::add(&stats.anomalies_resolved, 1),
        AnomalyEventKind::Update => {}
    }
}
