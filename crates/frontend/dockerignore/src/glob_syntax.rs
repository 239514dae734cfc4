//! The syntax check Docker applies when a pattern list is built: a pattern is
//! rejected exactly when Go's `filepath.Match` would report `ErrBadPattern`
//! for it (on Unix). That check parses every chunk of the pattern, so it
//! comes down to: each `[...]` class is complete and well formed and no `\`
//! is left without a character to escape. Reversed ranges such as `[z-a]`
//! are NOT rejected here.

/// Whether `pattern` passes `filepath.Match`'s syntax check.
pub(crate) fn is_valid_glob(pattern: &str) -> bool {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        while let [b'*', tail @ ..] = rest {
            rest = tail;
        }
        let (chunk, tail) = split_chunk(rest);
        if !is_valid_chunk(chunk) {
            return false;
        }
        rest = tail;
    }
    true
}

/// Splits off the text up to the next `*` that is outside a class
/// (Go's `scanChunk`, after the leading stars were removed).
fn split_chunk(pattern: &[u8]) -> (&[u8], &[u8]) {
    let mut in_range = false;
    let mut index = 0;
    while let Some(&byte) = pattern.get(index) {
        match byte {
            b'\\' if index + 1 < pattern.len() => index += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        index += 1;
    }
    pattern.split_at(index.min(pattern.len()))
}

/// Go's `matchChunk` syntax rules, without reading any name.
fn is_valid_chunk(mut chunk: &[u8]) -> bool {
    while let Some((&first, tail)) = chunk.split_first() {
        match first {
            b'[' => {
                chunk = tail;
                if let [b'^', tail @ ..] = chunk {
                    chunk = tail;
                }
                let mut ranges = 0;
                loop {
                    if let [b']', tail @ ..] = chunk
                        && ranges > 0
                    {
                        chunk = tail;
                        break;
                    }
                    let Some(after_low) = class_char(chunk) else {
                        return false;
                    };
                    chunk = after_low;
                    if let [b'-', tail @ ..] = chunk {
                        let Some(after_high) = class_char(tail) else {
                            return false;
                        };
                        chunk = after_high;
                    }
                    ranges += 1;
                }
            }
            b'\\' => {
                // The escaped character must exist; it is then a literal byte.
                let [_, tail @ ..] = tail else {
                    return false;
                };
                chunk = tail;
            }
            _ => chunk = tail,
        }
    }
    true
}

/// Go's `getEsc`: one (possibly escaped) class character; the class must
/// continue after it. Returns the text after the character.
fn class_char(chunk: &[u8]) -> Option<&[u8]> {
    let mut chunk = match chunk.first() {
        None | Some(b'-' | b']') => return None,
        Some(_) => chunk,
    };
    if let [b'\\', tail @ ..] = chunk {
        if tail.is_empty() {
            return None;
        }
        chunk = tail;
    }
    let width = utf8_width(chunk)?;
    let rest = chunk.get(width..)?;
    if rest.is_empty() { None } else { Some(rest) }
}

/// The byte length of the UTF-8 sequence at the start of `bytes`.
fn utf8_width(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.first()?;
    let width = match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    (bytes.len() >= width).then_some(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_errors() {
        for bad in [
            "[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "a\\", "[a-", "[\\",
            "[a\\]", "*[", "a*b[", "[]",
        ] {
            assert!(!is_valid_glob(bad), "{bad:?} should be rejected");
        }
        for good in [
            "",
            "*",
            "**",
            "a[b-d]e",
            "[\\]a]",
            "[\\-]",
            "[x\\-]",
            "[Local-Only]",
            "[a-ζ]*",
            "a\\*b",
            "]",
            "a]b",
            "[!a]",
            "[*]",
            "[[:alpha:]]",
            "\\\\",
        ] {
            assert!(is_valid_glob(good), "{good:?} should be accepted");
        }
    }
}
