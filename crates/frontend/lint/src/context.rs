//! Build-context rules: a context without `.dockerignore` that holds VCS,
//! dependency or build folders or large files no COPY uses (STW012), and
//! COPY/ADD of paths `.dockerignore` excludes (BuildKit's CopyIgnoredFile).

use std::path::Path;

use stowage_dockerignore::ContextFilter;

use crate::rules::finding;
use crate::view::{View, words};
use crate::{LintOptions, LintReport};

const HEAVY_DIRS: [&str; 6] = [
    ".git",
    "node_modules",
    "target",
    "__pycache__",
    ".venv",
    ".tox",
];
const LARGE_FILE: u64 = 10 * 1024 * 1024;
const MAX_WALK: usize = 200_000;

fn copy_sources(view: &View<'_>) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (index, node) in view.tree.instructions.iter().enumerate() {
        if matches!(node.name().as_str(), "copy" | "add")
            && !node.flags.iter().any(|f| f.starts_with("--from="))
            && node.heredocs.is_empty()
        {
            let mut w = words(node);
            w.pop();
            out.push((index, w));
        }
    }
    out
}

fn clean(source: &str) -> String {
    source
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// Run the context rules.
pub fn run(view: &View<'_>, options: &LintOptions, report: &mut LintReport) {
    let Some(context) = &options.context_dir else {
        report.unjudged.push(
            "STW012 context-not-lean and CopyIgnoredFile: no build context given".to_string(),
        );
        return;
    };
    let dockerfile = options
        .dockerfile_path
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let filter = match ContextFilter::load(context, &dockerfile) {
        Ok(filter) => filter,
        Err(error) => {
            report
                .unjudged
                .push(format!("STW012/CopyIgnoredFile: {error}"));
            return;
        }
    };
    let sources = copy_sources(view);
    if filter.source().is_some() {
        for (index, list) in &sources {
            let Some(node) = view.node(*index) else {
                continue;
            };
            for source in list {
                if source.contains("://")
                    || source.contains('$')
                    || source.contains('*')
                    || source.contains('?')
                {
                    continue;
                }
                let path = clean(source);
                if path.is_empty() || path == "." {
                    continue;
                }
                if matches!(filter.is_included(&path), Ok(false)) {
                    report.findings.push(finding(
                        "CopyIgnoredFile",
                        node,
                        format!(
                            "Attempting to {} file \"{source}\" that is excluded by .dockerignore",
                            if node.name() == "add" { "Add" } else { "Copy" }
                        ),
                        format!("remove {path} from .dockerignore or stop copying it"),
                        None,
                    ));
                }
            }
        }
        return;
    }
    let Some(from_node) = view.stages.first().and_then(|s| view.node(s.from)) else {
        return;
    };
    let mut heavy: Vec<String> = HEAVY_DIRS
        .iter()
        .filter(|d| context.join(d).is_dir())
        .map(|d| d.to_string())
        .collect();
    let used: Vec<String> = sources
        .iter()
        .flat_map(|(_, l)| l.iter().map(|s| clean(s)))
        .collect();
    let copies_all = used.iter().any(|s| s.is_empty() || s == "." || s == "*");
    let mut large: Vec<String> = Vec::new();
    let mut consider = |relative: &str, size: u64| {
        if size <= LARGE_FILE {
            return;
        }
        let named = used.iter().any(|u| {
            !u.is_empty() && u != "." && (relative == u || relative.starts_with(&format!("{u}/")))
        });
        if !named || copies_all {
            large.push(format!("{relative} ({} MB)", size / (1024 * 1024)));
        }
    };
    if let Some(known) = &options.context_large_files {
        for (relative, size) in known {
            let in_heavy_dir = relative.split('/').any(|part| HEAVY_DIRS.contains(&part));
            if !in_heavy_dir {
                consider(relative, *size);
            }
        }
    }
    // Unless the caller saw the files already: directory by directory, entry types from
    // the listing, and only regular files stat-ed, relative to their open directory.
    let mut pending = if options.context_large_files.is_some() {
        Vec::new()
    } else {
        vec![std::path::PathBuf::new()]
    };
    let mut seen = 0usize;
    'walk: while let Some(relative_dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(context.join(&relative_dir)) else {
            continue;
        };
        for entry in listing.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                report.unjudged.push(
                    "STW012: context has more than 200000 entries; the large-file scan stopped"
                        .to_string(),
                );
                break 'walk;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            if file_type.is_dir() {
                if HEAVY_DIRS.iter().any(|d| name == *d) {
                    continue;
                }
                pending.push(relative_dir.join(&name));
                continue;
            }
            if !file_type.is_file() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.len() <= LARGE_FILE {
                continue;
            }
            let relative = relative_dir
                .join(&name)
                .to_string_lossy()
                .replace('\\', "/");
            consider(&relative, meta.len());
        }
    }
    large.sort();
    heavy.extend(large);
    if !heavy.is_empty() {
        report.findings.push(finding(
            "STW012",
            from_node,
            format!("the context {} has no .dockerignore and holds {}: all of it is sent to the build{}", context.display(), heavy.join(", "), if copies_all { " and COPY . puts it in the image" } else { "" }),
            format!("create {} with: {}", Path::new(context).join(".dockerignore").display(), heavy.iter().map(|h| h.split(' ').next().unwrap_or(h).to_string()).collect::<Vec<_>>().join("\\n")),
            None,
        ));
    }
}
