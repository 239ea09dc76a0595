//! The `sqlvigil` binary: CLI wiring only. Every command builds components from the
//! library crates; nothing here processes data itself.

mod bench;
mod bench_elastic;
mod bench_kafka;
mod bench_operators;
mod demo;
mod eval;
mod replay;

/// glibc's allocator spent about a quarter of `bench kafka` in malloc/free and page
/// faults (every point owns its key strings); mimalloc's thread-local free lists don't.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use sqlvigil_pipeline::sinks::state::{Role, StateStore};
use sqlvigil_pipeline::Config;
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
    Simulate(demo::SimulateArgs),
    /// Check a config file without running it.
    Validate { config: PathBuf },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Measure throughput (`sqlvigil bench ingest|operators|elastic|kafka [--quick]`).
    Bench(bench::BenchArgs),
    /// Measure detection quality of the rules on simulated incidents (`--quick`).
    Eval(eval::EvalArgs),
    /// Re-run stored telemetry through the operators (same input → same anomalies).
    Replay(replay::ReplayArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (only its hash is stored).
    Create {
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "cli")]
        name: String,
    },
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SQLVIGIL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,datafusion=warn,h2=warn,tower=warn,hyper=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
            Command::Run { config, overrides } => {
                let mut cfg = Config::load(&config)
                    .with_context(|| format!("loading {}", config.display()))?;
                overrides.apply(&mut cfg);
                cfg.validate()?;
                demo::run_pipeline(cfg, None).await
            }
            Command::Demo(args) => demo::demo(args).await,
            Command::Simulate(args) => demo::simulate(args).await,
            Command::Validate { config } => {
                let cfg = Config::load(&config)?;
                let rules = cfg.effective_rules()?;
                println!("{}: ok ({} rules)", config.display(), rules.len());
                Ok(())
            }
            Command::Token {
                command:
                    TokenCommand::Create {
                        role,
                        data_dir,
                        name,
                    },
            } => {
                let Some(role) = Role::parse(&role) else {
                    bail!("unknown role {role}")
                };
                let state = StateStore::open(&data_dir)?;
                println!("{}", state.create_token(role, &name)?);
                Ok(())
            }
            Command::Bench(args) => bench::run(args).await,
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
