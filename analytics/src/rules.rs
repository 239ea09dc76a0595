//! The deterministic rules analyzer: a summary and recommended actions per kind of
//! problem, built from the anomaly's evidence and related metrics. Same inputs, same
//! insight (the input digest is a SHA-256 of the canonical inputs).

use crate::{AnalyticsError, Context, RelatedMetric};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlvigil_model::{Anomaly, Insight};

pub const MODEL: &str = "rules";
pub const PROMPT_VERSION: &str = "rules-v1";

/// Top `n` related series of `metric` by value, highest first.
fn top<'a>(ctx: &'a Context, metric: &str, n: usize) -> Vec<&'a RelatedMetric> {
    let mut v: Vec<&RelatedMetric> = ctx.related.iter().filter(|r| r.metric == metric).collect();
    v.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then_with(|| a.attributes.cmp(&b.attributes))
    });
    v.truncate(n);
    v
}

fn latest(ctx: &Context, metric: &str) -> Option<f64> {
    ctx.related
        .iter()
        .find(|r| r.metric == metric)
        .map(|r| r.value)
}

fn top_waits(ctx: &Context) -> Vec<String> {
    top(ctx, "sqlserver.os.wait.duration.per_second", 3)
        .into_iter()
        .filter(|w| w.value > 0.0)
        .map(|w| {
            let ty = w
                .attributes
                .get("wait.type")
                .map(String::as_str)
                .unwrap_or("?");
            format!("{ty} ({:.2} s/s)", w.value)
        })
        .collect()
}

/// The heaviest query of the window, as the receiver's top-query events saw it.
fn top_query_text(ctx: &Context) -> String {
    ctx.top_queries
        .first()
        .map(|q| {
            format!(
                " Top query by CPU in the window: {} ({:.0} ms CPU over {:.0} executions): {}.",
                q.query_hash, q.total_cpu_ms, q.executions, q.statement
            )
        })
        .unwrap_or_default()
}

/// The worst blocking chain: from the receiver's query samples of the window, else from
/// the live snapshot taken at the anomaly.
fn head_blocker_text(ctx: &Context) -> String {
    let live = ctx
        .live
        .as_ref()
        .map(|l| l.blocking.as_slice())
        .unwrap_or(&[]);
    let (chain, source) = match (ctx.blocking.first(), live.first()) {
        (Some(c), _) => (c, ""),
        (None, Some(c)) => (c, " (live DMV snapshot)"),
        (None, None) => return String::new(),
    };
    let mut text = format!(
        " Head blocker{source}: session {} blocks {} session(s) (depth {}, {:.0} ms waited in total, longest {:.0} ms).",
        chain.head_session_id, chain.victims, chain.depth, chain.total_wait_ms, chain.longest_wait_ms
    );
    if chain.head_open_transactions > 0 {
        text.push_str(&format!(
            " It holds {} open transaction(s).",
            chain.head_open_transactions
        ));
    }
    if !chain.head_statement.is_empty() {
        text.push_str(&format!(" Its last statement: {}", chain.head_statement));
    }
    text
}

