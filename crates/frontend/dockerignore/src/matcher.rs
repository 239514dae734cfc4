//! The pattern matcher: Docker's `patternmatcher.New` plus
//! `MatchesOrParentMatches` ("parent" semantics).

use regex::Regex;

use crate::clean::{clean_path, dir_of};
use crate::glob_syntax::is_valid_glob;
use crate::go_regex;

const BYTE_ORDER_MARK: char = '\u{feff}';

/// A pattern list that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A pattern that is just `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// A pattern with malformed glob syntax (for example an unclosed `[`).
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The cleaned pattern (without its `!`).
        pattern: String,
    },
}

/// A failure while matching a path: a pattern that passed the list-building
/// check cannot be turned into a matcher (for example `[Local-Only]`, whose
/// range `l-O` is reversed). It fails every time it is evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {pattern:?}: {detail}")]
pub struct MatchError {
    /// The cleaned pattern (without its `!`).
    pub pattern: String,
    /// Why it could not be compiled.
    pub detail: String,
}

/// How one pattern is matched (patternmatcher's match types).
#[derive(Debug, Clone)]
enum Compiled {
    /// No wildcard: the path must equal the pattern.
    Exact,
    /// `prefix**` with no other wildcard.
    Prefix(String),
    /// `**suffix` with no other wildcard.
    Suffix(String),
    /// Anything else, through a regular expression.
    Regex(Regex),
    /// The regular expression did not compile.
    Broken(String),
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    compiled: Compiled,
}

