//! Build errors. Every error from a step names the stage, the step, the
//! instruction and its Dockerfile line; a failed RUN carries its exit code and
//! the tail of its output.

use std::fmt;
use std::path::PathBuf;

use stowage_dockerfile::ParseError;

/// Where in the Dockerfile a step error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLocation {
    /// The stage's name, or its index.
    pub stage: String,
    /// 1-based step number within the stage (FROM is step 1).
    pub step: usize,
    /// Steps in the stage.
    pub total: usize,
    /// 1-based Dockerfile line.
    pub line: usize,
    /// The instruction as written (continuations joined).
    pub instruction: String,
}

impl fmt::Display for StepLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} {}/{}] {} (line {})",
            self.stage, self.step, self.total, self.instruction, self.line
        )
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse or its instructions are invalid.
    #[error("{file}: {error}")]
    Dockerfile {
        /// The Dockerfile's name, for rendering.
        file: String,
        /// The source, for rendering.
        source_text: String,
        /// The located error.
        #[source]
        error: Box<ParseError>,
    },
    /// A step failed.
    #[error("{location}: {kind}")]
    Step {
        /// Where.
        location: StepLocation,
        /// What.
        #[source]
        kind: StepError,
    },
    /// A problem before any step ran (options, context, store).
    #[error("{0}")]
    Setup(String),
    /// The store failed outside a step.
    #[error(transparent)]
    Store(#[from] stowage_store::StoreError),
    /// `--squash` / `--squash-all` failed.
    #[error("squashing the image's layers: {0}")]
    Squash(#[source] StepError),
    /// The build was interrupted.
    #[error("build interrupted")]
    Interrupted,
}

/// What went wrong in a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A RUN command exited non-zero or was killed.
    #[error("{}\n{}", describe_exit(*code, *signal, command), tail_text(output_tail))]
    RunFailed {
        /// The command as run.
        command: String,
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Signal, if it was killed.
        signal: Option<i32>,
        /// The last lines of its output.
        output_tail: Vec<String>,
    },
    /// The base image could not be found or pulled.
    #[error("base image {reference}: {detail}")]
    BaseImage {
        /// The image as written.
        reference: String,
        /// Why.
        detail: String,
    },
    /// A COPY/ADD source problem.
    #[error(transparent)]
    Context(#[from] stowage_context::ContextError),
    /// The sandbox failed.
    #[error(transparent)]
    Exec(#[from] stowage_exec::ExecError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] stowage_store::StoreError),
    /// Writing a layer failed.
    #[error(transparent)]
    LayerWrite(#[from] stowage_archive::LayerWriteError),
    /// Unpacking a layer failed.
    #[error("unpacking layer {diff_id}: {source}")]
    LayerApply {
        /// The layer.
        diff_id: String,
        /// Why.
        #[source]
        source: stowage_archive::ApplyError,
    },
    /// A config instruction was invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A user or group that does not exist in the image.
    #[error("{0}")]
    User(String),
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The step was stopped because another stage failed.
    #[error("stopped because another stage failed")]
    Cancelled,
    /// Something the instruction asks for that is not possible.
    #[error("{0}")]
    Invalid(String),
}

fn describe_exit(code: Option<i32>, signal: Option<i32>, command: &str) -> String {
    match (code, signal) {
        (Some(code), _) => format!("the command {command:?} exited with code {code}"),
        (None, Some(signal)) => format!("the command {command:?} was killed by signal {signal}"),
        _ => format!("the command {command:?} failed"),
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return "(it printed nothing)".to_owned();
    }
    let mut text = String::from("last output lines:");
    for line in tail {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

impl StepError {
    /// An I/O error with its action and path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StepError::Io {
            action,
            path,
            source,
        }
    }
}
