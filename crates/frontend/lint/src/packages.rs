//! What a RUN's shell commands do with package managers and dependency
//! tools: installs (with their packages and flags), cache clean-ups, `cd`,
//! recursive `chown`/`chmod`, and `set -o pipefail`.

use crate::shell::{Script, SimpleCommand};

/// A package manager the rules know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// apt-get / apt.
    Apt,
    /// apk.
    Apk,
    /// pip / pip3 / python -m pip.
    Pip,
    /// npm.
    Npm,
    /// yarn.
    Yarn,
    /// gem.
    Gem,
    /// yum.
    Yum,
    /// dnf / microdnf.
    Dnf,
}

/// One install command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The manager.
    pub manager: Manager,
    /// The program as written (`apt-get`, `pip3`, ...).
    pub program: String,
    /// Package arguments.
    pub packages: Vec<String>,
    /// Option words.
    pub options: Vec<String>,
    /// `-r` requirement files (pip).
    pub requirement_files: Vec<String>,
}

impl Install {
    /// Whether an option word was given.
    pub fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }
}

/// Facts about one RUN.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// `apt-get update` runs.
    pub apt_update: bool,
    /// An `rm` of `/var/lib/apt/lists`.
    pub apt_lists_removed: bool,
    /// `rm` of `/var/cache/apk`.
    pub apk_cache_removed: bool,
    /// `yum clean all` or `rm -rf /var/cache/yum`.
    pub yum_cleaned: bool,
    /// `dnf clean all` or `rm -rf /var/cache/dnf`.
    pub dnf_cleaned: bool,
    /// `npm cache clean`.
    pub npm_cache_cleaned: bool,
    /// `yarn cache clean`.
    pub yarn_cache_cleaned: bool,
    /// `pip` cache removed (`rm -rf ~/.cache/pip`, `pip cache purge`).
    pub pip_cache_removed: bool,
    /// Every install.
    pub installs: Vec<Install>,
    /// Dependency installs from a manifest (tool name).
    pub dependency_installs: Vec<&'static str>,
    /// A `cd` command.
    pub has_cd: bool,
    /// Recursive chown/chmod: (program, paths).
    pub recursive_owner_changes: Vec<(String, Vec<String>)>,
    /// `set -o pipefail` (or `set -euo pipefail`) appears.
    pub sets_pipefail: bool,
    /// Number of simple commands.
    pub command_count: usize,
    /// Variables set by `NAME=value` before a command.
    pub assignments: Vec<String>,
}

fn options_with_values(manager: Manager) -> &'static [&'static str] {
    match manager {
        Manager::Apt => &[
            "-o",
            "-t",
            "-c",
            "--option",
            "--target-release",
            "--config-file",
        ],
        Manager::Apk => &[
            "-t",
            "--virtual",
            "-X",
            "--repository",
            "--repositories-file",
            "-p",
            "--root",
            "--arch",
            "--cache-dir",
        ],
        Manager::Pip => &[
            "-r",
            "--requirement",
            "-c",
            "--constraint",
            "-e",
            "--editable",
            "-i",
            "--index-url",
            "--extra-index-url",
            "-f",
            "--find-links",
            "-t",
            "--target",
            "--prefix",
            "--root",
            "--trusted-host",
            "--platform",
            "--python-version",
            "--implementation",
            "--abi",
            "--src",
            "--upgrade-strategy",
            "--progress-bar",
            "--cache-dir",
            "--log",
            "--proxy",
            "--retries",
            "--timeout",
            "--global-option",
            "--install-option",
            "--config-settings",
            "--only-binary",
            "--no-binary",
        ],
        Manager::Npm | Manager::Yarn => &["--prefix", "--registry", "--cache", "-w", "--workspace"],
        Manager::Gem => &[
            "-v",
            "--version",
            "-i",
            "--install-dir",
            "-n",
            "--bindir",
            "-s",
            "--source",
        ],
        Manager::Yum | Manager::Dnf => &[
            "-c",
            "--config",
            "--enablerepo",
            "--disablerepo",
            "--releasever",
            "--installroot",
            "--setopt",
            "-x",
            "--exclude",
        ],
    }
}

