//! Lexical normalization of paths found in tar entries (names and hardlink targets).
//!
//! A tar path is a byte string. It is normalized to a list of plain components: empty and `.`
//! components are dropped, a leading `/` is ignored (Docker treats `/x` as `x`), and `..` pops
//! the previous component. A `..` that would climb above the root is an escape and is reported
//! as such, never clamped.

/// Result of normalizing a tar path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NormalizedPath {
    /// The path stays inside the root; the components (possibly none: the root itself).
    Inside(Vec<Vec<u8>>),
    /// A `..` component climbs above the root.
    Escapes,
}

/// Normalizes a tar entry path or hardlink target (see the module docs).
pub(crate) fn normalize(raw: &[u8]) -> NormalizedPath {
    let mut components: Vec<Vec<u8>> = Vec::new();
    for component in raw.split(|byte| *byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if components.pop().is_none() {
                    return NormalizedPath::Escapes;
                }
            }
            name => components.push(name.to_vec()),
        }
    }
    NormalizedPath::Inside(components)
}

/// Joins components with `/` (no leading or trailing slash).
pub(crate) fn join(components: &[Vec<u8>]) -> Vec<u8> {
    let mut joined = Vec::new();
    for (index, component) in components.iter().enumerate() {
        if index > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(component);
    }
    joined
}

/// Lossy display form of a byte path, for error messages.
pub(crate) fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(parts: &[&str]) -> NormalizedPath {
        NormalizedPath::Inside(parts.iter().map(|part| part.as_bytes().to_vec()).collect())
    }

    #[test]
    fn strips_dots_and_leading_slash() {
        assert_eq!(normalize(b"./etc/passwd"), inside(&["etc", "passwd"]));
        assert_eq!(normalize(b"/etc//passwd/"), inside(&["etc", "passwd"]));
        assert_eq!(normalize(b"./"), inside(&[]));
    }

    #[test]
    fn dotdot_inside_is_resolved_lexically() {
        assert_eq!(normalize(b"a/../b"), inside(&["b"]));
        assert_eq!(normalize(b"a/b/../../c"), inside(&["c"]));
    }

    #[test]
    fn dotdot_escaping_is_reported() {
        assert_eq!(normalize(b"../x"), NormalizedPath::Escapes);
        assert_eq!(normalize(b"a/../../x"), NormalizedPath::Escapes);
        assert_eq!(normalize(b"/../x"), NormalizedPath::Escapes);
    }

    #[test]
    fn join_uses_single_slashes() {
        assert_eq!(join(&[b"a".to_vec(), b"b".to_vec()]), b"a/b".to_vec());
        assert_eq!(join(&[]), Vec::<u8>::new());
    }
}
