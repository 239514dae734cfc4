//! Variable expansion per instruction with Docker's ARG/ENV scoping: meta
//! ARGs (before the first FROM) only reach FROM lines unless re-declared,
//! `--build-arg` overrides declared ARGs only, ENV overrides ARG, ENV is
//! inherited along `FROM <stage>`, and proxy / platform ARGs are predefined.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use stowage_shell::{Env, ExpandError, Lexer};

use crate::error::{ErrorKind, ParseError};
use crate::instructions::{
    Command, FromInstruction, Instruction, KeyValue, Mount, PortSpec, Program, Source,
};
use crate::span::{LineIndex, Span};

/// Proxy build args usable without an ARG declaration.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A platform (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v7`, `v8`, or empty.
    pub variant: String,
}

impl Platform {
    /// The platform this process runs on, in OCI terms.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: String::new(),
        }
    }

    /// `os/arch[/variant]`.
    pub fn to_spec(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }

    fn args(&self, prefix: &str) -> [(String, String); 4] {
        [
            (format!("{prefix}PLATFORM"), self.to_spec()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.architecture.clone()),
            (format!("{prefix}VARIANT"), self.variant.clone()),
        ]
    }
}

/// Inputs of [`expand`].
#[derive(Debug, Clone)]
pub struct ExpandOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Platform being built for (TARGET* args).
    pub target_platform: Platform,
    /// Platform of the builder (BUILD* args).
    pub build_platform: Platform,
    /// Per stage index, the base image's environment when known.
    pub base_envs: BTreeMap<usize, Vec<(String, String)>>,
}

impl Default for ExpandOptions {
    fn default() -> Self {
        ExpandOptions {
            build_args: BTreeMap::new(),
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            base_envs: BTreeMap::new(),
        }
    }
}

/// An expanded instruction, with the ARG values in scope for RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpandedCommand {
    /// The instruction with its words expanded.
    pub command: Command,
    /// For RUN: the ARGs in scope (name, value), to be put in the process environment.
    pub run_args: Vec<(String, String)>,
}

/// A stage after expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpandedStage {
    /// Stage index.
    pub index: usize,
    /// Stage name.
    pub name: Option<String>,
    /// FROM with image and platform expanded.
    pub from: FromInstruction,
    /// Index of the earlier stage this one builds on, if `FROM <stage>`.
    pub base_stage: Option<usize>,
    /// Expanded instructions.
    pub commands: Vec<ExpandedCommand>,
    /// ENV at the end of the stage (inherited + set), in order.
    pub env: Vec<(String, String)>,
}

/// The result of [`expand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpandedProgram {
    /// Meta ARGs with their values (automatic platform args included).
    pub meta_args: Vec<(String, String)>,
    /// Stages.
    pub stages: Vec<ExpandedStage>,
    /// `--build-arg` names no ARG declared (proxy args excluded), sorted.
    pub unused_build_args: Vec<String>,
}

/// An environment where ENV entries override ARG entries.
struct Scope<'a> {
    env: &'a Ordered,
    args: &'a Ordered,
}

impl Env for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.env.get(name).or_else(|| self.args.get(name))
    }
}

/// Insertion-ordered map with replacement in place.
#[derive(Debug, Clone, Default)]
struct Ordered {
    entries: Vec<(String, String)>,
    positions: BTreeMap<String, usize>,
}

impl Ordered {
    fn set(&mut self, key: String, value: String) {
        match self.positions.get(&key).copied() {
            Some(pos) => {
                if let Some(entry) = self.entries.get_mut(pos) {
                    entry.1 = value;
                }
            }
            None => {
                self.positions.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.positions
            .get(key)
            .and_then(|pos| self.entries.get(*pos))
            .map(|(_, v)| v.as_str())
    }
    fn from_list(list: &[(String, String)]) -> Self {
        let mut out = Ordered::default();
        for (k, v) in list {
            out.set(k.clone(), v.clone());
        }
        out
    }
}

struct Expander<'a> {
    lexer: Lexer,
    raw_lexer: Lexer,
    index: LineIndex<'a>,
    source: &'a str,
}

impl Expander<'_> {
    fn error(&self, span: Span, word: &str, err: &ExpandError) -> ParseError {
        let (start, end) = crate::parser::locate(self.source, span, word, span);
        let (start, end) = if (start, end) == (span.start, span.end) {
            (span.start, span.start)
        } else {
            (start, end)
        };
        ParseError::at_index(
            ErrorKind::Expansion,
            format!("cannot expand {word:?}: {}", err.message),
            &self.index,
            start,
            end,
        )
        .with_help("close every `${` with `}` and every quote; write `\\$` (or `$$` in a shell) for a literal dollar sign")
    }

