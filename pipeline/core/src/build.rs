//! The component pattern: a config section (serde, `deny_unknown_fields`) validates
//! itself and builds the running piece.
//!
//! ```
//! use sqlvigil_core::{async_trait, Build, BuildContext, Error, Result};
//!
//! /// `greeting:` — a made-up component.
//! struct GreetingConfig { name: String }
//!
//! #[async_trait]
//! impl Build for GreetingConfig {
//!     type Output = String;
//!     fn validate(&self) -> Result<()> {
//!         if self.name.is_empty() {
//!             return Err(Error::Config("greeting.name must not be empty".into()));
//!         }
//!         Ok(())
//!     }
//!     async fn build(&self, _ctx: &BuildContext) -> Result<String> {
//!         Ok(format!("hello, {}", self.name))
//!     }
//! }
//! # let ctx = BuildContext::new(std::env::temp_dir(), Default::default());
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # assert_eq!(rt.block_on(GreetingConfig { name: "sql-01".into() }.build(&ctx)).unwrap(), "hello, sql-01");
//! ```
//!
//! The topology (`sqlvigil-runtime`) is the only place that matches a configured kind
//! to a concrete type; it hands every component the same [`BuildContext`] and wires
//! what they return to each other.

use crate::bus::Topics;
use crate::error::Result;
use crate::stats::Stats;
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

/// What every component may use while it is built: the process's self metrics, the
/// data directory (for files it owns) and the topic names.
#[derive(Clone)]
pub struct BuildContext {
    pub stats: Arc<Stats>,
    pub data_dir: PathBuf,
    pub topics: Topics,
}

impl BuildContext {
    pub fn new(data_dir: PathBuf, topics: Topics) -> Self {
        BuildContext {
            stats: Arc::new(Stats::default()),
            data_dir,
            topics,
        }
    }
}

/// A config section that builds a component.
#[async_trait]
pub trait Build: Sync {
    /// The running piece (usually an `Arc<dyn Trait>` or a small handle).
    type Output: Send;
    /// Check what serde cannot (addresses, ranges, cross-field rules), naming the field.
    fn validate(&self) -> Result<()>;
    /// Open, connect or start the component.
    async fn build(&self, ctx: &BuildContext) -> Result<Self::Output>;
}
