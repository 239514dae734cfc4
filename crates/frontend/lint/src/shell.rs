//! A small, forgiving shell-command splitter for RUN lines: splits a script
//! into simple commands on `&&`, `||`, `;`, `|`, `&` and newlines, respecting
//! quotes, `$(...)`, backticks, `\` continuations, comments, redirections and
//! heredoc bodies. It never fails: odd input just yields odd words.

/// One simple command: its words with quotes removed, leading variable
/// assignments and wrappers (`sudo`, `env`, ...) stripped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimpleCommand {
    /// The words (argv).
    pub words: Vec<String>,
    /// `NAME=value` assignments written before the command.
    pub assignments: Vec<String>,
}

impl SimpleCommand {
    /// The program name without its directory (`/usr/bin/apt-get` → `apt-get`).
    pub fn program(&self) -> &str {
        let first = self.words.first().map(String::as_str).unwrap_or("");
        first.rsplit('/').next().unwrap_or(first)
    }

    /// The words after the program.
    pub fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }
}

/// A split script.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Script {
    /// The simple commands in order.
    pub commands: Vec<SimpleCommand>,
    /// Whether a pipe (`|` or `|&`) occurs outside quotes.
    pub has_pipe: bool,
}

const WRAPPERS: [&str; 7] = ["sudo", "env", "exec", "time", "command", "nice", "nohup"];

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

struct Splitter {
    script: Script,
    words: Vec<String>,
    word: String,
    in_word: bool,
    drop_next_word: bool,
    pending_heredocs: Vec<(String, bool)>,
}

impl Splitter {
    fn end_word(&mut self) {
        if self.in_word {
            let word = std::mem::take(&mut self.word);
            if self.drop_next_word {
                self.drop_next_word = false;
            } else if word != "{" && word != "}" && word != "!" {
                self.words.push(word);
            }
        }
        self.in_word = false;
    }

    fn end_command(&mut self) {
        self.end_word();
        let words = std::mem::take(&mut self.words);
        let mut command = SimpleCommand::default();
        let mut iter = words.into_iter().peekable();
        loop {
            match iter.peek() {
                Some(w) if command.words.is_empty() && is_assignment(w) => {
                    if let Some(w) = iter.next() {
                        command.assignments.push(w);
                    }
                }
                Some(w) if command.words.is_empty() && WRAPPERS.contains(&w.as_str()) => {
                    iter.next();
                    while iter.peek().is_some_and(|w| w.starts_with('-')) {
                        iter.next();
                    }
                }
                Some(_) => {
                    command.words.extend(iter.by_ref());
                }
                None => break,
            }
        }
        if !command.words.is_empty() || !command.assignments.is_empty() {
            self.script.commands.push(command);
        }
    }
}

