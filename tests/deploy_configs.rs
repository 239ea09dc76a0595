//! The deployment files work as shipped, checked without Docker:
//!
//! - `docker-compose.yml`: for every profile, with the variables its header's command
//!   sets, each `SQLVIGIL_*` variable the sqlvigil service gets is a real config override
//!   (or a known non-config variable), and the config the service runs with (container
//!   paths mapped to the repository through its bind mounts) loads and validates with
//!   them, uses what the profile starts, and is what the Collector config it mounts
//!   sends to; every bind-mounted host path exists; every image is pinned; a dependency
//!   on a service of another profile is optional;
//! - `Dockerfile`: the config its CMD names, and the rules file that config names, are
//!   copied into the runtime image;
//! - `otel-collector/*.yaml`: both enable the receiver's top-query and query-sample
//!   events and every metric the default rules and the API read, and send metrics and
//!   logs to sqlvigil.
//!
//! Every failure names the file and the key at fault.

use figment::providers::{Format, Yaml};
use figment::Figment;
use serde_json::Value;
use sqlvigil_model::catalogue;
use sqlvigil_operators::rules::{parse_rules, CompiledRule, DEFAULT_RULES_YAML};
use sqlvigil_runtime::config::{env_overrides, Config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COMPOSE: &str = "docker-compose.yml";
const DOCKERFILE: &str = "Dockerfile";
const COLLECTOR_CONFIGS: &[&str] = &[
    "otel-collector/collector.yaml",
    "otel-collector/collector-kafka.yaml",
];
/// The compose services that run sqlvigil and the Collector.
const SQLVIGIL: &str = "sqlvigil";
const COLLECTOR: &str = "otel-collector";

/// Receiver metrics the API reads directly (the waits and I/O views).
const API_METRICS: &[&str] = &[
    "sqlserver.os.wait.duration",
    "sqlserver.database.io",
    "sqlserver.database.latency",
    "sqlserver.database.operations",
];

/// Receiver events sqlvigil reads (top queries, blocking from query samples).
const EVENTS: &[&str] = &["db.server.top_query", "db.server.query_sample"];

/// `SQLVIGIL_*` variables that are not config: the binary reads them itself.
const NOT_CONFIG: &[&str] = &["SQLVIGIL_LOG"];

/// Deprecated Collector component names and their current ones.
const DEPRECATED_EXPORTERS: &[(&str, &str)] = &[("otlp", "otlp_grpc"), ("otlphttp", "otlp_http")];

/// One way to run the stack, as the compose file's header documents it.
struct Profile {
    /// The `--profile` name; empty for the plain stack.
    name: &'static str,
    /// The variables the documented command sets in front of `docker compose`.
    shell: &'static [(&'static str, &'static str)],
    /// Config keys (dotted) and the value sqlvigil's loaded config must have there;
    /// `None`: absent.
    expect: &'static [(&'static str, Option<&'static str>)],
    /// The Collector config the Collector service must mount.
    collector: &'static str,
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "",
        shell: &[],
        expect: &[
            ("bus.kind", Some("memory")),
            ("store.backend", Some("embedded")),
            ("analytics.llm", None),
        ],
        collector: "otel-collector/collector.yaml",
    },
    Profile {
        name: "kafka",
        shell: &[
            ("SQLVIGIL_BUS_KIND", "kafka"),
            ("OTELCOL_CONFIG", "collector-kafka.yaml"),
        ],
        expect: &[
            ("bus.kind", Some("kafka")),
            ("bus.kafka.brokers", Some("kafka:9092")),
            ("store.backend", Some("embedded")),
            ("analytics.llm", None),
        ],
        collector: "otel-collector/collector-kafka.yaml",
    },
    Profile {
        name: "elastic",
        shell: &[("SQLVIGIL_STORE_BACKEND", "elastic")],
        expect: &[
            ("bus.kind", Some("memory")),
            ("store.backend", Some("elastic")),
            ("elastic.url", Some("http://elasticsearch:9200")),
            ("analytics.llm", None),
        ],
        collector: "otel-collector/collector.yaml",
    },
    Profile {
        name: "llm",
        shell: &[
            ("SQLVIGIL_ANALYTICS__LLM__PROVIDER", "ollama"),
            ("SQLVIGIL_ANALYTICS__LLM__BASE_URL", "http://ollama:11434"),
            ("SQLVIGIL_ANALYTICS__LLM__MODEL", "llama3.2:1b"),
        ],
        expect: &[
            ("bus.kind", Some("memory")),
            ("store.backend", Some("embedded")),
            ("analytics.llm.provider", Some("ollama")),
            ("analytics.llm.base_url", Some("http://ollama:11434")),
            ("analytics.llm.model", Some("llama3.2:1b")),
        ],
        collector: "otel-collector/collector.yaml",
    },
];

