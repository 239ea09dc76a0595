//! The two event tables' names and their one schema (what the writer flushes, with no
//! dependency on it).

use crate::error::Result;
use arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::Serialize;
use std::sync::{Arc, LazyLock};

pub(crate) const TOP_QUERIES: &str = "top_queries";
pub(crate) const QUERY_SAMPLES: &str = "query_samples";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("instance", DataType::Utf8, false),
        Field::new("database", DataType::Utf8, false),
        Field::new("query_hash", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
    ]))
});

pub(crate) fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One row: (time ns, instance, database, query hash, the model).
pub(crate) type Row<'a, T> = (i64, &'a str, &'a str, &'a str, &'a T);

pub(crate) fn to_batch<T: Serialize>(rows: &[Row<'_, T>]) -> Result<RecordBatch> {
    let time =
        TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.0)).with_timezone("UTC");
    let text = |pick: usize| {
        let values = rows.iter().map(|r| match pick {
            1 => r.1,
            2 => r.2,
            _ => r.3,
        });
        Arc::new(StringArray::from_iter_values(values)) as ArrayRef
    };
    let records: Vec<String> = rows
        .iter()
        .map(|r| serde_json::to_string(r.4))
        .collect::<std::result::Result<_, _>>()?;
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(time),
            text(1),
            text(2),
            text(3),
            Arc::new(StringArray::from(records)),
        ],
    )?)
}
