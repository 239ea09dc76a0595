//! `sqlvigil run` and `demo`: the pipeline and the API in one process until Ctrl-C or
//! SIGTERM, with an optional companion task (the demo's simulator) beside them.

use crate::{Config, Handles, Pipeline};
use sqlvigil_core::{Build, BuildContext, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Something to run alongside the pipeline, given its handles and a stop signal.
pub type Companion = Box<dyn FnOnce(&Handles, watch::Receiver<bool>) -> JoinHandle<()> + Send>;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Start pipeline + API, run `companion` next to them, stop on a signal: the companion
/// first, then the pipeline (drained and flushed), then the API.
pub async fn serve(cfg: Config, companion: Option<Companion>) -> Result<()> {
    let ctx = BuildContext::new(cfg.store.data_dir.clone(), cfg.bus.topics.clone());
    let api_listener = cfg.api.build(&ctx).await?;
    let scheme = api_listener.scheme();
    let api_addr = api_listener
        .local_addr()
        .map_err(|e| sqlvigil_core::Error::io("address of the API listener", e))?;
    let metrics_require_token = cfg.api.metrics_require_token;
    let api_config = cfg.api.clone();
    let pipeline = Pipeline::start(cfg).await?;
    let handles = pipeline.handles().clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let api_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let app = sqlvigil_api::AppState {
        metrics_require_token,
        guard: sqlvigil_api::Guard::new(&api_config),
        ..handles.app_state()
    };
    let api = tokio::spawn(sqlvigil_api::serve(api_listener, app, api_stop));
    println!("OTLP gRPC:  http://{}", handles.grpc_addr);
    println!("OTLP HTTP:  http://{}", handles.http_addr);
    println!("API + page: {scheme}://{api_addr}/");
    let companion = companion.map(|c| c(&handles, stop_rx.clone()));
    termination().await;
    println!(
        "shutting down: draining and flushing what was accepted (a second Ctrl-C exits at once)…"
    );
    tokio::spawn(async {
        termination().await;
        eprintln!("second signal: exiting without finishing the shutdown");
        std::process::exit(130);
    });
    let _ = stop_tx.send(true);
    if let Some(c) = companion {
        let _ = c.await;
    }
    let result = pipeline.shutdown().await;
    let _ = api.await;
    result?;
    println!("stopped cleanly");
    Ok(())
}
