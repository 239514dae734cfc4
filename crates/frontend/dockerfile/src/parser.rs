//! The Dockerfile parser: physical lines to instructions (continuations,
//! comments, directives, heredocs), producing the lossless [`Dockerfile`] tree.

use crate::directives::DirectiveParser;
use crate::error::{ErrorKind, ParseError, Warning};
use crate::heredoc::{Heredoc, heredocs_from_line};
use crate::line_parsers::{
    JsonArray, extract_flags, is_space, parse_json_array, parse_name_val, split_once_whitespace,
    split_whitespace, split_words,
};
use crate::span::{LineIndex, Span};
use crate::syntax::{Arguments, Comment, Dockerfile, Node};

/// Longest physical line accepted, in bytes (without the line ending).
pub const MAX_LINE_BYTES: usize = 65535;

/// A problem found while turning one logical line into a node.
#[derive(Debug, Clone)]
pub(crate) struct LineError {
    pub kind: ErrorKind,
    pub message: String,
    pub help: Option<String>,
    /// Text to point at inside the instruction, when known.
    pub needle: Option<String>,
}

impl LineError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        LineError {
            kind,
            message: message.into(),
            help: None,
            needle: None,
        }
    }
    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    fn needle(mut self, needle: impl Into<String>) -> Self {
        self.needle = Some(needle.into());
        self
    }
}

/// Remove trailing CR/LF characters.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// Remove a trailing continuation (escape char + blanks). Returns the text and
/// whether the logical line ends here.
pub fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let without_blanks = line.trim_end_matches([' ', '\t']);
    let Some(before) = without_blanks.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() {
        return ("", false);
    }
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

const JSON_NOT_STRINGS: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn maybe_json(rest: &str) -> Result<Arguments, LineError> {
    if rest.is_empty() {
        return Ok(Arguments::Empty);
    }
    match parse_json_array(rest) {
        JsonArray::Strings(values) => Ok(Arguments::Json(values)),
        JsonArray::NotStringArray => Err(not_string_array(rest)),
        JsonArray::NotJson => Ok(Arguments::Text(rest.to_string())),
    }
}

fn not_string_array(rest: &str) -> LineError {
    LineError::new(ErrorKind::JsonNotStringArray, JSON_NOT_STRINGS)
        .help(
            "quote every element of the array, e.g. [\"sleep\", \"10\"] instead of [\"sleep\", 10]",
        )
        .needle(rest)
}

fn maybe_json_to_list(rest: &str) -> Result<Arguments, LineError> {
    match parse_json_array(rest) {
        JsonArray::Strings(values) => Ok(Arguments::Json(values)),
        JsonArray::NotStringArray => Err(not_string_array(rest)),
        JsonArray::NotJson => Ok(words_or_empty(split_whitespace(rest))),
    }
}

fn words_or_empty(words: Vec<String>) -> Arguments {
    if words.is_empty() {
        Arguments::Empty
    } else {
        Arguments::Words(words)
    }
}

fn health(rest: &str) -> Result<Arguments, LineError> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Arguments::Empty);
    }
    let kind = rest.get(..sep).unwrap_or("").to_string();
    let after = rest.get(sep..).unwrap_or("").trim_start_matches(is_space);
    let command = match maybe_json(after)? {
        Arguments::Empty => None,
        other => Some(Box::new(other)),
    };
    Ok(Arguments::Health { kind, command })
}

