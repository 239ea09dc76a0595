//! `monitor:` — the SQL Server instances to read DMVs from over a direct connection,
//! how often, and within which timeouts.
//!
//! ```yaml
//! monitor:
//!   interval: 1m
//!   instances:
//!     - name: sql1                  # as the OTLP stream names it (sqlserver.instance.name)
//!       host: sql1.example.net
//!       auth: { method: sql-login, user: sqlvigil, password: "env:SQLVIGIL_SQL1_PASSWORD" }
//!       encryption: required        # required | login-only | off
//! ```
//!
//! Secrets are references only (`env:NAME` or `file:/path`), resolved at start; the
//! config (and any view of it) holds the reference, never the secret.

use crate::error::{MonitorError, Result};
use serde::{Deserialize, Serialize};
use sqlvigil_model::live::CollectorKind;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// The live monitor: instances and the limits every connection and query keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How often each instance is snapshotted (an instance may set its own).
    #[serde(with = "sqlvigil_model::duration")]
    pub interval: Duration,
    /// TCP connect, TLS and login together.
    #[serde(with = "sqlvigil_model::duration")]
    pub connect_timeout: Duration,
    /// One collector's query; past it the connection is closed (the server abandons the
    /// query) and the collector reported as timed out.
    #[serde(with = "sqlvigil_model::duration")]
    pub query_timeout: Duration,
    /// `SET LOCK_TIMEOUT` for the monitor's sessions, so a DMV query never queues behind
    /// a lock for long.
    #[serde(with = "sqlvigil_model::duration")]
    pub lock_timeout: Duration,
    /// Connections kept per instance.
    pub pool_size: usize,
    /// Least time between two ad-hoc (API) snapshots of one instance.
    #[serde(with = "sqlvigil_model::duration")]
    pub adhoc_min_interval: Duration,
    /// Cumulative DMVs (waits, query stats, file IO) are served as deltas; without a
    /// previous sample they are sampled twice this far apart (sp_BlitzFirst's 5 s).
    #[serde(with = "sqlvigil_model::duration")]
    pub sample_gap: Duration,
    /// Statement text kept per session or query, in characters.
    pub statement_chars: usize,
    /// Snapshots kept per instance in the ledger.
    pub keep_snapshots: usize,
    pub instances: Vec<InstanceConfig>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(15),
            lock_timeout: Duration::from_secs(5),
            pool_size: 2,
            adhoc_min_interval: Duration::from_secs(5),
            sample_gap: Duration::from_secs(5),
            statement_chars: 4000,
            keep_snapshots: 1440,
            instances: Vec::new(),
        }
    }
}

/// One SQL Server instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The instance's name in sqlvigil: the OTLP stream's `sqlserver.instance.name` (or
    /// host), so anomalies of that instance find its snapshots.
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database the connection opens in (`master` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub auth: Auth,
    #[serde(default)]
    pub encryption: Encryption,
    /// Accept any server certificate. Off by default; when on, a warning is logged at
    /// start (use `ca_file` for a private CA instead).
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// PEM file of the CA (or the certificate itself) the server's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Collectors to run (all by default).
    #[serde(default = "all_collectors")]
    pub collectors: Vec<CollectorKind>,
    /// This instance's snapshot interval, overriding `monitor.interval`.
    #[serde(
        default,
        with = "sqlvigil_model::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
}

fn default_port() -> u16 {
    1433
}

fn all_collectors() -> Vec<CollectorKind> {
    CollectorKind::ALL.to_vec()
}

/// How the monitor logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Auth {
    /// A SQL Server login (the README's least-privilege script creates one).
    SqlLogin { user: String, password: SecretRef },
    /// An Azure AD (Entra ID) access token for Azure SQL, obtained outside sqlvigil.
    AadToken { token: SecretRef },
}

/// TLS on the TDS connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    /// Everything encrypted, the server's certificate validated (default).
    #[default]
    Required,
    /// Only the login packet encrypted (SQL Server's `Encrypt=false`): credentials stay
    /// private, DMV rows travel in clear.
    LoginOnly,
    /// No TLS at all (a server without a certificate; never across a network you do not own).
    Off,
}

/// Where a secret is: `env:NAME` or `file:/path`. Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl TryFrom<String> for SecretRef {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:").filter(|n| !n.is_empty()) {
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err("a secret must be a reference, `env:VARIABLE` or `file:/path`, not the secret itself".into())
        }
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        match r {
            SecretRef::Env(n) => format!("env:{n}"),
            SecretRef::File(p) => format!("file:{}", p.display()),
        }
    }
}

