//! The `stowage` command line: argument parsing and output rendering only.

use clap::Parser;

/// A daemonless container image builder.
#[derive(Parser, Debug)]
#[command(name = "stowage", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
