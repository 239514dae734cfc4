//! Variable environments the lexer reads from.

use std::collections::{BTreeMap, HashMap};

/// A source of variables for expansion.
///
/// `lookup` returns `None` when the variable is unset and `Some("")` when it
/// is set but empty; the two are different for `${v-w}`, `${v?m}` and friends.
pub trait Env {
    /// The value of `name`, or `None` if it is unset. Names are case-sensitive.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An ordered list of pairs; when a name appears more than once the LATER
/// entry wins, as with repeated `ENV`/`ARG` definitions.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// Builds an environment from `NAME=value` strings, as Docker does for a
/// process environment list: the text is split at the FIRST `=`, a later
/// duplicate overrides an earlier one, and an entry without any `=` defines
/// the whole entry as a name that is set to the empty string.
pub fn build_env<I, S>(entries: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut env = BTreeMap::new();
    for entry in entries {
        let entry = entry.as_ref();
        match entry.split_once('=') {
            Some((name, value)) => env.insert(name.to_owned(), value.to_owned()),
            None => env.insert(entry.to_owned(), String::new()),
        };
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_list_later_duplicate_wins() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("A".to_owned(), "2".to_owned()),
        ];
        assert_eq!(env.lookup("A"), Some("2"));
        assert_eq!(env.lookup("B"), None);
    }

    #[test]
    fn build_env_splits_at_first_equals() {
        let env = build_env(["a=b=c", "flag", "x=1", "x=2"]);
        assert_eq!(env.lookup("a"), Some("b=c"));
        assert_eq!(env.lookup("flag"), Some(""));
        assert_eq!(env.lookup("x"), Some("2"));
    }
}