impl Profile {
    fn label(&self) -> String {
        if self.name.is_empty() {
            "the default profile".into()
        } else {
            format!("profile {}", self.name)
        }
    }

    fn shell(&self) -> BTreeMap<&'static str, &'static str> {
        self.shell.iter().copied().collect()
    }
}

// ---- reading files ----------------------------------------------------------------

fn root() -> PathBuf {
    sqlvigil_testkit::package_dir(env!("CARGO_MANIFEST_DIR"))
}

/// `path` relative to the repository root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: cannot read: {e}", rel(path)))
}

fn yaml(path: &Path) -> Value {
    Figment::from(Yaml::string(&read(path)))
        .extract::<Value>()
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", rel(path)))
}

fn repo_yaml(file: &str) -> Value {
    yaml(&root().join(file))
}

/// The value at `path` (one key per segment; keys may contain dots).
fn find<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn dotted<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    find(v, &key.split('.').collect::<Vec<_>>())
}

/// A list of strings (`[a, b]`), or one string.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

// ---- docker compose ---------------------------------------------------------------

fn services(compose: &Value) -> Vec<(&str, &Value)> {
    compose
        .get("services")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    find(compose, &["services", name])
        .unwrap_or_else(|| panic!("{COMPOSE}: services.{name} is missing"))
}

/// Whether a service runs with `profile` active ("" = no `--profile`).
fn active(service: &Value, profile: &str) -> bool {
    match service.get("profiles").and_then(Value::as_array) {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list.iter().any(|p| p.as_str() == Some(profile)),
    }
}

/// Compose's interpolation of `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:+alt}` and `${VAR+alt}`, with `shell` as the environment
/// compose runs in.
fn interpolate(text: &str, shell: &BTreeMap<&str, &str>, at: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .unwrap_or_else(|| panic!("{at}: unclosed `${{` in `{text}`"));
            let expr = &body[..end];
            let name_len = expr.find(|c: char| !is_name(c)).unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            let value: Option<&str> = shell.get(name).copied();
            let set = value.is_some();
            let non_empty = value.is_some_and(|v| !v.is_empty());
            let resolved = if op.is_empty() {
                value.unwrap_or_default().to_string()
            } else if let Some(default) = op.strip_prefix(":-") {
                if non_empty {
                    value.unwrap_or_default().to_string()
                } else {
                    default.to_string()
                }
            } else if let Some(default) = op.strip_prefix('-') {
                if set {
                    value.unwrap_or_default().to_string()
                } else {
                    default.to_string()
                }
            } else if let Some(alt) = op.strip_prefix(":+") {
                if non_empty {
                    alt.to_string()
                } else {
                    String::new()
                }
            } else if let Some(alt) = op.strip_prefix('+') {
                if set {
                    alt.to_string()
                } else {
                    String::new()
                }
            } else {
                panic!("{at}: unsupported interpolation `${{{expr}}}` in `{text}`")
            };
            out.push_str(&resolved);
            rest = &body[end + 1..];
        } else {
            let name_len = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
            } else {
                out.push_str(shell.get(&after[..name_len]).copied().unwrap_or_default());
            }
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A service's `environment` as written: (name, value), `None` for a name without a
/// value (passed through from the shell when set there, left out otherwise).
fn environment(service: &Value, at: &str) -> Vec<(String, Option<String>)> {
    match service.get("environment") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let entry = item
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}.environment: entry {item} is not a string"));
                match entry.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (entry.to_string(), None),
                }
            })
            .collect(),
        Some(other) => panic!("{at}.environment: {other} is neither a map nor a list"),
    }
}

