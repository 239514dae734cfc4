//! Go's `filepath.Match` for one path component, which is how Docker matches
//! wildcards in COPY and ADD sources.

/// Why a pattern cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed wildcard pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Whether `pattern` contains any of Go's glob metacharacters (`*`, `?`, `[`, `\`).
pub fn has_meta(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '\\'])
}

/// Matches `name` against `pattern` with Go's `filepath.Match` rules on a
/// single component: `*` matches any run of characters, `?` one character,
/// `[...]`/`[^...]` a class with ranges, and `\` escapes the next character.
pub fn match_component(pattern: &str, name: &str) -> Result<bool, PatternError> {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let err = |reason| PatternError {
        pattern: pattern.iter().collect(),
        reason,
    };
    // Classic backtracking over the last star: linear in practice.
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(&pc) = pattern.get(p) {
            match pc {
                '*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                '?' => {
                    if n < name.len() {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                '[' => {
                    let (matched, next) =
                        match_class(&pattern, p, name.get(n).copied()).map_err(&err)?;
                    if matched {
                        p = next;
                        n += 1;
                        continue;
                    }
                }
                '\\' => {
                    let Some(&escaped) = pattern.get(p + 1) else {
                        return Err(err("trailing backslash"));
                    };
                    if name.get(n) == Some(&escaped) {
                        p += 2;
                        n += 1;
                        continue;
                    }
                }
                literal => {
                    if name.get(n) == Some(&literal) {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
            }
        } else if n == name.len() {
            return Ok(true);
        }
        // Mismatch: retry from the last star, letting it swallow one more char.
        match star {
            Some((sp, sn)) if sn < name.len() => {
                star = Some((sp, sn + 1));
                p = sp + 1;
                n = sn + 1;
            }
            _ => {
                // Go validates the rest of the pattern even on a mismatch.
                validate(&pattern).map_err(err)?;
                return Ok(false);
            }
        }
    }
}

/// Checks the whole pattern's syntax (classes closed, no trailing escape).
fn validate(pattern: &[char]) -> Result<(), &'static str> {
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        match c {
            '\\' => {
                if pattern.get(i + 1).is_none() {
                    return Err("trailing backslash");
                }
                i += 2;
            }
            '[' => {
                let (_, next) = match_class(pattern, i, Some('\0'))?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Matches one character against the class starting at `pattern[start] == '['`.
/// Returns whether it matched and the index just after the closing `]`.
fn match_class(
    pattern: &[char],
    start: usize,
    ch: Option<char>,
) -> Result<(bool, usize), &'static str> {
    let mut i = start + 1;
    let negated = pattern.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&c) = pattern.get(i) else {
            return Err("unterminated character class");
        };
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let (lo, after_lo) = class_char(pattern, i)?;
        let (hi, after) = if pattern.get(after_lo) == Some(&'-') {
            let (hi, after_hi) = class_char(pattern, after_lo + 1)?;
            (hi, after_hi)
        } else {
            (lo, after_lo)
        };
        if let Some(ch) = ch
            && lo <= ch
            && ch <= hi
        {
            matched = true;
        }
        i = after;
    }
    Ok((ch.is_some() && matched != negated, i))
}

fn class_char(pattern: &[char], i: usize) -> Result<(char, usize), &'static str> {
    match pattern.get(i) {
        None => Err("unterminated character class"),
        Some('\\') => pattern
            .get(i + 1)
            .map(|&c| (c, i + 2))
            .ok_or("trailing backslash"),
        Some('-') | Some(']') => Err("bad range in character class"),
        Some(&c) => Ok((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_table() {
        // Cases from Go's documented filepath.Match behaviour.
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*b*c*d*e*", "axbxcxdxe", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("a\\", "a", Err(())),
            ("*x", "xxx", Ok(true)),
            ("arr[[]0].txt", "arr[0].txt", Ok(true)),
            ("index.?s", "index.js", Ok(true)),
        ];
        let mut failures = Vec::new();
        for (pattern, name, want) in cases {
            let got = match_component(pattern, name).map_err(|_| ());
            if &got != want {
                failures.push(format!(
                    "{pattern:?} vs {name:?}: got {got:?}, want {want:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn meta_detection() {
        assert!(has_meta("*.png"));
        assert!(has_meta("a[0]"));
        assert!(!has_meta("plain/name.txt"));
    }
}
