//! The s-expression dump of a parsed Dockerfile (BuildKit's `dumper` format),
//! with Go `strconv.Quote`-compatible string quoting.

use crate::syntax::{Arguments, Dockerfile, Node};

/// Whether Go's `unicode.IsPrint` holds: letters, marks, numbers, punctuation,
/// symbols and the ASCII space.
fn is_printable(ch: char) -> bool {
    if ch == ' ' || ch == '\'' {
        return true;
    }
    if ch.is_control() || ch.is_whitespace() {
        return false;
    }
    // Rust's debug escaping leaves exactly the printable characters alone
    // (when not in leading position, where grapheme extenders are escaped).
    let mut buf = String::with_capacity(8);
    buf.push('a');
    buf.push(ch);
    let mut escaped = buf.escape_debug();
    escaped.next();
    escaped.next() == Some(ch) && escaped.next().is_none()
}

/// Quote `s` like Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn push_args(out: &mut String, args: &Arguments) {
    let mut push = |value: &str| {
        out.push(' ');
        out.push_str(&go_quote(value));
    };
    match args {
        Arguments::Empty => {}
        Arguments::Ignored => push(""),
        Arguments::Json(values) | Arguments::Words(values) => values.iter().for_each(|v| push(v)),
        Arguments::Text(text) => push(text),
        Arguments::NameValues { pairs, legacy } => {
            let sep = if *legacy { "" } else { "=" };
            for pair in pairs {
                push(&pair.name);
                push(&pair.value);
                push(sep);
            }
        }
        Arguments::Health { kind, command } => {
            push(kind);
            if let Some(command) = command {
                push_args(out, command);
            }
        }
        Arguments::SubCommand(inner) => {
            out.push_str(" (");
            out.push_str(&dump_node(inner));
            out.push(')');
        }
    }
}

/// Dump one instruction without the surrounding parentheses.
pub fn dump_node(node: &Node) -> String {
    let mut out = node.keyword.to_lowercase();
    if !node.flags.is_empty() {
        out.push_str(" [");
        let quoted: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        out.push_str(&quoted.join(" "));
        out.push(']');
    }
    push_args(&mut out, &node.args);
    out
}

impl Dockerfile {
    /// The s-expression dump: one `(keyword [flags] args...)` line per instruction.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.instructions {
            out.push('(');
            out.push_str(&dump_node(node));
            out.push_str(")\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(
            go_quote("a\u{a0}b\u{200b}c😀\u{7}\u{7f}\tz"),
            "\"a\\u00a0b\\u200bc😀\\a\\x7f\\tz\""
        );
        assert_eq!(go_quote("\u{0}♥\u{feff}"), "\"\\x00♥\\ufeff\"");
        assert_eq!(go_quote("e\u{301}"), "\"e\u{301}\"");
        assert_eq!(go_quote("\u{10ffff}"), "\"\\U0010ffff\"");
    }
}
