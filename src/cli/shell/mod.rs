//! `allsource sql`: an interactive SQL shell against a server, and the
//! same statements from `-c`, `-f` or standard input.
//!
//! Statements go to `/v1/sql` (DSL documents, after `\dsl`, to
//! `/v1/query`) and come back as Arrow, printed as an aligned table with
//! the row count and the time taken, or as JSON or CSV (`\format`).
//! Interactively, input spans lines until a `;`, history is kept in a
//! file, and Tab completes keywords, meta-commands and the server's
//! tables, columns and functions.

mod helper;
mod input;

use super::{ClientArgs, send_as};
use anyhow::Context as _;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use helper::{Catalog, ShellHelper};
use input::{Input, Lines};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct SqlArgs {
    /// Run these statements (and meta-commands) and exit; may be repeated.
    #[arg(short = 'c', long = "command")]
    commands: Vec<String>,
    /// Run the statements in this file and exit.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// How results are printed: table, json or csv.
    #[arg(long, default_value = "table")]
    format: Format,
    /// Where the interactive history is kept (default ~/.allsource_history).
    #[arg(long, env = "ALLSOURCE_HISTORY")]
    history: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

/// The shell's state between inputs.
struct Shell<'a> {
    client: &'a ClientArgs,
    format: Format,
    timing: bool,
    /// The next statement is a DSL document.
    dsl: bool,
}

/// What running one input did.
enum Outcome {
    Continue,
    Quit,
}

/// Runs the shell; an error in a non-interactive run ends it with a
/// failing exit status.
pub(crate) fn run(args: &SqlArgs) -> anyhow::Result<()> {
    // Timing is shown interactively (until `\timing off`), not in
    // output meant for a program.
    let mut shell = Shell {
        client: &args.client,
        format: args.format,
        timing: false,
        dsl: false,
    };
    if !args.commands.is_empty() {
        for command in &args.commands {
            shell.batch(command)?;
        }
        return Ok(());
    }
    if let Some(file) = &args.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        return shell.batch(&text);
    }
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return shell.batch(&text);
    }
    shell.timing = true;
    shell.interactive(args.history.clone())
}

