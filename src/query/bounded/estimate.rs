//! Upper bounds of what a call of an amplifying function allocates,
//! computed from its arguments in one pass over them (a few operations
//! per row, nothing in proportion to the output).
//!
//! Each bound is per row, summed over the rows of the call: a call whose
//! arguments are all constants computes one row. Sizes are in bytes of
//! Arrow buffers: values plus offsets, as the result will hold them.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Expr};

/// How a function's output is bounded by its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Estimate {
    /// `repeat(s, n)`: `s` n times.
    Repeat,
    /// `lpad`/`rpad(s, n [, fill])`: `s` and up to n characters of `fill`.
    Pad,
    /// `replace(s, from, to)`: every match of `from` (at most one per byte
    /// of `s`, plus one) becomes `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: each match
    /// becomes the replacement, whose group references add at most `s`
    /// each (matches do not overlap).
    RegexpReplace,
    /// `regexp_match(s, pattern)`: each group captures at most `s`.
    RegexpMatch,
    /// The arguments side by side (`concat`, `array_concat`,
    /// `make_array`): the sum, however often one argument is repeated.
    Sum,
    /// `concat_ws(sep, ...)`: the arguments and a separator between each.
    ConcatWs,
    /// `array_repeat(x, n)`: `x` n times.
    ArrayRepeat,
    /// `array_resize(list, n [, value])`: n elements.
    ArrayResize,
    /// `range`/`generate_series`: one element per step.
    Series,
    /// `string_to_array(s, delimiter)`: one element per piece.
    StringToArray,
    /// `array_to_string(list, sep [, null])`: each element as text, and
    /// a separator after each.
    ArrayToString,
    /// `array_replace(list, from, to)`: one element becomes `to`.
    ArrayReplace,
    /// `array_replace_n(list, from, to, n)`: up to n elements become `to`.
    ArrayReplaceN,
    /// `array_replace_all(list, from, to)`: every element may become `to`.
    ArrayReplaceAll,
    /// `arrays_zip(a, b, ...)`: every list padded to the longest.
    Zip,
}

/// The longest text of one value of type `dt` in `array_to_string`'s
/// output, besides the bytes of strings (counted with the list's bytes).
fn text_width(dt: &DataType) -> usize {
    match dt {
        DataType::Boolean => 5,
        dt if dt.is_integer() => 20,
        dt if dt.is_floating() => 24,
        DataType::Date32 | DataType::Date64 => 12,
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => 0,
        // Decimals, timestamps with their zone, intervals, structs.
        _ => 80,
    }
}

impl Estimate {
    /// An upper bound of the bytes a call with `args` over `rows` rows
    /// allocates.
    pub fn bytes(self, args: &[ColumnarValue], rows: usize) -> Result<usize> {
        let args = args.iter().map(Arg::of).collect::<Result<Vec<_>>>()?;
        let rows = if args.iter().any(|a| !a.constant()) {
            rows
        } else {
            1
        };
        let arg = |i: usize| args.get(i).unwrap_or(&Arg::Missing);
        let total = match self {
            Estimate::Series => series(&args, rows)?,
            _ => per_row(rows, |r| self.row(&args, arg, r)),
        };
        Ok(total)
    }

