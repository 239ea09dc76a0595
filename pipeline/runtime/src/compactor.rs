//! The embedded store's background compaction (`store.compaction`): every `interval`,
//! the hours that are over are compacted (within `cpu_share` of a core) and the files
//! replaced at least `grace` ago are deleted. Stops with the helpers at shutdown.

use sqlvigil_store::{CompactionConfig, Store};
use std::sync::Arc;
use tokio::sync::watch;

pub async fn run(store: Arc<Store>, cfg: CompactionConfig, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
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
