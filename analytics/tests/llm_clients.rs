//! The Ollama and OpenAI-compatible clients against testkit's protocol-level fake
//! servers, through real sockets: answers, request shapes, error mapping, retries,
//! timeouts, `check_model` and the concurrency bound. Each behaviour runs for both
//! providers (`ollama` / `openai` test pairs).

use serde_json::{json, Value};
use sqlvigil_analytics::llm::{
    AnalyticsError, ChatRequest, LlmClient, LlmConfig, Message, ModelStatus, Provider,
};
use sqlvigil_testkit::llm::{Api, LlmServer, Mode, Ollama, OpenAi, DEFAULT_MODEL, NOT_JSON};
use std::time::{Duration, Instant};

/// Ties a fake server's API to the client provider speaking it.
trait Flavor: Api {
    const PROVIDER: Provider;
}

impl Flavor for Ollama {
    const PROVIDER: Provider = Provider::Ollama;
}

impl Flavor for OpenAi {
    const PROVIDER: Provider = Provider::Openai;
}

fn config<F: Flavor>(base_url: &str) -> LlmConfig {
    LlmConfig {
        provider: F::PROVIDER,
        base_url: base_url.to_string(),
        model: DEFAULT_MODEL.to_string(),
        timeout: Duration::from_secs(10),
        max_concurrency: 2,
        retries: 2,
        temperature: None,
        num_ctx: None,
        keep_alive: None,
        api_key: None,
    }
}

fn client(cfg: LlmConfig) -> Box<dyn LlmClient> {
    cfg.build().expect("client")
}

fn insight() -> Value {
    json!({"title": "Blocking chain on SQL01", "severity": "high", "actions": ["kill spid 53"]})
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message {
                role: "system".into(),
                content: "You are a SQL Server DBA.".into(),
            },
            Message {
                role: "user".into(),
                content: "Explain this anomaly.".into(),
            },
        ],
        schema: json!({
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"]
        }),
    }
}

/// Runs `$case::<Ollama>` and `$case::<OpenAi>` as two multi-thread tokio tests.
macro_rules! for_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ollama() {
                super::$case::<Ollama>().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn openai() {
                super::$case::<OpenAi>().await
            }
        }
    )*};
}

for_both!(
    good_answer,
    invalid_json_is_returned_as_is,
    model_not_found_is_404_not_retried,
    server_error_retried_then_reported,
    one_failure_recovered_by_retry,
    busy_honours_retry_after,
    slow_reply_times_out,
    unreachable_port,
    check_model_present_and_missing,
    concurrency_bound_respected,
    unparsable_200_is_protocol_error,
);

async fn good_answer<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::Answer(insight()));
    let reply = client(config::<F>(&server.base_url()))
        .chat(&request())
        .await
        .expect("chat");
    let content: Value = serde_json::from_str(&reply.content).expect("content is JSON");
    assert_eq!(content, insight());
    assert_eq!(reply.model, DEFAULT_MODEL);
    assert!(reply.prompt_tokens.expect("prompt tokens") > 0);
    assert!(reply.completion_tokens.expect("completion tokens") > 0);
    assert!(reply.latency > Duration::ZERO && reply.latency < Duration::from_secs(5));
    assert_eq!(server.requests().len(), 1);
}

async fn invalid_json_is_returned_as_is<F: Flavor>() {
    // Validating the content is the analyzer's job; the client hands back the text.
    let server = LlmServer::<F>::start(Mode::InvalidThenValid(insight()));
    let client = client(config::<F>(&server.base_url()));
    assert_eq!(
        client.chat(&request()).await.expect("chat").content,
        NOT_JSON
    );
    assert_eq!(
        client.chat(&request()).await.expect("chat").content,
        insight().to_string()
    );
}

