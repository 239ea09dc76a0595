//! TLS for the API (`api.tls`: a PEM certificate chain and private key, rustls with the
//! `ring` provider): a listener whose connections are TLS sessions. Handshakes run on
//! their own tasks with a deadline, so a slow or silent client never holds up the
//! others; a failed handshake is logged and the connection dropped.

use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// `api.tls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// The acceptor for these files; the error names the file at fault.
    pub fn acceptor(&self) -> Result<TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
            Error::Config(format!("api.tls.{what}: {}: {e}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .map_err(|e| bad("cert_file", &self.cert_file, &e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad("cert_file", &self.cert_file, &e))?;
        if certs.is_empty() {
            return Err(bad("cert_file", &self.cert_file, &"no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| bad("key_file", &self.key_file, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("api.tls: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("key_file", &self.key_file, &e))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A TCP listener whose accepted connections have completed a TLS handshake.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    done_tx: mpsc::Sender<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    done: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        let (done_tx, done) = mpsc::channel(64);
        TlsListener {
            tcp,
            acceptor,
            done_tx,
            done,
        }
    }

    fn handshake(&self, stream: TcpStream, peer: std::net::SocketAddr) {
        let (acceptor, done) = (self.acceptor.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "API TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                Some(ready) = self.done.recv() => return ready,
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => self.handshake(stream, peer),
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!("API accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
