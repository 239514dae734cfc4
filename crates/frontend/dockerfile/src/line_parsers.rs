//! Splitters that turn the text after an instruction keyword into arguments:
//! builder flags, the quote-aware word splitter, ENV/LABEL name-value pairs,
//! JSON (exec form) arrays and plain whitespace splitting.

use serde::Serialize;

/// Whitespace as Go's `unicode.IsSpace` (the Unicode White_Space property).
pub fn is_space(ch: char) -> bool {
    ch.is_whitespace()
}

/// The separators of Docker's `[\t\v\f\r ]+` splitting.
pub fn is_separator(ch: char) -> bool {
    matches!(ch, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Split on runs of space, TAB, VT, FF and CR (after the caller trimmed).
/// An empty input gives no pieces.
pub fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_separator)
        .filter(|piece| !piece.is_empty())
        .map(str::to_string)
        .collect()
}

/// Split once at the first run of `[\t\v\f\r ]`: `(head, Some(tail))`.
pub fn split_once_whitespace(text: &str) -> (&str, Option<&str>) {
    match text.find(is_separator) {
        Some(pos) => {
            let head = text.get(..pos).unwrap_or("");
            let tail = text
                .get(pos..)
                .unwrap_or("")
                .trim_start_matches(is_separator);
            (head, Some(tail))
        }
        None => (text, None),
    }
}

/// Result of [`extract_flags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFlags<'a> {
    /// Flag tokens with quotes and escapes removed, e.g. `--from=a b`.
    pub flags: Vec<String>,
    /// The remaining text after the flags (not yet trimmed at its end).
    pub rest: &'a str,
    /// Byte offset of `rest` inside the input.
    pub rest_offset: usize,
}

/// Take the leading `--flag` tokens off `line` (the text after the keyword).
///
/// Quotes are removed (their content kept), the escape character protects
/// the next character, and a lone `--` ends the flag list.
pub fn extract_flags(line: &str, escape: char) -> ExtractedFlags<'_> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = line.char_indices().peekable();
    loop {
        let Some((pos, ch)) = chars.next() else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(word);
            }
            return ExtractedFlags {
                flags,
                rest: "",
                rest_offset: line.len(),
            };
        };
        match phase {
            Phase::Spaces => {
                if is_space(ch) {
                    continue;
                }
                let next_is_dash = chars.peek().is_some_and(|(_, c)| *c == '-');
                if ch != '-' || !next_is_dash {
                    return ExtractedFlags {
                        flags,
                        rest: line.get(pos..).unwrap_or(""),
                        rest_offset: pos,
                    };
                }
                phase = Phase::Word;
                word.push(ch);
            }
            Phase::Word => {
                if is_space(ch) {
                    if word == "--" {
                        return ExtractedFlags {
                            flags,
                            rest: line.get(pos..).unwrap_or(""),
                            rest_offset: pos,
                        };
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                } else if ch == '\'' || ch == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(ch);
                } else if ch == escape {
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                } else if ch == escape {
                    match chars.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
}

/// Docker's quote-aware word splitter (ARG, ENV, LABEL).
///
/// Words are separated by whitespace outside quotes; quotes and escape
/// characters stay in the words; an escape character at the very end of the
/// input is dropped.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Spaces => {}
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    blank_ok = true;
                    phase = Phase::Quote(ch);
                }
                if ch == escape {
                    match chars.next() {
                        None => continue,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                }
                if ch == escape && quote != '\'' {
                    match chars.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// One `name value` pair of ENV or LABEL, as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameValue {
    /// The key as written.
    pub name: String,
    /// The value as written.
    pub value: String,
}

/// Why [`parse_name_val`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameValError {
    /// Old form `KEY name` with no value.
    #[error("{0} must have two arguments")]
    MissingValue(String),
    /// New form with a word lacking `=`.
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
}

/// ENV/LABEL argument parsing. Returns the pairs and whether the legacy
/// `KEY name value` form was used. `instruction` is used in messages.
pub fn parse_name_val(
    rest: &str,
    instruction: &str,
    escape: char,
) -> Result<(Vec<NameValue>, bool), NameValError> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok((Vec::new(), false));
    };
    if !first.contains('=') {
        let (name, value) = split_once_whitespace(rest);
        return match value {
            Some(value) => Ok((
                vec![NameValue {
                    name: name.to_string(),
                    value: value.to_string(),
                }],
                true,
            )),
            None => Err(NameValError::MissingValue(instruction.to_uppercase())),
        };
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in &words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(NameValError::MissingEquals(word.clone()));
        };
        pairs.push(NameValue {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok((pairs, false))
}

/// The flat dump argument list of ENV/LABEL (`name value "="` or legacy `name value ""`).
pub fn name_val_values(pairs: &[NameValue], legacy: bool) -> Vec<String> {
    let sep = if legacy { "" } else { "=" };
    pairs
        .iter()
        .flat_map(|pair| [pair.name.clone(), pair.value.clone(), sep.to_string()])
        .collect()
}

/// Outcome of [`parse_json_array`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonArray {
    /// A valid JSON array of strings.
    Strings(Vec<String>),
    /// A valid JSON array with a non-string element: an error for Dockerfiles.
    NotStringArray,
    /// Not a JSON array at all: the shell form applies.
    NotJson,
}

/// Exec-form detection: is `rest` (leading whitespace allowed) a JSON array of strings?
pub fn parse_json_array(rest: &str) -> JsonArray {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return JsonArray::NotJson;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Err(_) => JsonArray::NotJson,
        Ok(values) => {
            let mut strings = Vec::with_capacity(values.len());
            for value in values {
                match value {
                    serde_json::Value::String(s) => strings.push(s),
                    _ => return JsonArray::NotStringArray,
                }
            }
            JsonArray::Strings(strings)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_and_double_dash() {
        let out = extract_flags("--user=me --doit=true -- foo /tmp/", '\\');
        assert_eq!(out.flags, vec!["--user=me", "--doit=true"]);
        assert_eq!(out.rest.trim(), "foo /tmp/");
        let out = extract_flags("--from=\"a b\" --chmod='7\\55' x y", '\\');
        assert_eq!(out.flags, vec!["--from=a b", "--chmod=755"]);
        assert_eq!(out.rest, "x y");
        let out = extract_flags("--doit -- [ ]", '\\');
        assert_eq!(out.flags, vec!["--doit"]);
        assert_eq!(out.rest.trim(), "[ ]");
        let out = extract_flags("-- ", '\\');
        assert!(out.flags.is_empty());
    }

    #[test]
    fn whitespace_split_ignores_runs() {
        assert_eq!(split_whitespace("80/tcp\t 443"), vec!["80/tcp", "443"]);
        assert!(split_whitespace("").is_empty());
    }

    #[test]
    fn name_val_forms() {
        let (pairs, legacy) = parse_name_val("a  b  # c", "LABEL", '\\').unwrap();
        assert!(legacy);
        assert_eq!(pairs[0].value, "b  # c");
        assert!(parse_name_val("PATH", "ENV", '\\').is_err());
        assert!(parse_name_val("a=b c", "ENV", '\\').is_err());
    }
}
