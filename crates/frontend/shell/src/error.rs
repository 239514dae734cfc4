//! The error returned when a word cannot be expanded.

/// What went wrong while expanding a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpandErrorKind {
    /// A `'` or `"` quote, or a `${...}` section, was not closed.
    Unterminated,
    /// `${` without its closing `}` (or a `${v/p/r}` without its `/`).
    MissingBrace,
    /// `${}`, `${:...}`, `${{...}` and similar.
    BadSubstitution,
    /// A modifier Docker does not support, such as `${v=w}` or `${v:#p}`.
    UnsupportedModifier,
    /// `${v?msg}` / `${v:?msg}` on an unset (or empty) variable.
    Required,
    /// A `#`, `%` or `/` pattern that cannot be compiled.
    InvalidPattern,
    /// `${...}` nested deeper than [`crate::MAX_NESTING_DEPTH`].
    TooDeep,
}

/// An expansion failure, with the byte offset in the input word where it
/// was detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// The category of the failure.
    pub kind: ExpandErrorKind,
    /// Human-readable description (Docker's wording where it has one).
    pub message: String,
    /// The whole word that was being expanded.
    pub word: String,
    /// Byte offset in `word` at which the error was detected.
    pub offset: usize,
}

impl ExpandError {
    /// The position of the error counted in characters instead of bytes.
    pub fn char_offset(&self) -> usize {
        let end = self.offset.min(self.word.len());
        self.word
            .char_indices()
            .take_while(|(index, _)| *index < end)
            .count()
    }
}