/// Turn one logical line into a node (spans are filled by the caller).
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, LineError> {
    let trimmed = line.trim_matches(is_space);
    let (keyword, after_keyword) = split_once_whitespace(trimmed);
    let (flags, rest) = match after_keyword {
        Some(after) => {
            let extracted = extract_flags(after, escape);
            (extracted.flags, extracted.rest.trim_matches(is_space))
        }
        None => (Vec::new(), ""),
    };
    let lower = keyword.to_lowercase();
    let args = match lower.as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(rest)?,
        "run" | "cmd" | "entrypoint" | "shell" => maybe_json(rest)?,
        "arg" => words_or_empty(split_words(rest, escape)),
        "env" | "label" => {
            let (pairs, legacy) = parse_name_val(rest, &lower, escape).map_err(|e| {
                LineError::new(ErrorKind::InvalidArguments, e.to_string()).help(format!(
                    "write {} as NAME=value (use quotes for values with spaces, e.g. NAME=\"a b\")",
                    lower.to_uppercase()
                ))
            })?;
            if pairs.is_empty() {
                Arguments::Empty
            } else {
                Arguments::NameValues { pairs, legacy }
            }
        }
        "expose" | "from" => words_or_empty(split_whitespace(rest)),
        "healthcheck" => health(rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Arguments::Empty
            } else {
                Arguments::Text(rest.to_string())
            }
        }
        "onbuild" => {
            if rest.is_empty() {
                Arguments::Empty
            } else {
                Arguments::SubCommand(Box::new(node_from_line(rest, escape)?))
            }
        }
        _ => Arguments::Ignored,
    };
    Ok(Node {
        keyword: keyword.to_string(),
        flags,
        args,
        heredocs: Vec::new(),
        original: line.to_string(),
        comments: Vec::new(),
        span: Span::default(),
        keyword_span: Span::default(),
    })
}

/// Whether the node (or ONBUILD's inner node) may carry heredocs.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.args {
        Arguments::SubCommand(inner) if node.keyword.eq_ignore_ascii_case("onbuild") => inner,
        _ => node,
    };
    let name = node.keyword.to_ascii_lowercase();
    matches!(name.as_str(), "add" | "copy" | "run") && !node.is_json()
}

/// Byte range of `needle` inside `span` of `source`, or `fallback`.
pub(crate) fn locate(source: &str, span: Span, needle: &str, fallback: Span) -> (usize, usize) {
    if needle.is_empty() {
        return (fallback.start, fallback.end);
    }
    source
        .get(span.range())
        .and_then(|text| text.find(needle))
        .map(|pos| (span.start + pos, span.start + pos + needle.len()))
        .unwrap_or((fallback.start, fallback.end))
}

struct PhysicalLine<'a> {
    start: usize,
    raw: &'a str,
}

fn set_spans(
    node: &mut Node,
    source: &str,
    index: &LineIndex<'_>,
    span: Span,
    keyword_start: usize,
) {
    node.span = span;
    let first_line_end = source
        .get(keyword_start..)
        .and_then(|rest| rest.find(['\n', '\r']))
        .map_or(source.len(), |p| keyword_start + p);
    let keyword_end = (keyword_start + node.keyword.len())
        .min(first_line_end)
        .min(span.end);
    node.keyword_span = index.span(keyword_start, keyword_end);
    if let Arguments::SubCommand(inner) = &mut node.args {
        let inner_start = source
            .get(keyword_end..span.end)
            .and_then(|text| text.find(inner.keyword.as_str()))
            .map_or(keyword_start, |p| keyword_end + p);
        set_spans(inner, source, index, span, inner_start);
    }
}

