//! Source positions: byte ranges with 1-based line/column, and a line index to compute them.

use serde::Serialize;

/// A range of the source text: byte offsets (`start..end`) plus 1-based
/// start/end line and column (columns count Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// 1-based line of `start`.
    pub start_line: usize,
    /// 1-based column of `start`.
    pub start_column: usize,
    /// 1-based line of `end`.
    pub end_line: usize,
    /// 1-based column of `end` (exclusive position).
    pub end_column: usize,
}

impl Span {
    /// The byte range of this span.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// Maps byte offsets of one source text to line and column numbers.
#[derive(Debug, Clone)]
pub struct LineIndex<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Index the lines of `source` (lines end at LF).
    pub fn new(source: &'a str) -> Self {
        let mut line_starts = vec![0];
        for (offset, byte) in source.bytes().enumerate() {
            if byte == b'\n' {
                line_starts.push(offset + 1);
            }
        }
        LineIndex {
            source,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; offsets inside a character
    /// or past the end are clamped to a valid position.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(idx) => idx,
            Err(idx) => idx.saturating_sub(1),
        };
        let line_start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        let column = self
            .source
            .get(line_start..)
            .map(|rest| {
                rest.char_indices()
                    .take_while(|(i, _)| line_start + i < offset)
                    .count()
            })
            .unwrap_or(0);
        (line_idx + 1, column + 1)
    }

    /// Build a span for a byte range.
    pub fn span(&self, start: usize, end: usize) -> Span {
        let end = end.max(start);
        let (start_line, start_column) = self.position(start);
        let (end_line, end_column) = self.position(end);
        Span {
            start,
            end,
            start_line,
            start_column,
            end_line,
            end_column,
        }
    }

    /// The text of 1-based line `line`, without its line ending.
    pub fn line_text(&self, line: usize) -> &'a str {
        let Some(start) = line
            .checked_sub(1)
            .and_then(|idx| self.line_starts.get(idx))
            .copied()
        else {
            return "";
        };
        let rest = self.source.get(start..).unwrap_or("");
        let text = rest.split('\n').next().unwrap_or("");
        text.trim_end_matches(['\r', '\n'])
    }

    /// Byte offset where 1-based line `line` starts (or the end of the source).
    pub fn line_start(&self, line: usize) -> usize {
        line.checked_sub(1)
            .and_then(|idx| self.line_starts.get(idx))
            .copied()
            .unwrap_or(self.source.len())
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let index = LineIndex::new("ab\nçd\n");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(3), (2, 1));
        // 'ç' is two bytes; 'd' is at byte 5, column 2.
        assert_eq!(index.position(5), (2, 2));
        assert_eq!(index.line_text(2), "çd");
        assert_eq!(index.line_text(9), "");
    }
}
