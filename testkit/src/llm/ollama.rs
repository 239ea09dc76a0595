//! Ollama's `/api/chat` and `/api/tags`, as the real server answers them.

use super::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

impl Api for Ollama {
    fn router() -> Router<Shared> {
        Router::new()
            .route("/api/tags", get(ollama_tags))
            .route("/api/chat", post(ollama_chat))
    }

    /// A name without a tag means `:latest`.
    fn same_model(listed: &str, requested: &str) -> bool {
        fn tagged(name: &str) -> String {
            let last = name.rsplit('/').next().unwrap_or(name);
            if last.contains(':') {
                name.to_string()
            } else {
                format!("{name}:latest")
            }
        }
        tagged(listed) == tagged(requested)
    }
}

fn ollama_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn ollama_not_found(model: &str) -> Response {
    ollama_error(
        StatusCode::NOT_FOUND,
        &format!("model \"{model}\" not found, try pulling it first"),
    )
}

async fn ollama_tags(State(shared): State<Shared>) -> Response {
    let models: Vec<Value> = shared
        .lock()
        .models
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "model": name,
                "modified_at": chrono::Utc::now().to_rfc3339(),
                "size": 1_321_098_329u64,
                "digest": "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "1.2B",
                    "quantization_level": "Q8_0"
                }
            })
        })
        .collect();
    Json(json!({ "models": models })).into_response()
}

/// What Ollama would say about a chat body it cannot take as asked.
fn check_ollama_chat(body: &Value) -> Result<String, String> {
    let model = check_model_and_messages(body)?;
    match body.get("stream") {
        Some(Value::Bool(false)) => {}
        None => {
            return Err(
                "\"stream\" is missing: Ollama streams by default; send \"stream\": false".into(),
            )
        }
        Some(other) => {
            return Err(format!(
                "\"stream\" is {other}; only \"stream\": false is answered in one piece"
            ))
        }
    }
    check_object_schema(body.get("format"), "\"format\"")?;
    if let Some(options) = body.get("options") {
        let Some(options) = options.as_object() else {
            return Err("\"options\" must be an object".into());
        };
        if options.get("temperature").is_some_and(|t| !t.is_number()) {
            return Err("options.temperature must be a number".into());
        }
        if options.get("num_ctx").is_some_and(|n| !n.is_u64()) {
            return Err("options.num_ctx must be a positive integer".into());
        }
    }
    if body
        .get("keep_alive")
        .is_some_and(|k| !(k.is_string() || k.is_number()))
    {
        return Err("\"keep_alive\" must be a duration string or a number of seconds".into());
    }
    Ok(model)
}

async fn ollama_chat(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(v) => v,
        Err((raw, problem)) => {
            let _in = shared.enter(raw);
            return ollama_error(StatusCode::BAD_REQUEST, &problem);
        }
    };
    let _in = shared.enter(body.clone());
    let model = match check_ollama_chat(&body) {
        Ok(m) => m,
        Err(problem) => return ollama_error(StatusCode::BAD_REQUEST, &problem),
    };
    if !shared.has_model::<Ollama>(&model) {
        return ollama_not_found(&model);
    }
    let (delay, outcome) = shared.plan();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let content = match outcome {
        Outcome::Answer(content) => content,
        Outcome::NotFound => return ollama_not_found(&model),
        Outcome::ServerError => {
            return ollama_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "llama runner process has terminated: exit status 2",
            )
        }
        Outcome::Busy => {
            let body = json!({"error": "server busy, please try again.  maximum pending requests exceeded"});
            return (StatusCode::SERVICE_UNAVAILABLE, retry_after(), Json(body)).into_response();
        }
    };
    let (prompt_eval_count, eval_count) = (prompt_tokens(&body), tokens(&content));
    let (load, prompt_ns, eval_ns) = (
        12_000_000u64,
        prompt_eval_count * 250_000,
        eval_count * 20_000_000,
    );
    Json(json!({
        "model": model,
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "message": {"role": "assistant", "content": content},
        "done": true,
        "done_reason": "stop",
        "total_duration": load + prompt_ns + eval_ns,
        "load_duration": load,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_count,
        "eval_duration": eval_ns
    }))
    .into_response()
}

// ---------------------------------------------------------------- OpenAI
