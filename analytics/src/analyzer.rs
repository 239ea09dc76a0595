//! The analyzer: prompt → LLM → validated insight, with one corrective retry and the
//! rules analyzer as the fallback, so every subject gets an insight and every LLM
//! failure is on record.

use crate::llm::{ChatReply, ChatRequest, LlmClient, Message};
use crate::prompt::{self, Prompt, Subject};
use crate::schema::{self, LlmAnswer};
use crate::{rules, AnalyticsError, Context};
use chrono::{DateTime, Utc};
use sqlvigil_model::{AnalysisFailure, Insight};
use std::sync::Arc;

/// What an analysis produced.
#[derive(Debug)]
pub struct Outcome {
    pub insight: Insight,
    /// Set when the LLM was asked and failed; `insight` is then the rules fallback.
    pub failure: Option<AnalysisFailure>,
}

pub struct Analyzer {
    llm: Option<Arc<dyn LlmClient>>,
    budget_chars: usize,
}

impl Analyzer {
    /// `llm = None`: the rules analyzer answers everything.
    pub fn new(llm: Option<Arc<dyn LlmClient>>, budget_chars: usize) -> Self {
        Analyzer { llm, budget_chars }
    }

    pub fn llm_model(&self) -> Option<&str> {
        self.llm.as_deref().map(|c| c.model())
    }

    /// The LLM client, for start-up checks.
    pub fn client(&self) -> Option<&dyn LlmClient> {
        self.llm.as_deref()
    }

    /// The prompt that would be sent (its digest is the dedup key).
    pub fn prompt(&self, subject: &Subject, ctx: &Context) -> Prompt {
        prompt::build(subject, ctx, self.budget_chars)
    }

    /// The deterministic insight, labelled `model = "rules"`.
    pub fn rules(
        &self,
        subject: &Subject,
        ctx: &Context,
        now: DateTime<Utc>,
    ) -> Result<Insight, AnalyticsError> {
        match subject {
            Subject::Anomaly(a) => rules::analyze(a, ctx, now),
            Subject::Burst { anomalies, .. } => {
                rules::summarize_burst(subject, anomalies, ctx, now)
            }
            other => rules::summarize_window(other, ctx, now),
        }
    }