impl Shell<'_> {
    /// Runs every input in `text`, stopping at the first error.
    fn batch(&mut self, text: &str) -> anyhow::Result<()> {
        let mut lines = Lines::default();
        let inputs = text
            .lines()
            .filter_map(|l| lines.push(l))
            .collect::<Vec<_>>()
            .into_iter()
            .chain(lines.finish());
        for input in inputs {
            if let Outcome::Quit = self.input(input)? {
                break;
            }
        }
        Ok(())
    }

    fn interactive(&mut self, history: Option<PathBuf>) -> anyhow::Result<()> {
        let history = history.or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".allsource_history"))
        });
        let mut editor = rustyline::Editor::<ShellHelper, _>::new()?;
        editor.set_helper(Some(ShellHelper {
            catalog: self.catalog().unwrap_or_default(),
        }));
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        println!(
            "allsource sql on {}: end statements with ;  \\help for help, \\q to quit",
            self.client.url
        );
        loop {
            let prompt = if self.dsl { "dsl> " } else { "allsource> " };
            let text = match editor.readline(prompt) {
                Ok(text) => text,
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if text.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(text.as_str());
            let mut lines = Lines::default();
            let mut inputs: Vec<Input> = text.lines().filter_map(|l| lines.push(l)).collect();
            inputs.extend(lines.finish());
            let mut quit = false;
            for input in inputs {
                match self.input(input) {
                    Ok(Outcome::Quit) => quit = true,
                    Ok(Outcome::Continue) => {}
                    Err(e) => eprintln!("ERROR: {e:#}"),
                }
            }
            if let Some(helper) = editor.helper_mut()
                && let Ok(catalog) = self.catalog()
            {
                helper.catalog = catalog;
            }
            if quit {
                break;
            }
        }
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
        Ok(())
    }

    fn input(&mut self, input: Input) -> anyhow::Result<Outcome> {
        match input {
            Input::Statement(text) if self.dsl => {
                self.dsl = false;
                self.show("/v1/query", text)?;
            }
            Input::Statement(text) => self.show("/v1/sql", text)?,
            Input::Meta { name, arg } => return self.meta(&name, &arg),
        }
        Ok(Outcome::Continue)
    }

    fn meta(&mut self, name: &str, arg: &str) -> anyhow::Result<Outcome> {
        match name {
            "q" | "quit" => return Ok(Outcome::Quit),
            "timing" => {
                self.timing = match arg {
                    "on" => true,
                    "off" => false,
                    _ => !self.timing,
                };
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            "format" => {
                self.format = clap::ValueEnum::from_str(arg, true).map_err(|_| {
                    anyhow::anyhow!("\\format takes table, json or csv, not {arg:?}")
                })?;
            }
            "dsl" if arg.is_empty() => {
                self.dsl = true;
                println!("Type a DSL document (docs/dsl.md), ended by ;");
            }
            "dsl" => self.show("/v1/query", arg.trim_end_matches(';').to_string())?,
            "d" if arg.is_empty() => self.show(
                "/v1/sql",
                "SELECT table_schema AS schema, table_name AS name, table_type AS type \
                 FROM information_schema.tables WHERE table_schema <> 'information_schema' \
                 ORDER BY 1, 2"
                    .into(),
            )?,
            "d" => self.describe(arg)?,
            "help" | "?" => print!("{HELP}"),
            other => anyhow::bail!("unknown command \\{other}; \\help lists them"),
        }
        Ok(Outcome::Continue)
    }

    /// `\d TABLE`: its columns, their types and whether they may be null.
    fn describe(&self, table: &str) -> anyhow::Result<()> {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let quote = |s: &str| s.replace('\'', "''");
        let sql = format!(
            "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
             FROM information_schema.columns WHERE table_schema = '{}' AND table_name = '{}' \
             ORDER BY ordinal_position",
            quote(schema),
            quote(name)
        );
        let (schema_ref, batches) = self.fetch("/v1/sql", sql)?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            anyhow::bail!("no table named {table} (\\d lists them)");
        }
        println!("Table {table}");
        self.print(&schema_ref, &batches)
    }

    /// Runs `text` at `route` and prints its result.
    fn show(&self, route: &str, text: String) -> anyhow::Result<()> {
        let started = Instant::now();
        let (schema, batches) = self.fetch(route, text)?;
        self.print(&schema, &batches)?;
        if self.timing {
            println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    }

    /// Runs `text` at `route` and returns its result.
    fn fetch(&self, route: &str, text: String) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
        let content_type = match route {
            "/v1/query" => "application/json",
            _ => "text/plain",
        };
        let url = self.client.url(&format!("{route}?format=arrow"));
        let response = send_as(
            self.client,
            reqwest::Method::POST,
            &url,
            Some((text.into_bytes(), content_type)),
        )?;
        let bytes = response.bytes()?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        Ok((schema, batches))
    }

    fn print(&self, schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut out = std::io::stdout().lock();
        match self.format {
            Format::Table => {
                let table = arrow::util::pretty::pretty_format_batches_with_schema(
                    schema.clone(),
                    batches,
                )?;
                writeln!(out, "{table}")?;
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
            }
            Format::Json => {
                let mut writer = arrow::json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                writeln!(out)?;
            }
            Format::Csv if batches.is_empty() => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
            }
            Format::Csv => {
                let mut writer = arrow::csv::Writer::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
        }
        Ok(())
    }

    /// The server's tables, columns and functions, for completion.
    fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut catalog = Catalog::default();
        let (_, batches) = self.fetch(
            "/v1/sql",
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema <> 'information_schema'"
                .into(),
        )?;
        for batch in &batches {
            for (i, set) in [(0, &mut catalog.tables), (1, &mut catalog.columns)] {
                set.extend(strings(batch.column(i).as_ref()));
            }
        }
        if let Ok((_, batches)) = self.fetch(
            "/v1/sql",
            "SELECT DISTINCT routine_name FROM information_schema.routines".into(),
        ) {
            for batch in &batches {
                catalog.functions.extend(strings(batch.column(0).as_ref()));
            }
        }
        Ok(catalog)
    }
}

/// The non-null strings of `column`.
fn strings(column: &dyn Array) -> Vec<String> {
    let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8);
    let Ok(column) = column else {
        return Vec::new();
    };
    column
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(String::from)
        .collect()
}

const HELP: &str = "\
Statements end with ; and may span lines. Meta-commands:
  \\d               list tables
  \\d TABLE         describe a table (schema.table for another schema)
  \\dsl [DOC;]      run a DSL document (docs/dsl.md): this one, or the next input
  \\format F        print results as table, json or csv
  \\timing [on|off] show how long each statement took
  \\help            this text
  \\q               quit (also Ctrl-D)
Tab completes keywords, tables, columns and functions.
";
