//! Functions whose result can be far larger than their input — `repeat('x', 1500000000)`,
//! `lpad`, `array_repeat`, the list forms of `range` and `generate_series`, `array_resize` —
//! counted against the query memory pool before they build anything. DataFusion's pool counts
//! what operators hold (sorts, joins, aggregates), not what a scalar function allocates, so
//! without this one call could take gigabytes the limit never saw. Each wrapped function first
//! estimates its result from its arguments and asks the pool for that much; if the pool cannot
//! give it, the query fails with the memory limit's message and nothing is allocated. Once
//! built, the result is measured and asked for again, for any case the estimate missed. The
//! bytes are given back as the call returns: the operators that keep results count them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{ExprSchema, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: the text's bytes `n` times.
    Repeat,
    /// `lpad(text, n [, fill])`, `rpad`: `n` characters of the fill (a space by default).
    Pad,
    /// `array_repeat(value, n)`: `n` copies of the value.
    ArrayRepeat,
    /// `range(start, stop [, step])`, `generate_series`: one element per step.
    Series,
    /// `array_resize(list, n [, value])`: `n` elements.
    Resize,
}

/// The functions wrapped, by name, and how their results grow.
const WRAPPED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
    ("array_resize", Growth::Resize),
];

/// Replaces the session's wrapped functions (and their aliases) with bounded ones drawing on
/// `pool`.
pub fn register(ctx: &SessionContext, pool: Arc<dyn MemoryPool>) {
    let state = ctx.state();
    let functions = state.scalar_functions();
    let wrapped: Vec<ScalarUDF> = WRAPPED
        .iter()
        .filter_map(|(name, growth)| {
            functions.get(*name).map(|udf| {
                ScalarUDF::new_from_impl(Bounded {
                    inner: udf.inner().clone().into(),
                    growth: *growth,
                    pool: pool.clone(),
                })
            })
        })
        .collect();
    for udf in wrapped {
        ctx.register_udf(udf);
    }
}

/// A function whose result is asked of the memory pool before and after it is built.
#[derive(Debug)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    growth: Growth,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.growth == other.growth
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.growth.hash(state);
    }
}

impl Bounded {
    /// Asks the pool for `bytes` for a moment: an error when it cannot give them.
    fn ask(&self, bytes: u128) -> Result<()> {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        let reservation =
            MemoryConsumer::new(format!("{}()", self.inner.name())).register(&self.pool);
        reservation.try_grow(bytes).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "{}() would build {bytes} bytes, more than the query memory has free",
                self.inner.name()
            ))
        })
    }
}

/// Per row, the argument's value as an integer (`None` for null or another type).
fn ints(value: &ColumnarValue, rows: usize) -> Vec<Option<i64>> {
    let array = match value.to_array(rows.max(1)) {
        Ok(array) => array,
        Err(_) => return vec![None; rows],
    };
    let as_int = |array: &ArrayRef| -> Option<ArrayRef> {
        match array.data_type() {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                let ns = arrow::compute::cast(
                    array,
                    &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
                )
                .ok()?;
                arrow::compute::cast(&ns, &DataType::Int64).ok()
            }
            _ => arrow::compute::cast(array, &DataType::Int64).ok(),
        }
    };
    match as_int(&array) {
        Some(ints) => {
            let ints = ints.as_primitive::<Int64Type>();
            (0..rows)
                .map(|i| (!ints.is_null(i)).then(|| ints.value(i)))
                .collect()
        }
        None => vec![None; rows],
    }
}

/// Per row, a step as a number in the units of [`ints`] (nanoseconds for an interval).
fn steps(value: &ColumnarValue, rows: usize) -> Vec<Option<i64>> {
    let Ok(array) = value.to_array(rows.max(1)) else {
        return vec![None; rows];
    };
    if let DataType::Interval(_) = array.data_type() {
        let Ok(interval) = arrow::compute::cast(
            &array,
            &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
        ) else {
            return vec![None; rows];
        };
        let interval = interval.as_primitive::<IntervalMonthDayNanoType>();
        const DAY_NS: i64 = 86_400_000_000_000;
        return (0..rows)
            .map(|i| {
                (!interval.is_null(i)).then(|| {
                    let v = interval.value(i);
                    i64::from(v.months)
                        .saturating_mul(28 * DAY_NS)
                        .saturating_add(i64::from(v.days).saturating_mul(DAY_NS))
                        .saturating_add(v.nanoseconds)
                })
            })
            .collect();
    }
    ints(value, rows)
}

