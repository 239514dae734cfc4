//! The image configuration (the "config blob"): OCI's `application/vnd.oci.image.config.v1+json`
//! and Docker's `application/vnd.docker.container.image.v1+json`, which share one JSON shape.
//!
//! Top-level names are OCI's lowercase ones; the `config` object uses Docker's PascalCase
//! names and keeps every field Docker writes (Healthcheck, OnBuild, Shell, ArgsEscaped, ...).
//! All maps are `BTreeMap`, so serialization is deterministic.
//!
//! Serialization rule: a field that is `None` is omitted (this is what BuildKit, and therefore
//! a current `docker build`, writes); a field that is `Some` is written even when empty. Configs
//! written by Docker's legacy builder contain explicit `null`s (`"Cmd": null`); those are
//! remembered in [`ContainerConfig::explicit_nulls`] and written back, and any field this type
//! does not know is kept in an `extra` map, so a foreign config survives a parse/serialize
//! round trip unchanged up to key order (compare with [`crate::canonical_json`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use stowage_digest::Digest;

use crate::platform::Platform;

/// The value type of Docker's set-like maps (`ExposedPorts`, `Volumes`): always `{}`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EmptyObject {}

/// The whole image config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time, kept verbatim as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author (Dockerfile `MAINTAINER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture in GOARCH terms (`amd64`, `arm64`, ...).
    #[serde(default)]
    pub architecture: String,
    /// Operating system in GOOS terms (`linux`).
    #[serde(default)]
    pub os: String,
    /// `os.version` (Windows only in practice).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v8` for arm64, `v7` for arm, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The runtime defaults for containers (`Env`, `Cmd`, ...). Always written.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers' uncompressed digests.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per Dockerfile step; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields we do not model (`container_config`, `docker_version`, `moby.buildkit.*`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// A config with no layers for `platform` and nothing else set (`FROM scratch`).
    pub fn scratch(platform: &Platform) -> Self {
        Self {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            os_version: platform.os_version.clone(),
            rootfs: RootFs::default(),
            ..Self::default()
        }
    }

    /// The platform this config describes.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            ..Platform::default()
        }
    }

    /// Parses config blob bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Serializes to canonical JSON (sorted keys, compact): the bytes to store and hash.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, crate::CanonicalJsonError> {
        crate::canonical_json(self)
    }
}

/// `rootfs`: the ordered uncompressed layer digests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// diff_ids, bottom layer first. `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub diff_ids: Vec<Digest>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction text, e.g. `RUN /bin/sh -c make # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free comment (BuildKit writes `buildkit.dockerfile.v0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step produced no layer (ENV, CMD, LABEL, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl History {
    /// Whether this entry has a matching layer in `rootfs.diff_ids`.
    pub fn has_layer(&self) -> bool {
        self.empty_layer != Some(true)
    }
}

/// `HEALTHCHECK` settings. Durations are in nanoseconds, as Docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(rename = "Test", default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Time between checks (ns).
    #[serde(rename = "Interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Time before a check is considered hung (ns).
    #[serde(rename = "Timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Start period (ns).
    #[serde(
        rename = "StartPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_period: Option<i64>,
    /// Interval during the start period (ns).
    #[serde(
        rename = "StartInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_interval: Option<i64>,
    /// Consecutive failures needed to report unhealthy.
    #[serde(rename = "Retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Deserializes a present field as `Some(value-or-null)`; absent fields stay `None` by default.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

