//! Cache keys: what goes into a step's key, and the explicit, versioned byte
//! encoding that is hashed to make it.
//!
//! A key is `sha256` over `stowage-cache-v1`, then every field of
//! [`StepInputs`] as a tagged, length-prefixed record. No `Hash` derive, no
//! `Debug` strings and no JSON maps take part, so the bytes are stable across
//! Rust versions and processes; golden tests pin them. Any change to the
//! encoding must bump [`CACHE_KEY_VERSION`].
//!
//! The inputs themselves are kept beside the key so that a miss can be
//! explained: [`explain_miss`] compares the previous inputs of the same step
//! with the current ones and says which file, which build arg or which text
//! changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stowage_digest::{Digest, Hasher};

/// The version tag hashed first into every key.
pub const CACHE_KEY_VERSION: &str = "stowage-cache-v1";

/// A step's cache key.
pub type CacheKey = Digest;

/// What kind of step a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// The start of a stage: a base image, a stage, or scratch.
    Source,
    /// A config-only instruction (ENV, LABEL, CMD, ...).
    Config,
    /// RUN.
    Run,
    /// COPY (from the context or another stage/image).
    Copy,
    /// ADD.
    Add,
}

impl OpKind {
    fn tag(self) -> &'static str {
        match self {
            OpKind::Source => "source",
            OpKind::Config => "config",
            OpKind::Run => "run",
            OpKind::Copy => "copy",
            OpKind::Add => "add",
        }
    }
}

/// The type of a file that COPY/ADD selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

impl FileType {
    fn tag(self) -> u8 {
        match self {
            FileType::File => b'f',
            FileType::Dir => b'd',
            FileType::Symlink => b'l',
        }
    }
}

/// One file selected by COPY/ADD, as it will land in the layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInput {
    /// Path relative to the COPY source root (or the context), `/`-separated.
    pub path: String,
    /// Type.
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Permission bits after `--chmod`.
    pub mode: u32,
    /// Owner after `--chown`.
    pub uid: u32,
    /// Group after `--chown`.
    pub gid: u32,
    /// Symlink target, empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link: String,
    /// Content digest of a regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// Everything a step's key is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInputs {
    /// The kind of step.
    pub op: OpKind,
    /// The key of the step before it (none for a stage's source).
    pub parent: Option<CacheKey>,
    /// The instruction after expansion, as history records it.
    pub instruction: String,
    /// The platform, `os/arch[/variant]`.
    pub platform: String,
    /// Build args visible to the step, with their values (RUN only: for other
    /// steps they act through the expanded text).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// Further named inputs (env, user, workdir, shell, network, mounts,
    /// source image digest, ...), each as canonical text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// The files COPY/ADD selected, grouped by source as written, sorted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, Vec<FileInput>>,
}