/// Docker's `.dockerignore` matcher. Build it from the output of
/// [`crate::read_patterns`] (or any pattern list) and ask [`Self::matches`]
/// whether a context-relative path is excluded.
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Builds a matcher. Each pattern is trimmed (empty ones are dropped),
    /// cleaned like `path.Clean`, a leading `!` makes it an exception, and
    /// its glob syntax is checked.
    pub fn new<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut compiled = Vec::new();
        let mut exclusions = false;
        for pattern in patterns {
            let trimmed = pattern.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            let cleaned = clean_path(trimmed);
            let (exclusion, body) = match cleaned.strip_prefix('!') {
                Some("") => return Err(PatternError::IllegalExclusion),
                Some(body) => (true, body.to_owned()),
                None => (false, cleaned),
            };
            exclusions |= exclusion;
            if !is_valid_glob(&body) {
                return Err(PatternError::BadPattern { pattern: body });
            }
            compiled.push(Pattern {
                compiled: compile(&body),
                cleaned: body,
                exclusion,
            });
        }
        Ok(Self {
            patterns: compiled,
            exclusions,
        })
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// The number of patterns kept (after dropping empty ones).
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether no pattern was kept.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The kept patterns as Docker prints them: cleaned, with `!` re-added
    /// for exceptions.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|pattern| {
                if pattern.exclusion {
                    format!("!{}", pattern.cleaned)
                } else {
                    pattern.cleaned.clone()
                }
            })
            .collect()
    }

    /// Whether `path` (relative to the context root, `/`-separated, used as
    /// given) is excluded: patterns are applied in order, a pattern applies
    /// when it matches the path or any of its parent directories, a plain
    /// pattern excludes and a `!` pattern re-includes.
    pub fn matches(&self, path: &str) -> Result<bool, MatchError> {
        let mut matched = false;
        let parent = dir_of(path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        for pattern in &self.patterns {
            // An exclusion can only change a matched path and a plain pattern
            // only an unmatched one; the others are skipped unevaluated.
            if pattern.exclusion != matched {
                continue;
            }
            let mut is_match = pattern.is_match(path)?;
            if !is_match && parent != "." {
                let mut prefix = String::with_capacity(parent.len());
                for (index, dir) in parent_dirs.iter().enumerate() {
                    if index > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(dir);
                    if pattern.is_match(&prefix).unwrap_or(false) {
                        is_match = true;
                        break;
                    }
                }
            }
            if is_match {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// For context walkers: `true` when the directory `dir_path` is excluded
    /// and no `!` pattern could re-include anything below it, so the walker
    /// may skip the whole subtree. The check is conservative: `false` means
    /// "walk it and ask about each entry".
    pub fn can_skip_dir(&self, dir_path: &str) -> bool {
        if !matches!(self.matches(dir_path), Ok(true)) {
            return false;
        }
        let dir_slash = format!("{}/", dir_path.trim_end_matches('/'));
        !self.patterns.iter().any(|pattern| {
            pattern.exclusion && {
                let prefix = literal_prefix(&pattern.cleaned);
                prefix.starts_with(&dir_slash) || dir_slash.starts_with(prefix)
            }
        })
    }
}

/// The part of a pattern before its first wildcard or escape.
fn literal_prefix(pattern: &str) -> &str {
    let end = pattern
        .find(['*', '?', '[', ']', '\\'])
        .unwrap_or(pattern.len());
    let prefix = pattern.get(..end).unwrap_or_default();
    // A pattern that starts with a BOM is matched without it.
    prefix.strip_prefix(BYTE_ORDER_MARK).unwrap_or(prefix)
}

impl Pattern {
    fn is_match(&self, path: &str) -> Result<bool, MatchError> {
        Ok(match &self.compiled {
            Compiled::Exact => path == self.cleaned,
            Compiled::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Compiled::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix
                        .strip_prefix('/')
                        .is_some_and(|without_slash| path == without_slash)
            }
            Compiled::Regex(regex) => regex.is_match(path),
            Compiled::Broken(detail) => {
                return Err(MatchError {
                    pattern: self.cleaned.clone(),
                    detail: detail.clone(),
                });
            }
        })
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// patternmatcher's `compile`: classify the pattern and, when needed, build
/// the Go regular expression, then translate it for the `regex` crate.
fn compile(pattern: &str) -> Compiled {
    let mut go = String::from("^");
    let mut detected = Detected::Exact;
    // Go's text/scanner skips a byte order mark at the start.
    let scanned = pattern.strip_prefix(BYTE_ORDER_MARK).unwrap_or(pattern);
    let mut chars = scanned.chars().peekable();
    let mut index = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        go.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    go.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if index == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                go.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                go.push_str("[^/]");
                detected = Detected::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                go.push('\\');
                go.push(ch);
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    go.push('\\');
                    go.push(escaped);
                    detected = Detected::Regex;
                }
                None => go.push('\\'),
            },
            '[' | ']' => {
                go.push(ch);
                detected = Detected::Regex;
            }
            other => go.push(other),
        }
        index += 1;
    }
    match detected {
        Detected::Exact => Compiled::Exact,
        Detected::Prefix => Compiled::Prefix(
            pattern
                .get(..pattern.len().saturating_sub(2))
                .unwrap_or_default()
                .to_owned(),
        ),
        Detected::Suffix => Compiled::Suffix(pattern.get(2..).unwrap_or_default().to_owned()),
        Detected::Regex => {
            go.push('$');
            match go_regex::translate(&go)
                .and_then(|rust| Regex::new(&rust).map_err(|error| error.to_string()))
            {
                Ok(regex) => Compiled::Regex(regex),
                Err(detail) => Compiled::Broken(detail),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str) -> bool {
        PatternMatcher::new(patterns)
            .unwrap()
            .matches(path)
            .unwrap()
    }

    #[test]
    fn match_types() {
        assert!(excluded(&["**foo"], "xfoo"));
        assert!(excluded(&["**/foo"], "foo"));
        assert!(!excluded(&["**/foo"], "xfoo"));
        assert!(excluded(&["foo/**"], "foo/bar"));
        assert!(excluded(&["a.b"], "a.b"));
        assert!(!excluded(&["a*.b"], "axxb"));
        // A trailing backslash fails Go's syntax check.
        assert!(PatternMatcher::new(["a*\\"]).is_err());
        // `[*]` becomes the Go regex `^[[^/]*]$`: a class of `[`, `^`, `/`.
        assert!(excluded(&["[*]"], "[^]"));
        assert!(!excluded(&["[*]"], "*"));
    }

    #[test]
    fn parent_semantics_and_exceptions() {
        assert!(excluded(&["a"], "a/b/c"));
        assert!(!excluded(&["a", "!a/b"], "a/b/c"));
        assert!(excluded(&["a", "!a/b", "a/b/c"], "a/b/c/d"));
    }

    #[test]
    fn broken_pattern_fails_every_time_but_only_when_evaluated() {
        let matcher = PatternMatcher::new(["[Local-Only]/"]).unwrap();
        assert!(matcher.matches("x").is_err());
        assert!(matcher.matches("x").is_err());
        // A `!` pattern is skipped while nothing is matched yet.
        let matcher = PatternMatcher::new(["![Local-Only]"]).unwrap();
        assert_eq!(matcher.matches("x"), Ok(false));
    }

    #[test]
    fn skip_dir() {
        let matcher = PatternMatcher::new(["node_modules", "build", "!build/keep"]).unwrap();
        assert!(matcher.can_skip_dir("node_modules"));
        assert!(!matcher.can_skip_dir("build"));
        assert!(!matcher.can_skip_dir("src"));
        let matcher = PatternMatcher::new(["*", "!**/*.go"]).unwrap();
        assert!(!matcher.can_skip_dir("pkg"));
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn glob_heavy_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => prop::sample::select(vec![
                "*", "**", "?", "[", "]", "^", "!", "-", "\\", "/", ".", "..", "a", "b", "z",
                "[:alpha:]", "\\d", "\\x4", "{", "$", "(", "|", " ", "é", "\u{feff}", "&&",
            ])
            .prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn never_panics(
            patterns in prop::collection::vec(glob_heavy_text(), 0..5),
            path in glob_heavy_text(),
            file in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = crate::read_patterns(&file);
            let read_back = crate::read_patterns(patterns.join("\n").as_bytes());
            for list in [patterns, read_back] {
                if let Ok(matcher) = PatternMatcher::new(&list) {
                    let first = matcher.matches(&path);
                    prop_assert_eq!(first.clone(), matcher.matches(&path));
                    let _ = matcher.can_skip_dir(&path);
                    let _ = matcher.patterns();
                }
            }
        }
    }
}
