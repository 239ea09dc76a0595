//! Versioned prompts built from an anomaly (or a time window) and its [`Context`].
//!
//! Sections go in order of relevance; when the prompt would exceed the character budget
//! the least relevant sections are dropped first and the prompt says which. The anomaly
//! itself and the instance context are never dropped.

use crate::{Context, MetricStat, RelatedMetric};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlvigil_model::Anomaly;
use std::fmt::Write;

pub const PROMPT_VERSION: &str = "insight-v1";

const SYSTEM: &str = "You are an expert Microsoft SQL Server DBA and SRE. You receive telemetry \
collected by the OpenTelemetry Collector's sqlserver receiver and anomalies detected by \
sqlvigil. Explain the most likely cause from the evidence given, cite the numbers you rely \
on, and recommend concrete, safe actions a DBA can take now (DMV queries to run, settings to \
check), most important first. Do not invent data that is not in the prompt. Answer with JSON \
only, following the schema: summary, recommended_actions, supporting_metrics.";

/// What is being analysed.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// An anomaly that opened (or one asked about through the API).
    Anomaly(Box<Anomaly>),
    /// A time window on one instance, asked through the API.
    Window {
        instance: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// The scheduled capacity-planning digest of one instance.
    Digest {
        instance: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// Anomalies that opened on one instance together (a storm): one insight for all.
    Burst {
        instance: String,
        anomalies: Vec<Anomaly>,
    },
}

impl Subject {
    pub fn instance(&self) -> &str {
        match self {
            Subject::Anomaly(a) => &a.series.instance,
            Subject::Window { instance, .. }
            | Subject::Digest { instance, .. }
            | Subject::Burst { instance, .. } => instance,
        }
    }

    /// The anomalies the insight is about.
    pub fn anomaly_ids(&self) -> Vec<String> {
        match self {
            Subject::Anomaly(a) => vec![a.id.clone()],
            Subject::Burst { anomalies, .. } => anomalies.iter().map(|a| a.id.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// The insight's fingerprint (dedup key together with the input digest).
    pub fn fingerprint(&self) -> String {
        match self {
            Subject::Anomaly(a) => a.fingerprint.clone(),
            Subject::Burst {
                instance,
                anomalies,
            } => {
                let first = anomalies.iter().map(|a| a.opened_at).min();
                let ns = first.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0);
                format!("burst:{instance}:{ns}")
            }
            other => format!("{}:{}", other.trigger(), other.instance()),
        }
    }

    /// `anomaly`, `on_demand` or `digest` (the insight's `trigger`).
    pub fn trigger(&self) -> &'static str {
        match self {
            Subject::Anomaly(_) => "anomaly",
            Subject::Window { .. } => "on_demand",
            Subject::Digest { .. } => "digest",
            Subject::Burst { .. } => "burst",
        }
    }
}

/// A built prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub version: &'static str,
    pub system: String,
    pub user: String,
    /// Sections left out to fit the budget, most relevant first.
    pub dropped: Vec<&'static str>,
    /// SHA-256 of version, system and user text: the dedup and audit key.
    pub digest: String,
}

struct Section {
    title: &'static str,
    body: String,
}

fn subject_section(subject: &Subject) -> Section {
    let mut b = String::new();
    match subject {
        Subject::Anomaly(a) => {
            let _ = writeln!(b, "Rule `{}` fired: {}.", a.rule, a.condition);
            let _ = writeln!(
                b,
                "Severity: {}. Opened at {}.",
                a.severity.as_str(),
                a.opened_at.to_rfc3339()
            );
            let expected = a
                .expected
                .map(|e| format!("{e}"))
                .unwrap_or_else(|| "n/a".into());
            let _ = writeln!(
                b,
                "Metric {}: observed {} (peak), expected {expected}, score {:.2}.",
                a.series.metric, a.observed, a.score
            );
            if !a.series.attributes.is_empty() {
                let _ = writeln!(b, "Series attributes: {:?}.", a.series.attributes);
            }
            let window: Vec<String> = a
                .evidence
                .iter()
                .map(|e| format!("{} {:.2}", e.time.format("%H:%M:%S"), e.value))
                .collect();
            let _ = writeln!(b, "Evidence window (time value): {}.", window.join(", "));
            if a.folded > 0 {
                let _ = writeln!(
                    b,
                    "This is a storm anomaly: it stands for {} anomalies of this rule on this instance, past its open-rate limit.",
                    a.folded
                );
            }
        }
        Subject::Burst { anomalies, .. } => burst_task(&mut b, anomalies),
        Subject::Window { from, to, .. } => {
            let _ = writeln!(
                b,
                "Analyse this instance's health between {} and {}: what stands out and why.",
                from.to_rfc3339(),
                to.to_rfc3339()
            );
        }
        Subject::Digest { from, to, .. } => {
            let _ = writeln!(
                b,
                "Write a capacity-planning digest for {} to {}: trends in CPU, memory (page life expectancy), log usage, connections and waits; what will run out first and what to do.",
                from.to_rfc3339(),
                to.to_rfc3339()
            );
        }
    }
    Section {
        title: "Task",
        body: b,
    }
}

/// Anomalies listed in a burst prompt; the rest are counted per rule.
const BURST_LISTED: usize = 20;

fn burst_task(b: &mut String, anomalies: &[Anomaly]) {
    let (first, last) = crate::burst_span(anomalies);
    let _ = writeln!(
        b,
        "{} anomalies opened on this instance between {} and {}. Find the common cause, if there is one, and say which anomalies follow from it.",
        anomalies.len(),
        first.to_rfc3339(),
        last.to_rfc3339()
    );
    let mut by_rule: std::collections::BTreeMap<&str, usize> = Default::default();
    for a in anomalies {
        *by_rule.entry(&a.rule).or_default() += 1;
    }
    let counts: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
    let _ = writeln!(b, "By rule: {}.", counts.join(", "));
    for a in crate::most_severe(anomalies).into_iter().take(BURST_LISTED) {
        let storm = if a.folded > 0 {
            format!(" (storm of {})", a.folded)
        } else {
            String::new()
        };
        let _ = writeln!(
            b,
            "- {} {} `{}` on {} {:?}: observed {}, expected {}, opened {}{storm}.",
            a.severity.as_str(),
            a.rule,
            a.condition,
            a.series.metric,
            a.series.attributes,
            a.observed,
            a.expected
                .map(|e| e.to_string())
                .unwrap_or_else(|| "n/a".into()),
            a.opened_at.format("%H:%M:%S")
        );
    }
}

fn waits_section(related: &[RelatedMetric]) -> Option<Section> {
    let mut waits: Vec<&RelatedMetric> = related
        .iter()
        .filter(|r| r.metric == "sqlserver.os.wait.duration.per_second" && r.value > 0.0)
        .collect();
    waits.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then_with(|| a.attributes.cmp(&b.attributes))
    });
    waits.truncate(8);
    (!waits.is_empty()).then(|| Section {
        title: "Top waits (seconds waited per second, by wait type)",
        body: waits
            .iter()
            .map(|w| {
                let attr = |k: &str| w.attributes.get(k).map(String::as_str).unwrap_or("?");
                format!(
                    "- {} ({}): {:.3}\n",
                    attr("wait.type"),
                    attr("wait.category"),
                    w.value
                )
            })
            .collect(),
    })
}

