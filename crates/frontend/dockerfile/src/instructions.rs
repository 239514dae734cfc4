//! Typed instructions: the syntax tree lowered to validated instructions with
//! typed flags (mounts, network, security, health-check options...), grouped
//! into build stages.

use std::time::Duration;

use serde::Serialize;

use crate::error::{ErrorKind, ParseError, Warning};
use crate::flags::{FlagKind, FlagValues, describe, parse_flags};
use crate::heredoc::{Heredoc, parse_heredoc_word};
use crate::line_parsers::split_once_whitespace;
use crate::span::{LineIndex, Span};
use crate::syntax::{Arguments, Dockerfile, Node};

/// Every instruction keyword, upper case.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Shell form (a string run by the shell) or exec form (a JSON argv).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum CommandLine {
    /// `RUN echo hi`.
    Shell(String),
    /// `RUN ["echo", "hi"]`.
    Exec(Vec<String>),
}

/// A `KEY=value` pair (ENV, LABEL); values as written until expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDefinition {
    /// Variable name.
    pub name: String,
    /// Default value, if given.
    pub default: Option<String>,
}

/// Type of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountType {
    /// Bind mount from the context or another stage (default).
    Bind,
    /// Persistent cache directory.
    Cache,
    /// In-memory filesystem.
    Tmpfs,
    /// Build secret.
    Secret,
    /// SSH agent socket.
    Ssh,
}

/// Sharing mode of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    /// Concurrent writers allowed.
    Shared,
    /// A new mount per writer.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A parsed `RUN --mount=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Mount type.
    pub kind: MountType,
    /// Mount point in the container.
    pub target: Option<String>,
    /// Path in the source (context, stage or image).
    pub source: Option<String>,
    /// Stage or image to take the source from.
    pub from: Option<String>,
    /// Cache / secret / ssh id.
    pub id: Option<String>,
    /// Cache sharing mode.
    pub sharing: Option<CacheSharing>,
    /// Owner user id.
    pub uid: Option<u32>,
    /// Owner group id.
    pub gid: Option<u32>,
    /// File mode (octal in the Dockerfile).
    pub mode: Option<u32>,
    /// Read-only (default true for bind, false otherwise).
    pub readonly: bool,
    /// Fail when a secret/ssh is missing.
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
}

fn parse_octal_or_decimal_u32(field: &str, value: &str, octal: bool) -> Result<u32, String> {
    let parsed = if octal {
        u32::from_str_radix(value.trim_start_matches("0o"), 8)
    } else {
        value.parse::<u32>()
    };
    parsed.map_err(|_| format!("invalid value {value:?} for mount option {field}"))
}

fn parse_size(value: &str) -> Result<u64, String> {
    let lower = value.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {value:?}"))?;
    let factor: u64 = match unit.trim_end_matches(['b', 'i']) {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("invalid size {value:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {value:?} is too large"))
}

