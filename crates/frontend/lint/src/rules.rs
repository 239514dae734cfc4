//! stowage's own rules (`STW0xx`): the seed's tips checked on the text of
//! the Dockerfile, plus the hadolint-style hygiene rules they overlap with.

use stowage_dockerfile::{Arguments, Node};

use crate::packages::{Manager, is_pinned, is_toolchain};
use crate::view::{View, has_cache_mount, run_facts, run_script, words};
use crate::{Finding, LintOptions, LintReport, SeedTip, Severity};

/// Static description of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// Stable ID.
    pub id: &'static str,
    /// Kebab-case name.
    pub name: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// Seed tip.
    pub tip: SeedTip,
    /// One-line description.
    pub description: &'static str,
    /// hadolint rules that check the same thing.
    pub hadolint: &'static [&'static str],
}

const fn rule(
    id: &'static str,
    name: &'static str,
    severity: Severity,
    tip: SeedTip,
    description: &'static str,
    hadolint: &'static [&'static str],
) -> RuleInfo {
    RuleInfo {
        id,
        name,
        severity,
        tip,
        description,
        hadolint,
    }
}

use SeedTip as T;
use Severity::{Error as E, Info as I, Warning as W};

/// Every rule, stowage's and BuildKit's.
pub const RULES: &[RuleInfo] = &[
    rule(
        "STW001",
        "consecutive-run",
        I,
        T::FewerLayers,
        "RUNs in a row that could be one layer",
        &["DL3059"],
    ),
    rule(
        "STW002",
        "apt-update-separate-run",
        W,
        T::CleanCachesSameLayer,
        "apt-get update in a different RUN from apt-get install (stale cache layer)",
        &[],
    ),
    rule(
        "STW003",
        "apt-lists-not-cleaned",
        W,
        T::CleanCachesSameLayer,
        "apt lists not removed in the RUN that downloaded them",
        &["DL3009"],
    ),
    rule(
        "STW004",
        "apk-no-cache",
        W,
        T::CleanCachesSameLayer,
        "apk add without --no-cache",
        &["DL3019"],
    ),
    rule(
        "STW005",
        "pip-no-cache-dir",
        W,
        T::CleanCachesSameLayer,
        "pip install without --no-cache-dir",
        &["DL3042"],
    ),
    rule(
        "STW006",
        "package-cache-not-cleaned",
        W,
        T::CleanCachesSameLayer,
        "yum/dnf/npm/yarn install without cleaning its cache in the same RUN",
        &["DL3032", "DL3040", "DL3060"],
    ),
    rule(
        "STW007",
        "apt-no-install-recommends",
        W,
        T::NoInstallRecommends,
        "apt-get install without --no-install-recommends",
        &["DL3015"],
    ),
    rule(
        "STW008",
        "unpinned-package",
        W,
        T::PinVersions,
        "package installed without a pinned version",
        &["DL3008", "DL3018", "DL3013", "DL3016", "DL3028"],
    ),
    rule(
        "STW009",
        "base-image-unpinned",
        W,
        T::SmallBase,
        "FROM with :latest or without a tag",
        &["DL3006", "DL3007"],
    ),
    rule(
        "STW010",
        "dependency-install-after-copy-all",
        W,
        T::ManifestFirst,
        "dependency install after COPY of the whole context (copy the manifest first)",
        &[],
    ),
    rule(
        "STW011",
        "toolchain-in-final-stage",
        W,
        T::MultiStage,
        "build toolchain installed in the final stage",
        &[],
    ),
    rule(
        "STW012",
        "context-not-lean",
        W,
        T::LeanContext,
        "context without .dockerignore holding VCS/dependency/build folders or large unused files",
        &[],
    ),
    rule(
        "STW013",
        "recursive-owner-change",
        W,
        T::UserAndLayers,
        "chown/chmod -R over files an earlier layer added duplicates them",
        &[],
    ),
    rule(
        "STW014",
        "add-instead-of-copy",
        W,
        T::General,
        "ADD of a local non-archive source: COPY would do",
        &["DL3020"],
    ),
    rule(
        "STW015",
        "relative-workdir",
        W,
        T::General,
        "relative WORKDIR",
        &["DL3000"],
    ),
    rule(
        "STW016",
        "cd-in-run",
        I,
        T::General,
        "cd in RUN: use WORKDIR",
        &["DL3003"],
    ),
    rule(
        "STW017",
        "root-user",
        W,
        T::UserAndLayers,
        "the final stage runs as root",
        &["DL3002"],
    ),
    rule(
        "STW018",
        "secret-in-build-arg",
        E,
        T::General,
        "secret passed with --build-arg lands in the image history",
        &[],
    ),
    rule(
        "STW019",
        "missing-pipefail",
        W,
        T::General,
        "pipe in RUN without set -o pipefail",
        &["DL4006"],
    ),
    rule(
        "ConsistentInstructionCasing",
        "consistent-instruction-casing",
        W,
        T::General,
        "instruction keywords should use one casing",
        &[],
    ),
    rule(
        "CopyIgnoredFile",
        "copy-ignored-file",
        W,
        T::LeanContext,
        "COPY/ADD of a path excluded by .dockerignore",
        &[],
    ),
    rule(
        "DuplicateStageName",
        "duplicate-stage-name",
        E,
        T::General,
        "stage names should be unique",
        &[],
    ),
    rule(
        "ExposeInvalidFormat",
        "expose-invalid-format",
        W,
        T::General,
        "EXPOSE with an IP address or host-port mapping",
        &[],
    ),
    rule(
        "ExposeProtoCasing",
        "expose-proto-casing",
        W,
        T::General,
        "EXPOSE protocol should be lowercase",
        &[],
    ),
    rule(
        "FromAsCasing",
        "from-as-casing",
        W,
        T::General,
        "'as' and 'FROM' keywords' casing do not match",
        &[],
    ),
    rule(
        "FromPlatformFlagConstDisallowed",
        "from-platform-flag-const-disallowed",
        W,
        T::General,
        "FROM --platform with a constant value",
        &[],
    ),
    rule(
        "InvalidDefaultArgInFrom",
        "invalid-default-arg-in-from",
        W,
        T::General,
        "FROM is invalid with the global ARGs' defaults",
        &[],
    ),
    rule(
        "InvalidDefinitionDescription",
        "invalid-definition-description",
        I,
        T::General,
        "comment above FROM AS / ARG is not a `# name description`",
        &[],
    ),
    rule(
        "JSONArgsRecommended",
        "json-args-recommended",
        W,
        T::General,
        "JSON arguments recommended for ENTRYPOINT/CMD",
        &["DL3025"],
    ),
    rule(
        "LegacyKeyValueFormat",
        "legacy-key-value-format",
        W,
        T::General,
        "legacy `KEY value` form",
        &[],
    ),
    rule(
        "MaintainerDeprecated",
        "maintainer-deprecated",
        W,
        T::General,
        "MAINTAINER is deprecated",
        &["DL4000"],
    ),
    rule(
        "MultipleInstructionsDisallowed",
        "multiple-instructions-disallowed",
        W,
        T::General,
        "several CMD/ENTRYPOINT/HEALTHCHECK in one stage",
        &[],
    ),
    rule(
        "NoEmptyContinuation",
        "no-empty-continuation",
        W,
        T::General,
        "empty continuation line",
        &[],
    ),
    rule(
        "RedundantTargetPlatform",
        "redundant-target-platform",
        W,
        T::General,
        "--platform=$TARGETPLATFORM is the default",
        &[],
    ),
    rule(
        "ReservedStageName",
        "reserved-stage-name",
        E,
        T::General,
        "reserved word used as a stage name",
        &[],
    ),
    rule(
        "SecretsUsedInArgOrEnv",
        "secrets-used-in-arg-or-env",
        W,
        T::General,
        "sensitive-looking ARG/ENV name",
        &[],
    ),
    rule(
        "StageNameCasing",
        "stage-name-casing",
        W,
        T::General,
        "stage names should be lowercase",
        &[],
    ),
    rule(
        "UndefinedArgInFrom",
        "undefined-arg-in-from",
        W,
        T::General,
        "FROM uses an undeclared ARG",
        &[],
    ),
    rule(
        "UndefinedVar",
        "undefined-var",
        W,
        T::General,
        "use of an undefined variable",
        &[],
    ),
    rule(
        "WorkdirRelativePath",
        "workdir-relative-path",
        W,
        T::General,
        "relative WORKDIR without an absolute one before it",
        &["DL3000"],
    ),
];

