//! Image references (`ubuntu`, `localhost:5000/x:1`, `name@sha256:...`), parsed and
//! normalized with the same grammar and rules as Docker's `distribution/reference`
//! (`ParseNormalizedNamed`, `TagNameOnly`, `FamiliarString`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stowage_digest::Digest;

/// Docker Hub's canonical domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy Docker Hub domain, normalized to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's official images.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest allowed repository name (domain and path), in bytes.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a reference is invalid. Messages follow Docker's wording, plus the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty input or an empty repository name.
    #[error(
        "invalid reference format: repository name must have at least one component (in {input:?})"
    )]
    Empty {
        /// The rejected text.
        input: String,
    },
    /// A bare 64-hex string, which would be ambiguous with an image ID.
    #[error("invalid repository name ({input}), cannot specify 64-byte hexadecimal strings")]
    HexOnly {
        /// The rejected text.
        input: String,
    },
    /// The repository path has uppercase letters.
    #[error("invalid reference format: repository name ({name}) must be lowercase")]
    Uppercase {
        /// The offending repository name.
        name: String,
    },
    /// The name (domain and path) is longer than 255 bytes.
    #[error(
        "invalid reference format: repository name must not be more than 255 characters (got {len} in {input:?})"
    )]
    NameTooLong {
        /// The rejected text.
        input: String,
        /// Its name's length.
        len: usize,
    },
    /// Anything else: the grammar does not match.
    #[error("invalid reference format: {reason} (in {input:?})")]
    InvalidFormat {
        /// The rejected text.
        input: String,
        /// What exactly is wrong.
        reason: String,
    },
}

/// A normalized reference: always has a domain; `path` includes `library/` for Docker Hub
/// official images.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes like `docker pull`/`docker tag` do, then adds the `latest` tag
    /// when neither tag nor digest is given: `ubuntu` → `docker.io/library/ubuntu:latest`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        Ok(Self::parse_normalized(input)?.with_default_tag())
    }

    /// Parses and normalizes without adding a default tag (Docker's `ParseNormalizedNamed`).
    pub fn parse_normalized(input: &str) -> Result<Self, ReferenceError> {
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ReferenceError::HexOnly {
                input: input.to_owned(),
            });
        }
        let (domain, remainder) = split_docker_domain(input);
        let remote_name = remainder.split(':').next().unwrap_or_default();
        if remote_name.to_lowercase() != remote_name {
            return Err(ReferenceError::Uppercase {
                name: remote_name.to_owned(),
            });
        }
        Self::parse_full(input, &domain, &remainder)
    }

    /// Parses `domain` + `remainder` (`path[:tag][@digest]`) against the full grammar.
    fn parse_full(input: &str, domain: &str, remainder: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: String| ReferenceError::InvalidFormat {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(ReferenceError::Empty {
                input: input.to_owned(),
            });
        }
        let (name_and_tag, digest) = match remainder.split_once('@') {
            Some((left, digest_text)) => (left, Some(parse_digest(digest_text).map_err(invalid)?)),
            None => (remainder, None),
        };
        let (path, tag) = match name_and_tag.rsplit_once(':') {
            Some((path, tag)) => {
                check_tag(tag).map_err(invalid)?;
                (path, Some(tag.to_owned()))
            }
            None => (name_and_tag, None),
        };
        if path.is_empty() {
            return Err(ReferenceError::Empty {
                input: input.to_owned(),
            });
        }
        check_domain(domain).map_err(invalid)?;
        for component in path.split('/') {
            check_path_component(component).map_err(invalid)?;
        }
        let name_len = domain.len() + 1 + path.len();
        if name_len > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong {
                input: input.to_owned(),
                len: name_len,
            });
        }
        Ok(Self {
            domain: domain.to_owned(),
            path: path.to_owned(),
            tag,
            digest,
        })
    }

    /// Adds the `latest` tag when the reference has neither tag nor digest.
    pub fn with_default_tag(mut self) -> Self {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The same repository with another tag (validated) and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        check_tag(tag).map_err(|reason| ReferenceError::InvalidFormat {
            input: tag.to_owned(),
            reason,
        })?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository and tag, pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The registry domain (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/ubuntu`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// The full repository name: `docker.io/library/ubuntu`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short repository name Docker displays: `ubuntu`, `user/repo`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The short form Docker displays, with tag and digest: `ubuntu:latest`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        self.push_tag_and_digest(&mut out);
        out
    }

    fn push_tag_and_digest(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/ubuntu:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_tag_and_digest(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// Same as [`Reference::parse`] (normalized, default tag added).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_normalized(&text).map_err(serde::de::Error::custom)
    }
}

/// Docker's `splitDockerDomain`: the first component is a domain when it contains `.` or
/// `:`, is `localhost`, or has uppercase letters; otherwise the domain is Docker Hub.
fn split_docker_domain(input: &str) -> (String, String) {
    let (mut domain, mut remainder) = match input.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), input.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

fn parse_digest(text: &str) -> Result<Digest, String> {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return Err(format!(
            "digest {text:?} must look like sha256:<64 hex digits>"
        ));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "unsupported digest algorithm {algorithm:?} (only sha256)"
        ));
    }
    Digest::from_hex(hex)
        .map_err(|_| format!("digest {text:?} must be sha256: followed by 64 lowercase hex digits"))
}

/// `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = match bytes.split_first() {
        Some((first, rest)) => {
            word(*first)
                && rest.len() <= 127
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 characters of [A-Za-z0-9_.-] and must not start with '.' or '-'"
        ))
    }
}

