//! One module per subcommand.

pub mod advisor;
pub mod build;
pub mod images;
pub mod lint;
pub mod parse;
pub mod registry;
pub mod report;
pub mod run;