    fn word(&self, span: Span, word: &str, env: &dyn Env) -> Result<String, ParseError> {
        self.lexer
            .expand_word(word, env)
            .map_err(|e| self.error(span, word, &e))
    }

    fn opt(
        &self,
        span: Span,
        word: &Option<String>,
        env: &dyn Env,
    ) -> Result<Option<String>, ParseError> {
        word.as_ref().map(|w| self.word(span, w, env)).transpose()
    }

    fn list(&self, span: Span, words: &[String], env: &dyn Env) -> Result<Vec<String>, ParseError> {
        words.iter().map(|w| self.word(span, w, env)).collect()
    }

    fn sources(
        &self,
        span: Span,
        sources: &[Source],
        env: &dyn Env,
    ) -> Result<Vec<Source>, ParseError> {
        sources
            .iter()
            .map(|source| match source {
                Source::Path { path } => Ok(Source::Path {
                    path: self.word(span, path, env)?,
                }),
                Source::Heredoc {
                    name,
                    content,
                    expand,
                } if *expand => Ok(Source::Heredoc {
                    name: name.clone(),
                    content: self
                        .raw_lexer
                        .expand_word(content, env)
                        .map_err(|e| self.error(span, name, &e))?,
                    expand: *expand,
                }),
                other => Ok(other.clone()),
            })
            .collect()
    }

