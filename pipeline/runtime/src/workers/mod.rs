//! The workers that consume the bus: [`metrics`] (decode → the partition's operator
//! chain → sink, anomalies onto their topic) and [`logs`] (decode → sink). Both
//! acknowledge bus records only after a flush made them durable (and, on a durable bus,
//! after the operator checkpoint covered them).

pub mod logs;
pub mod metrics;

use sqlvigil_core::{Bus, Component, Delivery, Result, Sink, Stats, Subscription, Topics};
use sqlvigil_operators::config::OperatorsConfig;
use sqlvigil_store::StoreConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The consumer group of the telemetry workers.
pub const OPERATORS_GROUP: &str = "sqlvigil-operators";

/// What both telemetry workers share.
#[derive(Clone)]
pub struct Telemetry {
    pub bus: Arc<dyn Bus>,
    pub sink: Arc<dyn Sink>,
    pub stats: Arc<Stats>,
    pub topics: Topics,
    pub operators: OperatorsConfig,
    pub store: StoreConfig,
    /// The sink's health: progress on every flush, backlog in buffered rows.
    pub sink_health: Arc<Component>,
}

/// Whether shutdown was requested (read without holding the lock across an await).
pub(crate) fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

impl Telemetry {
    /// Read the next micro-batch, or `None` once stopping and the topic is drained.
    async fn next(
        &self,
        sub: &mut Box<dyn Subscription>,
        topic: &str,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<Vec<Delivery>>> {
        let ops = &self.operators;
        // While draining, do not sit out a whole batch interval on an empty topic: the
        // loop only waits for the last flushes to be acknowledged.
        let wait = if stopping(stop) {
            ops.batch_interval.min(Duration::from_millis(20))
        } else {
            ops.batch_interval
        };
        let batch = sub.next_batch(ops.batch_records, wait).await?;
        if batch.is_empty() && stopping(stop) && self.bus.pending(topic, OPERATORS_GROUP) == 0 {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}
