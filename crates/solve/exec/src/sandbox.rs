//! [`Sandbox::run`]: prepares everything on the host, clones the child into
//! new namespaces, streams its output, and reports how it ended.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::child::Step;
use crate::error::ExecError;
use crate::layers::{self, Lookup};
use crate::plan::{self, OverlayApi, PlanInput, RootPlan};
use crate::spec::{CancelToken, ExitStatus, NetworkMode, RootFs, RunSpec};
use crate::sys;
use crate::users::{ResolvedUser, resolve_user};

/// Largest /etc/passwd or /etc/group we read (bounded memory).
const MAX_ACCOUNT_FILE: u64 = 16 << 20;
/// How often a streaming run checks its [`CancelToken`].
const CANCEL_POLL_MS: i32 = 100;

/// Tuning knobs of a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Where per-run scratch directories (root mount point, scaffold layer,
    /// generated /etc files) are created; the system temp dir when `None`.
    pub state_dir: Option<PathBuf>,
    /// Kernel interface used to mount the overlay.
    pub overlay_api: OverlayApi,
    /// Host file bound read-only at /etc/resolv.conf (an empty file is used if it is missing).
    pub resolv_conf: PathBuf,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            state_dir: None,
            overlay_api: OverlayApi::Auto,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// Runs commands in namespaced containers. Cheap to create; `run` may be
/// called from several threads at once.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    options: SandboxOptions,
}

impl Sandbox {
    /// A sandbox with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sandbox with the given options.
    pub fn with_options(options: SandboxOptions) -> Self {
        Sandbox { options }
    }

    /// Runs `spec`, writing the command's stdout and stderr (one pipe, so
    /// interleaved in order) to `output` as they arrive, and waits for it.
    pub fn run(&self, spec: &RunSpec, output: &mut dyn Write) -> Result<ExitStatus, ExecError> {
        self.run_cancellable(spec, output, &CancelToken::new())
    }

    /// Like [`Sandbox::run`], but `cancel` can kill the container from another thread.
    pub fn run_cancellable(
        &self,
        spec: &RunSpec,
        output: &mut dyn Write,
        cancel: &CancelToken,
    ) -> Result<ExitStatus, ExecError> {
        if spec.argv.is_empty() {
            return Err(ExecError::invalid("argv is empty"));
        }
        let base = self
            .options
            .state_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let run_dir = tempfile::Builder::new()
            .prefix("stowage-run-")
            .tempdir_in(&base)
            .map_err(|err| ExecError::io("create run directory in", &base, err))?;
        let run_path = run_dir.path();

        let (root, new_root, stack) = self.prepare_root(spec, run_path)?;
        let user = resolve_user_in(&stack, &spec.user)?;

        let hosts_file = run_path.join("hosts");
        let hostname_file = run_path.join("hostname");
        write_file(&hosts_file, hosts_content(&spec.hostname).as_bytes())?;
        write_file(&hostname_file, format!("{}\n", spec.hostname).as_bytes())?;
        let resolv_file = if self.options.resolv_conf.is_file() {
            self.options.resolv_conf.clone()
        } else {
            let empty = run_path.join("resolv.conf");
            write_file(&empty, b"")?;
            empty
        };

        let (error_read, error_write) = sys::pipe().map_err(ExecError::Spawn)?;
        let (output_read, output_write) = sys::pipe().map_err(ExecError::Spawn)?;
        let steps = plan::plan_steps(&PlanInput {
            root,
            new_root,
            argv: &spec.argv,
            env: &spec.env,
            cwd: &spec.cwd,
            user: &user,
            hostname: &spec.hostname,
            network: spec.network,
            mounts: &spec.mounts,
            hosts_file,
            hostname_file,
            resolv_file,
            output_fd: output_write.as_raw_fd(),
        })?;

        let flags = sys::clone_flags(spec.network == NetworkMode::None);
        let pid = sys::spawn(flags, &steps, error_write.as_raw_fd()).map_err(ExecError::Spawn)?;
        drop(error_write);
        drop(output_write);

        let mut record = Vec::with_capacity(8);
        let setup = fs::File::from(error_read).take(8).read_to_end(&mut record);
        if let Err(err) = setup {
            sys::kill(pid);
            let _ = sys::wait(pid);
            return Err(ExecError::Wait(err));
        }
        if let Some(failure) = decode_failure(&record) {
            let _ = sys::wait(pid);
            return Err(setup_error(&steps, spec, failure));
        }

        let streamed = stream_output(fs::File::from(output_read), output, cancel, pid);
        let status = sys::wait(pid).map_err(ExecError::Wait)?;
        streamed?;
        output.flush().map_err(ExecError::Output)?;
        drop(run_dir);
        Ok(status)
    }

