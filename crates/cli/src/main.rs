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
    /// The store's root directory [default: /var/lib/stowage as root,
    /// $XDG_DATA_HOME/stowage otherwise].
    #[arg(long, global = true, env = "STOWAGE_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse a Dockerfile and print its syntax tree or typed instructions.
    Parse(commands::parse::ParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&error);
            ExitCode::from(1)
        }
    }
}
