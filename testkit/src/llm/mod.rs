//! Protocol-level fake LLM servers: [`OllamaServer`] (`POST /api/chat`, `GET /api/tags`)
//! and [`OpenAiServer`] (`POST /v1/chat/completions`, `GET /v1/models`) on a free
//! 127.0.0.1 port, answering with the real APIs' JSON shapes and status codes.
//!
//! They are strict: a chat request whose shape the real server would reject or treat
//! differently (unknown model, empty `messages`, a role other than
//! `system`/`user`/`assistant`, `stream` not `false`, no JSON-object schema in `format` /
//! `response_format`, a wrong bearer key) gets the real server's error status with a
//! message naming the problem. Every chat body received is recorded ([`LlmServer::requests`]);
//! what a well-formed request gets is set by a [`Mode`] (a canned answer, invalid JSON,
//! 5xx, 503/429 with `Retry-After`, a slow reply, a missing model).
//!
//! ```no_run
//! # use sqlvigil_testkit::llm::{Mode, OllamaServer};
//! let server = OllamaServer::start(Mode::Answer(serde_json::json!({"title": "Blocking"})));
//! let base_url = server.base_url(); // e.g. http://127.0.0.1:41234
//! // ... point the client at base_url, ask, then:
//! assert_eq!(server.requests()[0]["stream"], false);
//! ```
//!
//! Each server runs on a thread of its own with a single-threaded tokio runtime, so it
//! works from sync tests and from any async test flavour; dropping it stops it.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::Router;
use serde_json::{json, Value};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Models a server lists unless told otherwise.
pub const DEFAULT_MODEL: &str = "llama3.2:1b";
/// The content of an invalid answer ([`Mode::InvalidJson`], [`Mode::InvalidThenValid`]).
pub const NOT_JSON: &str = "this is not json";
/// `Retry-After` seconds sent with [`Mode::Busy`] rejections.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// What a well-formed chat request gets. Counts ("first n") start at [`LlmServer::start`]
/// or the last [`LlmServer::set_mode`], over well-formed requests only.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with the value serialized as the assistant content (a canned insight).
    Answer(Value),
    /// 200 with content [`NOT_JSON`].
    InvalidJson,
    /// The first request gets [`NOT_JSON`], later ones the value.
    InvalidThenValid(Value),
    /// 500 with an error body, every time.
    ServerError,
    /// The first `n` requests get 500, later ones the value.
    FailTimes(u32, Value),
    /// The first `n` requests get the server's overload answer (Ollama 503, OpenAI 429)
    /// with `Retry-After: 1`, later ones the value.
    Busy(u32, Value),
    /// Sleep, then answer with the value.
    Slow(Duration, Value),
    /// 404 model not found, whatever the model.
    NotFound,
}

/// The API a [`LlmServer`] speaks: [`Ollama`] or [`OpenAi`].
pub trait Api: Send + Sync + 'static {
    /// The routes, over the shared state.
    fn router() -> Router<Shared>;
    /// Whether `requested` names the listed model `listed`.
    fn same_model(listed: &str, requested: &str) -> bool;
}

/// Ollama's API ([`OllamaServer`]).
pub enum Ollama {}
/// The OpenAI chat completions API ([`OpenAiServer`]).
pub enum OpenAi {}

/// A fake Ollama: `GET /api/tags`, `POST /api/chat`.
pub type OllamaServer = LlmServer<Ollama>;
/// A fake OpenAI-compatible server: `GET /v1/models`, `POST /v1/chat/completions`.
pub type OpenAiServer = LlmServer<OpenAi>;

/// A running fake server; stops on drop.
pub struct LlmServer<A: Api> {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    api: PhantomData<A>,
}

/// State shared between a server's handlers and the test.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Inner>>);

struct Inner {
    mode: Mode,
    /// Well-formed chat requests since the mode was set.
    served: u32,
    models: Vec<String>,
    requests: Vec<Value>,
    in_flight: usize,
    max_in_flight: usize,
    api_key: Option<String>,
    next_id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Record a chat body and count it in flight until the guard drops.
    fn enter(&self, body: Value) -> InFlight {
        let mut inner = self.lock();
        inner.requests.push(body);
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        InFlight(self.clone())
    }

    fn has_model<A: Api>(&self, requested: &str) -> bool {
        self.lock()
            .models
            .iter()
            .any(|m| A::same_model(m, requested))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let inner = self.lock();
        let Some(key) = &inner.api_key else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(key.as_str())
    }

    fn next_id(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        inner.next_id
    }

