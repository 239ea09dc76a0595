//! LLM clients behind one small trait: [`ollama::OllamaClient`] (`POST /api/chat` with a
//! JSON-schema `format`) and [`openai::OpenAiClient`] (`POST /v1/chat/completions` with
//! `response_format: json_schema`, for llama.cpp server, vLLM and hosted endpoints).
//!
//! Clients own transport concerns only — timeouts, bounded concurrency, retries with
//! backoff on connection errors and 5xx — and return the model's raw text. Validating that
//! text against the insight schema (and asking once more) is the analyzer's job.

pub mod ollama;
pub mod openai;
pub(crate) mod transport;

pub use crate::AnalyticsError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Ollama,
    /// OpenAI-compatible `/v1/chat/completions`.
    Openai,
}

/// `analytics.llm` in sqlvigil.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: Provider,
    /// e.g. `http://127.0.0.1:11434` (Ollama) or `http://127.0.0.1:8000` (vLLM).
    pub base_url: String,
    pub model: String,
    /// Whole-request timeout (a slow model is a failure, not a hang).
    #[serde(default = "default_timeout", with = "sqlvigil_model::duration")]
    pub timeout: Duration,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Extra attempts after a connection error or 5xx.
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Ollama `options.num_ctx`.
    #[serde(default)]
    pub num_ctx: Option<u32>,
    /// Ollama `keep_alive`, e.g. `5m`.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Bearer key for OpenAI-compatible servers (or `SQLVIGIL_ANALYTICS__LLM__API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_concurrency() -> usize {
    2
}

fn default_retries() -> u32 {
    2
}

impl LlmConfig {
    /// Check what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "analytics.llm.base_url: `{}` must start with http:// or https://",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return Err("analytics.llm.model must not be empty".into());
        }
        if self.max_concurrency == 0 {
            return Err("analytics.llm.max_concurrency must be greater than 0".into());
        }
        if self.timeout.is_zero() {
            return Err("analytics.llm.timeout must be greater than 0".into());
        }
        Ok(())
    }

    /// Build the client for `provider`.
    pub fn build(&self) -> Result<Box<dyn LlmClient>, AnalyticsError> {
        self.validate().map_err(AnalyticsError::Config)?;
        Ok(match self.provider {
            Provider::Ollama => Box::new(ollama::OllamaClient::new(self.clone())?),
            Provider::Openai => Box::new(openai::OpenAiClient::new(self.clone())?),
        })
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// What the analyzer asks.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// JSON schema the answer must follow (Ollama `format`, OpenAI `response_format`).
    pub schema: serde_json::Value,
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    /// The assistant message content (expected to be JSON for the schema).
    pub content: String,
    /// The model name the server reported.
    pub model: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub latency: Duration,
}

/// Whether the configured model is available on the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    Present,
    /// The server answered but does not list the model; the names it has.
    Missing {
        available: Vec<String>,
    },
}

#[async_trait]
pub trait LlmClient: Send + Sync {
    /// The configured model name.
    fn model(&self) -> &str;
    /// One chat completion, with the client's retries and concurrency bound applied.
    async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, AnalyticsError>;
    /// Ask the server whether the model is there (Ollama `GET /api/tags`, OpenAI `GET /v1/models`).
    async fn check_model(&self) -> Result<ModelStatus, AnalyticsError>;
}