impl StepInputs {
    /// Inputs of a step with nothing but its kind, parent and text.
    pub fn new(op: OpKind, parent: Option<CacheKey>, instruction: &str, platform: &str) -> Self {
        Self {
            op,
            parent,
            instruction: instruction.to_owned(),
            platform: platform.to_owned(),
            build_args: BTreeMap::new(),
            fields: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// The cache key: sha256 over the explicit encoding.
    pub fn key(&self) -> CacheKey {
        let mut encoder = Encoder::new();
        encoder.record(b"op", self.op.tag().as_bytes());
        match &self.parent {
            Some(parent) => encoder.record(b"parent", parent.as_bytes()),
            None => encoder.record(b"parent", b""),
        }
        encoder.record(b"instruction", self.instruction.as_bytes());
        encoder.record(b"platform", self.platform.as_bytes());
        encoder.count(b"build_args", self.build_args.len());
        for (name, value) in &self.build_args {
            encoder.record(b"arg.name", name.as_bytes());
            encoder.record(b"arg.value", value.as_bytes());
        }
        encoder.count(b"fields", self.fields.len());
        for (name, value) in &self.fields {
            encoder.record(b"field.name", name.as_bytes());
            encoder.record(b"field.value", value.as_bytes());
        }
        encoder.count(b"sources", self.files.len());
        for (source, files) in &self.files {
            encoder.record(b"source", source.as_bytes());
            encoder.record(b"source.files", files_digest(files).as_bytes());
        }
        encoder.finish()
    }
}

/// The Merkle digest of one source's selected files: path, type, mode,
/// owner, link target and content, never timestamps or inode numbers.
pub fn files_digest(files: &[FileInput]) -> Digest {
    let mut encoder = Encoder::with_tag("stowage-files-v1");
    encoder.count(b"files", files.len());
    for file in files {
        encoder.record(b"path", file.path.as_bytes());
        encoder.record(b"type", &[file.file_type.tag()]);
        encoder.record(b"mode", &file.mode.to_be_bytes());
        encoder.record(b"uid", &file.uid.to_be_bytes());
        encoder.record(b"gid", &file.gid.to_be_bytes());
        encoder.record(b"link", file.link.as_bytes());
        match &file.digest {
            Some(digest) => encoder.record(b"digest", digest.as_bytes()),
            None => encoder.record(b"digest", b""),
        }
    }
    encoder.finish()
}

/// Tagged, length-prefixed records fed into sha256.
struct Encoder {
    hasher: Hasher,
}

impl Encoder {
    fn new() -> Self {
        Self::with_tag(CACHE_KEY_VERSION)
    }

    fn with_tag(tag: &str) -> Self {
        let mut encoder = Self {
            hasher: Hasher::new(),
        };
        encoder.record(b"version", tag.as_bytes());
        encoder
    }

    fn record(&mut self, name: &[u8], value: &[u8]) {
        self.hasher.update(&(name.len() as u64).to_be_bytes());
        self.hasher.update(name);
        self.hasher.update(&(value.len() as u64).to_be_bytes());
        self.hasher.update(value);
    }

    fn count(&mut self, name: &[u8], count: usize) {
        self.record(name, &(count as u64).to_be_bytes());
    }

    fn finish(self) -> Digest {
        self.hasher.finish()
    }
}

/// Why a step missed the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum MissReason {
    /// No earlier build of this step is known.
    FirstBuild,
    /// No earlier build of this step is known here, and none of the
    /// `--cache-from` sources has a layer for it.
    NotInCacheSources {
        /// The `--cache-from` sources, as given.
        sources: Vec<String>,
    },
    /// The step before it missed, so everything below is rebuilt.
    ParentMissed,
    /// The cache was disabled (`--no-cache`).
    NoCache,
    /// The instruction text changed.
    InstructionChanged {
        /// Before.
        before: String,
        /// Now.
        now: String,
    },
    /// A build arg visible to the step changed.
    BuildArgChanged {
        /// The arg's name.
        name: String,
        /// Its value before, if it was set.
        before: Option<String>,
        /// Its value now, if set.
        now: Option<String>,
    },
    /// Another input changed (env, user, workdir, base image, ...).
    FieldChanged {
        /// Which input.
        name: String,
        /// Before.
        before: Option<String>,
        /// Now.
        now: Option<String>,
    },
    /// Files of a COPY/ADD source changed.
    FilesChanged {
        /// The source as written.
        source: String,
        /// Paths whose content or metadata changed.
        changed: Vec<String>,
        /// Paths that are new.
        added: Vec<String>,
        /// Paths that are gone.
        removed: Vec<String>,
    },
    /// The key matched but the cached layer's blob was missing or corrupt.
    CachedLayerUnusable {
        /// What was wrong.
        detail: String,
    },
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissReason::FirstBuild => write!(f, "not built before"),
            MissReason::NotInCacheSources { sources } => write!(
                f,
                "not built before, and no --cache-from source has it ({})",
                sources.join(", ")
            ),
            MissReason::ParentMissed => write!(f, "the step before it changed"),
            MissReason::NoCache => write!(f, "--no-cache"),
            MissReason::InstructionChanged { before, now } => {
                write!(f, "instruction changed: {before:?} -> {now:?}")
            }
            MissReason::BuildArgChanged { name, before, now } => write!(
                f,
                "build arg {name} changed: {} -> {}",
                show_opt(before),
                show_opt(now)
            ),
            MissReason::FieldChanged { name, before, now } => write!(
                f,
                "{name} changed: {} -> {}",
                show_opt(before),
                show_opt(now)
            ),
            MissReason::FilesChanged {
                source,
                changed,
                added,
                removed,
            } => {
                write!(f, "files of {source:?} changed:")?;
                let mut first = true;
                for (label, paths) in [("changed", changed), ("added", added), ("removed", removed)]
                {
                    if paths.is_empty() {
                        continue;
                    }
                    let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
                    let more = paths.len().saturating_sub(shown.len());
                    write!(
                        f,
                        "{} {label} {}{}",
                        if first { "" } else { ";" },
                        shown.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )?;
                    first = false;
                }
                Ok(())
            }
            MissReason::CachedLayerUnusable { detail } => {
                write!(f, "cached layer unusable ({detail}), rebuilt")
            }
        }
    }
}