/// The rule with this ID or name.
pub fn rule_info(id: &str) -> Option<&'static RuleInfo> {
    RULES
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(id) || r.name.eq_ignore_ascii_case(id))
}

/// Build a finding for rule `id` on `node`.
pub(crate) fn finding(
    id: &'static str,
    node: &Node,
    message: impl Into<String>,
    fix: impl Into<String>,
    hadolint: Option<&'static str>,
) -> Finding {
    let info = rule_info(id);
    Finding {
        rule: info.map_or(id, |r| r.id),
        name: info.map_or("unknown", |r| r.name),
        severity: info.map_or(Severity::Warning, |r| r.severity),
        span: node.span,
        message: message.into(),
        tip: info.map_or(SeedTip::General, |r| r.tip),
        fix: fix.into(),
        hadolint,
    }
}

/// The first physical line of an instruction, for fixes.
fn first_line(node: &Node) -> String {
    node.original.lines().next().unwrap_or("").to_string()
}

fn is_root_user(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or(user).trim();
    name == "root" || name == "0"
}

/// Whether a name looks like it holds a secret (BuildKit's token list).
pub fn is_secret_name(name: &str) -> bool {
    const SECRET: [&str; 11] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
        "pat",
    ];
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split(['_', '-', '.']).collect();
    !parts.contains(&"public") && parts.iter().any(|p| SECRET.contains(p) && *p != "pat")
}

