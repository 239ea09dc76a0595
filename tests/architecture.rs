//! The dependency rules of ARCHITECTURE.md, checked against `cargo metadata`: sqlvigil's
//! crates depend on each other one way, bottom to top
//! (model → core → {otlp, receiver, bus, operators, store, bridge} → analytics → api →
//! runtime → binary), and only on what their box in the data-flow picture needs. A crate
//! that gains a dependency outside its row fails here, naming the edge.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// For each workspace crate, bottom to top, the sqlvigil crates it may depend on (normal
/// and build dependencies). Its tests (dev-dependencies) may also use the test kits and
/// any crate that stands before it here: nothing above it, so no cycle either way.
const ALLOWED: &[(&str, &[&str])] = &[
    ("sqlvigil-model", &[]),
    ("sqlvigil-simulator", &["model"]),
    ("sqlvigil-core", &["model"]),
    ("sqlvigil-otlp", &["model"]),
    ("sqlvigil-receiver", &["model", "core", "otlp"]),
    ("sqlvigil-bus", &["model", "core"]),
    ("sqlvigil-operators", &["model", "core"]),
    ("sqlvigil-store", &["model", "core"]),
    ("sqlvigil-bridge", &["model", "core"]),
    ("sqlvigil-analytics", &["model", "core"]),
    ("sqlvigil-monitor", &["model", "core"]),
    ("sqlvigil-api", &["model", "core", "store", "analytics"]),
    (
        "sqlvigil-runtime",
        &[
            "model",
            "core",
            "otlp",
            "receiver",
            "bus",
            "operators",
            "store",
            "bridge",
            "analytics",
            "monitor",
            "api",
            "simulator",
        ],
    ),
    (
        "sqlvigil",
        &["model", "core", "store", "runtime", "simulator"],
    ),
    ("sqlvigil-testkit", &[]),
    ("sqlvigil-testkit-elastic", &["testkit"]),
    ("sqlvigil-testkit-tds", &["testkit"]),
    (
        "sqlvigil-bench",
        &[
            "model",
            "core",
            "otlp",
            "receiver",
            "bus",
            "operators",
            "store",
            "bridge",
            "api",
            "runtime",
            "simulator",
            "testkit",
            "testkit-elastic",
        ],
    ),
];

/// What tests of any crate may use besides its own row.
const TEST_ONLY: &[&str] = &["testkit", "testkit-elastic", "testkit-tds"];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// (crate, dependency, kind) for every sqlvigil-to-sqlvigil edge of the workspace.
fn edges(meta: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().unwrap_or_default().to_string();
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if let Some(short) = dep_name.strip_prefix("sqlvigil-") {
                let kind = dep["kind"].as_str().unwrap_or("normal").to_string();
                out.push((name.clone(), short.to_string(), kind));
            }
        }
    }
    out
}

#[test]
fn crates_depend_on_each_other_one_way() {
    let meta = metadata();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(c, deps)| (*c, deps.iter().copied().collect()))
        .collect();
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    for m in &members {
        assert!(
            allowed.contains_key(m.as_str()),
            "crate {m} has no row in ALLOWED (tests/architecture.rs) and ARCHITECTURE.md: \
             say where it stands before adding it"
        );
    }
    let position = |c: &str| ALLOWED.iter().position(|(k, _)| *k == c);
    let mut broken = Vec::new();
    for (krate, dep, kind) in edges(&meta) {
        let row = &allowed[krate.as_str()];
        let full = format!("sqlvigil-{dep}");
        let below = position(&full) < position(&krate);
        let ok = row.contains(dep.as_str())
            || (kind == "dev" && (TEST_ONLY.contains(&dep.as_str()) || below));
        if !ok {
            broken.push(format!("{krate} -> sqlvigil-{dep} ({kind})"));
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies that break the one-way rule of ARCHITECTURE.md:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn product_crates_never_depend_on_the_test_kits() {
    let broken: Vec<String> = edges(&metadata())
        .into_iter()
        .filter(|(krate, dep, kind)| {
            TEST_ONLY.contains(&dep.as_str())
                && kind != "dev"
                && !matches!(
                    krate.as_str(),
                    "sqlvigil-bench" | "sqlvigil-testkit-elastic" | "sqlvigil-testkit-tds"
                )
        })
        .map(|(k, d, kind)| format!("{k} -> sqlvigil-{d} ({kind})"))
        .collect();
    assert!(broken.is_empty(), "product code on test kits: {broken:?}");
}

#[test]
fn the_rules_table_itself_runs_bottom_to_top() {
    // Each row may only name crates whose own rows come before it: the table is the
    // order, so a cycle cannot be allowed by accident.
    let order: Vec<&str> = ALLOWED.iter().map(|(c, _)| *c).collect();
    for (i, (krate, deps)) in ALLOWED.iter().enumerate() {
        for d in *deps {
            let full = format!("sqlvigil-{d}");
            let at = order
                .iter()
                .position(|c| *c == full)
                .unwrap_or_else(|| panic!("{krate} allows unknown crate {full}"));
            assert!(at < i, "{krate} allows {full}, which stands above it");
        }
    }
}