    /// The bound for row `r`.
    fn row<'a>(self, args: &[Arg], arg: impl Fn(usize) -> &'a Arg<'a>, r: usize) -> usize
    where
        Self: 'a,
    {
        let bytes = |i: usize| arg(i).bytes(r);
        let count = |i: usize| arg(i).int(r).map_or(0, |n| n.max(0) as u64 as usize);
        let text_len = |i: usize| arg(i).text(r).map_or(0, str::len);
        match self {
            Estimate::Repeat => bytes(0).saturating_mul(count(1)).saturating_add(8),
            Estimate::Pad => {
                let fill = if args.len() > 2 {
                    arg(2).text(r).map_or(0, widest_char)
                } else {
                    1
                };
                bytes(0).saturating_add(count(1).saturating_mul(fill)) + 8
            }
            Estimate::Replace => {
                let n = bytes(0);
                let matches = n / bytes(1).max(1) + 1;
                n.saturating_add(matches.saturating_mul(bytes(2))) + 8
            }
            Estimate::RegexpReplace => {
                let n = bytes(0);
                let replacement = arg(2).text(r).unwrap_or("");
                let global = args.len() > 3 && arg(3).text(r).is_some_and(|f| f.contains('g'));
                let matches = if global { n + 1 } else { 1 };
                let references = replacement.matches(['$', '\\']).count();
                n.saturating_add(matches.saturating_mul(replacement.len()))
                    .saturating_add(references.saturating_mul(n))
                    + 8
            }
            Estimate::RegexpMatch => {
                let groups = arg(1).text(r).map_or(0, |p| p.matches('(').count()) + 1;
                groups.saturating_mul(bytes(0).saturating_add(16))
            }
            Estimate::Sum => args
                .iter()
                .fold(16, |sum, a| sum.saturating_add(a.bytes(r))),
            Estimate::ConcatWs => {
                let sep = bytes(0);
                args.iter().skip(1).fold(16, |sum, a| {
                    sum.saturating_add(a.bytes(r)).saturating_add(sep)
                })
            }
            Estimate::ArrayRepeat => count(1).saturating_mul(bytes(0).saturating_add(9)) + 8,
            Estimate::ArrayResize => {
                let element = if args.len() > 2 {
                    bytes(2)
                } else {
                    arg(0).element_width()
                };
                bytes(0).saturating_add(count(1).saturating_mul(element.saturating_add(9)))
            }
            Estimate::StringToArray => {
                let n = bytes(0);
                let pieces = n / text_len(1).max(1) + 1;
                n.saturating_add(pieces.saturating_mul(9)) + 8
            }
            Estimate::ArrayToString => {
                let extra = text_len(1) + if args.len() > 2 { text_len(2) } else { 0 };
                let leaves = arg(0).leaves(r);
                let width = arg(0).leaf_type().map_or(0, text_width);
                bytes(0).saturating_add(leaves.saturating_mul(extra + width)) + 8
            }
            Estimate::ArrayReplace | Estimate::ArrayReplaceN | Estimate::ArrayReplaceAll => {
                let elements = arg(0).len(r);
                let replaced = match self {
                    Estimate::ArrayReplace => elements.min(1),
                    Estimate::ArrayReplaceN => elements.min(count(3)),
                    _ => elements,
                };
                bytes(0).saturating_add(replaced.saturating_mul(bytes(2)))
            }
            Estimate::Zip => {
                let longest = args.iter().map(|a| a.len(r)).max().unwrap_or(0);
                let widest = args.iter().map(Arg::element_width).sum::<usize>() + 1;
                args.iter()
                    .fold(0usize, |sum, a| sum.saturating_add(a.bytes(r)))
                    .saturating_add(longest.saturating_mul(widest))
            }
            Estimate::Series => 0,
        }
    }

    /// What the function's planning-time simplification builds from its
    /// constant arguments (`concat` joins them).
    pub fn constant_bytes(self, args: &[Expr]) -> usize {
        match self {
            Estimate::Sum | Estimate::ConcatWs => args
                .iter()
                .filter_map(|a| match a {
                    Expr::Literal(v, _) => Some(scalar_text(v).map_or(0, <[u8]>::len)),
                    _ => None,
                })
                .fold(0, usize::saturating_add),
            _ => 0,
        }
    }
}

fn per_row(rows: usize, f: impl Fn(usize) -> usize) -> usize {
    (0..rows).fold(0, |sum, r| sum.saturating_add(f(r)))
}

/// The widest character of `s`, in bytes.
fn widest_char(s: &str) -> usize {
    s.chars().map(char::len_utf8).max().unwrap_or(0)
}

/// One argument of a call.
enum Arg<'a> {
    /// A constant string or binary, read in place (making it an array
    /// would copy it).
    Text(Option<&'a [u8]>),
    /// A column, or another constant as a one-row array (`true`).
    Array(ArrayRef, bool),
    /// Not given.
    Missing,
}

fn scalar_text(v: &ScalarValue) -> Option<&[u8]> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
            s.as_deref().map(str::as_bytes)
        }
        ScalarValue::Binary(b) | ScalarValue::LargeBinary(b) | ScalarValue::BinaryView(b) => {
            b.as_deref()
        }
        _ => None,
    }
}

