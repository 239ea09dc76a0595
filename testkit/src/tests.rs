//! Tests of the test kit itself.

use crate::net::*;
use crate::process::*;
use crate::python::*;
use crate::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn free_port_is_bindable_and_nonzero() {
    // Another process may take a released port at any moment (that is why
    // Sqlvigil::start retries on "address in use"), so allow a few tries.
    let mut errors = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        assert_ne!(port, 0);
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return,
            Err(e) => errors.push(format!("{port}: {e}")),
        }
    }
    panic!("no port from free_port() was bindable: {errors:?}");
}

#[test]
fn free_port_never_repeats_in_a_process() {
    let ports: BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn free_ports_are_distinct() {
    let ports = try_free_ports(3).expect("loopback bind");
    assert_eq!(ports.len(), 3);
    assert_ne!(ports[0], ports[1]);
    assert_ne!(ports[1], ports[2]);
    assert_ne!(ports[0], ports[2]);
}

#[tokio::test]
async fn wait_for_returns_value_once_ready() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let got = wait_for(Duration::from_secs(5), move || {
        let c = c.clone();
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 3).then_some(n)
        }
    })
    .await;
    assert_eq!(got, Some(3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn wait_for_times_out_with_none() {
    let started = Instant::now();
    let got: Option<()> = wait_for(Duration::from_millis(600), || async { None }).await;
    assert_eq!(got, None);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn health_status_reads_status_line() {
    let l = free_listener().expect("bind");
    let addr = l.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        for code in ["200 OK", "503 Service Unavailable"] {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    assert_eq!(health_status(addr), Ok(200));
    assert_eq!(health_status(addr), Ok(503));
    server.join().expect("server thread");
    assert!(health_status(addr).is_err());
}

#[test]
fn start_reports_early_exit_with_stderr_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("fake-sqlvigil.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"boom: args $*\" >&2\nexit 3\n")
        .expect("write script");
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let data = dir.path().join("data");
    let err = Sqlvigil::start(&script, &["demo"], &data).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("boom: args demo --otlp-grpc-addr 127.0.0.1:"),
        "{msg}"
    );
    assert!(msg.contains("--data-dir"), "{msg}");
    assert!(data.join(STDERR_LOG).is_file());
}

#[test]
fn start_stop_against_fake_server() {
    // A stand-in binary: python3 serving GET /health on --api-addr, exiting 0
    // on SIGINT (python3 is needed by the e2e tests anyway).
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("fake.py");
    std::fs::write(
        &script,
        r#"#!/usr/bin/env python3
import sys, signal, os
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
api = args[args.index("--api-addr") + 1]
data = args[args.index("--data-dir") + 1]
with open(os.path.join(data, "admin.token"), "w") as f:
    f.write("tok-123\n")
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        body = ('{"path": "%s", "auth": "%s"}' % (self.path, auth)).encode()
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        sys.stderr.write("req\n")
def on_int(*_):
    sys.stderr.write("got SIGINT\n"); sys.stderr.flush(); os._exit(0)
signal.signal(signal.SIGINT, on_int)
host, port = api.rsplit(":", 1)
HTTPServer((host, int(port)), H).serve_forever()
"#,
    )
    .expect("write fake");
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let data = dir.path().join("data");
    let mut sv = Sqlvigil::start(&script, &["demo"], &data).expect("start");
    assert!(sv.api_base().starts_with("http://127.0.0.1:"));
    assert!(sv.grpc_endpoint().starts_with("http://127.0.0.1:"));
    assert_ne!(sv.grpc_endpoint(), sv.http_endpoint());
    assert_eq!(sv.admin_token(), "tok-123");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (code, body) = rt
        .block_on(sv.get_json("/x?y=1", Some("tok-123")))
        .expect("get");
    assert_eq!(code, 200);
    assert_eq!(body["path"], "/x?y=1");
    assert_eq!(body["auth"], "Bearer tok-123");
    let (code, _) = rt.block_on(sv.get_json("/missing", None)).expect("get");
    assert_eq!(code, 404);
    let status = sv.stop().expect("stop");
    assert!(status.success(), "{status:?}");
    assert!(!sv.is_running());
    assert_eq!(sv.stop().expect("second stop"), status);
    let stderr = std::fs::read_to_string(data.join(STDERR_LOG)).expect("stderr log");
    assert!(stderr.contains("got SIGINT"), "{stderr}");
}

#[test]
fn kill9_and_drop_end_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("fake.py");
    std::fs::write(
        &script,
        r#"#!/usr/bin/env python3
import sys, signal
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
api = args[args.index("--api-addr") + 1]
signal.signal(signal.SIGINT, signal.SIG_IGN)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
host, port = api.rsplit(":", 1)
HTTPServer((host, int(port)), H).serve_forever()
"#,
    )
    .expect("write fake");
    let ok = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(ok.success());
    let mut sv = Sqlvigil::start(&script, &["run"], dir.path()).expect("start");
    sv.kill9();
    assert!(!sv.is_running());
    assert!(!sv.exit_status().expect("status").success());

    let sv2 = Sqlvigil::start(&script, &["run"], dir.path()).expect("start again");
    let pid = sv2.pid().to_string();
    drop(sv2);
    let alive = Command::new("kill")
        .args(["-0", &pid])
        .stderr(Stdio::null())
        .status()
        .expect("kill -0");
    assert!(!alive.success(), "pid {pid} still alive after drop");
}

#[test]
fn create_token_takes_last_nonempty_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("fake-cli.sh");
    std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1 $2 $3 $4 $5\" = \"token create --role viewer --data-dir\" ] || { echo \"bad args: $*\" >&2; exit 2; }\necho created\necho '  svt_abc123  '\necho\n",
        )
        .expect("write script");
    let ok = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(ok.success());
    let token = create_token(&script, dir.path(), "viewer").expect("token");
    assert_eq!(token, "svt_abc123");
    let err = create_token(&script, dir.path(), "admin").expect_err("bad role");
    assert!(err.to_string().contains("bad args"), "{err}");
}