/// The environment the container gets when compose runs in `shell`.
fn resolved_env(service: &Value, shell: &BTreeMap<&str, &str>, at: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in environment(service, at) {
        match value {
            Some(value) => {
                let resolved = interpolate(&value, shell, &format!("{at}.environment.{name}"));
                out.push((name, resolved));
            }
            None => {
                if let Some(v) = shell.get(name.as_str()) {
                    out.push((name, v.to_string()));
                }
            }
        }
    }
    out
}

/// A volume entry: `host` is a path for a bind mount, a volume name otherwise.
struct Mount {
    host: String,
    container: String,
    bind: bool,
    /// The entry as written, for messages.
    entry: String,
}

fn mounts(service: &Value, shell: &BTreeMap<&str, &str>, at: &str) -> Vec<Mount> {
    let is_path = |s: &str| s.starts_with('.') || s.starts_with('/') || s.starts_with('~');
    let Some(items) = service.get("volumes").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::String(s) => {
                let entry = interpolate(s, shell, &format!("{at}.volumes"));
                let mut parts = entry.splitn(3, ':');
                let first = parts.next().unwrap_or_default().to_string();
                // A lone container path is an anonymous volume.
                let container = parts.next()?.to_string();
                Some(Mount {
                    bind: is_path(&first),
                    host: first,
                    container,
                    entry,
                })
            }
            Value::Object(map) => {
                let field = |k: &str| {
                    map.get(k)
                        .and_then(Value::as_str)
                        .map(|v| interpolate(v, shell, &format!("{at}.volumes.{k}")))
                };
                let container = field("target")?;
                let host = field("source").unwrap_or_default();
                let bind = field("type").map_or(is_path(&host), |t| t == "bind");
                Some(Mount {
                    entry: format!("{host}:{container}"),
                    host,
                    container,
                    bind,
                })
            }
            _ => None,
        })
        .collect()
}

/// The repository path a container path comes from, through the bind mounts (the
/// longest matching mount wins).
fn to_host(mounts: &[Mount], path: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.bind)
        .filter_map(|m| {
            let target = m.container.trim_end_matches('/');
            let rest = path.strip_prefix(target)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((target.len(), m, rest))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, m, rest)| {
            let host = root().join(m.host.trim_start_matches("./"));
            let rest = rest.trim_start_matches('/');
            if rest.is_empty() {
                host
            } else {
                host.join(rest)
            }
        })
}

/// A service's `command` (or `entrypoint`) as a list of arguments.
fn args(service: &Value, key: &str) -> Option<Vec<String>> {
    match service.get(key) {
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_string).collect()),
        _ => None,
    }
}

/// The value of `--config FILE` or `--config=FILE`.
fn config_arg(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        })
}

/// The header comment's lines that hold a `docker compose` command (continuation
/// lines joined).
fn header_commands(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let comment = comment.trim();
        match comment.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(comment);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
        .into_iter()
        .filter(|l| l.contains("docker compose"))
        .collect()
}

/// The host of a URL or `host:port[,…]` value of a key that names another service.
fn host_of(key: &str, value: &str) -> Option<String> {
    if !(key.ends_with("url") || key.ends_with("brokers")) {
        return None;
    }
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let host = rest.split([':', '/', ',']).next()?;
    (!host.is_empty()).then(|| host.to_string())
}

// ---- Dockerfile -------------------------------------------------------------------

struct Dockerfile {
    /// The runtime stage's CMD.
    cmd: Vec<String>,
    /// The runtime stage's COPY instructions from the build context: (sources, destination).
    copies: Vec<(Vec<String>, String)>,
}