impl<'a> Arg<'a> {
    fn of(v: &'a ColumnarValue) -> Result<Arg<'a>> {
        Ok(match v {
            ColumnarValue::Array(a) => Arg::Array(a.clone(), false),
            ColumnarValue::Scalar(s) => match s {
                ScalarValue::Utf8(_)
                | ScalarValue::LargeUtf8(_)
                | ScalarValue::Utf8View(_)
                | ScalarValue::Binary(_)
                | ScalarValue::LargeBinary(_)
                | ScalarValue::BinaryView(_) => Arg::Text(scalar_text(s)),
                other => Arg::Array(other.to_array()?, true),
            },
        })
    }

    fn constant(&self) -> bool {
        !matches!(self, Arg::Array(_, false))
    }

    /// The array and the row of it that row `r` of the call reads.
    fn at(&self, r: usize) -> Option<(&dyn Array, usize)> {
        match self {
            Arg::Array(a, constant) => {
                let row = if *constant { 0 } else { r };
                (row < a.len() && a.is_valid(row)).then_some((a.as_ref(), row))
            }
            _ => None,
        }
    }

    /// The bytes of the value in row `r` (0 for NULL).
    fn bytes(&self, r: usize) -> usize {
        match self {
            Arg::Text(t) => t.map_or(0, <[u8]>::len),
            _ => self
                .at(r)
                .map_or(0, |(a, row)| value_bytes(a, row, row + 1)),
        }
    }

    /// The text in row `r`, if it is a string.
    fn text(&self, r: usize) -> Option<&str> {
        match self {
            Arg::Text(t) => t.and_then(|t| std::str::from_utf8(t).ok()),
            _ => {
                let (a, row) = self.at(r)?;
                match a.data_type() {
                    DataType::Utf8 => Some(a.as_string::<i32>().value(row)),
                    DataType::LargeUtf8 => Some(a.as_string::<i64>().value(row)),
                    DataType::Utf8View => Some(a.as_string_view().value(row)),
                    _ => None,
                }
            }
        }
    }

    /// The integer in row `r`.
    fn int(&self, r: usize) -> Option<i64> {
        let (a, row) = self.at(r)?;
        if let Some(a) = a.as_primitive_opt::<Int64Type>() {
            return Some(a.value(row));
        }
        let one = cast(&a.slice(row, 1), &DataType::Int64).ok()?;
        let one = one.as_primitive_opt::<Int64Type>()?;
        one.is_valid(0).then(|| one.value(0))
    }

    /// The number of elements of the list in row `r`.
    fn len(&self, r: usize) -> usize {
        self.at(r).map_or(0, |(a, row)| {
            list_range(a, row, row + 1).map_or(0, |(s, e, _)| e - s)
        })
    }

    /// The number of values at the bottom of the list in row `r`.
    fn leaves(&self, r: usize) -> usize {
        self.at(r).map_or(0, |(a, row)| leaf_count(a, row, row + 1))
    }

    /// The type of the values at the bottom of the list type.
    fn leaf_type(&self) -> Option<&DataType> {
        let Arg::Array(a, _) = self else { return None };
        let mut dt = a.data_type();
        while let DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) = dt {
            dt = f.data_type();
        }
        Some(dt)
    }

    /// The bytes of one element of the list type (a guess for variable
    /// widths: the longest value cannot be known without the value).
    fn element_width(&self) -> usize {
        let Arg::Array(a, _) = self else { return 0 };
        match a.data_type() {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                f.data_type().primitive_width().unwrap_or(16)
            }
            _ => 0,
        }
    }
}

/// The child range of rows `start..end` of a list array, and the child.
pub(super) fn list_range(
    a: &dyn Array,
    start: usize,
    end: usize,
) -> Option<(usize, usize, &ArrayRef)> {
    match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let o = l.value_offsets();
            Some((o[start] as usize, o[end] as usize, l.values()))
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let o = l.value_offsets();
            Some((o[start] as usize, o[end] as usize, l.values()))
        }
        DataType::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            let n = *n as usize;
            Some((start * n, end * n, l.values()))
        }
        _ => None,
    }
}

/// The values at the bottom of rows `start..end`.
pub(super) fn leaf_count(a: &dyn Array, start: usize, end: usize) -> usize {
    match list_range(a, start, end) {
        Some((s, e, child)) => leaf_count(child.as_ref(), s, e),
        None => end - start,
    }
}

/// The bytes rows `start..end` of `a` take: their values, offsets and
/// validity, following lists into their children.
pub(super) fn value_bytes(a: &dyn Array, start: usize, end: usize) -> usize {
    let n = end - start;
    let bits = n.div_ceil(8);
    match a.data_type() {
        DataType::Utf8 => {
            offsets_span(a.as_string::<i32>().value_offsets(), start, end) + 4 * n + bits
        }
        DataType::Binary => {
            offsets_span(a.as_binary::<i32>().value_offsets(), start, end) + 4 * n + bits
        }
        DataType::LargeUtf8 => {
            offsets_span(a.as_string::<i64>().value_offsets(), start, end) + 8 * n + bits
        }
        DataType::LargeBinary => {
            offsets_span(a.as_binary::<i64>().value_offsets(), start, end) + 8 * n + bits
        }
        DataType::Utf8View => {
            let v = a.as_string_view();
            (start..end).map(|i| v.value(i).len() + 16).sum::<usize>() + bits
        }
        DataType::BinaryView => {
            let v = a.as_binary_view();
            (start..end).map(|i| v.value(i).len() + 16).sum::<usize>() + bits
        }
        DataType::Boolean => bits * 2,
        DataType::Null => 0,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            list_range(a, start, end).map_or(0, |(s, e, child)| value_bytes(child.as_ref(), s, e))
                + 8 * n
                + bits
        }
        DataType::Struct(_) => {
            let s = a.as_struct();
            s.columns()
                .iter()
                .map(|c| value_bytes(c.as_ref(), start, end))
                .sum::<usize>()
                + bits
        }
        dt => match dt.primitive_width() {
            Some(w) => w * n + bits,
            None => a
                .slice(start, n)
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| a.get_array_memory_size()),
        },
    }
}

