//! `stowage pull`, `push`, `login` and `logout`: argument parsing and progress
//! rendering around `stowage-distribution` and `stowage-registry`. Progress goes
//! to stderr (bars with bytes and rates on a terminal, one line per blob
//! otherwise, nothing with `-q`); the result goes to stdout.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stowage_digest::Digest;
use stowage_distribution::{
    BlobKind, BlobOutcome, PullOptions, PushOptions, TransferObserver, pull, push,
};
use stowage_image::{Platform, Reference};
use stowage_registry::{
    Anonymous, ClientOptions, CredentialProvider, DockerConfig, RegistryClient,
};

use crate::Globals;
use crate::output::emit;

/// Environment variable overriding Docker's `/etc/docker/certs.d` (per-registry
/// CA files `<dir>/<host:port>/*.crt`, client certificates `*.cert` + `*.key`).
pub const CERTS_DIR_ENV: &str = "STOWAGE_REGISTRY_CERTS_DIR";

/// Registry commands.
#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Download an image from a registry into the store.
    Pull(PullArgs),
    /// Upload an image from the store to a registry.
    Push(PushArgs),
    /// Log in to a registry (stores credentials in Docker's config.json).
    Login(LoginArgs),
    /// Log out from a registry (removes its credentials from config.json).
    Logout(LogoutArgs),
}

/// Arguments of `stowage pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Platform to pick from a multi-platform image (os/arch[/variant]).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print only the image reference.
    #[arg(short, long)]
    quiet: bool,
    /// The image: NAME[:TAG|@DIGEST].
    reference: String,
}

/// Arguments of `stowage push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Print only the pushed reference and digest.
    #[arg(short, long)]
    quiet: bool,
    /// The local image (and the destination, unless DEST is given).
    reference: String,
    /// Destination NAME[:TAG] when it differs from the local name.
    destination: Option<String>,
    /// Recompress the layers before pushing (the image ID stays; the pushed
    /// manifest differs from the stored one).
    #[arg(long, value_enum, value_name = "gzip|zstd|none")]
    compress: Option<crate::commands::images::StoreCompression>,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N", requires = "compress")]
    compress_level: Option<i32>,
}

/// Arguments of `stowage login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The registry [default: docker.io].
    server: Option<String>,
}

/// Arguments of `stowage logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry [default: docker.io].
    server: Option<String>,
}

/// Runs a registry command.
pub fn run(command: &RegistryCommand, globals: &Globals) -> anyhow::Result<ExitCode> {
    match command {
        RegistryCommand::Pull(args) => run_pull(args, globals),
        RegistryCommand::Push(args) => run_push(args, globals),
        RegistryCommand::Login(args) => run_login(args, globals),
        RegistryCommand::Logout(args) => run_logout(args),
    }
}

fn certs_dir() -> Option<PathBuf> {
    match std::env::var_os(CERTS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => ClientOptions::default().docker_certs_dir,
    }
}

/// A client for `registry`: Docker's credentials, `--insecure-registry`, and
/// the certs directory. A loopback registry with a certs directory entry
/// speaks HTTPS (with that CA) instead of Docker's plain-HTTP default.
pub fn client_for(globals: &Globals, registry: &str) -> RegistryClient {
    let certs_dir = certs_dir();
    let mut options = ClientOptions {
        insecure_registries: globals.insecure_registries.clone(),
        docker_certs_dir: certs_dir.clone(),
        ..ClientOptions::default()
    };
    if let Some(dir) = &certs_dir
        && dir.join(registry).is_dir()
    {
        options.tls_loopback_registries.push(registry.to_owned());
    }
    let credentials: Arc<dyn CredentialProvider> = match DockerConfig::from_env() {
        Some(config) => Arc::new(config),
        None => Arc::new(Anonymous),
    };
    RegistryClient::new(options, credentials)
}

fn parse_reference(text: &str) -> anyhow::Result<Reference> {
    Reference::parse_normalized(text).with_context(|| format!("invalid reference {text:?}"))
}

/// Renders transfers: bars on a terminal, lines otherwise, nothing when quiet.
struct Renderer {
    mode: Mode,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    multi: MultiProgress,
    verb: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

impl Renderer {
    fn new(quiet: bool, verb: &'static str) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Renderer {
            mode,
            bars: Mutex::new(HashMap::new()),
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            verb,
        }
    }

    fn line(&self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                let _ = self.multi.println(text);
            }
            Mode::Lines => eprintln!("{text}"),
        }
    }
}

fn outcome_text(outcome: &BlobOutcome) -> String {
    match outcome {
        BlobOutcome::AlreadyInStore => "Already exists".into(),
        BlobOutcome::Downloaded => "Pull complete".into(),
        BlobOutcome::AlreadyInRegistry => "Layer already exists".into(),
        BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
        BlobOutcome::Uploaded => "Pushed".into(),
    }
}

impl TransferObserver for Renderer {
    fn blob_started(&self, digest: &Digest, size: u64, kind: BlobKind) {
        if self.mode != Mode::Bars {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        let label = match kind {
            BlobKind::Config => format!("{} (config)", digest.short()),
            BlobKind::Layer => digest.short(),
        };
        bar.set_prefix(label);
        bar.set_message(self.verb);
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*digest, bar);
    }

