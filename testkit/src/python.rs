//! The independent OTLP client: `tests/otlp_client.py` on the official OpenTelemetry
//! Python SDK.

use crate::{io_err, TestkitError};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Python modules the OTLP client needs, with the pip package providing each.
const PYTHON_MODULES: [(&str, &str); 3] = [
    ("opentelemetry.sdk", "opentelemetry-sdk"),
    (
        "opentelemetry.exporter.otlp.proto.grpc",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
    (
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry-exporter-otlp-proto-http",
    ),
];

/// Path of `tests/otlp_client.py`, after checking that `python3` can import the
/// OpenTelemetry SDK and both OTLP exporters. The error names the exact
/// `python3 -m pip install ...` command that is missing.
pub fn python_otlp_client() -> Result<PathBuf, TestkitError> {
    // The running test's package first (cargo sets it at run time): a build shared by
    // two checkouts of the repository may carry the other checkout's compile-time path.
    let dir = crate::package_dir(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = vec![dir.join("tests"), dir.join("../tests")];
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests"));
    let tests_dir = candidates
        .iter()
        .find(|d| d.join("otlp_client.py").is_file())
        .unwrap_or(&candidates[candidates.len() - 1])
        .clone();
    let script = tests_dir.join("otlp_client.py");
    let requirements = tests_dir.join("requirements.txt");
    let all_fix = format!("python3 -m pip install -r {}", requirements.display());
    if !script.is_file() {
        return Err(TestkitError::PythonOtlpClient {
            reason: format!("{} does not exist", script.display()),
            fix: "restore tests/otlp_client.py from the repository".to_string(),
        });
    }
    let pins = read_pins(&requirements);
    let mut missing = Vec::new();
    let mut details = String::new();
    for (module, package) in PYTHON_MODULES {
        let out = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                return Err(TestkitError::PythonOtlpClient {
                    reason: format!("cannot run python3: {e}"),
                    fix: format!(
                        "install Python 3 (apt-get install python3 python3-pip), then {all_fix}"
                    ),
                })
            }
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            let _ = writeln!(details, "  python3 -c 'import {module}': {}", last.trim());
            let pinned = pins
                .iter()
                .find(|p| requirement_name(p).eq_ignore_ascii_case(package))
                .cloned()
                .unwrap_or_else(|| package.to_string());
            missing.push(pinned);
        }
    }
    if missing.is_empty() {
        return Ok(script);
    }
    Err(TestkitError::PythonOtlpClient {
        reason: format!(
            "python3 lacks the OpenTelemetry packages the OTLP end-to-end tests need:\n{details}"
        ),
        fix: format!(
            "python3 -m pip install {}   (or all pins: {all_fix})",
            missing.join(" ")
        ),
    })
}

/// Runs `python3 tests/otlp_client.py ARGS...` (after [`python_otlp_client`]'s
/// check) and returns its JSON summary line, e.g.
/// `{"exported_points": 3, "exported_logs": 0, "protocol": "grpc", ...}`.
/// A non-zero exit (any failed export) is an error carrying the script's stderr.
/// Blocking.
pub fn run_python_otlp_client(args: &[&str]) -> Result<serde_json::Value, TestkitError> {
    let script = python_otlp_client()?;
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("run python3 tests/otlp_client.py"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(TestkitError::CommandFailed {
            command: format!("python3 {} {}", script.display(), args.join(" ")),
            status: out.status,
            stderr,
        });
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.trim())
                .ok()
                .filter(|v| v.is_object())
        })
        .ok_or_else(|| TestkitError::OtlpClientOutput {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout,
            stderr,
        })
}

/// Non-comment lines of a requirements file (empty if unreadable).
fn read_pins(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `opentelemetry-sdk` of `opentelemetry-sdk==1.45.2`.
pub(crate) fn requirement_name(line: &str) -> &str {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(line.len());
    &line[..end]
}
