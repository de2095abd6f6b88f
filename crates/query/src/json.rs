//! Arrow values as JSON: timestamps as RFC 3339 text in UTC with nanoseconds, numbers as numbers,
//! lists as arrays, JSON-text columns optionally parsed into objects.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value};

/// Formats nanoseconds since the epoch as `2026-11-22T03:04:05.123456789Z`.
pub fn format_time_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// One cell as JSON.
pub fn cell(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Timestamp(unit, _) => {
            let ns = match arrow::compute::cast(&array.slice(row, 1), &DataType::Int64) {
                Ok(values) => values.as_primitive::<Int64Type>().value(0),
                Err(_) => return formatted(array, row),
            };
            let scale = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            Value::String(format_time_ns(ns.saturating_mul(scale)))
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            Value::Array((0..list.len()).map(|i| cell(&list, i)).collect())
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>().value(row);
            Value::Array((0..list.len()).map(|i| cell(&list, i)).collect())
        }
        _ => formatted(array, row),
    }
}

fn float(value: f64) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(value.to_string()))
}

fn formatted(array: &ArrayRef, row: usize) -> Value {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(array.as_ref(), &options) {
        Ok(formatter) => Value::String(formatter.value(row).to_string()),
        Err(_) => Value::Null,
    }
}

/// One row as an array of cells.
pub fn row(batch: &RecordBatch, row: usize) -> Value {
    Value::Array(batch.columns().iter().map(|c| cell(c, row)).collect())
}

/// The bytes of a row's text and binary cells: a lower bound of its JSON size, known before
/// anything is copied.
pub fn row_text_bytes(batch: &RecordBatch, row: usize) -> usize {
    batch
        .columns()
        .iter()
        .filter(|c| !c.is_null(row))
        .map(|c| match c.data_type() {
            DataType::Utf8 => c.as_string::<i32>().value(row).len(),
            DataType::LargeUtf8 => c.as_string::<i64>().value(row).len(),
            DataType::Utf8View => c.as_string_view().value(row).len(),
            DataType::Binary => c.as_binary::<i32>().value(row).len(),
            DataType::LargeBinary => c.as_binary::<i64>().value(row).len(),
            _ => 0,
        })
        .sum()
}

/// The length of `value` written as JSON, without writing it anywhere.
pub fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Rows as objects keyed by column name; the named columns hold JSON text and are parsed.
pub fn batch_objects(batch: &RecordBatch, json_columns: &[&str]) -> Vec<Map<String, Value>> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|row| {
            schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(field, column)| {
                    let mut value = cell(column, row);
                    if json_columns.contains(&field.name().as_str())
                        && let Value::String(text) = &value
                    {
                        value = serde_json::from_str(text).unwrap_or(value);
                    }
                    (field.name().clone(), value)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_time_ns_keeps_nanoseconds_in_utc() {
        assert_eq!(
            format_time_ns(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(format_time_ns(0), "1970-01-01T00:00:00.000000000Z");
    }
}
