//! The connection to Elasticsearch: the official client built from [`Connection`]
//! (nodes, basic or API-key auth, a custom CA), and the few calls every other module
//! needs — raw JSON requests with errors that say whether to retry.

use crate::{BridgeError, Result};
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{headers::HeaderMap, Method};
use elasticsearch::Elasticsearch;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// How to authenticate.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// An API key as `id` + `api_key`.
    ApiKey {
        id: String,
        key: String,
    },
    /// An API key already base64-encoded (`id:api_key`), as Kibana shows it.
    EncodedApiKey(String),
}

/// Where Elasticsearch is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// Base URL, e.g. `https://es.example:9200`.
    pub url: String,
    pub auth: Auth,
    /// PEM file of the CA that signed the cluster's certificate (self-signed clusters).
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A client for one cluster.
#[derive(Clone)]
pub struct Elastic {
    client: Elasticsearch,
    url: String,
}

impl std::fmt::Debug for Elastic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elastic").field("url", &self.url).finish()
    }
}

impl Elastic {
    pub fn connect(c: &Connection) -> Result<Elastic> {
        let url =
            Url::parse(&c.url).map_err(|e| BridgeError::Config(format!("url `{}`: {e}", c.url)))?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(c.timeout)
            .enable_meta_header(false);
        builder = match &c.auth {
            Auth::None => builder,
            Auth::Basic { username, password } => {
                builder.auth(Credentials::Basic(username.clone(), password.clone()))
            }
            Auth::ApiKey { id, key } => builder.auth(Credentials::ApiKey(id.clone(), key.clone())),
            Auth::EncodedApiKey(k) => builder.auth(Credentials::EncodedApiKey(k.clone())),
        };
        if let Some(path) = &c.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| BridgeError::Config(format!("ca_cert {}: {e}", path.display())))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                BridgeError::Config(format!(
                    "ca_cert {} is not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| BridgeError::Config(format!("transport: {e}")))?;
        Ok(Elastic {
            client: Elasticsearch::new(transport),
            url: c.url.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The official client, for calls with a typed builder (`_bulk`, `_search`).
    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// A request with an optional JSON body; any status is returned (not an error).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let body = body.map(|b| b.to_string());
        let mut headers = HeaderMap::new();
        if body.is_some() {
            headers.insert(
                elasticsearch::http::headers::CONTENT_TYPE,
                elasticsearch::http::headers::HeaderValue::from_static("application/json"),
            );
        }
        let response = self
            .client
            .send(method, path, headers, Some(&query), body, None)
            .await
            .map_err(|e| self.unreachable(e))?;
        read_json(response, path).await
    }

    /// A request that must succeed (2xx); other statuses become [`BridgeError::Status`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, json) = self.send(method, path, query, body).await?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(status_error(path, status, &json, None))
        }
    }

    pub(crate) fn unreachable(&self, e: elasticsearch::Error) -> BridgeError {
        BridgeError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }
}

/// Status and JSON body of a response (an empty or non-JSON body reads as `null`).
pub(crate) async fn read_json(response: Response, what: &str) -> Result<(u16, Value)> {
    let status = response.status_code().as_u16();
    let bytes = response.bytes().await.map_err(|e| BridgeError::Response {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, json))
}

/// `Retry-After` in seconds, when the response carries one.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The error for a non-2xx answer, with Elasticsearch's `error.type: reason` when present.
pub fn status_error(
    what: &str,
    status: u16,
    body: &Value,
    retry_after: Option<u64>,
) -> BridgeError {
    BridgeError::Status {
        what: what.to_string(),
        status,
        reason: error_reason(body),
        retry_after,
    }
}

/// `type: reason` of an Elasticsearch error object (`{"error": {...}}` or the inner object).
pub fn error_reason(body: &Value) -> String {
    let err = body.get("error").unwrap_or(body);
    match (
        err.get("type").and_then(Value::as_str),
        err.get("reason").and_then(Value::as_str),
    ) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (Some(t), None) => t.to_string(),
        _ if err.is_string() => err.as_str().unwrap_or_default().to_string(),
        _ => body.to_string().chars().take(300).collect(),
    }
}
