//! Registry credentials the way Docker keeps them: `~/.docker/config.json`
//! (`$DOCKER_CONFIG/config.json`) with its `auths` entries (base64 `auth`,
//! `username`/`password`, `identitytoken`), and the `credsStore` /
//! `credHelpers` programs `docker-credential-<name>` spoken to over stdin/stdout.
//! Also writes and removes entries for `stowage login` / `stowage logout`,
//! preserving every field we do not understand, atomically and with mode 0600.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use crate::error::{RegistryError, Result};

/// The key Docker uses for Docker Hub in config.json and with credential helpers.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A secret usable against a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or personal access token), sent as Basic auth or
    /// to the token service.
    UsernamePassword { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credential::UsernamePassword { username, .. } => f
                .debug_struct("UsernamePassword")
                .field("username", username)
                .finish_non_exhaustive(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(..)"),
        }
    }
}

/// Where the client gets credentials for a registry host.
pub trait CredentialProvider: Send + Sync {
    /// Credentials for `registry` (as written by the user: `docker.io`, `host:port`), if any.
    fn credentials_for(&self, registry: &str) -> Result<Option<Credential>>;
}

/// No credentials at all: every request is anonymous.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl CredentialProvider for Anonymous {
    fn credentials_for(&self, _registry: &str) -> Result<Option<Credential>> {
        Ok(None)
    }
}

/// A fixed map from registry host to credential (tests, `--creds` flags).
#[derive(Debug, Clone, Default)]
pub struct StaticCredentials(pub BTreeMap<String, Credential>);

impl CredentialProvider for StaticCredentials {
    fn credentials_for(&self, registry: &str) -> Result<Option<Credential>> {
        Ok(self.0.get(&normalize_registry(registry)).cloned())
    }
}