impl Mount {
    /// Parse the value of `--mount` (`type=cache,target=/x,...`).
    pub fn parse(spec: &str) -> Result<Mount, String> {
        let mut fields: Vec<(String, Option<String>)> = Vec::new();
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            fields.push((key, value));
        }
        let kind = match fields
            .iter()
            .find(|(k, _)| k == "type")
            .and_then(|(_, v)| v.as_deref())
        {
            None | Some("bind") => MountType::Bind,
            Some("cache") => MountType::Cache,
            Some("tmpfs") => MountType::Tmpfs,
            Some("secret") => MountType::Secret,
            Some("ssh") => MountType::Ssh,
            Some(other) => return Err(format!("unsupported mount type {other:?}")),
        };
        let mut mount = Mount {
            kind,
            target: None,
            source: None,
            from: None,
            id: None,
            sharing: None,
            uid: None,
            gid: None,
            mode: None,
            readonly: kind == MountType::Bind,
            required: false,
            size: None,
            env: None,
        };
        for (key, value) in fields {
            let bool_value = |v: &Option<String>| -> Result<bool, String> {
                match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => Ok(true),
                    Some("false") => Ok(false),
                    Some(other) => Err(format!("invalid value {other:?} for mount option {key}")),
                }
            };
            let need = |v: Option<String>| -> Result<String, String> {
                v.ok_or_else(|| format!("mount option {key} needs a value"))
            };
            match key.as_str() {
                "type" => {}
                "target" | "dst" | "destination" => mount.target = Some(need(value)?),
                "source" | "src" => mount.source = Some(need(value)?),
                "from" => mount.from = Some(need(value)?),
                "id" => mount.id = Some(need(value)?),
                "env" => mount.env = Some(need(value)?),
                "readonly" | "ro" => mount.readonly = bool_value(&value)?,
                "readwrite" | "rw" => mount.readonly = !bool_value(&value)?,
                "required" => mount.required = bool_value(&value)?,
                "sharing" => {
                    mount.sharing = Some(match need(value)?.as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        other => return Err(format!("unsupported sharing value {other:?}")),
                    })
                }
                "uid" => mount.uid = Some(parse_octal_or_decimal_u32("uid", &need(value)?, false)?),
                "gid" => mount.gid = Some(parse_octal_or_decimal_u32("gid", &need(value)?, false)?),
                "mode" => {
                    mount.mode = Some(parse_octal_or_decimal_u32("mode", &need(value)?, true)?)
                }
                "size" => mount.size = Some(parse_size(&need(value)?)?),
                other => return Err(format!("unexpected key {other:?} in mount option")),
            }
        }
        if matches!(kind, MountType::Bind | MountType::Cache | MountType::Tmpfs)
            && mount.target.is_none()
        {
            return Err("mount is missing a target (add target=/path)".to_string());
        }
        if mount.sharing.is_some() && kind != MountType::Cache {
            return Err("sharing is only valid for type=cache".to_string());
        }
        Ok(mount)
    }
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Default networking.
    Default,
    /// No network.
    None,
    /// Host network.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    /// Default sandbox.
    Sandbox,
    /// Elevated privileges.
    Insecure,
}

/// A source of ADD/COPY: a path (or URL) or an inline heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Path, glob or URL as written.
    Path {
        /// The path.
        path: String,
    },
    /// Heredoc file content.
    Heredoc {
        /// Terminator name (also the file name).
        name: String,
        /// Body (chomped for `<<-`).
        content: String,
        /// Whether the body is variable-expanded.
        expand: bool,
    },
}

/// ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddInstruction {
    /// Sources.
    pub sources: Vec<Source>,
    /// Destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: Option<bool>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Written in JSON form.
    pub json: bool,
}

/// COPY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyInstruction {
    /// Sources.
    pub sources: Vec<Source>,
    /// Destination.
    pub dest: String,
    /// `--from` stage, image or context.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Written in JSON form.
    pub json: bool,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInstruction {
    /// The command.
    pub command: CommandLine,
    /// Parsed `--mount` values (those that need expansion first are parsed by [`crate::expand`]).
    pub mounts: Vec<Mount>,
    /// The raw `--mount` values, in order.
    pub mount_specs: Vec<String>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// Heredocs (inline scripts / files).
    pub heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Cmd {
        /// The test command.
        command: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FromInstruction {
    /// Base image or stage name, as written.
    pub image: String,
    /// `--platform`.
    pub platform: Option<String>,
    /// `AS name` (lower-cased).
    pub stage_name: Option<String>,
}

/// Every Dockerfile instruction, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "instruction",
    content = "value",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
pub enum Instruction {
    /// FROM.
    From(FromInstruction),
    /// RUN.
    Run(RunInstruction),
    /// CMD.
    Cmd(CommandLine),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// MAINTAINER (deprecated).
    Maintainer(String),
    /// EXPOSE: port words as written (`80`, `8000-8010/udp`).
    Expose(Vec<String>),
    /// ENV.
    Env(Vec<KeyValue>),
    /// ADD.
    Add(AddInstruction),
    /// COPY.
    Copy(CopyInstruction),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// VOLUME.
    Volume(Vec<String>),
    /// USER.
    User(String),
    /// WORKDIR.
    Workdir(String),
    /// ARG (several per line).
    Arg(Vec<ArgDefinition>),
    /// ONBUILD: the trigger text and its parsed instruction.
    Onbuild {
        /// The text after ONBUILD, as stored in the image config.
        expression: String,
        /// The wrapped instruction.
        instruction: Box<Instruction>,
    },
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// SHELL (always JSON).
    Shell(Vec<String>),
}

/// An instruction with its location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    /// The typed instruction.
    pub instruction: Instruction,
    /// Source range of the instruction.
    pub span: Span,
    /// The logical line (continuations joined), e.g. for history `created_by`.
    pub original: String,
}

/// A build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among stages (0-based).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The FROM instruction.
    pub from: FromInstruction,
    /// Location of the FROM line.
    pub span: Span,
    /// The FROM logical line.
    pub original: String,
    /// Instructions after FROM.
    pub commands: Vec<Command>,
}

