//! The scheduled capacity digest: every `analytics.digest.interval`, one insight per
//! instance that reported in the last `analytics.digest.window`.

use crate::error::AnalyticsError;
use crate::prompt::Subject;
use crate::service::AnalyticsService;
use chrono::Utc;
use sqlvigil_model::query::MetricFilter;
use sqlvigil_model::Insight;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

impl AnalyticsService {
    /// Every `interval`, a capacity digest over the last `window` for each instance that
    /// reported in it.
    pub async fn run_digests(
        self: Arc<Self>,
        interval: Duration,
        window: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.digest_all(window).await {
                tracing::warn!("capacity digest failed: {e}");
            }
        }
    }

    /// One digest per instance seen in the last `window`.
    pub async fn digest_all(&self, window: Duration) -> Result<Vec<Insight>, AnalyticsError> {
        let to = Utc::now();
        let from = to - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
        let filter = MetricFilter {
            from_ns: Some(crate::service::ns(from)),
            to_ns: Some(crate::service::ns(to)),
            ..Default::default()
        };
        let mut instances: Vec<String> = self
            .reader
            .series(&filter)
            .await?
            .into_iter()
            .map(|s| s.instance)
            .collect();
        instances.sort();
        instances.dedup();
        let mut out = Vec::new();
        for instance in instances {
            out.push(self.analyze(Subject::Digest { instance, from, to }).await?);
        }
        Ok(out)
    }
}