/// Split the words after the subcommand into options and packages.
fn install_from(manager: Manager, program: &str, words: &[String]) -> Install {
    let takes_value = options_with_values(manager);
    let mut install = Install {
        manager,
        program: program.to_string(),
        packages: Vec::new(),
        options: Vec::new(),
        requirement_files: Vec::new(),
    };
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        if word.starts_with('-') && word.len() > 1 {
            install.options.push(word.clone());
            let name = word.split('=').next().unwrap_or(word);
            if takes_value.contains(&name) && !word.contains('=') {
                if let Some(value) = iter.next() {
                    if manager == Manager::Pip && (name == "-r" || name == "--requirement") {
                        install.requirement_files.push(value.clone());
                    }
                    install.options.push(value.clone());
                }
            } else if manager == Manager::Pip && name == "--requirement" {
                if let Some((_, value)) = word.split_once('=') {
                    install.requirement_files.push(value.to_string());
                }
            } else if manager == Manager::Pip && word.starts_with("-r") && word.len() > 2 {
                install.requirement_files.push(word[2..].to_string());
            }
        } else {
            install.packages.push(word.clone());
        }
    }
    install
}

/// The first non-option word and the words after it.
fn subcommand<'a>(args: &'a [String], takes_value: &[&str]) -> Option<(&'a str, &'a [String])> {
    let mut index = 0usize;
    while let Some(word) = args.get(index) {
        if word.starts_with('-') {
            if takes_value.contains(&word.as_str()) {
                index += 1;
            }
            index += 1;
            continue;
        }
        return Some((word.as_str(), args.get(index + 1..).unwrap_or(&[])));
    }
    None
}

fn is_pip(command: &SimpleCommand) -> Option<&[String]> {
    let program = command.program();
    let is_pip_name = |name: &str| {
        name == "pip"
            || name.strip_prefix("pip").is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
            })
    };
    if is_pip_name(program) {
        return Some(command.args());
    }
    if program.starts_with("python") {
        let args = command.args();
        if let Some(position) = args.iter().position(|w| w == "-m")
            && args.get(position + 1).is_some_and(|m| is_pip_name(m))
        {
            return Some(args.get(position + 2..).unwrap_or(&[]));
        }
    }
    None
}

fn removes(command: &SimpleCommand, path: &str) -> bool {
    command.program() == "rm" && command.args().iter().any(|a| a.starts_with(path))
}

