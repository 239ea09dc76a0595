//! Rollups: for each series, per minute (`rollup_1m/`, one file per hour) and per hour
//! (`rollup_1h/`, one file per day), the count, sum, min, max and last value of its
//! points and a DDSketch of them (quantiles within 1 % relative error, mergeable, in
//! DataDog's binary encoding). They are written by the compaction of an hour from the
//! hour's sorted, deduplicated points (see [`crate::compact`]), so an hour's rollups
//! always describe each of its points once; raw points may then expire
//! (`store.retention.raw`) while the rollups stay (`store.retention.rollup`).
//!
//! A rollup row has the columns of a point (the key of the series, the bucket's start
//! as `time`, and as `value` the mean for gauges or the last value for sums and
//! histograms, so a rollup reads back as a point) plus the aggregate columns. Points
//! whose value is not finite are kept raw but left out of rollups.

use crate::error::{Result, StoreError};
use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Float64Array, StringArray,
    TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sketches_ddsketch::{Config, DDSketch};
use sqlvigil_model::arrow_schema::sample_schema;
use sqlvigil_model::query::Resolution;
use std::sync::{Arc, LazyLock};

pub(crate) const ROLLUP_1M: &str = "rollup_1m";
pub(crate) const ROLLUP_1H: &str = "rollup_1h";
/// The rollup tables, finest first.
pub(crate) const ROLLUPS: [&str; 2] = [ROLLUP_1M, ROLLUP_1H];

/// The aggregate columns a rollup adds to a point's.
const AGGREGATES: [(&str, DataType); 6] = [
    ("count", DataType::UInt64),
    ("sum", DataType::Float64),
    ("min", DataType::Float64),
    ("max", DataType::Float64),
    ("last", DataType::Float64),
    ("sketch", DataType::Binary),
];

static ROLLUP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = sample_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(AGGREGATES.map(|(name, dt)| Field::new(name, dt, false)));
    Arc::new(Schema::new(fields))
});

/// The schema of a rollup file (both resolutions).
pub(crate) fn rollup_schema() -> SchemaRef {
    ROLLUP_SCHEMA.clone()
}

/// The table of a rollup resolution.
pub(crate) fn table_of(r: Resolution) -> &'static str {
    match r {
        Resolution::Hour => ROLLUP_1H,
        _ => ROLLUP_1M,
    }
}

/// The aggregate of some points: what a rollup row holds, and what a query folds
/// points and rollup rows into.
#[derive(Clone)]
pub(crate) struct Partial {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    /// Time of `last`: the later of two partials gives the merged one its last value.
    last_ns: i64,
    pub sketch: DDSketch,
}

impl Default for Partial {
    fn default() -> Self {
        Partial {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NAN,
            last_ns: i64::MIN,
            sketch: DDSketch::new(Config::defaults()),
        }
    }
}

impl Partial {
    /// Add one point (a value that is not finite is left out).
    pub fn add(&mut self, time_ns: i64, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if time_ns >= self.last_ns {
            (self.last, self.last_ns) = (v, time_ns);
        }
        self.sketch.add(v);
    }

    /// Fold another partial in.
    pub fn merge(&mut self, o: &Partial) -> Result<()> {
        if o.count == 0 {
            return Ok(());
        }
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.last_ns >= self.last_ns {
            (self.last, self.last_ns) = (o.last, o.last_ns);
        }
        self.sketch
            .merge(&o.sketch)
            .map_err(|e| StoreError::Corrupt(format!("rollup sketch: {e}")))
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }

    /// The `q` quantile, within the sketch's 1 % relative error (NaN when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        self.sketch.quantile(q).ok().flatten().unwrap_or(f64::NAN)
    }
}

/// The aggregate columns of a rollup batch, read row by row.
pub(crate) struct RollupColumns {
    time: TimestampNanosecondArray,
    count: UInt64Array,
    sum: Float64Array,
    min: Float64Array,
    max: Float64Array,
    last: Float64Array,
    sketch: BinaryArray,
}

impl RollupColumns {
    /// The columns of `b`, or None when `b` holds raw points.
    pub fn of(b: &RecordBatch) -> Result<Option<RollupColumns>> {
        if b.column_by_name("sketch").is_none() {
            return Ok(None);
        }
        let f64s = |n: &'static str| typed_col::<Float64Array>(b, n, &DataType::Float64);
        Ok(Some(RollupColumns {
            time: typed_col(b, "time", b.schema().field_with_name("time")?.data_type())?,
            count: typed_col(b, "count", &DataType::UInt64)?,
            sum: f64s("sum")?,
            min: f64s("min")?,
            max: f64s("max")?,
            last: f64s("last")?,
            sketch: typed_col(b, "sketch", &DataType::Binary)?,
        }))
    }

    /// Row `i` as a partial (its bucket's start orders its last value).
    pub fn partial(&self, i: usize) -> Result<Partial> {
        let sketch = DDSketch::from_java_bytes(self.sketch.value(i))
            .map_err(|e| StoreError::Corrupt(format!("rollup sketch: {e}")))?;
        Ok(Partial {
            count: self.count.value(i),
            sum: self.sum.value(i),
            min: self.min.value(i),
            max: self.max.value(i),
            last: self.last.value(i),
            last_ns: self.time.value(i),
            sketch,
        })
    }
}

/// Column `name` of `b` cast to `dt` and downcast to its array type (the read side
/// uses it too).
pub(crate) fn typed_col<T: Clone + 'static>(
    b: &RecordBatch,
    name: &'static str,
    dt: &DataType,
) -> Result<T> {
    let missing = || StoreError::from(sqlvigil_model::ModelError::Column(name));
    let col = cast(b.column_by_name(name).ok_or_else(missing)?, dt)?;
    col.as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(missing)
}

