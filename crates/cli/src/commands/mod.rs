//! One module per subcommand.

pub mod build;
pub mod lint;
pub mod parse;
pub mod run;