fn looks_like_secret_value(value: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "ghp_",
        "gho_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "AKIA",
        "sk-",
    ];
    PREFIXES.iter().any(|p| value.starts_with(p))
}

fn is_archive(path: &str) -> bool {
    const EXT: [&str; 11] = [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".gz", ".bz2", ".xz",
        ".tar.zst",
    ];
    let lower = path.to_ascii_lowercase();
    EXT.iter().any(|e| lower.ends_with(e))
}

fn is_url(path: &str) -> bool {
    path.contains("://") || path.starts_with("git@")
}

/// Whether a COPY/ADD source copies the whole context.
fn is_whole_context(source: &str) -> bool {
    matches!(source.trim_end_matches('/'), "." | "" | "./*" | "*" | "./.") || source == "./"
}

fn copy_sources_and_dest(node: &Node) -> (Vec<String>, String) {
    let mut words = match &node.args {
        Arguments::Json(v) | Arguments::Words(v) => v.clone(),
        _ => Vec::new(),
    };
    let dest = words.pop().unwrap_or_default();
    (words, dest)
}

fn has_from_flag(node: &Node) -> bool {
    node.flags.iter().any(|f| f.starts_with("--from="))
}

/// Run stowage's rules.
pub fn run(view: &View<'_>, options: &LintOptions, report: &mut LintReport) {
    base_images(view, report);
    secrets_in_build_args(view, options, report);
    for stage_index in 0..view.stages.len() {
        let in_final = view
            .in_final_image
            .get(stage_index)
            .copied()
            .unwrap_or(false);
        let is_final = view.final_stage == Some(stage_index);
        stage_rules(view, stage_index, in_final, is_final, options, report);
    }
    if let Some(final_index) = view.final_stage {
        root_user(view, final_index, report);
    }
}

