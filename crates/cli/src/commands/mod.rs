//! One module per subcommand.

pub mod advisor;
pub mod build;
pub mod build_cache;
pub mod cache_spec;
pub mod images;
pub mod lint;
pub mod parse;
pub mod registry;
pub mod report;
pub mod run;