    /// Ask the LLM when one is configured (and `use_llm`), else the rules analyzer.
    pub async fn analyze(
        &self,
        subject: &Subject,
        ctx: &Context,
        use_llm: bool,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AnalyticsError> {
        let Some(llm) = self.llm.as_ref().filter(|_| use_llm) else {
            return Ok(Outcome {
                insight: self.rules(subject, ctx, now)?,
                failure: None,
            });
        };
        let prompt = self.prompt(subject, ctx);
        match ask(llm.as_ref(), &prompt).await {
            Ok((answer, reply)) => Ok(Outcome {
                insight: llm_insight(subject, &prompt, answer, &reply, now),
                failure: None,
            }),
            Err((attempts, error)) => {
                tracing::warn!(
                    instance = subject.instance(),
                    model = llm.model(),
                    "LLM analysis failed, using the rules analyzer: {error}"
                );
                let failure = AnalysisFailure {
                    id: format!("fail-{}-{}", &prompt.digest[..16], now.timestamp_millis()),
                    at: now,
                    model: llm.model().to_string(),
                    anomaly_ids: subject.anomaly_ids(),
                    instance: subject.instance().to_string(),
                    input_digest: prompt.digest.clone(),
                    attempts,
                    error,
                };
                Ok(Outcome {
                    insight: self.rules(subject, ctx, now)?,
                    failure: Some(failure),
                })
            }
        }
    }
}

/// Ask, validate, and on an invalid answer ask once more with the validation error.
/// Errors carry the number of model calls made and the last problem.
async fn ask(
    llm: &dyn LlmClient,
    prompt: &Prompt,
) -> Result<(LlmAnswer, ChatReply), (u32, String)> {
    let mut req = ChatRequest {
        messages: vec![
            Message {
                role: "system".into(),
                content: prompt.system.clone(),
            },
            Message {
                role: "user".into(),
                content: prompt.user.clone(),
            },
        ],
        schema: schema::insight_schema(),
    };
    for attempt in 1..=2u32 {
        let reply = llm.chat(&req).await.map_err(|e| (attempt, e.to_string()))?;
        match schema::validate(&reply.content) {
            Ok(answer) => return Ok((answer, reply)),
            Err(problem) if attempt == 1 => {
                req.messages.push(Message {
                    role: "assistant".into(),
                    content: reply.content.clone(),
                });
                req.messages.push(Message {
                    role: "user".into(),
                    content: format!("That answer was not valid: {problem}. Answer again with JSON only, following the schema exactly."),
                });
            }
            Err(problem) => return Err((attempt, format!("invalid answer twice: {problem}"))),
        }
    }
    Err((2, "no valid answer".into()))
}

fn llm_insight(
    subject: &Subject,
    prompt: &Prompt,
    answer: LlmAnswer,
    reply: &ChatReply,
    now: DateTime<Utc>,
) -> Insight {
    let fingerprint = subject.fingerprint();
    Insight {
        id: format!("ins-{}", &prompt.digest[..16]),
        generated_at: now,
        model: reply.model.clone(),
        prompt_version: prompt.version.to_string(),
        anomaly_ids: subject.anomaly_ids(),
        fingerprint,
        instance: subject.instance().to_string(),
        summary: answer.summary,
        recommended_actions: answer.recommended_actions,
        supporting_metrics: serde_json::to_value(answer.supporting_metrics).unwrap_or_default(),
        input_digest: prompt.digest.clone(),
        inputs: serde_json::json!({ "system": prompt.system, "user": prompt.user, "dropped_sections": prompt.dropped }),
        latency_ms: Some(reply.latency.as_millis() as u64),
        prompt_tokens: reply.prompt_tokens,
        completion_tokens: reply.completion_tokens,
        trigger: subject.trigger().to_string(),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{AnalyticsError, ModelStatus};
    use async_trait::async_trait;

    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers from a script, recording the requests.
    struct Scripted {
        answers: Mutex<Vec<Result<String, AnalyticsError>>>,
        seen: Mutex<Vec<ChatRequest>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<String, AnalyticsError>>) -> Arc<Self> {
            Arc::new(Scripted {
                answers: Mutex::new(answers),
                seen: Mutex::new(Vec::new()),
            })
        }
    }

    #[async_trait]
    impl LlmClient for Scripted {
        fn model(&self) -> &str {
            "test-model"
        }
        async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, AnalyticsError> {
            self.seen.lock().unwrap().push(req.clone());
            let content = self.answers.lock().unwrap().remove(0)?;
            Ok(ChatReply {
                content,
                model: "test-model".into(),
                prompt_tokens: Some(100),
                completion_tokens: Some(20),
                latency: Duration::from_millis(5),
            })
        }
        async fn check_model(&self) -> Result<ModelStatus, AnalyticsError> {
            Ok(ModelStatus::Present)
        }
    }

    const GOOD: &str = r#"{"summary":"CPU storm from a regressed plan","recommended_actions":["Force the last good plan"],"supporting_metrics":[{"name":"cpu","value":97,"unit":"%"}]}"#;

    fn subject() -> Subject {
        Subject::Anomaly(Box::new(crate::fixtures::anomaly(
            "sql-01",
            "sqlserver.cpu.utilization",
        )))
    }

    async fn run(answers: Vec<Result<String, AnalyticsError>>) -> (Outcome, Arc<Scripted>) {
        let llm = Scripted::new(answers);
        let analyzer = Analyzer::new(Some(llm.clone()), 10_000);
        let out = analyzer
            .analyze(&subject(), &Context::default(), true, Utc::now())
            .await
            .unwrap();
        (out, llm)
    }

    #[tokio::test]
    async fn valid_answer_becomes_an_llm_insight() {
        let (out, llm) = run(vec![Ok(GOOD.into())]).await;
        assert!(out.failure.is_none());
        let i = out.insight;
        assert_eq!(
            (i.model.as_str(), i.trigger.as_str()),
            ("test-model", "anomaly")
        );
        assert_eq!(i.summary, "CPU storm from a regressed plan");
        assert_eq!(
            (i.prompt_tokens, i.completion_tokens, i.latency_ms),
            (Some(100), Some(20), Some(5))
        );
        assert_eq!(i.anomaly_ids, vec!["a1"]);
        let seen = llm.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].schema, crate::schema::insight_schema());
        assert_eq!(seen[0].messages[0].role, "system");
    }

    #[tokio::test]
    async fn invalid_answer_is_retried_once_with_the_problem() {
        let (out, llm) = run(vec![Ok("nope".into()), Ok(GOOD.into())]).await;
        assert!(out.failure.is_none());
        let seen = llm.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let last = seen[1].messages.last().unwrap();
        assert!(
            last.content.contains("not valid") && last.content.contains("not JSON"),
            "{}",
            last.content
        );
    }

    #[tokio::test]
    async fn two_invalid_answers_or_an_error_fall_back_to_rules_and_are_recorded() {
        let (out, _) = run(vec![Ok("nope".into()), Ok("{}".into())]).await;
        let f = out.failure.expect("failure recorded");
        assert_eq!((f.attempts, f.model.as_str()), (2, "test-model"));
        assert!(f.error.contains("invalid answer twice"), "{}", f.error);
        assert_eq!(out.insight.model, "rules");
        let (out, _) = run(vec![Err(AnalyticsError::Status {
            url: "u".into(),
            status: 500,
            message: "boom".into(),
        })])
        .await;
        assert_eq!(out.failure.map(|f| f.attempts), Some(1));
        assert_eq!(out.insight.model, "rules");
    }

    #[tokio::test]
    async fn without_an_llm_the_rules_analyzer_answers() {
        let analyzer = Analyzer::new(None, 10_000);
        let out = analyzer
            .analyze(&subject(), &Context::default(), true, Utc::now())
            .await
            .unwrap();
        assert_eq!(out.insight.model, "rules");
        assert!(out.failure.is_none());
    }
}