async fn model_not_found_is_404_not_retried<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::Answer(insight()));
    let cfg = LlmConfig {
        model: "mistral:7b".into(),
        ..config::<F>(&server.base_url())
    };
    let err = client(cfg).chat(&request()).await.expect_err("404");
    match &err {
        AnalyticsError::Status {
            status: 404,
            message,
            ..
        } => assert!(message.contains("mistral:7b"), "{message}"),
        other => panic!("expected Status 404, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(server.requests().len(), 1, "a 404 must not be retried");

    server.set_mode(Mode::NotFound);
    let err = client(config::<F>(&server.base_url()))
        .chat(&request())
        .await
        .expect_err("404");
    assert!(
        matches!(err, AnalyticsError::Status { status: 404, .. }),
        "{err:?}"
    );
}

async fn server_error_retried_then_reported<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::ServerError);
    let err = client(config::<F>(&server.base_url()))
        .chat(&request())
        .await
        .expect_err("500");
    match &err {
        AnalyticsError::Status {
            status: 500,
            message,
            ..
        } => assert!(!message.is_empty() && !message.contains('{'), "{message}"),
        other => panic!("expected Status 500, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 3, "1 attempt + 2 retries");
}

async fn one_failure_recovered_by_retry<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::FailTimes(1, insight()));
    let started = Instant::now();
    let reply = client(config::<F>(&server.base_url()))
        .chat(&request())
        .await
        .expect("second attempt answers");
    assert_eq!(reply.content, insight().to_string());
    assert_eq!(server.requests().len(), 2);
    // Backoff before the first retry: 100..=200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

async fn busy_honours_retry_after<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::Busy(1, insight()));
    let started = Instant::now();
    let reply = client(config::<F>(&server.base_url()))
        .chat(&request())
        .await
        .expect("answer after Retry-After");
    assert_eq!(reply.content, insight().to_string());
    assert_eq!(server.requests().len(), 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

async fn slow_reply_times_out<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::Slow(Duration::from_secs(3), insight()));
    let cfg = LlmConfig {
        timeout: Duration::from_millis(300),
        retries: 1,
        ..config::<F>(&server.base_url())
    };
    let started = Instant::now();
    let err = client(cfg).chat(&request()).await.expect_err("timeout");
    match &err {
        AnalyticsError::Timeout { timeout, .. } => assert_eq!(*timeout, Duration::from_millis(300)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2, "a timeout is retried");
}

async fn unreachable_port<F: Flavor>() {
    let port = sqlvigil_testkit::free_port(); // nothing listens there
    let cfg = LlmConfig {
        retries: 1,
        ..config::<F>(&format!("http://127.0.0.1:{port}"))
    };
    let client = client(cfg);
    let err = client.chat(&request()).await.expect_err("unreachable");
    assert!(
        matches!(&err, AnalyticsError::Unreachable { url, .. } if url.contains(&port.to_string())),
        "{err:?}"
    );
    let err = client.check_model().await.expect_err("unreachable");
    assert!(matches!(err, AnalyticsError::Unreachable { .. }), "{err:?}");
}

async fn check_model_present_and_missing<F: Flavor>() {
    let server = LlmServer::<F>::start_with_models(
        Mode::Answer(insight()),
        &[DEFAULT_MODEL, "qwen2.5:0.5b"],
    );
    let present = client(config::<F>(&server.base_url()));
    assert_eq!(
        present.check_model().await.expect("check"),
        ModelStatus::Present
    );
    let missing = client(LlmConfig {
        model: "mistral:7b".into(),
        ..config::<F>(&server.base_url())
    });
    assert_eq!(
        missing.check_model().await.expect("check"),
        ModelStatus::Missing {
            available: vec![DEFAULT_MODEL.to_string(), "qwen2.5:0.5b".to_string()]
        }
    );
    assert!(
        server.requests().is_empty(),
        "check_model must not call chat"
    );
}

async fn concurrency_bound_respected<F: Flavor>() {
    let server = LlmServer::<F>::start(Mode::Slow(Duration::from_millis(250), insight()));
    for (bound, expected) in [(1usize, 1usize), (3, 3)] {
        let client = client(LlmConfig {
            max_concurrency: bound,
            ..config::<F>(&server.base_url())
        });
        let req = request();
        let started = Instant::now();
        let (a, b, c) = tokio::join!(client.chat(&req), client.chat(&req), client.chat(&req));
        for reply in [a, b, c] {
            reply.expect("chat");
        }
        let max = server.max_in_flight();
        assert_eq!(max, expected, "max_concurrency {bound}");
        if bound == 1 {
            assert!(started.elapsed() >= Duration::from_millis(750));
        }
    }
}