impl Dockerfile {
    fn load() -> Dockerfile {
        let text = read(&root().join(DOCKERFILE));
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
                continue;
            }
            match t.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(t);
                    instructions.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.trim().is_empty() {
            instructions.push(current);
        }
        let split = |i: &str| -> (String, String) {
            let (keyword, rest) = i.trim().split_once(char::is_whitespace).unwrap_or((i, ""));
            (keyword.to_ascii_uppercase(), rest.trim().to_string())
        };
        let last_from = instructions
            .iter()
            .rposition(|i| split(i.as_str()).0 == "FROM")
            .unwrap_or_else(|| panic!("{DOCKERFILE}: no FROM instruction"));
        let mut cmd = Vec::new();
        let mut copies = Vec::new();
        for instruction in &instructions[last_from + 1..] {
            let (keyword, rest) = split(instruction.as_str());
            let words = |rest: &str| -> Vec<String> {
                if rest.starts_with('[') {
                    serde_json::from_str::<Vec<String>>(rest).unwrap_or_else(|e| {
                        panic!("{DOCKERFILE}: `{keyword} {rest}` is not a JSON array: {e}")
                    })
                } else {
                    rest.split_whitespace().map(str::to_string).collect()
                }
            };
            match keyword.as_str() {
                "CMD" => cmd = words(rest.as_str()),
                "COPY" | "ADD" => {
                    let tokens: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
                    if tokens.iter().any(|t| t.starts_with("--from")) {
                        continue;
                    }
                    let plain: String = tokens
                        .into_iter()
                        .filter(|t| !t.starts_with("--"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let mut paths = words(plain.as_str());
                    if let Some(dest) = paths.pop() {
                        copies.push((paths, dest));
                    }
                }
                _ => {}
            }
        }
        Dockerfile { cmd, copies }
    }

    /// The build-context file copied to `path` in the runtime image.
    fn copied(&self, path: &str) -> Option<String> {
        self.copies.iter().find_map(|(sources, dest)| {
            if dest == path && sources.len() == 1 {
                return Some(sources[0].clone());
            }
            let dir = dest.strip_suffix('/')?;
            sources.iter().find_map(|src| {
                let name = Path::new(src).file_name()?.to_str()?;
                (format!("{dir}/{name}") == path).then(|| src.clone())
            })
        })
    }
}

// ---- the metrics sqlvigil needs ---------------------------------------------------

/// Receiver metric → why sqlvigil needs it: every metric a default rule's series comes
/// from, and the API's.
fn required_metrics() -> BTreeMap<String, String> {
    let rules = parse_rules(DEFAULT_RULES_YAML).unwrap_or_else(|e| {
        panic!("config/rules.example.yaml (the default rules) does not parse: {e}")
    });
    let mut out = BTreeMap::new();
    for rule in &rules {
        let compiled = CompiledRule::compile(rule).unwrap_or_else(|e| {
            panic!(
                "config/rules.example.yaml: rule `{}` does not compile: {e}",
                rule.name
            )
        });
        let sources = catalogue::receiver_metrics_of(&compiled.metric);
        assert!(
            !sources.is_empty(),
            "config/rules.example.yaml: rule `{}` reads series {}, which the metric catalogue \
             maps to no receiver metric",
            rule.name,
            compiled.metric
        );
        for metric in sources {
            out.entry(metric.to_string()).or_insert_with(|| {
                format!("the default rule `{}` reads {}", rule.name, compiled.metric)
            });
        }
    }
    for metric in API_METRICS {
        out.entry(metric.to_string())
            .or_insert_with(|| "the API's waits and I/O views read it".to_string());
    }
    out
}

// ---- Collector configs ------------------------------------------------------------

fn sqlserver_receivers(collector: &Value) -> Vec<(String, &Value)> {
    collector
        .get("receivers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.split('/').next() == Some("sqlserver"))
                .map(|(k, v)| (k.clone(), v))
                .collect()
        })
        .unwrap_or_default()
}

/// The pipelines of one signal (`metrics`, `metrics/…`).
fn pipelines<'a>(collector: &'a Value, signal: &str) -> Vec<(String, &'a Value)> {
    let named = format!("{signal}/");
    find(collector, &["service", "pipelines"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() == signal || k.starts_with(&named))
                .map(|(k, v)| (k.clone(), v))
                .collect()
        })
        .unwrap_or_default()
}

