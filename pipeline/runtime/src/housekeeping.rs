//! Background housekeeping, stopped with the helpers at shutdown:
//! - compaction of the embedded store (`store.compaction`): every `interval`, the hours
//!   that are over are compacted (within `cpu_share` of a core) and the files replaced
//!   at least `grace` ago are deleted;
//! - retention (`store.retention`): in the embedded store, raw telemetry past `raw`
//!   (metrics rolled up first) and rollups past `rollup`; in both backends, resolved
//!   anomalies, insights and failed-analysis records past their age.

use sqlvigil_store::{CompactionConfig, RetentionConfig, StateStore, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Wait `interval`; false once stopping.
async fn tick(interval: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        _ = stop.changed() => return false,
    }
    !*stop.borrow()
}

pub async fn compaction(store: Arc<Store>, cfg: CompactionConfig, mut stop: watch::Receiver<bool>) {
    while tick(cfg.interval, &mut stop).await {
        match store.compact(cfg.settle, cfg.cpu_share).await {
            Ok(done) if done.hours > 0 => tracing::info!(
                hours = done.hours,
                files_in = done.files_in,
                files_out = done.files_out,
                rows_in = done.rows_in,
                rows_out = done.rows_out,
                "store compacted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("store compaction failed, will retry: {e}"),
        }
        if let Err(e) = store.delete_replaced(cfg.grace) {
            tracing::warn!("store: replaced files not deleted, will retry: {e}");
        }
    }
}

pub async fn retention(
    state: Arc<StateStore>,
    store: Option<Arc<Store>>,
    cfg: RetentionConfig,
    mut stop: watch::Receiver<bool>,
) {
    let ago = |d: Duration| {
        chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    };
    while tick(cfg.interval, &mut stop).await {
        if let Some(store) = &store {
            match store.retire(cfg.raw, cfg.rollup).await {
                Ok(gone) if gone != Default::default() => tracing::info!(
                    compacted_hours = gone.compacted_hours,
                    raw_files = gone.raw_files,
                    raw_rows = gone.raw_rows,
                    rollup_files = gone.rollup_files,
                    rollup_rows = gone.rollup_rows,
                    "retention: expired telemetry deleted"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("telemetry retention failed, will retry: {e}"),
            }
        }
        match state.expire(ago(cfg.anomalies), ago(cfg.insights)) {
            Ok(gone) if gone != Default::default() => tracing::info!(
                anomalies = gone.anomalies,
                insights = gone.insights,
                failures = gone.failures,
                "retention: expired records deleted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("retention failed, will retry: {e}"),
        }
    }
}
