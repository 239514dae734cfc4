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
    let mut shown = error.to_string();
    eprintln!("error: {shown}");
    for cause in error.chain().skip(1) {
        // Many errors already include their cause's text: print only news.
        let text = cause.to_string();
        if shown.contains(&text) {
            continue;
        }
        eprintln!("  caused by: {text}");
        shown.push_str(&text);
    }
}

/// Writes one line to stderr in a single write. (`eprintln!` writes each piece of its
/// format on its own, and stderr is unbuffered: a build summary took a hundred calls.)
pub fn stderr_line(line: fmt::Arguments<'_>) {
    use std::io::Write as _;
    let text = format!("{line}\n");
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `eprintln!` in one write: see [`stderr_line`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::stderr_line(format_args!($($arg)*))
    };
}
pub(crate) use errln;

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

/// Sizes print the same everywhere: the advisor's decimal units (`18.3MB`, `512B`).
pub use stowage_advisor::render::human_size;

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(88_100_000), "88.1MB");
        assert_eq!(human_size(5_530_000), "5.53MB");
        assert_eq!(human_size(315_000_000), "315MB");
        assert_eq!(human_size(1_000), "1kB");
    }
}