/// Every metrics and logs pipeline of `collector` (in `file`) sends to sqlvigil as
/// configured by `cfg` (its serialized config, loaded for `label`) through one exporter
/// at least.
fn check_collector_reaches(file: &str, collector: &Value, cfg: &Value, label: &str) {
    let grpc_addr = cfg["receiver"]["grpc_addr"].as_str().unwrap_or_default();
    let grpc_port = grpc_addr.rsplit_once(':').map_or("", |(_, p)| p);
    for signal in ["metrics", "logs"] {
        let mut reaches = false;
        for (_, pipe) in pipelines(collector, signal) {
            for id in strings(pipe.get("exporters")) {
                let kind = id.split('/').next().unwrap_or(id.as_str());
                // An undefined exporter is reported by collector_configs_enable_what_sqlvigil_reads.
                let Some(exporter) = find(collector, &["exporters", id.as_str()]) else {
                    continue;
                };
                match kind {
                    "otlp_grpc" => {
                        let endpoint = exporter
                            .get("endpoint")
                            .and_then(Value::as_str)
                            .unwrap_or_else(|| {
                                panic!("{file}: exporters.{id}.endpoint is missing")
                            });
                        let hostport = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
                        let (host, port) = hostport.rsplit_once(':').unwrap_or_else(|| {
                            panic!("{file}: exporters.{id}.endpoint `{endpoint}` has no port")
                        });
                        assert_eq!(
                            host, SQLVIGIL,
                            "{file}: exporters.{id}.endpoint `{endpoint}` is not the compose \
                             service {SQLVIGIL}"
                        );
                        assert_eq!(
                            port, grpc_port,
                            "{file}: exporters.{id}.endpoint `{endpoint}`: sqlvigil ({label}) \
                             listens for OTLP/gRPC on receiver.grpc_addr {grpc_addr}"
                        );
                        reaches = true;
                    }
                    "kafka" => {
                        assert_eq!(
                            cfg["bus"]["kind"].as_str(),
                            Some("kafka"),
                            "{file}: exporters.{id} writes to Kafka, but sqlvigil ({label}) runs \
                             bus.kind {}",
                            cfg["bus"]["kind"]
                        );
                        let brokers = cfg["bus"]["kafka"]["brokers"].as_str().unwrap_or_default();
                        let exported = strings(exporter.get("brokers"));
                        assert!(
                            brokers
                                .split(',')
                                .all(|b| exported.iter().any(|e| e == b.trim())),
                            "{file}: exporters.{id}.brokers {exported:?} are not sqlvigil's \
                             bus.kafka.brokers `{brokers}` ({label})"
                        );
                        let topic = find(exporter, &[signal, "topic"]).and_then(Value::as_str);
                        let wanted = cfg["bus"]["topics"][signal].as_str();
                        assert!(
                            topic.is_some() && topic == wanted,
                            "{file}: exporters.{id}.{signal}.topic is {topic:?}; sqlvigil \
                             consumes bus.topics.{signal} {wanted:?}"
                        );
                        let encoding =
                            find(exporter, &[signal, "encoding"]).and_then(Value::as_str);
                        assert_eq!(
                            encoding,
                            Some("otlp_proto"),
                            "{file}: exporters.{id}.{signal}.encoding must be otlp_proto, the \
                             format sqlvigil's Kafka bus decodes"
                        );
                        reaches = true;
                    }
                    _ => {}
                }
            }
        }
        assert!(
            reaches,
            "{file}: no service.pipelines.{signal} pipeline exports to sqlvigil ({label}) through \
             an otlp_grpc or kafka exporter"
        );
    }
}

// ---- the tests --------------------------------------------------------------------