/// Parse a Dockerfile.
///
/// Fails on an empty file, a file without instructions, a repeated or invalid
/// parser directive, a line over 65535 bytes, an unterminated heredoc, a JSON
/// array with non-string elements, and ENV/LABEL without values. Unknown
/// instructions are accepted here (they are rejected by [`crate::instructions`]).
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    let index = LineIndex::new(source);
    let mut lines = Vec::new();
    let mut offset = 0;
    for raw in source.split_inclusive('\n') {
        lines.push(PhysicalLine { start: offset, raw });
        offset += raw.len();
    }
    for (idx, line) in lines.iter().enumerate() {
        let content = line.raw.strip_suffix('\n').unwrap_or(line.raw);
        if content.len() > MAX_LINE_BYTES {
            let end = line.start + content.len();
            return Err(ParseError::at_index(
                ErrorKind::LineTooLong,
                format!("dockerfile line greater than max allowed size of {MAX_LINE_BYTES}"),
                &index,
                line.start,
                end,
            )
            .with_help(format!(
                "line {} has {} bytes; split it with line continuations (end lines with the escape character)",
                idx + 1,
                content.len()
            )));
        }
    }

    let mut escape = '\\';
    let mut directive_parser = DirectiveParser::new();
    let mut instructions = Vec::new();
    let mut comments = Vec::new();
    let mut pending_comments: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    let mut current_line = 0usize;
    let mut next = 0usize;

    while let Some(line) = lines.get(next) {
        next += 1;
        let mut raw = line.raw;
        let mut raw_start = line.start;
        if next == 1
            && let Some(stripped) = raw.strip_prefix('\u{feff}')
        {
            raw = stripped;
            raw_start += '\u{feff}'.len_utf8();
        }
        let no_newline = trim_newline(raw);
        let trimmed = no_newline.trim_start_matches(is_space);
        let lead = no_newline.len() - trimmed.len();
        current_line += 1;
        let is_comment = trimmed.starts_with('#');
        if is_comment {
            let text = trimmed.get(1..).unwrap_or("").trim().to_string();
            if text.is_empty() {
                pending_comments.clear();
            } else {
                pending_comments.push(text.clone());
            }
            comments.push(Comment {
                text,
                span: index.span(raw_start + lead, raw_start + no_newline.len()),
            });
        }
        match directive_parser.parse_line(trimmed) {
            Err(dup) => {
                return Err(ParseError::at_index(
                    ErrorKind::InvalidDirective,
                    dup.to_string(),
                    &index,
                    raw_start + lead,
                    raw_start + no_newline.len(),
                )
                .with_help(format!("remove the repeated `# {}=` line", dup.name)));
            }
            Ok(Some(directive)) if directive.name == "escape" => {
                escape = match directive.value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError::at_index(
                            ErrorKind::InvalidDirective,
                            format!("invalid escape token '{other}' does not match ` or \\"),
                            &index,
                            raw_start + lead,
                            raw_start + no_newline.len(),
                        )
                        .with_help("use `# escape=\\` (the default) or `# escape=`` ` ``"));
                    }
                };
            }
            Ok(_) => {}
        }
        let start_line = current_line;
        let processed = if is_comment { "" } else { trimmed };
        let (text, mut end_of_line) = trim_continuation(processed, escape);
        if end_of_line && text.is_empty() {
            continue;
        }
        let instruction_start = raw_start + lead;
        let mut instruction_end = raw_start + no_newline.len();
        let mut logical = text.to_string();
        let mut has_empty_continuation = false;
        while !end_of_line {
            let Some(cont) = lines.get(next) else {
                break;
            };
            next += 1;
            current_line += 1;
            let no_newline = trim_newline(cont.raw);
            instruction_end = cont.start + no_newline.len();
            let trimmed = no_newline.trim_start_matches(is_space);
            if trimmed.starts_with('#') {
                let lead = no_newline.len() - trimmed.len();
                comments.push(Comment {
                    text: trimmed.get(1..).unwrap_or("").trim().to_string(),
                    span: index.span(cont.start + lead, instruction_end),
                });
                continue;
            }
            if trimmed.is_empty() {
                has_empty_continuation = true;
                continue;
            }
            let (text, eol) = trim_continuation(no_newline, escape);
            logical.push_str(text);
            end_of_line = eol;
        }

        let mut node = node_from_line(&logical, escape).map_err(|err| {
            let span = index.span(instruction_start, instruction_end);
            let (start, end) = locate(
                source,
                span,
                err.needle.as_deref().unwrap_or(""),
                index.span(instruction_start, instruction_end),
            );
            let mut out = ParseError::at_index(err.kind, err.message, &index, start, end);
            out.help = err.help;
            out
        })?;

        if has_empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {logical}"),
                detail: Some(
                    "Empty continuation lines will become errors in a future release".to_string(),
                ),
                line: current_line,
                span: index.span(instruction_start, instruction_end),
            });
        }

        if can_contain_heredoc(&node) && logical.contains("<<") {
            let markers = heredocs_from_line(&logical).map_err(|err| {
                let span = index.span(instruction_start, instruction_end);
                let (start, end) = locate(source, span, &err.word, span);
                ParseError::at_index(
                    ErrorKind::InvalidHeredoc,
                    err.to_string(),
                    &index,
                    start,
                    end,
                )
                .with_help("close the quote in the heredoc delimiter, e.g. <<'EOF'")
            })?;
            for marker in markers {
                let body_start = lines.get(next).map_or(source.len(), |l| l.start);
                let mut body_end = body_start;
                let mut content = String::new();
                let mut terminated = false;
                while let Some(body_line) = lines.get(next) {
                    next += 1;
                    current_line += 1;
                    let mut candidate = trim_newline(body_line.raw);
                    instruction_end = body_line.start + candidate.len();
                    if marker.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == marker.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(body_line.raw);
                    body_end = body_line.start + body_line.raw.len();
                }
                if !terminated {
                    let span = index.span(instruction_start, instruction_end);
                    let (start, end) = locate(
                        source,
                        span,
                        "<<",
                        node_keyword_fallback(&index, instruction_start, &node),
                    );
                    return Err(ParseError::at_index(
                        ErrorKind::UnterminatedHeredoc,
                        format!("unterminated heredoc: no line `{}` ends it", marker.name),
                        &index,
                        start,
                        end,
                    )
                    .with_label(format!("heredoc `{}` starts here", marker.name))
                    .with_help(format!(
                        "add a line containing only `{}` after the heredoc body",
                        marker.name
                    )));
                }
                node.heredocs.push(Heredoc {
                    name: marker.name,
                    content,
                    expand: marker.expand,
                    chomp: marker.chomp,
                    file_descriptor: marker.file_descriptor,
                    body_span: index.span(body_start, body_end.max(body_start)),
                });
            }
        }

        let span = index.span(instruction_start, instruction_end.max(instruction_start));
        debug_assert!(span.start_line == start_line);
        set_spans(&mut node, source, &index, span, instruction_start);
        node.comments = std::mem::take(&mut pending_comments);
        instructions.push(node);
    }

    if instructions.is_empty() {
        let empty = source.trim_start_matches('\u{feff}').is_empty();
        let (kind, message, help) = if empty {
            (
                ErrorKind::EmptyDockerfile,
                "the Dockerfile is empty",
                "add at least a FROM instruction, e.g. `FROM alpine:3.20`",
            )
        } else {
            (
                ErrorKind::NoInstructions,
                "file with no instructions",
                "the file only has comments or blank lines; add at least a FROM instruction",
            )
        };
        let last = index.line_count().max(1);
        let start = index.line_start(last);
        return Err(
            ParseError::at_index(kind, message, &index, start, source.len()).with_help(help),
        );
    }

    Ok(Dockerfile {
        directives: directive_parser.directives().to_vec(),
        escape,
        instructions,
        comments,
        warnings,
        source: source.to_string(),
    })
}

