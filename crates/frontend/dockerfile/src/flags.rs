//! Validation of instruction flags (`--name=value`, `--name`) against the set
//! each instruction accepts.

use std::collections::BTreeMap;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name=value`, at most once.
    String,
    /// `--name` or `--name=true|false`, at most once.
    Bool,
    /// `--name=value`, repeatable.
    List,
}

/// A flag problem: the message and the flag token concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// What is wrong.
    pub message: String,
    /// The offending flag name (`--from`).
    pub flag: String,
    /// Whether the flag is unknown for the instruction.
    pub unknown: bool,
}

/// Parsed flag values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagValues {
    strings: BTreeMap<String, String>,
    bools: BTreeMap<String, bool>,
    lists: BTreeMap<String, Vec<String>>,
}

impl FlagValues {
    /// A string flag's value.
    pub fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }
    /// A boolean flag (false when absent).
    pub fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }
    /// A boolean flag, `None` when absent.
    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
    /// A repeatable flag's values, in order.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

/// Check `flags` (tokens like `--from=x`) against `spec` for `instruction`.
pub fn parse_flags(
    instruction: &str,
    flags: &[String],
    spec: &[(&str, FlagKind)],
) -> Result<FlagValues, FlagError> {
    let mut values = FlagValues::default();
    for token in flags {
        let body = token.strip_prefix("--").unwrap_or(token);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = format!("--{name}");
        let Some((_, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            return Err(FlagError {
                message: format!("unknown flag {flag} for {instruction}"),
                flag,
                unknown: true,
            });
        };
        let err = |message: String| FlagError {
            message,
            flag: flag.clone(),
            unknown: false,
        };
        match kind {
            FlagKind::Bool => {
                let parsed = match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(err(format!(
                            "expecting boolean value for flag {flag}, not: {other}"
                        )));
                    }
                };
                if values.bools.insert(name.to_string(), parsed).is_some() {
                    return Err(err(format!("duplicate flag specified: {flag}")));
                }
            }
            FlagKind::String => {
                let Some(value) = value else {
                    return Err(err(format!("missing a value on flag: {flag}")));
                };
                if values
                    .strings
                    .insert(name.to_string(), value.to_string())
                    .is_some()
                {
                    return Err(err(format!("duplicate flag specified: {flag}")));
                }
            }
            FlagKind::List => {
                let Some(value) = value else {
                    return Err(err(format!("missing a value on flag: {flag}")));
                };
                values
                    .lists
                    .entry(name.to_string())
                    .or_default()
                    .push(value.to_string());
            }
        }
    }
    Ok(values)
}

/// Human list of accepted flags, e.g. `--from, --chown`.
pub fn describe(spec: &[(&str, FlagKind)]) -> String {
    if spec.is_empty() {
        return "this instruction takes no flags".to_string();
    }
    let names: Vec<String> = spec.iter().map(|(n, _)| format!("--{n}")).collect();
    format!("accepted flags: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_flags() {
        let spec = [
            ("from", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::List),
        ];
        let v = parse_flags(
            "COPY",
            &[
                "--from=a".into(),
                "--link".into(),
                "--exclude=x".into(),
                "--exclude=y".into(),
            ],
            &spec,
        )
        .unwrap();
        assert_eq!(v.string("from").as_deref(), Some("a"));
        assert!(v.bool("link"));
        assert_eq!(v.list("exclude"), vec!["x", "y"]);
        assert!(parse_flags("COPY", &["--chown".into()], &[("chown", FlagKind::String)]).is_err());
        assert!(
            parse_flags("RUN", &["--from=x".into()], &[])
                .unwrap_err()
                .unknown
        );
        assert!(parse_flags("COPY", &["--link=maybe".into()], &spec).is_err());
    }
}
