//! Stream operators over micro-batches.
//!
//! A micro-batch is the decoded samples of a handful of bus records of one partition.
//! Each [`Operator`] reads the batch and adds derived samples (rates, window aggregates)
//! or anomaly events to it; `sqlvigil-operators` builds the chain from the config.
//! Operators keep per-series state, snapshot it as JSON ([`Operator::checkpoint`]) and
//! are told when event time moves on without them ([`Operator::advance`]).

use crate::error::Result;
use sqlvigil_model::{AnomalyEvent, Sample};

/// What flows through the operator chain.
#[derive(Debug, Default)]
pub struct MicroBatch {
    /// Raw samples followed by derived ones.
    pub samples: Vec<Sample>,
    pub events: Vec<AnomalyEvent>,
}

/// One stage of the chain.
pub trait Operator: Send {
    fn name(&self) -> &'static str;
    fn process(&mut self, batch: &mut MicroBatch) -> Result<()>;
    /// State to checkpoint (JSON), restored by [`Operator::restore`].
    fn checkpoint(&self) -> Result<serde_json::Value>;
    fn restore(&mut self, state: serde_json::Value) -> Result<()>;
    /// Event time moved on to `watermark` elsewhere (other partitions) while this chain
    /// received nothing: do what silence should do (absence rules fire, windows close),
    /// adding samples or events to `out`. Default: nothing.
    fn advance(&mut self, _watermark: i64, _out: &mut MicroBatch) -> Result<()> {
        Ok(())
    }
}

/// A chain of operators in data-flow order; each sees what the ones before it added.
pub type Chain = Vec<Box<dyn Operator>>;

/// Run `chain` over `batch`.
pub fn run_chain(chain: &mut [Box<dyn Operator>], batch: &mut MicroBatch) -> Result<()> {
    for op in chain.iter_mut() {
        op.process(batch)?;
    }
    Ok(())
}
