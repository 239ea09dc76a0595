//! What people did about an anomaly through the API — acknowledged it, resolved it by
//! hand, silenced it for a while — and the audit of each action. Kept beside the
//! pipeline's own record of the anomaly and laid over it when it is read, so the rule's
//! later updates never erase a person's action.
//!
//! A hand resolve closes that occurrence for good: the rule's own updates and resolve of
//! it change nothing more, and once the condition clears and crosses again the rule opens
//! a new anomaly. A silence suppresses notifications until it ends and never the record.

use crate::{Anomaly, AnomalyState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who did it and when (the token's name and id, never its secret), with their note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handled {
    pub by: String,
    pub token_id: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Notifications suppressed until `until`, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    #[serde(flatten)]
    pub handled: Handled,
    pub until: DateTime<Utc>,
}

/// The current human state of an anomaly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Handled>,
    /// Resolved by hand (the rule had not resolved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Handled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced: Option<Silence>,
}

/// What a person can do to an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Acknowledge,
    Resolve,
    Silence,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Acknowledge => "acknowledge",
            ActionKind::Resolve => "resolve",
            ActionKind::Silence => "silence",
        }
    }
}

/// One action as audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyAction {
    pub anomaly_id: String,
    pub action: ActionKind,
    #[serde(flatten)]
    pub handled: Handled,
    /// A silence's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl Handling {
    /// Why `action` cannot be done to `anomaly` now, if it cannot: what is resolved
    /// cannot be acknowledged or resolved again, an acknowledged anomaly is not
    /// acknowledged twice.
    pub fn refuses(&self, anomaly: &Anomaly, action: ActionKind) -> Option<String> {
        let resolved = anomaly.state == AnomalyState::Resolved || self.resolved.is_some();
        match action {
            ActionKind::Acknowledge | ActionKind::Resolve if resolved => {
                Some(format!("anomaly `{}` is already resolved", anomaly.id))
            }
            ActionKind::Acknowledge => self.acknowledged.as_ref().map(|h| {
                format!(
                    "anomaly `{}` was already acknowledged by {} at {}",
                    anomaly.id,
                    h.by,
                    h.at.to_rfc3339()
                )
            }),
            _ => None,
        }
    }

    /// `self` with `action` done.
    pub fn with(mut self, action: &AnomalyAction) -> Handling {
        let h = action.handled.clone();
        match action.action {
            ActionKind::Acknowledge => self.acknowledged = Some(h),
            ActionKind::Resolve => self.resolved = Some(h),
            ActionKind::Silence => {
                self.silenced = action.until.map(|until| Silence { handled: h, until })
            }
        }
        self
    }

    /// Whether notifications of the anomaly are silenced at `now`.
    pub fn silenced_at(&self, now: DateTime<Utc>) -> bool {
        self.silenced.as_ref().is_some_and(|s| now < s.until)
    }

    /// `anomaly` as people left it: a hand resolve resolves it at that time.
    pub fn apply(&self, anomaly: &mut Anomaly) {
        if let Some(r) = &self.resolved {
            if anomaly.state == AnomalyState::Open || anomaly.resolved_at.is_none_or(|t| t > r.at) {
                anomaly.state = AnomalyState::Resolved;
                anomaly.resolved_at = Some(r.at);
            }
        }
        anomaly.handling = Some(self.clone());
    }
}
