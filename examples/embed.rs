//! Embed the pipeline in your own program: start it from a config, push OTLP exports
//! (one scrape of a simulated SQL Server) into its receiver core, read the points back
//! through the same `Reader` the API uses, and shut it down cleanly.
//!
//! ```sh
//! cargo run --example embed
//! ```

use sqlvigil_core::Stats;
use sqlvigil_model::query::MetricFilter;
use sqlvigil_runtime::{Config, Pipeline};
use sqlvigil_simulator::{Fleet, FleetConfig};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.store.data_dir = dir.path().to_path_buf();
    // Any free ports: this program pushes through the receiver core, not the sockets.
    config.receiver.grpc_addr = "127.0.0.1:0".into();
    config.receiver.http_addr = "127.0.0.1:0".into();
    let pipeline = Pipeline::start(config).await?;
    let handles = pipeline.handles().clone();

    let mut fleet = Fleet::new(FleetConfig {
        instances: 1,
        ..FleetConfig::default()
    });
    let mut sent = 0;
    for export in fleet.metrics(0) {
        sent += sqlvigil_simulator::count_points(&export) as u64;
        let reply = handles.ingest.metrics(export).await?;
        println!(
            "export accepted (partial success: {:?})",
            reply.partial_success
        );
    }
    while Stats::get(&handles.stats.processed_points) < sent {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cpu = MetricFilter {
        metric: Some("sqlserver.cpu.utilization".into()),
        ..Default::default()
    };
    for point in handles.reader.metrics(&cpu).await? {
        println!(
            "{} {} = {:.1} {}",
            point.key.instance, point.key.metric, point.value, point.unit
        );
    }
    println!("{sent} points through receiver → bus → operators → store");
    pipeline.shutdown().await?;
    Ok(())
}