async fn unparsable_200_is_protocol_error<F: Flavor>() {
    let url = garbage_server();
    let err = client(LlmConfig {
        retries: 0,
        ..config::<F>(&url)
    })
    .chat(&request())
    .await
    .expect_err("garbage");
    match &err {
        AnalyticsError::Protocol { message, .. } => {
            assert!(message.contains("<html>"), "{message}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

/// A server answering one request `200` with an HTML body.
fn garbage_server() -> String {
    use std::io::{Read, Write};
    let listener = sqlvigil_testkit::free_listener().expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        // Read the head and the body (Content-Length) before answering.
        loop {
            let n = s.read(&mut buf).expect("read");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let body = "<html>gateway</html>";
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_request_shape() {
    let server = LlmServer::<Ollama>::start(Mode::Answer(insight()));
    let cfg = LlmConfig {
        temperature: Some(0.1),
        num_ctx: Some(8192),
        keep_alive: Some("5m".into()),
        ..config::<Ollama>(&server.base_url())
    };
    client(cfg).chat(&request()).await.expect("chat");
    let body = &server.requests()[0];
    assert_eq!(body["model"], DEFAULT_MODEL);
    assert_eq!(body["stream"], false);
    assert_eq!(body["format"], request().schema);
    assert_eq!(
        body["options"],
        json!({"temperature": 0.1, "num_ctx": 8192})
    );
    assert_eq!(body["keep_alive"], "5m");
    assert_eq!(
        body["messages"],
        serde_json::to_value(&request().messages).expect("json")
    );

    // Unset options are omitted altogether.
    client(config::<Ollama>(&server.base_url()))
        .chat(&request())
        .await
        .expect("chat");
    let body = &server.requests()[1];
    assert!(
        body.get("options").is_none() && body.get("keep_alive").is_none(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_model_without_tag_means_latest() {
    let server =
        LlmServer::<Ollama>::start_with_models(Mode::Answer(insight()), &["llama3.2:latest"]);
    let cfg = LlmConfig {
        model: "llama3.2".into(),
        ..config::<Ollama>(&server.base_url())
    };
    let client = client(cfg);
    assert_eq!(
        client.check_model().await.expect("check"),
        ModelStatus::Present
    );
    client.chat(&request()).await.expect("chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_request_shape_and_bearer_key() {
    let server = LlmServer::<OpenAi>::start(Mode::Answer(insight())).with_api_key("sk-test");
    let cfg = LlmConfig {
        temperature: Some(0.2),
        api_key: Some("sk-test".into()),
        ..config::<OpenAi>(&server.base_url())
    };
    client(cfg.clone()).chat(&request()).await.expect("chat");
    let body = &server.requests()[0];
    assert_eq!(body["stream"], false);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "insight", "strict": true, "schema": request().schema}})
    );
    assert_eq!(
        client(cfg.clone()).check_model().await.expect("check"),
        ModelStatus::Present
    );

    // A `/v1` base URL works too.
    let v1 = LlmConfig {
        base_url: format!("{}/v1/", server.base_url()),
        ..cfg.clone()
    };
    client(v1)
        .chat(&request())
        .await
        .expect("chat via /v1 base");

    let wrong = LlmConfig {
        api_key: Some("sk-wrong".into()),
        ..cfg
    };
    let before = server.requests().len();
    let err = client(wrong).chat(&request()).await.expect_err("401");
    assert!(
        matches!(&err, AnalyticsError::Status { status: 401, message, .. } if message.contains("API key")),
        "{err:?}"
    );
    assert_eq!(
        server.requests().len(),
        before + 1,
        "a 401 must not be retried"
    );
}
