//! Shell patterns inside `${v#p}`, `${v%p}` and `${v/p/r}`: conversion to a
//! regular expression and the trimming/substitution operations, with the
//! same results as BuildKit (which uses Go's `regexp`).
//!
//! Only `*`, `?` and backslash escapes are wildcards; brackets are literal.

use regex::Regex;

use crate::unicode::{is_digit, is_letter};

const BYTE_ORDER_MARK: char = '\u{feff}';

/// Converts a shell pattern into a regex. `greedy` selects `.*` over `.*?`
/// for `*`; `anchored` pins the match to the start of the text.
///
/// The escape character here is always `\` (whatever the Dockerfile escape
/// is), `\}` and `\/` stand for the plain character, and any other escaped
/// character than `*`, `?` or `\` is an error.
fn shell_pattern_to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    // Go's text/scanner drops a byte order mark at the very start.
    let pattern = pattern.strip_prefix(BYTE_ORDER_MARK).unwrap_or(pattern);
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(token) = chars.next() {
        match token {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(escaped);
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\' at end of pattern".to_owned()),
                }
            }
            other => {
                let mut buffer = [0u8; 4];
                out.push_str(&regex::escape(other.encode_utf8(&mut buffer)));
            }
        }
    }
    Regex::new(&out).map_err(|error| error.to_string())
}

fn pattern_error(pattern: &str, detail: &str) -> String {
    format!("invalid pattern ({pattern}) in substitution: {detail}")
}

/// `${value#pattern}` (shortest) / `${value##pattern}` (`greedy`, longest).
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let regex =
        shell_pattern_to_regex(pattern, greedy, true).map_err(|e| pattern_error(pattern, &e))?;
    Ok(match regex.find(value) {
        Some(found) => value.get(found.end()..).unwrap_or_default().to_owned(),
        None => value.to_owned(),
    })
}

/// Reverses a pattern by characters while keeping `\x` escape pairs in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; chars.len()];
    let Some(last) = chars.len().checked_sub(1) else {
        return String::new();
    };
    let mut index = 0;
    while index <= last {
        let token = chars.get(index).copied().unwrap_or_default();
        let out_index = last - index;
        if token == '\\' && index != last {
            if let Some(slot) = out_index.checked_sub(1).and_then(|i| out.get_mut(i)) {
                *slot = token;
            }
            if let Some(slot) = out.get_mut(out_index) {
                *slot = chars.get(index + 1).copied().unwrap_or_default();
            }
            index += 2;
        } else {
            if let Some(slot) = out.get_mut(out_index) {
                *slot = token;
            }
            index += 1;
        }
    }
    out.into_iter().collect()
}

fn reverse_string(text: &str) -> String {
    text.chars().rev().collect()
}

/// `${value%pattern}` (shortest) / `${value%%pattern}` (`greedy`, longest):
/// reverse both sides and trim a prefix.
pub(crate) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed =
        trim_prefix(&reverse_pattern(pattern), &reverse_string(value), greedy).map_err(|_| {
            let detail = shell_pattern_to_regex(&reverse_pattern(pattern), greedy, true)
                .err()
                .unwrap_or_default();
            pattern_error(&reverse_pattern(pattern), &detail)
        })?;
    Ok(reverse_string(&reversed))
}

/// `${value/pattern/replacement}` (first match) or `${value//pattern/replacement}`
/// (`replace_all`). Like Go's `ReplaceAllString`, replace-all expands `$0`
/// style references in the replacement; replacing the first match does not.
pub(crate) fn substitute(
    pattern: &str,
    replacement: &str,
    value: &str,
    replace_all: bool,
) -> Result<String, String> {
    let regex =
        shell_pattern_to_regex(pattern, true, false).map_err(|e| pattern_error(pattern, &e))?;
    if !replace_all {
        return Ok(match regex.find(value) {
            Some(found) => {
                let mut out = String::with_capacity(value.len() + replacement.len());
                out.push_str(value.get(..found.start()).unwrap_or_default());
                out.push_str(replacement);
                out.push_str(value.get(found.end()..).unwrap_or_default());
                out
            }
            None => value.to_owned(),
        });
    }
    Ok(replace_all_like_go(&regex, value, replacement))
}

