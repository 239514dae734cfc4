//! The build: turns a parsed Dockerfile and a build context into an image in
//! the store. Each step is keyed for the cache; steps that miss are run (RUN in
//! the sandbox, COPY/ADD straight from the context) and committed as layers.

// Build errors carry the step, the instruction and the output tail so they can
// be shown as they are; they are built only on failure.
#![allow(clippy::result_large_err)]

pub mod add;
pub mod build;
pub mod cachekey;
pub mod config;
pub mod copy;
pub mod error;
pub mod layer;
pub mod mounts;
pub mod progress;
pub mod remote_cache;
pub mod rootfs;
pub mod run;
pub mod squash;
pub mod stat_records;
pub mod unpacked_digests;

pub use build::{
    BuildRequest, BuildResult, DockerfileInput, ImageSource, LocalImages, StepReport, build,
    open_build_context,
};
pub use error::{BuildError, StepError, StepLocation};
pub use progress::{Event, Progress, Silent, StepId, StepOutcome};
pub use squash::SquashMode;

#[cfg(test)]
mod build_tests;
