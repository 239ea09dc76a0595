//! The analytics worker: the anomalies topic → windows of opened anomalies → one
//! analysis per instance and window (a burst insight naming each anomaly when several
//! opened together) → insights, several at a time (`analytics.concurrency`).
//!
//! A window closes after a quiet gap with nothing new, after `coalesce_window`, or at
//! [`MAX_WINDOW_EVENTS`]; its records are acknowledged once its analyses are done, so a
//! crash analyses them again rather than never. The backlog is the topic's unread and
//! unacknowledged records, bounded by the topic's capacity: when it is full the metrics
//! worker waits, and the receiver refuses with 503 above it.
//!
//! Shutdown comes in two signals. `spool`: stop analysing — analyses in flight get a
//! short grace, then every anomaly not yet analysed (in the window, or still arriving
//! while the telemetry workers drain) is kept in the ledger's spool for the next start,
//! which analyses it first. `stop`: the telemetry workers are done; exit once the topic
//! is empty.

use crate::prompt::Subject;
use crate::service::{AnalyticsService, ANALYTICS_GROUP};
use crate::AnalyticsError;
use futures::future::BoxFuture;
use futures::StreamExt;
use sqlvigil_core::{Delivery, Stats, Subscription};
use sqlvigil_model::{Anomaly, AnomalyEvent, AnomalyEventKind};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

type Result<T, E = AnalyticsError> = std::result::Result<T, E>;

/// Most anomaly events in one window.
pub const MAX_WINDOW_EVENTS: usize = 5_000;
/// A window closes after this long without a new event.
const QUIET_GAP: Duration = Duration::from_millis(250);
/// Records asked for per read.
const READ: usize = 512;
/// At shutdown, how long analyses in flight may still take before their anomalies are
/// spooled instead.
const GRACE: Duration = Duration::from_secs(2);
/// Spooled events taken per window at start-up.
const UNSPOOL: usize = 1_000;

/// The two shutdown signals (see the module docs).
pub struct Signals {
    pub spool: watch::Receiver<bool>,
    pub stop: watch::Receiver<bool>,
}

fn raised(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow()
}

impl AnalyticsService {
    /// Consume the anomalies topic until shut down (see the module docs).
    pub async fn run_worker(
        self: Arc<Self>,
        mut sub: Box<dyn Subscription>,
        topic: String,
        signals: Signals,
    ) -> Result<()> {
        self.health.running();
        self.analyze_spooled(&signals.spool).await?;
        loop {
            if raised(&signals.spool) {
                self.health.stopping();
                let r = self.spool_rest(sub, &topic, signals.stop).await;
                self.health.stopped("shutdown");
                return r;
            }
            let window = self.gather(sub.as_mut(), &signals.spool).await?;
            if !window.is_empty() {
                let events = self.decode(&window);
                let left = self.analyze_window(events, &signals.spool).await;
                self.spool(&left)?;
                sub.ack(&window).await?;
            }
            self.health.progress();
        }
    }

    /// Read one window: the first records, then more until a quiet gap, the coalescing
    /// window, the size cap or the spool signal.
    async fn gather(
        &self,
        sub: &mut dyn Subscription,
        spool: &watch::Receiver<bool>,
    ) -> Result<Vec<Delivery>> {
        let mut window = sub.next_batch(READ, QUIET_GAP).await?;
        let opened = Instant::now();
        while !window.is_empty()
            && window.len() < MAX_WINDOW_EVENTS
            && opened.elapsed() < self.coalesce_window
            && !raised(spool)
        {
            let more = sub
                .next_batch(READ.min(MAX_WINDOW_EVENTS - window.len()), QUIET_GAP)
                .await?;
            if more.is_empty() {
                break;
            }
            window.extend(more);
        }
        Ok(window)
    }

    /// The opened anomalies' events of a window (updates and resolves need no insight).
    fn decode(&self, window: &[Delivery]) -> Vec<AnomalyEvent> {
        window
            .iter()
            .filter_map(
                |d| match serde_json::from_slice::<AnomalyEvent>(&d.record.payload) {
                    Ok(ev) => (ev.event == AnomalyEventKind::Open).then_some(ev),
                    Err(e) => {
                        Stats::add(&self.stats.decode_errors, 1);
                        tracing::warn!("undecodable anomaly event skipped: {e}");
                        None
                    }
                },
            )
            .collect()
    }

