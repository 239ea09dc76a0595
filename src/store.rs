//! `sqlvigil store stats|compact|vacuum`: the embedded store's files, by hand.
//! Safe while `sqlvigil run` runs on the same data directory: files are swapped through
//! the catalogue, and replaced ones are deleted only after a grace period.

use anyhow::Result;
use clap::Subcommand;
use sqlvigil_core::Stats;
use sqlvigil_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Files, bytes, rows, series, compaction backlog and oldest data per table (JSON).
    Stats {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Compact every hour that is over now (one sorted file per hour, each point once).
    Compact {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Delete the files compactions replaced at least `grace` ago and leftovers of
    /// interrupted writes.
    Vacuum {
        #[arg(long)]
        data_dir: PathBuf,
        /// How long a query that listed a replaced file may still be reading it.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

pub async fn store(command: StoreCommand) -> Result<()> {
    let open = |dir: &PathBuf| Store::open(dir, Arc::new(Stats::default()));
    match command {
        StoreCommand::Stats { data_dir } => {
            let tables = open(&data_dir)?.storage()?;
            println!("{}", serde_json::to_string_pretty(&tables)?);
        }
        StoreCommand::Compact { data_dir } => {
            let done = open(&data_dir)?.compact(Duration::ZERO, 1.0).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
        }
        StoreCommand::Vacuum { data_dir, grace } => {
            // Opening removes what interrupted writes left.
            let deleted = open(&data_dir)?.delete_replaced(grace)?;
            println!("{}", serde_json::json!({ "deleted_files": deleted }));
        }
    }
    Ok(())
}