    fn blob_progress(&self, digest: &Digest, done: u64, total: Option<u64>) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
        {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
    }

    fn blob_finished(&self, digest: &Digest, outcome: &BlobOutcome) {
        let text = outcome_text(outcome);
        match self.mode {
            Mode::Bars => {
                if let Some(bar) = self
                    .bars
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(digest)
                {
                    bar.finish_with_message(text);
                }
            }
            Mode::Lines => eprintln!("{}: {text}", digest.short()),
            Mode::Quiet => {}
        }
    }
}

fn run_pull(args: &PullArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| p.parse::<Platform>())
        .transpose()
        .context("--platform")?;
    let store = globals.open_store()?;
    let client = client_for(globals, reference.domain());
    let renderer = Renderer::new(args.quiet, "Downloading");
    let shown = reference.clone().with_default_tag();
    renderer.line(&format!("Pulling {}", shown.familiar()));
    let pulled = pull(
        &store,
        &client,
        &reference,
        &PullOptions {
            platform: platform.as_ref(),
            observer: &renderer,
            ..PullOptions::default()
        },
    )
    .with_context(|| format!("pulling {}", shown.familiar()))?;
    renderer.line(&format!(
        "Digest: {}",
        pulled.repo_digest.rsplit('@').next().unwrap_or_default()
    ));
    if pulled.up_to_date {
        renderer.line(&format!(
            "Status: Image is up to date for {}",
            shown.familiar()
        ));
    } else {
        renderer.line(&format!(
            "Status: Downloaded newer image for {} ({} layers, {} bytes)",
            shown.familiar(),
            pulled.layers_downloaded,
            pulled.bytes_downloaded
        ));
    }
    emit(&format!("{}\n", pulled.reference))?;
    Ok(ExitCode::SUCCESS)
}

fn run_push(args: &PushArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let destination = parse_reference(args.destination.as_deref().unwrap_or(&args.reference))?;
    let store = globals.open_store()?;
    let client = client_for(globals, destination.domain());
    let renderer = Renderer::new(args.quiet, "Pushing");
    renderer.line(&format!(
        "The push refers to repository [{}]",
        destination.name()
    ));
    let options = PushOptions {
        observer: &renderer,
        ..PushOptions::default()
    };
    let pushed = match args.compress {
        None => push(&store, &client, &args.reference, &destination, &options),
        Some(kind) => {
            let _lease = store.lease()?;
            let image = store.image(&args.reference)?;
            let compression =
                crate::commands::images::export_compression(kind, args.compress_level);
            let converted = stowage_export::convert::convert_image(&store, &image, compression)
                .with_context(|| format!("recompressing the layers of {}", args.reference))?;
            stowage_distribution::push::push_details(
                &store,
                &client,
                &converted,
                image.manifest_digest,
                &destination,
                &options,
            )
        }
    }
    .with_context(|| format!("pushing {} to {}", args.reference, destination.familiar()))?;
    let label = pushed.reference.tag().unwrap_or("latest").to_owned();
    renderer.line(&format!(
        "{label}: digest: {} size: {}",
        pushed.manifest_digest, pushed.manifest_size
    ));
    emit(&format!(
        "{}@{}\n",
        pushed.reference.name(),
        pushed.manifest_digest
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `docker.io` for Docker Hub in any spelling (including the config key
/// `https://index.docker.io/v1/`), else the host[:port] without scheme or path.
fn normalize_server(server: Option<&str>) -> String {
    let server = server.unwrap_or("docker.io").trim();
    let without_scheme = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    if stowage_registry::credentials::is_docker_hub(host) {
        "docker.io".to_owned()
    } else {
        host.to_owned()
    }
}

fn docker_config() -> anyhow::Result<DockerConfig> {
    DockerConfig::from_env()
        .context("cannot locate Docker's config.json: set DOCKER_CONFIG or HOME")
}

fn run_login(args: &LoginArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let registry = normalize_server(args.server.as_deref());
    let Some(username) = args.username.clone() else {
        bail!("a username is required: stowage login -u USER [--password-stdin] {registry}");
    };
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Some(password) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        password.clone()
    } else {
        bail!("a password is required: use --password-stdin (or -p)");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let config = docker_config()?;
    let client = client_for(globals, &registry);
    stowage_registry::login(&client, &config, &registry, &username, &password)
        .with_context(|| format!("logging in to {registry}"))?;
    emit("Login Succeeded\n")?;
    Ok(ExitCode::SUCCESS)
}

fn run_logout(args: &LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = normalize_server(args.server.as_deref());
    let config = docker_config()?;
    let removed = stowage_registry::logout(&config, &registry)
        .with_context(|| format!("logging out from {registry}"))?;
    if removed {
        emit(&format!("Removing login credentials for {registry}\n"))?;
    } else {
        emit(&format!("Not logged in to {registry}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::normalize_server;

    #[test]
    fn servers_normalize_like_docker() {
        assert_eq!(normalize_server(None), "docker.io");
        assert_eq!(
            normalize_server(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(normalize_server(Some("index.docker.io")), "docker.io");
        assert_eq!(normalize_server(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(normalize_server(Some("https://ghcr.io/v2/")), "ghcr.io");
    }
}
