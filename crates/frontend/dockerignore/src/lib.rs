//! `.dockerignore` reading and matching with the same results as Docker
//! (moby/patternmatcher and its `ignorefile` package), plus the pieces a
//! build-context walker needs: which ignore file applies
//! ([`ignore_file_for`]), and a [`ContextFilter`] that says whether a
//! context-relative path reaches the build and whether a directory can be
//! pruned.

mod clean;
mod context;
mod glob_syntax;
mod go_regex;
mod matcher;
mod read;

#[cfg(test)]
mod conformance_tests;

pub use clean::clean_path;
pub use context::{ContextFilter, ContextFilterError, ignore_file_for};
pub use matcher::{MatchError, PatternError, PatternMatcher};
pub use read::read_patterns;