/// Docker's `config.json` plus its credential helpers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    /// PATH used to find `docker-credential-*` programs (None: the process PATH).
    helper_search_path: Option<OsString>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    /// None when neither variable is set.
    pub fn from_env() -> Option<Self> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
        };
        Some(Self::at(dir.join("config.json")))
    }

    /// A config file at an explicit path (it need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        DockerConfig {
            path: path.into(),
            helper_search_path: None,
        }
    }

    /// Look credential helpers up in this PATH instead of the process one
    /// (lets tests and embedders avoid mutating the process environment).
    pub fn with_helper_search_path(mut self, path: impl Into<OsString>) -> Self {
        self.helper_search_path = Some(path.into());
        self
    }

    /// The config file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn config_error(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Config {
            path: self.path.display().to_string(),
            detail: detail.into(),
        }
    }

    /// Reads the file as a JSON object; a missing file is an empty object.
    fn read_object(&self) -> Result<Map<String, Value>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(e) => return Err(self.config_error(format!("cannot read: {e}"))),
        };
        if text.trim().is_empty() {
            return Ok(Map::new());
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(self.config_error("not a JSON object")),
            Err(e) => Err(self.config_error(format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ))),
        }
    }

    /// Writes the object atomically (temp file in the same directory, mode 0600, rename).
    fn write_object(&self, object: &Map<String, Value>) -> Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_private_dir(&dir)
            .map_err(|e| self.config_error(format!("cannot create directory: {e}")))?;
        let mut bytes = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        serde::Serialize::serialize(object, &mut serializer)
            .map_err(|e| self.config_error(format!("cannot serialize: {e}")))?;
        bytes.push(b'\n');
        let mut temp = tempfile::Builder::new()
            .prefix(".config.json.")
            .tempfile_in(&dir)
            .map_err(|e| self.config_error(format!("cannot create temp file: {e}")))?;
        set_private_mode(temp.as_file())
            .and_then(|()| temp.write_all(&bytes))
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| self.config_error(format!("cannot write: {e}")))?;
        temp.persist(&self.path)
            .map_err(|e| self.config_error(format!("cannot replace: {}", e.error)))?;
        Ok(())
    }

    /// The helper configured for this registry: `credHelpers[host]`, else `credsStore`.
    fn helper_for(&self, object: &Map<String, Value>, registry: &str) -> Option<String> {
        let candidates = config_keys(registry);
        if let Some(Value::Object(helpers)) = object.get("credHelpers") {
            for key in &candidates {
                if let Some(Value::String(name)) = helpers.get(key)
                    && !name.is_empty()
                {
                    return Some(name.clone());
                }
            }
        }
        match object.get("credsStore") {
            Some(Value::String(name)) if !name.is_empty() => Some(name.clone()),
            _ => None,
        }
    }

    fn run_helper(&self, helper: &str, action: &str, input: &[u8]) -> Result<(bool, Vec<u8>)> {
        let program = format!("docker-credential-{helper}");
        let helper_error = |detail: String| RegistryError::CredentialHelper {
            helper: helper.to_owned(),
            action: action.to_owned(),
            detail,
        };
        let mut command = Command::new(&program);
        command
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(search_path) = &self.helper_search_path {
            // On Unix, Command resolves the program with the child's PATH when it is set.
            command.env("PATH", search_path);
        }
        let mut child = command
            .spawn()
            .map_err(|e| helper_error(format!("cannot run {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading stdin gives EPIPE: its exit status tells.
            let _ = stdin.write_all(input);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| helper_error(format!("waiting for {program}: {e}")))?;
        let mut out = output.stdout;
        if !output.status.success() {
            out.extend_from_slice(&output.stderr);
        }
        Ok((output.status.success(), out))
    }

    fn helper_get(&self, helper: &str, registry: &str) -> Result<Option<Credential>> {
        let server = helper_server_url(registry);
        let (ok, out) = self.run_helper(helper, "get", server.as_bytes())?;
        let text = String::from_utf8_lossy(&out);
        if !ok {
            if text.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(RegistryError::CredentialHelper {
                helper: helper.to_owned(),
                action: "get".into(),
                detail: text.trim().to_owned(),
            });
        }
        #[derive(serde::Deserialize)]
        struct HelperAnswer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: HelperAnswer =
            serde_json::from_slice(&out).map_err(|e| RegistryError::CredentialHelper {
                helper: helper.to_owned(),
                action: "get".into(),
                detail: format!("invalid JSON answer: {e}"),
            })?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        if answer.username == "<token>" {
            return Ok(Some(Credential::IdentityToken(answer.secret)));
        }
        Ok(Some(Credential::UsernamePassword {
            username: answer.username,
            password: answer.secret,
        }))
    }

    /// Stores credentials for `registry` (after the caller verified them): through
    /// the configured helper when there is one, else as base64 `auth` in `auths`.
    pub fn store(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let mut object = self.read_object()?;
        let key = primary_config_key(registry);
        let helper = self.helper_for(&object, registry);
        let auths = object
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let Value::Object(auths) = auths else {
            return Err(self.config_error("`auths` is not an object"));
        };
        // Drop other spellings of the same registry so lookups find the new entry.
        for candidate in config_keys(registry) {
            if candidate != key {
                auths.remove(&candidate);
            }
        }
        let entry = auths
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(entry) = entry {
            for field in [
                "auth",
                "username",
                "password",
                "identitytoken",
                "registrytoken",
            ] {
                entry.remove(field);
            }
            if let Some(helper) = &helper {
                let input = serde_json::json!({
                    "ServerURL": helper_server_url(registry),
                    "Username": username,
                    "Secret": password,
                });
                let (ok, out) = self.run_helper(helper, "store", input.to_string().as_bytes())?;
                if !ok {
                    return Err(RegistryError::CredentialHelper {
                        helper: helper.clone(),
                        action: "store".into(),
                        detail: String::from_utf8_lossy(&out).trim().to_owned(),
                    });
                }
            } else {
                let encoded = BASE64.encode(format!("{username}:{password}"));
                entry.insert("auth".into(), Value::String(encoded));
            }
        }
        self.write_object(&object)
    }

    /// Removes the credentials for `registry` (helper `erase` and the `auths`
    /// entry). Returns whether the file had an entry for it.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let mut object = self.read_object()?;
        if let Some(helper) = self.helper_for(&object, registry) {
            let (ok, out) =
                self.run_helper(&helper, "erase", helper_server_url(registry).as_bytes())?;
            let text = String::from_utf8_lossy(&out);
            if !ok && !text.to_ascii_lowercase().contains("not found") {
                return Err(RegistryError::CredentialHelper {
                    helper,
                    action: "erase".into(),
                    detail: text.trim().to_owned(),
                });
            }
        }
        let mut removed = false;
        if let Some(Value::Object(auths)) = object.get_mut("auths") {
            for key in config_keys(registry) {
                removed |= auths.remove(&key).is_some();
            }
        }
        if removed {
            self.write_object(&object)?;
        }
        Ok(removed)
    }
}