/// The kind of problem, from the metric the rule watched.
fn explain(a: &Anomaly, ctx: &Context) -> (String, Vec<String>) {
    let inst = &a.series.instance;
    let top_query = top_query_text(ctx);
    let head_blocker = head_blocker_text(ctx);
    let waits = top_waits(ctx);
    let waits_text = if waits.is_empty() {
        String::new()
    } else {
        format!(" Top waits: {}.", waits.join(", "))
    };
    match &*a.series.metric {
        "sqlserver.cpu.utilization" => {
            let batches = latest(ctx, "sqlserver.batch.request.rate.per_second")
                .map(|b| format!(" Batch requests are at {b:.0}/s."))
                .unwrap_or_default();
            (
                format!(
                    "CPU storm on {inst}: CPU at {:.1}% (threshold {}) sustained past the rule window.{batches}{top_query}{waits_text}",
                    a.observed,
                    a.expected.map(|e| format!("{e:.0}%")).unwrap_or_else(|| "n/a".into())
                ),
                vec![
                    "Find the top CPU consumers: sys.dm_exec_query_stats ordered by total_worker_time, or Query Store's top resource consumers for the last hour.".into(),
                    "Compare their plans with the previous ones (Query Store regressed queries); force the last good plan if a regression started the storm.".into(),
                    "Check for a compile storm: high SQL compilations/s relative to batch requests points to ad-hoc SQL or missing parameterisation.".into(),
                    "If SOS_SCHEDULER_YIELD dominates waits, look for parallelism settings (MAXDOP, cost threshold) and missing indexes causing scans.".into(),
                ],
            )
        }
        "sqlserver.processes.blocked" => (
            format!(
                "Blocking chain on {inst}: {:.0} processes blocked (threshold {}).{head_blocker}{waits_text}",
                a.observed,
                a.expected.map(|e| format!("{e:.0}")).unwrap_or_else(|| "n/a".into())
            ),
            vec![
                "Identify the head blocker: sys.dm_exec_requests where blocking_session_id = 0 but which blocks others, with its last statement (sys.dm_exec_input_buffer).".into(),
                "Check whether the head session holds an open transaction left uncommitted (sys.dm_tran_session_transactions, open_transaction_count).".into(),
                "If it is a runaway or orphaned session, coordinate with its owner and KILL it; otherwise shorten the transaction or add an index to narrow the locked range.".into(),
                "Consider READ_COMMITTED_SNAPSHOT for readers blocked by writers.".into(),
            ],
        ),
        "sqlserver.transaction_log.usage" => (
            format!("Transaction log on {inst} is {:.0}% full.", a.observed),
            vec![
                "Check log_reuse_wait_desc in sys.databases to see what prevents log truncation.".into(),
                "Take a log backup if the database is in FULL recovery; look for long-running open transactions or a lagging replica.".into(),
                "Pre-size the log with a sensible growth increment to avoid frequent autogrowth.".into(),
            ],
        ),
        "sqlserver.page.life_expectancy" => (
            format!("Buffer pool pressure on {inst}: page life expectancy fell to {:.0} s.{top_query}", a.observed),
            vec![
                "Look for queries doing large scans (high logical reads) that flush the buffer pool.".into(),
                "Check memory grants pending and the max server memory setting.".into(),
            ],
        ),
        metric => (
            format!(
                "{} on {inst}: {metric} at {:.2} ({}).{waits_text}",
                a.rule, a.observed, a.condition
            ),
            vec![format!("Review {metric} on {inst} around {} and correlate with recent changes.", a.opened_at.to_rfc3339())],
        ),
    }
}

/// Produce the insight for `anomaly`.
pub fn analyze(
    anomaly: &Anomaly,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Insight, AnalyticsError> {
    let inputs = serde_json::json!({
        "anomaly": {
            "id": anomaly.id,
            "rule": anomaly.rule,
            "condition": anomaly.condition,
            "series": anomaly.series,
            "opened_at": anomaly.opened_at,
            "observed": anomaly.observed,
            "expected": anomaly.expected,
            "score": anomaly.score,
            "evidence": anomaly.evidence,
        },
        "context": ctx,
    });
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&inputs)?));
    let (summary, recommended_actions) = explain(anomaly, ctx);
    let supporting_metrics = serde_json::json!({
        "metric": anomaly.series.metric,
        "observed": anomaly.observed,
        "expected": anomaly.expected,
        "score": anomaly.score,
        "condition": anomaly.condition,
        "top_waits": top_waits(ctx),
    });
    Ok(Insight {
        id: format!("ins-{}", &digest[..16]),
        generated_at: now,
        model: MODEL.into(),
        prompt_version: PROMPT_VERSION.into(),
        anomaly_ids: vec![anomaly.id.clone()],
        fingerprint: anomaly.fingerprint.clone(),
        instance: anomaly.series.instance.to_string(),
        summary,
        recommended_actions,
        supporting_metrics,
        input_digest: digest,
        inputs,
        latency_ms: None,
        prompt_tokens: None,
        completion_tokens: None,
        trigger: "anomaly".into(),
        note: None,
    })
}