#[test]
fn compose_configures_sqlvigil_for_every_profile() {
    let text = read(&root().join(COMPOSE));
    assert!(
        !text.contains("later issue"),
        "{COMPOSE}: stale comment about parts \"added by later issues\""
    );
    let compose = repo_yaml(COMPOSE);
    let commands = header_commands(&text);
    let dockerfile = Dockerfile::load();
    let svc = service(&compose, SQLVIGIL);
    let at = format!("{COMPOSE}: services.{SQLVIGIL}");
    for name in NOT_CONFIG {
        assert!(
            env_overrides([(name.to_string(), "debug".to_string())]).is_empty(),
            "{name} is taken as a config override; this test counts it as a variable the \
             binary reads itself (NOT_CONFIG)"
        );
    }

    for profile in PROFILES {
        let label = profile.label();
        let shell = profile.shell();

        // The header documents the command that sets these variables.
        let wanted: Vec<String> = profile
            .shell
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let documented = commands.iter().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let profile_ok = if profile.name.is_empty() {
                !words.contains(&"--profile")
            } else {
                words.windows(2).any(|w| w == ["--profile", profile.name])
            };
            profile_ok
                && words.contains(&"up")
                && wanted.iter().all(|w| words.contains(&w.as_str()))
        });
        assert!(
            documented,
            "{COMPOSE}: the header documents no `docker compose{} up` command for {label} that \
             sets {wanted:?}",
            if profile.name.is_empty() {
                String::new()
            } else {
                format!(" --profile {}", profile.name)
            }
        );

        // Every SQLVIGIL_ variable is an override (or a known non-config variable).
        let env = resolved_env(svc, &shell, &at);
        assert!(
            !env.iter().any(|(k, _)| k == "RUST_LOG"),
            "{at}.environment.RUST_LOG: sqlvigil does not read RUST_LOG; its log filter is \
             SQLVIGIL_LOG"
        );
        let svc_mounts = mounts(svc, &shell, &at);
        let mut vars = Vec::new();
        for (name, value) in env.iter().filter(|(k, _)| k.starts_with("SQLVIGIL_")) {
            let is_override = !env_overrides([(name.clone(), value.clone())]).is_empty();
            if NOT_CONFIG.contains(&name.as_str()) {
                assert!(
                    !is_override,
                    "{at}.environment.{name}: taken as a config override, but sqlvigil reads it \
                     itself"
                );
                continue;
            }
            assert!(
                is_override,
                "{at}.environment.{name} ({label}): not a config override \
                 (SQLVIGIL_<SECTION>__<KEY> of a known section, or SQLVIGIL_<TOP_LEVEL_FIELD>)"
            );
            // Container paths become the repository files mounted there.
            let value = match value
                .starts_with('/')
                .then(|| to_host(&svc_mounts, value))
                .flatten()
            {
                Some(host) => host.display().to_string(),
                None => value.clone(),
            };
            vars.push((name.clone(), value));
        }

        // The config the service runs with, through its mounts (or the image's copy).
        let command = args(svc, "command").unwrap_or_else(|| dockerfile.cmd.clone());
        let config_path = config_arg(&command).unwrap_or_else(|| {
            panic!("{at}.command: no `--config FILE` (nor in the {DOCKERFILE} CMD)")
        });
        let host_config = to_host(&svc_mounts, &config_path)
            .or_else(|| dockerfile.copied(&config_path).map(|src| root().join(src)))
            .unwrap_or_else(|| {
                panic!(
                    "{at}.command: --config {config_path} is neither mounted by \
                     services.{SQLVIGIL}.volumes nor copied into the image by the {DOCKERFILE}"
                )
            });
        assert!(
            host_config.is_file(),
            "{at}.command: --config {config_path} is {}, which does not exist",
            rel(&host_config)
        );
        let file = yaml(&host_config);
        if !vars.iter().any(|(k, _)| k == "SQLVIGIL_RULES_FILE") {
            if let Some(rules) = file
                .get("rules_file")
                .and_then(Value::as_str)
                .filter(|r| r.starts_with('/'))
            {
                let host = to_host(&svc_mounts, rules)
                    .or_else(|| dockerfile.copied(rules).map(|src| root().join(src)))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: rules_file {rules} is neither mounted by {at}.volumes nor copied \
                             into the image by the {DOCKERFILE}",
                            rel(&host_config)
                        )
                    });
                vars.push(("SQLVIGIL_RULES_FILE".into(), host.display().to_string()));
            }
        }
        let cfg = Config::load_with_env(&host_config, vars.clone()).unwrap_or_else(|e| {
            panic!(
                "{} with {at}.environment ({label}: {vars:?}) does not load: {e}",
                rel(&host_config)
            )
        });
        let json = serde_json::to_value(&cfg).expect("a loaded config serializes");

        // It uses what the profile starts.
        for (key, want) in profile.expect {
            let got = dotted(&json, key);
            match want {
                Some(want) => assert_eq!(
                    got.and_then(Value::as_str),
                    Some(*want),
                    "{at}.environment ({label}): config key {key} is {got:?}, the profile needs \
                     `{want}`"
                ),
                None => assert!(
                    got.is_none_or(Value::is_null),
                    "{at}.environment ({label}): config key {key} is set ({got:?}), the profile \
                     does not start it"
                ),
            }
            if let Some(host) = want.and_then(|w| host_of(key, w)) {
                let target = find(&compose, &["services", host.as_str()]).unwrap_or_else(|| {
                    panic!("{at}.environment ({label}): {key} names {host}, which is no service of {COMPOSE}")
                });
                assert!(
                    active(target, profile.name),
                    "{COMPOSE}: services.{host}.profiles: {key} ({label}) names it, but it does \
                     not run with {label}"
                );
            }
        }

        // The Collector mounts the config of this profile, and it sends to this sqlvigil.
        let collector = service(&compose, COLLECTOR);
        let collector_at = format!("{COMPOSE}: services.{COLLECTOR}");
        let collector_config = args(collector, "command")
            .as_deref()
            .and_then(config_arg)
            .unwrap_or_else(|| panic!("{collector_at}.command: no --config"));
        let mounted = to_host(&mounts(collector, &shell, &collector_at), &collector_config)
            .unwrap_or_else(|| {
                panic!("{collector_at}.volumes: nothing is mounted at --config {collector_config}")
            });
        assert_eq!(
            mounted,
            root().join(profile.collector),
            "{collector_at}.volumes ({label}): mounts {} as {collector_config}, the profile needs {}",
            rel(&mounted),
            profile.collector
        );
        check_collector_reaches(
            profile.collector,
            &repo_yaml(profile.collector),
            &json,
            &label,
        );
    }
}

