//! Spill directories: where DataFusion writes what a sort or aggregation
//! does not keep in memory, for queries and for compaction alike.

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use std::path::Path;

/// A disk manager that spills into `dir`, at most `cap` bytes in all (`0`:
/// no spilling). `dir` is created, and the spill folders a killed
/// process left in it are removed.
pub fn spill_disk(dir: &Path, cap: u64) -> std::io::Result<DiskManagerBuilder> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("datafusion-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(match cap {
        0 => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        cap => DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![dir.to_path_buf()]))
            .with_max_temp_directory_size(cap),
    })
}