macro_rules! container_config {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty => $json:literal ),* $(,)?) => {
        /// The `config` object of an image config: defaults for containers run from the image.
        ///
        /// `None` fields are omitted on output. Field names in JSON are Docker's PascalCase.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(from = "RawContainerConfig", into = "RawContainerConfig")]
        pub struct ContainerConfig {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
            /// JSON names of fields that were read as an explicit `null` and are `None`;
            /// they are written back as `null` (legacy Docker writes `"Cmd": null`).
            pub explicit_nulls: BTreeSet<String>,
            /// Fields this type does not model, kept verbatim.
            pub extra: BTreeMap<String, Value>,
        }

        #[derive(Serialize, Deserialize)]
        struct RawContainerConfig {
            $(
                #[serde(rename = $json, default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
                $field: Option<Option<$ty>>,
            )*
            #[serde(flatten)]
            extra: BTreeMap<String, Value>,
        }

        impl From<RawContainerConfig> for ContainerConfig {
            fn from(raw: RawContainerConfig) -> Self {
                let mut explicit_nulls = BTreeSet::new();
                $(
                    if matches!(raw.$field, Some(None)) {
                        explicit_nulls.insert($json.to_owned());
                    }
                )*
                Self {
                    $( $field: raw.$field.flatten(), )*
                    explicit_nulls,
                    extra: raw.extra,
                }
            }
        }

        impl From<ContainerConfig> for RawContainerConfig {
            fn from(config: ContainerConfig) -> Self {
                let nulls = &config.explicit_nulls;
                Self {
                    $(
                        $field: match config.$field {
                            Some(value) => Some(Some(value)),
                            None if nulls.contains($json) => Some(None),
                            None => None,
                        },
                    )*
                    extra: config.extra,
                }
            }
        }
    };
}