fn show_opt(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "(unset)".to_owned(),
    }
}

/// Explains why `now` differs from `before`, the inputs of the same step in
/// an earlier build. Returns every difference found, most specific first.
///
/// When `parent_rebuilt` is false, the steps above only changed the config
/// (an ARG or ENV line, say): the step's own inputs are compared, and the
/// parent is blamed only if nothing of its own changed.
pub fn explain_miss(
    before: &StepInputs,
    now: &StepInputs,
    parent_rebuilt: bool,
) -> Vec<MissReason> {
    let mut reasons = Vec::new();
    if before.parent != now.parent && parent_rebuilt {
        reasons.push(MissReason::ParentMissed);
        return reasons;
    }
    if before.instruction != now.instruction {
        reasons.push(MissReason::InstructionChanged {
            before: before.instruction.clone(),
            now: now.instruction.clone(),
        });
    }
    for (name, before_value, now_value) in diff_maps(&before.build_args, &now.build_args) {
        reasons.push(MissReason::BuildArgChanged {
            name,
            before: before_value,
            now: now_value,
        });
    }
    for (name, before_value, now_value) in diff_maps(&before.fields, &now.fields) {
        reasons.push(MissReason::FieldChanged {
            name,
            before: before_value,
            now: now_value,
        });
    }
    if before.platform != now.platform {
        reasons.push(MissReason::FieldChanged {
            name: "platform".to_owned(),
            before: Some(before.platform.clone()),
            now: Some(now.platform.clone()),
        });
    }
    let sources: std::collections::BTreeSet<&String> =
        before.files.keys().chain(now.files.keys()).collect();
    for source in sources {
        let empty = Vec::new();
        let old = before.files.get(source).unwrap_or(&empty);
        let new = now.files.get(source).unwrap_or(&empty);
        if old == new {
            continue;
        }
        let old_map: BTreeMap<&str, &FileInput> =
            old.iter().map(|f| (f.path.as_str(), f)).collect();
        let new_map: BTreeMap<&str, &FileInput> =
            new.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut changed = Vec::new();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for (path, file) in &new_map {
            match old_map.get(path) {
                None => added.push((*path).to_owned()),
                Some(old_file) if old_file != file => changed.push((*path).to_owned()),
                Some(_) => {}
            }
        }
        for path in old_map.keys() {
            if !new_map.contains_key(path) {
                removed.push((*path).to_owned());
            }
        }
        reasons.push(MissReason::FilesChanged {
            source: source.clone(),
            changed,
            added,
            removed,
        });
    }
    if reasons.is_empty() && before.op != now.op {
        reasons.push(MissReason::InstructionChanged {
            before: before.op.tag().to_owned(),
            now: now.op.tag().to_owned(),
        });
    }
    if reasons.is_empty() && before.parent != now.parent {
        reasons.push(MissReason::ParentMissed);
    }
    reasons
}

type MapDiff = (String, Option<String>, Option<String>);

