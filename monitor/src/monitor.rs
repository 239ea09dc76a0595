//! The running monitor: every configured instance, a scheduled snapshot loop per
//! instance (so a slow or unreachable one never delays another), ad-hoc and
//! anomaly-triggered snapshots, and where each snapshot goes — the ledger (its rows, for
//! the API and audit) and the metrics topic (its figures, for operators and the sink).

use crate::config::MonitorConfig;
use crate::error::{MonitorError, Result};
use crate::instance::Instance;
use crate::telemetry;
use chrono::{DateTime, Utc};
use prost::Message;
use sqlvigil_core::live::LiveStatus;
use sqlvigil_core::{
    async_trait, publish_retrying, Build, BuildContext, Bus, Ledger, Live, Record,
};
use sqlvigil_model::live::{CollectorKind, LiveSnapshot};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where snapshots go once taken.
pub struct Outputs {
    pub bus: Arc<dyn Bus>,
    /// The metrics topic.
    pub topic: String,
    pub ledger: Arc<dyn Ledger>,
}

pub struct Monitor {
    cfg: MonitorConfig,
    instances: Vec<Arc<Instance>>,
    outputs: OnceLock<Outputs>,
}

impl Monitor {
    /// Resolve every instance's credentials and make its pool (no connection yet).
    pub fn new(cfg: &MonitorConfig) -> Result<Monitor> {
        cfg.validate()?;
        let instances = cfg
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                Instance::new(inst, cfg, &format!("monitor.instances[{i}]")).map(Arc::new)
            })
            .collect::<Result<_>>()?;
        Ok(Monitor {
            cfg: cfg.clone(),
            instances,
            outputs: OnceLock::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Send snapshots to the ledger and the bus from now on.
    pub fn connect(&self, outputs: Outputs) {
        let _ = self.outputs.set(outputs);
    }

    fn instance(&self, name: &str) -> Result<&Arc<Instance>> {
        self.instances
            .iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| MonitorError::UnknownInstance(name.to_string()))
    }

    /// One scheduled loop per instance until `stop`; a snapshot at start, then every
    /// interval (the instance's own or `monitor.interval`).
    pub fn spawn(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<sqlvigil_core::Result<()>>> {
        (0..self.instances.len())
            .map(|i| {
                let (monitor, mut stop) = (self.clone(), stop.clone());
                tokio::spawn(async move {
                    let inst = monitor.instances[i].clone();
                    let every = inst.cfg.interval.unwrap_or(monitor.cfg.interval);
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stop.wait_for(|s| *s) => return Ok(()),
                        }
                        let take = inst.take(None, "schedule");
                        let snap = tokio::select! {
                            s = take => s,
                            _ = stop.wait_for(|s| *s) => return Ok(()),
                        };
                        if let Ok(snap) = snap {
                            monitor.deliver(&snap).await;
                        }
                    }
                })
            })
            .collect()
    }

    /// Record the snapshot in the ledger and publish its figures.
    async fn deliver(&self, snap: &Arc<LiveSnapshot>) {
        let Some(out) = self.outputs.get() else {
            return;
        };
        let (ledger, keep, s) = (out.ledger.clone(), self.cfg.keep_snapshots, snap.clone());
        let recorded = tokio::task::spawn_blocking(move || ledger.record_snapshot(&s, keep)).await;
        if let Ok(Err(e)) = recorded {
            tracing::warn!(instance = %snap.instance, "monitor: snapshot not recorded: {e}");
        }
        if let Some(req) = telemetry::to_otlp(snap) {
            let record = Record {
                key: snap.instance.clone().into_bytes().into(),
                payload: req.encode_to_vec().into(),
            };
            if let Err(e) = publish_retrying(out.bus.as_ref(), &out.topic, vec![record], None).await
            {
                tracing::warn!(instance = %snap.instance, "monitor: snapshot figures not published: {e}");
            }
        }
    }

    /// How long an anomaly's analysis may wait for its snapshot: a connection, the
    /// first sample gap and the queries.
    fn anomaly_wait(&self) -> Duration {
        let queries = self.cfg.query_timeout * (CollectorKind::ALL.len() as u32 + 1);
        self.cfg.connect_timeout + self.cfg.sample_gap + queries.min(Duration::from_secs(60))
    }
}

#[async_trait]
impl Build for MonitorConfig {
    /// The monitor with every instance's pool; started with [`Monitor::spawn`].
    type Output = Arc<Monitor>;

    fn validate(&self) -> sqlvigil_core::Result<()> {
        Ok(MonitorConfig::validate(self)?)
    }

    async fn build(&self, _ctx: &BuildContext) -> sqlvigil_core::Result<Arc<Monitor>> {
        Ok(Arc::new(Monitor::new(self)?))
    }
}

#[async_trait]
impl Live for Monitor {
    fn status(&self) -> Vec<LiveStatus> {
        self.instances.iter().map(|i| i.status()).collect()
    }

    fn latest(&self, instance: &str) -> Option<Arc<LiveSnapshot>> {
        self.instance(instance).ok()?.latest()
    }

    async fn snapshot(
        &self,
        instance: &str,
        only: Option<CollectorKind>,
        trigger: &str,
    ) -> sqlvigil_core::Result<Arc<LiveSnapshot>> {
        let inst = self.instance(instance)?;
        inst.admit_adhoc()?;
        let snap = inst.take(only, trigger).await?;
        self.deliver(&snap).await;
        Ok(snap)
    }

    async fn for_anomaly(
        &self,
        instance: &str,
        opened_at: DateTime<Utc>,
        trigger: &str,
    ) -> Option<Arc<LiveSnapshot>> {
        let inst = self.instance(instance).ok()?;
        match tokio::time::timeout(self.anomaly_wait(), inst.at_or_after(opened_at, trigger)).await
        {
            Ok(Ok((snap, fresh))) => {
                if fresh {
                    self.deliver(&snap).await;
                }
                Some(snap)
            }
            Ok(Err(e)) => {
                tracing::warn!(instance, "monitor: no snapshot for the anomaly: {e}");
                inst.latest()
            }
            Err(_) => {
                tracing::warn!(
                    instance,
                    "monitor: the anomaly's snapshot took too long; using the latest"
                );
                inst.latest()
            }
        }
    }
}