fn related_section(related: &[RelatedMetric]) -> Option<Section> {
    let lines: String = related
        .iter()
        .filter(|r| r.metric != "sqlserver.os.wait.duration.per_second" && r.attributes.is_empty())
        .map(|r| format!("- {}: {:.2} {}\n", r.metric, r.value, r.unit))
        .collect();
    (!lines.is_empty()).then_some(Section {
        title: "Latest instance metrics",
        body: lines,
    })
}

fn stats_section(stats: &[MetricStat]) -> Option<Section> {
    let lines: String = stats
        .iter()
        .map(|s| {
            let attrs = if s.attributes.is_empty() {
                String::new()
            } else {
                format!(" {:?}", s.attributes)
            };
            format!(
                "- {}{attrs}: avg {:.2}, min {:.2}, max {:.2} {} ({} points)\n",
                s.metric, s.avg, s.min, s.max, s.unit, s.points
            )
        })
        .collect();
    (!lines.is_empty()).then_some(Section {
        title: "Statistics over the window",
        body: lines,
    })
}

/// One query of a top-queries section.
fn query_line(hash: &str, cpu_ms: f64, executions: f64, reads: f64, statement: &str) -> String {
    format!("- {hash} cpu {cpu_ms:.0} ms, {executions:.0} execs, {reads:.0} logical reads: {statement}\n")
}

/// Up to three blocking chains, one line each: head, victims, waits, what the head runs.
fn chain_lines(chains: &[sqlvigil_model::BlockingChain]) -> String {
    chains
        .iter()
        .take(3)
        .map(|c| {
            let victims: Vec<String> = c
                .sessions
                .iter()
                .take(5)
                .map(|s| {
                    let on = if s.wait_resource.is_empty() {
                        String::new()
                    } else {
                        format!(" on {}", s.wait_resource)
                    };
                    format!("{} ({} {:.0} ms{on})", s.session_id, s.wait_type, s.wait_time_ms)
                })
                .collect();
            let mut line = format!(
                "- head blocker session {} blocks {} session(s), depth {}, {:.0} ms waited in total (longest {:.0} ms): {}",
                c.head_session_id,
                c.victims,
                c.depth,
                c.total_wait_ms,
                c.longest_wait_ms,
                victims.join(", "),
            );
            if c.head_open_transactions > 0 {
                let _ = write!(line, "; head holds {} open transaction(s)", c.head_open_transactions);
            }
            if !c.head_statement.is_empty() {
                let _ = write!(line, "; head runs: {}", c.head_statement);
            }
            line.push('\n');
            line
        })
        .collect()
}

