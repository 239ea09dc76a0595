//! An [`Instances`] selection as a filter: a DataFusion condition over the Parquet
//! tables' `instance` column, and a SQLite parameter for `json_each` over the state
//! store's and the catalogue's.

use datafusion::prelude::{col, lit, Expr};
use sqlvigil_model::query::Instances;

/// `instance IN (...)`; false for an empty list (DataFusion refuses an empty `IN`).
pub(crate) fn instance_in(only: &[String]) -> Expr {
    if only.is_empty() {
        return lit(false);
    }
    col("instance").in_list(only.iter().map(|i| lit(i.as_str())).collect(), false)
}

/// The instances as a JSON array for `instance IN (SELECT value FROM json_each(?))`,
/// `None` for all (the query's `? IS NULL OR …` arm).
pub(crate) fn instances_param(instances: &Instances) -> Option<String> {
    instances
        .only()
        .map(|list| serde_json::Value::from(list.to_vec()).to_string())
}
