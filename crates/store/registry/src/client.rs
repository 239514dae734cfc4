//! The registry client core: options, per-registry connection state (endpoint,
//! HTTP agent with its TLS roots), request execution with authentication
//! (challenge → Basic or Bearer token, one re-authentication on 401) and
//! bounded exponential-backoff retries on connection errors, 5xx and 429, and
//! the mapping of HTTP statuses to [`RegistryError`].

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_digest::Digest;
use ureq::http;

use crate::auth::{self, AuthCache, Challenge, Scopes, TokenAnswer, lock};
use crate::credentials::{Credential, CredentialProvider, DockerConfig};
use crate::endpoint::{self, DOCKER_CERTS_DIR, Endpoint, SYSTEM_CA_BUNDLE};
use crate::error::{RegistryError, Result};
use crate::progress::Progress;
use crate::transfer::BlobSource;

/// Retry policy for transient failures (connection errors, 5xx, 429).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the first one.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failed_attempts` failures (1-based).
    fn backoff(&self, failed_attempts: u32) -> Duration {
        let factor = 1u32 << failed_attempts.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Whether another attempt may start after `failed_attempts` failures.
    pub(crate) fn may_retry(&self, failed_attempts: u32, started: Instant) -> bool {
        failed_attempts < self.max_attempts
            && started.elapsed() + self.backoff(failed_attempts) < self.max_elapsed
    }

    pub(crate) fn wait(&self, failed_attempts: u32, retry_after: Option<Duration>) {
        let wait = retry_after
            .map(|d| d.min(self.max_backoff))
            .unwrap_or_else(|| self.backoff(failed_attempts));
        std::thread::sleep(wait);
    }
}

/// How the client connects and authenticates.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) reachable over plain HTTP or HTTPS
    /// with an unverified certificate.
    pub insecure_registries: Vec<String>,
    /// Loopback registries (normally plain HTTP) that serve verified HTTPS instead.
    pub tls_loopback_registries: Vec<String>,
    /// Extra PEM CA files trusted for every registry.
    pub extra_ca_files: Vec<PathBuf>,
    /// Docker's `certs.d` root (`<dir>/<host[:port]>/*.crt` CAs, `*.cert`+`*.key`
    /// client certificates). None disables it.
    pub docker_certs_dir: Option<PathBuf>,
    /// System CA bundle; None (or a missing file) falls back to the built-in Mozilla roots.
    pub system_ca_bundle: Option<PathBuf>,
    pub retry: RetryPolicy,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Maximum silence while reading or writing a body before the connection counts as dropped.
    pub io_timeout: Duration,
    /// Upload blobs in PATCH chunks of this size; None uploads each blob in one PUT.
    pub chunk_size: Option<u64>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            tls_loopback_registries: Vec::new(),
            extra_ca_files: Vec::new(),
            docker_certs_dir: Some(PathBuf::from(DOCKER_CERTS_DIR)),
            system_ca_bundle: Some(PathBuf::from(SYSTEM_CA_BUNDLE)),
            retry: RetryPolicy::default(),
            user_agent: concat!("stowage/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(120),
            chunk_size: None,
        }
    }
}

/// Connection state of one registry.
struct HostState {
    endpoint: Endpoint,
    agent: ureq::Agent,
}

/// A blocking OCI distribution client. Cheap to share between threads (`&self`
/// everywhere); tokens, challenges and connections are cached per registry.
pub struct RegistryClient {
    pub(crate) options: ClientOptions,
    credentials: Arc<dyn CredentialProvider>,
    pub(crate) auth: AuthCache,
    hosts: Mutex<HashMap<String, Arc<HostState>>>,
    credential_cache: Mutex<HashMap<String, Option<Credential>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The body of an outgoing request; re-creatable so the request can be re-sent.
pub(crate) enum CallBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    Source {
        source: &'a dyn BlobSource,
        offset: u64,
        len: u64,
        progress: Option<(&'a dyn Progress, &'a Digest)>,
    },
}