    /// What the mode says for the next well-formed request.
    fn plan(&self) -> (Option<Duration>, Outcome) {
        let mut inner = self.lock();
        let n = inner.served;
        inner.served += 1;
        let answer = |v: &Value| Outcome::Answer(v.to_string());
        match &inner.mode {
            Mode::Answer(v) => (None, answer(v)),
            Mode::InvalidJson => (None, Outcome::Answer(NOT_JSON.into())),
            Mode::InvalidThenValid(_) if n == 0 => (None, Outcome::Answer(NOT_JSON.into())),
            Mode::InvalidThenValid(v) => (None, answer(v)),
            Mode::ServerError => (None, Outcome::ServerError),
            Mode::FailTimes(times, _) if n < *times => (None, Outcome::ServerError),
            Mode::FailTimes(_, v) => (None, answer(v)),
            Mode::Busy(times, _) if n < *times => (None, Outcome::Busy),
            Mode::Busy(_, v) => (None, answer(v)),
            Mode::Slow(delay, v) => (Some(*delay), answer(v)),
            Mode::NotFound => (None, Outcome::NotFound),
        }
    }
}

/// Counts a chat request in flight while alive (also when the client gives up).
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

enum Outcome {
    Answer(String),
    ServerError,
    Busy,
    NotFound,
}

impl<A: Api> LlmServer<A> {
    /// Start on a free loopback port listing [`DEFAULT_MODEL`]. Panics if it cannot bind.
    pub fn start(mode: Mode) -> Self {
        Self::start_with_models(mode, &[DEFAULT_MODEL])
    }

    /// Start listing `models` (e.g. `&["llama3.2:1b", "qwen2.5:0.5b"]`).
    pub fn start_with_models(mode: Mode, models: &[&str]) -> Self {
        match Self::try_start(mode, models) {
            Ok(server) => server,
            Err(e) => panic!("fake LLM server: {e}"),
        }
    }

    fn try_start(mode: Mode, models: &[&str]) -> Result<Self, String> {
        let (addr, runtime, listener) = crate::loopback_server()?;
        let shared = Shared(Arc::new(Mutex::new(Inner {
            mode,
            served: 0,
            models: models.iter().map(|m| m.to_string()).collect(),
            requests: Vec::new(),
            in_flight: 0,
            max_in_flight: 0,
            api_key: None,
            next_id: 0,
        })));
        let app = A::router().with_state(shared.clone());
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("fake-llm-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(|e| format!("thread: {e}"))?;
        Ok(LlmServer {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
            api: PhantomData,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every chat body received, in order (a body that was not JSON is recorded as a
    /// JSON string of its text).
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().requests.clone()
    }

    /// Change what later requests get; restarts the mode's request count.
    pub fn set_mode(&self, mode: Mode) {
        let mut inner = self.shared.lock();
        inner.mode = mode;
        inner.served = 0;
    }

    /// Replace the models the server has.
    pub fn set_models(&self, models: &[&str]) {
        self.shared.lock().models = models.iter().map(|m| m.to_string()).collect();
    }

    /// Most chat requests the server was handling at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }
}

impl OpenAiServer {
    /// Require `Authorization: Bearer <key>` on every endpoint (401 otherwise).
    pub fn with_api_key(self, key: &str) -> Self {
        self.shared.lock().api_key = Some(key.to_string());
        self
    }
}

impl<A: Api> Drop for LlmServer<A> {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Parse a chat body, recording it either way; `Err` is the text when it is not JSON.
fn parse_body(body: &Bytes) -> Result<Value, (Value, String)> {
    serde_json::from_slice(body).map_err(|e| {
        (
            Value::String(String::from_utf8_lossy(body).into_owned()),
            format!("invalid JSON body: {e}"),
        )
    })
}

/// The checks both APIs share: `model` a string, `messages` a non-empty array of
/// `{role: system|user|assistant, content: string}`. Returns the model name.
fn check_model_and_messages(body: &Value) -> Result<String, String> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err("\"model\" must be a non-empty string".into()),
        None => return Err("\"model\" is required".into()),
    };
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err("\"messages\" must not be empty".into()),
        _ => return Err("\"messages\" must be an array of {role, content}".into()),
    };
    for (i, msg) in messages.iter().enumerate() {
        match msg.get("role").and_then(Value::as_str) {
            Some("system" | "user" | "assistant") => {}
            Some(other) => {
                return Err(format!(
                    "messages[{i}].role `{other}` must be system, user or assistant"
                ))
            }
            None => return Err(format!("messages[{i}].role must be a string")),
        }
        if !msg.get("content").is_some_and(Value::is_string) {
            return Err(format!("messages[{i}].content must be a string"));
        }
    }
    Ok(model)
}

/// `schema` is a JSON schema for an object (`{"type": "object", ...}`).
fn check_object_schema(schema: Option<&Value>, field: &str) -> Result<(), String> {
    match schema {
        Some(s @ Value::Object(_)) if s.get("type") == Some(&json!("object")) => Ok(()),
        Some(Value::Object(_)) => Err(format!("{field} must have \"type\": \"object\"")),
        Some(Value::String(s)) => Err(format!(
            "{field} is the string {s:?}; a JSON schema object is expected"
        )),
        Some(_) => Err(format!("{field} must be a JSON schema object")),
        None => Err(format!("{field} (a JSON schema object) is required")),
    }
}

/// Rough token count: one per four characters, at least one.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

fn prompt_tokens(body: &Value) -> u64 {
    body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| tokens(m["content"].as_str().unwrap_or("")) + 4)
                .sum()
        })
        .unwrap_or(1)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn retry_after() -> [(header::HeaderName, String); 1] {
    [(header::RETRY_AFTER, BUSY_RETRY_AFTER_SECS.to_string())]
}

