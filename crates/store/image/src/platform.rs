//! Platforms (`os/architecture/variant`) as found in index entries and configs, with
//! normalization of architecture aliases and matching against a wanted platform.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform, as in an OCI index entry's `platform` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// GOARCH value (`amd64`, `arm64`, `arm`, ...).
    pub architecture: String,
    /// GOOS value (`linux`, `windows`).
    pub os: String,
    /// `os.version`.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Docker manifest lists' `features`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

/// Why a platform string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: expected os/arch or os/arch/variant (e.g. linux/arm64/v8)")]
pub struct PlatformParseError {
    /// The rejected text.
    pub input: String,
}

impl Platform {
    /// The platform this build of stowage targets by default: `linux/amd64`.
    pub fn native() -> Self {
        Self::new("linux", "amd64", None)
    }

    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            ..Self::default()
        }
    }

    /// Normalizes aliases the way containerd does: `x86_64`→`amd64`, `aarch64`→`arm64`
    /// (variant `v8` dropped as the default), `armhf`→`arm/v7`, `armel`→`arm/v6`,
    /// `arm` without variant → `arm/v7`, `i386`/`x86`→`386`; os is lowercased.
    pub fn normalized(&self) -> Self {
        let mut out = self.clone();
        out.os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (arch, variant) = match (arch.as_str(), variant.as_deref()) {
            ("x86_64" | "x86-64" | "amd64", v) => {
                ("amd64", v.filter(|v| *v != "v1").map(str::to_owned))
            }
            ("aarch64" | "arm64", v) => (
                "arm64",
                v.filter(|v| *v != "v8" && *v != "8").map(str::to_owned),
            ),
            ("armhf", _) => ("arm", Some("v7".to_owned())),
            ("armel", _) => ("arm", Some("v6".to_owned())),
            ("arm", None) => ("arm", Some("v7".to_owned())),
            ("arm", Some(v)) => ("arm", Some(format!("v{}", v.trim_start_matches('v')))),
            ("i386" | "i686" | "x86" | "386", v) => ("386", v.map(str::to_owned)),
            (other, v) => (other, v.map(str::to_owned)),
        };
        out.architecture = arch.to_owned();
        out.variant = variant;
        out
    }

    /// Whether an image for `self` satisfies a request for `wanted`: same os and
    /// architecture after normalization, and the same variant when `wanted` names one.
    pub fn matches(&self, wanted: &Platform) -> bool {
        let have = self.normalized();
        let want = wanted.normalized();
        have.os == want.os
            && have.architecture == want.architecture
            && (wanted.variant.is_none() || have.variant == want.variant)
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
    type Err = PlatformParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PlatformParseError {
            input: s.to_owned(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self::new(os, arch, None)),
            [os, arch, variant] => Ok(Self::new(os, arch, Some(variant))),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(Platform::native().to_string(), "linux/amd64");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }

    #[test]
    fn matching_normalizes_aliases_and_variants() {
        assert!(p("linux/x86_64").matches(&Platform::native()));
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        assert!(!p("linux/arm64").matches(&Platform::native()));
        assert!(!p("windows/amd64").matches(&Platform::native()));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/aarch64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(p("linux/arm/v6").matches(&p("linux/arm")));
        assert!(p("linux/armhf").matches(&p("linux/arm/v7")));
    }
}
