//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`) at the top of
//! a Dockerfile, and the frontend-syntax detection used before parsing.

use serde::Serialize;

/// Directive names that are recognised.
pub const KNOWN_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// One recognised parser directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name (`syntax`, `escape` or `check`).
    pub name: String,
    /// Value with surrounding whitespace removed.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A directive is repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("only one {name} parser directive can be used")]
pub struct DuplicateDirective {
    /// The repeated directive.
    pub name: String,
    /// 1-based line of the repetition.
    pub line: usize,
}

fn is_re_space(ch: char) -> bool {
    matches!(ch, ' ' | '\t' | '\n' | '\u{c}' | '\r')
}

/// Match `<prefix>\s*name\s*=\s*value\s*$`; returns (name as written, value).
pub fn match_directive<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?.trim_start_matches(is_re_space);
    let mut chars = rest.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_end = chars
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(rest.len(), |(i, _)| i);
    let name = rest.get(..name_end)?;
    let after_name = rest.get(name_end..)?.trim_start_matches(is_re_space);
    let raw_value = after_name.strip_prefix('=')?;
    let value = raw_value
        .trim_start_matches(is_re_space)
        .trim_end_matches(is_re_space);
    if !value.is_empty() {
        return Some((name, value));
    }
    // `(.+?)` needs one character: a whitespace-only value keeps its last blank.
    let last = raw_value.char_indices().last()?;
    Some((name, raw_value.get(last.0..)?))
}

/// Incremental directive recogniser fed one line at a time.
#[derive(Debug, Clone, Default)]
pub struct DirectiveParser {
    line: usize,
    done: bool,
    prefix: &'static str,
    parsed: Vec<Directive>,
}

impl DirectiveParser {
    /// A parser for `#` directives.
    pub fn new() -> Self {
        Self::with_prefix("#")
    }

    /// A parser for directives behind another comment prefix (e.g. `//`).
    pub fn with_prefix(prefix: &'static str) -> Self {
        DirectiveParser {
            line: 0,
            done: false,
            prefix,
            parsed: Vec::new(),
        }
    }

    fn starting_at_line(mut self, line: usize) -> Self {
        self.line = line;
        self
    }

    /// Feed the next line. Returns the directive it holds, if any.
    pub fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, DuplicateDirective> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = match_directive(line, self.prefix) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN_DIRECTIVES.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.parsed.iter().any(|d| d.name == name) {
            return Err(DuplicateDirective {
                name,
                line: self.line,
            });
        }
        let directive = Directive {
            name,
            value: value.to_string(),
            line: self.line,
        };
        self.parsed.push(directive.clone());
        Ok(Some(directive))
    }

    /// True once a non-directive line was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Directives recognised so far.
    pub fn directives(&self) -> &[Directive] {
        &self.parsed
    }
}

fn lines_of(input: &str) -> impl Iterator<Item = &str> {
    input
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l))
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

fn parse_all_with(
    input: &str,
    mut parser: DirectiveParser,
) -> Result<Vec<Directive>, DuplicateDirective> {
    for line in lines_of(input) {
        if parser.is_done() {
            break;
        }
        parser.parse_line(line)?;
    }
    Ok(parser.parsed)
}

/// All `#` directives at the top of `input`, in order. A repeated directive is an error.
pub fn parse_all(input: &str) -> Result<Vec<Directive>, DuplicateDirective> {
    parse_all_with(input, DirectiveParser::new())
}

/// Result of [`detect_syntax`] / [`parse_directive`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DirectiveLookup {
    /// Whether the directive was found.
    pub found: bool,
    /// The full directive value.
    pub cmdline: String,
    /// The first space-separated token of the value.
    pub reference: String,
    /// 1-based line (0 for the JSON form).
    pub start_line: usize,
    /// 1-based line (0 for the JSON form).
    pub end_line: usize,
}

fn lookup(key: &str, input: &str, any_format: bool) -> DirectiveLookup {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let (input, first_line) = if input.starts_with("#!") {
        match input.split_once('\n') {
            Some((_, rest)) => (rest, 1),
            None => ("", 1),
        }
    } else {
        (input, 0)
    };
    let found = |d: &Directive| {
        let reference = d.value.split(' ').next().unwrap_or("").to_string();
        DirectiveLookup {
            found: true,
            cmdline: d.value.clone(),
            reference,
            start_line: d.line,
            end_line: d.line,
        }
    };
    let prefixes: &[&'static str] = if any_format { &["#", "//"] } else { &["#"] };
    for prefix in prefixes {
        let parser = DirectiveParser::with_prefix(prefix).starting_at_line(first_line);
        if let Ok(directives) = parse_all_with(input, parser)
            && let Some(d) = directives.iter().find(|d| d.name == key)
        {
            return found(d);
        }
    }
    if any_format
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(input)
        && let Some(serde_json::Value::String(value)) = map.get(key)
    {
        return DirectiveLookup {
            found: true,
            cmdline: value.clone(),
            reference: value.clone(),
            start_line: first_line,
            end_line: first_line,
        };
    }
    DirectiveLookup::default()
}

/// Find the `syntax` directive: `#` comments, then `//` comments, then a JSON
/// object with a string `syntax` member. A leading `#!` line is skipped.
pub fn detect_syntax(input: &str) -> DirectiveLookup {
    lookup("syntax", input, true)
}

/// Find directive `key` among the leading `#` comments only.
pub fn parse_directive(key: &str, input: &str) -> DirectiveLookup {
    lookup(key, input, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_directive_syntax() {
        assert_eq!(match_directive("# EScape = ` ", "#"), Some(("EScape", "`")));
        assert_eq!(match_directive("# smth", "#"), None);
        assert_eq!(match_directive("#1a=b", "#"), None);
    }

    #[test]
    fn repeat_is_error() {
        assert!(parse_all("# escape=`\n# escape=\\\n").is_err());
    }
}