/// One insight for a burst of anomalies on one instance: what opened, by rule, and the
/// rules explanation of the most severe, naming every anomaly it covers.
pub fn summarize_burst(
    subject: &crate::prompt::Subject,
    anomalies: &[Anomaly],
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Insight, AnalyticsError> {
    let ranked = crate::most_severe(anomalies);
    let Some(worst) = ranked.first() else {
        return summarize_window(subject, ctx, now);
    };
    let base = analyze(worst, ctx, now)?;
    let instance = subject.instance();
    let (first, last) = crate::burst_span(anomalies);
    let mut by_rule: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for a in anomalies {
        let e = by_rule.entry(&a.rule).or_default();
        e.0 += 1;
        e.1 += a.folded;
    }
    let counts: Vec<String> = by_rule
        .iter()
        .map(|(rule, (n, folded))| match folded {
            0 => format!("{rule} ×{n}"),
            f => format!("{rule} ×{n} (storm of {f} more)"),
        })
        .collect();
    let summary = format!(
        "{} anomalies opened on {instance} between {} and {} ({}). Most severe: {}",
        anomalies.len(),
        first.format("%H:%M:%S"),
        last.format("%H:%M:%S"),
        counts.join(", "),
        base.summary
    );
    let ids = subject.anomaly_ids();
    let inputs = serde_json::json!({ "burst": ids, "most_severe": base.inputs });
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&inputs)?));
    let mut supporting = base.supporting_metrics;
    supporting["by_rule"] = serde_json::json!(by_rule
        .iter()
        .map(|(r, (n, _))| (r.to_string(), *n))
        .collect::<std::collections::BTreeMap<_, _>>());
    Ok(Insight {
        id: format!("ins-{}", &digest[..16]),
        anomaly_ids: ids,
        fingerprint: subject.fingerprint(),
        summary,
        supporting_metrics: supporting,
        input_digest: digest,
        inputs,
        trigger: subject.trigger().into(),
        ..base
    })
}

