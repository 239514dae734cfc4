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

/// A size as Docker prints it: three significant digits, decimal units
/// (`88.1MB`, `5.53kB`, `0B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{}", UNITS.get(unit).copied().unwrap_or("B"))
}

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
