//! The columnar form of [`Sample`]s: the schema the operators evaluate rules over and
//! the Parquet store writes. String keys are dictionary-encoded.

use crate::{HistogramPoint, MetricKind, ModelError, Sample, SeriesKey};
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, ListArray,
    ListBuilder, StringArray, StringDictionaryBuilder, TimestampNanosecondArray, UInt64Array,
    UInt64Builder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::sync::{Arc, LazyLock};

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

static SAMPLE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp(), false),
        Field::new("start_time", timestamp(), false),
        Field::new("series_id", DataType::UInt64, false),
        Field::new("instance", dict(), false),
        Field::new("host", dict(), false),
        Field::new("database", dict(), false),
        Field::new("metric", dict(), false),
        Field::new("attributes", dict(), false),
        Field::new("value", DataType::Float64, false),
        Field::new("kind", dict(), false),
        Field::new("monotonic", DataType::Boolean, false),
        Field::new("unit", dict(), false),
        Field::new("hist_count", DataType::UInt64, true),
        Field::new_list(
            "hist_bounds",
            Field::new_list_field(DataType::Float64, true),
            true,
        ),
        Field::new_list(
            "hist_buckets",
            Field::new_list_field(DataType::UInt64, true),
            true,
        ),
    ]))
});

/// Schema of a sample batch.
pub fn sample_schema() -> SchemaRef {
    SAMPLE_SCHEMA.clone()
}

/// A dictionary column from `values`, appended a run at a time: points of one request
/// share instance, host and database, and points of one metric its name and unit, so
/// most rows repeat the row before and need no dictionary lookup.
fn dictionary<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    let mut run: Option<(&str, usize)> = None;
    for v in values {
        match &mut run {
            Some((prev, n)) if std::ptr::eq(*prev, v) || *prev == v => *n += 1,
            _ => {
                if let Some((prev, n)) = run {
                    b.append_values(prev, n);
                }
                run = Some((v, 1));
            }
        }
    }
    if let Some((prev, n)) = run {
        b.append_values(prev, n);
    }
    Arc::new(b.finish())
}

/// Build one record batch from samples (in the given order).
pub fn samples_to_batch(samples: &[Sample]) -> Result<RecordBatch, ModelError> {
    let n = samples.len();
    let mut monotonic = BooleanBuilder::with_capacity(n);
    let mut hist_count = UInt64Builder::with_capacity(n);
    let mut hist_bounds = ListBuilder::new(Float64Builder::new());
    let mut hist_buckets = ListBuilder::new(UInt64Builder::new());
    // Series repeat within a batch: serialise each one's attributes once.
    let mut attrs_cache: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let ids: Vec<u64> = samples.iter().map(|s| s.key.id()).collect();
    for (s, id) in samples.iter().zip(&ids) {
        if !s.key.attributes.is_empty() {
            attrs_cache
                .entry(*id)
                .or_insert_with(|| s.key.attributes_json());
        }
        monotonic.append_value(s.monotonic);
        match &s.histogram {
            Some(h) => {
                hist_count.append_value(h.count);
                hist_bounds.append_value(h.bounds.iter().map(|v| Some(*v)));
                hist_buckets.append_value(h.bucket_counts.iter().map(|v| Some(*v)));
            }
            None => {
                hist_count.append_null();
                hist_bounds.append_null();
                hist_buckets.append_null();
            }
        }
    }
    let attributes = dictionary(samples.iter().zip(&ids).map(|(s, id)| {
        attrs_cache
            .get(id)
            .filter(|_| !s.key.attributes.is_empty())
            .map_or("{}", String::as_str)
    }));
    let time = TimestampNanosecondArray::from_iter_values(samples.iter().map(|s| s.time_ns))
        .with_timezone("UTC");
    let start = TimestampNanosecondArray::from_iter_values(samples.iter().map(|s| s.start_time_ns))
        .with_timezone("UTC");
    let values = Float64Array::from_iter_values(samples.iter().map(|s| s.value));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time),
        Arc::new(start),
        Arc::new(UInt64Array::from(ids)),
        dictionary(samples.iter().map(|s| &*s.key.instance)),
        dictionary(samples.iter().map(|s| &*s.key.host)),
        dictionary(samples.iter().map(|s| &*s.key.database)),
        dictionary(samples.iter().map(|s| &*s.key.metric)),
        attributes,
        Arc::new(values),
        dictionary(samples.iter().map(|s| s.kind.as_str())),
        Arc::new(monotonic.finish()),
        dictionary(samples.iter().map(|s| &*s.unit)),
        Arc::new(hist_count.finish()),
        Arc::new(hist_bounds.finish()),
        Arc::new(hist_buckets.finish()),
    ];
    Ok(RecordBatch::try_new(sample_schema(), columns)?)
}

