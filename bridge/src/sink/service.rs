//! The I/O of the sink: one `_bulk` request per batch, per-item results, retries and
//! the dead-letter file. A batch is finished when every item is stored, was already
//! there, or is dead-lettered — only then may the queue move past it.

use super::retry::{classify_item, classify_request, Backoff, ItemOutcome, RequestOutcome};
use crate::client::{error_reason, Elastic};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use sqlvigil_core::Stats;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared by every in-flight request.
pub struct Service {
    pub es: Elastic,
    pub stats: Arc<Stats>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub dead_letter: Mutex<DeadLetter>,
}

/// The items (action line + source line) of a bulk body.
fn items(data: &[u8]) -> Vec<&[u8]> {
    let mut start = 0;
    super::queue::item_ends(data)
        .map(|end| {
            let item = &data[start..end];
            start = end;
            item
        })
        .collect()
}

enum Answer {
    Items(Vec<Value>),
    Failed {
        status: u16,
        reason: String,
        retry_after: Option<u64>,
    },
    Unreachable(String),
}

impl Service {
    /// Send `data` until every item is settled. Never gives up on retryable failures:
    /// the queue behind it holds the data and the bound on it pushes back upstream.
    pub async fn deliver(&self, data: Vec<u8>) {
        let mut pending: Vec<Vec<u8>> = items(&data).into_iter().map(<[u8]>::to_vec).collect();
        let mut backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        while !pending.is_empty() {
            let body: Vec<u8> = pending.concat();
            match self.post(body).await {
                Answer::Items(results) => {
                    let before = pending.len();
                    pending = self.settle(pending, &results);
                    if pending.len() < before {
                        backoff.reset();
                    }
                    if !pending.is_empty() {
                        Stats::add(&self.stats.elastic_retried_docs, pending.len() as u64);
                        tokio::time::sleep(backoff.next(None)).await;
                    }
                }
                Answer::Failed {
                    status,
                    reason,
                    retry_after,
                } => match classify_request(status) {
                    RequestOutcome::Retry => {
                        Stats::add(&self.stats.elastic_request_errors, 1);
                        tracing::warn!(status, %reason, docs = pending.len(), "elasticsearch _bulk refused; retrying");
                        tokio::time::sleep(backoff.next(retry_after)).await;
                    }
                    RequestOutcome::Split if pending.len() > 1 => {
                        let second = pending.split_off(pending.len() / 2);
                        Box::pin(self.deliver(pending.concat())).await;
                        pending = second;
                    }
                    RequestOutcome::Split | RequestOutcome::DeadLetter => {
                        let err = json!({"type": "request_refused", "reason": reason});
                        for item in &pending {
                            self.dead_letter(item, status, &err);
                        }
                        pending.clear();
                    }
                },
                Answer::Unreachable(reason) => {
                    Stats::add(&self.stats.elastic_request_errors, 1);
                    tracing::warn!(%reason, docs = pending.len(), "elasticsearch unreachable; retrying");
                    tokio::time::sleep(backoff.next(None)).await;
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Answer {
        Stats::add(&self.stats.elastic_bulk_requests, 1);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        let sent = self
            .es
            .client()
            .send(
                Method::Post,
                "/_bulk",
                headers,
                Option::<&()>::None,
                Some(body),
                None,
            )
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        let status = response.status_code().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let json: Value = match response.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        if status != 200 {
            return Answer::Failed {
                status,
                reason: error_reason(&json),
                retry_after,
            };
        }
        match json.get("items").and_then(Value::as_array) {
            Some(items) => Answer::Items(items.clone()),
            None => Answer::Failed {
                status: 502,
                reason: "a _bulk answer without `items`".into(),
                retry_after: None,
            },
        }
    }

    /// Record each item's result; returns the items to send again.
    fn settle(&self, sent: Vec<Vec<u8>>, results: &[Value]) -> Vec<Vec<u8>> {
        let mut retry = Vec::new();
        for (i, item) in sent.into_iter().enumerate() {
            // The answer has one object per item, keyed by the operation.
            let r = results
                .get(i)
                .and_then(Value::as_object)
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let status = r["status"].as_u64().unwrap_or(500) as u16;
            match classify_item(status) {
                ItemOutcome::Stored => Stats::add(&self.stats.elastic_indexed_docs, 1),
                ItemOutcome::Duplicate => Stats::add(&self.stats.elastic_duplicate_docs, 1),
                ItemOutcome::Retry => retry.push(item),
                ItemOutcome::DeadLetter => self.dead_letter(&item, status, &r["error"]),
            }
        }
        retry
    }

    fn dead_letter(&self, item: &[u8], status: u16, error: &Value) {
        Stats::add(&self.stats.elastic_dead_letter_docs, 1);
        let mut lines = item.split(|b| *b == b'\n');
        let action: Value = lines
            .next()
            .and_then(|l| serde_json::from_slice(l).ok())
            .unwrap_or_default();
        let document: Value = lines
            .next()
            .map(|l| {
                serde_json::from_slice(l)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(l).into()))
            })
            .unwrap_or_default();
        let (op, meta) = action
            .as_object()
            .and_then(|o| o.iter().next())
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        let record = json!({
            "time": chrono::Utc::now().to_rfc3339(),
            "op": op,
            "index": meta["_index"],
            "id": meta["_id"],
            "status": status,
            "reason": error_reason(error),
            "error": error,
            "document": document,
        });
        tracing::error!(status, reason = %error_reason(error), "document dead-lettered");
        let mut dl = self.dead_letter.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = dl.write(&record) {
            tracing::error!("cannot write the elastic dead-letter file: {e}");
        }
    }
}

/// The dead-letter file, opened on first use.
pub struct DeadLetter {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl DeadLetter {
    pub fn new(path: PathBuf) -> Self {
        DeadLetter { path, file: None }
    }

    fn write(&mut self, record: &Value) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        match self.file.as_mut() {
            Some(f) => {
                serde_json::to_writer(&mut *f, record)?;
                f.write_all(b"\n")?;
                f.sync_data()
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::items;

    #[test]
    fn items_are_pairs_of_lines() {
        let data = b"{\"create\":{}}\n{\"a\":1}\n{\"index\":{}}\n{\"b\":2}\n";
        let it = items(data);
        assert_eq!(it.len(), 2);
        assert_eq!(it[1], b"{\"index\":{}}\n{\"b\":2}\n");
    }
}
