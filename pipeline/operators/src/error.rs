//! The operators' failures are the contract's kinds (`sqlvigil_core::Error`): a rule or
//! window that cannot be used is `Rule`/`Config` (fix the config), a predicate that
//! fails to evaluate is `Failed`, an unreadable checkpoint is `Invalid`.

pub use sqlvigil_core::{Error, Result};

/// A DataFusion or Arrow failure while evaluating `what`.
pub(crate) fn eval_failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::failed(what.to_string(), e)
}
