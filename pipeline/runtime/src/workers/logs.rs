//! The logs worker: `otlp_logs` → decoded log records → sink.

use super::{stopping, Telemetry};
use crate::flusher::Flusher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use sqlvigil_core::{Component, Result, Stats, Subscription};
use std::sync::Arc;
use tokio::sync::watch;

impl Telemetry {
    pub async fn run_logs(
        self,
        mut sub: Box<dyn Subscription>,
        stop: watch::Receiver<bool>,
        health: Arc<Component>,
    ) -> Result<()> {
        let topic = self.topics.logs.clone();
        let mut flusher = Flusher::new(
            self.sink.clone(),
            self.store.clone(),
            self.sink_health.clone(),
        );
        while let Some(batch) = self.next(&mut sub, &topic, &stop).await? {
            flusher.forget(&sub.revoked());
            let mut logs = Vec::new();
            for d in &batch {
                match ExportLogsServiceRequest::decode(d.record.payload.as_ref()) {
                    Ok(req) => sqlvigil_otlp::logs_to_records(&req, &mut logs),
                    Err(e) => {
                        Stats::add(&self.stats.decode_errors, 1);
                        tracing::warn!("undecodable logs record skipped: {e}");
                    }
                }
            }
            self.sink.write_logs(&logs)?;
            flusher.processed(&batch);
            if let Some(flushed) = flusher.poll(stopping(&stop)).await? {
                sub.ack(&flushed).await?;
            }
            health.progress();
        }
        sub.ack(&flusher.drain().await?).await
    }
}
