//! The web console in a real browser: `sqlvigil demo` whose first incidents open about
//! 20 s after start (an hour of backfill replayed at 60x, incidents at 20 and 21 min),
//! and `tests/browser/console_test.py` driving Debian's headless Chromium through
//! Playwright: it signs in (a bad token is refused), sees an anomaly arrive live through
//! the stream, opens it (evidence chart drawn, root cause shown), acknowledges and
//! silences it, opens the fleet and the instance pages, then as a viewer sees no
//! operator buttons. Any page error or request leaving localhost fails it. Screenshots of
//! each page go to `$CARGO_TARGET_DIR/console-screenshots/` (the CI artefact).

mod common;

use common::bin;
use sqlvigil_testkit::Sqlvigil;
use std::path::PathBuf;
use std::process::Command;

fn token(dir: &std::path::Path, role: &str) -> String {
    let d = dir.to_string_lossy();
    common::cli(&[
        "token",
        "create",
        "--role",
        role,
        "--name",
        &format!("console-{role}"),
        "--data-dir",
        &d,
    ])
}

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR")).join("target")
        });
    target.join("console-screenshots")
}

#[test]
fn the_console_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (operator, viewer) = (token(dir.path(), "operator"), token(dir.path(), "viewer"));
    let args = [
        "demo",
        "--scenario",
        "quiet",
        "--incident",
        "cpu_storm@20m+90m:0",
        "--incident",
        "blocking_chain@21m+90m:2",
        "--backfill",
        "1h",
        "--speed",
        "60",
    ];
    let mut sv = Sqlvigil::start(&bin(), &args, dir.path()).expect("demo starts");
    let shots = shots_dir();
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let script = sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/console_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base", &sv.api_base()])
        .args(["--operator-token", &operator, "--viewer-token", &viewer])
        .arg("--shots")
        .arg(&shots)
        .args(["--timeout", "150"])
        .output()
        .expect("python3 runs (install: python3 -m pip install -r tests/requirements.txt; apt-get install chromium)");
    let stopped = sv.stop().expect("demo stops");
    assert!(
        out.status.success(),
        "console test failed:\n{}\n{}\ndemo stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sv.stderr_tail()
    );
    assert!(stopped.success(), "the demo stops cleanly");
    for page in ["fleet", "instance", "anomaly", "viewer-anomaly"] {
        let png = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is missing or empty", png.display());
    }
}