// ---------------------------------------------------------------- Ollama

mod ollama;
mod openai;

#[cfg(test)]
mod tests {
    use super::*;

    fn ollama_body() -> Value {
        json!({
            "model": "llama3.2:1b",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": false,
            "format": {"type": "object", "properties": {}}
        })
    }

    fn openai_body() -> Value {
        json!({
            "model": "llama3.2:1b",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            "stream": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "insight", "strict": true, "schema": {"type": "object"}}}
        })
    }

    fn post(url: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut req = reqwest::Client::new().post(url).json(body);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            (status, resp.json().await.expect("json body"))
        })
    }

    #[test]
    fn ollama_shape_checks_name_the_problem() {
        let s = OllamaServer::start(Mode::Answer(json!({"ok": true})));
        let url = format!("{}/api/chat", s.base_url());
        let (code, reply) = post(&url, &ollama_body(), None);
        assert_eq!(code, 200, "{reply}");
        assert_eq!(reply["message"]["content"], r#"{"ok":true}"#);
        assert_eq!(reply["done"], true);

        let cases: [(&str, Value); 5] = [
            ("stream", json!(null)),
            ("format", json!("json")),
            ("messages", json!([])),
            ("messages", json!([{"role": "robot", "content": "x"}])),
            ("format", json!({"type": "array"})),
        ];
        for (field, value) in cases {
            let mut body = ollama_body();
            if value.is_null() {
                body.as_object_mut().expect("object").remove(field);
            } else {
                body[field] = value;
            }
            let (code, reply) = post(&url, &body, None);
            assert_eq!(code, 400, "{field}: {reply}");
            let msg = reply["error"].as_str().expect("error string");
            assert!(msg.contains(field), "{field}: {msg}");
        }

        let mut body = ollama_body();
        body["model"] = json!("mistral");
        let (code, reply) = post(&url, &body, None);
        assert_eq!(code, 404);
        assert_eq!(
            reply["error"],
            "model \"mistral\" not found, try pulling it first"
        );
        assert_eq!(s.requests().len(), 7);
    }

    #[test]
    fn ollama_untagged_name_means_latest() {
        assert!(Ollama::same_model("llama3.2:latest", "llama3.2"));
        assert!(!Ollama::same_model("llama3.2:1b", "llama3.2"));
    }

    #[test]
    fn openai_checks_key_and_response_format() {
        let s = OpenAiServer::start(Mode::FailTimes(1, json!({"a": 1}))).with_api_key("sk-test");
        let url = format!("{}/v1/chat/completions", s.base_url());
        let (code, reply) = post(&url, &openai_body(), None);
        assert_eq!(code, 401, "{reply}");
        let (code, reply) = post(&url, &openai_body(), Some("sk-test"));
        assert_eq!(code, 500, "{reply}");
        assert_eq!(reply["error"]["type"], "server_error");
        let (code, reply) = post(&url, &openai_body(), Some("sk-test"));
        assert_eq!(code, 200, "{reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], r#"{"a":1}"#);
        assert!(reply["usage"]["total_tokens"].as_u64().expect("tokens") > 0);

        let mut body = openai_body();
        body["response_format"] = json!({"type": "json_object"});
        let (code, reply) = post(&url, &body, Some("sk-test"));
        assert_eq!(code, 400);
        assert!(
            reply["error"]["message"]
                .as_str()
                .expect("message")
                .contains("json_schema"),
            "{reply}"
        );
    }
}