/// One logical request.
pub(crate) struct Call<'a> {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: CallBody<'a>,
    pub scopes: Scopes,
    /// Retry transient failures (false for requests that consume upload state).
    pub retry: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: http::Method, url: String, scopes: Scopes) -> Self {
        Call {
            method,
            url,
            headers: Vec::new(),
            body: CallBody::Empty,
            scopes,
            retry: true,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: CallBody<'a>) -> Self {
        self.body = body;
        self
    }

    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
}

/// What a failed request was about, for error messages.
pub(crate) enum Subject<'a> {
    Manifest(String),
    Blob(&'a str, &'a Digest),
    Other,
}

/// Counts bytes read for progress reports.
struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: Option<(&'a dyn Progress, &'a Digest)>,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done = self.done.saturating_add(n as u64);
        if let Some((progress, digest)) = self.progress {
            progress.on_progress(digest, self.done, Some(self.total));
        }
        Ok(n)
    }
}

impl RegistryClient {
    /// A client with the given options and credential source.
    pub fn new(options: ClientOptions, credentials: Arc<dyn CredentialProvider>) -> Self {
        RegistryClient {
            options,
            credentials,
            auth: AuthCache::default(),
            hosts: Mutex::new(HashMap::new()),
            credential_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Default options and credentials from the user's Docker config (anonymous if
    /// neither `$DOCKER_CONFIG` nor `$HOME` is set).
    pub fn from_docker_config() -> Self {
        let credentials: Arc<dyn CredentialProvider> = match DockerConfig::from_env() {
            Some(config) => Arc::new(config),
            None => Arc::new(crate::credentials::Anonymous),
        };
        Self::new(ClientOptions::default(), credentials)
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The base URL (`scheme://authority`) used for a registry, probing insecure
    /// registries (HTTPS first, then HTTP) on first use.
    pub fn base_url(&self, registry: &str) -> Result<String> {
        Ok(self.host(registry)?.endpoint.base_url())
    }

    pub(crate) fn credentials(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(cached) = lock(&self.credential_cache).get(registry) {
            return Ok(cached.clone());
        }
        let found = self.credentials.credentials_for(registry)?;
        lock(&self.credential_cache).insert(registry.to_owned(), found.clone());
        Ok(found)
    }

    fn agent_for(&self, registry: &str, endpoint: &Endpoint) -> Result<ureq::Agent> {
        let tls = endpoint::tls_config(
            registry,
            endpoint.verify_tls,
            self.options.system_ca_bundle.as_deref(),
            &self.options.extra_ca_files,
            self.options.docker_certs_dir.as_deref(),
        )?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(self.options.user_agent.as_str())
            .accept_encoding("identity")
            .max_redirects(10)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .timeout_connect(Some(self.options.connect_timeout))
            .timeout_per_read(Some(self.options.io_timeout))
            .timeout_per_write(Some(self.options.io_timeout))
            .build();
        Ok(ureq::Agent::new_with_config(config))
    }

    fn host(&self, registry: &str) -> Result<Arc<HostState>> {
        if let Some(state) = lock(&self.hosts).get(registry) {
            return Ok(state.clone());
        }
        let candidates = endpoint::candidate_endpoints(
            registry,
            &self.options.insecure_registries,
            &self.options.tls_loopback_registries,
        );
        let mut chosen = None;
        let count = candidates.len();
        for (index, candidate) in candidates.into_iter().enumerate() {
            let agent = self.agent_for(registry, &candidate)?;
            if index + 1 == count {
                chosen = Some(HostState {
                    endpoint: candidate,
                    agent,
                });
                break;
            }
            // Probe: any HTTP answer from /v2/ means this endpoint speaks the protocol.
            let probe = agent.get(format!("{}/v2/", candidate.base_url())).call();
            if probe.is_ok() {
                chosen = Some(HostState {
                    endpoint: candidate,
                    agent,
                });
                break;
            }
        }
        let state = Arc::new(chosen.ok_or_else(|| {
            RegistryError::InvalidArgument(format!("no endpoint for registry {registry}"))
        })?);
        lock(&self.hosts).insert(registry.to_owned(), state.clone());
        Ok(state)
    }

    /// `scheme://authority/v2/<rest>` for a registry.
    pub(crate) fn url(&self, registry: &str, rest: &str) -> Result<String> {
        Ok(format!("{}/v2/{rest}", self.base_url(registry)?))
    }

    /// Turns a `Location` header into an absolute URL.
    pub(crate) fn absolute_location(&self, registry: &str, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Ok(location.to_owned());
        }
        let base = self.base_url(registry)?;
        if location.starts_with('/') {
            Ok(format!("{base}{location}"))
        } else {
            Ok(format!("{base}/{location}"))
        }
    }

    /// The Authorization header for a request, fetching a token if needed.
    fn authorization(
        &self,
        registry: &str,
        scopes: &Scopes,
        extra_scope: Option<&str>,
    ) -> Result<Option<String>> {
        match self.auth.challenge(registry) {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(auth::basic_for(self.credentials(registry)?.as_ref())),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if extra_scope.is_none()
                    && let Some(token) = self.auth.token(registry, scopes)
                {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let wanted = scopes.clone().with(extra_scope);
                let token = self.fetch_token(registry, &realm, service.as_deref(), &wanted)?;
                self.auth.set_token(registry, scopes, token.clone());
                Ok(Some(format!("Bearer {}", token.token)))
            }
        }
    }

    /// Exchanges credentials (or nothing) for a bearer token at `realm`.
    pub(crate) fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
    ) -> Result<auth::CachedToken> {
        let credential = self.credentials(registry)?;
        let host = self.host(registry)?;
        let realm_on_registry = realm.starts_with(&host.endpoint.base_url());
        let agent = if realm_on_registry {
            host.agent.clone()
        } else {
            self.agent_for(
                "",
                &Endpoint {
                    scheme: endpoint::Scheme::Https,
                    authority: String::new(),
                    verify_tls: true,
                },
            )?
        };
        let form;
        let call = match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                form = auth::refresh_token_form(refresh, service, scopes);
                Call::new(http::Method::POST, realm.to_owned(), Scopes::none())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(CallBody::Bytes(form.as_bytes()))
            }
            other => {
                let mut call = Call::new(
                    http::Method::GET,
                    auth::token_url(realm, service, scopes),
                    Scopes::none(),
                );
                if let Some(basic) = auth::basic_for(other.as_ref()) {
                    call = call.header("authorization", basic);
                }
                call
            }
        };
        let response = self.send_retrying(&agent, &call, None)?;
        let status = response.status().as_u16();
        let url = call.url.split('?').next().unwrap_or_default().to_owned();
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_owned(),
                had_credentials: credential.is_some(),
                detail: format!(
                    "token service {url} answered {status}: {}",
                    error_detail(response)
                ),
            });
        }
        if status != 200 {
            return Err(self.status_error(registry, &url, response, &Subject::Other));
        }
        let body = read_limited(response, 1 << 20, &url)?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| RegistryError::InvalidResponse {
                url: url.clone(),
                detail: format!("invalid token JSON: {e}"),
            })?;
        answer
            .into_cached()
            .ok_or_else(|| RegistryError::InvalidResponse {
                url,
                detail: "token answer has neither `token` nor `access_token`".into(),
            })
    }

    /// Sends one request once (no auth handling), mapping transport errors.
    fn send_once(
        &self,
        agent: &ureq::Agent,
        call: &Call<'_>,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>> {
        let mut builder = http::Request::builder()
            .method(call.method.clone())
            .uri(call.url.as_str());
        for (name, value) in &call.headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        let result = match &call.body {
            CallBody::Empty => {
                let request = if matches!(
                    call.method,
                    http::Method::PUT | http::Method::POST | http::Method::PATCH
                ) {
                    builder
                        .header("content-length", "0")
                        .body(ureq::SendBody::none())
                } else {
                    builder.body(ureq::SendBody::none())
                };
                let request = request.map_err(|e| invalid_request(&call.url, e))?;
                agent.run(request)
            }
            CallBody::Bytes(bytes) => {
                let request = builder
                    .header("content-length", bytes.len().to_string())
                    .body(*bytes)
                    .map_err(|e| invalid_request(&call.url, e))?;
                agent.run(request)
            }
            CallBody::Source {
                source,
                offset,
                len,
                progress,
            } => {
                let reader = source
                    .open_at(*offset)
                    .map_err(|e| RegistryError::io(format!("opening {}", source.describe()), e))?;
                let mut reader = ProgressReader {
                    inner: reader.take(*len),
                    done: 0,
                    total: *len,
                    progress: *progress,
                };
                let request = builder
                    .header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| invalid_request(&call.url, e))?;
                agent.run(request)
            }
        };
        result.map_err(|e| transport_error(&call.url, e))
    }

    /// Sends with retries on transient failures (if the call allows them).
    fn send_retrying(
        &self,
        agent: &ureq::Agent,
        call: &Call<'_>,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>> {
        let started = Instant::now();
        let mut failures = 0;
        loop {
            match self.send_once(agent, call, authorization) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if call.retry && (status >= 500 || status == 429) {
                        failures += 1;
                        if self.options.retry.may_retry(failures, started) {
                            let retry_after = retry_after(&response);
                            drop(response);
                            self.options.retry.wait(failures, retry_after);
                            continue;
                        }
                    }
                    return Ok(response);
                }
                Err(error) => {
                    failures += 1;
                    if call.retry
                        && error.is_transient()
                        && self.options.retry.may_retry(failures, started)
                    {
                        self.options.retry.wait(failures, None);
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Sends a call to a registry with authentication and retries. Returns the
    /// final response whatever its status (callers map statuses to errors).
    pub(crate) fn execute(
        &self,
        registry: &str,
        call: &Call<'_>,
    ) -> Result<http::Response<ureq::Body>> {
        let host = self.host(registry)?;
        let mut extra_scope: Option<String> = None;
        let mut reauthenticated = false;
        loop {
            let authorization =
                self.authorization(registry, &call.scopes, extra_scope.as_deref())?;
            let response = self.send_retrying(&host.agent, call, authorization.as_deref())?;
            if response.status().as_u16() != 401 || reauthenticated {
                return Ok(response);
            }
            reauthenticated = true;
            let challenge = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(auth::parse_challenge);
            let Some(challenge) = challenge else {
                return Ok(response);
            };
            let retry_makes_sense = match &challenge {
                Challenge::Basic => {
                    authorization.is_none() && self.credentials(registry)?.is_some()
                }
                Challenge::Bearer { scope, .. } => {
                    extra_scope = scope.clone();
                    true
                }
            };
            self.auth.forget_token(registry, &call.scopes);
            self.auth.set_challenge(registry, challenge);
            if !retry_makes_sense {
                return Ok(response);
            }
        }
    }

    /// Maps a non-success response to a typed error.
    pub(crate) fn status_error(
        &self,
        registry: &str,
        url: &str,
        response: http::Response<ureq::Body>,
        subject: &Subject<'_>,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let detail = error_detail(response);
        match status {
            401 => RegistryError::Unauthorized {
                registry: registry.to_owned(),
                had_credentials: matches!(self.credentials(registry), Ok(Some(_))),
                detail,
            },
            403 => RegistryError::Forbidden {
                registry: registry.to_owned(),
                url: url.to_owned(),
                detail,
            },
            404 => match subject {
                Subject::Manifest(reference) => RegistryError::ManifestUnknown {
                    reference: reference.clone(),
                    detail,
                },
                Subject::Blob(repository, digest) => RegistryError::BlobUnknown {
                    repository: (*repository).to_owned(),
                    digest: **digest,
                    detail,
                },
                Subject::Other => RegistryError::NotFound {
                    url: url.to_owned(),
                    detail,
                },
            },
            429 | 500..=599 => RegistryError::Server {
                url: url.to_owned(),
                status,
                detail,
            },
            _ => RegistryError::UnexpectedStatus {
                url: url.to_owned(),
                status,
                detail,
            },
        }
    }

    /// Checks that a registry answers and accepts the given credential (for
    /// `stowage login`): `GET /v2/`, then Basic auth or a token exchange.
    pub fn verify_credentials(&self, registry: &str, credential: &Credential) -> Result<()> {
        let verifier = RegistryClient::new(
            self.options.clone(),
            Arc::new(crate::credentials::StaticCredentials(
                [(registry.to_owned(), credential.clone())]
                    .into_iter()
                    .collect(),
            )),
        );
        let url = verifier.url(registry, "")?;
        let host = verifier.host(registry)?;
        let ping = Call::new(http::Method::GET, url.clone(), Scopes::none());
        let response = verifier.send_retrying(&host.agent, &ping, None)?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        if status != 401 {
            return Err(verifier.status_error(registry, &url, response, &Subject::Other));
        }
        let challenge = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(auth::parse_challenge);
        match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                verifier.fetch_token(registry, &realm, service.as_deref(), &Scopes::none())?;
                Ok(())
            }
            Some(Challenge::Basic) => {
                let basic = auth::basic_for(Some(credential));
                let response = verifier.send_retrying(&host.agent, &ping, basic.as_deref())?;
                if response.status().as_u16() == 200 {
                    Ok(())
                } else {
                    Err(verifier.status_error(registry, &url, response, &Subject::Other))
                }
            }
            None => Err(RegistryError::InvalidResponse {
                url,
                detail: "401 without a usable WWW-Authenticate challenge".into(),
            }),
        }
    }
}

