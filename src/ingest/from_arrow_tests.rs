//! Tests of the Arrow ingest conversion.

use super::*;
use arrow::array::{BooleanArray, Int64Array, ListBuilder, StructArray};
use arrow::datatypes::Float64Type;

fn registry() -> parking_lot::Mutex<ColumnRegistry> {
    parking_lot::Mutex::new(ColumnRegistry::default())
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

/// One event of type "a" for entity "u" with one more column.
fn one_event(name: &str, values: ArrayRef) -> RecordBatch {
    batch(vec![
        ("event_type", Arc::new(StringArray::from(vec!["a"]))),
        ("entity_id", Arc::new(StringArray::from(vec!["u"]))),
        (name, values),
    ])
}

#[test]
fn columns_become_events() {
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("a");
    tags.append(true);
    tags.append(false);
    let b = batch(vec![
        (
            "event_type",
            Arc::new(StringArray::from(vec!["buy", "view"])),
        ),
        ("entity_id", Arc::new(StringArray::from(vec!["u1", "u2"]))),
        (
            "timestamp",
            Arc::new(
                arrow::array::TimestampNanosecondArray::from(vec![Some(86_400_000_000_000), None])
                    .with_timezone("UTC"),
            ),
        ),
        ("amount", Arc::new(Int64Array::from(vec![5, 1 << 60]))),
        ("ok", Arc::new(BooleanArray::from(vec![true, false]))),
        ("tags", Arc::new(tags.finish())),
    ]);
    let reg = registry();
    let out = convert(&b, &reg, 7 * MICROS_PER_DAY, 0).unwrap();
    assert!(out.client_ids.is_none());
    let e = out.batch;
    assert_eq!(e.num_rows(), 2);
    let amount = e.column_by_name("amount").unwrap();
    let amount = amount.as_primitive::<Float64Type>();
    assert_eq!(amount.value(0), 5.0);
    assert!(amount.is_null(1));
    let overflow = e.column_by_name("_overflow").unwrap().as_string::<i32>();
    assert!(overflow.is_null(0));
    assert_eq!(overflow.value(1), r#"{"amount":1152921504606846976}"#);
    let tags = e.column_by_name("tags").unwrap().as_string::<i32>();
    assert_eq!(tags.value(0), r#"["a"]"#);
    assert!(tags.is_null(1));
    let dates = e.column_by_name("event_date").unwrap();
    let dates = dates.as_primitive::<arrow::datatypes::Date32Type>();
    assert_eq!((dates.value(0), dates.value(1)), (1, 7));
    assert_eq!(e.column_by_name("event_id").unwrap().null_count(), 0);
}

#[test]
fn a_conflicting_type_goes_to_overflow() {
    let reg = registry();
    let first = one_event("x", Arc::new(StringArray::from(vec!["text"])));
    convert(&first, &reg, 0, 0).unwrap();
    let second = one_event("x", Arc::new(Int64Array::from(vec![3])));
    let out = convert(&second, &reg, 0, 0).unwrap().batch;
    assert!(out.column_by_name("x").unwrap().is_null(0));
    let overflow = out.column_by_name("_overflow").unwrap().as_string::<i32>();
    assert_eq!(overflow.value(0), r#"{"x":3}"#);
}

#[test]
fn a_payload_struct_is_unfolded() {
    let amount: ArrayRef = Arc::new(Float64Array::from(vec![1.5]));
    let payload = StructArray::from(vec![(
        Arc::new(Field::new("amount", DataType::Float64, true)),
        amount,
    )]);
    let b = one_event("payload", Arc::new(payload));
    let out = convert(&b, &registry(), 0, 0).unwrap().batch;
    let amount = out.column_by_name("amount").unwrap();
    assert_eq!(amount.as_primitive::<Float64Type>().value(0), 1.5);
}

#[test]
fn bad_input_names_the_column_or_row() {
    let reg = registry();
    let err = |b: RecordBatch| convert(&b, &reg, 0, 100).unwrap_err().to_string();
    let missing = batch(vec![(
        "event_type",
        Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
    )]);
    assert!(err(missing).contains("\"entity_id\""));
    let null_entity = batch(vec![
        ("event_type", Arc::new(StringArray::from(vec!["a", "b"]))),
        (
            "entity_id",
            Arc::new(StringArray::from(vec![Some("u"), None])),
        ),
    ]);
    let e = err(null_entity);
    assert!(e.contains("event 101") && e.contains("null"), "{e}");
    let numeric_type = batch(vec![
        (
            "event_type",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        ),
        ("entity_id", Arc::new(StringArray::from(vec!["u"]))),
    ]);
    assert!(err(numeric_type).contains("must be a string column"));
    let far = one_event("timestamp", Arc::new(Int64Array::from(vec![i64::MAX / 2])));
    assert!(err(far).contains("outside the accepted range"));
    let binary = one_event(
        "blob",
        Arc::new(arrow::array::BinaryArray::from(vec![b"x".as_ref()])),
    );
    let e = err(binary);
    assert!(e.contains("\"blob\"") && e.contains("Binary"), "{e}");
}
