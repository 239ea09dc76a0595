//! The JSON schema an LLM answer must follow, and its validation. The schema is what
//! Ollama's `format` and OpenAI's `response_format` enforce where the server can; the
//! validation is what sqlvigil enforces regardless.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One metric the model cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CitedMetric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmAnswer {
    pub summary: String,
    pub recommended_actions: Vec<String>,
    pub supporting_metrics: Vec<CitedMetric>,
}

/// The answer schema (strict: every property required, nothing else allowed).
pub fn insight_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "What is wrong and the likely cause, in two or three sentences."},
            "recommended_actions": {"type": "array", "items": {"type": "string"}, "description": "Concrete steps for a DBA, most important first."},
            "supporting_metrics": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "value": {"type": "number"}, "unit": {"type": "string"}},
                    "required": ["name", "value", "unit"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["summary", "recommended_actions", "supporting_metrics"],
        "additionalProperties": false
    })
}

/// Parse and check an answer; the error says what is wrong, for the model to fix.
pub fn validate(content: &str) -> Result<LlmAnswer, String> {
    let trimmed = content.trim();
    // Some models wrap JSON in a Markdown fence despite the format; accept that much.
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or(trimmed);
    let answer: LlmAnswer = serde_json::from_str(body)
        .map_err(|e| format!("the answer is not JSON matching the schema: {e}"))?;
    if answer.summary.trim().is_empty() {
        return Err("`summary` is empty".into());
    }
    if answer.recommended_actions.is_empty()
        || answer
            .recommended_actions
            .iter()
            .any(|a| a.trim().is_empty())
    {
        return Err("`recommended_actions` must list at least one non-empty action".into());
    }
    if let Some(m) = answer
        .supporting_metrics
        .iter()
        .find(|m| !m.value.is_finite())
    {
        return Err(format!(
            "supporting metric `{}` has no finite value",
            m.name
        ));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_answers_and_names_problems() {
        let good = r#"{"summary":"CPU storm","recommended_actions":["look"],"supporting_metrics":[{"name":"cpu","value":97.5,"unit":"%"}]}"#;
        assert_eq!(validate(good).unwrap().supporting_metrics[0].value, 97.5);
        assert!(validate(&format!("```json\n{good}\n```")).is_ok());
        assert!(validate("not json").unwrap_err().contains("not JSON"));
        assert!(
            validate(r#"{"summary":"x","recommended_actions":[],"supporting_metrics":[]}"#)
                .unwrap_err()
                .contains("recommended_actions")
        );
        assert!(validate(
            r#"{"summary":"x","recommended_actions":["a"],"supporting_metrics":[],"extra":1}"#
        )
        .unwrap_err()
        .contains("extra"));
        assert_eq!(
            insight_schema()["required"].as_array().map(Vec::len),
            Some(3)
        );
    }
}
