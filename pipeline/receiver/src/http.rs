//! OTLP/HTTP: `POST /v1/metrics`, `/v1/logs`, `/v1/traces` with `application/x-protobuf`
//! or `application/json` bodies (OTLP/JSON), optionally `Content-Encoding: gzip`.
//!
//! Status codes follow the OTLP/HTTP spec: 200 with a partial-success body when some
//! points were refused, 400 for an undecodable body, 413 for a body over the limit
//! (also after decompression), 415 for other content types, 503 + `Retry-After` when
//! the bus cannot take the data now. Error bodies are a `google.rpc.Status` in the
//! request's encoding.

use crate::ingest::{Ingest, IngestError};
use crate::json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Read;
use std::sync::Arc;

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Clone)]
struct HttpState {
    ingest: Arc<Ingest>,
    limit: usize,
}

/// The OTLP/HTTP router; bodies over `limit` bytes are refused with 413.
pub fn router(ingest: Arc<Ingest>, limit: usize) -> Router {
    Router::new()
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .route("/v1/traces", post(traces))
        .layer(DefaultBodyLimit::disable())
        .with_state(HttpState { ingest, limit })
}

/// An error answer: status code, gRPC code and message, in the request's encoding.
struct Failure {
    status: StatusCode,
    grpc_code: i32,
    message: String,
    encoding: Encoding,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = RpcStatus {
            code: self.grpc_code,
            message: self.message.clone(),
        };
        let bytes = match self.encoding {
            Encoding::Protobuf => body.encode_to_vec(),
            Encoding::Json => serde_json::json!({ "code": body.code, "message": body.message })
                .to_string()
                .into_bytes(),
        };
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, self.encoding.content_type())],
            bytes,
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn failure(
    status: StatusCode,
    grpc_code: i32,
    message: impl Into<String>,
    encoding: Encoding,
) -> Failure {
    Failure {
        status,
        grpc_code,
        message: message.into(),
        encoding,
    }
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, Failure> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            format!(
                "unsupported content type `{ct}`: use application/x-protobuf or application/json"
            ),
            Encoding::Json,
        )),
    }
}

/// Undo `Content-Encoding: gzip`, refusing anything that inflates past `limit`.
fn decompress(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
    enc: Encoding,
) -> Result<Bytes, Failure> {
    let ce = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match ce.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(&body[..]).take(limit as u64 + 1);
            reader.read_to_end(&mut out).map_err(|e| {
                failure(
                    StatusCode::BAD_REQUEST,
                    3,
                    format!("body is not valid gzip: {e}"),
                    enc,
                )
            })?;
            if out.len() > limit {
                return Err(failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    8,
                    format!("decompressed body is larger than the {limit} byte limit"),
                    enc,
                ));
            }
            Ok(out.into())
        }
        other => Err(failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            format!("unsupported content encoding `{other}`: use gzip or none"),
            enc,
        )),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(
    body: &[u8],
    enc: Encoding,
) -> Result<T, Failure> {
    match enc {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            failure(
                StatusCode::BAD_REQUEST,
                3,
                format!("body is not valid OTLP protobuf: {e}"),
                enc,
            )
        }),
        Encoding::Json => serde_json::from_slice::<serde_json::Value>(body)
            .and_then(|mut v| {
                json::normalize_request(&mut v);
                serde_json::from_value(v)
            })
            .map_err(|e| {
                failure(
                    StatusCode::BAD_REQUEST,
                    3,
                    format!("body is not valid OTLP/JSON: {e}"),
                    enc,
                )
            }),
    }
}

fn reply<T: Message + Serialize>(resp: T, enc: Encoding) -> Response {
    let bytes = match enc {
        Encoding::Protobuf => resp.encode_to_vec(),
        Encoding::Json => serde_json::to_value(&resp)
            .map(|mut v| {
                json::normalize_response(&mut v);
                v.to_string().into_bytes()
            })
            .unwrap_or_else(|_| b"{}".to_vec()),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, enc.content_type())],
        bytes,
    )
        .into_response()
}

fn ingest_failure(e: IngestError, enc: Encoding) -> Failure {
    match e {
        IngestError::Unavailable(m) => failure(StatusCode::SERVICE_UNAVAILABLE, 14, m, enc),
        IngestError::Internal(m) => failure(StatusCode::INTERNAL_SERVER_ERROR, 13, m, enc),
    }
}

async fn handle<T, R, F, Fut>(
    state: HttpState,
    headers: HeaderMap,
    body: Body,
    call: F,
) -> Result<Response, Failure>
where
    T: Message + Default + DeserializeOwned,
    R: Message + Serialize,
    F: FnOnce(Arc<Ingest>, T) -> Fut,
    Fut: std::future::Future<Output = Result<R, IngestError>>,
{
    let enc = encoding_of(&headers)?;
    let body = axum::body::to_bytes(body, state.limit).await.map_err(|_| {
        failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            8,
            format!("body is larger than the {} byte limit", state.limit),
            enc,
        )
    })?;
    let body = decompress(&headers, body, state.limit, enc)?;
    let req: T = decode(&body, enc)?;
    let resp = call(state.ingest.clone(), req)
        .await
        .map_err(|e| ingest_failure(e, enc))?;
    Ok(reply(resp, enc))
}

fn count_error(state: &HttpState, r: Result<Response, Failure>) -> Response {
    match r {
        Ok(resp) => resp,
        Err(f) => {
            sqlvigil_core::Stats::add(&state.ingest.stats().receiver_errors, 1);
            f.into_response()
        }
    }
}

async fn metrics(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let r = handle(
        state.clone(),
        headers,
        body,
        |i, req: ExportMetricsServiceRequest| async move { i.metrics(req).await },
    )
    .await;
    count_error(&state, r)
}

async fn logs(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let r = handle(
        state.clone(),
        headers,
        body,
        |i, req: ExportLogsServiceRequest| async move { i.logs(req).await },
    )
    .await;
    count_error(&state, r)
}

async fn traces(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let r = handle(
        state.clone(),
        headers,
        body,
        |i, req: ExportTraceServiceRequest| async move { i.traces(req).await },
    )
    .await;
    count_error(&state, r)
}
