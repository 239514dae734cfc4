//! The `stowage` command line: argument parsing and output rendering only.
//! The work happens in the library crates.

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A daemonless container image builder.
#[derive(Parser, Debug)]
#[command(name = "stowage", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    globals: Globals,

    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct Globals {
    /// The store's root directory [default: /var/lib/stowage as root,
    /// $XDG_DATA_HOME/stowage otherwise].
    #[arg(long, global = true, env = "STOWAGE_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// A registry (HOST or HOST:PORT) reachable over plain HTTP or HTTPS with an
    /// unverified certificate (repeatable).
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl Globals {
    /// Opens the store at the chosen root.
    pub fn open_store(&self) -> anyhow::Result<stowage_store::Store> {
        let root = stowage_store::default_root(self.root.as_deref())?;
        Ok(stowage_store::Store::open(&root)?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse a Dockerfile and print its syntax tree or typed instructions.
    Parse(commands::parse::ParseArgs),
    /// Lint a Dockerfile: the seed's tips for effective images and BuildKit's build checks.
    Lint(commands::lint::LintArgs),
    /// Build an image from a Dockerfile and a context.
    Build(commands::build::BuildArgs),
    /// Run a command in an image, in the same sandbox as RUN steps.
    Run(commands::run::RunArgs),
    // @commands: each group below is a module of `commands` with its own
    // clap subcommand enum, flattened here.
    #[command(flatten)]
    Images(commands::images::ImageCommand),
    #[command(flatten)]
    Registry(commands::registry::RegistryCommand),
    #[command(flatten)]
    Advisor(commands::advisor::AdvisorCommand),
}

/// mimalloc: builds and their reports allocate and free many small records (context
/// listings, layer entries, paths, digests); it does that with a fraction of the system
/// allocator's CPU time and page faults (measured on the seed's Step 4 rebuild).
/// Built with `no_thp`: mimalloc otherwise asks for transparent huge pages on its arenas,
/// and where THP defrag is `madvise` (Debian's default) each first touch of a 2 MiB region
/// zeroes it and may stall in direct compaction; that was up to half of an edit-rebuild's
/// time, and more on a machine whose memory other builders had fragmented.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let globals = cli.globals;
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(&args),
        Command::Lint(args) => commands::lint::run(&args),
        Command::Build(args) => commands::build::run(&args, &globals),
        Command::Run(args) => commands::run::run(&args, &globals),
        // @dispatch
        Command::Images(cmd) => commands::images::run(cmd, &globals),
        Command::Registry(cmd) => commands::registry::run(&cmd, &globals),
        Command::Advisor(cmd) => commands::advisor::run(&cmd, &globals),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&error);
            ExitCode::from(1)
        }
    }
}
