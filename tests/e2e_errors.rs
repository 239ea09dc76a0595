//! Bad input gets the documented error, nothing already accepted is lost, and the
//! server keeps serving: garbage, truncated protobuf, wrong content type, oversize
//! bodies (plain and gzip), NaN values, bad JSON, missing and wrong tokens.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

/// Max body in these tests: 64 KiB.
const LIMIT_YAML: &str = "receiver:\n  max_body_bytes: 65536\n";
const METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Sends raw bytes as the gRPC message, to exercise the server's decoding.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn grpc_raw(endpoint: &str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(METRICS_PATH);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

async fn post(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap_or_default().to_vec())
}

/// `google.rpc.Status` message of a protobuf error body.
fn status_message(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    RpcStatus::decode(body)
        .map(|s| s.message)
        .unwrap_or_default()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_receiver_refuses_bad_input_with_the_documented_status() {
    let dir = tempfile::tempdir().unwrap();
    let (sv, token) = start_run(dir.path(), LIMIT_YAML);
    let url = format!("{}/v1/metrics", sv.http_endpoint());
    let good = gauge_request("sql-ok", "sqlserver.cpu.utilization", &[10.0]).encode_to_vec();

    let (status, body) = post(
        &url,
        "application/x-protobuf",
        None,
        b"\xff\xfe garbage \x00\x01".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        status_message(&body).contains("not valid OTLP protobuf"),
        "{body:?}"
    );

    let (status, _) = post(
        &url,
        "application/x-protobuf",
        None,
        good[..good.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(status, 400, "truncated protobuf");

    let (status, body) = post(&url, "text/plain", None, good.clone()).await;
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("unsupported content type"));

    let (status, body) = post(
        &url,
        "application/json",
        None,
        b"{\"resourceMetrics\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not valid OTLP/JSON"));

    let (status, _) = post(&url, "application/x-protobuf", None, vec![0u8; 100 * 1024]).await;
    assert_eq!(status, 413, "body over the limit");

    // A small gzip body that inflates past the limit is refused too (zip bomb).
    let (status, body) = post(
        &url,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&vec![0u8; 1024 * 1024]),
    )
    .await;
    assert_eq!(status, 413, "{}", status_message(&body));

    let (status, _) = post(
        &url,
        "application/x-protobuf",
        Some("gzip"),
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(status, 400);

    // NaN: refused through partial success, the good point in the same request kept.
    let nan =
        gauge_request("sql-nan", "sqlserver.cpu.utilization", &[f64::NAN, 55.5]).encode_to_vec();
    let (status, body) = post(&url, "application/x-protobuf", Some("gzip"), gzip(&nan)).await;
    assert_eq!(status, 200);
    let reply =
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
            body.as_slice(),
        )
        .unwrap();
    let partial = reply.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("NaN"),
        "{}",
        partial.error_message
    );

    // Still serving, and everything accepted is there.
    let (status, _) = post(&url, "application/x-protobuf", None, good).await;
    assert_eq!(status, 200);
    assert_eq!(
        wait_values(&sv, &token, "sqlserver.cpu.utilization", "sql-nan", 1).await,
        vec![55.5]
    );
    assert_eq!(
        wait_values(&sv, &token, "sqlserver.cpu.utilization", "sql-ok", 1).await,
        vec![10.0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_receiver_refuses_bad_input_with_the_documented_code() {
    let dir = tempfile::tempdir().unwrap();
    let (sv, token) = start_run(dir.path(), LIMIT_YAML);
    let ep = sv.grpc_endpoint();

    let err = grpc_raw(&ep, b"\xff\xfe garbage".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let good = gauge_request("sql-g", "sqlserver.cpu.utilization", &[1.0]).encode_to_vec();
    let err = grpc_raw(&ep, good[..good.len() - 3].to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "truncated: {err}");
    let err = grpc_raw(&ep, vec![0u8; 100 * 1024]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");

    let mut client = MetricsServiceClient::connect(ep).await.unwrap();
    let reply = client
        .export(gauge_request(
            "sql-g",
            "sqlserver.cpu.utilization",
            &[f64::NAN, 7.25, f64::INFINITY],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.partial_success.map(|p| p.rejected_data_points),
        Some(2)
    );
    assert_eq!(
        wait_values(&sv, &token, "sqlserver.cpu.utilization", "sql-g", 1).await,
        vec![7.25]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requires_a_valid_token_and_names_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let (sv, token) = start_run(dir.path(), "");
    let viewer = sqlvigil_testkit::create_token(&bin(), dir.path(), "viewer").unwrap();

    let (status, body) = sv.get_json("/api/v1/anomalies", None).await.unwrap();
    assert_eq!(status, 401);
    assert!(error_message(&body).contains("Authorization"), "{body}");
    let (status, body) = sv
        .get_json("/api/v1/anomalies", Some("svk_wrong"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(error_message(&body).contains("unknown"), "{body}");
    let (status, _) = sv
        .get_json("/api/v1/insights", Some(&viewer))
        .await
        .unwrap();
    assert_eq!(status, 200);

    for (path, names) in [
        ("/api/v1/metrics?metric=x&from=yesterday", "from"),
        ("/api/v1/metrics?series=zz", "series"),
        ("/api/v1/metrics?metric=x&limit=0", "limit"),
        ("/api/v1/metrics?instance=a", "series"),
        ("/api/v1/anomalies?state=sleeping", "state"),
        ("/api/v1/series?metrc=x", "metrc"),
    ] {
        let (status, body) = sv.get_json(path, Some(&token)).await.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(error_message(&body).contains(names), "{path}: {body}");
    }
    let (status, body) = sv.get_json("/api/v1/nothing", Some(&token)).await.unwrap();
    assert_eq!(status, 404);
    assert!(!error_message(&body).is_empty());
    let (status, _) = sv
        .get_json("/api/v1/anomalies/none", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = sv.get_json("/health", None).await.unwrap();
    assert_eq!(status, 200);
}
