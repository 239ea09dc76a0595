//! The embedded store's errors. All of them mean the store could not do its job (a disk,
//! a file, a query): to `sqlvigil_core::Error` they are `Io` or `Failed`, which stop
//! the component and are reported; none is worth retrying blindly.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("model: {0}")]
    Model(#[from] sqlvigil_model::ModelError),
    /// A stored JSON body (anomaly, insight, checkpoint) does not parse.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored file holds what cannot be read back (a rollup's sketch).
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// What was asked contradicts what is recorded (acknowledging a resolved anomaly).
    #[error("{0}")]
    Conflict(String),
}

impl From<StoreError> for sqlvigil_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(source) => sqlvigil_core::Error::io("embedded store", source),
            StoreError::Conflict(m) => sqlvigil_core::Error::Invalid(m),
            other => sqlvigil_core::Error::failed("embedded store", other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