fn strings(batch: &RecordBatch, name: &'static str) -> Result<StringArray, ModelError> {
    let col = batch.column_by_name(name).ok_or(ModelError::Column(name))?;
    let plain = cast(col, &DataType::Utf8)?;
    plain
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or(ModelError::Column(name))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a T, ModelError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or(ModelError::Column(name))
}

fn list_values<T: Copy>(
    list: &ListArray,
    row: usize,
    get: impl Fn(&ArrayRef, usize) -> Option<T>,
) -> Vec<T> {
    let values = list.value(row);
    (0..values.len()).filter_map(|i| get(&values, i)).collect()
}

/// Read samples back from a batch with [`sample_schema`] (Parquet round trip, tests).
pub fn batch_to_samples(batch: &RecordBatch) -> Result<Vec<Sample>, ModelError> {
    let time = column::<TimestampNanosecondArray>(batch, "time")?;
    let start = column::<TimestampNanosecondArray>(batch, "start_time")?;
    let value = column::<Float64Array>(batch, "value")?;
    let monotonic = column::<BooleanArray>(batch, "monotonic")?;
    let hist_count = column::<UInt64Array>(batch, "hist_count")?;
    let hist_bounds = column::<ListArray>(batch, "hist_bounds")?;
    let hist_buckets = column::<ListArray>(batch, "hist_buckets")?;
    let [instance, host, database, metric, attributes, kind, unit] = [
        "instance",
        "host",
        "database",
        "metric",
        "attributes",
        "kind",
        "unit",
    ]
    .map(|n| strings(batch, n));
    let (instance, host, database, metric, attributes, kind, unit) = (
        instance?,
        host?,
        database?,
        metric?,
        attributes?,
        kind?,
        unit?,
    );
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let kind = MetricKind::parse(kind.value(i))
            .ok_or_else(|| ModelError::Kind(kind.value(i).to_string()))?;
        let histogram = (!hist_count.is_null(i)).then(|| HistogramPoint {
            count: hist_count.value(i),
            bounds: list_values(hist_bounds, i, |a, j| {
                a.as_any()
                    .downcast_ref::<Float64Array>()
                    .map(|a| a.value(j))
            }),
            bucket_counts: list_values(hist_buckets, i, |a, j| {
                a.as_any().downcast_ref::<UInt64Array>().map(|a| a.value(j))
            }),
        });
        out.push(Sample {
            time_ns: time.value(i),
            start_time_ns: start.value(i),
            key: SeriesKey::from_parts(
                instance.value(i),
                host.value(i),
                database.value(i),
                metric.value(i),
                serde_json::from_str(attributes.value(i)).unwrap_or_default(),
            ),
            value: value.value(i),
            kind,
            monotonic: monotonic.value(i),
            unit: unit.value(i).into(),
            histogram,
        });
    }
    Ok(out)
}

/// Column of event times as i64 ns (helper for operators).
pub fn times(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, ModelError> {
    column::<TimestampNanosecondArray>(batch, "time")
}

/// Column of series ids (helper for operators).
pub fn series_ids(batch: &RecordBatch) -> Result<&UInt64Array, ModelError> {
    column::<UInt64Array>(batch, "series_id")
}

static LOG_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp(), false),
        Field::new("instance", dict(), false),
        Field::new("host", dict(), false),
        Field::new("severity", dict(), false),
        Field::new("severity_number", DataType::Int32, false),
        Field::new("category", dict(), false),
        Field::new("message", DataType::Utf8, false),
        Field::new("attributes", DataType::Utf8, false),
    ]))
});

/// Schema of a log batch (the `mssql-logs-*` shape).
pub fn log_schema() -> SchemaRef {
    LOG_SCHEMA.clone()
}