/// Roll `batch` up into buckets of `width_ns` (aligned to the epoch): one row per
/// series and bucket. `batch` holds raw points or finer rollups, sorted by series and
/// then time, so each bucket of a series is one run of rows.
pub(crate) fn roll_up(batch: &RecordBatch, width_ns: i64) -> Result<RecordBatch> {
    let times = typed_col::<TimestampNanosecondArray>(
        batch,
        "time",
        batch.schema().field_with_name("time")?.data_type(),
    )?;
    let ids: UInt64Array = typed_col(batch, "series_id", &DataType::UInt64)?;
    let values: Float64Array = typed_col(batch, "value", &DataType::Float64)?;
    let finer = RollupColumns::of(batch)?;
    let (mut last_rows, mut starts, mut parts) = (Vec::new(), Vec::new(), Vec::<Partial>::new());
    let mut current = None;
    for i in 0..batch.num_rows() {
        let t = times.value(i);
        let key = (ids.value(i), t.div_euclid(width_ns) * width_ns);
        if current != Some(key) {
            current = Some(key);
            parts.push(Partial::default());
            last_rows.push(i as u32);
            starts.push(key.1);
        }
        let (Some(p), Some(row)) = (parts.last_mut(), last_rows.last_mut()) else {
            continue;
        };
        match &finer {
            Some(c) => p.merge(&c.partial(i)?)?,
            None => p.add(t, values.value(i)),
        }
        *row = i as u32;
    }
    build(batch, &UInt32Array::from(last_rows), starts, &parts)
}

/// The rollup batch of `parts`, with the key columns of `batch`'s rows `last_rows`.
fn build(
    batch: &RecordBatch,
    last_rows: &UInt32Array,
    starts: Vec<i64>,
    parts: &[Partial],
) -> Result<RecordBatch> {
    let kinds: StringArray = typed_col(batch, "kind", &DataType::Utf8)?;
    let kinds = take(&kinds, last_rows, None)?;
    let kinds = kinds
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or(sqlvigil_model::ModelError::Column("kind"))?;
    let schema = rollup_schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in sample_schema().fields() {
        columns.push(match field.name().as_str() {
            "time" => Arc::new(TimestampNanosecondArray::from(starts.clone()).with_timezone("UTC")),
            // A rollup reads back as a point: the mean of a gauge, the last of a sum.
            "value" => Arc::new(Float64Array::from_iter_values(
                parts.iter().enumerate().map(|(i, p)| {
                    if kinds.value(i) == "gauge" {
                        p.mean()
                    } else {
                        p.last
                    }
                }),
            )),
            name => {
                let col = batch
                    .column_by_name(name)
                    .ok_or_else(|| StoreError::Corrupt(format!("no column `{name}`")))?;
                take(col, last_rows, None)?
            }
        });
    }
    let f64s = |f: fn(&Partial) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(parts.iter().map(f)))
    };
    columns.push(Arc::new(UInt64Array::from_iter_values(
        parts.iter().map(|p| p.count),
    )));
    columns.push(f64s(|p| p.sum));
    columns.push(f64s(|p| p.min));
    columns.push(f64s(|p| p.max));
    columns.push(f64s(|p| p.last));
    let mut sketches = BinaryBuilder::new();
    for p in parts {
        sketches.append_value(p.sketch.to_java_bytes());
    }
    columns.push(Arc::new(sketches.finish()));
    // Buckets with only non-finite points have nothing to say.
    let batch = RecordBatch::try_new(schema, columns)?;
    let keep: arrow::array::BooleanArray = parts.iter().map(|p| Some(p.count > 0)).collect();
    Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::arrow_schema::samples_to_batch;
    use sqlvigil_model::{Sample, SeriesKey};

    fn points() -> RecordBatch {
        let a = SeriesKey::new("a", "h", "", "m");
        let b = SeriesKey::new("b", "h", "", "m");
        let mut out = Vec::new();
        for (key, base) in [(a, 0.0), (b, 100.0)] {
            for s in 0..180 {
                out.push(Sample::gauge(
                    key.clone(),
                    s * 1_000_000_000,
                    base + s as f64,
                    "%",
                ));
            }
        }
        out.sort_by_key(|s| (s.key.id(), s.time_ns));
        samples_to_batch(&out).unwrap()
    }

    #[test]
    fn minutes_roll_up_into_hours_like_the_points_do() {
        let raw = points();
        let minutes = roll_up(&raw, Resolution::Minute.width_ns()).unwrap();
        assert_eq!(minutes.num_rows(), 6, "3 minutes × 2 series");
        let hour_from_minutes = roll_up(&minutes, Resolution::Hour.width_ns()).unwrap();
        let hour_from_points = roll_up(&raw, Resolution::Hour.width_ns()).unwrap();
        assert_eq!(hour_from_minutes.num_rows(), 2);
        for hour in [&hour_from_minutes, &hour_from_points] {
            let c = RollupColumns::of(hour).unwrap().unwrap();
            let p = (0..2).map(|i| c.partial(i).unwrap()).collect::<Vec<_>>();
            let a = p.iter().find(|p| p.min == 0.0).unwrap();
            assert_eq!(
                (a.count, a.sum, a.max, a.last),
                (180, 16_110.0, 179.0, 179.0)
            );
            let p50 = a.quantile(0.5);
            assert!((p50 - 89.5).abs() <= 0.02 * 89.5, "p50 {p50}");
        }
        let values = typed_col::<Float64Array>(&minutes, "value", &DataType::Float64).unwrap();
        assert_eq!(
            values.value(0),
            29.5,
            "a gauge's rollup reads back as its mean"
        );
        let back = sqlvigil_model::arrow_schema::batch_to_samples(&minutes).unwrap();
        assert_eq!(back.len(), 6);
    }
}
