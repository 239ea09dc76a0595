//! Credentials reach the wire the way Elasticsearch expects them.

use elasticsearch::http::Method;
use sqlvigil_bridge::{Auth, Connection, Elastic};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

/// Serve one request on a loopback socket and return its header lines (lowercased names).
fn capture(auth: Auth) -> Vec<String> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            headers.push(line.trim().to_string());
        }
        let body = "{}";
        let mut out = stream;
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        headers
    });
    let es = Elastic::connect(&Connection {
        url,
        auth,
        ca_cert: None,
        timeout: Duration::from_secs(5),
    })
    .expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (status, _) = rt
        .block_on(es.send(Method::Get, "/", &[], None))
        .expect("request");
    assert_eq!(status, 200);
    server.join().expect("server thread")
}

fn authorization(headers: &[String]) -> String {
    headers
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn basic_and_api_key_credentials_are_sent() {
    let basic = capture(Auth::Basic {
        username: "elastic".into(),
        password: "changeme".into(),
    });
    // base64("elastic:changeme")
    assert_eq!(authorization(&basic), "Basic ZWxhc3RpYzpjaGFuZ2VtZQ==");
    let key = capture(Auth::EncodedApiKey(
        "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==".into(),
    ));
    assert_eq!(
        authorization(&key),
        "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
    );
    let none = capture(Auth::None);
    assert_eq!(authorization(&none), "");
}

#[test]
fn an_unreadable_ca_file_is_named() {
    let err = Elastic::connect(&Connection {
        url: "https://127.0.0.1:9200".into(),
        auth: Auth::None,
        ca_cert: Some("/nonexistent/ca.pem".into()),
        timeout: Duration::from_secs(5),
    })
    .expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

/// `openssl` run with `args` in `dir`; panics naming the command when it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl) is needed for the TLS test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cluster whose certificate is signed by a private CA: trusted with `ca_cert`,
/// refused without it.
#[test]
fn a_custom_ca_is_trusted_and_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sqlvigil test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &port.to_string(),
            "-cert",
            "srv.pem",
            "-key",
            "srv.key",
        ])
        .current_dir(d)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let get = |ca: Option<std::path::PathBuf>| {
        let es = Elastic::connect(&Connection {
            url: format!("https://127.0.0.1:{port}"),
            auth: Auth::None,
            ca_cert: ca,
            timeout: Duration::from_secs(5),
        })
        .expect("client");
        rt.block_on(es.send(Method::Get, "/", &[], None))
    };
    let trusted = get(Some(d.join("ca.pem")));
    let untrusted = get(None);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(trusted.expect("TLS with the custom CA").0, 200);
    let err = untrusted.expect_err("an unknown CA must be refused");
    assert!(
        err.is_retryable() && err.to_string().contains("unreachable"),
        "{err}"
    );
}