/// The live DMV snapshot taken at the anomaly: blocking, top queries and waits over its
/// interval, and the resources that run out (tempdb, log, memory grants).
fn live_sections(ctx: &Context) -> Vec<Section> {
    let Some(live) = &ctx.live else {
        return Vec::new();
    };
    let at = live.collected_at.format("%H:%M:%S UTC");
    let mut out = Vec::new();
    if !live.blocking.is_empty() {
        out.push(Section {
            title: "Blocking chains now (live DMV snapshot)",
            body: format!("Snapshot at {at}.\n{}", chain_lines(&live.blocking)),
        });
    }
    let sources = [
        (
            "Top queries by CPU (live, plan cache deltas)",
            &live.top_queries,
        ),
        (
            "Top queries by CPU (live, Query Store deltas)",
            &live.query_store,
        ),
    ];
    for (title, queries) in sources.into_iter().filter(|(_, q)| !q.is_empty()) {
        out.push(Section {
            title,
            body: queries
                .iter()
                .take(5)
                .map(|q| {
                    query_line(
                        &q.query_hash,
                        q.total_cpu_ms,
                        q.executions,
                        q.total_logical_reads,
                        &q.statement,
                    )
                })
                .collect(),
        });
    }
    if !live.waits.is_empty() {
        let secs = (live.interval_ms as f64 / 1000.0).max(0.001);
        out.push(Section {
            title: "Waits over the last interval (live)",
            body: live
                .waits
                .iter()
                .take(8)
                .map(|w| {
                    format!(
                        "- {} ({}): {:.0} ms/s, {} waits\n",
                        w.wait_type,
                        w.wait_category,
                        w.wait_time_ms as f64 / secs,
                        w.waiting_tasks
                    )
                })
                .collect(),
        });
    }
    let mut resources = String::new();
    if let Some(t) = &live.tempdb {
        let _ = writeln!(
            resources,
            "- tempdb: version store {} KB, user objects {} KB, internal {} KB, free {} KB",
            t.version_store_kb, t.user_objects_kb, t.internal_objects_kb, t.free_kb
        );
    }
    for l in live
        .log_space
        .iter()
        .filter(|l| l.used_percent >= 50.0)
        .take(5)
    {
        let _ = writeln!(
            resources,
            "- log of {}: {:.0}% used of {} KB (reuse wait: {})",
            l.database,
            l.used_percent,
            l.log_size_kb,
            l.log_reuse_wait.as_deref().unwrap_or("?")
        );
    }
    if let Some(m) = live.memory_grants.as_ref().filter(|m| m.pending > 0) {
        let _ = writeln!(
            resources,
            "- memory grants: {} pending (longest wait {} ms), {} granted",
            m.pending, m.longest_pending_wait_ms, m.granted
        );
    }
    for e in &live.errors {
        let number = e.number.map(|n| format!("error {n}: ")).unwrap_or_default();
        let _ = writeln!(
            resources,
            "- collector {} failed: {number}{}",
            e.collector, e.message
        );
    }
    if !resources.is_empty() {
        out.push(Section {
            title: "Resources now (live)",
            body: resources,
        });
    }
    out
}

/// The receiver's query events of the window (top queries, blocking chains).
fn activity_sections(ctx: &Context) -> Vec<Section> {
    let mut out = Vec::new();
    if !ctx.blocking.is_empty() {
        out.push(Section {
            title: "Blocking chains in the window (query samples)",
            body: chain_lines(&ctx.blocking),
        });
    }
    if !ctx.top_queries.is_empty() {
        out.push(Section {
            title: "Top queries by CPU in the window (receiver events)",
            body: ctx
                .top_queries
                .iter()
                .take(5)
                .map(|q| {
                    query_line(
                        &q.query_hash,
                        q.total_cpu_ms,
                        q.executions,
                        q.total_logical_reads,
                        &q.statement,
                    )
                })
                .collect(),
        });
    }
    out
}

fn logs_section(ctx: &Context) -> Option<Section> {
    (!ctx.logs.is_empty()).then(|| Section {
        title: "Recent error-log lines",
        body: ctx
            .logs
            .iter()
            .rev()
            .take(10)
            .rev()
            .map(|l| {
                format!(
                    "- {} {} {}\n",
                    l.time.format("%H:%M:%S"),
                    l.severity,
                    l.message
                )
            })
            .collect(),
    })
}

