//! OTLP/gRPC: `MetricsService/Export`, `LogsService/Export` and `TraceService/Export`.
//!
//! The services are served through tonic with a codec of our own instead of the
//! generated servers' default one, so that an undecodable message is answered with
//! `INVALID_ARGUMENT` and an oversize one with `RESOURCE_EXHAUSTED` as the OTLP spec
//! asks (tonic's default codec answers `INTERNAL` and `OUT_OF_RANGE`).

use crate::ingest::{Ingest, IngestError};
use futures::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::bytes::Buf;
use prost::Message;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// Hard cap on what tonic buffers before our codec sees the size; above our configured
/// limit and below this the client gets RESOURCE_EXHAUSTED from the codec.
const TRANSPORT_CAP: usize = 64 * 1024 * 1024;

/// One OTLP signal's export service.
pub trait Signal: Send + Sync + 'static {
    const SERVICE: &'static str;
    type Req: Message + Default + Send + 'static;
    type Resp: Message + Default + Send + 'static;
    fn handle(
        ingest: Arc<Ingest>,
        req: Self::Req,
    ) -> BoxFuture<'static, Result<Self::Resp, IngestError>>;
}

pub struct Metrics;
pub struct Logs;
pub struct Traces;

impl Signal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    type Req = ExportMetricsServiceRequest;
    type Resp = ExportMetricsServiceResponse;
    fn handle(
        ingest: Arc<Ingest>,
        req: Self::Req,
    ) -> BoxFuture<'static, Result<Self::Resp, IngestError>> {
        Box::pin(async move { ingest.metrics(req).await })
    }
}

impl Signal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    type Req = ExportLogsServiceRequest;
    type Resp = ExportLogsServiceResponse;
    fn handle(
        ingest: Arc<Ingest>,
        req: Self::Req,
    ) -> BoxFuture<'static, Result<Self::Resp, IngestError>> {
        Box::pin(async move { ingest.logs(req).await })
    }
}

impl Signal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    type Req = ExportTraceServiceRequest;
    type Resp = ExportTraceServiceResponse;
    fn handle(
        ingest: Arc<Ingest>,
        req: Self::Req,
    ) -> BoxFuture<'static, Result<Self::Resp, IngestError>> {
        Box::pin(async move { ingest.traces(req).await })
    }
}

fn to_status(e: IngestError) -> Status {
    match e {
        IngestError::Unavailable(m) => Status::unavailable(m),
        IngestError::Internal(m) => Status::internal(m),
    }
}

/// Prost encoding with OTLP's error codes on decode.
struct OtlpCodec<E, D> {
    limit: usize,
    _pd: PhantomData<(E, D)>,
}

impl<E: Message + Send + 'static, D: Message + Default + Send + 'static> Codec for OtlpCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = OtlpEncoder<E>;
    type Decoder = OtlpDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        OtlpEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder {
            limit: self.limit,
            _pd: PhantomData,
        }
    }
}

struct OtlpEncoder<E>(PhantomData<E>);

impl<E: Message> Encoder for OtlpEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the reply failed: {e}")))
    }
}

struct OtlpDecoder<D> {
    limit: usize,
    _pd: PhantomData<D>,
}

impl<D: Message + Default> Decoder for OtlpDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let len = src.remaining();
        if len > self.limit {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes is larger than the {} byte limit",
                self.limit
            )));
        }
        D::decode(src).map(Some).map_err(|e| {
            Status::invalid_argument(format!("request is not valid OTLP protobuf: {e}"))
        })
    }
}

/// One signal's gRPC service.
pub struct ExportService<S: Signal> {
    ingest: Arc<Ingest>,
    limit: usize,
    _pd: PhantomData<S>,
}

impl<S: Signal> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        ExportService {
            ingest: self.ingest.clone(),
            limit: self.limit,
            _pd: PhantomData,
        }
    }
}

impl<S: Signal> ExportService<S> {
    pub fn new(ingest: Arc<Ingest>, limit: usize) -> Self {
        ExportService {
            ingest,
            limit,
            _pd: PhantomData,
        }
    }
}

impl<S: Signal> NamedService for ExportService<S> {
    const NAME: &'static str = S::SERVICE;
}

struct Handler<S: Signal>(Arc<Ingest>, PhantomData<S>);

impl<S: Signal> UnaryService<S::Req> for Handler<S> {
    type Response = S::Resp;
    type Future = BoxFuture<'static, Result<Response<S::Resp>, Status>>;

    fn call(&mut self, request: Request<S::Req>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            S::handle(ingest, request.into_inner())
                .await
                .map(Response::new)
                .map_err(to_status)
        })
    }
}

impl<S: Signal> tower::Service<http::Request<Body>> for ExportService<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != format!("/{}/Export", S::SERVICE) {
                return Ok(
                    Status::unimplemented(format!("no method {}", req.uri().path())).into_http(),
                );
            }
            let codec = OtlpCodec::<S::Resp, S::Req> {
                limit: this.limit,
                _pd: PhantomData,
            };
            let mut grpc = Grpc::new(codec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(TRANSPORT_CAP.max(this.limit + 1));
            Ok(grpc
                .unary(Handler::<S>(this.ingest.clone(), PhantomData), req)
                .await)
        })
    }
}

/// Serve OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    limit: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(ExportService::<Metrics>::new(ingest.clone(), limit))
        .add_service(ExportService::<Logs>::new(ingest.clone(), limit))
        .add_service(ExportService::<Traces>::new(ingest, limit))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
