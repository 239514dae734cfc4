//! Registry authentication: parsing `WWW-Authenticate` challenges (Basic and
//! Bearer), the scopes a request needs (`repository:<name>:pull,push`, plus
//! `repository:<other>:pull` for cross-repository mounts), the bearer token
//! exchange (`token` / `access_token`, refresh-token grant for identity tokens),
//! and the per-host, per-scope token cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::credentials::Credential;

/// How a registry asked us to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first Basic or Bearer challenge of a `WWW-Authenticate` value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(index) => header.split_at(index),
        None => (header, ""),
    };
    let params = parse_auth_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let realm = params.get("realm")?.clone();
        if realm.is_empty() {
            return None;
        }
        return Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        });
    }
    None
}

/// Parses `k=v, k="quoted \" value"` into a map (keys lower-cased).
fn parse_auth_params(input: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => break,
                    other => value.push(other),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        params.insert(key.to_ascii_lowercase(), value);
    }
    params
}

/// The set of token scopes a request needs, kept sorted so it is a stable cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// No scope (registry ping, login check).
    pub fn none() -> Self {
        Scopes(Vec::new())
    }

    /// `repository:<name>:pull`.
    pub fn pull(repository: &str) -> Self {
        Scopes(vec![format!("repository:{repository}:pull")])
    }

    /// `repository:<name>:pull,push`.
    pub fn push(repository: &str) -> Self {
        Scopes(vec![format!("repository:{repository}:pull,push")])
    }

    /// Push to `repository` and pull from `source` (cross-repository mount).
    pub fn push_with_mount(repository: &str, source: &str) -> Self {
        let mut scopes = vec![
            format!("repository:{repository}:pull,push"),
            format!("repository:{source}:pull"),
        ];
        scopes.sort();
        scopes.dedup();
        Scopes(scopes)
    }

    /// Adds a scope the registry named in its challenge, if new.
    pub fn with(mut self, extra: Option<&str>) -> Self {
        if let Some(extra) = extra {
            for scope in extra.split_whitespace() {
                if !self.0.iter().any(|s| s == scope) {
                    self.0.push(scope.to_owned());
                }
            }
            self.0.sort();
        }
        self
    }

    /// The individual scope strings.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub token: String,
    pub valid_until: Instant,
}

/// Per-registry state shared by all requests of a client.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<(String, Scopes), CachedToken>>,
}

impl AuthCache {
    pub fn challenge(&self, registry: &str) -> Option<Challenge> {
        lock(&self.challenges).get(registry).cloned()
    }

    pub fn set_challenge(&self, registry: &str, challenge: Challenge) {
        lock(&self.challenges).insert(registry.to_owned(), challenge);
    }

    pub fn token(&self, registry: &str, scopes: &Scopes) -> Option<String> {
        let tokens = lock(&self.tokens);
        let cached = tokens.get(&(registry.to_owned(), scopes.clone()))?;
        (cached.valid_until > Instant::now()).then(|| cached.token.clone())
    }

    pub fn set_token(&self, registry: &str, scopes: &Scopes, token: CachedToken) {
        lock(&self.tokens).insert((registry.to_owned(), scopes.clone()), token);
    }

    pub fn forget_token(&self, registry: &str, scopes: &Scopes) {
        lock(&self.tokens).remove(&(registry.to_owned(), scopes.clone()));
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `Basic <base64(user:pass)>`.
pub fn basic_header(username: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{username}:{password}")))
}

/// The body of a token service answer.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenAnswer {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenAnswer {
    /// The token and its lifetime (default 60 s per the token spec, minus a safety margin).
    pub fn into_cached(self) -> Option<CachedToken> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = self.expires_in.unwrap_or(60).clamp(10, 24 * 3600);
        Some(CachedToken {
            token,
            valid_until: Instant::now() + Duration::from_secs(lifetime.saturating_sub(5)),
        })
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters kept).
pub fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The URL (GET) of a token request.
pub(crate) fn token_url(realm: &str, service: Option<&str>, scopes: &Scopes) -> String {
    let mut url = realm.to_owned();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(separator);
        url.push_str("service=");
        url.push_str(&query_encode(service));
        separator = '&';
    }
    for scope in scopes.as_slice() {
        url.push(separator);
        url.push_str("scope=");
        url.push_str(&query_encode(scope));
        separator = '&';
    }
    url
}