#[test]
fn compose_mounts_pins_and_dependencies() {
    let compose = repo_yaml(COMPOSE);
    for profile in PROFILES {
        let label = profile.label();
        let shell = profile.shell();
        for (name, svc) in services(&compose) {
            let at = format!("{COMPOSE}: services.{name}");

            // Every bind-mounted host path exists in the repository.
            for mount in mounts(svc, &shell, &at).iter().filter(|m| m.bind) {
                let host = root().join(mount.host.trim_start_matches("./"));
                assert!(
                    host.exists(),
                    "{at}.volumes `{}` ({label}): {} does not exist in the repository",
                    mount.entry,
                    rel(&host)
                );
            }

            // Every image has a fixed tag.
            if let Some(image) = svc.get("image").and_then(Value::as_str) {
                let image = interpolate(image, &shell, &format!("{at}.image"));
                let name = image.split('@').next().unwrap_or(&image);
                let last = name.rsplit('/').next().unwrap_or(name);
                let tag = last.split_once(':').map(|(_, t)| t);
                assert!(
                    tag.is_some_and(|t| !t.is_empty()
                        && t != "latest"
                        && !t.starts_with("latest")
                        && !t.ends_with("-latest")),
                    "{at}.image `{image}` ({label}): no fixed version tag"
                );
            }

            // A dependency on a service that does not run with this profile is optional.
            if !active(svc, profile.name) {
                continue;
            }
            let deps: Vec<(String, Option<&Value>)> = match svc.get("depends_on") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|d| (d.to_string(), None))
                    .collect(),
                Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), Some(v))).collect(),
                _ => Vec::new(),
            };
            for (dep, spec) in deps {
                let target = find(&compose, &["services", dep.as_str()])
                    .unwrap_or_else(|| panic!("{at}.depends_on.{dep}: no such service"));
                if active(target, profile.name) {
                    continue;
                }
                let optional = spec
                    .and_then(|s| s.get("required"))
                    .and_then(Value::as_bool)
                    == Some(false);
                assert!(
                    optional,
                    "{at}.depends_on.{dep}.required must be false: {dep} does not run with \
                     {label}"
                );
            }
        }
    }
}