fn base_images(view: &View<'_>, report: &mut LintReport) {
    for (index, stage) in view.stages.iter().enumerate() {
        let Some(node) = view.node(stage.from) else {
            continue;
        };
        let image = stage.image.as_str();
        if image.eq_ignore_ascii_case("scratch") || image.contains('$') || image.contains('@') {
            continue;
        }
        if view.is_stage_name(image, index) {
            continue;
        }
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        let line = first_line(node);
        match last_segment.split_once(':') {
            None => report.findings.push(finding(
                "STW009",
                node,
                format!("FROM {image} has no tag: it means :latest, which changes under you"),
                line.replacen(image, &format!("{image}:<version>"), 1),
                Some("DL3006"),
            )),
            Some((_, "latest")) => report.findings.push(finding(
                "STW009",
                node,
                format!("FROM {image} uses :latest, which changes under you; pin a version (or a digest)"),
                line.replacen(image, &image.replace(":latest", ":<version>"), 1),
                Some("DL3007"),
            )),
            Some(_) => {}
        }
    }
}

fn secrets_in_build_args(view: &View<'_>, options: &LintOptions, report: &mut LintReport) {
    for (key, value) in &options.build_args {
        if !(is_secret_name(key) || looks_like_secret_value(value)) {
            continue;
        }
        let declared = view.tree.instructions.iter().find(|n| {
            n.name() == "arg"
                && words(n)
                    .iter()
                    .any(|w| w.split('=').next().is_some_and(|k| k == key))
        });
        if let Some(node) = declared {
            report.findings.push(finding(
                "STW018",
                node,
                format!("--build-arg {key} looks like a secret; build-arg values are recorded in the image history"),
                format!("RUN --mount=type=secret,id={},env={key} ... and build with --secret id={},env={key}", key.to_lowercase(), key.to_lowercase()),
                None,
            ));
        }
    }
}

fn root_user(view: &View<'_>, final_index: usize, report: &mut LintReport) {
    // Follow the final stage and its parents for the last USER.
    let mut current = Some(final_index);
    let mut guard = 0usize;
    while let Some(index) = current {
        let Some(stage) = view.stages.get(index) else {
            return;
        };
        let last_user = stage
            .nodes
            .iter()
            .rev()
            .filter_map(|i| view.node(*i))
            .find(|n| n.name() == "user");
        if let Some(node) = last_user {
            let user = match &node.args {
                Arguments::Text(t) => t.trim().to_string(),
                _ => words(node).join(" "),
            };
            if is_root_user(&user) {
                report.findings.push(finding(
                    "STW017",
                    node,
                    "the last USER of the final stage is root: the container runs as root",
                    "USER app   (after RUN groupadd -r app && useradd -r -g app app)",
                    Some("DL3002"),
                ));
            }
            return;
        }
        if stage.image.eq_ignore_ascii_case("scratch") && stage.nodes.is_empty() {
            return;
        }
        current = stage.parent;
        guard += 1;
        if stage.parent.is_none() || guard > view.stages.len() {
            let Some(stage) = view.stages.get(final_index) else {
                return;
            };
            let Some(node) = view.node(stage.from) else {
                return;
            };
            report.findings.push(Finding {
                severity: Severity::Info,
                ..finding(
                    "STW017",
                    node,
                    "the final stage sets no USER: it runs as root unless the base image sets another user",
                    "add USER <non-root user> after the last RUN that needs root",
                    None,
                )
            });
            return;
        }
    }
}

struct StageState {
    previous_run: Option<(Vec<String>, usize)>,
    copied_whole_context: bool,
    pipefail_shell: bool,
    non_posix_shell: bool,
    pip_no_cache_env: bool,
    copy_dests: Vec<String>,
    run_texts: Vec<String>,
    apt_update_alone: Option<usize>,
}

