//! The lossless syntax tree: instructions as written, with spans, flags,
//! arguments, heredocs, comments, directives and parser warnings.

use serde::Serialize;

use crate::directives::Directive;
use crate::error::Warning;
use crate::heredoc::Heredoc;
use crate::line_parsers::NameValue;
use crate::span::Span;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// Parser directives found at the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// Top-level instructions in source order.
    pub instructions: Vec<Node>,
    /// Every comment line (including those inside continuations).
    pub comments: Vec<Comment>,
    /// Parser warnings (e.g. empty continuation lines).
    pub warnings: Vec<Warning>,
    /// The complete source text (BOM included), for error messages.
    #[serde(skip)]
    pub source: String,
}

/// A comment line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    /// Text after `#`, trimmed.
    pub text: String,
    /// The whole comment line (without line ending).
    pub span: Span,
}

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword exactly as written (`Run`, `FROM`, `foo`).
    pub keyword: String,
    /// Leading `--flag` tokens, quotes and escapes removed (`--from=a b`).
    pub flags: Vec<String>,
    /// The arguments after the flags.
    pub args: Arguments,
    /// Heredocs consumed by this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuation lines joined, comments removed.
    pub original: String,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
    /// Whole instruction, from its keyword to its last line (heredoc bodies and
    /// terminators included).
    pub span: Span,
    /// The keyword.
    pub keyword_span: Span,
}

impl Node {
    /// Lower-cased keyword.
    pub fn name(&self) -> String {
        self.keyword.to_lowercase()
    }

    /// The exact source text of the instruction (all of its physical lines).
    pub fn source_text<'a>(&self, source: &'a str) -> &'a str {
        source.get(self.span.range()).unwrap_or("")
    }

    /// Whether the arguments are in JSON (exec) form.
    pub fn is_json(&self) -> bool {
        match &self.args {
            Arguments::Json(_) => true,
            Arguments::Health { command, .. } => {
                matches!(command.as_deref(), Some(Arguments::Json(_)))
            }
            _ => false,
        }
    }
}

/// The arguments of an instruction, shaped by the instruction kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum Arguments {
    /// Nothing after the keyword and flags.
    Empty,
    /// Unknown instruction: the text is ignored.
    Ignored,
    /// JSON (exec) form.
    Json(Vec<String>),
    /// The whole rest as one string (shell form, USER, WORKDIR, ...).
    Text(String),
    /// A list of words (ADD/COPY/VOLUME shell form, FROM, EXPOSE, ARG).
    Words(Vec<String>),
    /// ENV/LABEL pairs as written (quotes kept); `legacy` is the `KEY name value` form.
    NameValues {
        /// The pairs.
        pairs: Vec<NameValue>,
        /// Whether the legacy form was used.
        legacy: bool,
    },
    /// HEALTHCHECK: a kind word (`CMD`, `NONE`, ...) and the command after it.
    Health {
        /// First word as written.
        kind: String,
        /// The command (JSON or text), if any.
        command: Option<Box<Arguments>>,
    },
    /// ONBUILD: the wrapped instruction.
    SubCommand(Box<Node>),
}
