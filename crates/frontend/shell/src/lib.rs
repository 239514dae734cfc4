//! Docker's shell-word lexer: variable expansion, quoting and word splitting
//! for Dockerfile arguments, behaving like BuildKit's
//! `frontend/dockerfile/shell` package.
//!
//! The entry point is [`Lexer`]: build one with the Dockerfile's escape
//! character and call [`Lexer::expand_word`] (one word, no splitting),
//! [`Lexer::expand_words`] (with word splitting) or
//! [`Lexer::expand_word_with_matches`] (one word plus the names that were
//! looked up). Variables come from any [`Env`].

mod env;
mod error;
mod lexer;
mod pattern;
mod unicode;

#[cfg(test)]
mod conformance_tests;

pub use env::{Env, build_env};
pub use error::{ExpandError, ExpandErrorKind};
pub use lexer::{Expansion, Lexer, MAX_NESTING_DEPTH};