fn stage_rules(
    view: &View<'_>,
    stage_index: usize,
    in_final: bool,
    is_final: bool,
    options: &LintOptions,
    report: &mut LintReport,
) {
    let Some(stage) = view.stages.get(stage_index) else {
        return;
    };
    let mut state = StageState {
        previous_run: None,
        copied_whole_context: false,
        pipefail_shell: false,
        non_posix_shell: false,
        pip_no_cache_env: false,
        copy_dests: Vec::new(),
        run_texts: Vec::new(),
        apt_update_alone: None,
    };
    let mut workdir = String::new();
    for &node_index in &stage.nodes {
        let Some(node) = view.node(node_index) else {
            continue;
        };
        let name = node.name();
        if name != "run" {
            state.previous_run = None;
        }
        match name.as_str() {
            "run" => run_rules(
                view, node, node_index, &mut state, in_final, is_final, options, report,
            ),
            "copy" | "add" => {
                let (sources, dest) = copy_sources_and_dest(node);
                if !has_from_flag(node) && sources.iter().any(|s| is_whole_context(s)) {
                    state.copied_whole_context = true;
                }
                let dest = if dest.starts_with('/') || workdir.is_empty() {
                    dest
                } else {
                    format!("{}/{dest}", workdir.trim_end_matches('/'))
                };
                state.copy_dests.push(dest);
                if name == "add"
                    && node.heredocs.is_empty()
                    && !sources.is_empty()
                    && sources.iter().any(|s| !is_url(s) && !is_archive(s))
                {
                    let line = first_line(node);
                    let fix = line.replacen(node.keyword.as_str(), "COPY", 1);
                    report.findings.push(finding(
                        "STW014",
                        node,
                        "ADD of a local file or directory: COPY does the same without ADD's URL and archive magic",
                        fix,
                        Some("DL3020"),
                    ));
                }
            }
            "workdir" => {
                let path = match &node.args {
                    Arguments::Text(t) => t.trim().trim_matches(['"', '\'']).to_string(),
                    _ => words(node).join(" "),
                };
                let windows = path.get(1..2) == Some(":");
                if !path.starts_with('/') && !path.starts_with('$') && !windows && !path.is_empty()
                {
                    report.findings.push(finding(
                        "STW015",
                        node,
                        format!("relative WORKDIR {path} depends on the directory set before it (possibly by the base image)"),
                        format!("{} /{}", node.keyword, path.trim_start_matches("./")),
                        Some("DL3000"),
                    ));
                }
                workdir = if path.starts_with('/') {
                    path
                } else {
                    format!("{}/{path}", workdir.trim_end_matches('/'))
                };
            }
            "shell" => {
                let argv = words(node);
                let program = argv
                    .first()
                    .map(|p| p.rsplit('/').next().unwrap_or(p).to_ascii_lowercase());
                state.non_posix_shell = matches!(
                    program.as_deref(),
                    Some("pwsh" | "powershell" | "cmd" | "cmd.exe" | "powershell.exe")
                );
                state.pipefail_shell = argv.windows(2).any(|w| {
                    w.first()
                        .is_some_and(|a| a.starts_with('-') && a.ends_with('o'))
                        && w.get(1).is_some_and(|b| b == "pipefail")
                });
            }
            "env" | "arg" => {
                if let Arguments::NameValues { pairs, .. } = &node.args
                    && pairs.iter().any(|p| p.name == "PIP_NO_CACHE_DIR")
                {
                    state.pip_no_cache_env = true;
                }
                if words(node)
                    .iter()
                    .any(|w| w.starts_with("PIP_NO_CACHE_DIR"))
                {
                    state.pip_no_cache_env = true;
                }
            }
            _ => {}
        }
    }
    if let Some(update_index) = state.apt_update_alone {
        let _ = update_index;
    }
}

