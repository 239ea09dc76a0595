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