/// A resolved secret: shown as `***` by `Debug`, so it cannot reach a log by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl SecretRef {
    /// Read the secret; the error names the variable or file, never a value.
    pub fn resolve(&self, field: &str) -> Result<Secret> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                MonitorError::Config(format!("{field}: environment variable `{name}` is not set"))
            })?,
            SecretRef::File(path) => std::fs::read_to_string(path).map_err(|e| {
                MonitorError::Config(format!("{field}: cannot read `{}`: {e}", path.display()))
            })?,
        };
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(MonitorError::Config(format!(
                "{field}: the secret is empty"
            )));
        }
        Ok(Secret(value))
    }
}

impl MonitorConfig {
    /// Check every field; the error names the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("monitor.interval", self.interval),
            ("monitor.connect_timeout", self.connect_timeout),
            ("monitor.query_timeout", self.query_timeout),
        ];
        for (field, d) in positive {
            if d.is_zero() {
                return Err(MonitorError::Config(format!("{field} must be above zero")));
            }
        }
        if self.pool_size == 0 {
            return Err(MonitorError::Config(
                "monitor.pool_size must be at least 1".into(),
            ));
        }
        if self.keep_snapshots == 0 {
            return Err(MonitorError::Config(
                "monitor.keep_snapshots must be at least 1".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, inst) in self.instances.iter().enumerate() {
            let at = format!("monitor.instances[{i}]");
            inst.validate(&at)?;
            if !names.insert(inst.name.as_str()) {
                return Err(MonitorError::Config(format!(
                    "{at}.name: `{}` is listed twice",
                    inst.name
                )));
            }
        }
        Ok(())
    }
}

impl InstanceConfig {
    fn validate(&self, at: &str) -> Result<()> {
        let bad =
            |field: &str, why: &str| Err(MonitorError::Config(format!("{at}.{field}: {why}")));
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty");
        }
        if self.host.trim().is_empty() {
            return bad("host", "must not be empty");
        }
        if self.collectors.is_empty() {
            return bad(
                "collectors",
                "list at least one collector (or leave it out for all)",
            );
        }
        if self.interval.is_some_and(|d| d.is_zero()) {
            return bad("interval", "must be above zero");
        }
        if self.trust_server_certificate && self.ca_file.is_some() {
            return bad(
                "trust_server_certificate",
                "cannot be used with ca_file (either validate against the CA or trust any certificate)",
            );
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                return bad(
                    "ca_file",
                    &format!("`{}` is not a readable file", ca.display()),
                );
            }
        }
        if let Auth::SqlLogin { user, .. } = &self.auth {
            if user.trim().is_empty() {
                return bad("auth.user", "must not be empty");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> std::result::Result<MonitorConfig, String> {
        serde_json::from_value(yaml_to_json(yaml)).map_err(|e| e.to_string())
    }

    /// The tests write configs as JSON-compatible YAML-ish maps; keep them JSON.
    fn yaml_to_json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn secrets_are_references_and_never_shown() {
        let cfg = parse(
            r#"{"instances":[{"name":"sql1","host":"h","auth":{"method":"sql-login","user":"u","password":"env:SQLVIGIL_TEST_PW_1"}}]}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.instances[0].encryption, Encryption::Required);
        assert_eq!(cfg.instances[0].collectors.len(), CollectorKind::ALL.len());
        let shown = serde_json::to_string(&cfg).unwrap();
        assert!(shown.contains("env:SQLVIGIL_TEST_PW_1"), "{shown}");
        let Auth::SqlLogin { password, .. } = &cfg.instances[0].auth else {
            panic!("auth")
        };
        let err = password.resolve("pw").unwrap_err().to_string();
        assert!(
            err.contains("SQLVIGIL_TEST_PW_1") && err.contains("not set"),
            "{err}"
        );
        std::env::set_var("SQLVIGIL_TEST_PW_1", "s3cret!\n");
        let secret = password.resolve("pw").unwrap();
        assert_eq!(secret.expose(), "s3cret!");
        assert_eq!(format!("{secret:?}"), "***");

        let literal = parse(
            r#"{"instances":[{"name":"sql1","host":"h","auth":{"method":"sql-login","user":"u","password":"hunter2"}}]}"#,
        )
        .unwrap_err();
        assert!(
            literal.contains("env:VARIABLE") && !literal.contains("hunter2"),
            "{literal}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let two = r#"{"instances":[
            {"name":"a","host":"h","auth":{"method":"aad-token","token":"file:/t"}},
            {"name":"a","host":"h2","auth":{"method":"aad-token","token":"file:/t"}}]}"#;
        let err = parse(two).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("monitor.instances[1].name"), "{err}");
        let both = r#"{"instances":[{"name":"a","host":"h","trust_server_certificate":true,
            "ca_file":"/etc/hostname","auth":{"method":"aad-token","token":"file:/t"}}]}"#;
        let err = parse(both).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("trust_server_certificate"), "{err}");
        let unknown = r#"{"instances":[{"name":"a","host":"h","collectors":["nope"],"auth":{"method":"aad-token","token":"file:/t"}}]}"#;
        assert!(parse(unknown).unwrap_err().contains("nope"));
    }
}
