//! The hook through which a table's rules see a built batch before it is
//! logged: the database calls a [`BatchCheck`] and stores nothing when it
//! refuses. The rules themselves are compiled above the database.

use crate::schema::governed::Violations;
use arrow::array::RecordBatch;
use std::collections::HashMap;

/// What building a batch learnt that its columns no longer show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Per payload column, the rows whose text is the JSON of an object
    /// or an array rather than a string.
    pub nested: HashMap<String, Vec<u32>>,
}

impl Facts {
    /// The facts of the rows `kept` keeps, numbered as in the filtered
    /// batch.
    pub fn filter(&self, kept: &[bool]) -> Facts {
        let mut new_row = Vec::with_capacity(kept.len());
        let mut next = 0u32;
        for k in kept {
            new_row.push(next);
            next += u32::from(*k);
        }
        let nested = self
            .nested
            .iter()
            .map(|(name, rows)| {
                let rows = rows
                    .iter()
                    .filter(|r| kept[**r as usize])
                    .map(|r| new_row[*r as usize])
                    .collect();
                (name.clone(), rows)
            })
            .collect();
        Facts { nested }
    }
}

/// A batch that passed its table's rules.
#[derive(Debug)]
pub struct Checked {
    /// The batch to store, with the governance columns filled.
    pub batch: RecordBatch,
    /// The `warn` rules it broke, if any.
    pub warnings: Option<Violations>,
}

/// A table's rules, run over each batch built for it.
pub trait BatchCheck: Send + Sync + std::fmt::Debug {
    /// Checks `batch`, whose row `i` is the request's event `index[i]`.
    /// Refuses it with every violation found when any rule in `reject`
    /// mode is broken.
    fn check(
        &self,
        batch: RecordBatch,
        facts: &Facts,
        index: &[u64],
    ) -> Result<Checked, Box<Violations>>;
}
