//! Helpers shared by the integration tests.

pub mod cli;
pub mod docker;
pub mod registry;
pub mod seed;