    /// Analyse a window's opened anomalies, one subject per instance, at most
    /// `concurrency` at a time. Returns the events left unanalysed because shutdown came
    /// (to be spooled). An analysis that fails is logged and counted, not retried: its
    /// anomalies stay in the ledger and can be analysed on request.
    async fn analyze_window(
        &self,
        events: Vec<AnomalyEvent>,
        spool: &watch::Receiver<bool>,
    ) -> Vec<AnomalyEvent> {
        let groups = group_by_instance(events);
        for (_, evs) in groups.iter().filter(|(_, evs)| evs.len() > 1) {
            Stats::add(&self.stats.analytics_coalesced, evs.len() as u64);
        }
        // Boxed (`Send`) one by one: a lazily mapped stream of borrowing futures trips
        // the compiler's `Send` inference for the whole worker.
        let jobs: Vec<BoxFuture<'_, (usize, Result<sqlvigil_model::Insight>)>> = groups
            .iter()
            .enumerate()
            .map(|(i, (instance, evs))| {
                let subject = subject_of(instance, evs);
                let job: BoxFuture<'_, _> =
                    Box::pin(async move { (i, self.analyze_opened(subject).await) });
                job
            })
            .collect();
        let mut running = futures::stream::iter(jobs).buffer_unordered(self.concurrency);
        let mut done = HashSet::new();
        let mut spool = spool.clone();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = tokio::select! {
                next = running.next() => next,
                _ = spool.wait_for(|s| *s), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + GRACE);
                    continue;
                }
                _ = sleep_until(deadline) => break,
            };
            let Some((i, outcome)) = next else { break };
            done.insert(i);
            if let Err(e) = outcome {
                Stats::add(&self.stats.analytics_failed, 1);
                tracing::warn!(
                    instance = %groups[i].0,
                    anomalies = groups[i].1.len(),
                    "analysis failed, no insight written: {e}"
                );
            }
        }
        drop(running);
        groups
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !done.contains(i))
            .flat_map(|(_, (_, evs))| evs)
            .collect()
    }

    /// Keep events for the next start.
    fn spool(&self, events: &[AnomalyEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.ledger.spool_events(events)?;
        Stats::add(&self.stats.analytics_spooled, events.len() as u64);
        Ok(())
    }

    /// What the last shutdown spooled, analysed first.
    async fn analyze_spooled(&self, spool: &watch::Receiver<bool>) -> Result<()> {
        loop {
            let rows = self.ledger.spooled_events(UNSPOOL)?;
            if rows.is_empty() || raised(spool) {
                return Ok(());
            }
            tracing::info!(
                events = rows.len(),
                "analysing anomalies spooled at the last shutdown"
            );
            let (ids, events): (Vec<i64>, Vec<AnomalyEvent>) = rows.into_iter().unzip();
            let left = self.analyze_window(events, spool).await;
            // One transaction would be nicer; re-spooling what is left is just as safe.
            self.ledger.unspool(&ids)?;
            self.spool(&left)?;
            self.health.progress();
        }
    }

    /// Shutting down: move every opened anomaly still arriving into the spool until the
    /// telemetry workers are done (`stop`) and the topic is empty.
    async fn spool_rest(
        &self,
        mut sub: Box<dyn Subscription>,
        topic: &str,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            let batch = sub
                .next_batch(MAX_WINDOW_EVENTS, Duration::from_millis(50))
                .await?;
            if batch.is_empty() {
                if raised(&stop) && self.bus.pending(topic, ANALYTICS_GROUP) == 0 {
                    return Ok(());
                }
                continue;
            }
            let events = self.decode(&batch);
            self.spool(&events)?;
            sub.ack(&batch).await?;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opened anomalies by instance, in order of arrival within each.
fn group_by_instance(events: Vec<AnomalyEvent>) -> Vec<(String, Vec<AnomalyEvent>)> {
    let mut groups: BTreeMap<String, Vec<AnomalyEvent>> = BTreeMap::new();
    for ev in events {
        groups
            .entry(ev.anomaly.series.instance.to_string())
            .or_default()
            .push(ev);
    }
    groups.into_iter().collect()
}

/// One anomaly alone, or a burst.
fn subject_of(instance: &str, events: &[AnomalyEvent]) -> Subject {
    match events {
        [one] => Subject::Anomaly(Box::new(one.anomaly.clone())),
        many => Subject::Burst {
            instance: instance.to_string(),
            anomalies: many
                .iter()
                .map(|e| e.anomaly.clone())
                .collect::<Vec<Anomaly>>(),
        },
    }
}
