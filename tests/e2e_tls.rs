//! HTTPS for the API (`api.tls`): with a certificate and key the API answers TLS only
//! (a client trusting the CA gets `/health` and the API; plain HTTP on the port gets no
//! answer), a silent client does not hold up the others, and `sqlvigil validate` names a
//! missing or bad file.

mod common;

use common::bin;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_api_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = sqlvigil_testkit::tls::localhost_cert("sqlvigil e2e CA").expect("cert");
    let (cert_file, key_file) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    std::fs::write(&cert_file, &cert.cert_pem).expect("write cert");
    std::fs::write(&key_file, &cert.key_pem).expect("write key");
    let port = sqlvigil_testkit::net::free_port();
    let cfg = dir.path().join("sqlvigil.yaml");
    std::fs::write(
        &cfg,
        format!(
            "api:\n  addr: 127.0.0.1:{port}\n  tls:\n    cert_file: {}\n    key_file: {}\nreceiver:\n  grpc_addr: 127.0.0.1:0\n  http_addr: 127.0.0.1:0\nstore:\n  data_dir: {}\n",
            cert_file.display(),
            key_file.display(),
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let token = common::cli(&[
        "token",
        "create",
        "--role",
        "viewer",
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
    ]);
    let mut child = Command::new(bin())
        .args(["run", "--config", &cfg.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqlvigil run");
    let ca = reqwest::Certificate::from_pem(cert.ca_pem.as_bytes()).expect("CA");
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    // A client that connects and says nothing, holding a handshake open.
    let _silent = loop_connect(port).await;
    let base = format!("https://127.0.0.1:{port}");
    let up = sqlvigil_testkit::wait_for(Duration::from_secs(30), || async {
        let r = https.get(format!("{base}/health")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let who = https
        .get(format!("{base}/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "/health over HTTPS");
    let who = who.expect("whoami over HTTPS");
    assert_eq!(who.status(), 200);
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP gets no answer on the TLS port"
    );

    // validate names the file at fault.
    std::fs::write(&key_file, "not a key").expect("write");
    let out = Command::new(bin())
        .args(["validate", &cfg.to_string_lossy()])
        .output()
        .expect("validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.tls.key_file"), "{err}");
}

/// A TCP connection to `port` once it listens (retried while the server starts).
async fn loop_connect(port: u16) -> Option<tokio::net::TcpStream> {
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
