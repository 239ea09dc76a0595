//! `elastic:` — the Elasticsearch sink and bridge, field by field.
//!
//! ```yaml
//! store:
//!   backend: elastic            # telemetry, anomalies and insights go to Elasticsearch
//! elastic:
//!   url: https://es.example:9200
//!   username: sqlvigil          # basic auth, or
//!   api_key: "base64(id:key)"   # an encoded API key
//!   ca_cert: /etc/sqlvigil/es-ca.pem
//!   ilm: { hot_for: 7d, downsample_interval: 5m, delete_after: 90d }
//! ```

use crate::layout::{IlmOptions, LayoutOptions};
use crate::read::ReadOptions;
use crate::{Auth, Connection};
use serde::{Deserialize, Serialize};
use sqlvigil_core::{Error, Result};
use sqlvigil_model::duration as duration_str;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticConfig {
    /// Base URL of the cluster.
    pub url: String,
    /// Basic auth user (with `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An encoded API key (`base64(id:api_key)`, the form Kibana shows); instead of basic auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// PEM file of the CA that signed the cluster's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Install the templates, ILM policies and data streams at start-up (idempotent).
    pub install_layout: bool,
    /// Data stream namespace: `mssql-metrics-<namespace>`, `mssql-logs-<namespace>`.
    pub namespace: String,
    /// How far back the metrics time series data stream accepts points (`index.look_back_time`).
    pub look_back_time: String,
    pub ilm: IlmConfig,
    pub bulk: BulkConfig,
    pub queue: QueueConfig,
    /// JSON-lines file of documents Elasticsearch refused for good, with the reason
    /// (default `<data_dir>/elastic-dead-letter.jsonl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<PathBuf>,
    pub read: ReadConfig,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        ElasticConfig {
            url: "http://127.0.0.1:9200".into(),
            username: None,
            password: None,
            api_key: None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
            install_layout: true,
            namespace: "default".into(),
            look_back_time: "2h".into(),
            ilm: IlmConfig::default(),
            bulk: BulkConfig::default(),
            queue: QueueConfig::default(),
            dead_letter: None,
            read: ReadConfig::default(),
        }
    }
}

/// Retention of the metrics data stream, in Elasticsearch time units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IlmConfig {
    /// Roll the write index over after this age.
    pub rollover_max_age: String,
    /// Full resolution for this long, then downsample.
    pub hot_for: String,
    /// Bucket of the downsampled data.
    pub downsample_interval: String,
    /// Delete after this age.
    pub delete_after: String,
}

impl Default for IlmConfig {
    fn default() -> Self {
        let d = IlmOptions::default();
        IlmConfig {
            rollover_max_age: d.rollover_max_age,
            hot_for: d.hot_for,
            downsample_interval: d.downsample_interval,
            delete_after: d.delete_after,
        }
    }
}

/// How `_bulk` requests are sized, run and retried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    /// Largest request body.
    pub max_bytes: usize,
    /// Most documents per request.
    pub max_docs: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// First retry delay (doubles, with jitter, up to `backoff_max`).
    #[serde(with = "duration_str")]
    pub backoff_initial: Duration,
    #[serde(with = "duration_str")]
    pub backoff_max: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            max_bytes: 5 * 1024 * 1024,
            max_docs: 5_000,
            concurrency: 2,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The on-disk queue between the pipeline and Elasticsearch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Directory (default `<data_dir>/elastic-queue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Most bytes waiting on disk; when reached, the pipeline stops taking data and the
    /// receiver answers with retryable errors.
    pub max_bytes: u64,
    /// Size at which a new segment file starts.
    pub segment_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            dir: None,
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What the bridge reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadConfig {
    /// Index patterns of metric documents (any layout).
    pub metrics: Vec<String>,
    /// Index patterns of log documents and the Collector's query events.
    pub logs: Vec<String>,
    /// Most documents one API answer scans.
    pub max_docs: usize,
}

impl Default for ReadConfig {
    fn default() -> Self {
        let d = ReadOptions::default();
        ReadConfig {
            metrics: d.metrics,
            logs: d.logs,
            max_docs: d.max_docs,
        }
    }
}

impl ElasticConfig {
    /// Check what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(format!("elastic.url: `{}` is not an http(s) URL", self.url));
        }
        if self.api_key.is_some() && self.username.is_some() {
            return bad("elastic: give either username/password or api_key, not both".into());
        }
        if self.username.is_some() != self.password.is_some() {
            return bad("elastic.username and elastic.password go together".into());
        }
        for (field, v) in [
            ("elastic.bulk.max_bytes", self.bulk.max_bytes),
            ("elastic.bulk.max_docs", self.bulk.max_docs),
            ("elastic.bulk.concurrency", self.bulk.concurrency),
            ("elastic.read.max_docs", self.read.max_docs),
        ] {
            if v == 0 {
                return bad(format!("{field} must be greater than 0"));
            }
        }
        if self.queue.max_bytes < self.queue.segment_bytes {
            return bad(
                "elastic.queue.max_bytes must be at least elastic.queue.segment_bytes".into(),
            );
        }
        let ns = &self.namespace;
        if ns.is_empty()
            || ns
                .chars()
                .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        {
            return bad(format!(
                "elastic.namespace: `{ns}` must be lowercase letters, digits or _ (it names data streams)"
            ));
        }
        for (field, v) in [
            ("elastic.look_back_time", &self.look_back_time),
            ("elastic.ilm.rollover_max_age", &self.ilm.rollover_max_age),
            ("elastic.ilm.hot_for", &self.ilm.hot_for),
            (
                "elastic.ilm.downsample_interval",
                &self.ilm.downsample_interval,
            ),
            ("elastic.ilm.delete_after", &self.ilm.delete_after),
        ] {
            if !is_es_duration(v) {
                return bad(format!(
                    "{field}: `{v}` is not an Elasticsearch time unit like 7d, 12h or 5m"
                ));
            }
        }
        Ok(())
    }
}

impl ElasticConfig {
    pub fn connection(&self) -> Connection {
        let auth = match (&self.api_key, &self.username, &self.password) {
            (Some(k), _, _) => Auth::EncodedApiKey(k.clone()),
            (None, Some(u), Some(p)) => Auth::Basic {
                username: u.clone(),
                password: p.clone(),
            },
            _ => Auth::None,
        };
        Connection {
            url: self.url.clone(),
            auth,
            ca_cert: self.ca_cert.clone(),
            timeout: self.timeout,
        }
    }

    pub fn layout(&self) -> LayoutOptions {
        LayoutOptions {
            namespace: self.namespace.clone(),
            look_back_time: self.look_back_time.clone(),
            ilm: IlmOptions {
                rollover_max_age: self.ilm.rollover_max_age.clone(),
                hot_for: self.ilm.hot_for.clone(),
                downsample_interval: self.ilm.downsample_interval.clone(),
                delete_after: self.ilm.delete_after.clone(),
            },
        }
    }

    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            metrics: self.read.metrics.clone(),
            logs: self.read.logs.clone(),
            max_docs: self.read.max_docs,
        }
    }

    pub fn queue_dir(&self, data_dir: &Path) -> PathBuf {
        self.queue
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join("elastic-queue"))
    }

    pub fn dead_letter_path(&self, data_dir: &Path) -> PathBuf {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| data_dir.join("elastic-dead-letter.jsonl"))
    }
}

/// `<digits><unit>` with Elasticsearch's units.
fn is_es_duration(v: &str) -> bool {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &v[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["d", "h", "m", "s", "ms", "micros", "nanos"].contains(&unit)
}