/// Analyse one RUN's script.
pub fn analyse(script: &Script) -> RunFacts {
    let mut facts = RunFacts {
        command_count: script.commands.len(),
        ..RunFacts::default()
    };
    for command in &script.commands {
        facts
            .assignments
            .extend(command.assignments.iter().cloned());
        let program = command.program();
        let args = command.args();
        let first = args.first().map(String::as_str).unwrap_or("");
        match program {
            "apt-get" | "apt" => match subcommand(args, options_with_values(Manager::Apt)) {
                Some(("update", _)) => facts.apt_update = true,
                Some(("install", rest)) => {
                    let before: Vec<String> = args
                        .iter()
                        .take_while(|w| w.as_str() != "install")
                        .cloned()
                        .collect();
                    let mut install = install_from(Manager::Apt, program, rest);
                    install.options.extend(before);
                    facts.installs.push(install);
                }
                _ => {}
            },
            "apk" => {
                if let Some(("add", rest)) = subcommand(args, options_with_values(Manager::Apk)) {
                    let before: Vec<String> = args
                        .iter()
                        .take_while(|w| w.as_str() != "add")
                        .cloned()
                        .collect();
                    let mut install = install_from(Manager::Apk, program, rest);
                    install.options.extend(before);
                    facts.installs.push(install);
                }
            }
            "npm" => match first {
                "install" | "i" | "add" | "ci" => {
                    let install = install_from(Manager::Npm, program, args.get(1..).unwrap_or(&[]));
                    if install.packages.is_empty() {
                        facts.dependency_installs.push("npm");
                    }
                    facts.installs.push(install);
                }
                "cache" if args.get(1).is_some_and(|w| w == "clean") => {
                    facts.npm_cache_cleaned = true
                }
                _ => {}
            },
            "yarn" => match first {
                "" | "install" => {
                    facts.dependency_installs.push("yarn");
                    facts
                        .installs
                        .push(install_from(Manager::Yarn, program, &[]));
                }
                "add" => facts.installs.push(install_from(
                    Manager::Yarn,
                    program,
                    args.get(1..).unwrap_or(&[]),
                )),
                "cache" if args.get(1).is_some_and(|w| w == "clean") => {
                    facts.yarn_cache_cleaned = true
                }
                _ => {}
            },
            "gem" if first == "install" => facts.installs.push(install_from(
                Manager::Gem,
                program,
                args.get(1..).unwrap_or(&[]),
            )),
            "yum" | "dnf" | "microdnf" => {
                let manager = if program == "yum" {
                    Manager::Yum
                } else {
                    Manager::Dnf
                };
                match subcommand(args, options_with_values(manager)) {
                    Some(("install", rest)) => {
                        facts.installs.push(install_from(manager, program, rest))
                    }
                    Some(("clean", rest)) if rest.iter().any(|w| w == "all") => {
                        if manager == Manager::Yum {
                            facts.yum_cleaned = true;
                        } else {
                            facts.dnf_cleaned = true;
                        }
                    }
                    _ => {}
                }
            }
            "go" if first == "get"
                || (first == "mod" && args.get(1).is_some_and(|w| w == "download")) =>
            {
                facts.dependency_installs.push("go mod")
            }
            "cargo" if matches!(first, "build" | "fetch" | "install" | "vendor") => {
                facts.dependency_installs.push("cargo")
            }
            "bundle" | "bundler" if first == "install" || first.is_empty() => {
                facts.dependency_installs.push("bundle")
            }
            "composer" if first == "install" || first == "update" => {
                facts.dependency_installs.push("composer")
            }
            "mvn" | "mvnw" => facts.dependency_installs.push("maven"),
            "gradle" | "gradlew" => facts.dependency_installs.push("gradle"),
            "cd" => facts.has_cd = true,
            "set" => {
                let mut next_is_option = false;
                for word in args {
                    if next_is_option && word == "pipefail" {
                        facts.sets_pipefail = true;
                    }
                    next_is_option = word.starts_with('-') && word.ends_with('o');
                }
            }
            "chown" | "chmod" => {
                let recursive = args.iter().any(|a| {
                    a == "--recursive"
                        || (a.starts_with('-') && !a.starts_with("--") && a.contains('R'))
                });
                if recursive {
                    let operands: Vec<String> = args
                        .iter()
                        .filter(|a| !a.starts_with('-'))
                        .skip(1)
                        .cloned()
                        .collect();
                    facts
                        .recursive_owner_changes
                        .push((program.to_string(), operands));
                }
            }
            _ => {}
        }
        if let Some(pip_args) = is_pip(command) {
            match pip_args.first().map(String::as_str) {
                Some("install") => {
                    let install =
                        install_from(Manager::Pip, program, pip_args.get(1..).unwrap_or(&[]));
                    if !install.requirement_files.is_empty()
                        || install
                            .packages
                            .iter()
                            .any(|p| p == "." || p.starts_with("./"))
                    {
                        facts.dependency_installs.push("pip");
                    }
                    facts.installs.push(install);
                }
                Some("cache") if pip_args.get(1).is_some_and(|w| w == "purge") => {
                    facts.pip_cache_removed = true
                }
                _ => {}
            }
        }
        if removes(command, "/var/lib/apt/lists") {
            facts.apt_lists_removed = true;
        }
        if removes(command, "/var/cache/apk") {
            facts.apk_cache_removed = true;
        }
        if removes(command, "/var/cache/yum") {
            facts.yum_cleaned = true;
        }
        if removes(command, "/var/cache/dnf") {
            facts.dnf_cleaned = true;
        }
        if removes(command, "/root/.cache") || removes(command, "~/.cache") {
            facts.pip_cache_removed = true;
        }
        if removes(command, "/root/.npm") || removes(command, "~/.npm") {
            facts.npm_cache_cleaned = true;
        }
    }
    facts
}

