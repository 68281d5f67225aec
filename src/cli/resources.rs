//! What `allsource projections` and `allsource pipelines` share. Both are
//! definitions the server keeps under one path (`/v1/projections`,
//! `/v1/pipelines`) with the same calls: `POST` the path to create one,
//! `GET` it to list them, `GET`/`DELETE` `<path>/<name>` to show or
//! delete one, and `POST <path>/<name>/<verb>` for the rest. A
//! [`Resource`] names the path and the columns `list` prints; [`Common`]
//! is the subcommands every kind has.
//!
//! The server's JSON is printed with indentation but otherwise as sent:
//! in its key order (the order of a state row's columns, or of a
//! definition's fields), which a round trip through `serde_json::Value`
//! would sort.

use super::{ClientArgs, delete, get, post, read_input};
use serde_json::Value;
use std::io::Write;

/// A kind of definition the server keeps under one path.
#[derive(Debug)]
pub(super) struct Resource {
    /// `projection`: what messages call one.
    pub(super) singular: &'static str,
    /// `/v1/projections`.
    pub(super) path: &'static str,
    /// The key of the array in the answer to `GET <path>`.
    pub(super) list_key: &'static str,
    /// `list`'s columns: a header, and the JSON pointer of the column's
    /// value in one item of the list.
    pub(super) columns: &'static [(&'static str, &'static str)],
}

/// The subcommands every kind has.
#[derive(Debug, clap::Subcommand)]
pub(super) enum Common {
    /// Define one from its JSON definition and print what the server made
    /// of it.
    Create {
        /// The definition: a JSON file, or `-` for standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// List them all, one line each.
    List {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one as the server's JSON: its definition, status and counters.
    Show {
        /// Its name.
        name: String,
    },
    /// Delete one.
    Delete {
        /// Its name.
        name: String,
    },
}

impl Resource {
    /// Runs one of the common subcommands.
    pub(super) fn run(&self, client: &ClientArgs, command: &Common) -> anyhow::Result<()> {
        match command {
            Common::Create { file } => {
                let definition = read_input(file)?;
                print_json(post(client, &client.url(self.path), Some(definition))?)
            }
            Common::List { json: true } => print_json(get(client, &client.url(self.path))?),
            Common::List { json: false } => {
                let answer: Value = get(client, &client.url(self.path))?.json()?;
                let Some(items) = answer[self.list_key].as_array() else {
                    anyhow::bail!("the server's list has no {:?} array", self.list_key);
                };
                print!("{}", table(self.columns, items));
                Ok(())
            }
            Common::Show { name } => print_json(get(client, &self.url(client, name, ""))?),
            Common::Delete { name } => {
                delete(client, &self.url(client, name, ""))?;
                println!("deleted {} {name}", self.singular);
                Ok(())
            }
        }
    }

    /// `POST <path>/<name>/<verb>`, printing the server's answer.
    pub(super) fn act(&self, client: &ClientArgs, name: &str, verb: &str) -> anyhow::Result<()> {
        print_json(post(
            client,
            &self.url(client, name, &format!("/{verb}")),
            None,
        )?)
    }

    /// `<path>/<name><rest>` on the server, the name percent-encoded.
    pub(super) fn url(&self, client: &ClientArgs, name: &str, rest: &str) -> String {
        let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        client.url(&format!("{}/{name}{rest}", self.path))
    }
}

/// Copies a JSON answer to stdout, indented, with a final newline; an
/// answer that is not JSON is copied as it is.
pub(super) fn print_json(response: reqwest::blocking::Response) -> anyhow::Result<()> {
    let body = response.bytes()?;
    let mut out = std::io::stdout().lock();
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        out.write_all(&indent(&body))?;
    } else {
        out.write_all(&body)?;
    }
    writeln!(out)?;
    Ok(())
}

/// `json` (valid JSON) with each member and element on a line of its own,
/// indented by two spaces a level. Only the white space between tokens
/// changes: keys keep their order and numbers their spelling.
fn indent(json: &[u8]) -> Vec<u8> {
    fn newline(out: &mut Vec<u8>, depth: usize) {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
    let mut out = Vec::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut bytes = json.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                while bytes.next_if(u8::is_ascii_whitespace).is_some() {}
                // An empty object or array stays on its line.
                if let Some(close) = bytes.next_if(|&c| c == b'}' || c == b']') {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b if b.is_ascii_whitespace() => {}
            b => out.push(b),
        }
    }
    out
}

/// `items` as an aligned table under `columns`' headers, two spaces
/// between columns. A column whose values are all numbers (or missing) is
/// aligned right; a missing or null value shows as `-`.
pub(super) fn table(columns: &[(&str, &str)], items: &[Value]) -> String {
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|(h, _)| h.to_string()).collect()];
    rows.extend(items.iter().map(|item| {
        columns
            .iter()
            .map(|(_, pointer)| cell(item.pointer(pointer)))
            .collect()
    }));
    let numeric: Vec<bool> = columns
        .iter()
        .map(|(_, pointer)| {
            items.iter().all(|item| {
                matches!(
                    item.pointer(pointer),
                    None | Some(Value::Null | Value::Number(_))
                )
            })
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, value) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[c] - value.chars().count());
            if numeric[c] {
                line.push_str(&pad);
                line.push_str(value);
            } else {
                line.push_str(value);
                line.push_str(&pad);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn indenting_keeps_order_strings_and_numbers() {
        let json = br#"{"z":1,"a":[1.50,{"s":"a,b:{c}[\"d\"]\\"},[],{}],"e":{ } ,"n":null}"#;
        let got = String::from_utf8(indent(json)).unwrap();
        let want = r#"{
  "z": 1,
  "a": [
    1.50,
    {
      "s": "a,b:{c}[\"d\"]\\"
    },
    [],
    {}
  ],
  "e": {},
  "n": null
}"#;
        assert_eq!(got, want);
        // The same value as the input.
        let parsed: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(parsed, serde_json::from_slice::<Value>(json).unwrap());
        assert_eq!(String::from_utf8(indent(b"[]")).unwrap(), "[]");
        assert_eq!(String::from_utf8(indent(b" 7 ")).unwrap(), "7");
    }

    #[test]
    fn the_table_aligns_text_left_and_numbers_right() {
        let columns = [("NAME", "/name"), ("SINK", "/sink/table"), ("LAG", "/lag")];
        let items = [
            json!({"name": "orders", "sink": {"table": "big"}, "lag": 12345}),
            json!({"name": "a", "sink": {"table": "t"}, "lag": null}),
        ];
        assert_eq!(
            table(&columns, &items),
            "NAME    SINK    LAG\norders  big   12345\na       t         -\n"
        );
        assert_eq!(table(&columns, &[]), "NAME  SINK  LAG\n");
    }
}
