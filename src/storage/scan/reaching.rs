//! Which of a [`DeltaFiles`]' files may hold positions above a given one,
//! judged by each file's bounds on the position column: what the entity
//! copy reads to extend itself, and whether a read of one entity needs the
//! table's files beside the copy.

use super::DeltaFiles;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::scalar::ScalarValue;

impl DeltaFiles {
    /// The files (paths relative to the table, as the log names them, with
    /// their sizes) whose `column`, a column of positions with file bounds,
    /// may hold a value above `above`: those whose maximum is above it or
    /// not known.
    pub fn files_reaching_above(&self, column: &str, above: u64) -> Vec<(String, u64)> {
        let reaches = self.reaching_above(column, above);
        let base = self.base.as_ref();
        self.files
            .iter()
            .filter(|f| reaches(f))
            .map(|f| {
                let location = f.object_meta.location.as_ref();
                let relative = location.strip_prefix(base).unwrap_or(location);
                (
                    relative.trim_start_matches('/').to_string(),
                    f.object_meta.size,
                )
            })
            .collect()
    }

    /// How many files' `column` may hold a value above `above` (see
    /// [`DeltaFiles::files_reaching_above`]).
    pub fn count_reaching_above(&self, column: &str, above: u64) -> usize {
        let reaches = self.reaching_above(column, above);
        self.files.iter().filter(|f| reaches(f)).count()
    }

    /// Whether any file's `column` may hold a value above `above` (see
    /// [`DeltaFiles::files_reaching_above`]).
    pub fn any_reaching_above(&self, column: &str, above: u64) -> bool {
        self.files.iter().any(self.reaching_above(column, above))
    }

    /// Whether a file's `column` may hold a value above `above`: its
    /// maximum is above it, or not known.
    fn reaching_above(&self, column: &str, above: u64) -> impl Fn(&PartitionedFile) -> bool {
        let index = self.schema.index_of(column).ok();
        move |f| {
            let max = index.and_then(|i| {
                f.statistics
                    .as_ref()?
                    .column_statistics
                    .get(i)?
                    .max_value
                    .get_value()
            });
            !matches!(max, Some(ScalarValue::Int64(Some(m))) if i128::from(*m) <= i128::from(above))
        }
    }
}