    /// Decides the root: for an overlay, builds the scaffold layer and
    /// returns the lower list with it on top. Also returns the layer stack
    /// (top-most first) used to read /etc/passwd.
    fn prepare_root(
        &self,
        spec: &RunSpec,
        run_path: &Path,
    ) -> Result<(RootPlan, PathBuf, Vec<PathBuf>), ExecError> {
        let points = plan::mount_points(&spec.mounts)?;
        match &spec.rootfs {
            RootFs::Directory(dir) => {
                layers::prepare_directory_points(dir, &points)?;
                Ok((
                    RootPlan::Directory(dir.clone()),
                    dir.clone(),
                    vec![dir.clone()],
                ))
            }
            RootFs::Overlay {
                lowers,
                upper,
                work,
            } => {
                let mut stack = Vec::with_capacity(lowers.len() + 1);
                stack.push(upper.clone());
                stack.extend(lowers.iter().cloned());
                let scaffold = run_path.join("scaffold");
                fs::create_dir(&scaffold)
                    .map_err(|err| ExecError::io("create scaffold layer", &scaffold, err))?;
                let mut mount_lowers = Vec::with_capacity(lowers.len() + 1);
                if layers::build_scaffold(&stack, &scaffold, &points)? || lowers.is_empty() {
                    mount_lowers.push(scaffold);
                }
                mount_lowers.extend(lowers.iter().cloned());
                let new_root = run_path.join("root");
                fs::create_dir(&new_root)
                    .map_err(|err| ExecError::io("create root mount point", &new_root, err))?;
                Ok((
                    RootPlan::Overlay {
                        lowers: mount_lowers,
                        upper: upper.clone(),
                        work: work.clone(),
                        api: self.options.overlay_api,
                    },
                    new_root,
                    stack,
                ))
            }
        }
    }
}

fn write_file(path: &Path, content: &[u8]) -> Result<(), ExecError> {
    fs::write(path, content).map_err(|err| ExecError::io("write", path, err))
}

fn hosts_content(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// Reads an account file of the rootfs through the layer stack.
fn read_account_file(stack: &[PathBuf], rel: &str) -> Result<Option<String>, ExecError> {
    match layers::lookup(stack, Path::new(rel))? {
        Lookup::Found(host, meta) if meta.is_file() => {
            let mut content = Vec::new();
            fs::File::open(&host)
                .and_then(|file| file.take(MAX_ACCOUNT_FILE).read_to_end(&mut content))
                .map_err(|err| ExecError::io("read", &host, err))?;
            Ok(Some(String::from_utf8_lossy(&content).into_owned()))
        }
        _ => Ok(None),
    }
}

fn resolve_user_in(stack: &[PathBuf], user: &str) -> Result<ResolvedUser, ExecError> {
    let passwd = read_account_file(stack, "etc/passwd")?;
    let group = read_account_file(stack, "etc/group")?;
    resolve_user(user, passwd.as_deref(), group.as_deref())
}

fn decode_failure(record: &[u8]) -> Option<(u32, i32)> {
    let step = u32::from_ne_bytes(record.get(0..4)?.try_into().ok()?);
    let errno = i32::from_ne_bytes(record.get(4..8)?.try_into().ok()?);
    Some((step, errno))
}

fn setup_error(steps: &[Step], spec: &RunSpec, (index, errno): (u32, i32)) -> ExecError {
    let source = io::Error::from_raw_os_error(errno);
    let step = usize::try_from(index).ok().and_then(|i| steps.get(i));
    match step {
        Some(Step::Exec(_)) => ExecError::Exec {
            program: spec
                .argv
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source,
        },
        Some(step) => ExecError::Setup {
            step: step.describe(),
            source,
        },
        None => ExecError::Setup {
            step: format!("unknown step {index}"),
            source,
        },
    }
}

/// Copies the output pipe to `output` until every writer is gone, killing the
/// container on cancellation or when `output` fails.
fn stream_output(
    mut pipe: fs::File,
    output: &mut dyn Write,
    cancel: &CancelToken,
    pid: i32,
) -> Result<(), ExecError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut sink_error = None;
    let mut killed = false;
    loop {
        if cancel.is_cancelled() && !killed {
            sys::kill(pid);
            killed = true;
        }
        match sys::poll_readable(pipe.as_raw_fd(), CANCEL_POLL_MS) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(err) => {
                sys::kill(pid);
                return Err(ExecError::Wait(err));
            }
        }
        let read = match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                sys::kill(pid);
                return Err(ExecError::Wait(err));
            }
        };
        if sink_error.is_none()
            && let Some(chunk) = buffer.get(..read)
            && let Err(err) = output.write_all(chunk)
        {
            sys::kill(pid);
            killed = true;
            sink_error = Some(err);
        }
    }
    match sink_error {
        Some(err) => Err(ExecError::Output(err)),
        None => Ok(()),
    }
}
