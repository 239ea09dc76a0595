//! The server certificate: a throw-away CA and a `localhost`/`127.0.0.1` leaf
//! signed by it, generated at start; the CA is written as PEM for clients to trust.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
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
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sqlvigil-testkit-tds CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(tls_err)?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(tls_err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(tls_err)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(tls_err)?;
    // TLS 1.3 session tickets would be sent after the handshake, when the client
    // has already stopped wrapping records in PRELOGIN packets (SQL Server does not
    // send any either).
    config.send_tls13_tickets = 0;
    Ok(ServerTls {
        config: Arc::new(config),
        ca_pem: ca_cert.pem(),
    })
}
