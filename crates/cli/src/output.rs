//! How errors and warnings reach the terminal.

use std::fmt;

/// An error whose text is already rendered for a person (a Dockerfile
/// diagnostic with its source excerpt), printed as it is.
#[derive(Debug)]
pub struct Rendered(pub String);

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Rendered {}

/// Prints an error and its causes to stderr.
pub fn print_error(error: &anyhow::Error) {
    if let Some(rendered) = error.downcast_ref::<Rendered>() {
        eprintln!("{rendered}");
        return;
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// Prints a warning to stderr.
pub fn print_warning(file: &str, line: usize, message: &str) {
    eprintln!("warning: {message}\n  --> {file}:{line}");
}

/// Writes `text` to stdout. A closed pipe (`stowage ... | head`) ends the
/// output quietly instead of failing.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
