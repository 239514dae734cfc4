//! BuildKit's build checks (docs in reference/dockerfile/build-checks), under
//! BuildKit's rule names, evaluated on the lossless syntax tree.

use std::collections::BTreeSet;

use stowage_dockerfile::Arguments;

use crate::rules::{finding, is_secret_name};
use crate::view::{View, words};
use crate::{LintOptions, LintReport};

const BUILTIN_ARGS: [&str; 16] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "BUILDKIT_SYNTAX",
    "SOURCE_DATE_EPOCH",
];

/// Variable names referenced with `$NAME` / `${NAME...}` outside single quotes,
/// with whether they carry a `:-`/`-` default.
pub fn variables(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0usize;
    let mut in_single = false;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => i += 1,
            '\'' => in_single = !in_single,
            '$' if !in_single => {
                if chars.get(i + 1) == Some(&'{') {
                    let start = i + 2;
                    let mut end = start;
                    while chars
                        .get(end)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        end += 1;
                    }
                    let name: String = chars.get(start..end).unwrap_or(&[]).iter().collect();
                    let default = matches!(chars.get(end), Some(':' | '-' | '+'));
                    if !name.is_empty() {
                        out.push((name, default));
                    }
                    i = end;
                    continue;
                }
                let start = i + 1;
                let mut end = start;
                while chars
                    .get(end)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    end += 1;
                }
                let name: String = chars.get(start..end).unwrap_or(&[]).iter().collect();
                if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                    out.push((name, false));
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn arg_names(node: &stowage_dockerfile::Node) -> Vec<(String, Option<String>)> {
    match &node.args {
        Arguments::NameValues { pairs, .. } => pairs
            .iter()
            .map(|p| (p.name.clone(), Some(p.value.clone())))
            .collect(),
        _ => words(node)
            .iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w.clone(), None),
            })
            .collect(),
    }
}

