//! `api:` — the REST API listener and what guards it: CORS, timeouts, body limits,
//! compression and per-token rate limits.

use serde::{Deserialize, Serialize};
use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub addr: String,
    /// `/metrics` answers only with a valid token (of any role); open by default, as
    /// Prometheus scrapers expect.
    pub metrics_require_token: bool,
    /// Origins (`https://grafana.example.com`) whose pages may call the API from a
    /// browser; none by default (the console is served by the API itself). `*` allows
    /// any origin.
    pub cors_origins: Vec<String>,
    /// A request still unanswered after this is answered 503 (the live stream excepted).
    #[serde(with = "sqlvigil_model::duration")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Requests per second each token may make (a burst of `rate_burst`); 429 with
    /// `Retry-After` beyond. 0 turns the limit off.
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// Compress answers (gzip or brotli, as the client accepts; never the live stream).
    pub compression: bool,
    /// Serve HTTPS with this certificate and key (plain HTTP when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: "127.0.0.1:8080".into(),
            metrics_require_token: false,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            rate_per_second: 100,
            rate_burst: 400,
            compression: true,
            tls: None,
        }
    }
}

impl ApiConfig {
    fn socket_addr(&self) -> Result<SocketAddr> {
        self.addr.parse().map_err(|_| {
            Error::Config(format!(
                "api.addr: `{}` is not a socket address (host:port)",
                self.addr
            ))
        })
    }
}

/// The API's bound listener, and its TLS acceptor when `api.tls` is set.
pub struct ApiListener {
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl ApiListener {
    /// Plain HTTP on `tcp`.
    pub fn plain(tcp: TcpListener) -> Self {
        ApiListener { tcp, tls: None }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

#[async_trait]
impl Build for ApiConfig {
    /// The bound listener; [`crate::serve`] answers on it.
    type Output = ApiListener;

    fn validate(&self) -> Result<()> {
        self.socket_addr()?;
        if self.request_timeout.is_zero() {
            return Err(Error::Config("api.request_timeout must be above 0s".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(Error::Config(format!(
                "api.max_body_bytes must be at least 1024, got {}",
                self.max_body_bytes
            )));
        }
        if self.rate_per_second > 0 && self.rate_burst == 0 {
            return Err(Error::Config(
                "api.rate_burst must be at least 1 when api.rate_per_second is set".into(),
            ));
        }
        for o in &self.cors_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && axum::http::HeaderValue::from_str(o).is_ok()
                    && !o.ends_with('/'));
            if !ok {
                return Err(Error::Config(format!(
                    "api.cors_origins: `{o}` is not an origin such as https://grafana.example.com (scheme and host, no path) or *"
                )));
            }
        }
        if let Some(tls) = &self.tls {
            tls.acceptor()?;
        }
        Ok(())
    }

    async fn build(&self, _ctx: &BuildContext) -> Result<ApiListener> {
        let tls = self.tls.as_ref().map(|t| t.acceptor()).transpose()?;
        let tcp = TcpListener::bind(self.socket_addr()?)
            .await
            .map_err(|e| Error::io(format!("cannot bind api.addr {}", self.addr), e))?;
        Ok(ApiListener { tcp, tls })
    }
}
