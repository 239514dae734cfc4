//! Which paths of a final filesystem are package caches or temporary files
//! (safe to drop) and which belong to build toolchains (belong in a build
//! stage, not the runtime image). Paths have no leading slash.

use serde::{Deserialize, Serialize};

/// Whether a path is leftover cache or a build tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Package manager caches and temporary files.
    Cache,
    /// Compilers, headers and SDKs.
    Toolchain,
}

/// A classified path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// Cache or toolchain.
    pub family: Family,
    /// Short name, e.g. `apt lists`.
    pub category: &'static str,
    /// The directory the finding is reported under, e.g. `/var/lib/apt/lists`.
    pub location: String,
    /// How to avoid it.
    pub fix: &'static str,
}

fn class(family: Family, category: &'static str, location: &str, fix: &'static str) -> Class {
    Class {
        family,
        category,
        location: format!("/{location}"),
        fix,
    }
}

/// `home/NAME/rest` or `root/rest` → (`home/NAME` or `root`, `rest`).
fn split_home(path: &str) -> Option<(&str, &str)> {
    if let Some(rest) = path.strip_prefix("root/") {
        return Some(("root", rest));
    }
    let rest = path.strip_prefix("home/")?;
    let (user, below) = rest.split_once('/')?;
    let home_len = "home/".len() + user.len();
    Some((path.get(..home_len)?, below))
}

