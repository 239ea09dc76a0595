//! One monitored instance: its pool, its previous samples, its latest snapshot and
//! status. Snapshots of one instance run one at a time (the cumulative samples are
//! diffed in order); instances never wait for each other.

use crate::collectors::{self, Previous, QueryLimits};
use crate::config::{InstanceConfig, MonitorConfig};
use crate::error::{MonitorError, Result};
use crate::pool::{self, Conn, Credential, Manager, Pool};
use chrono::{DateTime, Utc};
use sqlvigil_core::live::{CollectorFailure, CollectorStatus, LiveStatus};
use sqlvigil_model::live::{CollectorError, CollectorKind, LiveSnapshot, ServerInfo};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub(crate) struct Instance {
    pub(crate) cfg: InstanceConfig,
    pool: Pool,
    limits: QueryLimits,
    connect_timeout: Duration,
    sample_gap: Duration,
    adhoc_min_interval: Duration,
    /// Held for the whole of a snapshot: one at a time per instance.
    samples: tokio::sync::Mutex<Samples>,
    latest: RwLock<Option<Arc<LiveSnapshot>>>,
    status: Mutex<LiveStatus>,
    last_adhoc: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Samples {
    server: Option<ServerInfo>,
    previous: Previous,
}

impl Instance {
    pub(crate) fn new(cfg: &InstanceConfig, monitor: &MonitorConfig, at: &str) -> Result<Instance> {
        let credential = Credential::resolve(cfg, at)?;
        let pool = pool::pool(Manager::new(cfg, &credential, monitor), monitor.pool_size)?;
        let status = LiveStatus {
            instance: cfg.name.clone(),
            collectors: cfg
                .collectors
                .iter()
                .map(|&collector| CollectorStatus {
                    collector,
                    runs: 0,
                    failures: 0,
                    timeouts: 0,
                    last_duration_ms: 0,
                    last_error: None,
                })
                .collect(),
            ..LiveStatus::default()
        };
        Ok(Instance {
            cfg: cfg.clone(),
            pool,
            limits: QueryLimits {
                timeout: monitor.query_timeout,
                lock_timeout: monitor.lock_timeout,
                statement_chars: monitor.statement_chars,
            },
            connect_timeout: monitor.connect_timeout,
            sample_gap: monitor.sample_gap,
            adhoc_min_interval: monitor.adhoc_min_interval,
            samples: tokio::sync::Mutex::new(Samples::default()),
            latest: RwLock::new(None),
            status: Mutex::new(status),
            last_adhoc: Mutex::new(None),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.cfg.name
    }

    pub(crate) fn latest(&self) -> Option<Arc<LiveSnapshot>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    pub(crate) fn status(&self) -> LiveStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Admit an ad-hoc snapshot, or say how long to wait.
    pub(crate) fn admit_adhoc(&self) -> Result<()> {
        let mut last = self.last_adhoc.lock().map_err(|_| poisoned())?;
        let now = Instant::now();
        if let Some(at) = *last {
            let since = now.duration_since(at);
            if since < self.adhoc_min_interval {
                return Err(MonitorError::RateLimited {
                    instance: self.cfg.name.clone(),
                    every: self.adhoc_min_interval,
                    retry_after: self.adhoc_min_interval - since,
                });
            }
        }
        *last = Some(now);
        Ok(())
    }

    /// The newest snapshot when taken at or after `at` (`false`: not new), else a new
    /// one (`true`). Waits for a snapshot in flight first (it may be the one wanted).
    pub(crate) async fn at_or_after(
        &self,
        at: DateTime<Utc>,
        trigger: &str,
    ) -> Result<(Arc<LiveSnapshot>, bool)> {
        let mut samples = self.samples.lock().await;
        if let Some(l) = self.latest().filter(|l| l.collected_at >= at) {
            return Ok((l, false));
        }
        Ok((self.take_locked(&mut samples, None, trigger).await?, true))
    }

    /// Take a snapshot of the configured collectors (or only `only`).
    pub(crate) async fn take(
        &self,
        only: Option<CollectorKind>,
        trigger: &str,
    ) -> Result<Arc<LiveSnapshot>> {
        let mut samples = self.samples.lock().await;
        self.take_locked(&mut samples, only, trigger).await
    }

    async fn take_locked(
        &self,
        samples: &mut Samples,
        only: Option<CollectorKind>,
        trigger: &str,
    ) -> Result<Arc<LiveSnapshot>> {
        let kinds: Vec<CollectorKind> = match only {
            Some(k) => vec![k],
            None => self.cfg.collectors.clone(),
        };
        let mut conn = match self.connect(samples).await {
            Ok(c) => Some(c),
            Err(e) => {
                // Probe the server again when it is back (it may have been upgraded).
                samples.server = None;
                self.note_connection(Some(&e));
                return Err(e);
            }
        };
        self.note_connection(None);
        let server = samples.server.clone().unwrap_or_default();
        // Cumulative DMVs without a previous sample: sample once, wait, then diff.
        let unseeded: Vec<CollectorKind> = kinds
            .iter()
            .copied()
            .filter(|k| collectors::is_cumulative(*k) && !samples.previous.has(*k))
            .collect();
        let mut snap = LiveSnapshot {
            instance: self.cfg.name.clone(),
            trigger: trigger.to_string(),
            server,
            collectors: kinds.clone(),
            ..LiveSnapshot::default()
        };
        if !unseeded.is_empty() {
            let mut seed = snap.clone();
            conn = self.run(conn, &unseeded, &mut seed, samples).await;
            tokio::time::sleep(self.sample_gap).await;
        }
        drop(self.run(conn, &kinds, &mut snap, samples).await);
        snap.collected_at = Utc::now();
        if snap.counter_reset {
            tracing::info!(instance = %self.cfg.name, "monitor: cumulative DMV counters were reset (restart or clear)");
        }
        let snap = Arc::new(snap);
        if let Ok(mut l) = self.latest.write() {
            *l = Some(snap.clone());
        }
        if let Ok(mut s) = self.status.lock() {
            s.last_snapshot = Some(snap.collected_at);
            s.snapshots += 1;
        }
        Ok(snap)
    }

    /// A pooled connection; on a new instance (or after a restart) its server info.
    async fn connect(&self, samples: &mut Samples) -> Result<Conn> {
        let mut conn = pool::get(&self.pool, self.connect_timeout).await?;
        if samples.server.is_none() {
            let sets =
                collectors::query(&mut conn, "server", collectors::server::SQL, self.limits).await;
            let sets = match sets {
                Ok(s) => s,
                Err(e) => {
                    drop_if_broken(conn, &e);
                    return Err(e);
                }
            };
            let info = collectors::server::parse(sets.first().map(Vec::as_slice).unwrap_or(&[]));
            tracing::info!(
                instance = %self.cfg.name,
                version = %info.version,
                edition = %info.edition,
                "monitor: connected"
            );
            samples.server = Some(info);
        }
        Ok(conn)
    }

    /// Run `kinds` one after another, recording each outcome. A collector that times
    /// out or breaks the connection gets it closed (the server abandons its query) and
    /// the next collector a new one; when none can be made the rest fail with that
    /// error. Returns the connection to hand back to the pool, if any.
    async fn run(
        &self,
        mut conn: Option<Conn>,
        kinds: &[CollectorKind],
        snap: &mut LiveSnapshot,
        samples: &mut Samples,
    ) -> Option<Conn> {
        for (i, &kind) in kinds.iter().enumerate() {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match pool::get(&self.pool, self.connect_timeout).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        for &rest in &kinds[i..] {
                            self.record_failure(rest, Duration::ZERO, &e, snap);
                        }
                        return None;
                    }
                },
            };
            let started = Instant::now();
            let sql = collectors::sql(kind, &snap.server);
            let outcome = collectors::query(c, kind.as_str(), sql, self.limits).await;
            let took = started.elapsed();
            match outcome {
                Ok(sets) => {
                    collectors::apply(
                        snap,
                        &mut samples.previous,
                        kind,
                        &sets,
                        Utc::now(),
                        self.limits,
                    );
                    self.note_collector(kind, took, None);
                }
                Err(e) => {
                    tracing::warn!(instance = %self.cfg.name, collector = %kind, "monitor: {e}");
                    self.record_failure(kind, took, &e, snap);
                    if !e.keeps_connection() {
                        if let Some(broken) = conn.take() {
                            drop(Conn::take(broken));
                        }
                    }
                }
            }
        }
        conn
    }

    fn record_failure(
        &self,
        kind: CollectorKind,
        took: Duration,
        e: &MonitorError,
        snap: &mut LiveSnapshot,
    ) {
        self.note_collector(kind, took, Some(e));
        snap.errors.push(CollectorError {
            collector: kind,
            number: e.number(),
            message: e.to_string(),
        });
    }

    fn note_connection(&self, e: Option<&MonitorError>) {
        if let Ok(mut s) = self.status.lock() {
            s.reachable = e.is_none();
            s.connection_error = e.map(failure);
        }
    }

    fn note_collector(&self, kind: CollectorKind, took: Duration, e: Option<&MonitorError>) {
        let Ok(mut s) = self.status.lock() else {
            return;
        };
        if let Some(c) = s.collectors.iter_mut().find(|c| c.collector == kind) {
            c.runs += 1;
            c.last_duration_ms = took.as_millis() as u64;
            if let Some(e) = e {
                c.failures += 1;
                if matches!(e, MonitorError::Timeout { .. }) {
                    c.timeouts += 1;
                }
            }
            c.last_error = e.map(failure);
        }
    }
}

fn failure(e: &MonitorError) -> CollectorFailure {
    CollectorFailure {
        at: Utc::now(),
        number: e.number(),
        message: e.to_string(),
    }
}

fn poisoned() -> MonitorError {
    MonitorError::Protocol("monitor state lock poisoned".into())
}

/// Close a connection an error left unusable (so the pool does not hand it out again).
fn drop_if_broken(conn: Conn, e: &MonitorError) {
    if !e.keeps_connection() {
        drop(Conn::take(conn));
    }
}