#[allow(clippy::too_many_arguments)]
fn run_rules(
    view: &View<'_>,
    node: &Node,
    node_index: usize,
    state: &mut StageState,
    in_final: bool,
    is_final: bool,
    options: &LintOptions,
    report: &mut LintReport,
) {
    let Some((script, facts)) = run_facts(node) else {
        report.unjudged.push(format!(
            "line {}: RUN arguments could not be read",
            node.span.start_line
        ));
        return;
    };
    let single = facts.command_count <= 1;
    // STW001: consecutive RUNs (same flags, both a single command, nothing between).
    if let Some((flags, previous_count)) = &state.previous_run
        && *flags == node.flags
        && single
        && *previous_count <= 1
        && node.comments.is_empty()
    {
        report.findings.push(finding(
            "STW001",
            node,
            "this RUN follows another RUN: each RUN is a layer; chain them with && in one RUN",
            format!(
                "merge into the previous RUN: ... && {}",
                run_script(node).unwrap_or_default().trim()
            ),
            Some("DL3059"),
        ));
    }
    state.previous_run = Some((node.flags.clone(), facts.command_count));
    let line = first_line(node);

    // STW002: apt-get update alone; the install comes in a later RUN.
    let apt_installs: Vec<_> = facts
        .installs
        .iter()
        .filter(|i| i.manager == Manager::Apt)
        .collect();
    if facts.apt_update && apt_installs.is_empty() {
        state.apt_update_alone = Some(node_index);
    } else if !apt_installs.is_empty()
        && !facts.apt_update
        && let Some(update_node) = state.apt_update_alone.and_then(|i| view.node(i))
    {
        report.findings.push(finding(
                "STW002",
                node,
                format!(
                    "apt-get install runs in a different RUN from the apt-get update on line {}: a cached update layer gives stale package lists",
                    update_node.span.start_line
                ),
                "RUN apt-get update && apt-get install -y --no-install-recommends <packages> && rm -rf /var/lib/apt/lists/*",
                None,
            ));
    }
    // STW003: apt lists.
    if facts.apt_update
        && !facts.apt_lists_removed
        && in_final
        && !has_cache_mount(node, "/var/lib/apt")
    {
        report.findings.push(finding(
            "STW003",
            node,
            "apt-get update leaves /var/lib/apt/lists in this layer: remove them in the same RUN",
            format!(
                "{} && rm -rf /var/lib/apt/lists/*",
                line.trim_end_matches(['\\', ' '])
            ),
            Some("DL3009"),
        ));
    }
    let mut unpinned_by_manager: Vec<(Manager, Vec<String>)> = Vec::new();
    for install in &facts.installs {
        match install.manager {
            Manager::Apt => {
                let recommends_off = install.has_option("--no-install-recommends")
                    || install.options.iter().any(|o| {
                        o.contains("Install-Recommends=false") || o.contains("Install-Recommends=0")
                    });
                if !recommends_off && install.program == "apt-get" {
                    report.findings.push(finding(
                        "STW007",
                        node,
                        "apt-get install without --no-install-recommends installs recommended packages you did not ask for",
                        line.replacen("apt-get install", "apt-get install --no-install-recommends", 1),
                        Some("DL3015"),
                    ));
                }
            }
            Manager::Apk => {
                if !install.has_option("--no-cache")
                    && !facts.apk_cache_removed
                    && !has_cache_mount(node, "/var/cache/apk")
                {
                    report.findings.push(finding(
                        "STW004",
                        node,
                        "apk add without --no-cache leaves the package index in the layer",
                        line.replacen("apk add", "apk add --no-cache", 1),
                        Some("DL3019"),
                    ));
                }
            }
            Manager::Pip => {
                if !install.has_option("--no-cache-dir")
                    && !state.pip_no_cache_env
                    && !facts
                        .assignments
                        .iter()
                        .any(|a| a.starts_with("PIP_NO_CACHE_DIR="))
                    && !facts.pip_cache_removed
                    && !has_cache_mount(node, "/root/.cache")
                {
                    report.findings.push(finding(
                        "STW005",
                        node,
                        "pip install without --no-cache-dir keeps pip's download cache in the layer",
                        line.replacen("install", "install --no-cache-dir", 1),
                        Some("DL3042"),
                    ));
                }
                for file in &install.requirement_files {
                    check_requirements(view, node, file, options, report);
                }
            }
            Manager::Yum | Manager::Dnf => {
                let cleaned = if install.manager == Manager::Yum {
                    facts.yum_cleaned
                } else {
                    facts.dnf_cleaned
                };
                if !cleaned && !has_cache_mount(node, "/var/cache") {
                    let tool = install.program.as_str();
                    report.findings.push(finding(
                        "STW006",
                        node,
                        format!("{tool} install without `{tool} clean all` in the same RUN leaves its cache in the layer"),
                        format!("... && {tool} clean all"),
                        Some(if install.manager == Manager::Yum { "DL3032" } else { "DL3040" }),
                    ));
                }
            }
            Manager::Npm => {
                if !facts.npm_cache_cleaned && !has_cache_mount(node, "/root/.npm") {
                    report.findings.push(finding(
                        "STW006",
                        node,
                        "npm install without `npm cache clean --force` in the same RUN leaves ~/.npm in the layer",
                        "... && npm cache clean --force",
                        None,
                    ));
                }
            }
            Manager::Yarn => {
                if !facts.yarn_cache_cleaned && !has_cache_mount(node, "") {
                    report.findings.push(finding(
                        "STW006",
                        node,
                        "yarn install without `yarn cache clean` in the same RUN leaves the yarn cache in the layer",
                        "... && yarn cache clean",
                        Some("DL3060"),
                    ));
                }
            }
            Manager::Gem => {}
        }
        let pinned_check = match install.manager {
            Manager::Gem => !install.has_option("-v") && !install.has_option("--version"),
            Manager::Yum | Manager::Dnf | Manager::Yarn => false,
            _ => true,
        };
        if pinned_check {
            let unpinned: Vec<String> = install
                .packages
                .iter()
                .filter(|p| !p.contains('$') && !is_pinned(install.manager, p))
                .cloned()
                .collect();
            if !unpinned.is_empty() {
                match unpinned_by_manager
                    .iter_mut()
                    .find(|(m, _)| *m == install.manager)
                {
                    Some((_, list)) => list.extend(unpinned),
                    None => unpinned_by_manager.push((install.manager, unpinned)),
                }
            }
        }
    }
    for (manager, packages) in unpinned_by_manager {
        let (hadolint, syntax) = match manager {
            Manager::Apt => ("DL3008", "pkg=<version>"),
            Manager::Apk => ("DL3018", "pkg=<version>"),
            Manager::Pip => ("DL3013", "pkg==<version>"),
            Manager::Npm => ("DL3016", "pkg@<version>"),
            Manager::Gem => ("DL3028", "pkg -v <version>"),
            _ => continue,
        };
        report.findings.push(finding(
            "STW008",
            node,
            format!(
                "unpinned packages: {} (each build may get different versions)",
                packages.join(", ")
            ),
            format!(
                "pin them as {syntax}, e.g. {}",
                packages
                    .iter()
                    .map(|p| syntax.replace("pkg", p))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Some(hadolint),
        ));
    }
    // STW010: dependency install after COPY of the whole context.
    if state.copied_whole_context
        && let Some(tool) = facts.dependency_installs.first()
    {
        report.findings.push(finding(
                "STW010",
                node,
                format!("{tool} installs dependencies after COPY of the whole context: any source change re-runs the install"),
                format!("COPY the dependency manifest (e.g. requirements.txt, package.json, go.mod, Cargo.toml) first, RUN the {tool} install, then COPY . ."),
                None,
            ));
    }
    // STW011: toolchains in the final stage.
    if is_final {
        let tools: Vec<&String> = facts
            .installs
            .iter()
            .filter(|i| {
                matches!(
                    i.manager,
                    Manager::Apt | Manager::Apk | Manager::Yum | Manager::Dnf
                )
            })
            .flat_map(|i| i.packages.iter())
            .filter(|p| is_toolchain(p))
            .collect();
        if !tools.is_empty() {
            let names: Vec<&str> = tools.iter().map(|s| s.as_str()).collect();
            report.findings.push(finding(
                "STW011",
                node,
                format!("build toolchain in the final image: {}", names.join(", ")),
                "build in a `FROM ... AS build` stage and COPY --from=build only the artefacts into a slim final stage",
                None,
            ));
        }
    }
    // STW013: recursive chown/chmod over earlier layers.
    for (program, paths) in &facts.recursive_owner_changes {
        let earlier = paths.iter().find(|p| {
            let p = p.trim_end_matches('/');
            !p.is_empty()
                && (state.copy_dests.iter().any(|d| {
                    let d = d.trim_end_matches('/');
                    d == p || d.starts_with(&format!("{p}/")) || p.starts_with(&format!("{d}/"))
                }) || state.run_texts.iter().any(|t| t.contains(p)))
        });
        if let Some(path) = earlier {
            report.findings.push(finding(
                "STW013",
                node,
                format!("{program} -R {path} rewrites files an earlier layer added: the layer stores a second full copy of them"),
                format!("set ownership/mode when adding them: COPY --chown=<user>:<group> --chmod=<mode> ... {path} (or do it in the RUN that created them)"),
                None,
            ));
        }
    }
    // STW016: cd.
    if facts.has_cd {
        report.findings.push(finding(
            "STW016",
            node,
            "cd in RUN only lasts for this RUN; WORKDIR states the directory once",
            "WORKDIR <dir> before this RUN, and drop the cd",
            Some("DL3003"),
        ));
    }
    // STW019: pipefail.
    if script.has_pipe
        && matches!(node.args, Arguments::Text(_))
        && !state.pipefail_shell
        && !state.non_posix_shell
        && !facts.sets_pipefail
    {
        report.findings.push(finding(
            "STW019",
            node,
            "a pipe's exit status is its last command's: a failure earlier in the pipe is ignored",
            "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"] before this RUN (or start the RUN with set -o pipefail &&)",
            Some("DL4006"),
        ));
    }
    state.run_texts.push(run_script(node).unwrap_or_default());
}

