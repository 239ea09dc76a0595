//! The server certificate: a throw-away CA and a `localhost`/`127.0.0.1` leaf
//! signed by it, generated at start; the CA is written as PEM for clients to trust.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::TdsError;

pub(crate) struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub ca_pem: String,
}

fn tls_err(e: impl std::fmt::Display) -> TdsError {
    TdsError::Tls(e.to_string())
}

pub(crate) fn generate() -> Result<ServerTls, TdsError> {
    let cert = sqlvigil_testkit::tls::localhost_cert("sqlvigil-testkit-tds CA").map_err(tls_err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der)),
        )
        .map_err(tls_err)?;
    // TLS 1.3 session tickets would be sent after the handshake, when the client
    // has already stopped wrapping records in PRELOGIN packets (SQL Server does not
    // send any either).
    config.send_tls13_tickets = 0;
    Ok(ServerTls {
        config: Arc::new(config),
        ca_pem: cert.ca_pem,
    })
}
