//! What the receiver's events say about queries and sessions, as typed models: a
//! `db.server.top_query` event is a [`TopQuery`] (one query's use since the previous
//! scrape), a `db.server.query_sample` event a [`QuerySample`] (one active request: its
//! session, wait and blocker). [`parse`] reads either from a decoded [`LogRecord`]
//! (the event name is kept in its `event.name` attribute); [`blocking_tree`] turns the
//! blocked samples into chains (head blocker, depth, victims, total wait).
//!
//! Attribute names and units are the receiver's (`metadata.yaml`): times in seconds
//! (`sqlserver.total_worker_time`, `sqlserver.wait_time`), stored here in milliseconds;
//! query text as the receiver sends it (obfuscated).

use crate::catalogue::{QUERY_SAMPLE_EVENT, TOP_QUERY_EVENT};
use crate::{BlockingEvent, LogRecord, TopQuery};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The attribute a decoded log record keeps its OTLP `event_name` in (where OTel
/// semantic conventions put it before the field existed).
pub const EVENT_NAME_ATTR: &str = "event.name";

/// One active request seen by the receiver's query sampler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuerySample {
    pub time: DateTime<Utc>,
    pub instance: String,
    pub database: String,
    pub session_id: i64,
    /// `sqlserver.request_status` (`running`, `suspended`, …).
    pub status: String,
    pub session_status: String,
    pub command: String,
    pub wait_type: String,
    pub wait_time_ms: f64,
    pub wait_resource: String,
    /// 0 when not blocked.
    pub blocking_session_id: i64,
    pub user: String,
    /// `client.address` (the client host).
    pub client_host: String,
    /// `sqlserver.client.app.name`.
    pub program: String,
    pub query_hash: String,
    pub query_plan_hash: String,
    pub statement: String,
    pub cpu_time_ms: f64,
    pub elapsed_ms: f64,
    pub logical_reads: f64,
    pub open_transactions: i64,
    pub transaction_id: i64,
}

impl QuerySample {
    /// The blocking event of a blocked sample.
    pub fn blocking_event(&self) -> Option<BlockingEvent> {
        (self.blocking_session_id != 0).then(|| BlockingEvent {
            time: self.time,
            instance: self.instance.clone(),
            session_id: Some(self.session_id),
            blocking_session_id: self.blocking_session_id,
            wait_type: self.wait_type.clone(),
            wait_time_ms: self.wait_time_ms,
            database: self.database.clone(),
            query_hash: self.query_hash.clone(),
            statement: self.statement.clone(),
            wait_resource: self.wait_resource.clone(),
        })
    }
}

/// A receiver event, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    TopQuery(TopQuery),
    Sample(QuerySample),
}

/// Which event a record is: by its event name, or (a sender that dropped the name,
/// early receivers' "query sample") by the receiver's attributes.
fn event_kind(name: Option<&str>, has: impl Fn(&str) -> bool) -> Option<&'static str> {
    match name {
        Some(TOP_QUERY_EVENT) => Some(TOP_QUERY_EVENT),
        Some(QUERY_SAMPLE_EVENT | "query sample") => Some(QUERY_SAMPLE_EVENT),
        _ if has("sqlserver.execution_count") && has("sqlserver.query_hash") => {
            Some(TOP_QUERY_EVENT)
        }
        _ if has("sqlserver.blocking_session_id") => Some(QUERY_SAMPLE_EVENT),
        _ => None,
    }
}

/// Attributes read as text and numbers; a value that is present but not a number is
/// an error naming the attribute.
struct Attrs<'a>(&'a BTreeMap<String, String>);

impl Attrs<'_> {
    fn text(&self, key: &str) -> String {
        self.0.get(key).cloned().unwrap_or_default()
    }

    fn number(&self, key: &str) -> Result<f64, String> {
        match self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(0.0),
            Some(v) => v
                .parse::<f64>()
                .map_err(|_| format!("attribute `{key}` is not a number: {v:?}")),
        }
    }

    fn int(&self, key: &str) -> Result<i64, String> {
        let n = self.number(key)?;
        if n.fract() != 0.0 {
            return Err(format!("attribute `{key}` is not an integer: {n}"));
        }
        Ok(n as i64)
    }
}

