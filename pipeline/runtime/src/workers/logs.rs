//! The logs worker: `otlp_logs` → decoded log records → sink.

use super::{stopping, Telemetry};
use crate::flusher::Flusher;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use sqlvigil_core::{Result, Stats, Subscription};
use tokio::sync::watch;

impl Telemetry {
    pub async fn run_logs(
        self,
        mut sub: Box<dyn Subscription>,
        stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let topic = self.topics.logs.clone();
        let mut flusher = Flusher::new(self.sink.clone(), self.store.clone());
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
        }
        sub.ack(&flusher.drain().await?).await
    }
}