/// The bytes between offsets `start` and `end`.
fn offsets_span<O: arrow::array::OffsetSizeTrait>(o: &[O], start: usize, end: usize) -> usize {
    (o[end] - o[start]).as_usize()
}

const DAY_NS: i128 = 86_400_000_000_000;

/// `range`/`generate_series`: the number of steps of each row, from its
/// start, stop and step (integers, or dates or timestamps with an
/// interval, whose shortest length counts months as 28 days).
fn series(args: &[Arg], rows: usize) -> Result<usize> {
    let Some(Arg::Array(first, _)) = args.first() else {
        return Ok(0);
    };
    let (unit, width): (DataType, usize) = match first.data_type() {
        DataType::Date32 | DataType::Date64 => (DataType::Date32, 4),
        DataType::Timestamp(_, _) => (DataType::Timestamp(TimeUnit::Nanosecond, None), 8),
        _ => (DataType::Int64, 8),
    };
    let ends = |i: usize| -> Result<Option<(ArrayRef, bool)>> {
        match args.get(i) {
            Some(Arg::Array(a, constant)) => {
                let a = match (&unit, a.data_type()) {
                    (DataType::Timestamp(..), DataType::Timestamp(..)) => {
                        cast(&cast(a, &unit)?, &DataType::Int64)?
                    }
                    (DataType::Date32, _) => cast(&cast(a, &unit)?, &DataType::Int64)?,
                    _ => cast(a, &DataType::Int64)?,
                };
                Ok(Some((a, *constant)))
            }
            _ => Ok(None),
        }
    };
    let value = |c: &Option<(ArrayRef, bool)>, r: usize| -> Option<i128> {
        let (a, constant) = c.as_ref()?;
        let row = if *constant { 0 } else { r };
        let a = a.as_primitive::<Int64Type>();
        a.is_valid(row).then(|| i128::from(a.value(row)))
    };
    let (start, stop) = if args.len() == 1 {
        (None, ends(0)?)
    } else {
        (ends(0)?, ends(1)?)
    };
    let step = match args.get(2) {
        Some(Arg::Array(a, constant)) => Some((a.clone(), *constant)),
        _ => None,
    };
    let step_at = |r: usize| -> Option<i128> {
        let Some((a, constant)) = &step else {
            return Some(1);
        };
        let row = if *constant { 0 } else { r };
        if !a.is_valid(row) {
            return None;
        }
        if let Some(i) = a.as_primitive_opt::<IntervalMonthDayNanoType>() {
            let (months, days, ns) = IntervalMonthDayNanoType::to_parts(i.value(row));
            let (months, days, ns) = (i128::from(months), i128::from(days), i128::from(ns));
            let same_sign =
                (months >= 0 && days >= 0 && ns >= 0) || (months <= 0 && days <= 0 && ns <= 0);
            if !same_sign {
                return Some(1);
            }
            let days = months * 28 + days;
            return Some(if unit == DataType::Date32 {
                days
            } else {
                days * DAY_NS + ns
            });
        }
        let one = cast(&a.slice(row, 1), &DataType::Int64).ok()?;
        let one = one.as_primitive_opt::<Int64Type>()?;
        one.is_valid(0).then(|| i128::from(one.value(0)))
    };
    Ok(per_row(rows, |r| {
        let from = if args.len() == 1 {
            Some(0)
        } else {
            value(&start, r)
        };
        let (Some(from), Some(to), Some(step)) = (from, value(&stop, r), step_at(r)) else {
            return 0;
        };
        let steps = (to - from).abs() / step.abs().max(1) + 1;
        usize::try_from(steps.saturating_mul(width as i128 + 1)).unwrap_or(usize::MAX)
    }))
}