/// A lowered Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Program {
    /// ARGs before the first FROM.
    pub meta_args: Vec<Command>,
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// The escape character.
    pub escape: char,
    /// Parser warnings plus lowering warnings (MAINTAINER, legacy forms).
    pub warnings: Vec<Warning>,
    /// The source text, for locating expansion errors.
    #[serde(skip)]
    pub source: String,
}

impl Program {
    /// Find a stage by name (case-insensitive) or index.
    pub fn stage(&self, name_or_index: &str) -> Option<&Stage> {
        let lower = name_or_index.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name_or_index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.stages.get(i))
            })
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b_chars.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b_chars.len() + 1];
        for (j, cb) in b_chars.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let best = (prev[j] + cost).min(prev[j + 1] + 1).min(current[j] + 1);
            current[j + 1] = best;
        }
        prev = current;
    }
    prev.last().copied().unwrap_or(0)
}

/// The closest known keyword within edit distance 2, if any.
pub fn suggest_keyword(word: &str) -> Option<&'static str> {
    let upper = word.to_uppercase();
    KEYWORDS
        .iter()
        .map(|k| (levenshtein(&upper, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Parse a Go-style duration (`1m30s`, `300ms`, `5s`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        let value: f64 = number.parse().ok()?;
        let nanos = value * nanos_per_unit;
        if !nanos.is_finite() || nanos > 1e20 {
            return None;
        }
        total = total.checked_add(nanos as u128)?;
        rest = after;
    }
    let total = u64::try_from(total).ok()?;
    Some(Duration::from_nanos(total))
}

struct Lowerer<'a> {
    index: LineIndex<'a>,
    source: &'a str,
    warnings: Vec<Warning>,
}

impl Lowerer<'_> {
    fn error(&self, node: &Node, kind: ErrorKind, message: impl Into<String>) -> ParseError {
        let span = node.keyword_span;
        ParseError::at_index(kind, message, &self.index, span.start, span.end)
    }

    fn error_at(
        &self,
        node: &Node,
        needle: &str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> ParseError {
        let (start, end) = crate::parser::locate(self.source, node.span, needle, node.keyword_span);
        ParseError::at_index(kind, message, &self.index, start, end)
    }

    fn flags(&self, node: &Node, spec: &[(&str, FlagKind)]) -> Result<FlagValues, ParseError> {
        let upper = node.keyword.to_uppercase();
        parse_flags(&upper, &node.flags, spec).map_err(|e| {
            let kind = if e.unknown {
                ErrorKind::UnknownFlag
            } else {
                ErrorKind::InvalidFlag
            };
            let help = if e.unknown {
                format!("{upper}: {}", describe(spec))
            } else {
                format!("write the flag as {}=<value>", e.flag)
            };
            self.error_at(node, &e.flag, kind, e.message)
                .with_help(help)
        })
    }

    fn missing(&self, node: &Node, what: &str) -> ParseError {
        let upper = node.keyword.to_uppercase();
        self.error(
            node,
            ErrorKind::InvalidArguments,
            format!("{upper} requires {what}"),
        )
        .with_help(format!(
            "see the {upper} syntax in the Dockerfile reference"
        ))
    }

    fn command_line(&self, node: &Node, args: &Arguments) -> Result<CommandLine, ParseError> {
        match args {
            Arguments::Json(values) => Ok(CommandLine::Exec(values.clone())),
            Arguments::Text(text) => Ok(CommandLine::Shell(text.clone())),
            Arguments::Empty => Ok(CommandLine::Exec(Vec::new())),
            _ => Err(self.missing(node, "a command")),
        }
    }

    fn list(args: &Arguments) -> Vec<String> {
        match args {
            Arguments::Json(v) | Arguments::Words(v) => v.clone(),
            Arguments::Text(t) => vec![t.clone()],
            _ => Vec::new(),
        }
    }

    fn text(&self, node: &Node) -> Result<String, ParseError> {
        match &node.args {
            Arguments::Text(t) => Ok(t.clone()),
            _ => Err(self.missing(node, "exactly one argument")),
        }
    }

    fn sources_and_dest(&self, node: &Node) -> Result<(Vec<Source>, String, bool), ParseError> {
        let json = matches!(node.args, Arguments::Json(_));
        let mut words = Self::list(&node.args);
        if words.len() < 2 {
            return Err(self
                .missing(node, "at least two arguments: a source and a destination")
                .with_help(format!(
                    "example: {} src/ /app/",
                    node.keyword.to_uppercase()
                )));
        }
        let dest = words.pop().unwrap_or_default();
        if !json && matches!(parse_heredoc_word(&dest), Ok(Some(_))) {
            return Err(self
                .error_at(
                    node,
                    &dest,
                    ErrorKind::InvalidArguments,
                    "a heredoc cannot be the destination",
                )
                .with_help("put the destination path last, after the heredoc marker"));
        }
        let mut sources = Vec::with_capacity(words.len());
        for word in words {
            let marker = if json {
                None
            } else {
                parse_heredoc_word(&word).ok().flatten()
            };
            match marker.and_then(|m| node.heredocs.iter().find(|h| h.name == m.name)) {
                Some(h) => sources.push(Source::Heredoc {
                    name: h.name.clone(),
                    content: h.effective_content(),
                    expand: h.expand,
                }),
                None => sources.push(Source::Path { path: word }),
            }
        }
        Ok((sources, dest, json))
    }

    fn lower(&mut self, node: &Node, nested: bool) -> Result<Instruction, ParseError> {
        let name = node.keyword.to_lowercase();
        let no_flags: &[(&str, FlagKind)] = &[];
        let instruction = match name.as_str() {
            "from" => {
                let flags = self.flags(node, &[("platform", FlagKind::String)])?;
                let words = Self::list(&node.args);
                let (image, stage_name) = match words.as_slice() {
                    [image] => (image.clone(), None),
                    [image, as_kw, stage] if as_kw.eq_ignore_ascii_case("as") => {
                        let stage = stage.to_lowercase();
                        let valid = stage.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                            && stage.chars().all(|c| {
                                c.is_ascii_lowercase()
                                    || c.is_ascii_digit()
                                    || matches!(c, '-' | '_' | '.')
                            });
                        if !valid {
                            return Err(self.error_at(node, stage.as_str(), ErrorKind::InvalidArguments, format!("invalid name for build stage: {stage:?}"))
                                .with_help("stage names start with a letter and contain only letters, digits, '-', '_' and '.'"));
                        }
                        (image.clone(), Some(stage))
                    }
                    _ => {
                        return Err(self
                            .missing(node, "either one or three arguments")
                            .with_help("use FROM <image> or FROM <image> AS <name>"));
                    }
                };
                Instruction::From(FromInstruction {
                    image,
                    platform: flags.string("platform"),
                    stage_name,
                })
            }
            "run" => {
                let flags = self.flags(
                    node,
                    &[
                        ("mount", FlagKind::List),
                        ("network", FlagKind::String),
                        ("security", FlagKind::String),
                    ],
                )?;
                if matches!(node.args, Arguments::Empty) {
                    return Err(self.missing(node, "at least one argument"));
                }
                let mount_specs = flags.list("mount");
                let mut mounts = Vec::new();
                for spec in &mount_specs {
                    match Mount::parse(spec) {
                        Ok(m) => mounts.push(m),
                        Err(_) if spec.contains('$') => {}
                        Err(e) => {
                            return Err(self
                                .error_at(
                                    node,
                                    spec,
                                    ErrorKind::InvalidFlag,
                                    format!("invalid --mount: {e}"),
                                )
                                .with_help("example: --mount=type=cache,target=/root/.cache"));
                        }
                    }
                }
                let network = match flags.string("network").as_deref() {
                    None => None,
                    Some("default") => Some(NetworkMode::Default),
                    Some("none") => Some(NetworkMode::None),
                    Some("host") => Some(NetworkMode::Host),
                    Some(other) => {
                        return Err(self
                            .error_at(
                                node,
                                "--network",
                                ErrorKind::InvalidFlag,
                                format!("unsupported network mode {other:?}"),
                            )
                            .with_help("use --network=default, --network=none or --network=host"));
                    }
                };
                let security = match flags.string("security").as_deref() {
                    None => None,
                    Some("sandbox") => Some(SecurityMode::Sandbox),
                    Some("insecure") => Some(SecurityMode::Insecure),
                    Some(other) => {
                        return Err(self
                            .error_at(
                                node,
                                "--security",
                                ErrorKind::InvalidFlag,
                                format!("unsupported security mode {other:?}"),
                            )
                            .with_help("use --security=sandbox or --security=insecure"));
                    }
                };
                Instruction::Run(RunInstruction {
                    command: self.command_line(node, &node.args)?,
                    mounts,
                    mount_specs,
                    network,
                    security,
                    heredocs: node.heredocs.clone(),
                })
            }
            "cmd" => {
                self.flags(node, no_flags)?;
                Instruction::Cmd(self.command_line(node, &node.args)?)
            }
            "entrypoint" => {
                self.flags(node, no_flags)?;
                Instruction::Entrypoint(self.command_line(node, &node.args)?)
            }
            "shell" => {
                self.flags(node, no_flags)?;
                match &node.args {
                    Arguments::Json(v) if !v.is_empty() => Instruction::Shell(v.clone()),
                    _ => {
                        return Err(self
                            .error(
                                node,
                                ErrorKind::InvalidArguments,
                                "SHELL requires the arguments to be in JSON form",
                            )
                            .with_help("write SHELL [\"/bin/sh\", \"-c\"]"));
                    }
                }
            }
            "label" | "env" => {
                self.flags(node, no_flags)?;
                let upper = name.to_uppercase();
                let Arguments::NameValues { pairs, legacy } = &node.args else {
                    return Err(self
                        .missing(node, "at least one argument")
                        .with_help(format!("write {upper} NAME=value")));
                };
                if *legacy {
                    self.warnings.push(Warning {
                        message: format!("The legacy \"{upper} key value\" form is deprecated; use \"{upper} key=value\""),
                        detail: Some(format!("{upper} key value treats the rest of the line as the value")),
                        line: node.span.start_line,
                        span: node.span,
                    });
                }
                let mut kvs = Vec::with_capacity(pairs.len());
                for pair in pairs {
                    if pair.name.is_empty() {
                        return Err(self
                            .error(
                                node,
                                ErrorKind::InvalidArguments,
                                format!("{upper} names can not be blank"),
                            )
                            .with_help(format!("write {upper} NAME=value")));
                    }
                    kvs.push(KeyValue {
                        key: pair.name.clone(),
                        value: pair.value.clone(),
                    });
                }
                if name == "env" {
                    Instruction::Env(kvs)
                } else {
                    Instruction::Label(kvs)
                }
            }
            "maintainer" => {
                self.flags(node, no_flags)?;
                self.warnings.push(Warning {
                    message: "MAINTAINER instruction is deprecated in favor of using label"
                        .to_string(),
                    detail: Some("use LABEL org.opencontainers.image.authors=\"...\"".to_string()),
                    line: node.span.start_line,
                    span: node.span,
                });
                Instruction::Maintainer(self.text(node)?)
            }
            "expose" => {
                self.flags(node, no_flags)?;
                let ports = Self::list(&node.args);
                if ports.is_empty() {
                    return Err(self.missing(node, "at least one argument"));
                }
                for port in ports.iter().filter(|p| !p.contains('$')) {
                    if let Err(e) = PortSpec::parse(port) {
                        return Err(self
                            .error_at(node, port, ErrorKind::InvalidArguments, e)
                            .with_help("write ports as 80, 80/tcp, 53/udp or 8000-8010/tcp"));
                    }
                }
                Instruction::Expose(ports)
            }
            "add" => {
                let flags = self.flags(
                    node,
                    &[
                        ("chown", FlagKind::String),
                        ("chmod", FlagKind::String),
                        ("checksum", FlagKind::String),
                        ("keep-git-dir", FlagKind::Bool),
                        ("link", FlagKind::Bool),
                        ("exclude", FlagKind::List),
                    ],
                )?;
                let (sources, dest, json) = self.sources_and_dest(node)?;
                Instruction::Add(AddInstruction {
                    sources,
                    dest,
                    json,
                    chown: flags.string("chown"),
                    chmod: flags.string("chmod"),
                    checksum: flags.string("checksum"),
                    keep_git_dir: flags.opt_bool("keep-git-dir"),
                    link: flags.bool("link"),
                    exclude: flags.list("exclude"),
                })
            }
            "copy" => {
                let flags = self.flags(
                    node,
                    &[
                        ("from", FlagKind::String),
                        ("chown", FlagKind::String),
                        ("chmod", FlagKind::String),
                        ("link", FlagKind::Bool),
                        ("parents", FlagKind::Bool),
                        ("exclude", FlagKind::List),
                    ],
                )?;
                let (sources, dest, json) = self.sources_and_dest(node)?;
                Instruction::Copy(CopyInstruction {
                    sources,
                    dest,
                    json,
                    from: flags.string("from"),
                    chown: flags.string("chown"),
                    chmod: flags.string("chmod"),
                    link: flags.bool("link"),
                    parents: flags.bool("parents"),
                    exclude: flags.list("exclude"),
                })
            }
            "volume" => {
                self.flags(node, no_flags)?;
                let paths = Self::list(&node.args);
                if paths.is_empty() || paths.iter().any(|p| p.trim().is_empty()) {
                    return Err(self.missing(node, "at least one non-empty path"));
                }
                Instruction::Volume(paths)
            }
            "user" => {
                self.flags(node, no_flags)?;
                Instruction::User(self.text(node)?)
            }
            "workdir" => {
                self.flags(node, no_flags)?;
                Instruction::Workdir(self.text(node)?)
            }
            "stopsignal" => {
                self.flags(node, no_flags)?;
                Instruction::StopSignal(self.text(node)?)
            }
            "arg" => {
                self.flags(node, no_flags)?;
                let words = Self::list(&node.args);
                if words.is_empty() {
                    return Err(self
                        .missing(node, "at least one argument")
                        .with_help("write ARG NAME or ARG NAME=default"));
                }
                let mut defs = Vec::with_capacity(words.len());
                for word in words {
                    let (name, default) = match word.split_once('=') {
                        Some((n, v)) => (n.to_string(), Some(v.to_string())),
                        None => (word.clone(), None),
                    };
                    if name.is_empty() {
                        return Err(self
                            .error_at(
                                node,
                                &word,
                                ErrorKind::InvalidArguments,
                                "ARG names can not be blank",
                            )
                            .with_help("write ARG NAME or ARG NAME=default"));
                    }
                    defs.push(ArgDefinition { name, default });
                }
                Instruction::Arg(defs)
            }
            "onbuild" => {
                self.flags(node, no_flags)?;
                let Arguments::SubCommand(inner) = &node.args else {
                    return Err(self
                        .missing(node, "an instruction to run later")
                        .with_help("example: ONBUILD RUN make"));
                };
                let inner_name = inner.keyword.to_uppercase();
                if matches!(inner_name.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    let (start, end) = (inner.keyword_span.start, inner.keyword_span.end);
                    let message = if inner_name == "ONBUILD" {
                        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()
                    } else {
                        format!("{inner_name} isn't allowed as an ONBUILD trigger")
                    };
                    return Err(ParseError::at_index(
                        ErrorKind::DisallowedOnbuild,
                        message,
                        &self.index,
                        start,
                        end,
                    )
                    .with_help(
                        "ONBUILD can wrap any instruction except ONBUILD, FROM and MAINTAINER",
                    ));
                }
                let instruction = self.lower(inner, true)?;
                let expression = split_once_whitespace(node.original.trim())
                    .1
                    .unwrap_or("")
                    .to_string();
                Instruction::Onbuild {
                    expression,
                    instruction: Box::new(instruction),
                }
            }
            "healthcheck" => {
                let flags = self.flags(
                    node,
                    &[
                        ("interval", FlagKind::String),
                        ("timeout", FlagKind::String),
                        ("start-period", FlagKind::String),
                        ("start-interval", FlagKind::String),
                        ("retries", FlagKind::String),
                    ],
                )?;
                let Arguments::Health { kind, command } = &node.args else {
                    return Err(self.missing(node, "an argument (CMD or NONE)"));
                };
                match kind.to_uppercase().as_str() {
                    "NONE" => {
                        if command.is_some() || !node.flags.is_empty() {
                            return Err(self
                                .error(
                                    node,
                                    ErrorKind::InvalidArguments,
                                    "HEALTHCHECK NONE takes no other arguments",
                                )
                                .with_help("write just HEALTHCHECK NONE"));
                        }
                        Instruction::Healthcheck(Healthcheck::None)
                    }
                    "CMD" => {
                        let Some(command) = command else {
                            return Err(self.missing(node, "a command after CMD"));
                        };
                        let duration = |flag: &str| -> Result<Option<Duration>, ParseError> {
                            let Some(text) = flags.string(flag) else {
                                return Ok(None);
                            };
                            let value = parse_duration(&text).ok_or_else(|| {
                                self.error_at(
                                    node,
                                    &format!("--{flag}"),
                                    ErrorKind::InvalidFlag,
                                    format!("invalid duration {text:?} for --{flag}"),
                                )
                                .with_help("use a duration such as 30s, 1m30s or 500ms")
                            })?;
                            if !value.is_zero() && value < Duration::from_millis(1) {
                                return Err(self
                                    .error_at(
                                        node,
                                        &format!("--{flag}"),
                                        ErrorKind::InvalidFlag,
                                        format!("--{flag} cannot be less than 1ms"),
                                    )
                                    .with_help("use at least 1ms, or 0 for the default"));
                            }
                            Ok(Some(value))
                        };
                        let retries = match flags.string("retries") {
                            None => None,
                            Some(text) => Some(text.parse::<u32>().map_err(|_| {
                                self.error_at(
                                    node,
                                    "--retries",
                                    ErrorKind::InvalidFlag,
                                    format!("invalid --retries value {text:?}"),
                                )
                                .with_help("use a non-negative integer, e.g. --retries=3")
                            })?),
                        };
                        Instruction::Healthcheck(Healthcheck::Cmd {
                            command: self.command_line(node, command)?,
                            interval: duration("interval")?,
                            timeout: duration("timeout")?,
                            start_period: duration("start-period")?,
                            start_interval: duration("start-interval")?,
                            retries,
                        })
                    }
                    other => {
                        return Err(self
                            .error_at(
                                node,
                                kind,
                                ErrorKind::InvalidArguments,
                                format!("unknown type {other:?} in HEALTHCHECK (try CMD)"),
                            )
                            .with_help(
                                "write HEALTHCHECK [options] CMD <command> or HEALTHCHECK NONE",
                            ));
                    }
                }
            }
            _ => {
                let mut err = self
                    .error(
                        node,
                        ErrorKind::UnknownInstruction,
                        format!("unknown instruction \"{}\"", node.keyword),
                    )
                    .with_help(format!("valid instructions are {}", KEYWORDS.join(", ")));
                if let Some(suggestion) = suggest_keyword(&node.keyword) {
                    err = err.with_label(format!("did you mean \"{suggestion}\"?"));
                }
                return Err(err);
            }
        };
        let _ = nested;
        Ok(instruction)
    }
}

/// A validated EXPOSE port or port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    /// First port.
    pub start: u16,
    /// Last port (equal to `start` for a single port).
    pub end: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl PortSpec {
    /// Parse `80`, `80/udp`, `8000-8010/tcp`.
    pub fn parse(text: &str) -> Result<PortSpec, String> {
        let (ports, protocol) = match text.split_once('/') {
            Some((p, proto)) => (p, proto),
            None => (text, "tcp"),
        };
        let protocol = match proto_lower(protocol).as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => return Err(format!("invalid protocol {other:?} in port {text:?}")),
        };
        let parse_one = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("invalid port {p:?} in {text:?}"))
        };
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (parse_one(a)?, parse_one(b)?),
            None => {
                let p = parse_one(ports)?;
                (p, p)
            }
        };
        if end < start {
            return Err(format!("invalid port range {ports:?}: end is before start"));
        }
        Ok(PortSpec {
            start,
            end,
            protocol,
        })
    }
}