/// Run the build checks.
pub fn run(view: &View<'_>, options: &LintOptions, report: &mut LintReport) {
    let nodes = &view.tree.instructions;
    // ConsistentInstructionCasing.
    let lower = nodes
        .iter()
        .filter(|n| n.keyword.chars().all(|c| !c.is_ascii_uppercase()))
        .count();
    let upper = nodes
        .iter()
        .filter(|n| n.keyword.chars().all(|c| !c.is_ascii_lowercase()))
        .count();
    let majority_lower = lower > upper;
    for node in nodes {
        let ok = if majority_lower {
            node.keyword.chars().all(|c| !c.is_ascii_uppercase())
        } else {
            node.keyword.chars().all(|c| !c.is_ascii_lowercase())
        };
        if !ok {
            let want = if majority_lower {
                node.keyword.to_lowercase()
            } else {
                node.keyword.to_uppercase()
            };
            report.findings.push(finding(
                "ConsistentInstructionCasing",
                node,
                format!(
                    "Command '{}' should match the case of the command majority ({})",
                    node.keyword,
                    if majority_lower {
                        "lowercase"
                    } else {
                        "uppercase"
                    }
                ),
                format!("write {want}"),
                None,
            ));
        }
    }
    // NoEmptyContinuation.
    for warning in &view.tree.warnings {
        if warning.message.starts_with("Empty continuation") {
            let node = nodes.iter().find(|n| {
                n.span.start <= warning.span.start
                    && warning.span.start < n.span.end.max(n.span.start + 1)
            });
            if let Some(node) = node {
                report.findings.push(finding(
                    "NoEmptyContinuation",
                    node,
                    warning.message.clone(),
                    "remove the empty line (or put a comment on it)",
                    None,
                ));
            }
        }
    }
    // Global ARGs.
    let mut global_args: Vec<(String, Option<String>)> = Vec::new();
    for &index in &view.global {
        if let Some(node) = view.node(index)
            && node.name() == "arg"
        {
            global_args.extend(arg_names(node));
        }
    }
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    for (stage_index, stage) in view.stages.iter().enumerate() {
        let Some(from) = view.node(stage.from) else {
            continue;
        };
        if let (Some(kw), Some(name)) = (&stage.as_keyword, &stage.name) {
            let from_upper = from.keyword.chars().all(|c| !c.is_ascii_lowercase());
            let from_lower = from.keyword.chars().all(|c| !c.is_ascii_uppercase());
            let as_upper = kw.chars().all(|c| !c.is_ascii_lowercase());
            let as_lower = kw.chars().all(|c| !c.is_ascii_uppercase());
            if (from_upper && !as_upper) || (from_lower && !as_lower) {
                report.findings.push(finding(
                    "FromAsCasing",
                    from,
                    format!(
                        "'{kw}' and '{}' keywords' casing do not match",
                        from.keyword
                    ),
                    if from_upper { "use AS" } else { "use as" },
                    None,
                ));
            }
            if name.chars().any(|c| c.is_ascii_uppercase()) {
                report.findings.push(finding(
                    "StageNameCasing",
                    from,
                    format!("Stage name '{name}' should be lowercase"),
                    format!("AS {}", name.to_lowercase()),
                    None,
                ));
            }
            let lowered = name.to_lowercase();
            if !seen_names.insert(lowered.clone()) {
                report.findings.push(finding(
                    "DuplicateStageName",
                    from,
                    format!("Duplicate stage name '{lowered}', stage names should be unique"),
                    "rename one of the stages",
                    None,
                ));
            }
            if lowered == "scratch" || lowered == "context" {
                report.findings.push(finding(
                    "ReservedStageName",
                    from,
                    format!("'{lowered}' is reserved and should not be used as a stage name"),
                    "pick another stage name",
                    None,
                ));
            }
        }
        if let Some(platform) = &stage.platform {
            if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
                report.findings.push(finding("RedundantTargetPlatform", from, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior", "remove --platform", None));
            } else if !platform.contains('$') {
                let name = stage.name.as_deref().unwrap_or("").to_lowercase();
                let named_for_it = platform
                    .split('/')
                    .any(|part| !part.is_empty() && name.contains(&part.to_lowercase()));
                if !named_for_it {
                    report.findings.push(finding(
                        "FromPlatformFlagConstDisallowed",
                        from,
                        format!(
                            "FROM --platform flag should not use constant value \"{platform}\""
                        ),
                        "omit --platform (use the build's --platform) or use $BUILDPLATFORM",
                        None,
                    ));
                }
            }
        }
        // UndefinedArgInFrom / InvalidDefaultArgInFrom.
        let from_text = format!(
            "{} {}",
            stage.image,
            stage.platform.clone().unwrap_or_default()
        );
        for (var, has_default) in variables(&from_text) {
            let declared = global_args.iter().any(|(n, _)| *n == var);
            if !declared && !has_default && !BUILTIN_ARGS.contains(&var.as_str()) {
                report.findings.push(finding(
                    "UndefinedArgInFrom",
                    from,
                    format!("FROM argument '{var}' is not declared"),
                    format!("ARG {var}=<default> before the first FROM"),
                    None,
                ));
            }
        }
        if stage.image.contains('$') {
            let mut image = stage.image.clone();
            for (var, _) in variables(&stage.image) {
                let value = global_args
                    .iter()
                    .find(|(n, _)| *n == var)
                    .and_then(|(_, v)| v.clone())
                    .unwrap_or_default();
                image = image
                    .replace(&format!("${{{var}}}",), &value)
                    .replace(&format!("${var}"), &value);
            }
            // Remaining `${X:-d}` forms count as valid.
            let invalid = !image.contains("${")
                && (image.is_empty()
                    || image.ends_with(':')
                    || image.ends_with('@')
                    || image.starts_with(':')
                    || image.contains("::")
                    || image.ends_with('/'));
            if invalid {
                report.findings.push(finding(
                    "InvalidDefaultArgInFrom",
                    from,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.image
                    ),
                    "give the ARG a default value that makes a valid image reference",
                    None,
                ));
            }
        }
        // InvalidDefinitionDescription (experimental).
        if let (Some(name), Some(comment)) = (&stage.name, from.comments.last())
            && comment.split_whitespace().next() != Some(name.as_str())
        {
            report.findings.push(finding("InvalidDefinitionDescription", from, "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`", format!("# {name} <description> (or separate the comment with an empty line)"), None));
        }
        stage_checks(view, stage_index, &global_args, options, report);
    }
    for &index in &view.global {
        if let Some(node) = view.node(index) {
            node_checks(node, report);
            if matches!(node.name().as_str(), "cmd" | "entrypoint") && !node.is_json() {
                report.findings.push(finding("JSONArgsRecommended", node, "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals", "write the command as a JSON array", Some("DL3025")));
            }
        }
    }
}