/// Classifies one path of the final filesystem, or `None` when it is neither.
pub fn classify(path: &str) -> Option<Class> {
    use Family::{Cache, Toolchain};
    if path.starts_with("var/lib/apt/lists/") && !path.ends_with("/lock") {
        return Some(class(
            Cache,
            "apt lists",
            "var/lib/apt/lists",
            "add `&& rm -rf /var/lib/apt/lists/*` to the same RUN as apt-get install",
        ));
    }
    if let Some(rest) = path.strip_prefix("var/cache/apt/")
        && (rest.ends_with(".bin") || rest.ends_with(".deb"))
    {
        return Some(class(
            Cache,
            "apt cache",
            "var/cache/apt",
            "add `&& apt-get clean` to the same RUN as apt-get install",
        ));
    }
    if path.starts_with("var/cache/apk/") {
        return Some(class(
            Cache,
            "apk cache",
            "var/cache/apk",
            "use `apk add --no-cache`",
        ));
    }
    for (dir, category, fix) in [
        (
            "var/cache/yum/",
            "yum cache",
            "add `&& yum clean all` to the same RUN",
        ),
        (
            "var/cache/dnf/",
            "dnf cache",
            "add `&& dnf clean all` to the same RUN",
        ),
    ] {
        if path.starts_with(dir) {
            return Some(class(Cache, category, dir.trim_end_matches('/'), fix));
        }
    }
    if let Some((home, rest)) = split_home(path) {
        let caches: [(&str, &str, &str); 5] = [
            (
                ".cache/pip/",
                "pip cache",
                "use `pip install --no-cache-dir`",
            ),
            (
                ".npm/",
                "npm cache",
                "add `&& npm cache clean --force` to the same RUN",
            ),
            (
                ".cache/go-build/",
                "go build cache",
                "build in a separate stage or use a cache mount",
            ),
            (
                ".cargo/registry/",
                "cargo registry",
                "build in a separate stage or use a cache mount",
            ),
            (
                ".cache/yarn/",
                "yarn cache",
                "add `&& yarn cache clean` to the same RUN",
            ),
        ];
        for (dir, category, fix) in caches {
            if rest.starts_with(dir) {
                let location = format!("{home}/{}", dir.trim_end_matches('/'));
                return Some(class(Cache, category, &location, fix));
            }
        }
        if rest.starts_with(".rustup/") {
            return Some(class(
                Toolchain,
                "rust toolchain",
                &format!("{home}/.rustup"),
                "build in a separate stage and copy only the binary",
            ));
        }
    }
    for dir in ["tmp/", "var/tmp/"] {
        if path.starts_with(dir) {
            return Some(class(
                Cache,
                "temporary files",
                dir.trim_end_matches('/'),
                "delete temporary files in the RUN that created them",
            ));
        }
    }
    const MULTI_STAGE: &str = "build in a separate stage and copy only the results";
    if path.starts_with("usr/lib/gcc/") || path.starts_with("usr/libexec/gcc/") {
        let location = if path.starts_with("usr/lib/") {
            "usr/lib/gcc"
        } else {
            "usr/libexec/gcc"
        };
        return Some(class(Toolchain, "gcc", location, MULTI_STAGE));
    }
    if let Some(name) = path.strip_prefix("usr/bin/") {
        let compiler = [
            "gcc", "g++", "cc", "c++", "cpp", "ld", "as", "rustc", "cargo", "javac", "go",
        ]
        .iter()
        .any(|tool| {
            name == *tool
                || name.starts_with(&format!("{tool}-"))
                || name.ends_with(&format!("-{tool}"))
                || name.contains(&format!("-{tool}-"))
        });
        if compiler {
            return Some(class(Toolchain, "compilers", "usr/bin", MULTI_STAGE));
        }
    }
    if path.starts_with("usr/include/") {
        return Some(class(
            Toolchain,
            "development headers",
            "usr/include",
            "install -dev packages only in a build stage",
        ));
    }
    if path.starts_with("usr/local/go/") {
        return Some(class(
            Toolchain,
            "go toolchain",
            "usr/local/go",
            MULTI_STAGE,
        ));
    }
    if let Some(rest) = path.strip_prefix("usr/lib/")
        && rest.starts_with("go-")
    {
        let location = format!("usr/lib/{}", rest.split('/').next().unwrap_or("go"));
        return Some(class(Toolchain, "go toolchain", &location, MULTI_STAGE));
    }
    for dir in [
        "usr/local/rustup/",
        "usr/lib/rustlib/",
        "usr/local/lib/rustlib/",
    ] {
        if path.starts_with(dir) {
            return Some(class(
                Toolchain,
                "rust toolchain",
                dir.trim_end_matches('/'),
                MULTI_STAGE,
            ));
        }
    }
    if let Some(rest) = path.strip_prefix("usr/lib/jvm/") {
        let jdk = rest.split('/').next().unwrap_or_default();
        if jdk.contains("jdk") && !jdk.contains("jre") {
            return Some(class(
                Toolchain,
                "jdk",
                &format!("usr/lib/jvm/{jdk}"),
                "run on a JRE image; compile in a build stage",
            ));
        }
    }
    if path.starts_with("usr/share/doc/build-essential/") {
        return Some(class(
            Toolchain,
            "build-essential",
            "usr/share/doc/build-essential",
            MULTI_STAGE,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_and_toolchains_are_recognised() {
        let category = |p: &str| classify(p).map(|c| c.category);
        assert_eq!(
            category("var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease"),
            Some("apt lists")
        );
        assert_eq!(category("var/lib/apt/lists/lock"), None);
        assert_eq!(category("var/cache/apt/pkgcache.bin"), Some("apt cache"));
        assert_eq!(
            category("var/cache/apt/archives/gcc_12.deb"),
            Some("apt cache")
        );
        assert_eq!(category("root/.cache/pip/http/a/b"), Some("pip cache"));
        assert_eq!(category("home/app/.npm/_cacache/x"), Some("npm cache"));
        assert_eq!(
            classify("home/app/.npm/_cacache/x").map(|c| c.location),
            Some("/home/app/.npm".to_owned())
        );
        assert_eq!(category("tmp/build.log"), Some("temporary files"));
        assert_eq!(category("usr/lib/gcc/x86_64-linux-gnu/12/cc1"), Some("gcc"));
        assert_eq!(
            category("usr/bin/x86_64-linux-gnu-gcc-12"),
            Some("compilers")
        );
        assert_eq!(category("usr/bin/gcc"), Some("compilers"));
        assert_eq!(category("usr/bin/python3"), None);
        assert_eq!(category("usr/include/stdio.h"), Some("development headers"));
        assert_eq!(category("usr/local/go/bin/go"), Some("go toolchain"));
        assert_eq!(
            category("usr/lib/jvm/java-17-openjdk-amd64/bin/javac"),
            Some("jdk")
        );
        assert_eq!(category("usr/lib/python3/dist-packages/x.py"), None);
    }
}
