//! The word lexer: quote removal, escapes, `$var` / `${var...}` expansion and
//! word splitting, following BuildKit's `shell.Lex` step by step.

use std::collections::BTreeSet;

use crate::env::Env;
use crate::error::{ExpandError, ExpandErrorKind};
use crate::pattern::{substitute, trim_prefix, trim_suffix};
use crate::unicode::{is_digit, is_letter, is_space};

/// How deeply `${...}` may nest inside modifier words before expansion gives
/// up with [`ExpandErrorKind::TooDeep`] (BuildKit has no limit; this one
/// keeps hostile input from exhausting the stack).
pub const MAX_NESTING_DEPTH: usize = 100;

const BYTE_ORDER_MARK: char = '\u{feff}';

/// A configured lexer. Cheap to create and to share (`&self` methods only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    skip_unset: bool,
}

/// The result of [`Lexer::expand_word_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Names that were looked up and found set (possibly empty).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and found unset.
    pub unmatched: BTreeSet<String>,
}

impl Lexer {
    /// A lexer with Docker's default options: quotes are removed and unset
    /// variables expand to the empty string. `escape` is the Dockerfile escape
    /// character, `\` or `` ` ``.
    pub fn new(escape: char) -> Self {
        Self::with_options(escape, false, false)
    }

    /// A lexer with explicit options: `raw_quotes` keeps the quote characters
    /// in the output, `skip_unset` leaves references to unset variables
    /// (`$x`, `${x}`, `${x:-w}`, ...) in the output as written.
    pub fn with_options(escape: char, raw_quotes: bool, skip_unset: bool) -> Self {
        Self {
            escape,
            raw_quotes,
            skip_unset,
        }
    }