/// Go's `Regexp.ReplaceAllString` loop: an empty match right after a
/// previous match is not replaced, and the search always advances.
fn replace_all_like_go(regex: &Regex, source: &str, template: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut last_match_end = 0;
    let mut search_pos = 0;
    while search_pos <= source.len() {
        let Some(found) = regex.find_at(source, search_pos) else {
            break;
        };
        out.push_str(
            source
                .get(last_match_end..found.start())
                .unwrap_or_default(),
        );
        if found.end() > last_match_end || found.start() == 0 {
            expand_go_template(&mut out, template, found.as_str());
        }
        last_match_end = found.end();
        let width = source
            .get(search_pos..)
            .and_then(|rest| rest.chars().next())
            .map_or(0, char::len_utf8);
        if search_pos + width > found.end() {
            search_pos += width;
        } else if search_pos + 1 > found.end() {
            search_pos += 1;
        } else {
            search_pos = found.end();
        }
    }
    out.push_str(source.get(last_match_end..).unwrap_or_default());
    out
}

/// Go's `Regexp.Expand` for a regex without capture groups: `$$` is `$`,
/// `$0`/`${0}` is the whole match, any other valid `$name`/`${name}` is
/// empty, and a malformed reference keeps its `$`.
fn expand_go_template(out: &mut String, template: &str, whole_match: &str) {
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('$') {
        out.push_str(before);
        rest = after;
        if let Some(tail) = rest.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        match extract_group_name(rest) {
            Some((name, tail)) => {
                if name == "0" {
                    out.push_str(whole_match);
                }
                rest = tail;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Parses `name` or `{name}` at the start of `text` (Go's `extract`).
fn extract_group_name(text: &str) -> Option<(&str, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let name_len: usize = body
        .chars()
        .take_while(|&c| is_letter(c) || is_digit(c) || c == '_')
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let name = body.get(..name_len)?;
    let mut tail = body.get(name_len..)?;
    if braced {
        tail = tail.strip_prefix('}')?;
    }
    Some((name, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_keeps_escape_pairs() {
        assert_eq!(reverse_pattern("a\\*b"), "b\\*a");
        assert_eq!(reverse_pattern("\\**\\*"), "\\**\\*");
        assert_eq!(reverse_pattern(""), "");
        assert_eq!(reverse_pattern("ab\\"), "\\ba");
    }

    #[test]
    fn trims() {
        assert_eq!(trim_prefix("*x", "xxyy", true).unwrap(), "yy");
        assert_eq!(trim_prefix("*x", "xxyy", false).unwrap(), "xyy");
        assert_eq!(trim_suffix("y*", "xxyy", false).unwrap(), "xxy");
        assert_eq!(trim_suffix("y*", "xxyy", true).unwrap(), "xx");
        assert!(trim_prefix("\\a", "x", true).is_err());
        assert!(trim_prefix("\\", "x", true).is_err());
    }

    #[test]
    fn go_template_expansion() {
        let mut out = String::new();
        expand_go_template(&mut out, "<$0|${0}|$1|$$|$|$x|${x|$.>", "M");
        assert_eq!(out, "<M|M||$|$||${x|$.>");
    }

    #[test]
    fn replace_all_empty_pattern_like_go() {
        // Go: regexp.MustCompile("").ReplaceAllString("ab", "-") == "-a-b-"
        assert_eq!(substitute("", "-", "ab", true).unwrap(), "-a-b-");
        assert_eq!(substitute("a*", "-", "baaac", true).unwrap(), "b-");
        assert_eq!(
            substitute("a", "[$0]", "banana", true).unwrap(),
            "b[a]n[a]n[a]"
        );
        assert_eq!(
            substitute("a", "[$0]", "banana", false).unwrap(),
            "b[$0]nana"
        );
    }
}
