//! What a build reports while it runs: each step's start, whether it was
//! cached or why it missed, its output as it comes, and its end. The CLI turns
//! these events into a live view or plain lines.

use std::time::Duration;

use crate::cachekey::MissReason;

/// Identifies a step in events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepId {
    /// Stage index.
    pub stage_index: usize,
    /// The stage's name, or its index as text.
    pub stage: String,
    /// 1-based step within the stage (FROM is 1).
    pub step: usize,
    /// Steps in the stage.
    pub total: usize,
    /// Dockerfile line.
    pub line: usize,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Reused from the cache.
    Cached,
    /// Ran and produced a layer of this many compressed bytes.
    Built {
        /// Compressed layer size.
        layer_bytes: u64,
    },
    /// Only changed the image config.
    Config,
    /// Resolved a base image.
    Source,
    /// Would run (`--dry-run`).
    WouldRun,
}

/// A build event.
#[derive(Debug)]
pub enum Event<'a> {
    /// The build context, counted.
    Context {
        /// Files the context holds (after .dockerignore).
        files: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// A step starts.
    StepStarted {
        /// Which.
        id: &'a StepId,
        /// The instruction, expanded.
        text: &'a str,
    },
    /// A step missed the cache and will run.
    StepMissed {
        /// Which.
        id: &'a StepId,
        /// Why.
        reasons: &'a [MissReason],
    },
    /// Output of a running step.
    Output {
        /// Which.
        id: &'a StepId,
        /// Raw bytes as the command wrote them.
        chunk: &'a [u8],
    },
    /// A step ended.
    StepFinished {
        /// Which.
        id: &'a StepId,
        /// How.
        outcome: StepOutcome,
        /// How long it took.
        duration: Duration,
    },
    /// Something the user should know.
    Warning(&'a str),
}

/// Receives build events. Called from the build's threads.
pub trait Progress: Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// Discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _event: Event<'_>) {}
}