fn node_checks(node: &stowage_dockerfile::Node, report: &mut LintReport) {
    match node.name().as_str() {
        "arg" | "env" => {
            for (name, _) in arg_names(node) {
                if is_secret_name(&name) {
                    report.findings.push(finding(
                        "SecretsUsedInArgOrEnv",
                        node,
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data ({} \"{name}\")",
                            node.keyword.to_uppercase()
                        ),
                        format!(
                            "RUN --mount=type=secret,id={},env={name} ...",
                            name.to_lowercase()
                        ),
                        None,
                    ));
                }
            }
            if node.name() == "arg"
                && let Some(comment) = node.comments.last()
            {
                let names = arg_names(node);
                if let Some((name, _)) = names.first()
                    && comment.split_whitespace().next() != Some(name.as_str())
                {
                    report.findings.push(finding("InvalidDefinitionDescription", node, "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`", format!("# {name} <description> (or separate the comment with an empty line)"), None));
                }
            }
            if let Arguments::NameValues { legacy: true, .. } = &node.args {
                let upper = node.keyword.to_uppercase();
                report.findings.push(finding("LegacyKeyValueFormat", node, format!("\"{upper} key=value\" should be used instead of legacy \"{upper} key value\" format"), legacy_fix(node), None));
            }
        }
        "label" => {
            if let Arguments::NameValues { legacy: true, .. } = &node.args {
                report.findings.push(finding("LegacyKeyValueFormat", node, "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format", legacy_fix(node), None));
            }
        }
        "maintainer" => {
            let who = words(node).join(" ");
            report.findings.push(finding(
                "MaintainerDeprecated",
                node,
                "MAINTAINER instruction is deprecated in favor of using label",
                format!(
                    "LABEL org.opencontainers.image.authors=\"{}\"",
                    who.replace('"', "")
                ),
                Some("DL4000"),
            ));
        }
        "expose" => {
            for port in words(node) {
                if port.contains(':') {
                    report.findings.push(finding("ExposeInvalidFormat", node, format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"), format!("EXPOSE {}", port.rsplit(':').next().unwrap_or(&port)), None));
                }
                if let Some((_, proto)) = port.split_once('/')
                    && proto.chars().any(|c| c.is_ascii_uppercase())
                {
                    report.findings.push(finding(
                        "ExposeProtoCasing",
                        node,
                        format!(
                            "Defined protocol '{port}' in EXPOSE instruction should be lowercase"
                        ),
                        format!("EXPOSE {}", port.to_lowercase()),
                        None,
                    ));
                }
            }
        }
        _ => {}
    }
}

fn legacy_fix(node: &stowage_dockerfile::Node) -> String {
    match &node.args {
        Arguments::NameValues { pairs, .. } => format!(
            "{} {}",
            node.keyword.to_uppercase(),
            pairs
                .iter()
                .map(|p| format!(
                    "{}=\"{}\"",
                    p.name,
                    p.value.trim_matches('"').replace('"', "\\\"")
                ))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => String::new(),
    }
}

fn stage_checks(
    view: &View<'_>,
    stage_index: usize,
    global_args: &[(String, Option<String>)],
    options: &LintOptions,
    report: &mut LintReport,
) {
    let Some(stage) = view.stages.get(stage_index) else {
        return;
    };
    let _ = options;
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut explicit_shell = false;
    let mut has_absolute_workdir = false;
    // Variables known in this stage (ARG/ENV here or in parent stages).
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut root_is_scratch = stage.image.eq_ignore_ascii_case("scratch");
    let mut parent = stage.parent;
    let mut guard = 0usize;
    while let Some(p) = parent {
        let Some(ps) = view.stages.get(p) else { break };
        for &i in &ps.nodes {
            if let Some(n) = view.node(i) {
                if matches!(n.name().as_str(), "arg" | "env") {
                    known.extend(arg_names(n).into_iter().map(|(k, _)| k));
                }
                if n.name() == "workdir" && words(n).first().is_some_and(|w| w.starts_with('/')) {
                    has_absolute_workdir = true;
                }
            }
        }
        root_is_scratch = ps.image.eq_ignore_ascii_case("scratch");
        parent = ps.parent;
        guard += 1;
        if guard > view.stages.len() {
            break;
        }
    }
    for &index in &stage.nodes {
        let Some(node) = view.node(index) else {
            continue;
        };
        node_checks(node, report);
        let name = node.name();
        match name.as_str() {
            "cmd" | "entrypoint" | "healthcheck" => {
                if let Some(entry) = seen.iter_mut().find(|(k, _)| *k == name) {
                    if let Some(previous) = view.node(entry.1) {
                        report.findings.push(finding("MultipleInstructionsDisallowed", previous, format!("Multiple {} instructions should not be used in the same stage because only the last one will be used", name.to_uppercase()), "remove all but the last one", None));
                    }
                    entry.1 = index;
                } else {
                    seen.push((name.clone(), index));
                }
                if name != "healthcheck" && !node.is_json() && !explicit_shell {
                    let text = match &node.args {
                        Arguments::Text(t) => t.clone(),
                        _ => String::new(),
                    };
                    let argv: Vec<String> = text
                        .split_whitespace()
                        .map(|w| format!("\"{}\"", w.replace('"', "\\\"")))
                        .collect();
                    report.findings.push(finding("JSONArgsRecommended", node, "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals", format!("{} [{}]", node.keyword.to_uppercase(), argv.join(", ")), Some("DL3025")));
                }
            }
            "shell" => explicit_shell = true,
            "workdir" => {
                let path = match &node.args {
                    Arguments::Text(t) => t.trim().trim_matches(['"', '\'']).to_string(),
                    _ => String::new(),
                };
                if path.starts_with('/') || path.starts_with('$') {
                    has_absolute_workdir = true;
                } else if !has_absolute_workdir && !path.is_empty() {
                    report.findings.push(finding("WorkdirRelativePath", node, format!("Relative workdir '{path}' can have unexpected results if the base image changes"), format!("{} /{path}", node.keyword), Some("DL3000")));
                }
            }
            _ => {}
        }
        // UndefinedVar for instructions the builder expands (not shell-form RUN/CMD/ENTRYPOINT).
        if matches!(
            name.as_str(),
            "copy"
                | "add"
                | "env"
                | "arg"
                | "workdir"
                | "user"
                | "label"
                | "expose"
                | "volume"
                | "stopsignal"
        ) {
            let text = match &node.args {
                Arguments::NameValues { pairs, .. } => pairs
                    .iter()
                    .map(|p| p.value.clone())
                    .collect::<Vec<_>>()
                    .join(" "),
                Arguments::Text(t) => t.clone(),
                _ => words(node)
                    .iter()
                    .map(|w| w.split_once('=').map_or(w.clone(), |(_, v)| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let text = if name == "arg" || name == "env" {
                text
            } else {
                format!("{text} {}", node.flags.join(" "))
            };
            for (var, has_default) in variables(&text) {
                if has_default || known.contains(&var) || BUILTIN_ARGS.contains(&var.as_str()) {
                    continue;
                }
                if root_is_scratch {
                    let hint = known
                        .iter()
                        .chain(global_args.iter().map(|(n, _)| n))
                        .find(|k| k.eq_ignore_ascii_case(&var))
                        .map(|k| format!(" (did you mean ${k}?)"))
                        .unwrap_or_default();
                    report.findings.push(finding(
                        "UndefinedVar",
                        node,
                        format!("Usage of undefined variable '${var}'{hint}"),
                        format!("declare it first: ARG {var}"),
                        None,
                    ));
                } else if var != "PATH" && var != "HOME" {
                    report.unjudged.push(format!("line {}: UndefinedVar: ${var} is not declared in the Dockerfile; it may come from the base image's ENV, which lint does not fetch", node.span.start_line));
                }
            }
        }
        if matches!(name.as_str(), "arg" | "env") {
            known.extend(arg_names(node).into_iter().map(|(k, _)| k));
        }
    }
}
