//! A stage-by-stage view of the lossless syntax tree that the rules share:
//! which nodes belong to which stage, stage names and parents, the final
//! stage and the stages that end up in the final image.

use stowage_dockerfile::{Arguments, Dockerfile, Node};

use crate::LintOptions;
use crate::packages::{RunFacts, analyse};
use crate::shell::{Script, split};

/// One build stage.
#[derive(Debug, Clone)]
pub struct StageView {
    /// Index of the FROM node.
    pub from: usize,
    /// Base image or stage as written.
    pub image: String,
    /// `AS` keyword as written.
    pub as_keyword: Option<String>,
    /// Stage name as written.
    pub name: Option<String>,
    /// `--platform` value.
    pub platform: Option<String>,
    /// Nodes after the FROM, up to the next FROM.
    pub nodes: Vec<usize>,
    /// The earlier stage this one builds on.
    pub parent: Option<usize>,
}

/// The shared view.
pub struct View<'a> {
    /// The tree.
    pub tree: &'a Dockerfile,
    /// Stages in order.
    pub stages: Vec<StageView>,
    /// Nodes before the first FROM.
    pub global: Vec<usize>,
    /// The target stage.
    pub final_stage: Option<usize>,
    /// Per stage: whether it is the final stage or one of its ancestors.
    pub in_final_image: Vec<bool>,
}

impl<'a> View<'a> {
    /// Build the view.
    pub fn new(tree: &'a Dockerfile, options: &LintOptions) -> Self {
        let mut stages: Vec<StageView> = Vec::new();
        let mut global = Vec::new();
        for (index, node) in tree.instructions.iter().enumerate() {
            if node.name() == "from" {
                let words = words(node);
                let image = words.first().cloned().unwrap_or_default();
                let (as_keyword, name) = match words.as_slice() {
                    [_, kw, name, ..] => (Some(kw.clone()), Some(name.clone())),
                    _ => (None, None),
                };
                let platform = node
                    .flags
                    .iter()
                    .find_map(|f| f.strip_prefix("--platform=").map(str::to_string));
                let parent = stages.iter().rposition(|s| {
                    s.name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&image))
                });
                stages.push(StageView {
                    from: index,
                    image,
                    as_keyword,
                    name,
                    platform,
                    nodes: Vec::new(),
                    parent,
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.nodes.push(index);
            } else {
                global.push(index);
            }
        }
        let final_stage = match &options.target {
            Some(target) => stages.iter().position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(target))
            }),
            None => stages.len().checked_sub(1),
        };
        let mut in_final_image = vec![false; stages.len()];
        let mut current = final_stage;
        let mut guard = 0usize;
        while let Some(index) = current {
            if let Some(flag) = in_final_image.get_mut(index) {
                *flag = true;
            }
            current = stages.get(index).and_then(|s| s.parent);
            guard += 1;
            if guard > stages.len() {
                break;
            }
        }
        View {
            tree,
            stages,
            global,
            final_stage,
            in_final_image,
        }
    }

    /// Node by index.
    pub fn node(&self, index: usize) -> Option<&'a Node> {
        self.tree.instructions.get(index)
    }

    /// Whether a stage name (case-insensitive) is defined before stage `before`.
    pub fn is_stage_name(&self, name: &str, before: usize) -> bool {
        self.stages.iter().take(before).any(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }
}

/// The argument words of a node (JSON or shell words), or the text as one word.
pub fn words(node: &Node) -> Vec<String> {
    match &node.args {
        Arguments::Json(v) | Arguments::Words(v) => v.clone(),
        Arguments::Text(t) => t.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The shell script a RUN executes (shell form text plus heredoc bodies
/// that are scripts; exec form `sh -c` strings), if it can be known.
pub fn run_script(node: &Node) -> Option<String> {
    match &node.args {
        Arguments::Text(text) => {
            let mut script = text.clone();
            let trimmed = text.trim_start();
            // `RUN <<EOF` (the heredoc is the script) or `RUN cmd <<EOF` (stdin).
            if trimmed.starts_with("<<") {
                for heredoc in &node.heredocs {
                    script.push('\n');
                    script.push_str(&heredoc.effective_content());
                }
            }
            Some(script)
        }
        Arguments::Json(argv) => {
            let program = argv.first().map(|p| p.rsplit('/').next().unwrap_or(p));
            if matches!(program, Some("sh" | "bash" | "ash" | "dash"))
                && argv.get(1).is_some_and(|a| a == "-c")
            {
                argv.get(2).cloned()
            } else {
                Some(
                    argv.iter()
                        .map(|a| format!("'{}'", a.replace('\'', "")))
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            }
        }
        _ => None,
    }
}

/// Split and analyse a RUN.
pub fn run_facts(node: &Node) -> Option<(Script, RunFacts)> {
    let script = split(&run_script(node)?);
    let facts = analyse(&script);
    Some((script, facts))
}

/// Whether a RUN has a `--mount=type=cache` (or tmpfs) whose target starts with `path`.
pub fn has_cache_mount(node: &Node, path: &str) -> bool {
    node.flags.iter().any(|f| {
        f.starts_with("--mount=")
            && (f.contains("type=cache") || f.contains("type=tmpfs"))
            && f.split(',').any(|kv| {
                kv.split_once('=').is_some_and(|(k, v)| {
                    matches!(
                        k.trim_start_matches("--mount="),
                        "target" | "dst" | "destination"
                    ) && (path.is_empty() || v.starts_with(path) || path.starts_with(v))
                })
            })
    })
}