/// The form body (POST) of an OAuth2 refresh-token exchange.
pub(crate) fn refresh_token_form(
    refresh_token: &str,
    service: Option<&str>,
    scopes: &Scopes,
) -> String {
    let mut form = format!(
        "grant_type=refresh_token&client_id=stowage&refresh_token={}",
        query_encode(refresh_token)
    );
    if let Some(service) = service {
        form.push_str("&service=");
        form.push_str(&query_encode(service));
    }
    if !scopes.as_slice().is_empty() {
        form.push_str("&scope=");
        form.push_str(&query_encode(&scopes.as_slice().join(" ")));
    }
    form
}

/// Whether a credential can be sent as Basic auth.
pub(crate) fn basic_for(credential: Option<&Credential>) -> Option<String> {
    match credential {
        Some(Credential::UsernamePassword { username, password }) => {
            Some(basic_header(username, password))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/debian:pull".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_odd_spacing_and_escapes() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(r#"Bearer  realm = "https://a/t?x=1" , service=reg, scope="a \"b\"""#),
            Some(Challenge::Bearer {
                realm: "https://a/t?x=1".into(),
                service: Some("reg".into()),
                scope: Some("a \"b\"".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_some());
    }

    #[test]
    fn scopes_and_token_urls() {
        let scopes = Scopes::push_with_mount("team/app", "library/base");
        assert_eq!(
            scopes.as_slice(),
            [
                "repository:library/base:pull",
                "repository:team/app:pull,push"
            ]
        );
        let url = token_url("https://auth.example/token", Some("reg.example"), &scopes);
        assert_eq!(
            url,
            "https://auth.example/token?service=reg.example&scope=repository%3Alibrary%2Fbase%3Apull&scope=repository%3Ateam%2Fapp%3Apull%2Cpush"
        );
        let merged = Scopes::pull("a").with(Some("repository:a:pull registry:catalog:*"));
        assert_eq!(merged.as_slice().len(), 2);
        assert!(
            refresh_token_form("r t", None, &Scopes::pull("a")).contains("refresh_token=r%20t")
        );
    }

    #[test]
    fn token_answers() {
        let a: TokenAnswer =
            serde_json::from_str(r#"{"token":"t1","expires_in":300}"#).expect("json");
        assert_eq!(a.into_cached().map(|t| t.token), Some("t1".to_owned()));
        let b: TokenAnswer = serde_json::from_str(r#"{"access_token":"t2"}"#).expect("json");
        assert_eq!(b.into_cached().map(|t| t.token), Some("t2".to_owned()));
        let c: TokenAnswer = serde_json::from_str(r#"{"token":""}"#).expect("json");
        assert!(c.into_cached().is_none());
    }

    #[test]
    fn cache_expires() {
        let cache = AuthCache::default();
        let scopes = Scopes::pull("x");
        cache.set_token(
            "r",
            &scopes,
            CachedToken {
                token: "old".into(),
                valid_until: Instant::now(),
            },
        );
        assert_eq!(cache.token("r", &scopes), None);
        cache.set_token(
            "r",
            &scopes,
            CachedToken {
                token: "new".into(),
                valid_until: Instant::now() + Duration::from_secs(60),
            },
        );
        assert_eq!(cache.token("r", &scopes).as_deref(), Some("new"));
        cache.forget_token("r", &scopes);
        assert_eq!(cache.token("r", &scopes), None);
    }
}
