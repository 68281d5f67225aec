//! Cutting what the user types into the shell's inputs: meta-commands
//! (a line starting with `\`) and statements, which end with `;` at the
//! end of a line and may span several.

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Input {
    /// `\name args`: a command of the shell itself.
    Meta { name: String, arg: String },
    /// A statement, without its final `;`.
    Statement(String),
}

/// Whether `text` (all typed so far) is complete: a meta-command, or a
/// statement whose last line ends with `;` outside a quoted string.
pub(super) fn complete(text: &str) -> bool {
    let trimmed = text.trim();
    trimmed.is_empty()
        || trimmed.starts_with('\\')
        || matches!(trimmed, "quit" | "exit")
        || (trimmed.ends_with(';') && !in_quotes(trimmed))
}

/// Whether the end of `text` is inside a quoted string or identifier.
fn in_quotes(text: &str) -> bool {
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {}
        }
    }
    quote.is_some()
}

/// Collects lines into inputs.
#[derive(Debug, Default)]
pub(super) struct Lines {
    pending: String,
}

impl Lines {
    /// Takes one line; returns the input it completes, if any.
    pub(super) fn push(&mut self, line: &str) -> Option<Input> {
        if self.pending.trim().is_empty() {
            let trimmed = line.trim();
            if let Some(meta) = trimmed.strip_prefix('\\') {
                let (name, arg) = meta.split_once(char::is_whitespace).unwrap_or((meta, ""));
                return Some(Input::Meta {
                    name: name.to_string(),
                    arg: arg.trim().to_string(),
                });
            }
            if matches!(trimmed, "quit" | "exit") {
                return Some(Input::Meta {
                    name: "q".into(),
                    arg: String::new(),
                });
            }
        }
        if !self.pending.is_empty() {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
        if complete(&self.pending) && !self.pending.trim().is_empty() {
            return self.finish();
        }
        None
    }

    /// What is left (a statement without its `;`), at the end of the input.
    pub(super) fn finish(&mut self) -> Option<Input> {
        let text = std::mem::take(&mut self.pending);
        let statement = text.trim().trim_end_matches(';').trim_end();
        (!statement.is_empty()).then(|| Input::Statement(statement.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_with_a_semicolon_outside_quotes() {
        let mut lines = Lines::default();
        assert_eq!(lines.push("SELECT entity_id,"), None);
        assert_eq!(lines.push("  'a;"), None);
        assert_eq!(
            lines.push("b;' AS x FROM events;"),
            Some(Input::Statement(
                "SELECT entity_id,\n  'a;\nb;' AS x FROM events".into()
            ))
        );
        assert_eq!(
            lines.push("\\d events"),
            Some(Input::Meta {
                name: "d".into(),
                arg: "events".into()
            })
        );
        assert_eq!(lines.push("SELECT 1"), None);
        assert_eq!(lines.finish(), Some(Input::Statement("SELECT 1".into())));
        assert_eq!(lines.finish(), None);
        assert!(complete("SELECT ';' ;"));
        assert!(!complete("SELECT ';"));
        assert!(complete("\\timing"));
    }
}
