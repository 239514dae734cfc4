//! `stowage run`: runs a command in an image with the same sandbox RUN steps
//! use, so an image can be tried without Docker. The container's writable
//! layer is thrown away when the command ends.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use stowage_exec::{ExitStatus, NetworkMode, RootFs, RunSpec, Sandbox, SandboxOptions};
use stowage_solver::rootfs::{lowers_for, remove_tree, scratch_dir};

use crate::Globals;

/// Arguments of `stowage run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container when it exits (always the case: stowage keeps no containers).
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (`KEY=VALUE`, or `KEY` to pass the host's).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User (`name`, `uid`, `name:group`, `uid:gid`).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: host (default) or none.
    #[arg(long, default_value = "host")]
    network: String,
    /// The image.
    image: String,
    /// The command and its arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs `stowage run`.
pub fn run(args: &RunArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let _ = args.rm;
    let store = globals.open_store()?;
    let _lease = store.lease()?;
    let image = store.image(&args.image)?;
    let config = &image.config.config;
    let entrypoint: Vec<String> = match &args.entrypoint {
        Some(text) if text.is_empty() => Vec::new(),
        Some(text) => vec![text.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    let command: Vec<String> = if args.command.is_empty() {
        if args.entrypoint.is_some() {
            Vec::new()
        } else {
            config.cmd.clone().unwrap_or_default()
        }
    } else {
        args.command.clone()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(command).collect();
    if argv.is_empty() {
        anyhow::bail!(
            "{} has no CMD or ENTRYPOINT: give a command to run",
            args.image
        );
    }
    let mut env: Vec<(String, String)> = config
        .env
        .iter()
        .flatten()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (e.clone(), String::new()),
        })
        .collect();
    for item in &args.env {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (item.clone(), std::env::var(item).unwrap_or_default()),
        };
        env.retain(|(k, _)| k != &key);
        env.push((key, value));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".to_owned(),
            stowage_solver::config::DEFAULT_PATH.to_owned(),
        ));
    }
    let lowers = lowers_for(&store, &image.layers)?;
    let scratch = scratch_dir(&store, "container-")?;
    let result = (|| {
        let upper = scratch.join("upper");
        let work = scratch.join("work");
        let empty = scratch.join("empty");
        for dir in [&upper, &work, &empty] {
            std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let lowers = if lowers.is_empty() {
            vec![empty]
        } else {
            lowers
        };
        let mut spec = RunSpec::new(
            RootFs::Overlay {
                lowers,
                upper,
                work,
            },
            argv.iter().map(OsString::from).collect(),
        );
        spec.env = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        spec.cwd = PathBuf::from(
            args.workdir
                .clone()
                .or_else(|| config.working_dir.clone().filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".to_owned()),
        );
        spec.user = args
            .user
            .clone()
            .or_else(|| config.user.clone())
            .unwrap_or_default();
        spec.network = match args.network.as_str() {
            "none" => NetworkMode::None,
            "host" | "default" | "bridge" => NetworkMode::Host,
            other => anyhow::bail!("unsupported --network {other:?}: use host or none"),
        };
        let sandbox = Sandbox::with_options(SandboxOptions {
            state_dir: Some(scratch.clone()),
            ..SandboxOptions::default()
        });
        let mut stdout = std::io::stdout();
        let status = sandbox.run(&spec, &mut stdout)?;
        stdout.flush().ok();
        Ok(status)
    })();
    remove_tree(&scratch);
    let status = result?;
    Ok(match status {
        ExitStatus::Exited(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        ExitStatus::Signaled(signal) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
    })
}
