//! `api:` — the REST API listener.

use serde::{Deserialize, Serialize};
use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
use std::net::SocketAddr;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub addr: String,
    /// `/metrics` answers only with a valid token (of any role); open by default, as
    /// Prometheus scrapers expect.
    pub metrics_require_token: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: "127.0.0.1:8080".into(),
            metrics_require_token: false,
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

#[async_trait]
impl Build for ApiConfig {
    /// The bound listener; [`crate::serve`] answers on it.
    type Output = TcpListener;

    fn validate(&self) -> Result<()> {
        self.socket_addr().map(|_| ())
    }

    async fn build(&self, _ctx: &BuildContext) -> Result<TcpListener> {
        TcpListener::bind(self.socket_addr()?)
            .await
            .map_err(|e| Error::io(format!("cannot bind api.addr {}", self.addr), e))
    }
}
