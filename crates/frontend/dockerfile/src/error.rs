//! Errors and warnings of the Dockerfile front end, with source locations and
//! a plain-text renderer (`error: ...` / `--> file:line:col` / caret line).

use serde::Serialize;

use crate::span::{LineIndex, Span};

/// What kind of problem a [`ParseError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file has no bytes at all.
    EmptyDockerfile,
    /// The file has no instruction (only comments, blank lines or directives).
    NoInstructions,
    /// A physical line is longer than 65535 bytes.
    LineTooLong,
    /// A parser directive is repeated or has an invalid value.
    InvalidDirective,
    /// A heredoc has no terminator line.
    UnterminatedHeredoc,
    /// A heredoc word cannot be lexed (for example an unterminated quote).
    InvalidHeredoc,
    /// A JSON array contains a non-string element.
    JsonNotStringArray,
    /// Arguments of an instruction are missing or malformed.
    InvalidArguments,
    /// The instruction keyword is unknown.
    UnknownInstruction,
    /// A flag is not known for this instruction.
    UnknownFlag,
    /// A flag value is missing or invalid.
    InvalidFlag,
    /// ONBUILD wraps an instruction that it cannot carry.
    DisallowedOnbuild,
    /// Two stages have the same name.
    DuplicateStageName,
    /// An instruction other than ARG appears before the first FROM.
    InstructionBeforeFrom,
    /// Variable expansion failed.
    Expansion,
}

/// A located error with a message and a suggestion how to fix it.
///
/// Used by parsing, by lowering to typed instructions and by expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The kind of problem.
    pub kind: ErrorKind,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// A short note printed under the offending text (e.g. `did you mean "RUN"?`).
    pub label: Option<String>,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// The offending byte range, with line/column of both ends.
    pub span: Span,
    /// The source line containing the start of the span (without line ending).
    pub source_line: String,
}

/// Result type of this crate.
pub type Result<T, E = ParseError> = std::result::Result<T, E>;

impl ParseError {
    /// Build an error located at byte range `start..end` of `source`.
    pub fn at(
        kind: ErrorKind,
        message: impl Into<String>,
        source: &str,
        start: usize,
        end: usize,
    ) -> Self {
        let index = LineIndex::new(source);
        Self::at_index(kind, message, &index, start, end)
    }

    /// Like [`ParseError::at`], reusing an existing line index.
    pub fn at_index(
        kind: ErrorKind,
        message: impl Into<String>,
        index: &LineIndex<'_>,
        start: usize,
        end: usize,
    ) -> Self {
        let span = index.span(start, end);
        Self::with_span(kind, message, span, index.line_text(span.start_line))
    }

    /// Build an error from an already computed span.
    pub fn with_span(
        kind: ErrorKind,
        message: impl Into<String>,
        span: Span,
        source_line: &str,
    ) -> Self {
        ParseError {
            kind,
            message: message.into(),
            help: None,
            label: None,
            line: span.start_line,
            column: span.start_column,
            span,
            source_line: source_line.to_string(),
        }
    }

    /// Attach a help text.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Attach a label shown under the offending text.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Render as a human-readable, multi-line diagnostic:
    ///
    /// ```text
    /// error: unknown instruction "RUNN"
    ///   --> Dockerfile:3:1
    ///    |
    ///  3 | RUNN echo hi
    ///    | ^^^^ did you mean "RUN"?
    ///    = help: ...
    /// ```
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let source_line = if self.source_line.is_empty() {
            LineIndex::new(source).line_text(self.line).to_string()
        } else {
            self.source_line.clone()
        };
        let line_no = self.line.to_string();
        let arrow_pad = " ".repeat(line_no.len() + 1);
        let gutter = " ".repeat(line_no.len() + 2);
        let mut out = format!("error: {}\n", self.message);
        out.push_str(&format!(
            "{arrow_pad}--> {}:{}:{}\n",
            file_name, self.line, self.column
        ));
        out.push_str(&format!("{gutter}|\n"));
        out.push_str(&format!(" {line_no} | {source_line}\n"));
        let line_chars = source_line.chars().count();
        let caret_start = self.column.saturating_sub(1).min(line_chars);
        let caret_len = if self.span.end_line == self.span.start_line {
            self.span.end_column.saturating_sub(self.span.start_column)
        } else {
            line_chars.saturating_sub(caret_start)
        }
        .max(1);
        out.push_str(&format!(
            "{gutter}| {}{}",
            " ".repeat(caret_start),
            "^".repeat(caret_len)
        ));
        if let Some(label) = &self.label {
            out.push(' ');
            out.push_str(label);
        }
        out.push('\n');
        if let Some(help) = &self.help {
            out.push_str(&format!("{gutter}= help: {help}\n"));
        }
        out
    }
}

/// A non-fatal finding of the parser or of lowering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Short text, e.g. `Empty continuation line found in: RUN a b`.
    pub message: String,
    /// Longer explanation.
    pub detail: Option<String>,
    /// 1-based line the warning is reported on.
    pub line: usize,
    /// Source range concerned.
    pub span: Span,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_span_with_label_and_help() {
        let source = "FROM a\nRUN x\nRUNN echo hi\n";
        let start = source.find("RUNN").unwrap();
        let err = ParseError::at(
            ErrorKind::UnknownInstruction,
            "unknown instruction \"RUNN\"",
            source,
            start,
            start + 4,
        )
        .with_label("did you mean \"RUN\"?")
        .with_help("use a valid instruction");
        let rendered = err.render("Dockerfile", source);
        assert_eq!(
            rendered,
            "error: unknown instruction \"RUNN\"\n  --> Dockerfile:3:1\n   |\n 3 | RUNN echo hi\n   | ^^^^ did you mean \"RUN\"?\n   = help: use a valid instruction\n"
        );
        assert_eq!(err.line, 3);
        assert_eq!(err.column, 1);
        assert_eq!(err.span.range(), start..start + 4);
        assert_eq!(err.source_line, "RUNN echo hi");
    }
}
