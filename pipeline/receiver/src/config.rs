//! `receiver:` — the OTLP listeners.

use crate::ingest::Ingest;
use serde::{Deserialize, Serialize};
use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// OTLP receiver listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address.
    pub grpc_addr: String,
    /// OTLP/HTTP listen address.
    pub http_addr: String,
    /// Largest request body accepted (after gzip decompression), like gRPC's 4 MiB default.
    pub max_body_bytes: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc_addr: "127.0.0.1:4317".into(),
            http_addr: "127.0.0.1:4318".into(),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Parse a listen address, naming the field when it is not `host:port`.
pub fn parse_addr(field: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        Error::Config(format!(
            "{field}: `{value}` is not a socket address (host:port)"
        ))
    })
}

/// Bind a listener, naming the field and address on failure.
pub async fn bind(field: &str, addr: &str) -> Result<TcpListener> {
    let sock = parse_addr(field, addr)?;
    TcpListener::bind(sock)
        .await
        .map_err(|source| Error::io(format!("cannot bind {field} {addr}"), source))
}

#[async_trait]
impl Build for ReceiverConfig {
    type Output = Receiver;

    fn validate(&self) -> Result<()> {
        parse_addr("receiver.grpc_addr", &self.grpc_addr)?;
        parse_addr("receiver.http_addr", &self.http_addr)?;
        if self.max_body_bytes == 0 {
            return Err(Error::Config(
                "receiver.max_body_bytes must be greater than 0".into(),
            ));
        }
        Ok(())
    }

    /// Bind both listeners (a taken port fails start-up here, naming the field); they
    /// serve once [`Receiver::start`] gets the ingest core.
    async fn build(&self, _ctx: &BuildContext) -> Result<Receiver> {
        let grpc = bind("receiver.grpc_addr", &self.grpc_addr).await?;
        let http = bind("receiver.http_addr", &self.http_addr).await?;
        let addr = |l: &TcpListener, what: &str| {
            l.local_addr()
                .map_err(|e| Error::io(format!("address of the {what} listener"), e))
        };
        Ok(Receiver {
            grpc_addr: addr(&grpc, "OTLP/gRPC")?,
            http_addr: addr(&http, "OTLP/HTTP")?,
            grpc,
            http,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// Both OTLP listeners, bound and not yet serving.
pub struct Receiver {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    grpc: TcpListener,
    http: TcpListener,
    max_body_bytes: usize,
}

impl Receiver {
    /// Serve both transports over `ingest` until `stop` turns true (in-flight requests
    /// are answered first).
    /// A transport that fails is logged (the other keeps serving).
    pub fn start(
        self,
        ingest: Arc<Ingest>,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<Result<()>>> {
        let limit = self.max_body_bytes;
        let grpc = {
            let (ingest, stop) = (ingest.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::grpc::serve(self.grpc, ingest, limit, stopped(stop)).await {
                    tracing::error!("OTLP/gRPC server failed: {e}");
                }
                Ok(())
            })
        };
        let http = {
            let router = crate::http::router(ingest, limit);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(self.http, router)
                    .with_graceful_shutdown(stopped(stop))
                    .await
                {
                    tracing::error!("OTLP/HTTP server failed: {e}");
                }
                Ok(())
            })
        };
        vec![grpc, http]
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
