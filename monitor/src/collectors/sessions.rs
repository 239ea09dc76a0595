//! `sessions.sql`: sessions and requests (seed 002's `live_sessions`), and the blocking
//! tree built from them with the same [`blocking_tree`] the query-sample events use.

use crate::cells::Cells;
use sqlvigil_model::activity::blocking_tree;
use sqlvigil_model::live::SessionRow;
use sqlvigil_model::BlockingChain;
use std::collections::HashMap;
use tiberius::Row;

pub(crate) const SQL: &str = include_str!("sessions.sql");

pub(crate) fn parse(rows: &[Row], statement_chars: usize) -> Vec<SessionRow> {
    rows.iter()
        .filter_map(|row| {
            let c = Cells(row);
            Some(SessionRow {
                collection_time: c.time("collection_time").unwrap_or_else(chrono::Utc::now),
                session_id: c.i64("session_id")?,
                status: c.text("status").unwrap_or_default().trim().to_string(),
                command: c.text("command").map(|s| s.trim().to_string()),
                wait_type: c.text("wait_type").filter(|w| !w.is_empty()),
                wait_time_ms: c.count("wait_time_ms"),
                wait_resource: c.text("wait_resource").filter(|w| !w.trim().is_empty()),
                cpu_time_ms: c.count("cpu_time_ms"),
                elapsed_ms: c.count("elapsed_ms"),
                logical_reads: c.count("logical_reads"),
                writes: c.count("writes"),
                blocking_session_id: c.i64("blocking_session_id").filter(|b| *b != 0),
                database: c.text("database_name"),
                login: c.text("login_name"),
                host: c.text("host_name"),
                program: c.text("program_name"),
                open_transactions: c.count("open_transaction_count"),
                statement: c
                    .text("statement_text")
                    .map(|s| truncate(s.trim(), statement_chars)),
                query_hash: c.text("query_hash"),
                plan_handle: c.text("plan_handle"),
                tempdb_kb: c.count("tempdb_kb"),
            })
        })
        .collect()
}

/// At most `chars` characters, cut at a character boundary, marked when cut.
pub(crate) fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Blocking chains of one instance's sessions: heads, depth, victims and waits, with
/// each head's statement (its last batch when idle) and open transactions.
pub(crate) fn tree(instance: &str, sessions: &[SessionRow]) -> Vec<BlockingChain> {
    let events: Vec<_> = sessions
        .iter()
        .filter_map(|s| s.blocking_event(instance))
        .collect();
    if events.is_empty() {
        return Vec::new();
    }
    let by_id: HashMap<i64, &SessionRow> = sessions.iter().map(|s| (s.session_id, s)).collect();
    let statements = sessions
        .iter()
        .filter_map(|s| Some(((instance.to_string(), s.session_id), s.statement.clone()?)))
        .collect();
    let mut chains = blocking_tree(&events, &statements);
    for chain in &mut chains {
        if let Some(head) = by_id.get(&chain.head_session_id) {
            chain.head_open_transactions = head.open_transactions;
        }
    }
    chains
}
