//! Throw-away TLS certificates for loopback servers under test: a CA and a
//! `localhost` / `127.0.0.1` leaf signed by it, generated per call. Clients trust the
//! CA; servers present the leaf.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA and the leaf it signed, in DER and PEM.
pub struct LocalhostCert {
    pub ca_pem: String,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// PKCS#8.
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

/// A fresh CA (named `ca_name`) and a leaf for `localhost` and `127.0.0.1`.
pub fn localhost_cert(ca_name: &str) -> Result<LocalhostCert, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(LocalhostCert {
        ca_pem: ca_cert.pem(),
        cert_der: leaf.der().to_vec(),
        cert_pem: leaf.pem(),
        key_der: leaf_key.serialize_der(),
        key_pem: leaf_key.serialize_pem(),
    })
}