fn render(sections: &[&Section], notes: &[String]) -> String {
    let mut out = String::new();
    for s in sections {
        let _ = write!(out, "## {}\n{}\n", s.title, s.body.trim_end());
        out.push('\n');
    }
    for n in notes {
        let _ = writeln!(out, "Note: {n}");
    }
    out
}

/// Build the prompt for `subject` within `budget_chars` (system + user text).
pub fn build(subject: &Subject, ctx: &Context, budget_chars: usize) -> Prompt {
    let head = Section {
        title: "Instance",
        body: format!(
            "SQL Server instance `{}`, monitored through OpenTelemetry.",
            subject.instance()
        ),
    };
    let mandatory = [head, subject_section(subject)];
    // Optional sections, most relevant first.
    let mut optional: Vec<Section> = Vec::new();
    optional.extend(waits_section(&ctx.related));
    optional.extend(activity_sections(ctx));
    optional.extend(live_sections(ctx));
    optional.extend(stats_section(&ctx.stats));
    optional.extend(related_section(&ctx.related));
    optional.extend(logs_section(ctx));
    let mut notes = Vec::new();
    if ctx.live.is_none() {
        notes.push("no live DMV snapshot (blocking chain, top queries): the live monitor is not configured for this instance or could not reach it.".to_string());
    }
    let mut dropped: Vec<&'static str> = Vec::new();
    loop {
        let mut all_notes = notes.clone();
        if !dropped.is_empty() {
            all_notes.push(format!(
                "left out to fit the prompt budget: {}.",
                dropped.join(", ")
            ));
        }
        let sections: Vec<&Section> = mandatory.iter().chain(optional.iter()).collect();
        let user = render(&sections, &all_notes);
        if SYSTEM.len() + user.len() <= budget_chars || optional.is_empty() {
            let digest = hex::encode(Sha256::digest(
                format!("{PROMPT_VERSION}\n{SYSTEM}\n{user}").as_bytes(),
            ));
            dropped.reverse();
            return Prompt {
                version: PROMPT_VERSION,
                system: SYSTEM.to_string(),
                user,
                dropped,
                digest,
            };
        }
        if let Some(s) = optional.pop() {
            dropped.insert(0, s.title);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::LogRecord;

    fn anomaly() -> Anomaly {
        crate::fixtures::anomaly("sql-01", "sqlserver.cpu.utilization")
    }

    fn ctx() -> Context {
        let wait = |ty: &str, v: f64| RelatedMetric {
            metric: "sqlserver.os.wait.duration.per_second".into(),
            attributes: [("wait.type".to_string(), ty.to_string())].into(),
            value: v,
            unit: "s/s".into(),
        };
        let log = LogRecord {
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            severity: "ERROR".into(),
            severity_number: 17,
            message: "x".repeat(400),
            category: "errorlog".into(),
            instance: "sql-01".into(),
            host: "h".into(),
            attributes: Default::default(),
        };
        Context {
            related: vec![wait("SOS_SCHEDULER_YIELD", 2.5), wait("CXPACKET", 1.0)],
            logs: vec![log; 5],
            ..Default::default()
        }
    }

    #[test]
    fn includes_evidence_waits_and_says_what_is_missing() {
        let p = build(&Subject::Anomaly(Box::new(anomaly())), &ctx(), 100_000);
        assert!(
            p.user.contains("cpu_percent > 85 for 5m") && p.user.contains("SOS_SCHEDULER_YIELD")
        );
        assert!(p.user.contains("live monitor is not configured"));
        assert!(p.dropped.is_empty());
        assert_eq!(
            p.digest,
            build(&Subject::Anomaly(Box::new(anomaly())), &ctx(), 100_000).digest
        );
    }

    #[test]
    fn drops_least_relevant_sections_first_and_says_so() {
        let full = build(&Subject::Anomaly(Box::new(anomaly())), &ctx(), 100_000);
        let tight = build(
            &Subject::Anomaly(Box::new(anomaly())),
            &ctx(),
            full.system.len() + full.user.len() - 100,
        );
        assert_eq!(tight.dropped, vec!["Recent error-log lines"]);
        assert!(tight
            .user
            .contains("left out to fit the prompt budget: Recent error-log lines"));
        assert!(
            tight.user.contains("SOS_SCHEDULER_YIELD"),
            "more relevant sections stay"
        );
        let tiny = build(&Subject::Anomaly(Box::new(anomaly())), &ctx(), 10);
        assert!(
            tiny.user.contains("cpu_storm"),
            "the anomaly is never dropped"
        );
        assert_ne!(tiny.digest, full.digest);
    }
}