/// Build one record batch from log records.
pub fn logs_to_batch(logs: &[crate::LogRecord]) -> Result<RecordBatch, ModelError> {
    let mut dicts: Vec<StringDictionaryBuilder<Int32Type>> =
        (0..4).map(|_| StringDictionaryBuilder::new()).collect();
    for l in logs {
        for (b, v) in dicts
            .iter_mut()
            .zip([&l.instance, &l.host, &l.severity, &l.category])
        {
            b.append_value(v);
        }
    }
    let time = TimestampNanosecondArray::from_iter_values(
        logs.iter()
            .map(|l| l.time.timestamp_nanos_opt().unwrap_or(i64::MAX)),
    )
    .with_timezone("UTC");
    let sev = arrow::array::Int32Array::from_iter_values(logs.iter().map(|l| l.severity_number));
    let msg = StringArray::from_iter_values(logs.iter().map(|l| l.message.as_str()));
    let attrs = StringArray::from_iter_values(
        logs.iter()
            .map(|l| serde_json::to_string(&l.attributes).unwrap_or_else(|_| "{}".into())),
    );
    let mut d = dicts
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || d.next().ok_or(ModelError::Column("dictionary"));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time),
        next()?,
        next()?,
        next()?,
        Arc::new(sev),
        next()?,
        Arc::new(msg),
        Arc::new(attrs),
    ];
    Ok(RecordBatch::try_new(log_schema(), columns)?)
}

/// Read log records back from a batch with [`log_schema`].
pub fn batch_to_logs(batch: &RecordBatch) -> Result<Vec<crate::LogRecord>, ModelError> {
    let time = column::<TimestampNanosecondArray>(batch, "time")?;
    let sev = column::<arrow::array::Int32Array>(batch, "severity_number")?;
    let [instance, host, severity, category, message, attributes] = [
        "instance",
        "host",
        "severity",
        "category",
        "message",
        "attributes",
    ]
    .map(|n| strings(batch, n));
    let (instance, host, severity, category, message, attributes) = (
        instance?,
        host?,
        severity?,
        category?,
        message?,
        attributes?,
    );
    Ok((0..batch.num_rows())
        .map(|i| crate::LogRecord {
            time: crate::ns_to_datetime(time.value(i)),
            severity: severity.value(i).to_string(),
            severity_number: sev.value(i),
            message: message.value(i).to_string(),
            category: category.value(i).to_string(),
            instance: instance.value(i).to_string(),
            host: host.value(i).to_string(),
            attributes: serde_json::from_str(attributes.value(i)).unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_through_arrow() {
        let key = SeriesKey::new("sql1", "h1", "master", "sqlserver.os.wait.duration")
            .with_attr("wait.type", "LCK_M_X")
            .with_attr("wait.category", "Lock");
        let mut hist = Sample::gauge(key.renamed("latency"), 5, 2.5, "ms");
        hist.kind = MetricKind::Histogram;
        hist.histogram = Some(HistogramPoint {
            count: 3,
            bounds: vec![1.0, 2.0],
            bucket_counts: vec![1, 1, 1],
        });
        let samples = vec![
            Sample {
                time_ns: 1_000,
                start_time_ns: 10,
                key,
                value: 12.5,
                kind: MetricKind::CumulativeSum,
                monotonic: true,
                unit: "s".into(),
                histogram: None,
            },
            hist,
        ];
        let batch = samples_to_batch(&samples).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch_to_samples(&batch).unwrap(), samples);
    }

    #[test]
    fn repeated_values_are_appended_as_runs_and_read_back_in_order() {
        let key = |instance: &str, metric: &str| SeriesKey::new(instance, "h", "", metric);
        let mut samples = Vec::new();
        for (i, (instance, metric)) in [
            ("sql1", "a"),
            ("sql1", "a"),
            ("sql1", "b"),
            ("sql2", "b"),
            ("sql2", "a"),
            ("sql1", "a"),
        ]
        .into_iter()
        .enumerate()
        {
            let unit = if metric == "a" { "s" } else { "%" };
            samples.push(Sample::gauge(
                key(instance, metric),
                i as i64,
                i as f64,
                unit,
            ));
        }
        let batch = samples_to_batch(&samples).unwrap();
        assert_eq!(batch_to_samples(&batch).unwrap(), samples);
        let instances = batch
            .column_by_name("instance")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::DictionaryArray<Int32Type>>()
            .unwrap()
            .values()
            .len();
        assert_eq!(instances, 2, "one dictionary entry per distinct value");
    }
}