/// Whether an install argument names a pinned package.
pub fn is_pinned(manager: Manager, package: &str) -> bool {
    match manager {
        Manager::Apt => package.contains('=') || package.contains('/') || package.ends_with(".deb"),
        Manager::Apk => package.contains('=') || package.ends_with(".apk"),
        Manager::Pip => {
            ["==", ">=", "<=", "~=", "!=", "<", ">", "@"]
                .iter()
                .any(|op| package.contains(op))
                || package.starts_with('.')
                || package.starts_with('/')
                || package.contains("://")
                || package.ends_with(".whl")
                || package.ends_with(".tar.gz")
                || package.ends_with(".zip")
        }
        Manager::Npm | Manager::Yarn => {
            let name = package.strip_prefix('@').unwrap_or(package);
            name.contains('@')
                || package.starts_with('.')
                || package.starts_with('/')
                || package.contains("://")
                || package.starts_with("git")
                || package.ends_with(".tgz")
        }
        Manager::Gem => package.contains(':'),
        Manager::Yum | Manager::Dnf => {
            package.contains('-') && package.chars().any(|c| c.is_ascii_digit())
        }
    }
}

/// Build-toolchain packages (compilers, headers, SDKs).
pub fn is_toolchain(package: &str) -> bool {
    let name = package.split(['=', ':']).next().unwrap_or(package);
    const EXACT: [&str; 23] = [
        "build-essential",
        "build-base",
        "gcc",
        "g++",
        "make",
        "cmake",
        "clang",
        "llvm",
        "golang",
        "golang-go",
        "go",
        "rust",
        "rustc",
        "cargo",
        "default-jdk",
        "maven",
        "gradle",
        "autoconf",
        "automake",
        "libtool",
        "gcc-c++",
        "musl-dev",
        "pkg-config",
    ];
    EXACT.contains(&name)
        || name.ends_with("-dev")
        || name.ends_with("-devel")
        || (name.starts_with("openjdk") && name.ends_with("-jdk"))
        || (name.starts_with("gcc-") && name[4..].chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::split;

    #[test]
    fn apt_install_options_and_packages() {
        let facts = analyse(&split(
            "apt-get update && apt-get -y install --no-install-recommends curl=7 git && rm -rf /var/lib/apt/lists/*",
        ));
        assert!(facts.apt_update && facts.apt_lists_removed);
        let install = &facts.installs[0];
        assert_eq!(install.packages, vec!["curl=7", "git"]);
        assert!(install.has_option("--no-install-recommends") && install.has_option("-y"));
    }

    #[test]
    fn pip_requirements_and_dependency_installs() {
        let facts = analyse(&split(
            "python3 -m pip install --no-cache-dir -r req.txt flask==2 && npm ci && go mod download",
        ));
        assert_eq!(facts.installs[0].requirement_files, vec!["req.txt"]);
        assert_eq!(facts.installs[0].packages, vec!["flask==2"]);
        assert_eq!(facts.dependency_installs, vec!["pip", "npm", "go mod"]);
    }

    #[test]
    fn pins_and_toolchains() {
        assert!(is_pinned(Manager::Npm, "@scope/pkg@1.2"));
        assert!(!is_pinned(Manager::Npm, "@scope/pkg"));
        assert!(!is_pinned(Manager::Pip, "requests"));
        assert!(
            is_toolchain("python3-dev") && is_toolchain("openjdk-17-jdk") && !is_toolchain("curl")
        );
        assert!(analyse(&split("set -euxo pipefail; a | b")).sets_pipefail);
        assert_eq!(
            analyse(&split("chown -R app:app /app")).recursive_owner_changes[0].1,
            vec!["/app"]
        );
    }
}
