//! Heredoc markers (`<<EOF`, `<<-EOF`, `3<<'EOF'`): finding them in an
//! instruction line, classifying one word, and chomping leading tabs.

use serde::Serialize;

use crate::span::Span;

/// One heredoc carried by a RUN/COPY/ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// Terminator word with quotes removed.
    pub name: String,
    /// Body lines exactly as in the file, each with its own line ending.
    pub content: String,
    /// False when any part of the word was quoted: the body is not expanded.
    pub expand: bool,
    /// True for `<<-`: leading tabs are to be removed from the body.
    pub chomp: bool,
    /// The digits before `<<`, or 0.
    pub file_descriptor: u32,
    /// Source range of the body (without the terminator line).
    pub body_span: Span,
}

impl Heredoc {
    /// The body as it should be used: chomped for `<<-`.
    pub fn effective_content(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// A heredoc marker recognised in a word, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeredocMarker {
    /// Terminator word with quotes removed.
    pub name: String,
    /// False when any part of the word was quoted.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// The digits before `<<`, or 0.
    pub file_descriptor: u32,
}

/// A heredoc word could not be lexed (an unterminated quote).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid heredoc word {word:?}: unterminated quote")]
pub struct HeredocWordError {
    /// The offending word.
    pub word: String,
}

/// Remove all leading TAB characters from every line of `src`.
pub fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// ASCII whitespace as in RE2's `\s`.
fn is_re_space(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\n' | '\u{c}' | '\r')
}

/// Split `text` into shell-like words for heredoc detection.
///
/// `raw` keeps quotes and escape characters in the words; otherwise they are
/// removed. Variables are left as written. `<<` absorbs the whitespace that
/// follows it, so `<<  EOF` is one word. Returns `None` on an unterminated quote.
fn heredoc_words(text: &str, raw: bool) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\'' => {
                in_word = true;
                if raw {
                    word.push('\'');
                }
                loop {
                    match chars.next() {
                        None => return None,
                        Some('\'') => break,
                        Some(c) => word.push(c),
                    }
                }
                if raw {
                    word.push('\'');
                }
            }
            '"' => {
                in_word = true;
                if raw {
                    word.push('"');
                }
                loop {
                    match chars.next() {
                        None => return None,
                        Some('"') => break,
                        Some('\\') => match chars.peek().copied() {
                            None => {}
                            Some(next @ ('"' | '$' | '\\')) => {
                                chars.next();
                                if raw {
                                    word.push('\\');
                                }
                                word.push(next);
                            }
                            Some(_) => word.push('\\'),
                        },
                        Some(c) => word.push(c),
                    }
                }
                if raw {
                    word.push('"');
                }
            }
            '\\' => {
                in_word = true;
                if raw {
                    word.push('\\');
                }
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '<' if chars.peek() == Some(&'<') => {
                chars.next();
                in_word = true;
                word.push_str("<<");
                while let Some(&next) = chars.peek() {
                    if !next.is_whitespace() {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
            }
            c if c.is_whitespace() => {
                if in_word && !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    Some(words)
}

/// Classify one word as a heredoc marker.
///
/// `Ok(None)` when the word is not a marker, `Err` for an unterminated quote.
pub fn parse_heredoc_word(word: &str) -> Result<Option<HeredocMarker>, HeredocWordError> {
    let digits_end = word
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(word.len(), |(i, _)| i);
    let digits = word.get(..digits_end).unwrap_or("");
    let Some(after) = word.get(digits_end..).and_then(|s| s.strip_prefix("<<")) else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    let rest = after.trim_start_matches(is_re_space);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let error = || HeredocWordError {
        word: word.to_string(),
    };
    let cooked = heredoc_words(rest, false).ok_or_else(error)?;
    let [name] = cooked.as_slice() else {
        return Ok(None);
    };
    let raw = heredoc_words(rest, true).ok_or_else(error)?;
    let [raw_name] = raw.as_slice() else {
        return Err(error());
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let file_descriptor = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().unwrap_or(0)
    };
    Ok(Some(HeredocMarker {
        name: name.clone(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        file_descriptor,
    }))
}

/// Find the heredoc markers of a whole instruction line, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<HeredocMarker>, HeredocWordError> {
    let words = heredoc_words(line, true).unwrap_or_default();
    let mut markers = Vec::new();
    for word in words {
        if let Some(marker) = parse_heredoc_word(&word)? {
            markers.push(marker);
        }
    }
    Ok(markers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_words() {
        let m = parse_heredoc_word("<<'e'o\\'f").unwrap().unwrap();
        assert_eq!(m.name, "eo'f");
        assert!(!m.expand);
        let m = parse_heredoc_word("3<<-EOF").unwrap().unwrap();
        assert_eq!((m.file_descriptor, m.chomp, m.expand), (3, true, true));
        assert!(parse_heredoc_word("<<EOF\"").is_err());
        assert_eq!(parse_heredoc_word("<<<EOF").unwrap(), None);
        assert_eq!(parse_heredoc_word("<<").unwrap(), None);
    }

    #[test]
    fn line_level_detection() {
        let names = |l: &str| -> Vec<String> {
            heredocs_from_line(l)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect()
        };
        assert_eq!(names("RUN <<  EOF"), vec!["EOF"]);
        assert!(names("RUN <<- EOF").is_empty());
        assert!(names("RUN '<<EOF'").is_empty());
        assert_eq!(names("COPY <<A <<B /d"), vec!["A", "B"]);
    }

    #[test]
    fn chomp_removes_leading_tabs_per_line() {
        assert_eq!(chomp_heredoc_content("\t\ta\n\tb\nc"), "a\nb\nc");
    }
}