    /// The escape character this lexer was built with.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` as one word: no splitting, whitespace is kept.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        Ok(self.expand_word_with_matches(word, env)?.value)
    }

    /// Expands `word` and splits the result into words on unquoted
    /// whitespace (whitespace coming from quoted text or escapes is kept).
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        let mut state = WordState::new(self, word, env);
        let (_, words) = state.process_top()?;
        Ok(words)
    }

    /// Expands `word` as one word and reports which variables were looked up.
    pub fn expand_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ExpandError> {
        let mut state = WordState::new(self, word, env);
        let (value, _) = state.process_top()?;
        Ok(Expansion {
            value,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }
}

/// Internal failure before the word is attached.
struct Failure {
    kind: ExpandErrorKind,
    message: String,
    offset: usize,
}

type Step<T> = Result<T, Failure>;

/// Accumulates the split words (BuildKit's `wordsStruct`).
#[derive(Default)]
struct WordSplitter {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl WordSplitter {
    fn add_char(&mut self, ch: char) {
        if is_space(ch) {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

/// The state of one expansion (BuildKit's `shellWord`).
struct WordState<'a> {
    lexer: &'a Lexer,
    source: &'a str,
    position: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> WordState<'a> {
    fn new(lexer: &'a Lexer, source: &'a str, env: &'a dyn Env) -> Self {
        // Go's text/scanner ignores a byte order mark at the very start.
        let position = if source.starts_with(BYTE_ORDER_MARK) {
            BYTE_ORDER_MARK.len_utf8()
        } else {
            0
        };
        Self {
            lexer,
            source,
            position,
            env,
            raw_escapes: false,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.source.get(self.position..)?.chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.position += ch.len_utf8();
        Some(ch)
    }

    fn fail(&self, kind: ExpandErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            offset: self.position,
        }
    }

    fn process_top(&mut self) -> Result<(String, Vec<String>), ExpandError> {
        self.process_stop_on(None, false)
            .map_err(|failure| ExpandError {
                kind: failure.kind,
                message: failure.message,
                word: self.source.to_owned(),
                offset: failure.offset,
            })
    }

    /// Processes text up to `stop` (consumed) or the end of the word.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let outcome = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        outcome
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = WordSplitter::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let expanded = self.process_dollar()?;
                    result.push_str(&expanded);
                    words.add_string(&expanded);
                }
                '\'' | '"' => {
                    let quoted = if ch == '\'' {
                        self.process_single_quote()?
                    } else {
                        self.process_double_quote()?
                    };
                    result.push_str(&quoted);
                    words.add_raw_string(&quoted);
                }
                _ => {
                    self.next();
                    let mut literal = ch;
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else {
                            break;
                        };
                        literal = escaped;
                        words.add_raw_char(escaped);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(literal);
                }
            }
        }
        match stop {
            Some(stop) => Err(self.fail(
                ExpandErrorKind::Unterminated,
                format!("unexpected end of statement while looking for matching {stop}"),
            )),
            None => Ok((result, words.finish())),
        }
    }

    /// `'...'`: everything literal up to the next `'`.
    fn process_single_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(self.fail(
                        ExpandErrorKind::Unterminated,
                        "unexpected end of statement while looking for matching single-quote",
                    ));
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character only escapes `"`, `$` and
    /// itself, and is kept before anything else.
    fn process_double_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(self.fail(
                        ExpandErrorKind::Unterminated,
                        "unexpected end of statement while looking for matching double-quote",
                    ));
                }
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let expanded = self.process_dollar()?;
                    result.push_str(&expanded);
                }
                Some(ch) => {
                    self.next();
                    let mut literal = ch;
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                self.next();
                                literal = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(literal);
                }
            }
        }
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(value) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_owned());
                }
                Some(value.to_owned())
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_owned());
                }
                None
            }
        }
    }

    /// `$name`, `${name}` and `${name<modifier>...}`; the scanner is at `$`.
    fn process_dollar(&mut self) -> Step<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => {
                return Err(self.fail(ExpandErrorKind::MissingBrace, "syntax error: missing '}'"));
            }
            Some('{' | '}' | ':') => {
                return Err(self.fail(
                    ExpandErrorKind::BadSubstitution,
                    "syntax error: bad substitution",
                ));
            }
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(self.fail(
                ExpandErrorKind::TooDeep,
                format!("substitutions nested more than {MAX_NESTING_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        let outcome = self.process_braced();
        self.depth -= 1;
        outcome
    }

    /// The part of `${...}` after the `{`.
    fn process_braced(&mut self) -> Step<String> {
        let name = self.process_name();
        let first = self.next();
        let mut modifier_text = first.map_or_else(|| "\u{fffd}".to_owned(), String::from);
        match first {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut null_is_unset = false;
                let mut modifier = first;
                if first == Some(':') {
                    null_is_unset = true;
                    modifier = self.next();
                    modifier_text.push(modifier.unwrap_or('\u{fffd}'));
                }
                let is_pattern = matches!(modifier, Some('#' | '%'));
                if null_is_unset && is_pattern {
                    return Err(self.unsupported(&modifier_text));
                }
                let word = self.braced_word(is_pattern)?;
                let value = self.lookup(&name);
                if self.lexer.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier_text}{word}}}"));
                }
                let is_empty_or_unset = match &value {
                    None => true,
                    Some(text) => null_is_unset && text.is_empty(),
                };
                match modifier {
                    Some('-') => Ok(if is_empty_or_unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if is_empty_or_unset {
                        String::new()
                    } else {
                        word
                    }),
                    Some('?') => match value {
                        None => Err(self.required(&name, &word, "is not allowed to be unset")),
                        Some(text) if null_is_unset && text.is_empty() => {
                            Err(self.required(&name, &word, "is not allowed to be empty"))
                        }
                        Some(text) => Ok(text),
                    },
                    Some(marker @ ('#' | '%')) => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(marker) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let trimmed = if marker == '%' {
                            trim_suffix(pattern, &value, greedy)
                        } else {
                            trim_prefix(pattern, &value, greedy)
                        };
                        trimmed
                            .map_err(|message| self.fail(ExpandErrorKind::InvalidPattern, message))
                    }
                    _ => Err(self.unsupported(&modifier_text)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((text, _)) => text,
                    Err(failure) if self.peek().is_none() => {
                        return Err(Failure {
                            kind: ExpandErrorKind::MissingBrace,
                            message: "syntax error: missing '/' in ${}".to_owned(),
                            offset: failure.offset,
                        });
                    }
                    Err(failure) => return Err(failure),
                };
                let replacement = self.braced_word(true)?;
                let value = self.lookup(&name);
                let Some(value) = value else {
                    if self.lexer.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return substitute(&pattern, &replacement, "", replace_all)
                        .map_err(|message| self.fail(ExpandErrorKind::InvalidPattern, message));
                };
                substitute(&pattern, &replacement, &value, replace_all)
                    .map_err(|message| self.fail(ExpandErrorKind::InvalidPattern, message))
            }
            // Go reports this as an unsupported modifier; "missing }" says
            // what is actually wrong.
            None => Err(self.fail(ExpandErrorKind::MissingBrace, "syntax error: missing '}'")),
            _ => Err(self.unsupported(&modifier_text)),
        }
    }

    /// The modifier word up to the closing `}`.
    fn braced_word(&mut self, raw_escapes: bool) -> Step<String> {
        match self.process_stop_on(Some('}'), raw_escapes) {
            Ok((text, _)) => Ok(text),
            Err(failure) if self.peek().is_none() => Err(Failure {
                kind: ExpandErrorKind::MissingBrace,
                message: "syntax error: missing '}'".to_owned(),
                offset: failure.offset,
            }),
            Err(failure) => Err(failure),
        }
    }

    fn unsupported(&self, modifier_text: &str) -> Failure {
        self.fail(
            ExpandErrorKind::UnsupportedModifier,
            format!("unsupported modifier ({modifier_text}) in substitution"),
        )
    }

    fn required(&self, name: &str, word: &str, default_message: &str) -> Failure {
        let message = if word.is_empty() {
            default_message
        } else {
            word
        };
        self.fail(ExpandErrorKind::Required, format!("{name}: {message}"))
    }

    /// A variable name: a run of digits, one special parameter character, or
    /// letters, digits and `_`.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.peek().filter(|&c| is_digit(c)) {
                    self.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(ch) {
                self.next();
                name.push(ch);
                return name;
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// POSIX special parameters (never set in a Dockerfile).
fn is_special_parameter(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env() -> BTreeMap<String, String> {
        crate::build_env(["A=hello world", "E=", "P=/a/b/c.txt"])
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        assert_eq!(lexer.expand_word("a`$A", &env()).unwrap(), "a$A");
        assert_eq!(lexer.expand_word("a\\b", &env()).unwrap(), "a\\b");
        assert_eq!(lexer.expand_word("\"x`\"y\"", &env()).unwrap(), "x\"y");
    }

    #[test]
    fn raw_quotes_and_skip_unset() {
        let lexer = Lexer::with_options('\\', true, true);
        assert_eq!(
            lexer
                .expand_word("'a' \"$A\" $U ${U} ${U:-x}", &env())
                .unwrap(),
            "'a' \"hello world\" $U ${U} ${U:-x}"
        );
    }

    #[test]
    fn error_carries_offset() {
        let error = Lexer::new('\\').expand_word("ab${x", &env()).unwrap_err();
        assert_eq!(error.kind, ExpandErrorKind::MissingBrace);
        assert_eq!(error.offset, 5);
        let error = Lexer::new('\\').expand_word("한${", &env()).unwrap_err();
        assert_eq!(error.offset, 5);
        assert_eq!(error.char_offset(), 3);
        let error = Lexer::new('\\').expand_word("x'abc", &env()).unwrap_err();
        assert_eq!(error.kind, ExpandErrorKind::Unterminated);
    }

    #[test]
    fn pattern_modifiers() {
        let lexer = Lexer::new('\\');
        assert_eq!(lexer.expand_word("${P##*/}", &env()).unwrap(), "c.txt");
        assert_eq!(lexer.expand_word("${P%/*}", &env()).unwrap(), "/a/b");
        assert_eq!(lexer.expand_word("${P%%/*}", &env()).unwrap(), "");
        assert_eq!(lexer.expand_word("${P/b/x}", &env()).unwrap(), "/a/x/c.txt");
        assert!(lexer.expand_word("${P#\\q}", &env()).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 10_000;
        let word = format!("{}x{}", "${a:-".repeat(depth), "}".repeat(depth));
        let error = Lexer::new('\\').expand_word(&word, &env()).unwrap_err();
        assert_eq!(error.kind, ExpandErrorKind::TooDeep);
        let word = format!("{}x{}", "${a:-".repeat(50), "}".repeat(50));
        assert_eq!(Lexer::new('\\').expand_word(&word, &env()).unwrap(), "x");
    }

    #[test]
    fn leading_bom_is_ignored() {
        assert_eq!(
            Lexer::new('\\')
                .expand_word("\u{feff}a\u{feff}", &env())
                .unwrap(),
            "a\u{feff}"
        );
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        let lexer = Lexer::new('\\');
        assert_eq!(
            lexer.expand_words("x$A \"$A\"", &env()).unwrap(),
            vec!["xhello", "world", "hello world"]
        );
        assert!(lexer.expand_words("''", &env()).unwrap().is_empty());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn special_heavy_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => prop::sample::select(vec![
                "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "`", "'", "\"", " ",
                "A", "E", "U", "x", "0", "한", "\u{feff}", "[", "]", "$0", "\n",
            ])
            .prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn never_panics(word in special_heavy_text(), arbitrary in ".{0,40}") {
            let env = crate::build_env(["A=a b", "E=", "X=*x?", "Y=$0"]);
            for escape in ['\\', '`'] {
                for lexer in [Lexer::new(escape), Lexer::with_options(escape, true, true)] {
                    for text in [&word, &arbitrary] {
                        let single = lexer.expand_word(text, &env);
                        let _ = lexer.expand_words(text, &env);
                        let with_matches = lexer.expand_word_with_matches(text, &env);
                        prop_assert_eq!(single.is_ok(), with_matches.is_ok());
                        if let Err(error) = single {
                            prop_assert!(error.offset <= text.len());
                            prop_assert!(text.is_char_boundary(error.offset));
                        }
                    }
                }
            }
        }
    }
}
