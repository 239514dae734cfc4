//! The small addressing types of the client: a repository on a registry, a tag
//! or digest inside it, and a target platform. Full image-reference parsing lives
//! in `stowage-image`; this crate only needs the already-split parts.

use std::fmt;
use std::str::FromStr;

use stowage_digest::Digest;

use crate::error::RegistryError;

/// The Docker Hub registry name as users write it.
pub const DOCKER_HUB: &str = "docker.io";

/// A repository on a registry, e.g. `docker.io` + `library/debian`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// Registry host with optional port: `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path: `library/debian`, `org/app`.
    pub repository: String,
}

impl Repository {
    /// Builds a repository, checking the path against the distribution-spec grammar
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
    pub fn new(
        registry: impl Into<String>,
        repository: impl Into<String>,
    ) -> Result<Self, RegistryError> {
        let registry = registry.into();
        let repository = repository.into();
        if registry.is_empty()
            || registry.contains('/')
            || registry.chars().any(|c| c.is_whitespace() || c == '@')
        {
            return Err(RegistryError::InvalidArgument(format!(
                "invalid registry name {registry:?}"
            )));
        }
        if !is_valid_repository_path(&repository) {
            return Err(RegistryError::InvalidArgument(format!(
                "invalid repository name {repository:?}"
            )));
        }
        Ok(Repository {
            registry,
            repository,
        })
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

fn is_valid_repository_path(path: &str) -> bool {
    if path.is_empty() || path.len() > 255 {
        return false;
    }
    path.split('/').all(|component| {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(&first), Some(&last)) if alnum(first) && alnum(last) => {}
            _ => return false,
        }
        // Separators: '.', '_', '__', or any run of '-'.
        let mut previous_separator: Option<u8> = None;
        let mut underscores = 0;
        for &b in bytes {
            if alnum(b) {
                previous_separator = None;
                underscores = 0;
                continue;
            }
            match (b, previous_separator) {
                (b'-', None) | (b'-', Some(b'-')) => {}
                (b'.', None) => {}
                (b'_', None) => underscores = 1,
                (b'_', Some(b'_')) if underscores == 1 => underscores = 2,
                _ => return false,
            }
            previous_separator = Some(b);
        }
        true
    })
}

/// What to fetch inside a repository: a tag or a content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagOrDigest {
    /// A mutable tag such as `latest`.
    Tag(String),
    /// An immutable content digest; fetched content is verified against it.
    Digest(Digest),
}

impl TagOrDigest {
    /// The string used in the URL path.
    pub fn as_url_component(&self) -> String {
        match self {
            TagOrDigest::Tag(tag) => tag.clone(),
            TagOrDigest::Digest(digest) => digest.to_string(),
        }
    }
}

impl fmt::Display for TagOrDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagOrDigest::Tag(tag) => write!(f, ":{tag}"),
            TagOrDigest::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

impl FromStr for TagOrDigest {
    type Err = RegistryError;

    /// Parses `sha256:<hex>` as a digest and anything matching the tag grammar
    /// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` as a tag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            return s
                .parse::<Digest>()
                .map(TagOrDigest::Digest)
                .map_err(|e| RegistryError::InvalidArgument(format!("invalid digest {s:?}: {e}")));
        }
        let valid = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with(['.', '-'])
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(TagOrDigest::Tag(s.to_owned()))
        } else {
            Err(RegistryError::InvalidArgument(format!("invalid tag {s:?}")))
        }
    }
}

/// A target platform `os/architecture[/variant]` for manifest-list selection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in Go/OCI naming (`linux/amd64`, `linux/arm64/v8`...).
    pub fn native() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || RegistryError::InvalidArgument(format!("invalid platform {s:?}"));
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in [
            "library/debian",
            "a",
            "a/b/c",
            "my-app",
            "a__b",
            "a.b/c_d",
            "x--y",
        ] {
            assert!(Repository::new("docker.io", good).is_ok(), "{good}");
        }
        for bad in [
            "", "A", "a//b", "-a", "a-", "a___b", "a..b", "/a", "a/", "a b",
        ] {
            assert!(Repository::new("docker.io", bad).is_err(), "{bad}");
        }
        assert!(Repository::new("", "a").is_err());
        assert!(Repository::new("a/b", "a").is_err());
    }

    #[test]
    fn tag_or_digest_parsing() {
        assert_eq!(
            "latest".parse::<TagOrDigest>().ok(),
            Some(TagOrDigest::Tag("latest".into()))
        );
        let digest = Digest::of(b"x");
        assert_eq!(
            digest.to_string().parse::<TagOrDigest>().ok(),
            Some(TagOrDigest::Digest(digest))
        );
        assert!("-x".parse::<TagOrDigest>().is_err());
        assert!("sha256:zz".parse::<TagOrDigest>().is_err());
        assert!("a/b".parse::<TagOrDigest>().is_err());
    }

    #[test]
    fn platform_parsing() {
        let p: Platform = "linux/arm64/v8".parse().expect("valid");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v8".parse::<Platform>().is_err());
        assert_eq!(Platform::native().os, "linux");
    }
}
