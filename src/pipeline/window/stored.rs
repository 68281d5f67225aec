//! A window operator's state as the pipeline's progress stores it.

use super::{Open, WindowStage, WindowState};
use crate::pipeline::StoredState;
use arrow::array::{ArrayRef, AsArray, RecordBatch, new_empty_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use std::collections::BTreeMap;
use std::sync::Arc;

impl WindowStage {
    /// `state` as stored with the pipeline's progress (`state` is rebuilt
    /// from it).
    pub fn store(&self, state: &mut WindowState) -> Result<StoredState> {
        let converter = self.converter()?;
        let mut fields = vec![
            Field::new("end", DataType::Int64, false),
            Field::new("start", DataType::Int64, false),
            Field::new("events", DataType::UInt64, false),
            Field::new("first", DataType::Int64, false),
            Field::new("last", DataType::Int64, false),
        ];
        for (i, f) in self.keys.fields.iter().enumerate() {
            fields.push(Field::new(format!("k{i}"), f.data_type().clone(), true));
        }
        let mut state_fields = Vec::new();
        for (j, a) in self.aggregates.iter().enumerate() {
            for (m, f) in a.expr.state_fields()?.iter().enumerate() {
                state_fields.push(f.data_type().clone());
                fields.push(Field::new(format!("a{j}_{m}"), f.data_type().clone(), true));
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let open = &mut state.open;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(
                open.keys().map(|(e, _, _)| *e),
            )),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                open.keys().map(|(_, s, _)| *s),
            )),
            Arc::new(arrow::array::UInt64Array::from_iter_values(
                open.values().map(|o| o.events),
            )),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                open.values().map(|o| o.first),
            )),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                open.values().map(|o| o.last),
            )),
        ];
        columns.extend(
            self.keys
                .columns(&converter, open.keys().map(|(_, _, k)| k.as_slice()))?,
        );
        let mut per_field: Vec<Vec<ScalarValue>> = vec![Vec::new(); state_fields.len()];
        for o in open.values_mut() {
            let mut f = 0;
            for acc in o.accumulators.iter_mut() {
                for v in acc.state()? {
                    per_field[f].push(v);
                    f += 1;
                }
            }
        }
        for (values, t) in per_field.into_iter().zip(&state_fields) {
            columns.push(match values.is_empty() {
                true => new_empty_array(t),
                false => {
                    let a = ScalarValue::iter_to_array(values)?;
                    if a.data_type() == t { a } else { cast(&a, t)? }
                }
            });
        }
        let batch = RecordBatch::try_new(schema, columns)?;
        let stored = StoredState::encode(state.max_time, state.late, &batch)?;
        // Taking an accumulator's state consumes it: the windows go on
        // from what was stored.
        *state = self.restore(&stored)?;
        Ok(stored)
    }

    /// The state `stored` describes.
    pub fn restore(&self, stored: &StoredState) -> Result<WindowState> {
        let converter = self.converter()?;
        let mut state = WindowState {
            max_time: stored.max_time,
            late: stored.late,
            open: BTreeMap::new(),
        };
        let keys = self.keys.fields.len();
        for batch in stored.batches()? {
            let ends = batch
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let starts = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let events = batch
                .column(2)
                .as_primitive::<arrow::datatypes::UInt64Type>();
            let firsts = batch
                .column(3)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let lasts = batch
                .column(4)
                .as_primitive::<arrow::datatypes::Int64Type>();
            const KEYS: usize = 5;
            let rows = match keys {
                0 => None,
                _ => Some(converter.convert_columns(&batch.columns()[KEYS..KEYS + keys])?),
            };
            for i in 0..batch.num_rows() {
                let mut accumulators = self.accumulators()?;
                let mut c = KEYS + keys;
                for (acc, a) in accumulators.iter_mut().zip(&self.aggregates) {
                    let width = a.expr.state_fields()?.len();
                    let states: Vec<ArrayRef> = batch.columns()[c..c + width]
                        .iter()
                        .map(|col| col.slice(i, 1))
                        .collect();
                    acc.merge_batch(&states)?;
                    c += width;
                }
                let bytes = rows
                    .as_ref()
                    .map_or_else(Vec::new, |r| r.row(i).as_ref().to_vec());
                state.open.insert(
                    (ends.value(i), starts.value(i), bytes),
                    Open {
                        accumulators,
                        events: events.value(i),
                        first: firsts.value(i),
                        last: lasts.value(i),
                    },
                );
            }
        }
        Ok(state)
    }
}
