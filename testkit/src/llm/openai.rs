//! OpenAI-compatible `/v1/chat/completions` and `/v1/models` (llama.cpp, vLLM, …).

use super::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

impl Api for OpenAi {
    fn router() -> Router<Shared> {
        Router::new()
            .route("/v1/models", get(openai_models))
            .route("/v1/chat/completions", post(openai_chat))
    }

    fn same_model(listed: &str, requested: &str) -> bool {
        listed == requested
    }
}

fn openai_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn openai_bad_request(message: &str) -> Response {
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        message,
    )
}

fn openai_unauthorized() -> Response {
    openai_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        Some("invalid_api_key"),
        "Incorrect API key provided.",
    )
}

fn openai_not_found(model: &str) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("model_not_found"),
        &format!("The model `{model}` does not exist or you do not have access to it."),
    )
}

async fn openai_models(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if !shared.authorized(&headers) {
        return openai_unauthorized();
    }
    let created = unix_now();
    let data: Vec<Value> = shared
        .lock()
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "sqlvigil-testkit"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// What an OpenAI-compatible server would reject in a chat body.
fn check_openai_chat(body: &Value) -> Result<String, String> {
    let model = check_model_and_messages(body)?;
    match body.get("stream") {
        None | Some(Value::Bool(false)) => {}
        Some(other) => {
            return Err(format!(
                "\"stream\" is {other}; only non-streaming requests are answered here"
            ))
        }
    }
    if let Some(t) = body.get("temperature") {
        if !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) {
            return Err(format!(
                "\"temperature\" {t} must be a number between 0 and 2"
            ));
        }
    }
    let format = body
        .get("response_format")
        .ok_or("\"response_format\" is required: {\"type\": \"json_schema\", ...}")?;
    if format.get("type") != Some(&json!("json_schema")) {
        return Err(format!(
            "response_format.type must be \"json_schema\", got {}",
            format.get("type").unwrap_or(&Value::Null)
        ));
    }
    let schema = format
        .get("json_schema")
        .filter(|s| s.is_object())
        .ok_or("response_format.json_schema must be an object")?;
    let name_ok = schema.get("name").and_then(Value::as_str).is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !name_ok {
        return Err(
            "response_format.json_schema.name must be 1-64 of a-z, A-Z, 0-9, _ and -".into(),
        );
    }
    if schema.get("strict").is_some_and(|s| !s.is_boolean()) {
        return Err("response_format.json_schema.strict must be a boolean".into());
    }
    check_object_schema(schema.get("schema"), "response_format.json_schema.schema")?;
    Ok(model)
}

async fn openai_chat(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(v) => v,
        Err((raw, problem)) => {
            let _in = shared.enter(raw);
            return openai_bad_request(&problem);
        }
    };
    let _in = shared.enter(body.clone());
    if !shared.authorized(&headers) {
        return openai_unauthorized();
    }
    let model = match check_openai_chat(&body) {
        Ok(m) => m,
        Err(problem) => return openai_bad_request(&problem),
    };
    if !shared.has_model::<OpenAi>(&model) {
        return openai_not_found(&model);
    }
    let (delay, outcome) = shared.plan();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let content = match outcome {
        Outcome::Answer(content) => content,
        Outcome::NotFound => return openai_not_found(&model),
        Outcome::ServerError => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "The server had an error while processing your request.",
            )
        }
        Outcome::Busy => {
            let body = json!({"error": {
                "message": "Rate limit reached for requests. Please try again in 1s.",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }});
            return (StatusCode::TOO_MANY_REQUESTS, retry_after(), Json(body)).into_response();
        }
    };
    let (prompt, completion) = (prompt_tokens(&body), tokens(&content));
    Json(json!({
        "id": format!("chatcmpl-testkit-{}", shared.next_id()),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    }))
    .into_response()
}
