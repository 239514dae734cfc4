//! Choosing the ignore file for a build and filtering build-context paths.

use std::path::{Path, PathBuf};

use crate::matcher::{MatchError, PatternError, PatternMatcher};
use crate::read::read_patterns;

/// Failure to set up a [`ContextFilter`].
#[derive(Debug, thiserror::Error)]
pub enum ContextFilterError {
    /// The ignore file exists but cannot be read.
    #[error("cannot read ignore file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The ignore file's patterns are invalid (for example a lone `!`).
    #[error("invalid ignore file {path}: {source}")]
    Patterns {
        /// The file, or empty when the patterns did not come from a file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: PatternError,
    },
}

/// The ignore file that applies when building `context_dir` with the
/// Dockerfile at `dockerfile` (a relative `dockerfile` is taken relative to
/// `context_dir`): `<dockerfile-name>.dockerignore` next to the Dockerfile
/// wins, otherwise `<context_dir>/.dockerignore`; `None` when neither is a
/// file.
pub fn ignore_file_for(context_dir: &Path, dockerfile: &Path) -> Option<PathBuf> {
    let dockerfile = if dockerfile.is_absolute() {
        dockerfile.to_path_buf()
    } else {
        context_dir.join(dockerfile)
    };
    if let Some(name) = dockerfile.file_name() {
        let mut specific_name = name.to_os_string();
        specific_name.push(".dockerignore");
        let specific = dockerfile.with_file_name(specific_name);
        if specific.is_file() {
            return Some(specific);
        }
    }
    let shared = context_dir.join(".dockerignore");
    shared.is_file().then_some(shared)
}

/// Decides which files of a build context reach the build. Paths are
/// relative to the context root with `/` separators (`dir/file.txt`).
#[derive(Debug, Clone)]
pub struct ContextFilter {
    matcher: Option<PatternMatcher>,
    source: Option<PathBuf>,
}

impl ContextFilter {
    /// A filter that lets everything through.
    pub fn include_all() -> Self {
        Self {
            matcher: None,
            source: None,
        }
    }

    /// A filter from an already-read pattern list.
    pub fn from_patterns<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self {
            matcher: Some(PatternMatcher::new(patterns)?),
            source: None,
        })
    }

    /// A filter from `.dockerignore` file contents.
    pub fn from_ignore_text(text: &[u8]) -> Result<Self, PatternError> {
        Self::from_patterns(read_patterns(text))
    }

    /// The filter for building `context_dir` with `dockerfile`, reading the
    /// ignore file chosen by [`ignore_file_for`] (none means include all).
    pub fn load(context_dir: &Path, dockerfile: &Path) -> Result<Self, ContextFilterError> {
        let Some(path) = ignore_file_for(context_dir, dockerfile) else {
            return Ok(Self::include_all());
        };
        let text = std::fs::read(&path).map_err(|source| ContextFilterError::Read {
            path: path.clone(),
            source,
        })?;
        let mut filter =
            Self::from_ignore_text(&text).map_err(|source| ContextFilterError::Patterns {
                path: path.clone(),
                source,
            })?;
        filter.source = Some(path);
        Ok(filter)
    }

    /// The ignore file this filter was loaded from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The underlying matcher, if there are patterns.
    pub fn matcher(&self) -> Option<&PatternMatcher> {
        self.matcher.as_ref()
    }

    /// Whether the file or directory at `relative_path` reaches the build.
    pub fn is_included(&self, relative_path: &str) -> Result<bool, MatchError> {
        match &self.matcher {
            Some(matcher) => Ok(!matcher.matches(relative_path)?),
            None => Ok(true),
        }
    }

    /// Whether a walker may skip the directory `relative_dir` and everything
    /// below it (see [`PatternMatcher::can_skip_dir`]).
    pub fn can_skip_dir(&self, relative_dir: &str) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|matcher| matcher.can_skip_dir(relative_dir))
    }

    /// The paths of `paths` that reach the build, in their original order.
    pub fn filter<'a, I>(&self, paths: I) -> Result<Vec<&'a str>, MatchError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut included = Vec::new();
        for path in paths {
            if self.is_included(path)? {
                included.push(path);
            }
        }
        Ok(included)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ignore_file_includes_everything() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ignore_file_for(dir.path(), Path::new("Dockerfile")), None);
        let filter = ContextFilter::load(dir.path(), Path::new("Dockerfile")).unwrap();
        assert!(filter.is_included("anything").unwrap());
        assert!(filter.source().is_none());
    }

    #[test]
    fn dockerfile_in_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        std::fs::write(dir.path().join("docker/app.Dockerfile.dockerignore"), "x\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "y\n").unwrap();
        assert_eq!(
            ignore_file_for(dir.path(), Path::new("docker/app.Dockerfile")),
            Some(dir.path().join("docker/app.Dockerfile.dockerignore"))
        );
        assert_eq!(
            ignore_file_for(dir.path(), Path::new("docker/other")),
            Some(dir.path().join(".dockerignore"))
        );
    }
}