fn diff_maps(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<MapDiff> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, n) = (before.get(name), now.get(name));
            (b != n).then(|| (name.clone(), b.cloned(), n.cloned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_inputs() -> StepInputs {
        let mut inputs = StepInputs::new(OpKind::Copy, None, "COPY . /app", "linux/amd64");
        inputs.fields.insert("dest".into(), "/app".into());
        inputs.files.insert(
            ".".into(),
            vec![
                FileInput {
                    path: "a.txt".into(),
                    file_type: FileType::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    link: String::new(),
                    digest: Some(Digest::of(b"a")),
                },
                FileInput {
                    path: "l".into(),
                    file_type: FileType::Symlink,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    link: "a.txt".into(),
                    digest: None,
                },
            ],
        );
        inputs
    }

    /// Golden keys: if one of these changes, the encoding changed, and
    /// CACHE_KEY_VERSION must be bumped along with these values. The values
    /// were cross-checked with an independent Python encoding of the format.
    #[test]
    fn golden_keys_are_pinned() {
        let run = {
            let mut inputs = StepInputs::new(
                OpKind::Run,
                Some(Digest::of(b"parent")),
                "RUN apt-get update",
                "linux/amd64",
            );
            inputs.build_args.insert("VERSION".into(), "1.0".into());
            inputs.fields.insert("env".into(), "PATH=/usr/bin".into());
            inputs
        };
        assert_eq!(
            run.key().to_string(),
            "sha256:c5c0084fe967dbd51e08a693e11547913583c0d68db69c23a6014fd782d9f208"
        );
        assert_eq!(
            copy_inputs().key().to_string(),
            "sha256:ed4bc0dc89cf03e04580c394056b8c86ca66473f74e37e25c7a6b1b7a95e3f03"
        );
    }

    #[test]
    fn every_input_moves_the_key() {
        let base = copy_inputs();
        let key = base.key();
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.instruction.push(' ');
        variants.push(v);
        let mut v = base.clone();
        v.parent = Some(Digest::of(b"p"));
        variants.push(v);
        let mut v = base.clone();
        v.platform = "linux/arm64".into();
        variants.push(v);
        let mut v = base.clone();
        v.build_args.insert("A".into(), "".into());
        variants.push(v);
        let mut v = base.clone();
        v.fields.insert("dest".into(), "/app2".into());
        variants.push(v);
        for mutate in [
            |f: &mut FileInput| f.path.push('x'),
            |f: &mut FileInput| f.mode = 0o600,
            |f: &mut FileInput| f.uid = 1,
            |f: &mut FileInput| f.gid = 1,
            |f: &mut FileInput| f.link = "b".into(),
            |f: &mut FileInput| f.digest = Some(Digest::of(b"b")),
            |f: &mut FileInput| f.file_type = FileType::Dir,
        ] {
            let mut v = base.clone();
            if let Some(files) = v.files.get_mut(".") {
                mutate(&mut files[0]);
            }
            variants.push(v);
        }
        for (index, variant) in variants.iter().enumerate() {
            assert_ne!(variant.key(), key, "variant {index} kept the key");
        }
        // Field boundaries are explicit: moving a byte between fields changes the key.
        let mut a = StepInputs::new(OpKind::Config, None, "ab", "c");
        let mut b = StepInputs::new(OpKind::Config, None, "a", "bc");
        assert_ne!(a.key(), b.key());
        a.fields.insert("k".into(), "v1".into());
        b.fields.insert("kv".into(), "1".into());
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn explains_file_arg_and_text_changes() {
        let before = copy_inputs();
        let mut now = copy_inputs();
        let files = now.files.get_mut(".").unwrap();
        files[0].digest = Some(Digest::of(b"changed"));
        files.push(FileInput {
            path: "new.txt".into(),
            file_type: FileType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            link: String::new(),
            digest: Some(Digest::of(b"n")),
        });
        files.retain(|f| f.path != "l");
        let reasons = explain_miss(&before, &now, true);
        assert_eq!(
            reasons,
            vec![MissReason::FilesChanged {
                source: ".".into(),
                changed: vec!["a.txt".into()],
                added: vec!["new.txt".into()],
                removed: vec!["l".into()],
            }]
        );
        let text = reasons[0].to_string();
        assert!(
            text.contains("changed a.txt") && text.contains("added new.txt"),
            "{text}"
        );

        let mut run_before = StepInputs::new(OpKind::Run, None, "RUN make", "linux/amd64");
        run_before.build_args.insert("V".into(), "1".into());
        let mut run_now = run_before.clone();
        run_now.build_args.insert("V".into(), "2".into());
        run_now.instruction = "RUN make all".into();
        let reasons = explain_miss(&run_before, &run_now, true);
        assert!(reasons.contains(&MissReason::BuildArgChanged {
            name: "V".into(),
            before: Some("1".into()),
            now: Some("2".into())
        }));
        assert!(matches!(reasons[0], MissReason::InstructionChanged { .. }));

        let mut child = run_before.clone();
        child.parent = Some(Digest::of(b"other"));
        assert_eq!(
            explain_miss(&run_before, &child, true),
            vec![MissReason::ParentMissed]
        );
    }

    #[test]
    fn inputs_round_trip_through_json() {
        let inputs = copy_inputs();
        let json = serde_json::to_string(&inputs).unwrap();
        let back: StepInputs = serde_json::from_str(&json).unwrap();
        assert_eq!(back, inputs);
        assert_eq!(back.key(), inputs.key());
    }
}
