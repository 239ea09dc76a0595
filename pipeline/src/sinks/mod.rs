//! Where processed data goes. [`store::Store`] is the embedded sink (Parquet files per
//! hour, queried with DataFusion); [`elastic::ElasticSink`] sends everything to
//! Elasticsearch; [`reader::Reader`] reads either back for the API and the analyzer; [`state::StateStore`] keeps anomalies, insights, API
//! tokens and checkpoints in SQLite. A sink buffers and makes data durable on
//! [`Sink::flush`]; the runtime acknowledges bus records only after a flush.

pub mod elastic;
pub mod reader;
pub mod state;
pub mod store;

use crate::error::Result;
use sqlvigil_model::{Anomaly, Insight, LogRecord, Sample};

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
}