#[test]
fn dockerfile_copies_the_config_its_cmd_names() {
    let dockerfile = Dockerfile::load();
    let path = config_arg(&dockerfile.cmd).unwrap_or_else(|| {
        panic!(
            "{DOCKERFILE}: CMD {:?} has no --config FILE",
            dockerfile.cmd
        )
    });
    let src = dockerfile.copied(&path).unwrap_or_else(|| {
        panic!("{DOCKERFILE}: CMD runs --config {path}, but no COPY of the runtime stage puts a file there")
    });
    let host = root().join(&src);
    assert!(
        host.is_file(),
        "{DOCKERFILE}: COPY {src} {path}: {src} does not exist"
    );

    // The rules file that config names is in the image too.
    let file = yaml(&host);
    if let Some(rules) = file.get("rules_file").and_then(Value::as_str) {
        assert!(
            rules.starts_with('/'),
            "{src}: rules_file `{rules}` is relative to the working directory; give the path \
             inside the image"
        );
        let rules_src = dockerfile.copied(rules).unwrap_or_else(|| {
            panic!("{src}: rules_file {rules} is not copied into the image by the {DOCKERFILE}")
        });
        assert!(
            root().join(&rules_src).is_file(),
            "{DOCKERFILE}: COPY {rules_src} {rules}: {rules_src} does not exist"
        );
    }

    // docker compose runs the same file (mounted from the same repository file).
    let compose = repo_yaml(COMPOSE);
    let svc = service(&compose, SQLVIGIL);
    let at = format!("{COMPOSE}: services.{SQLVIGIL}");
    if let Some(command) = args(svc, "command") {
        assert_eq!(
            config_arg(&command).as_deref(),
            Some(path.as_str()),
            "{at}.command: runs another config than the {DOCKERFILE} CMD"
        );
    }
    if let Some(mounted) = to_host(&mounts(svc, &BTreeMap::new(), &at), &path) {
        assert_eq!(
            mounted,
            host,
            "{at}.volumes: mounts {} over {path}, the image has {src} there",
            rel(&mounted)
        );
    }
}

#[test]
fn collector_configs_enable_what_sqlvigil_reads() {
    let required = required_metrics();
    for file in COLLECTOR_CONFIGS {
        let collector = repo_yaml(file);
        let receivers = sqlserver_receivers(&collector);
        assert!(
            !receivers.is_empty(),
            "{file}: receivers.sqlserver is missing"
        );
        for (id, receiver) in &receivers {
            for &event in EVENTS {
                let on = find(receiver, &["events", event, "enabled"]).and_then(Value::as_bool);
                assert_eq!(
                    on,
                    Some(true),
                    "{file}: receivers.{id}.events.{event}.enabled must be true: sqlvigil reads \
                     the event and the receiver has it off by default"
                );
            }
            for (metric, why) in &required {
                let set = find(receiver, &["metrics", metric.as_str(), "enabled"])
                    .and_then(Value::as_bool);
                let on_by_default = catalogue::metric(metric).is_some_and(|m| m.enabled_by_default);
                match set {
                    Some(true) => {}
                    Some(false) => panic!(
                        "{file}: receivers.{id}.metrics.{metric}.enabled is false, but {why}"
                    ),
                    None => assert!(
                        on_by_default,
                        "{file}: receivers.{id}.metrics.{metric}.enabled must be true: {why}, \
                         and the receiver has it off by default"
                    ),
                }
            }
        }

        // Both signals go from the receiver to a defined exporter, with current names.
        for signal in ["metrics", "logs"] {
            let pipes = pipelines(&collector, signal);
            assert!(
                pipes.iter().any(|(_, p)| {
                    strings(p.get("receivers"))
                        .iter()
                        .any(|r| receivers.iter().any(|(id, _)| id == r))
                        && !strings(p.get("exporters")).is_empty()
                }),
                "{file}: service.pipelines.{signal}: no pipeline takes the sqlserver receiver to \
                 an exporter"
            );
            for (pid, pipe) in &pipes {
                for (section, key) in [
                    ("receivers", "receivers"),
                    ("processors", "processors"),
                    ("exporters", "exporters"),
                ] {
                    for id in strings(pipe.get(key)) {
                        assert!(
                            find(&collector, &[section, id.as_str()]).is_some(),
                            "{file}: service.pipelines.{pid}.{key} names {id}, which {section} \
                             does not define"
                        );
                    }
                }
                for id in strings(pipe.get("exporters")) {
                    let kind = id.split('/').next().unwrap_or(id.as_str());
                    if let Some((old, new)) =
                        DEPRECATED_EXPORTERS.iter().find(|(old, _)| *old == kind)
                    {
                        panic!(
                            "{file}: exporters.{id}: `{old}` is the deprecated alias of `{new}` \
                             (Collector v0.144.0 and later)"
                        );
                    }
                }
            }
        }
    }
}
