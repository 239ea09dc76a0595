//! OpenAI-compatible client (llama.cpp server, vLLM, hosted endpoints):
//! `POST /v1/chat/completions` with `response_format: json_schema`, and `GET /v1/models`
//! to check the model is served.
//!
//! ```text
//! → {"model":"m","messages":[…],"temperature":0.1,"stream":false,
//!    "response_format":{"type":"json_schema","json_schema":{"name":"insight","strict":true,"schema":{…}}}}
//! ← {"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"{…}"},
//!    "finish_reason":"stop"}],"usage":{"prompt_tokens":412,"completion_tokens":96,"total_tokens":508}}
//! ```
//!
//! `base_url` is the server root (`http://127.0.0.1:8000`); one ending in `/v1`
//! (`https://api.openai.com/v1`) is accepted too. `api_key` is sent as a bearer token.
//! Errors are `{"error":{"message":…}}`. Timeouts, retries and the concurrency bound live
//! in [`super::transport`].

use super::transport::{join_url, Transport};
use super::{AnalyticsError, ChatReply, ChatRequest, LlmClient, LlmConfig, Message, ModelStatus};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// `json_schema.name` sent with every request.
const SCHEMA_NAME: &str = "insight";

pub struct OpenAiClient {
    cfg: LlmConfig,
    transport: Transport,
    chat_url: String,
    models_url: String,
}

impl OpenAiClient {
    /// Checks `cfg` and builds the HTTP client; no request is made.
    pub fn new(cfg: LlmConfig) -> Result<Self, AnalyticsError> {
        let transport = Transport::new(&cfg)?;
        let base = cfg.base_url.trim_end_matches('/');
        let v1 = if base.ends_with("/v1") {
            base.to_string()
        } else {
            join_url(base, "v1")
        };
        Ok(OpenAiClient {
            chat_url: join_url(&v1, "chat/completions"),
            models_url: join_url(&v1, "models"),
            transport,
            cfg,
        })
    }

    fn body<'a>(&'a self, req: &'a ChatRequest) -> ChatBody<'a> {
        ChatBody {
            model: &self.cfg.model,
            messages: &req.messages,
            temperature: self.cfg.temperature,
            stream: false,
            response_format: ResponseFormat {
                kind: "json_schema",
                json_schema: JsonSchema {
                    name: SCHEMA_NAME,
                    strict: true,
                    schema: &req.schema,
                },
            },
        }
    }
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    stream: bool,
    response_format: ResponseFormat<'a>,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: JsonSchema<'a>,
}

#[derive(Serialize)]
struct JsonSchema<'a> {
    name: &'static str,
    strict: bool,
    schema: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Models {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

#[async_trait]
impl LlmClient for OpenAiClient {
    fn model(&self) -> &str {
        &self.cfg.model
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, AnalyticsError> {
        let reply = self
            .transport
            .post_json(&self.chat_url, &self.body(req))
            .await?;
        let parsed: Completion = reply.json()?;
        let protocol = |message: String| AnalyticsError::Protocol {
            url: reply.url.clone(),
            message,
        };
        let Some(choice) = parsed.choices.into_iter().next() else {
            return Err(protocol("reply has no choices".into()));
        };
        let content = match (choice.message.content, choice.message.refusal) {
            (Some(content), _) => content,
            (None, Some(refusal)) => return Err(protocol(format!("the model refused: {refusal}"))),
            (None, None) => return Err(protocol("choices[0].message.content is null".into())),
        };
        if let Some(reason) = choice.finish_reason.as_deref().filter(|r| *r != "stop") {
            tracing::warn!(model = %self.cfg.model, reason, "completion stopped early; the answer may be cut off");
        }
        let usage = parsed.usage;
        Ok(ChatReply {
            content,
            model: parsed.model.unwrap_or_else(|| self.cfg.model.clone()),
            prompt_tokens: usage.as_ref().and_then(|u| u.prompt_tokens),
            completion_tokens: usage.as_ref().and_then(|u| u.completion_tokens),
            latency: reply.latency,
        })
    }

    async fn check_model(&self) -> Result<ModelStatus, AnalyticsError> {
        let models: Models = self.transport.get(&self.models_url).await?.json()?;
        if models.data.iter().any(|m| m.id == self.cfg.model) {
            return Ok(ModelStatus::Present);
        }
        Ok(ModelStatus::Missing {
            available: models.data.into_iter().map(|m| m.id).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Provider;
    use std::time::Duration;

    fn cfg(base_url: &str) -> LlmConfig {
        LlmConfig {
            provider: Provider::Openai,
            base_url: base_url.into(),
            model: "qwen2.5-1.5b-instruct".into(),
            timeout: Duration::from_secs(5),
            max_concurrency: 1,
            retries: 0,
            temperature: None,
            num_ctx: None,
            keep_alive: None,
            api_key: None,
        }
    }

    #[test]
    fn urls_accept_root_or_v1_base() {
        for base in [
            "http://h:8000",
            "http://h:8000/",
            "http://h:8000/v1",
            "http://h:8000/v1/",
        ] {
            let client = OpenAiClient::new(cfg(base)).expect("client");
            assert_eq!(
                client.chat_url, "http://h:8000/v1/chat/completions",
                "{base}"
            );
            assert_eq!(client.models_url, "http://h:8000/v1/models", "{base}");
        }
    }

    #[test]
    fn body_has_json_schema_response_format() {
        let client = OpenAiClient::new(LlmConfig {
            temperature: Some(0.2),
            ..cfg("http://h:1")
        })
        .expect("client");
        let req = ChatRequest {
            messages: vec![Message {
                role: "system".into(),
                content: "be brief".into(),
            }],
            schema: serde_json::json!({"type": "object"}),
        };
        let body = serde_json::to_value(client.body(&req)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "model": "qwen2.5-1.5b-instruct",
                "messages": [{"role": "system", "content": "be brief"}],
                "temperature": 0.2,
                "stream": false,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "insight", "strict": true, "schema": {"type": "object"}}
                }
            })
        );
    }
}
