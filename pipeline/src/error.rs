//! The pipeline's one error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    /// A configuration value is wrong; the message names the field.
    #[error("invalid config: {0}")]
    Config(String),
    /// A rule cannot be used; the message names the rule and the field.
    #[error("rule `{rule}`: {message}")]
    Rule { rule: String, message: String },
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("query: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("model: {0}")]
    Model(#[from] sqlvigil_model::ModelError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("transport: {0}")]
    Transport(String),
    /// The configured backend cannot answer this question.
    #[error("{0}")]
    Unsupported(String),
    /// Elasticsearch (sink or bridge).
    #[error("elasticsearch: {0}")]
    Elastic(#[from] sqlvigil_bridge::BridgeError),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
