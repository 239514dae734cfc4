//! RUN: the command runs in the sandbox on an overlay whose lower layers are
//! the stage's unpacked layers; the fresh upper directory is the layer, which
//! is written to the store and then kept as that layer's unpacked tree.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

use stowage_archive::{Compression, LayerWriterOptions, write_layer_tar};
use stowage_exec::{
    CancelToken, ExitStatus, ExtraMount, NetworkMode, RootFs, RunSpec, Sandbox, SandboxOptions,
};
use stowage_image::LayerInfo;
use stowage_store::Store;

use crate::error::StepError;
use crate::layer::LayerSink;
use crate::progress::{Event, Progress, StepId};
use crate::rootfs::{adopt_tree, lowers_for, remove_tree, scratch_dir};

/// How many output lines a failed RUN reports.
const TAIL_LINES: usize = 20;

/// Everything a RUN needs besides the stage's layers.
pub struct RunParams {
    /// argv.
    pub argv: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: String,
    /// USER.
    pub user: String,
    /// Network.
    pub network: NetworkMode,
    /// Extra mounts (RUN --mount).
    pub mounts: Vec<ExtraMount>,
    /// The command as shown in errors.
    pub display: String,
    /// mtime clamp for the layer.
    pub clamp_mtime: Option<i64>,
    /// Layer compression.
    pub compression: Compression,
}

/// Forwards output to the progress sink and keeps the last lines.
struct OutputTap<'a> {
    progress: &'a dyn Progress,
    id: &'a StepId,
    tail: VecDeque<String>,
    partial: Vec<u8>,
}

impl OutputTap<'_> {
    fn push_line(&mut self, line: &[u8]) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(
            String::from_utf8_lossy(line)
                .trim_end_matches('\r')
                .to_owned(),
        );
    }

    fn into_tail(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.push_line(&partial);
        }
        self.tail.into()
    }
}

impl Write for OutputTap<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.progress.event(Event::Output {
            id: self.id,
            chunk: buf,
        });
        for &byte in buf {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.push_line(&line);
            } else if self.partial.len() < 4096 {
                self.partial.push(byte);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs one RUN step on top of `layers` and returns the layer it produced.
pub fn run_step(
    store: &Store,
    layers: &[LayerInfo],
    params: RunParams,
    progress: &dyn Progress,
    id: &StepId,
    cancel: &CancelToken,
) -> Result<LayerInfo, StepError> {
    let lowers = lowers_for(store, layers)?;
    let scratch = scratch_dir(store, "run-")?;
    let result = run_in(store, &scratch, lowers, params, progress, id, cancel);
    remove_tree(&scratch);
    result
}

fn run_in(
    store: &Store,
    scratch: &std::path::Path,
    lowers: Vec<PathBuf>,
    params: RunParams,
    progress: &dyn Progress,
    id: &StepId,
    cancel: &CancelToken,
) -> Result<LayerInfo, StepError> {
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    for dir in [&upper, &work] {
        std::fs::create_dir(dir).map_err(StepError::io("creating", dir.clone()))?;
    }
    let rootfs = if lowers.is_empty() {
        // FROM scratch with nothing yet: an empty lower keeps overlay happy.
        let empty = scratch.join("empty");
        std::fs::create_dir(&empty).map_err(StepError::io("creating", empty.clone()))?;
        RootFs::Overlay {
            lowers: vec![empty],
            upper: upper.clone(),
            work: work.clone(),
        }
    } else {
        RootFs::Overlay {
            lowers,
            upper: upper.clone(),
            work: work.clone(),
        }
    };
    let mut spec = RunSpec::new(rootfs, params.argv.iter().map(OsString::from).collect());
    spec.env = params
        .env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    spec.cwd = PathBuf::from(&params.cwd);
    spec.user = params.user.clone();
    spec.network = params.network;
    spec.mounts = params.mounts;
    let sandbox = Sandbox::with_options(SandboxOptions {
        state_dir: Some(scratch.to_path_buf()),
        ..SandboxOptions::default()
    });
    let mut tap = OutputTap {
        progress,
        id,
        tail: VecDeque::new(),
        partial: Vec::new(),
    };
    let status = sandbox.run_cancellable(&spec, &mut tap, cancel)?;
    let tail = tap.into_tail();
    match status {
        ExitStatus::Exited(0) => {}
        ExitStatus::Exited(code) => {
            return Err(StepError::RunFailed {
                command: params.display,
                code: Some(code),
                signal: None,
                output_tail: tail,
            });
        }
        ExitStatus::Signaled(_) if cancel.is_cancelled() => return Err(StepError::Cancelled),
        ExitStatus::Signaled(signal) => {
            return Err(StepError::RunFailed {
                command: params.display,
                code: None,
                signal: Some(signal),
                output_tail: tail,
            });
        }
    }
    let options = LayerWriterOptions {
        clamp_mtime: params.clamp_mtime,
        overlay_upper: true,
        ..LayerWriterOptions::default()
    };
    let sink = LayerSink::new(store, params.compression)?;
    let (sink, _) = write_layer_tar(&upper, &options, sink)?;
    let layer = sink.finish()?;
    let size = layer.uncompressed_size.unwrap_or(0);
    adopt_tree(store, &upper, &layer, size)?;
    Ok(layer)
}
