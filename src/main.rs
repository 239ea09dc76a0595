//! The `sqlvigil` binary: the command line and one file per command. Every command's
//! work is done by the library crates (`sqlvigil-runtime` and below); this crate parses
//! arguments, prints, and turns errors into exit codes.

mod demo;
mod eval;
mod replay;
mod run;
mod simulate;
mod store;
mod token;
mod validate;

/// glibc's allocator spent about a quarter of `bench kafka` in malloc/free and page
/// faults (every point owns its key strings); mimalloc's thread-local free lists don't.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use sqlvigil_runtime::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sqlvigil",
    version,
    about = "SQL Server telemetry pipeline: OTLP in, anomalies and insights out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline and API from a config file (no simulator).
    Run {
        /// sqlvigil.yaml (SQLVIGIL_* environment variables override it).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Everything in one process with a simulated fleet feeding it.
    Demo(demo::DemoArgs),
    /// Send simulated SQL Server telemetry to an OTLP endpoint.
    Simulate(simulate::SimulateArgs),
    /// Check a config file without running it.
    Validate { config: PathBuf },
    /// The embedded store's files: statistics, compaction, vacuum.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Measure detection quality of the rules on simulated incidents (`--quick`).
    Eval(eval::EvalArgs),
    /// Re-run stored telemetry through the operators (same input → same anomalies).
    Replay(replay::ReplayArgs),
}

/// Command-line overrides of the config file.
#[derive(Args, Clone, Default)]
pub struct Overrides {
    /// Data directory (Parquet, SQLite); for `demo` a temporary one by default.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub otlp_grpc_addr: Option<String>,
    #[arg(long)]
    pub otlp_http_addr: Option<String>,
    #[arg(long)]
    pub api_addr: Option<String>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(d) = &self.data_dir {
            cfg.store.data_dir = d.clone();
        }
        if let Some(a) = &self.otlp_grpc_addr {
            cfg.receiver.grpc_addr = a.clone();
        }
        if let Some(a) = &self.otlp_http_addr {
            cfg.receiver.http_addr = a.clone();
        }
        if let Some(a) = &self.api_addr {
            cfg.api.addr = a.clone();
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    sqlvigil_runtime::init_logging();
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Run { config, overrides } => run::run(&config, &overrides).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Simulate(args) => simulate::simulate(args).await,
            Command::Validate { config } => validate::validate(&config),
            Command::Store { command } => store::store(command).await,
            Command::Token { command } => token::token(command),
            Command::Eval(args) => eval::run(args).await,
            Command::Replay(args) => replay::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
