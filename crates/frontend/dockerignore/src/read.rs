//! Turning `.dockerignore` file contents into a pattern list (Docker's
//! `ignorefile.ReadAll`).

use crate::clean::clean_path;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads `.dockerignore` text into the pattern list that
/// [`crate::PatternMatcher::new`] takes.
///
/// Lines are split at LF with one trailing CR dropped; a UTF-8 BOM is
/// removed from the first line only; a line whose FIRST character is `#` is a
/// comment; the rest is trimmed and empty lines are skipped. A leading `!`
/// (spaces may follow it) marks an exception; the pattern is cleaned like
/// `path.Clean` and one leading `/` is removed (unless the pattern is `/`).
/// A bare `!` is kept as `!` (building a matcher from it fails).
/// Invalid UTF-8 is replaced with U+FFFD.
pub fn read_patterns(text: &[u8]) -> Vec<String> {
    let mut patterns = Vec::new();
    let mut lines = text.split(|&byte| byte == b'\n').peekable();
    let mut first = true;
    while let Some(mut line) = lines.next() {
        // A final empty piece after the last LF is not a line.
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if first {
            first = false;
            if let Some(stripped) = line.strip_prefix(UTF8_BOM) {
                line = stripped;
            }
        }
        if line.starts_with(b"#") {
            continue;
        }
        let line = String::from_utf8_lossy(line);
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern.get(1..).unwrap_or_default().trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean_path(pattern);
            if cleaned.len() > 1
                && let Some(rest) = cleaned.strip_prefix('/')
            {
                cleaned = rest.to_owned();
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        patterns.push(cleaned);
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lf_splits_and_last_line_counts() {
        assert_eq!(read_patterns(b"a\rb\nc"), vec!["a\rb", "c"]);
        assert_eq!(read_patterns(b"\n\n"), Vec::<String>::new());
        assert_eq!(read_patterns(b"x\r\r\n"), vec!["x"]);
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        assert_eq!(read_patterns(b"\xff/a"), vec!["\u{fffd}/a"]);
    }
}