/// Per row, the argument's size in bytes: a text's or binary's length, a list's elements, a
/// fixed-width value's width.
fn sizes(value: &ColumnarValue, rows: usize) -> Vec<u64> {
    let array = match value {
        ColumnarValue::Array(array) => array.clone(),
        ColumnarValue::Scalar(scalar) => match scalar.to_array_of_size(1) {
            Ok(one) => {
                let size = sizes(&ColumnarValue::Array(one), 1)[0];
                return vec![size; rows];
            }
            Err(_) => return vec![16; rows],
        },
    };
    match arrow::compute::kernels::length::length(&array) {
        Ok(lengths) => {
            let lengths = arrow::compute::cast(&lengths, &DataType::Int64)
                .unwrap_or_else(|_| Arc::new(arrow::array::Int64Array::from(vec![0; rows])));
            let lengths = lengths.as_primitive::<Int64Type>();
            (0..rows.min(lengths.len()))
                .map(|i| u64::try_from(lengths.value(i)).unwrap_or(0))
                .collect()
        }
        Err(_) => {
            let width = array.data_type().primitive_width().unwrap_or(16) as u64;
            vec![width; rows]
        }
    }
}

/// The bytes a call may build, at least, from its arguments.
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> u128 {
    let count = |n: Option<i64>| u128::from(n.unwrap_or(0).max(0).unsigned_abs());
    match (growth, args) {
        (Growth::Repeat, [text, n, ..]) => sizes(text, rows)
            .into_iter()
            .zip(ints(n, rows))
            .map(|(bytes, n)| u128::from(bytes) * count(n))
            .sum(),
        (Growth::Pad, [text, n, rest @ ..]) => {
            let fill = rest.first().map(|f| sizes(f, rows));
            sizes(text, rows)
                .into_iter()
                .zip(ints(n, rows))
                .enumerate()
                .map(|(i, (bytes, n))| {
                    let fill_bytes = fill.as_ref().map_or(1, |f| f[i].max(1));
                    u128::from(bytes) + count(n) * u128::from(fill_bytes)
                })
                .sum()
        }
        (Growth::ArrayRepeat, [value, n, ..]) => sizes(value, rows)
            .into_iter()
            .zip(ints(n, rows))
            .map(|(bytes, n)| u128::from(bytes.max(8)) * count(n))
            .sum(),
        (Growth::Resize, [_, n, ..]) => ints(n, rows).into_iter().map(|n| 16 * count(n)).sum(),
        (Growth::Series, [stop]) => ints(stop, rows).into_iter().map(|n| 8 * count(n)).sum(),
        (Growth::Series, [start, stop, rest @ ..]) => {
            let step = rest.first().map(|s| steps(s, rows));
            ints(start, rows)
                .into_iter()
                .zip(ints(stop, rows))
                .enumerate()
                .map(|(i, (start, stop))| {
                    let (Some(start), Some(stop)) = (start, stop) else {
                        return 0;
                    };
                    let step = step.as_ref().and_then(|s| s[i]).unwrap_or(1);
                    if step == 0 {
                        return 0;
                    }
                    let span = (i128::from(stop) - i128::from(start)) / i128::from(step);
                    // A step away from the stop gives an empty list.
                    u128::try_from(span).map_or(0, |span| 8 * (span + 1))
                })
                .sum()
        }
        _ => 0,
    }
}

fn result_bytes(value: &ColumnarValue) -> usize {
    match value {
        ColumnarValue::Array(array) => array.get_array_memory_size(),
        ColumnarValue::Scalar(scalar) => scalar.size(),
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.ask(estimate(self.growth, &args.args, args.number_rows))?;
        let result = self.inner.invoke_with_args(args)?;
        self.ask(result_bytes(&result) as u128)?;
        Ok(result)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;

    fn scalar(value: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(value)
    }

    #[test]
    fn estimates_follow_each_function_s_growth() {
        let text = |s: &str| scalar(ScalarValue::Utf8(Some(s.into())));
        let int = |n: i64| scalar(ScalarValue::Int64(Some(n)));
        assert_eq!(
            estimate(Growth::Repeat, &[text("ab"), int(1_500_000_000)], 1),
            3_000_000_000
        );
        assert_eq!(estimate(Growth::Repeat, &[text("ab"), int(-4)], 1), 0);
        let column = ColumnarValue::Array(Arc::new(arrow::array::StringArray::from(vec![
            Some("abc"),
            None,
            Some("é"),
        ])));
        assert_eq!(estimate(Growth::Repeat, &[column, int(10)], 3), 30 + 20);
        assert_eq!(estimate(Growth::Pad, &[text("ab"), int(100)], 1), 102);
        assert_eq!(
            estimate(Growth::Pad, &[text("ab"), int(100), text("xyz")], 1),
            302
        );
        assert_eq!(estimate(Growth::ArrayRepeat, &[int(7), int(1000)], 1), 8000);
        assert_eq!(
            estimate(Growth::Series, &[int(1), int(1_000_000_000)], 1),
            8_000_000_000
        );
        assert_eq!(
            estimate(Growth::Series, &[int(0), int(100), int(10)], 1),
            88
        );
        assert_eq!(estimate(Growth::Series, &[int(5), int(1)], 1), 0);
        assert_eq!(estimate(Growth::Resize, &[int(0), int(1000)], 1), 16_000);
    }
}