fn node_keyword_fallback(index: &LineIndex<'_>, start: usize, node: &Node) -> Span {
    index.span(start, start + node.keyword.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
    }

    #[test]
    fn spans_cover_all_physical_lines() {
        let src = "FROM a\nRUN x \\\n  # c\n  y\nCOPY <<E /f\nbody\nE\n";
        let df = parse(src).unwrap();
        let run = &df.instructions[1];
        assert_eq!((run.span.start_line, run.span.end_line), (2, 4));
        assert_eq!(run.original, "RUN x   y");
        assert_eq!(run.source_text(src), "RUN x \\\n  # c\n  y");
        let copy = &df.instructions[2];
        assert_eq!((copy.span.start_line, copy.span.end_line), (5, 7));
        assert_eq!(copy.heredocs[0].content, "body\n");
        assert_eq!(copy.keyword_span.range(), 25..29);
    }

    #[test]
    fn unterminated_heredoc_is_located() {
        let err = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnterminatedHeredoc);
        assert_eq!((err.line, err.column), (2, 5));
        assert!(err.help.unwrap().contains("EOF"));
    }

    #[test]
    fn multibyte_text_is_safe() {
        let df = parse("FROM ä\nRUN échö \\\n  ü\n").unwrap();
        assert_eq!(df.instructions[1].original, "RUN échö   ü");
    }
}