impl CredentialProvider for DockerConfig {
    fn credentials_for(&self, registry: &str) -> Result<Option<Credential>> {
        let object = self.read_object()?;
        if let Some(helper) = self.helper_for(&object, registry)
            && let Some(credential) = self.helper_get(&helper, registry)?
        {
            return Ok(Some(credential));
        }
        let Some(Value::Object(auths)) = object.get("auths") else {
            return Ok(None);
        };
        let wanted = normalize_registry(registry);
        // Exact keys first, then any key whose host part matches.
        let exact = config_keys(registry)
            .into_iter()
            .find_map(|key| auths.get(&key).cloned());
        let entry = exact.or_else(|| {
            auths
                .iter()
                .find(|(key, _)| normalize_registry(&host_of_key(key)) == wanted)
                .map(|(_, value)| value.clone())
        });
        match entry {
            Some(entry) => self.parse_auth_entry(&entry),
            None => Ok(None),
        }
    }
}

impl DockerConfig {
    fn parse_auth_entry(&self, entry: &Value) -> Result<Option<Credential>> {
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if let Some(token) = field("identitytoken") {
            return Ok(Some(Credential::IdentityToken(token)));
        }
        if let Some(auth) = field("auth") {
            let decoded = BASE64
                .decode(auth.trim())
                .map_err(|e| self.config_error(format!("invalid base64 in `auth`: {e}")))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| self.config_error("`auth` is not UTF-8"))?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(self.config_error("`auth` is not `username:password`"));
            };
            return Ok(Some(Credential::UsernamePassword {
                username: username.to_owned(),
                password: password.to_owned(),
            }));
        }
        if let (Some(username), Some(password)) = (field("username"), field("password")) {
            return Ok(Some(Credential::UsernamePassword { username, password }));
        }
        Ok(None)
    }
}

/// Whether a registry name designates Docker Hub.
pub fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// `docker.io` for all Docker Hub spellings, the name itself otherwise.
fn normalize_registry(registry: &str) -> String {
    if is_docker_hub(registry) {
        "docker.io".to_owned()
    } else {
        registry.to_owned()
    }
}

/// The host part of a config.json `auths` key (`https://host/v1/` → `host`).
fn host_of_key(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_owned()
}

/// The key `login` writes for a registry.
fn primary_config_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// The server URL handed to credential helpers.
fn helper_server_url(registry: &str) -> String {
    primary_config_key(registry)
}

/// Every spelling under which config.json may hold a registry.
fn config_keys(registry: &str) -> Vec<String> {
    if is_docker_hub(registry) {
        [
            DOCKER_HUB_CONFIG_KEY,
            "index.docker.io",
            "docker.io",
            "https://index.docker.io",
            "registry-1.docker.io",
            "https://registry-1.docker.io",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    } else {
        vec![
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
            format!("https://{registry}/v1/"),
            format!("https://{registry}/v2/"),
        ]
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn set_private_mode(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_pass(username: &str, password: &str) -> Credential {
        Credential::UsernamePassword {
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn reads_auth_username_password_and_identity_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let config = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": BASE64.encode("hubuser:hub:pass")},
                "https://ghcr.io": {"username": "gh", "password": "tok"},
                "example.com:5000": {"identitytoken": "refresh"},
                "empty.example": {}
            },
            "HttpHeaders": {"X": "y"}
        });
        std::fs::write(&path, config.to_string()).expect("write");
        let docker = DockerConfig::at(&path);
        assert_eq!(
            docker.credentials_for("docker.io").expect("ok"),
            Some(user_pass("hubuser", "hub:pass"))
        );
        assert_eq!(
            docker.credentials_for("ghcr.io").expect("ok"),
            Some(user_pass("gh", "tok"))
        );
        assert_eq!(
            docker.credentials_for("example.com:5000").expect("ok"),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(docker.credentials_for("empty.example").expect("ok"), None);
        assert_eq!(docker.credentials_for("other").expect("ok"), None);
    }

    #[test]
    fn missing_file_means_no_credentials_and_bad_json_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = DockerConfig::at(dir.path().join("none.json"));
        assert_eq!(docker.credentials_for("docker.io").expect("ok"), None);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ nope").expect("write");
        let err = DockerConfig::at(&bad)
            .credentials_for("x")
            .expect_err("invalid JSON");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn store_and_erase_preserve_unknown_fields_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("config.json");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &path,
            r#"{"auths":{"other":{"auth":"eDp5"}},"psFormat":"table","HttpHeaders":{"A":"b"}}"#,
        )
        .expect("write");
        let docker = DockerConfig::at(&path);
        docker.store("docker.io", "me", "secret").expect("store");
        docker.store("127.0.0.1:5000", "u", "p").expect("store");
        let value: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(value["psFormat"], "table");
        assert_eq!(value["HttpHeaders"]["A"], "b");
        assert_eq!(value["auths"]["other"]["auth"], "eDp5");
        assert_eq!(
            value["auths"][DOCKER_HUB_CONFIG_KEY]["auth"],
            BASE64.encode("me:secret")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            docker.credentials_for("docker.io").expect("ok"),
            Some(user_pass("me", "secret"))
        );
        assert!(docker.erase("docker.io").expect("erase"));
        assert!(!docker.erase("docker.io").expect("erase again"));
        assert_eq!(docker.credentials_for("docker.io").expect("ok"), None);
        assert_eq!(
            docker.credentials_for("127.0.0.1:5000").expect("ok"),
            Some(user_pass("u", "p"))
        );
    }

    /// Writes a `docker-credential-test` shell helper that keeps its store in a file.
    fn write_helper(dir: &Path) -> PathBuf {
        let store = dir.join("store.txt");
        let script = format!(
            r#"#!/bin/sh
set -e
store="{store}"
read -r line || true
case "$1" in
  get)
    if [ "$line" = "https://index.docker.io/v1/" ]; then
      echo '{{"ServerURL":"https://index.docker.io/v1/","Username":"helperuser","Secret":"helperpass"}}'
    elif [ "$line" = "tokenhost" ]; then
      echo '{{"ServerURL":"tokenhost","Username":"<token>","Secret":"idtok"}}'
    elif [ -f "$store" ] && grep -q "$line" "$store"; then
      echo '{{"ServerURL":"x","Username":"stored","Secret":"fromstore"}}'
    else
      echo "credentials not found in native keychain"; exit 1
    fi ;;
  store) echo "$line" > "$store" ;;
  erase) rm -f "$store" ;;
  *) exit 2 ;;
