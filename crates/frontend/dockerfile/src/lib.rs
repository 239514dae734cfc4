//! Dockerfile front end: lossless syntax tree with spans, parser directives,
//! heredocs, the BuildKit-compatible dump, typed instructions and variable
//! expansion with ARG/ENV scoping.

// `ParseError` carries message, help, label, span and source line so that it
// can be rendered without the source; it is only built on the (cold) failure
// path, once per run, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod directives;
pub mod dump;
pub mod error;
pub mod expand;
pub mod flags;
pub mod heredoc;
pub mod instructions;
pub mod line_parsers;
pub mod parser;
pub mod span;
pub mod syntax;

#[cfg(test)]
mod behaviour_tests;
#[cfg(test)]
mod conformance_tests;

pub use directives::{Directive, DirectiveLookup, detect_syntax, parse_directive};
pub use error::{ErrorKind, ParseError, Warning};
pub use expand::{
    ExpandOptions, ExpandedProgram, ExpandedStage, Platform, expand, parse_and_expand,
};
pub use heredoc::{
    Heredoc, HeredocMarker, chomp_heredoc_content, heredocs_from_line, parse_heredoc_word,
};
pub use instructions::{Command, Instruction, Program, Stage, lower};
pub use parser::parse;
pub use span::Span;
pub use syntax::{Arguments, Comment, Dockerfile, Node};