/// The typed event of a log record, None for a plain log line.
pub fn parse(log: &LogRecord) -> Result<Option<Activity>, String> {
    let a = Attrs(&log.attributes);
    let name = log.attributes.get(EVENT_NAME_ATTR).map(String::as_str);
    let database = |a: &Attrs| Some(a.text("db.namespace")).filter(|d| !d.is_empty());
    match event_kind(name, |k| log.attributes.contains_key(k)) {
        Some(TOP_QUERY_EVENT) => {
            let query_hash = a.text("sqlserver.query_hash");
            if query_hash.is_empty() {
                return Err("top_query event without `sqlserver.query_hash`".into());
            }
            Ok(Some(Activity::TopQuery(TopQuery {
                instance: log.instance.clone(),
                query_hash,
                executions: a.number("sqlserver.execution_count")?,
                total_cpu_ms: a.number("sqlserver.total_worker_time")? * 1000.0,
                total_elapsed_ms: a.number("sqlserver.total_elapsed_time")? * 1000.0,
                total_logical_reads: a.number("sqlserver.total_logical_reads")?,
                statement: a.text("db.query.text"),
                last_seen: log.time,
                database: database(&a).unwrap_or_default(),
                query_plan_hash: a.text("sqlserver.query_plan_hash"),
                total_logical_writes: a.number("sqlserver.total_logical_writes")?,
                total_physical_reads: a.number("sqlserver.total_physical_reads")?,
                total_rows: a.number("sqlserver.total_rows")?,
                total_grant_kb: a.number("sqlserver.total_grant_kb")?,
            })))
        }
        Some(_) => Ok(Some(Activity::Sample(QuerySample {
            time: log.time,
            instance: log.instance.clone(),
            database: database(&a).unwrap_or_default(),
            session_id: a.int("sqlserver.session_id")?,
            status: a.text("sqlserver.request_status"),
            session_status: a.text("sqlserver.session_status"),
            command: a.text("sqlserver.command"),
            wait_type: a.text("sqlserver.wait_type"),
            wait_time_ms: a.number("sqlserver.wait_time")? * 1000.0,
            wait_resource: a.text("sqlserver.wait_resource"),
            blocking_session_id: a.int("sqlserver.blocking_session_id")?,
            user: a.text("user.name"),
            client_host: a.text("client.address"),
            program: a.text("sqlserver.client.app.name"),
            query_hash: a.text("sqlserver.query_hash"),
            query_plan_hash: a.text("sqlserver.query_plan_hash"),
            statement: a.text("db.query.text"),
            cpu_time_ms: a.number("sqlserver.cpu_time")? * 1000.0,
            elapsed_ms: a.number("sqlserver.total_elapsed_time")? * 1000.0,
            logical_reads: a.number("sqlserver.logical_reads")?,
            open_transactions: a.int("sqlserver.open_transaction_count")?,
            transaction_id: a.int("sqlserver.transaction_id")?,
        }))),
        None => Ok(None),
    }
}

/// A session in a blocking chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockedSession {
    pub session_id: i64,
    pub blocked_by: i64,
    /// 1 for a session the head blocks directly.
    pub depth: usize,
    pub wait_type: String,
    pub wait_time_ms: f64,
    #[serde(default)]
    pub wait_resource: String,
    pub database: String,
    pub statement: String,
}

/// One head blocker and everything waiting behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockingChain {
    pub instance: String,
    pub head_session_id: i64,
    /// What the head was running when it was itself sampled (an idle head with an open
    /// transaction is not sampled: then empty).
    pub head_statement: String,
    /// Longest path below the head.
    pub depth: usize,
    /// Sessions blocked, directly or not, behind the head.
    pub victims: usize,
    /// Their waits added up.
    pub total_wait_ms: f64,
    /// The longest single wait behind the head.
    #[serde(default)]
    pub longest_wait_ms: f64,
    /// Transactions the head holds open, when known (the live monitor sees idle heads).
    #[serde(default)]
    pub head_open_transactions: i64,
    pub last_seen: DateTime<Utc>,
    /// The blocked sessions, depth first.
    pub sessions: Vec<BlockedSession>,
}

