//! The ingest core both transports share: validate a request (partial success), split
//! it by SQL Server instance and publish it on the bus as OTLP protobuf (the same bytes
//! the Collector's kafka exporter writes). A reply is sent only after the bus accepted
//! the data.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use sqlvigil_core::{Bus, Component, Error, Health, Record, Stats, Topics};
use sqlvigil_otlp as decode;
use std::sync::Arc;

/// Why a request as a whole was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Try again later (bus full or closed): gRPC UNAVAILABLE, HTTP 503 + Retry-After.
    #[error("temporarily unable to accept data: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for IngestError {
    fn from(e: Error) -> Self {
        if e.is_retryable() {
            IngestError::Unavailable(e.to_string())
        } else {
            IngestError::Internal(e.to_string())
        }
    }
}

/// Shared by both transports: validate, split by instance, publish, answer.
pub struct Ingest {
    bus: Arc<dyn Bus>,
    topics: Topics,
    stats: Arc<Stats>,
    /// When set, data is refused while a part that must process it is down or stalled,
    /// and each accepted request is the receivers' progress.
    health: Option<(Arc<Health>, Arc<Component>)>,
}

impl Ingest {
    pub fn new(bus: Arc<dyn Bus>, topics: Topics, stats: Arc<Stats>) -> Self {
        Ingest {
            bus,
            topics,
            stats,
            health: None,
        }
    }

    /// Refuse data (UNAVAILABLE / 503) while `health` says a part that processes it is
    /// down: accepting it would tell the client it is safe when nothing moves it on.
    /// Accepted requests count as the progress of `receivers`.
    pub fn with_health(mut self, health: Arc<Health>, receivers: Arc<Component>) -> Self {
        self.health = Some((health, receivers));
        self
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub async fn metrics(
        &self,
        mut req: ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, IngestError> {
        let rejected = decode::validate_metrics(&mut req);
        let accepted = decode::request_points(&req) as u64;
        let records: Vec<Record> = decode::split_metrics(req)
            .into_iter()
            .map(|(key, r)| Record {
                key: key.into_bytes().into(),
                payload: r.encode_to_vec().into(),
            })
            .collect();
        self.publish(&self.topics.metrics, records).await?;
        Stats::add(&self.stats.received_points, accepted);
        Stats::add(&self.stats.rejected_points, rejected.points as u64);
        let partial_success = (rejected.points > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected.points,
            error_message: rejected.message(),
        });
        Ok(ExportMetricsServiceResponse { partial_success })
    }

    pub async fn logs(
        &self,
        req: ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, IngestError> {
        let accepted = decode::request_log_records(&req) as u64;
        let records: Vec<Record> = decode::split_logs(req)
            .into_iter()
            .map(|(key, r)| Record {
                key: key.into_bytes().into(),
                payload: r.encode_to_vec().into(),
            })
            .collect();
        self.publish(&self.topics.logs, records).await?;
        Stats::add(&self.stats.received_log_records, accepted);
        Ok(ExportLogsServiceResponse {
            partial_success: None::<ExportLogsPartialSuccess>,
        })
    }

    /// Traces are not processed yet: counted in `sqlvigil_dropped_spans` and dropped,
    /// and the client is told so through partial success.
    pub async fn traces(
        &self,
        req: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let spans: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        Stats::add(&self.stats.dropped_spans, spans as u64);
        let partial_success = (spans > 0).then(|| {
            opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                rejected_spans: spans as i64,
                error_message: "sqlvigil does not process traces; spans were dropped".into(),
            }
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }

    async fn publish(&self, topic: &str, records: Vec<Record>) -> Result<(), IngestError> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(why) = self.health.as_ref().and_then(|(h, _)| h.refusal()) {
            return Err(IngestError::Unavailable(format!(
                "sqlvigil is not processing data right now: {why}"
            )));
        }
        self.bus.publish(topic, records).await.map_err(|e| {
            if matches!(e, Error::Full(_)) {
                Stats::add(&self.stats.bus_full, 1);
            }
            IngestError::from(e)
        })?;
        if let Some((_, receivers)) = &self.health {
            receivers.progress();
        }
        Ok(())
    }
}
