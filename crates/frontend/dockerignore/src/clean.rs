//! Lexical path cleaning with Go's `path.Clean` rules (Unix separators).

/// Returns the shortest path equivalent to `path` by purely lexical
/// processing: repeated `/` collapse, `.` elements go away, `x/..` pairs
/// cancel, `..` directly under the root is dropped, trailing `/` is removed
/// and an empty result becomes `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `path.Dir`: everything before the last `/`, cleaned.
pub(crate) fn dir_of(path: &str) -> String {
    match path.rfind('/') {
        Some(index) => clean_path(path.get(..=index).unwrap_or_default()),
        None => ".".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("/", "/"),
            ("//", "/"),
            ("a/b/../../c", "c"),
            ("../up", "../up"),
            ("../../x/..", "../.."),
            ("/../x", "/x"),
            ("dir//sub//", "dir/sub"),
            ("!../x", "!../x"),
            ("a/./b/.", "a/b"),
        ] {
            assert_eq!(clean_path(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn dir_like_go() {
        for (input, want) in [
            ("a", "."),
            ("a/", "a"),
            ("a/b", "a"),
            ("/a", "/"),
            ("/", "/"),
            ("", "."),
            ("a//b/c/", "a/b/c"),
        ] {
            assert_eq!(dir_of(input), want, "dir({input:?})");
        }
    }
}
