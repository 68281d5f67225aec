//! Result formats: a stream of record batches in, a stream of bytes out,
//! batch by batch, so a large result is never held whole in memory (Parquet
//! is written row group by row group; its footer comes last).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use std::str::FromStr;

/// A result format a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "ndjson" | "jsonl" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            "arrow" => Ok(Self::Arrow),
            "parquet" => Ok(Self::Parquet),
            _ => Err(format!(
                "unknown format {s:?}: use json, ndjson, csv, arrow or parquet"
            )),
        }
    }
}

impl OutputFormat {
    /// The format for an `Accept` header, if it names one of ours.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(|part| {
            let mime = part.split(';').next().unwrap_or("").trim();
            match mime {
                "application/json" => Some(Self::Json),
                "application/x-ndjson" | "application/jsonl" => Some(Self::Ndjson),
                "text/csv" => Some(Self::Csv),
                "application/vnd.apache.arrow.stream" => Some(Self::Arrow),
                "application/vnd.apache.parquet" | "application/x-parquet" => Some(Self::Parquet),
                _ => None,
            }
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Turns batches into bytes in one format; `finish` closes the document.
pub enum Encoder {
    Json { rows_written: bool },
    Ndjson,
    Csv { header_written: bool },
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
    Parquet(Box<parquet::arrow::ArrowWriter<Vec<u8>>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Json { .. } => "Encoder::Json",
            Encoder::Ndjson => "Encoder::Ndjson",
            Encoder::Csv { .. } => "Encoder::Csv",
            Encoder::Arrow(_) => "Encoder::Arrow",
            Encoder::Parquet(_) => "Encoder::Parquet",
        })
    }
}

fn json_rows(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner())
}

impl Encoder {
    pub fn new(format: OutputFormat, schema: &SchemaRef) -> Result<Self> {
        Ok(match format {
            OutputFormat::Json => Encoder::Json {
                rows_written: false,
            },
            OutputFormat::Ndjson => Encoder::Ndjson,
            OutputFormat::Csv => Encoder::Csv {
                header_written: false,
            },
            OutputFormat::Arrow => Encoder::Arrow(Box::new(
                arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?,
            )),
            OutputFormat::Parquet => Encoder::Parquet(Box::new(
                parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None)
                    .map_err(parquet_output_error)?,
            )),
        })
    }

    /// The opening bytes, before any batch.
    pub fn start(&mut self) -> Result<Bytes> {
        Ok(match self {
            Encoder::Json { .. } => Bytes::from_static(b"["),
            Encoder::Arrow(w) => Bytes::from(std::mem::take(w.get_mut())),
            _ => Bytes::new(),
        })
    }

    /// The bytes of one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        if batch.num_rows() == 0 {
            return Ok(Bytes::new());
        }
        Ok(match self {
            Encoder::Json { rows_written } => {
                let lines = json_rows(batch)?;
                let mut out = Vec::with_capacity(lines.len() + 1);
                for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    if *rows_written {
                        out.push(b',');
                    }
                    out.extend_from_slice(line);
                    *rows_written = true;
                }
                Bytes::from(out)
            }
            Encoder::Ndjson => Bytes::from(json_rows(batch)?),
            Encoder::Csv { header_written } => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(!*header_written)
                    .build(Vec::new());
                w.write(batch)?;
                *header_written = true;
                Bytes::from(w.into_inner())
            }
            Encoder::Arrow(w) => {
                w.write(batch)?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
            Encoder::Parquet(w) => {
                w.write(batch).map_err(parquet_output_error)?;
                Bytes::from(std::mem::take(w.inner_mut()))
            }
        })
    }

    /// The closing bytes. For CSV with no rows, the header alone.
    pub fn finish(self, schema: &SchemaRef) -> Result<Bytes> {
        Ok(match self {
            Encoder::Json { .. } => Bytes::from_static(b"]\n"),
            Encoder::Ndjson => Bytes::new(),
            Encoder::Csv { header_written } => {
                if header_written {
                    Bytes::new()
                } else {
                    let names: Vec<String> = schema
                        .fields()
                        .iter()
                        .map(|f| csv_field(f.name()))
                        .collect();
                    Bytes::from(format!("{}\n", names.join(",")))
                }
            }
            Encoder::Arrow(mut w) => {
                w.finish()?;
                Bytes::from(w.into_inner()?)
            }
            Encoder::Parquet(mut w) => {
                w.flush().map_err(parquet_output_error)?;
                let mut out = std::mem::take(w.inner_mut());
                let rest = w.into_inner().map_err(parquet_output_error)?;
                out.extend_from_slice(&rest);
                Bytes::from(out)
            }
        })
    }
}

/// Quotes a CSV header field when it needs it.
fn csv_field(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}

/// The Parquet writer refuses some types (intervals, for one): that is the
/// query's shape, a user matter, not a server fault.
fn parquet_output_error(e: parquet::errors::ParquetError) -> DataFusionError {
    DataFusionError::Execution(format!("cannot write this result as Parquet: {e}"))
}