#[test]
fn requirement_names_parse() {
    assert_eq!(
        requirement_name("opentelemetry-sdk==1.45.2"),
        "opentelemetry-sdk"
    );
    assert_eq!(requirement_name("foo"), "foo");
}

/// Minimal OTLP/HTTP receiver: answers every request 200 with an empty
/// protobuf body (a valid empty Export*ServiceResponse); returns the paths seen.
fn fake_otlp_http(requests: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let l = free_listener().expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut paths = Vec::new();
        while paths.len() < requests {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            let body_len = loop {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "client closed early");
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break end + 4 + len;
                }
            };
            while req.len() < body_len {
                let n = s.read(&mut buf).expect("read body");
                assert!(n > 0, "client closed mid-body");
                req.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&req);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            paths.push(path);
            let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
        }
        paths
    });
    (port, h)
}

#[test]
fn python_otlp_client_exports_each_value_and_a_log() {
    let (port, server) = fake_otlp_http(4);
    let endpoint = format!("http://127.0.0.1:{port}");
    let summary = run_python_otlp_client(&[
        "--protocol",
        "http",
        "--endpoint",
        &endpoint,
        "--instance",
        "SQL01",
        "--host",
        "db1",
        "--metric",
        "sqlserver.cpu.percent",
        "--values",
        "1.5,2.5,3.5",
        "--attr",
        "db=master",
        "--log",
        "deadlock detected",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary["exported_points"], 3, "{summary}");
    assert_eq!(summary["exported_logs"], 1, "{summary}");
    assert_eq!(summary["protocol"], "http", "{summary}");
    let paths = server.join().expect("server");
    assert_eq!(
        paths,
        ["/v1/metrics", "/v1/metrics", "/v1/metrics", "/v1/logs"]
    );
}

#[test]
fn python_otlp_client_fails_loudly_when_export_fails() {
    let port = free_port(); // nothing listens there
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = run_python_otlp_client(&[
        "--protocol",
        "grpc",
        "--endpoint",
        &endpoint,
        "--instance",
        "SQL01",
        "--host",
        "db1",
        "--metric",
        "m",
        "--values",
        "1",
        "--timeout",
        "1",
    ])
    .expect_err("export to a closed port must fail");
    let msg = err.to_string();
    assert!(msg.contains("export result ['FAILURE']"), "{msg}");
}

#[test]
fn python_otlp_client_path_points_at_script() {
    // Must not skip: with the deps missing this fails with the pip command.
    match python_otlp_client() {
        Ok(p) => assert!(p.ends_with("otlp_client.py") && p.is_file()),
        Err(e) => panic!("{e}"),
    }
}
