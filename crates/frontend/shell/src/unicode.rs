//! Character classes with Go's `unicode` package semantics.

use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn is_letter(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    ch.general_category_group() == GeneralCategoryGroup::Letter
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn is_digit(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_digit();
    }
    ch.general_category() == GeneralCategory::DecimalNumber
}

/// Go's `unicode.IsSpace`; it agrees with Unicode `White_Space`.
pub(crate) fn is_space(ch: char) -> bool {
    ch.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_general_category() {
        assert!(is_letter('한'));
        assert!(is_letter('é'));
        assert!(!is_letter('_'));
        // U+0345 is Alphabetic but a mark (Mn), not a letter.
        assert!(!is_letter('\u{345}'));
        assert!(is_digit('٣'));
        // U+2163 (Roman numeral four) is Nl, not a decimal digit.
        assert!(!is_digit('\u{2163}'));
        assert!(is_space('\u{a0}'));
        assert!(is_space('\u{85}'));
    }
}