/// `host[:port]` where host is a dotted list of `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
/// or a bracketed IPv6 address.
fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid registry domain {domain:?}"));
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return bad();
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad();
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if let Some(host) = host {
        for component in host.split('.') {
            let bytes = component.as_bytes();
            let alnum_ends = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
            if !alnum_ends
                || !bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            {
                return bad();
            }
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_path_component(component: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid repository path component {component:?}: use lowercase letters and digits, separated by '.', '_', '__' or dashes"
        ))
    };
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i).is_some_and(alnum) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while bytes.get(i).is_some_and(|b| !alnum(b)) {
            i += 1;
        }
        let separator = &component[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return bad();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalizes_like_docker() {
        let d = D;
        let cases: Vec<(String, String, String)> = vec![
            (
                "ubuntu".into(),
                "docker.io/library/ubuntu:latest".into(),
                "ubuntu:latest".into(),
            ),
            (
                "ubuntu:22.04".into(),
                "docker.io/library/ubuntu:22.04".into(),
                "ubuntu:22.04".into(),
            ),
            (
                "user/repo".into(),
                "docker.io/user/repo:latest".into(),
                "user/repo:latest".into(),
            ),
            (
                "docker.io/ubuntu".into(),
                "docker.io/library/ubuntu:latest".into(),
                "ubuntu:latest".into(),
            ),
            (
                "index.docker.io/user/x:1".into(),
                "docker.io/user/x:1".into(),
                "user/x:1".into(),
            ),
            (
                "docker.io/library/a/b".into(),
                "docker.io/library/a/b:latest".into(),
                "library/a/b:latest".into(),
            ),
            (
                "localhost/x".into(),
                "localhost/x:latest".into(),
                "localhost/x:latest".into(),
            ),
            (
                "localhost:5000/x:1".into(),
                "localhost:5000/x:1".into(),
                "localhost:5000/x:1".into(),
            ),
            (
                "quay.io/ns/sub/x:v1.2-rc_3".into(),
                "quay.io/ns/sub/x:v1.2-rc_3".into(),
                "quay.io/ns/sub/x:v1.2-rc_3".into(),
            ),
            (
                "host:443/ns/x".into(),
                "host:443/ns/x:latest".into(),
                "host:443/ns/x:latest".into(),
            ),
            (
                "[::1]:5000/x".into(),
                "[::1]:5000/x:latest".into(),
                "[::1]:5000/x:latest".into(),
            ),
            (
                "Foo/bar".into(),
                "Foo/bar:latest".into(),
                "Foo/bar:latest".into(),
            ),
            (
                format!("ubuntu@{d}"),
                format!("docker.io/library/ubuntu@{d}"),
                format!("ubuntu@{d}"),
            ),
            (
                format!("ubuntu:20.04@{d}"),
                format!("docker.io/library/ubuntu:20.04@{d}"),
                format!("ubuntu:20.04@{d}"),
            ),
            (
                format!("localhost:5000/a/b@{d}"),
                format!("localhost:5000/a/b@{d}"),
                format!("localhost:5000/a/b@{d}"),
            ),
            (
                "a_b__c---d/e.f".into(),
                "docker.io/a_b__c---d/e.f:latest".into(),
                "a_b__c---d/e.f:latest".into(),
            ),
            (
                "my-reg.example.com:5000/a.b_c/x".into(),
                "my-reg.example.com:5000/a.b_c/x:latest".into(),
                "my-reg.example.com:5000/a.b_c/x:latest".into(),
            ),
        ];
        let mut failures = Vec::new();
        for (input, full, familiar) in &cases {
            match Reference::parse(input) {
                Ok(r) if &r.to_string() == full && &r.familiar() == familiar => {}
                other => failures.push(format!("{input}: {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn rejects_invalid_references() {
        let hex64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let long = "a".repeat(250);
        let cases: Vec<String> = vec![
            "".into(),
            "Ubuntu".into(),
            "user/Repo".into(),
            hex64.into(),
            "ubuntu:".into(),
            "ubuntu:.bad".into(),
            "ubuntu:-bad".into(),
            format!("ubuntu:{}", "t".repeat(129)),
            "ubuntu:a/b".into(),
            "ubuntu@sha256:abc".into(),
            format!("ubuntu@sha512:{hex64}"),
            "ubuntu@".into(),
            "-ubuntu".into(),
            "ubuntu-".into(),
            "a..b/c".into(),
            "a/b//c".into(),
            "a/b_-c".into(),
            "a/b___c".into(),
            "host:port/x".into(),
            "-host.com/x".into(),
            "host.com/".into(),
            "ubu ntu".into(),
            "a/b/c:tag:tag".into(),
            "[zz]:5000/x".into(),
            format!("example.com/{long}"),
            "x@y@z".into(),
            // A first component with '.' is a domain, and '_' is not allowed in domains.
            "a.b_c/x".into(),
        ];
        let mut accepted = Vec::new();
        for input in &cases {
            if let Ok(r) = Reference::parse(input) {
                accepted.push(format!("{input:?} -> {r}"));
            }
        }
        assert!(accepted.is_empty(), "should be rejected: {accepted:#?}");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = Reference::parse("Ubuntu").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid reference format: repository name (library/Ubuntu) must be lowercase"
        );
        let err = Reference::parse("ubuntu:.x").unwrap_err();
        assert!(err.to_string().contains("invalid tag \".x\""), "{err}");
        let err =
            Reference::parse("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .unwrap_err();
        assert!(matches!(err, ReferenceError::HexOnly { .. }));
        assert!(matches!(
            Reference::parse("").unwrap_err(),
            ReferenceError::Empty { .. }
        ));
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(
            Reference::parse(&long).unwrap_err(),
            ReferenceError::NameTooLong { .. }
        ));
    }

    #[test]
    fn accessors_and_builders() {
        let r = Reference::parse_normalized("localhost:5000/a/b").unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag(), r.digest()),
            ("localhost:5000", "a/b", None, None)
        );
        assert_eq!(r.name(), "localhost:5000/a/b");
        let tagged = r.with_tag("v2").unwrap();
        assert_eq!(tagged.to_string(), "localhost:5000/a/b:v2");
        assert!(r.with_tag("bad tag").is_err());
        let pinned = tagged.with_digest(D.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("localhost:5000/a/b:v2@{D}"));
        let json = serde_json::to_string(&pinned).unwrap();
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), pinned);
        // A 128-character tag is the maximum.
        assert!(Reference::parse(&format!("x:{}", "t".repeat(128))).is_ok());
    }
}