fn invalid_request(url: &str, error: http::Error) -> RegistryError {
    RegistryError::InvalidArgument(format!("cannot build request for {url}: {error}"))
}

/// Maps a ureq transport error.
pub(crate) fn transport_error(url: &str, error: ureq::Error) -> RegistryError {
    let url = url.split('?').next().unwrap_or(url).to_owned();
    match error {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => RegistryError::Tls {
            url,
            detail: error.to_string(),
        },
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
            RegistryError::InvalidArgument(format!("bad request URL {url}: {error}"))
        }
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
            // rustls reports certificate problems as InvalidData io errors.
            RegistryError::Tls {
                url,
                detail: error.to_string(),
            }
        }
        ureq::Error::Protocol(_) | ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
            RegistryError::InvalidResponse {
                url,
                detail: error.to_string(),
            }
        }
        other => RegistryError::Unreachable {
            url,
            detail: other.to_string(),
        },
    }
}

/// `Retry-After` in seconds, if small and present.
fn retry_after(response: &http::Response<ureq::Body>) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads a bounded body into memory.
pub(crate) fn read_limited(
    response: http::Response<ureq::Body>,
    limit: u64,
    url: &str,
) -> Result<Vec<u8>> {
    let mut reader = response
        .into_body()
        .into_reader()
        .take(limit.saturating_add(1));
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::Unreachable {
            url: url.to_owned(),
            detail: format!("reading response body: {e}"),
        })?;
    if bytes.len() as u64 > limit {
        return Err(RegistryError::InvalidResponse {
            url: url.to_owned(),
            detail: format!("response body larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

/// A short description of an error response: the OCI error codes and messages
/// if the body has them, else the start of the body.
pub(crate) fn error_detail(response: http::Response<ureq::Body>) -> String {
    let status = response.status();
    let mut body = Vec::new();
    let _ = response
        .into_body()
        .into_reader()
        .take(64 * 1024)
        .read_to_end(&mut body);
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(&body)
        && !parsed.errors.is_empty()
    {
        return parsed
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no details").to_owned()
    } else {
        text.chars().take(300).collect()
    }
}

/// A response header as a string.
pub(crate) fn header<'r>(response: &'r http::Response<ureq::Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_and_bounded() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_elapsed: Duration::from_secs(60),
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(400));
        assert_eq!(policy.backoff(4), Duration::from_millis(500));
        assert_eq!(policy.backoff(400), Duration::from_millis(500));
        let started = Instant::now();
        assert!(policy.may_retry(9, started));
        assert!(!policy.may_retry(10, started));
        let short = RetryPolicy {
            max_elapsed: Duration::from_millis(50),
            ..policy
        };
        assert!(!short.may_retry(1, started));
    }
}