/// Split a shell script into simple commands.
pub fn split(script: &str) -> Script {
    let chars: Vec<char> = script.chars().collect();
    let mut s = Splitter {
        script: Script::default(),
        words: Vec::new(),
        word: String::new(),
        in_word: false,
        drop_next_word: false,
        pending_heredocs: Vec::new(),
    };
    let mut i = 0usize;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        match c {
            '\\' => {
                match at(i + 1) {
                    Some('\n') => {}
                    Some('\r') if at(i + 2) == Some('\n') => i += 1,
                    Some(next) => {
                        s.word.push(next);
                        s.in_word = true;
                    }
                    None => {}
                }
                i += 2;
                continue;
            }
            '\'' => {
                s.in_word = true;
                i += 1;
                while let Some(q) = at(i) {
                    i += 1;
                    if q == '\'' {
                        break;
                    }
                    s.word.push(q);
                }
                continue;
            }
            '"' => {
                s.in_word = true;
                i += 1;
                while let Some(q) = at(i) {
                    i += 1;
                    match q {
                        '"' => break,
                        '\\' => match at(i) {
                            Some('\n') => i += 1,
                            Some(e @ ('"' | '\\' | '$' | '`')) => {
                                s.word.push(e);
                                i += 1;
                            }
                            _ => s.word.push('\\'),
                        },
                        other => s.word.push(other),
                    }
                }
                continue;
            }
            '$' if at(i + 1) == Some('(') || at(i + 1) == Some('{') => {
                let (open, close) = if at(i + 1) == Some('(') {
                    ('(', ')')
                } else {
                    ('{', '}')
                };
                s.in_word = true;
                s.word.push('$');
                s.word.push(open);
                i += 2;
                let mut depth = 1usize;
                while let Some(q) = at(i) {
                    i += 1;
                    s.word.push(q);
                    if q == open {
                        depth += 1;
                    } else if q == close {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
                continue;
            }
            '`' => {
                s.in_word = true;
                s.word.push('`');
                i += 1;
                while let Some(q) = at(i) {
                    i += 1;
                    s.word.push(q);
                    if q == '`' {
                        break;
                    }
                }
                continue;
            }
            '#' if !s.in_word => {
                while at(i).is_some_and(|q| q != '\n') {
                    i += 1;
                }
                continue;
            }
            ' ' | '\t' | '\r' => s.end_word(),
            '\n' => {
                s.end_command();
                i += 1;
                // Skip heredoc bodies opened on the line just ended.
                for (delimiter, strip_tabs) in std::mem::take(&mut s.pending_heredocs) {
                    loop {
                        let start = i;
                        while at(i).is_some_and(|q| q != '\n') {
                            i += 1;
                        }
                        let line: String = chars.get(start..i).unwrap_or(&[]).iter().collect();
                        if at(i).is_some() {
                            i += 1;
                        }
                        let line = if strip_tabs {
                            line.trim_start_matches('\t')
                        } else {
                            line.as_str()
                        };
                        if line.trim_end() == delimiter || at(i).is_none() {
                            break;
                        }
                    }
                }
                continue;
            }
            ';' | '&' | '|' => {
                if c == '|' && at(i + 1) != Some('|') {
                    s.script.has_pipe = true;
                }
                if c == '&' && s.word.is_empty() && !s.in_word {
                    // `>&` is handled with redirections; a lone `&` ends a command.
                }
                s.end_command();
                if at(i + 1) == Some(c) || (c == '|' && at(i + 1) == Some('&')) {
                    i += 1;
                }
            }
            '(' | ')' => s.end_command(),
            '>' | '<' => {
                if s.in_word && s.word.chars().all(|d| d.is_ascii_digit()) {
                    s.word.clear();
                    s.in_word = false;
                }
                s.end_word();
                let mut op = String::from(c);
                while let Some(q @ ('>' | '<' | '&' | '-' | '|')) = at(i + 1) {
                    op.push(q);
                    i += 1;
                    if op.len() >= 3 {
                        break;
                    }
                }
                if op.ends_with('&') {
                    // `2>&1`: the target is an fd, dropped as the next word.
                }
                if op.starts_with("<<") && !op.starts_with("<<<") {
                    // Heredoc: read its delimiter word now.
                    i += 1;
                    while at(i).is_some_and(|q| q == ' ' || q == '\t') {
                        i += 1;
                    }
                    let mut delimiter = String::new();
                    while let Some(q) = at(i) {
                        if q.is_whitespace() || matches!(q, ';' | '&' | '|' | ')') {
                            break;
                        }
                        if q != '\'' && q != '"' {
                            delimiter.push(q);
                        }
                        i += 1;
                    }
                    s.pending_heredocs.push((delimiter, op.ends_with('-')));
                    continue;
                }
                s.drop_next_word = true;
            }
            other => {
                s.in_word = true;
                s.word.push(other);
            }
        }
        i += 1;
    }
    s.end_command();
    s.script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(script: &str) -> Vec<Vec<String>> {
        split(script)
            .commands
            .into_iter()
            .map(|c| c.words)
            .collect()
    }

    #[test]
    fn splits_on_operators_and_respects_quotes() {
        let got =
            programs("apt-get update && apt-get install -y 'a b' \"c;d\" || true; echo x | wc -l");
        assert_eq!(
            got,
            vec![
                vec!["apt-get", "update"],
                vec!["apt-get", "install", "-y", "a b", "c;d"],
                vec!["true"],
                vec!["echo", "x"],
                vec!["wc", "-l"],
            ]
        );
        assert!(split("a | b").has_pipe);
        assert!(!split("a || b").has_pipe);
        assert!(!split("echo 'a | b'").has_pipe);
    }

    #[test]
    fn continuations_comments_redirections_and_wrappers() {
        let got = programs(
            "DEBIAN_FRONTEND=noninteractive sudo apt-get \\\n  install x 2>&1 >/dev/null # comment\n# whole line\nrm -rf /x",
        );
        assert_eq!(
            got,
            vec![vec!["apt-get", "install", "x"], vec!["rm", "-rf", "/x"]]
        );
    }

    #[test]
    fn heredoc_bodies_and_substitutions_are_skipped() {
        let got = programs("cat <<EOF > /f\napt-get install nope\nEOF\necho $(a && b) `c; d`");
        assert_eq!(got, vec![vec!["cat"], vec!["echo", "$(a && b)", "`c; d`"]]);
    }

    #[test]
    fn never_panics_on_garbage() {
        for text in [
            "\\", "'", "\"", "$(", "<<", "2>", "| |", "&&&", "\"\\", "${", "`", "(((", "<<-\n\t",
        ] {
            let _ = split(text);
        }
    }
}
