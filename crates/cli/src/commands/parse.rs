//! `stowage parse`: the Dockerfile front end on its own, for tools and for
//! checking a Dockerfile without building it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::output::{Rendered, emit, print_warning};

/// What `stowage parse` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseFormat {
    /// The syntax tree as s-expressions, in BuildKit's parser test format.
    Ast,
    /// The typed instructions, per stage, as JSON.
    Json,
}

/// Arguments of `stowage parse`.
#[derive(Args, Debug)]
pub struct ParseArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "ast")]
    format: ParseFormat,
    /// The Dockerfile to read (`-` for standard input).
    #[arg(default_value = "Dockerfile")]
    file: PathBuf,
}

/// Reads a Dockerfile from a path, or standard input for `-`.
pub fn read_dockerfile(file: &PathBuf) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from standard input")?;
        Ok(("<stdin>".to_owned(), text))
    } else {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{} is not valid UTF-8", file.display()))?;
        Ok((file.display().to_string(), text))
    }
}

/// Runs `stowage parse`.
pub fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, source) = read_dockerfile(&args.file)?;
    let tree =
        stowage_dockerfile::parse(&source).map_err(|e| Rendered(e.render(&name, &source)))?;
    // The tree is printed as parsed; the typed instructions are always
    // checked too, so `parse` also validates the Dockerfile.
    if args.format == ParseFormat::Ast {
        emit(&tree.dump())?;
    }
    let program =
        stowage_dockerfile::lower(&tree).map_err(|e| Rendered(e.render(&name, &source)))?;
    for warning in &program.warnings {
        print_warning(&name, warning.line, &warning.message);
    }
    if args.format == ParseFormat::Json {
        emit(&(serde_json::to_string_pretty(&program)? + "\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}