/// Rules digest of a time window (on-demand range analyses and capacity digests).
pub fn summarize_window(
    subject: &crate::prompt::Subject,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Insight, AnalyticsError> {
    let instance = subject.instance();
    let stat = |m: &str| {
        ctx.stats
            .iter()
            .find(|s| s.metric == m && s.attributes.is_empty())
    };
    let mut parts = Vec::new();
    let mut actions = Vec::new();
    if let Some(c) = stat("sqlserver.cpu.utilization") {
        parts.push(format!("CPU avg {:.0}% (max {:.0}%)", c.avg, c.max));
        if c.max > 85.0 {
            actions.push("CPU peaked above 85%: review the top CPU queries of the peak hour and plan capacity or tuning.".to_string());
        }
    }
    if let Some(l) = stat("sqlserver.transaction_log.usage") {
        parts.push(format!("log usage max {:.0}%", l.max));
        if l.max > 80.0 {
            actions.push("Transaction log above 80%: check log backups and log_reuse_wait_desc; pre-size the log.".to_string());
        }
    }
    if let Some(p) = stat("sqlserver.page.life_expectancy") {
        parts.push(format!("page life expectancy min {:.0} s", p.min));
        if p.min < 300.0 {
            actions.push("Page life expectancy fell below 300 s: look for scans flushing the buffer pool and review max server memory.".to_string());
        }
    }
    if let Some(u) = stat("sqlserver.user.connection.count") {
        parts.push(format!("connections max {:.0}", u.max));
    }
    let waits = top_waits(ctx);
    if !waits.is_empty() {
        parts.push(format!("top waits {}", waits.join(", ")));
    }
    if actions.is_empty() {
        actions.push(format!("No capacity limit is close on {instance}; keep the current baselines and review again next period."));
    }
    let kind = if subject.trigger() == "digest" {
        "Capacity digest"
    } else {
        "Health summary"
    };
    let summary = if parts.is_empty() {
        format!("{kind} for {instance}: no telemetry in the window.")
    } else {
        format!("{kind} for {instance}: {}.", parts.join("; "))
    };
    let inputs = serde_json::json!({ "subject": format!("{subject:?}"), "context": ctx });
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&inputs)?));
    Ok(Insight {
        id: format!("ins-{}", &digest[..16]),
        generated_at: now,
        model: MODEL.into(),
        prompt_version: PROMPT_VERSION.into(),
        anomaly_ids: Vec::new(),
        fingerprint: format!("{}:{instance}", subject.trigger()),
        instance: instance.to_string(),
        summary,
        recommended_actions: actions,
        supporting_metrics: serde_json::to_value(&ctx.stats)?,
        input_digest: digest,
        inputs,
        latency_ms: None,
        prompt_tokens: None,
        completion_tokens: None,
        trigger: subject.trigger().to_string(),
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(metric: &str) -> Anomaly {
        crate::fixtures::anomaly("sql1", metric)
    }

    #[test]
    fn deterministic_and_specific() {
        let ctx = Context {
            related: vec![RelatedMetric {
                metric: "sqlserver.os.wait.duration.per_second".into(),
                attributes: [("wait.type".to_string(), "SOS_SCHEDULER_YIELD".to_string())].into(),
                value: 3.5,
                unit: "s/s".into(),
            }],
            ..Default::default()
        };
        let a = analyze(&anomaly("sqlserver.cpu.utilization"), &ctx, Utc::now()).unwrap();
        let b = analyze(&anomaly("sqlserver.cpu.utilization"), &ctx, Utc::now()).unwrap();
        assert_eq!(
            (a.id.clone(), a.input_digest.clone(), a.summary.clone()),
            (b.id, b.input_digest, b.summary)
        );
        assert_eq!(a.model, "rules");
        assert!(
            a.summary.contains("CPU storm on sql1") && a.summary.contains("SOS_SCHEDULER_YIELD"),
            "{}",
            a.summary
        );
        assert!(!a.recommended_actions.is_empty());
        let blocking = analyze(
            &anomaly("sqlserver.processes.blocked"),
            &Context::default(),
            Utc::now(),
        )
        .unwrap();
        assert!(blocking.summary.starts_with("Blocking chain"));
    }

    #[test]
    fn the_receivers_events_name_the_head_blocker_and_the_top_query() {
        let ctx = Context {
            top_queries: vec![sqlvigil_model::TopQuery {
                query_hash: "0x37".into(),
                total_cpu_ms: 9000.0,
                executions: 12.0,
                statement: "SELECT * FROM orders".into(),
                ..Default::default()
            }],
            blocking: vec![sqlvigil_model::BlockingChain {
                instance: "sql1".into(),
                head_session_id: 52,
                head_statement: String::new(),
                depth: 2,
                victims: 3,
                total_wait_ms: 1700.0,
                longest_wait_ms: 900.0,
                head_open_transactions: 1,
                last_seen: Utc::now(),
                sessions: vec![],
            }],
            ..Default::default()
        };
        let blocking = analyze(&anomaly("sqlserver.processes.blocked"), &ctx, Utc::now()).unwrap();
        assert!(
            blocking
                .summary
                .contains("Head blocker: session 52 blocks 3"),
            "{}",
            blocking.summary
        );
        let cpu = analyze(&anomaly("sqlserver.cpu.utilization"), &ctx, Utc::now()).unwrap();
        assert!(cpu.summary.contains("0x37"), "{}", cpu.summary);
        let prompt = crate::prompt::build(
            &crate::prompt::Subject::Anomaly(Box::new(anomaly("sqlserver.processes.blocked"))),
            &ctx,
            20_000,
        );
        assert!(
            prompt.user.contains("head blocker session 52"),
            "{}",
            prompt.user
        );
    }
}