container_config! {
    /// Container host name.
    hostname: String => "Hostname",
    /// Container domain name.
    domainname: String => "Domainname",
    /// `USER`: `user`, `user:group`, `uid:gid`.
    user: String => "User",
    /// Attach stdin.
    attach_stdin: bool => "AttachStdin",
    /// Attach stdout.
    attach_stdout: bool => "AttachStdout",
    /// Attach stderr.
    attach_stderr: bool => "AttachStderr",
    /// `EXPOSE`: keys like `80/tcp`.
    exposed_ports: BTreeMap<String, EmptyObject> => "ExposedPorts",
    /// Allocate a tty.
    tty: bool => "Tty",
    /// Keep stdin open.
    open_stdin: bool => "OpenStdin",
    /// Close stdin after the first client detaches.
    stdin_once: bool => "StdinOnce",
    /// `ENV`, as `KEY=value`, in order.
    env: Vec<String> => "Env",
    /// `CMD`.
    cmd: Vec<String> => "Cmd",
    /// `HEALTHCHECK`.
    healthcheck: Healthcheck => "Healthcheck",
    /// Windows: the command line is already escaped.
    args_escaped: bool => "ArgsEscaped",
    /// The image name the container was created from (legacy builder).
    image: String => "Image",
    /// `VOLUME`.
    volumes: BTreeMap<String, EmptyObject> => "Volumes",
    /// `WORKDIR`.
    working_dir: String => "WorkingDir",
    /// `ENTRYPOINT`.
    entrypoint: Vec<String> => "Entrypoint",
    /// Network disabled.
    network_disabled: bool => "NetworkDisabled",
    /// MAC address (deprecated).
    mac_address: String => "MacAddress",
    /// `ONBUILD` triggers, as written in the Dockerfile.
    on_build: Vec<String> => "OnBuild",
    /// `LABEL`.
    labels: BTreeMap<String, String> => "Labels",
    /// `STOPSIGNAL`.
    stop_signal: String => "StopSignal",
    /// Stop timeout in seconds.
    stop_timeout: i64 => "StopTimeout",
    /// `SHELL`.
    shell: Vec<String> => "Shell",
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{canonical_json, canonicalize_value};

    /// A config blob as the legacy Docker builder writes it (nulls, empty strings,
    /// container_config, docker_version).
    const LEGACY_DOCKER: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"ExposedPorts":{"80/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh","-c","#(nop) ","CMD [\"sh\"]"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},"ArgsEscaped":true,"Image":"sha256:0a0b","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"a":"b"},"StopSignal":"SIGTERM","Shell":["/bin/bash","-c"]},"container":"3c0f","container_config":{"Hostname":"3c0f","Cmd":null},"created":"2024-01-02T03:04:05.123456789Z","docker_version":"20.10.7","history":[{"created":"2024-01-02T03:04:05Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / "},{"created":"2024-01-02T03:04:05Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"##;

    /// A config blob as BuildKit (current `docker build`) writes it.
    const BUILDKIT: &str = r#"{"architecture":"arm64","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/","OnBuild":["RUN echo hi"],"ArgsEscaped":true},"created":"2024-05-06T07:08:09Z","history":[{"created":"2024-05-06T07:08:09Z","created_by":"CMD [\"sh\"]","comment":"buildkit.dockerfile.v0","empty_layer":true}],"moby.buildkit.buildinfo.v1":"e30=","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"variant":"v8"}"#;

    fn round_trips(text: &str) {
        let parsed: ImageConfig = serde_json::from_str(text).unwrap();
        let ours = canonical_json(&parsed).unwrap();
        let theirs =
            serde_json::to_vec(&canonicalize_value(serde_json::from_str(text).unwrap())).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    #[test]
    fn legacy_docker_config_round_trips_through_canonical_form() {
        round_trips(LEGACY_DOCKER);
        let parsed: ImageConfig = serde_json::from_str(LEGACY_DOCKER).unwrap();
        assert_eq!(parsed.config.hostname.as_deref(), Some(""));
        assert_eq!(parsed.config.cmd.as_ref().map(Vec::len), Some(4));
        assert_eq!(parsed.config.entrypoint, None);
        assert!(parsed.config.explicit_nulls.contains("Entrypoint"));
        assert_eq!(
            parsed.config.healthcheck.as_ref().and_then(|h| h.retries),
            Some(3)
        );
        assert_eq!(parsed.config.shell.as_ref().map(Vec::len), Some(2));
        assert!(parsed.extra.contains_key("container_config"));
        assert!(parsed.extra.contains_key("docker_version"));
        assert_eq!(parsed.history.len(), 2);
        assert!(!parsed.history[1].has_layer());
    }

    #[test]
    fn buildkit_config_round_trips_through_canonical_form() {
        round_trips(BUILDKIT);
        let parsed: ImageConfig = serde_json::from_str(BUILDKIT).unwrap();
        assert_eq!(parsed.platform().to_string(), "linux/arm64/v8");
        assert_eq!(parsed.config.on_build, Some(vec!["RUN echo hi".to_owned()]));
    }

    #[test]
    fn setting_a_field_that_was_null_writes_the_value() {
        let mut parsed: ImageConfig = serde_json::from_str(LEGACY_DOCKER).unwrap();
        parsed.config.entrypoint = Some(vec!["/init".into()]);
        let text = String::from_utf8(canonical_json(&parsed).unwrap()).unwrap();
        assert!(text.contains(r#""Entrypoint":["/init"]"#), "{text}");
    }

    #[test]
    fn new_config_omits_unset_fields_and_writes_set_empty_ones() {
        let mut config = ImageConfig::scratch(&Platform::native());
        config.config.env = Some(vec!["A=1".into()]);
        config.config.cmd = Some(Vec::new());
        config.config.exposed_ports = Some(BTreeMap::from([("80/tcp".into(), EmptyObject {})]));
        let text = String::from_utf8(config.to_canonical_json().unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"architecture":"amd64","config":{"Cmd":[],"Env":["A=1"],"ExposedPorts":{"80/tcp":{}}},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
    }

    #[test]
    fn null_diff_ids_read_as_empty_and_bad_digests_are_errors() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#,
        )
        .unwrap();
        assert!(c.rootfs.diff_ids.is_empty());
        assert!(serde_json::from_str::<ImageConfig>(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["md5:00"]}}"#
        )
        .is_err());
    }
}