/// Blocking chains from blocked sessions: the newest observation of each (instance,
/// session) counts; a head is a blocker that is not itself blocked (in a cycle, a
/// deadlock, the lowest session id). Most victims first. `statements` may name what
/// sessions that are not blocked were running (their samples), for the heads.
pub fn blocking_tree(
    events: &[BlockingEvent],
    statements: &HashMap<(String, i64), String>,
) -> Vec<BlockingChain> {
    let mut newest: BTreeMap<(String, i64), &BlockingEvent> = BTreeMap::new();
    for e in events {
        let Some(session) = e.session_id else {
            continue;
        };
        let key = (e.instance.clone(), session);
        if newest.get(&key).is_none_or(|old| old.time < e.time) {
            newest.insert(key, e);
        }
    }
    let mut children: BTreeMap<(String, i64), Vec<&BlockingEvent>> = BTreeMap::new();
    for ((instance, _), e) in &newest {
        children
            .entry((instance.clone(), e.blocking_session_id))
            .or_default()
            .push(e);
    }
    let blocked = |instance: &str, s: i64| newest.contains_key(&(instance.to_string(), s));
    let heads: Vec<(String, i64)> = children
        .keys()
        .filter(|(i, s)| !blocked(i, *s))
        .cloned()
        .collect();
    // Cycles have no unblocked member: take the lowest session of each.
    let mut seen: std::collections::HashSet<(String, i64)> = Default::default();
    let mut chains = Vec::new();
    for head in heads.iter() {
        chains.push(chain(head, &children, statements, &mut seen));
    }
    for key in newest.keys() {
        if !seen.contains(key) {
            chains.push(chain(key, &children, statements, &mut seen));
        }
    }
    chains.sort_by(|a, b| {
        (b.victims, b.total_wait_ms)
            .partial_cmp(&(a.victims, a.total_wait_ms))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    chains
}

fn chain(
    head: &(String, i64),
    children: &BTreeMap<(String, i64), Vec<&BlockingEvent>>,
    statements: &HashMap<(String, i64), String>,
    seen: &mut std::collections::HashSet<(String, i64)>,
) -> BlockingChain {
    let (instance, head_id) = head;
    let mut out = BlockingChain {
        instance: instance.clone(),
        head_session_id: *head_id,
        head_statement: statements.get(head).cloned().unwrap_or_default(),
        depth: 0,
        victims: 0,
        total_wait_ms: 0.0,
        longest_wait_ms: 0.0,
        head_open_transactions: 0,
        last_seen: DateTime::<Utc>::MIN_UTC,
        sessions: Vec::new(),
    };
    seen.insert(head.clone());
    let mut stack: Vec<(i64, usize)> = vec![(*head_id, 0)];
    while let Some((blocker, depth)) = stack.pop() {
        for e in children
            .get(&(instance.clone(), blocker))
            .into_iter()
            .flatten()
        {
            let Some(session) = e.session_id else {
                continue;
            };
            if !seen.insert((instance.clone(), session)) {
                continue;
            }
            out.depth = out.depth.max(depth + 1);
            out.victims += 1;
            out.total_wait_ms += e.wait_time_ms;
            out.longest_wait_ms = out.longest_wait_ms.max(e.wait_time_ms);
            out.last_seen = out.last_seen.max(e.time);
            out.sessions.push(BlockedSession {
                session_id: session,
                blocked_by: blocker,
                depth: depth + 1,
                wait_type: e.wait_type.clone(),
                wait_time_ms: e.wait_time_ms,
                wait_resource: e.wait_resource.clone(),
                database: e.database.clone(),
                statement: e.statement.clone(),
            });
            stack.push((session, depth + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(attrs: &[(&str, &str)]) -> LogRecord {
        LogRecord {
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            severity: String::new(),
            severity_number: 0,
            message: String::new(),
            category: String::new(),
            instance: "sql-01".into(),
            host: "h".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn events_parse_into_typed_models() {
        let top = log(&[
            (EVENT_NAME_ATTR, TOP_QUERY_EVENT),
            ("sqlserver.query_hash", "0x37"),
            ("sqlserver.execution_count", "3"),
            ("sqlserver.total_worker_time", "0.25"),
            ("db.query.text", "SELECT ?"),
        ]);
        let Ok(Some(Activity::TopQuery(q))) = parse(&top) else {
            panic!("top query")
        };
        assert_eq!(
            (q.executions, q.total_cpu_ms, q.statement.as_str()),
            (3.0, 250.0, "SELECT ?")
        );
        let sample = log(&[
            (EVENT_NAME_ATTR, QUERY_SAMPLE_EVENT),
            ("sqlserver.session_id", "60"),
            ("sqlserver.blocking_session_id", "71"),
            ("sqlserver.wait_time", "2.45"),
            ("sqlserver.wait_type", "LCK_M_S"),
        ]);
        let Ok(Some(Activity::Sample(s))) = parse(&sample) else {
            panic!("sample")
        };
        assert_eq!((s.session_id, s.blocking_session_id), (60, 71));
        assert!((s.wait_time_ms - 2450.0).abs() < 1e-9);
        assert_eq!(parse(&log(&[("a", "b")])), Ok(None));
        let bad = log(&[
            (EVENT_NAME_ATTR, QUERY_SAMPLE_EVENT),
            ("sqlserver.session_id", "x"),
        ]);
        assert!(parse(&bad).unwrap_err().contains("sqlserver.session_id"));
    }

    #[test]
    fn the_tree_finds_the_head_blocker() {
        let at = |session: i64, blocker: i64, wait: f64| BlockingEvent {
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            instance: "i".into(),
            session_id: Some(session),
            blocking_session_id: blocker,
            wait_type: "LCK_M_X".into(),
            wait_time_ms: wait,
            database: "sales".into(),
            query_hash: String::new(),
            statement: String::new(),
            wait_resource: "KEY: 5:72057594043236352 (8194443284a0)".into(),
        };
        // 52 (idle, not sampled) blocks 60 and 61; 61 blocks 70. Separately 80 ↔ 81.
        let events = [
            at(60, 52, 1000.0),
            at(61, 52, 500.0),
            at(70, 61, 200.0),
            at(80, 81, 10.0),
            at(81, 80, 10.0),
        ];
        let heads = HashMap::from([(("i".to_string(), 52), "UPDATE t".to_string())]);
        let tree = blocking_tree(&events, &heads);
        assert_eq!(tree.len(), 2);
        let c = &tree[0];
        assert_eq!((c.head_session_id, c.depth, c.victims), (52, 2, 3));
        assert_eq!(
            (c.total_wait_ms, c.head_statement.as_str()),
            (1700.0, "UPDATE t")
        );
        assert_eq!(
            (tree[1].head_session_id, tree[1].victims),
            (80, 1),
            "a cycle"
        );
    }
}
