//! The `batch` operator, which is a window: every N events of a key, or
//! each span of event time, aggregated into a count and the events.

use super::{WindowKind, WindowSpec};
use arrow::datatypes::SchemaRef;
use indexmap::IndexMap;

/// The window a `batch` operator is: every `size` events of a key (a
/// count window), or each `every` of event time (tumbling), aggregated
/// into `count` and `events`, the array of the events' fields but those
/// the sink sets.
pub fn batch_spec(
    input: &SchemaRef,
    size: Option<u64>,
    every: Option<&str>,
    key: &IndexMap<String, String>,
) -> std::result::Result<WindowSpec, String> {
    let (kind, size) = match (size, every) {
        (Some(n), None) => (WindowKind::Count, n.to_string()),
        (None, Some(every)) => (WindowKind::Tumbling, every.to_string()),
        _ => return Err("give either size (events) or every (a duration)".into()),
    };
    let fields: Vec<String> = input
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| !crate::pipeline::compile::RESERVED.contains(&n.as_str()))
        .map(|n| {
            format!(
                "'{}', {}",
                n.replace('\'', "''"),
                crate::pipeline::compile::quote(n)
            )
        })
        .collect();
    Ok(WindowSpec {
        kind,
        size,
        slide: None,
        lateness: None,
        key: key.clone(),
        aggregates: IndexMap::from([
            ("count".to_string(), "count(*)".to_string()),
            (
                "events".to_string(),
                format!("array_agg(named_struct({}))", fields.join(", ")),
            ),
        ]),
        event_type: Some("batch".into()),
    })
}
