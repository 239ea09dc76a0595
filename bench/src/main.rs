//! `sqlvigil-bench NAME [--quick] [--url URL]`: the benchmarks (`api`, `ingest`, `operators`,
//! `soak`, `store`, `kafka`, `elastic`). Each prints its figures and, last, its headline as
//! `label: value unit`; `--quick` runs in under 30 s. Figures and commands are in
//! BENCHMARKS.md.
//!
//! The benches drive the same library crates the `sqlvigil` binary runs (the runtime's
//! topology, the operators' one chain builder) with the same allocator, and start their
//! test servers from `sqlvigil-testkit`.

mod api;
mod elastic;
mod ingest;
mod kafka;
mod operators;
mod soak;
mod store;
mod workload;

/// The allocator of the `sqlvigil` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser)]
#[command(name = "sqlvigil-bench", about = "sqlvigil's benchmarks")]
struct BenchArgs {
    /// Which benchmark: api, ingest, operators, soak, store, elastic, kafka.
    name: String,
    /// A smaller run (under 30 s).
    #[arg(long)]
    quick: bool,
    /// `elastic`: the Elasticsearch URL (default: the test server, in process); `kafka`:
    /// the brokers (default: a tansu broker started for the run).
    #[arg(long)]
    url: Option<String>,
}

fn main() -> Result<()> {
    let args = BenchArgs::parse();
    // The binary's logging, so the figures include the same work.
    sqlvigil_runtime::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.name.as_str() {
            "api" => api::run(args.quick).await,
            "ingest" => ingest::run(args.quick).await,
            "operators" => operators::run(args.quick).await,
            "soak" => soak::run(args.quick).await,
            "store" => store::run(args.quick).await,
            "elastic" => elastic::run(args.quick, args.url).await,
            "kafka" => kafka::run(args.quick, args.url).await,
            // The Elasticsearch test server as `elastic`'s child process.
            "elastic-server" => {
                sqlvigil_testkit_elastic::serve_until_stdin_closes();
                Ok(())
            }
            other => {
                bail!("unknown benchmark `{other}`; available: api, ingest, operators, soak, store, elastic, kafka")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        <super::BenchArgs as clap::CommandFactory>::command().debug_assert();
    }
}
