//! Where processed data goes.
//!
//! A [`Sink`] buffers what the workers write and makes it durable on [`Sink::flush`]; the
//! runtime acknowledges bus records only after a flush covered them, so a crash loses
//! nothing a client was told is accepted. `sqlvigil-store` is the embedded sink (Parquet
//! per hour), `sqlvigil-bridge` the Elasticsearch one (disk queue → `_bulk`). A
//! [`Backend`] pairs a sink with the [`Reader`] that reads the same data back.

use crate::error::Result;
use crate::reader::Reader;
use async_trait::async_trait;
use sqlvigil_model::{Anomaly, Insight, LogRecord, Sample};
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;
    fn write_samples(&self, samples: &[Sample]) -> Result<()>;
    fn write_logs(&self, logs: &[LogRecord]) -> Result<()>;
    /// Make everything written so far durable.
    fn flush(&self) -> Result<()>;
    /// Rows written but not yet flushed.
    fn buffered_rows(&self) -> usize;
    /// Anomaly events (the embedded store keeps them in SQLite, so it ignores these).
    fn write_anomalies(&self, _anomalies: &[Anomaly]) -> Result<()> {
        Ok(())
    }
    fn write_insights(&self, _insights: &[Insight]) -> Result<()> {
        Ok(())
    }
    /// At shutdown, after the last flush: give background delivery up to `grace` to
    /// finish (what is left stays durable for the next start).
    async fn close(&self, _grace: Duration) {}
}

/// A storage backend as the topology builds it: the sink the workers write to and the
/// reader the API and the analytics stage read the same data back through.
#[derive(Clone)]
pub struct Backend {
    pub sink: Arc<dyn Sink>,
    pub reader: Arc<dyn Reader>,
}
