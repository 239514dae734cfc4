//! The typed errors of the registry client: each variant names the registry,
//! repository, reference or URL it is about, so the CLI can print it as is.

use stowage_digest::Digest;

/// Everything that can go wrong talking to a registry or handling credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// 401: the registry (or its token service) refused our credentials, or we had none.
    #[error(
        "authentication to registry {registry} failed{}: {detail} (`stowage login {registry}` may help)",
        if *.had_credentials { " with the configured credentials" } else { " (no credentials configured)" }
    )]
    Unauthorized {
        registry: String,
        had_credentials: bool,
        detail: String,
    },
    /// 403: authenticated, but not allowed to do this.
    #[error("access to {url} denied by registry {registry}: {detail}")]
    Forbidden {
        registry: String,
        url: String,
        detail: String,
    },
    /// 404 on a manifest.
    #[error("manifest unknown: {reference}: {detail}")]
    ManifestUnknown { reference: String, detail: String },
    /// 404 on a blob.
    #[error("blob unknown: {repository}@{digest}: {detail}")]
    BlobUnknown {
        repository: String,
        digest: Digest,
        detail: String,
    },
    /// 404 on another endpoint (the repository or upload session does not exist).
    #[error("not found: {url}: {detail}")]
    NotFound { url: String, detail: String },
    /// 5xx or 429 after all retries.
    #[error("registry server error at {url}: HTTP {status}: {detail}")]
    Server {
        url: String,
        status: u16,
        detail: String,
    },
    /// Any other status the protocol does not allow at this point.
    #[error("unexpected answer from {url}: HTTP {status}: {detail}")]
    UnexpectedStatus {
        url: String,
        status: u16,
        detail: String,
    },
    /// Could not reach the registry at all (refused, DNS, timeout, reset), after retries.
    #[error("registry unreachable at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// TLS handshake or certificate failure.
    #[error("TLS error talking to {url}: {detail}")]
    Tls { url: String, detail: String },
    /// Content did not hash to the digest it was requested or announced by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// Content was not the announced size.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// The registry sent something malformed (bad header, bad JSON, missing Location...).
    #[error("invalid response from {url}: {detail}")]
    InvalidResponse { url: String, detail: String },
    /// A manifest list / index has no entry for the requested platform.
    #[error("no manifest for platform {platform} in {reference} (available: {})", available.join(", "))]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: Vec<String>,
    },
    /// A manifest media type we cannot handle.
    #[error("unsupported manifest media type {media_type:?} for {reference}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
    /// A reference, repository or option given by the caller is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Problem reading or writing the docker config file.
    #[error("docker config {path}: {detail}")]
    Config { path: String, detail: String },
    /// A `docker-credential-<name>` helper failed.
    #[error("credential helper docker-credential-{helper} {action} failed: {detail}")]
    CredentialHelper {
        helper: String,
        action: String,
        detail: String,
    },
    /// Local I/O (reading the file to upload, writing the blob sink, reading a CA file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The operation was stopped because a sibling transfer failed.
    #[error("transfer cancelled")]
    Cancelled,
}

impl RegistryError {
    /// Wraps a local I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the same request may succeed (connection trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Unreachable { .. } | RegistryError::Server { .. }
        )
    }
}

/// Result alias of this crate.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