esac
"#,
            store = store.display()
        );
        let helper = dir.join("docker-credential-test");
        std::fs::write(&helper, script).expect("write helper");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        store
    }

    #[test]
    fn credential_helpers_get_store_erase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_file = write_helper(dir.path());
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credsStore":"test","credHelpers":{"fallback.example":""},"auths":{"plain.example":{"auth":"YTpi"}}}"#,
        )
        .expect("write");
        let search_path = format!("{}:/usr/bin:/bin", dir.path().display());
        let docker = DockerConfig::at(&path).with_helper_search_path(search_path);
        assert_eq!(
            docker.credentials_for("docker.io").expect("get"),
            Some(user_pass("helperuser", "helperpass"))
        );
        assert_eq!(
            docker.credentials_for("tokenhost").expect("get"),
            Some(Credential::IdentityToken("idtok".into()))
        );
        // Helper says "not found": fall back to the auths entry.
        assert_eq!(
            docker.credentials_for("plain.example").expect("get"),
            Some(user_pass("a", "b"))
        );
        assert_eq!(
            docker.credentials_for("nothing.example").expect("get"),
            None
        );
        docker
            .store("myreg.example", "u", "p")
            .expect("store via helper");
        let stored = std::fs::read_to_string(&store_file).expect("helper stored");
        assert!(stored.contains("\"Secret\":\"p\""), "{stored}");
        let config = std::fs::read_to_string(&path).expect("read");
        assert!(
            !config.contains("\"auth\": \"dTpw\""),
            "secret must not be in the file: {config}"
        );
        assert_eq!(
            docker.credentials_for("myreg.example").expect("get"),
            Some(user_pass("stored", "fromstore"))
        );
        docker.erase("myreg.example").expect("erase");
        assert!(!store_file.exists());
        assert_eq!(docker.credentials_for("myreg.example").expect("get"), None);
    }

    #[test]
    fn broken_or_missing_helper_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"r.example":"absent"}}"#).expect("write");
        let docker = DockerConfig::at(&path).with_helper_search_path(dir.path());
        let err = docker
            .credentials_for("r.example")
            .expect_err("missing helper");
        assert!(
            matches!(err, RegistryError::CredentialHelper { ref helper, .. } if helper == "absent"),
            "{err}"
        );
    }

    #[test]
    fn static_credentials_normalize_docker_hub() {
        let mut map = BTreeMap::new();
        map.insert("docker.io".to_owned(), user_pass("a", "b"));
        let provider = StaticCredentials(map);
        assert!(
            provider
                .credentials_for("index.docker.io")
                .expect("ok")
                .is_some()
        );
        assert!(
            Anonymous
                .credentials_for("docker.io")
                .expect("ok")
                .is_none()
        );
    }
}