fn check_requirements(
    view: &View<'_>,
    node: &Node,
    file: &str,
    options: &LintOptions,
    report: &mut LintReport,
) {
    let line = node.span.start_line;
    let Some(context) = &options.context_dir else {
        report.unjudged.push(format!("line {line}: STW008 unpinned-package: pip requirements file {file} not checked (no build context given)"));
        return;
    };
    let base = file.rsplit('/').next().unwrap_or(file);
    // Prefer the COPY source that produced the file, then the context root.
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    for n in &view.tree.instructions {
        if matches!(n.name().as_str(), "copy" | "add") && !has_from_flag(n) {
            let (sources, _) = copy_sources_and_dest(n);
            for s in sources {
                if s.rsplit('/').next() == Some(base) {
                    candidates.push(context.join(s.trim_start_matches("./")));
                }
            }
        }
    }
    candidates.push(context.join(file.trim_start_matches("./").trim_start_matches('/')));
    candidates.push(context.join(base));
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        report.unjudged.push(format!("line {line}: STW008 unpinned-package: pip requirements file {file} not found in the context"));
        return;
    };
    let text = match read_bounded(path) {
        Some(text) => text,
        None => {
            report.unjudged.push(format!(
                "line {line}: STW008 unpinned-package: cannot read {}",
                path.display()
            ));
            return;
        }
    };
    let unpinned: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('-'))
        .filter(|l| !is_pinned(Manager::Pip, l))
        .map(str::to_string)
        .collect();
    if !unpinned.is_empty() {
        report.findings.push(finding(
            "STW008",
            node,
            format!("{file} has unpinned requirements: {}", unpinned.join(", ")),
            format!(
                "pin them in {file}, e.g. {}",
                unpinned
                    .iter()
                    .map(|p| format!("{p}==<version>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            None,
        ));
    }
}

/// Read at most 1 MiB of a text file.
pub(crate) fn read_bounded(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