fn proto_lower(text: &str) -> String {
    text.to_ascii_lowercase()
}

/// Lower a parsed Dockerfile into stages of typed instructions.
///
/// Errors: unknown instructions (with a "did you mean"), unknown or invalid
/// flags, disallowed ONBUILD triggers, instructions other than ARG before the
/// first FROM, a stage name used twice, malformed arguments.
pub fn lower(dockerfile: &Dockerfile) -> Result<Program, ParseError> {
    let mut lowerer = Lowerer {
        index: LineIndex::new(&dockerfile.source),
        source: &dockerfile.source,
        warnings: Vec::new(),
    };
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &dockerfile.instructions {
        let instruction = lowerer.lower(node, false)?;
        let command = Command {
            instruction,
            span: node.span,
            original: node.original.clone(),
        };
        match command.instruction {
            Instruction::From(from) => {
                if let Some(name) = &from.stage_name
                    && let Some(previous) = stages.iter().find(|s| s.name.as_ref() == Some(name))
                {
                    return Err(lowerer
                        .error_at(
                            node,
                            name,
                            ErrorKind::DuplicateStageName,
                            format!("duplicate stage name {name:?}"),
                        )
                        .with_label(format!(
                            "first defined on line {}",
                            previous.span.start_line
                        ))
                        .with_help("give each stage a unique name after AS"));
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: from.stage_name.clone(),
                    from,
                    span: node.span,
                    original: node.original.clone(),
                    commands: Vec::new(),
                });
            }
            _ => match stages.last_mut() {
                Some(stage) => stage.commands.push(command),
                None if matches!(command.instruction, Instruction::Arg(_)) => {
                    meta_args.push(command)
                }
                None => {
                    return Err(lowerer
                        .error(node, ErrorKind::InstructionBeforeFrom, format!("{} is not allowed before the first FROM", node.keyword.to_uppercase()))
                        .with_help("only ARG may come before the first FROM; move this instruction after a FROM line"));
                }
            },
        }
    }
    if stages.is_empty() {
        let last = dockerfile.instructions.last();
        let span = last.map(|n| n.span).unwrap_or_default();
        return Err(ParseError::at_index(
            ErrorKind::InstructionBeforeFrom,
            "the Dockerfile has no FROM instruction",
            &lowerer.index,
            span.start,
            span.end,
        )
        .with_help("add a FROM line, e.g. FROM alpine:3.20"));
    }
    let mut warnings = dockerfile.warnings.clone();
    warnings.extend(lowerer.warnings);
    Ok(Program {
        meta_args,
        stages,
        escape: dockerfile.escape,
        warnings,
        source: dockerfile.source.clone(),
    })
}
