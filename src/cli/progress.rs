//! How `allsource compact` shows a run: a bar redrawn in place on stderr
//! while partitions are compacted, then one line per table's report.

use serde_json::Value;
use std::io::Write;

/// Width of the bar, in characters.
const BAR_WIDTH: u64 = 30;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The progress bar: each update overwrites the last one (`\r`).
#[derive(Debug)]
pub(super) struct ProgressDisplay<W: Write> {
    out: W,
    /// Whether a bar is on the line, so that what follows starts a new one.
    drew: bool,
}

impl<W: Write> ProgressDisplay<W> {
    pub(super) fn new(out: W) -> Self {
        ProgressDisplay { out, drew: false }
    }

    /// Draws one `progress` object of the server's stream.
    pub(super) fn progress(&mut self, p: &Value) -> std::io::Result<()> {
        let done = p["bytes_done"].as_u64().unwrap_or(0);
        let total = p["bytes_total"].as_u64().unwrap_or(0).max(1);
        let filled = (done * BAR_WIDTH / total).min(BAR_WIDTH) as usize;
        write!(
            self.out,
            "\r{} [{}{}] {}/{} partitions, {}/{} files, {:.1}/{:.1} MiB",
            p["table"].as_str().unwrap_or(""),
            "#".repeat(filled),
            ".".repeat(BAR_WIDTH as usize - filled),
            p["partitions_done"],
            p["partitions_total"],
            p["files_done"],
            p["files_total"],
            mib(done),
            mib(total)
        )?;
        self.drew = true;
        Ok(())
    }

    /// Ends the bar's line, if one was drawn.
    pub(super) fn finish(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.drew) {
            writeln!(self.out)?;
        }
        Ok(())
    }
}

/// One table's report as the command prints it.
pub(super) fn report_line(r: &Value) -> String {
    format!(
        "{}: {} — {} partition(s), {} files ({:.1} MiB) → {} files ({:.1} MiB), {} vacuumed, {} ms",
        r["table"].as_str().unwrap_or(""),
        r["outcome"].as_str().unwrap_or(""),
        r["partitions"],
        r["files_in"],
        mib(r["bytes_in"].as_u64().unwrap_or(0)),
        r["files_out"],
        mib(r["bytes_out"].as_u64().unwrap_or(0)),
        r["vacuumed_files"],
        r["duration_ms"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_bar_is_redrawn_in_place_and_ended_once() {
        let mut out = Vec::new();
        let mut d = ProgressDisplay::new(&mut out);
        let p = |done: u64| {
            json!({"table": "events", "partitions_done": 1, "partitions_total": 2,
                   "files_done": 3, "files_total": 6,
                   "bytes_done": done, "bytes_total": 4u64 << 20})
        };
        d.progress(&p(1 << 20)).unwrap();
        d.progress(&p(4 << 20)).unwrap();
        d.finish().unwrap();
        d.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "\revents [{}{}] 1/2 partitions, 3/6 files, 1.0/4.0 MiB\
                 \revents [{}] 1/2 partitions, 3/6 files, 4.0/4.0 MiB\n",
                "#".repeat(7),
                ".".repeat(23),
                "#".repeat(30)
            )
        );
    }

    #[test]
    fn a_report_is_one_line() {
        let r = json!({"table": "events", "outcome": "done", "partitions": 3,
                       "files_in": 9, "bytes_in": 3u64 << 20, "files_out": 3,
                       "bytes_out": 1u64 << 19, "vacuumed_files": 0, "duration_ms": 12});
        assert_eq!(
            report_line(&r),
            "events: done — 3 partition(s), 9 files (3.0 MiB) → 3 files (0.5 MiB), 0 vacuumed, 12 ms"
        );
    }
}
