//! A custom operator: implement `sqlvigil_core::Operator` and run it after the chain the
//! config builds. This one counts, per instance, the points above a CPU level in each
//! micro-batch and emits them as a derived series the rules (and the stores) could use.
//!
//! ```sh
//! cargo run --example custom_operator
//! ```
//!
//! To ship it as a kind of its own, put it in `pipeline/operators/src/` with its config
//! and add one entry to `sqlvigil_operators::chain::STAGES`.

use serde_json::{json, Value};
use sqlvigil_core::{run_chain, MicroBatch, Operator, Result, Stats};
use sqlvigil_model::{Sample, SeriesKey};
use sqlvigil_operators::chain::{ChainBuilder, ChainConfig};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts CPU points above `level` per instance and batch.
struct HotPoints {
    level: f64,
    /// All-time count per instance (its state, checkpointed).
    total: BTreeMap<String, u64>,
}

impl Operator for HotPoints {
    fn name(&self) -> &'static str {
        "hot_points"
    }

    fn process(&mut self, batch: &mut MicroBatch) -> Result<()> {
        let mut hot: BTreeMap<(String, i64), u64> = BTreeMap::new();
        for s in &batch.samples {
            if &*s.key.metric == "sqlserver.cpu.utilization" && s.value > self.level {
                *hot.entry((s.key.instance.to_string(), s.time_ns))
                    .or_default() += 1;
            }
        }
        for ((instance, time_ns), n) in hot {
            *self.total.entry(instance.clone()).or_default() += n;
            let key = SeriesKey::new(&instance, "", "", "sqlserver.cpu.hot_points");
            batch
                .samples
                .push(Sample::gauge(key, time_ns, n as f64, "{points}"));
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Value> {
        Ok(json!(self.total))
    }

    fn restore(&mut self, state: Value) -> Result<()> {
        self.total = serde_json::from_value(state)?;
        Ok(())
    }
}

fn main() -> Result<()> {
    let stats = Arc::new(Stats::default());
    let mut chain = ChainBuilder::new(ChainConfig::with_default_rules()?, stats)?.build()?;
    chain.push(Box::new(HotPoints {
        level: 85.0,
        total: BTreeMap::new(),
    }));

    let key = SeriesKey::new("sql-01", "db-host-1", "", "sqlserver.cpu.utilization");
    let samples = [40.0, 91.0, 97.0]
        .iter()
        .enumerate()
        .map(|(i, v)| Sample::gauge(key.clone(), (i as i64 + 1) * 10_000_000_000, *v, "%"))
        .collect();
    let mut batch = MicroBatch {
        samples,
        events: Vec::new(),
    };
    run_chain(&mut chain, &mut batch)?;
    for s in batch
        .samples
        .iter()
        .filter(|s| &*s.key.metric == "sqlserver.cpu.hot_points")
    {
        println!(
            "{} at {}: {} hot point(s)",
            s.key.instance, s.time_ns, s.value
        );
    }
    let state = chain.last().map(|op| op.checkpoint()).transpose()?;
    println!("checkpoint of hot_points: {}", state.unwrap_or_default());
    Ok(())
}
