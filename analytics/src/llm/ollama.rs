//! Ollama client: `POST /api/chat` (`stream: false`, the insight schema as `format`) and
//! `GET /api/tags` to check that the model is pulled.
//!
//! ```text
//! → {"model":"llama3.2:1b","messages":[{"role":"user","content":"…"}],"stream":false,
//!    "format":{"type":"object",…},"options":{"temperature":0.1,"num_ctx":8192},"keep_alive":"5m"}
//! ← {"model":"llama3.2:1b","message":{"role":"assistant","content":"{…}"},"done":true,
//!    "prompt_eval_count":412,"eval_count":96,"total_duration":5191566416,…}
//! ```
//!
//! A missing model is `404 {"error":"model \"x\" not found, try pulling it first"}`, which
//! surfaces as [`AnalyticsError::Status`] and is not retried. Timeouts, retries and the
//! concurrency bound live in [`super::transport`].

use super::transport::{join_url, Transport};
use super::{AnalyticsError, ChatReply, ChatRequest, LlmClient, LlmConfig, Message, ModelStatus};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub struct OllamaClient {
    cfg: LlmConfig,
    transport: Transport,
    chat_url: String,
    tags_url: String,
}

impl OllamaClient {
    /// Checks `cfg` and builds the HTTP client; no request is made.
    pub fn new(cfg: LlmConfig) -> Result<Self, AnalyticsError> {
        let transport = Transport::new(&cfg)?;
        Ok(OllamaClient {
            chat_url: join_url(&cfg.base_url, "api/chat"),
            tags_url: join_url(&cfg.base_url, "api/tags"),
            transport,
            cfg,
        })
    }

    fn body<'a>(&'a self, req: &'a ChatRequest) -> ChatBody<'a> {
        let options = Options {
            temperature: self.cfg.temperature,
            num_ctx: self.cfg.num_ctx,
        };
        ChatBody {
            model: &self.cfg.model,
            messages: &req.messages,
            stream: false,
            format: &req.schema,
            options: (options.temperature.is_some() || options.num_ctx.is_some())
                .then_some(options),
            keep_alive: self.cfg.keep_alive.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    format: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Options>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<&'a str>,
}

#[derive(Serialize)]
struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_ctx: Option<u32>,
}

#[derive(Deserialize)]
struct ChatResponse {
    model: Option<String>,
    message: ResponseMessage,
    done: Option<bool>,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    /// Nanoseconds, server side (load + prompt + generation).
    total_duration: Option<u64>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    content: String,
}

#[derive(Deserialize)]
struct Tags {
    models: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: Option<String>,
    model: Option<String>,
}

/// Ollama names without a tag mean `:latest` (`llama3.2` is `llama3.2:latest`). A `:`
/// before the last `/` is a registry port, not a tag.
fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Whether the server's `listed` name is the configured `wanted` model.
fn same_model(listed: &str, wanted: &str) -> bool {
    listed == wanted || with_tag(listed) == with_tag(wanted)
}

#[async_trait]
impl LlmClient for OllamaClient {
    fn model(&self) -> &str {
        &self.cfg.model
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, AnalyticsError> {
        let reply = self
            .transport
            .post_json(&self.chat_url, &self.body(req))
            .await?;
        let parsed: ChatResponse = reply.json()?;
        if parsed.done == Some(false) {
            return Err(AnalyticsError::Protocol {
                url: reply.url,
                message: "reply has \"done\": false although \"stream\": false was asked".into(),
            });
        }
        if let Some(reason) = parsed.done_reason.as_deref().filter(|r| *r != "stop") {
            tracing::warn!(model = %self.cfg.model, reason, "ollama stopped early; the answer may be cut off");
        }
        tracing::debug!(
            model = %self.cfg.model,
            server_ns = parsed.total_duration,
            latency_ms = reply.latency.as_millis() as u64,
            "ollama chat answered"
        );
        Ok(ChatReply {
            content: parsed.message.content,
            model: parsed.model.unwrap_or_else(|| self.cfg.model.clone()),
            prompt_tokens: parsed.prompt_eval_count,
            completion_tokens: parsed.eval_count,
            latency: reply.latency,
        })
    }

    async fn check_model(&self) -> Result<ModelStatus, AnalyticsError> {
        let tags: Tags = self.transport.get(&self.tags_url).await?.json()?;
        let mut available = Vec::new();
        for tag in tags.models {
            let names = [tag.name, tag.model];
            if names
                .iter()
                .flatten()
                .any(|n| same_model(n, &self.cfg.model))
            {
                return Ok(ModelStatus::Present);
            }
            if let Some(name) = names.into_iter().flatten().next() {
                if !available.contains(&name) {
                    available.push(name);
                }
            }
        }
        Ok(ModelStatus::Missing { available })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Provider;
    use std::time::Duration;

    fn cfg() -> LlmConfig {
        LlmConfig {
            provider: Provider::Ollama,
            base_url: "http://127.0.0.1:11434/".into(),
            model: "llama3.2:1b".into(),
            timeout: Duration::from_secs(5),
            max_concurrency: 1,
            retries: 0,
            temperature: None,
            num_ctx: None,
            keep_alive: None,
            api_key: None,
        }
    }

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            schema: serde_json::json!({"type": "object"}),
        }
    }

    #[test]
    fn body_omits_unset_options_and_keep_alive() {
        let client = OllamaClient::new(cfg()).expect("client");
        let req = request();
        let body = serde_json::to_value(client.body(&req)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "model": "llama3.2:1b",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": false,
                "format": {"type": "object"}
            })
        );
        assert_eq!(client.chat_url, "http://127.0.0.1:11434/api/chat");
    }

    #[test]
    fn body_carries_only_the_options_set() {
        let client = OllamaClient::new(LlmConfig {
            num_ctx: Some(4096),
            keep_alive: Some("5m".into()),
            ..cfg()
        })
        .expect("client");
        let req = request();
        let body = serde_json::to_value(client.body(&req)).expect("json");
        assert_eq!(body["options"], serde_json::json!({"num_ctx": 4096}));
        assert_eq!(body["keep_alive"], "5m");
    }

    #[test]
    fn model_names_default_to_latest() {
        assert!(same_model("llama3.2:latest", "llama3.2"));
        assert!(same_model("llama3.2", "llama3.2:latest"));
        assert!(same_model("llama3.2:1b", "llama3.2:1b"));
        assert!(!same_model("llama3.2:1b", "llama3.2"));
        assert!(!same_model("llama3.2:latest", "llama3.2:1b"));
        assert_eq!(
            with_tag("reg.local:5000/ns/m"),
            "reg.local:5000/ns/m:latest"
        );
    }

    #[test]
    fn new_rejects_invalid_config() {
        let err = OllamaClient::new(LlmConfig {
            max_concurrency: 0,
            ..cfg()
        })
        .err()
        .expect("must fail");
        assert!(matches!(err, AnalyticsError::Config(_)), "{err}");
    }
}