    fn kvs(
        &self,
        span: Span,
        kvs: &[KeyValue],
        env: &dyn Env,
    ) -> Result<Vec<KeyValue>, ParseError> {
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(span, &kv.key, env)?,
                    value: self.word(span, &kv.value, env)?,
                })
            })
            .collect()
    }

    /// Expand the words Docker expands for this instruction (ARG is handled by the caller).
    fn instruction(
        &self,
        span: Span,
        instruction: &Instruction,
        env: &dyn Env,
    ) -> Result<Instruction, ParseError> {
        Ok(match instruction {
            Instruction::Env(kvs) => Instruction::Env(self.kvs(span, kvs, env)?),
            Instruction::Label(kvs) => Instruction::Label(self.kvs(span, kvs, env)?),
            Instruction::Expose(ports) => {
                let ports = self.list(span, ports, env)?;
                let mut out = Vec::with_capacity(ports.len());
                for port in ports.iter().flat_map(|p| p.split_whitespace()) {
                    PortSpec::parse(port).map_err(|e| {
                        ParseError::at_index(
                            ErrorKind::InvalidArguments,
                            e,
                            &self.index,
                            span.start,
                            span.start,
                        )
                        .with_help("write ports as 80, 80/tcp, 53/udp or 8000-8010/tcp")
                    })?;
                    out.push(port.to_string());
                }
                Instruction::Expose(out)
            }
            Instruction::User(u) => Instruction::User(self.word(span, u, env)?),
            Instruction::Workdir(w) => Instruction::Workdir(self.word(span, w, env)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(self.word(span, s, env)?),
            Instruction::Volume(v) => Instruction::Volume(self.list(span, v, env)?),
            Instruction::Add(add) => {
                let mut add = add.clone();
                add.sources = self.sources(span, &add.sources, env)?;
                add.dest = self.word(span, &add.dest, env)?;
                add.chown = self.opt(span, &add.chown, env)?;
                add.chmod = self.opt(span, &add.chmod, env)?;
                add.checksum = self.opt(span, &add.checksum, env)?;
                add.exclude = self.list(span, &add.exclude, env)?;
                Instruction::Add(add)
            }
            Instruction::Copy(copy) => {
                let mut copy = copy.clone();
                copy.sources = self.sources(span, &copy.sources, env)?;
                copy.dest = self.word(span, &copy.dest, env)?;
                copy.from = self.opt(span, &copy.from, env)?;
                copy.chown = self.opt(span, &copy.chown, env)?;
                copy.chmod = self.opt(span, &copy.chmod, env)?;
                copy.exclude = self.list(span, &copy.exclude, env)?;
                Instruction::Copy(copy)
            }
            Instruction::Run(run) => {
                let mut run = run.clone();
                run.mount_specs = self.list(span, &run.mount_specs, env)?;
                run.mounts = run
                    .mount_specs
                    .iter()
                    .map(|spec| {
                        Mount::parse(spec).map_err(|e| {
                            ParseError::at_index(
                                ErrorKind::InvalidFlag,
                                format!("invalid --mount: {e}"),
                                &self.index,
                                span.start,
                                span.start,
                            )
                            .with_help("example: --mount=type=cache,target=/root/.cache")
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Instruction::Run(run)
            }
            other => other.clone(),
        })
    }
}

/// Expand every stage of `program`.
///
/// Errors carry the location of the instruction whose word failed to expand.
pub fn expand(program: &Program, options: &ExpandOptions) -> Result<ExpandedProgram, ParseError> {
    let expander = Expander {
        lexer: Lexer::new(program.escape),
        raw_lexer: Lexer::with_options(program.escape, true, false),
        index: LineIndex::new(&program.source),
        source: &program.source,
    };
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let empty = Ordered::default();

    // Meta args: automatic platform args first, then the ARGs before FROM.
    let mut meta = Ordered::default();
    for (k, v) in options
        .target_platform
        .args("TARGET")
        .into_iter()
        .chain(options.build_platform.args("BUILD"))
    {
        meta.set(k, v);
    }
    let mut meta_declared_unset: BTreeSet<String> = BTreeSet::new();
    for command in &program.meta_args {
        let Instruction::Arg(defs) = &command.instruction else {
            continue;
        };
        for def in defs {
            let scope = Scope {
                env: &empty,
                args: &meta,
            };
            let name = expander.word(command.span, &def.name, &scope)?;
            let default = expander.opt(command.span, &def.default, &scope)?;
            declared.insert(name.clone());
            match options.build_args.get(&name).cloned().or(default) {
                Some(value) => meta.set(name, value),
                None => {
                    meta_declared_unset.insert(name);
                }
            }
        }
    }

    let mut stages: Vec<ExpandedStage> = Vec::with_capacity(program.stages.len());
    for stage in &program.stages {
        let scope = Scope {
            env: &empty,
            args: &meta,
        };
        let image = expander.word(stage.span, &stage.from.image, &scope)?;
        let platform = expander.opt(stage.span, &stage.from.platform, &scope)?;
        let base_stage = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(image.to_lowercase().as_str()))
            .map(|s| s.index);
        let inherited: Vec<(String, String)> = match base_stage.and_then(|i| stages.get(i)) {
            Some(base) => base.env.clone(),
            None => options
                .base_envs
                .get(&stage.index)
                .cloned()
                .unwrap_or_default(),
        };
        let mut env = Ordered::from_list(&inherited);
        let mut args = Ordered::default();
        for (k, v) in &options.build_args {
            if PROXY_ARGS.contains(&k.as_str()) {
                args.set(k.clone(), v.clone());
            }
        }
        let mut commands = Vec::with_capacity(stage.commands.len());
        for command in &stage.commands {
            let span = command.span;
            let instruction = match &command.instruction {
                Instruction::Arg(defs) => {
                    let mut out = Vec::with_capacity(defs.len());
                    for def in defs {
                        let scope = Scope {
                            env: &env,
                            args: &args,
                        };
                        let name = expander.word(span, &def.name, &scope)?;
                        let default = expander.opt(span, &def.default, &scope)?;
                        declared.insert(name.clone());
                        let value = options
                            .build_args
                            .get(&name)
                            .cloned()
                            .or_else(|| default.clone())
                            .or_else(|| meta.get(&name).map(str::to_string));
                        if let Some(value) = value {
                            args.set(name.clone(), value);
                        }
                        out.push(crate::instructions::ArgDefinition { name, default });
                    }
                    Instruction::Arg(out)
                }
                Instruction::Env(kvs) => {
                    let scope = Scope {
                        env: &env,
                        args: &args,
                    };
                    let kvs = expander.kvs(span, kvs, &scope)?;
                    for kv in &kvs {
                        env.set(kv.key.clone(), kv.value.clone());
                    }
                    Instruction::Env(kvs)
                }
                other => {
                    let scope = Scope {
                        env: &env,
                        args: &args,
                    };
                    expander.instruction(span, other, &scope)?
                }
            };
            let run_args = if matches!(instruction, Instruction::Run(_)) {
                args.entries
                    .iter()
                    .filter(|(k, _)| env.get(k).is_none())
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            commands.push(ExpandedCommand {
                command: Command {
                    instruction,
                    span,
                    original: command.original.clone(),
                },
                run_args,
            });
        }
        stages.push(ExpandedStage {
            index: stage.index,
            name: stage.name.clone(),
            from: FromInstruction {
                image,
                platform,
                stage_name: stage.from.stage_name.clone(),
            },
            base_stage,
            commands,
            env: env.entries,
        });
    }

    let unused_build_args = options
        .build_args
        .keys()
        .filter(|k| !declared.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    let _ = meta_declared_unset;
    Ok(ExpandedProgram {
        meta_args: meta.entries,
        stages,
        unused_build_args,
    })
}

/// Parse, lower and expand in one call.
pub fn parse_and_expand(
    source: &str,
    options: &ExpandOptions,
) -> Result<ExpandedProgram, ParseError> {
    let dockerfile = crate::parse(source)?;
    let program = crate::instructions::lower(&dockerfile)?;
    expand(&program, options)
}
