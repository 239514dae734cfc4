//! Failure modes and the bearer-token flow, against a scripted fake HTTP server
//! on 127.0.0.1: wrong content, dropped connections with `Range` resume, lying
//! sizes, 5xx retries, a closed port, and token scopes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::manifest::OCI_MANIFEST;
use crate::{
    Anonymous, ClientOptions, Credential, CredentialProvider, NoProgress, PushOutcome,
    RegistryClient, RegistryError, Repository, RetryPolicy, StaticCredentials, TagOrDigest,
};
use base64::Engine;
use stowage_digest::Digest;
use stowage_testkit::{FakeServer, SeenRequest, http_response};

fn client_with(credentials: Arc<dyn CredentialProvider>) -> RegistryClient {
    RegistryClient::new(
        ClientOptions {
            docker_certs_dir: None,
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                max_elapsed: Duration::from_secs(10),
            },
            ..ClientOptions::default()
        },
        credentials,
    )
}

fn client() -> RegistryClient {
    client_with(Arc::new(Anonymous))
}

fn repo(server: &FakeServer) -> Repository {
    Repository::new(server.host(), "lib/x").expect("repo")
}

fn blob_content() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect()
}

fn fetch(
    client: &RegistryClient,
    server: &FakeServer,
    content: &[u8],
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    client
        .fetch_blob(
            &repo(server),
            &Digest::of(content),
            Some(content.len() as u64),
            &mut out,
            &NoProgress,
        )
        .map(|_| out)
}

#[test]
fn wrong_blob_content_is_a_digest_mismatch() {
    let server = FakeServer::start(|_| http_response("200 OK", &[], b"not the blob"));
    let expected = b"the blob".to_vec();
    let mut out = Vec::new();
    let err = client()
        .fetch_blob(
            &repo(&server),
            &Digest::of(&expected),
            None,
            &mut out,
            &NoProgress,
        )
        .expect_err("wrong content");
    assert!(
        matches!(err, RegistryError::DigestMismatch { expected: e, .. } if e == Digest::of(&expected)),
        "{err:?}"
    );
}

#[test]
fn dropped_connection_resumes_with_range() {
    let content = blob_content();
    let half = content.len() / 2;
    let served = content.clone();
    let server = FakeServer::start(move |request: &SeenRequest| {
        if request.index == 0 {
            // Announce everything, send half, hang up.
            let mut response = http_response(
                "200 OK",
                &[("Content-Length", served.len().to_string())],
                &[],
            );
            response.extend_from_slice(&served[..half]);
            return response;
        }
        let expected = format!("bytes={half}-");
        assert_eq!(request.header("range"), Some(expected.as_str()));
        http_response(
            "206 Partial Content",
            &[(
                "Content-Range",
                format!("bytes {half}-{}/{}", served.len() - 1, served.len()),
            )],
            &served[half..],
        )
    });
    let progress_peak = AtomicU64::new(0);
    let progress = |_: &Digest, done: u64, _: Option<u64>| {
        progress_peak.fetch_max(done, Ordering::SeqCst);
    };
    let mut out = Vec::new();
    client()
        .fetch_blob(
            &repo(&server),
            &Digest::of(&content),
            Some(content.len() as u64),
            &mut out,
            &progress,
        )
        .expect("resumed");
    assert_eq!(out, content);
    assert_eq!(progress_peak.load(Ordering::SeqCst), content.len() as u64);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
}

#[test]
fn dropped_connection_restarts_when_range_is_ignored() {
    let content = blob_content();
    let served = content.clone();
    let server = FakeServer::start(move |request: &SeenRequest| {
        if request.index == 0 {
            let mut response = http_response(
                "200 OK",
                &[("Content-Length", served.len().to_string())],
                &[],
            );
            response.extend_from_slice(&served[..1000]);
            return response;
        }
        http_response("200 OK", &[], &served)
    });
    assert_eq!(
        fetch(&client(), &server, &content).expect("restarted"),
        content
    );
}

#[test]
fn lying_content_length_is_a_size_mismatch() {
    let content = blob_content();
    let served = content.clone();
    let server = FakeServer::start(move |_: &SeenRequest| {
        let mut body = served.clone();
        body.extend_from_slice(b"extra");
        http_response("200 OK", &[], &body)
    });
    let err = fetch(&client(), &server, &content).expect_err("size lie");
    assert!(
        matches!(err, RegistryError::SizeMismatch { expected, actual, .. }
            if expected == content.len() as u64 && actual == content.len() as u64 + 5),
        "{err:?}"
    );
}

#[test]
fn oversized_body_without_length_is_cut_off() {
    let content = blob_content();
    let server = FakeServer::start(move |_: &SeenRequest| {
        // No Content-Length: body delimited by connection close, and too long.
        let mut response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        response.extend(std::iter::repeat_n(7u8, 300_000));
        response
    });
    let err = fetch(&client(), &server, &content).expect_err("too long");
    assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err:?}");
}

#[test]
fn server_error_then_success_is_retried() {
    let content = b"eventually".to_vec();
    let served = content.clone();
    let server = FakeServer::start(move |request: &SeenRequest| {
        if request.index == 0 {
            http_response("500 Internal Server Error", &[], b"oops")
        } else {
            http_response("200 OK", &[], &served)
        }
    });
    assert_eq!(
        fetch(&client(), &server, &content).expect("retried"),
        content
    );
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn persistent_503_gives_up_with_server_error() {
    let server = FakeServer::start(|_| {
        http_response(
            "503 Service Unavailable",
            &[],
            br#"{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}"#,
        )
    });
    let err = client()
        .get_manifest(&repo(&server), &TagOrDigest::Tag("latest".into()))
        .expect_err("503");
    match &err {
        RegistryError::Server {
            status,
            detail,
            url,
        } => {
            assert_eq!(*status, 503);
            assert!(detail.contains("UNAVAILABLE: maintenance"), "{detail}");
            assert!(url.contains("/v2/lib/x/manifests/latest"), "{url}");
        }
        other => panic!("expected Server error, got {other:?}"),
    }
    assert_eq!(server.seen().len(), 3, "bounded by max_attempts");
}

#[test]
fn closed_port_is_registry_unreachable() {
    let port = stowage_testkit::free_port();
    let target = Repository::new(format!("127.0.0.1:{port}"), "lib/x").expect("repo");
    let err = client()
        .get_manifest(&target, &TagOrDigest::Tag("latest".into()))
        .expect_err("nothing listens");
    match &err {
        RegistryError::Unreachable { url, .. } => {
            assert!(url.contains(&format!("127.0.0.1:{port}")), "{url}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn manifest_digest_checks() {
    let manifest = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#.to_vec();
    let served = manifest.clone();
    let server = FakeServer::start(move |request: &SeenRequest| {
        let header_digest = if request.path.ends_with("/lies") {
            Digest::of(b"other").to_string()
        } else {
            Digest::of(&served).to_string()
        };
        http_response(
            "200 OK",
            &[
                ("Content-Type", "application/json".to_owned()),
                ("Docker-Content-Digest", header_digest),
            ],
            &served,
        )
    });
    let client = client();
    let ok = client
        .get_manifest(&repo(&server), &TagOrDigest::Tag("fine".into()))
        .expect("consistent");
    assert_eq!(ok.digest, Digest::of(&manifest));
    assert_eq!(ok.media_type, OCI_MANIFEST, "sniffed from the body");
    let err = client
        .get_manifest(&repo(&server), &TagOrDigest::Tag("lies".into()))
        .expect_err("header mismatch");
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    let wanted = Digest::of(b"something else");
    let err = client
        .get_manifest(&repo(&server), &TagOrDigest::Digest(wanted))
        .expect_err("by-digest mismatch");
    assert!(
        matches!(err, RegistryError::DigestMismatch { expected, .. } if expected == wanted),
        "{err:?}"
    );
}

/// A fake registry behind a bearer token service that wants `user:pass`.
fn token_server(token_field: &'static str) -> FakeServer {
    let good_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:pass")
    );
    FakeServer::start(move |request: &SeenRequest| {
        let port = request
            .header("host")
            .and_then(|h| h.rsplit(':').next())
            .unwrap_or_default()
            .to_owned();
        if request.path.starts_with("/token") {
            if request.header("authorization") != Some(good_basic.as_str()) {
                return http_response("401 Unauthorized", &[], b"bad credentials");
            }
            let body = format!(r#"{{"{token_field}":"tok","expires_in":300}}"#);
            return http_response("200 OK", &[], body.as_bytes());
        }
        if request.header("authorization") != Some("Bearer tok") {
            let challenge = format!(
                r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake-registry",scope="repository:lib/x:pull""#
            );
            return http_response("401 Unauthorized", &[("WWW-Authenticate", challenge)], b"");
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", p) if p.contains("/manifests/") => http_response(
                "200 OK",
                &[("Content-Type", OCI_MANIFEST.to_owned())],
                br#"{"schemaVersion":2}"#,
            ),
            ("HEAD", p) if p.contains("/blobs/") => http_response("404 Not Found", &[], b""),
            ("POST", p) if p.contains("mount=") => http_response(
                "202 Accepted",
                &[("Location", "/v2/lib/x/blobs/uploads/session-1".to_owned())],
                b"",
            ),
            ("PUT", p) if p.starts_with("/v2/lib/x/blobs/uploads/session-1?digest=") => {
                http_response("201 Created", &[], b"")
            }
            _ => http_response("400 Bad Request", &[], b"unexpected"),
        }
    })
}

fn user_pass(registry: &str, password: &str) -> Arc<StaticCredentials> {
    Arc::new(StaticCredentials(
        [(
            registry.to_owned(),
            Credential::UsernamePassword {
                username: "user".into(),
                password: password.into(),
            },
        )]
        .into_iter()
        .collect(),
    ))
}

#[test]
fn bearer_token_flow_with_scope_and_cache() {
    for field in ["token", "access_token"] {
        let server = token_server(field);
        let client = client_with(user_pass(&server.host(), "pass"));
        let latest = TagOrDigest::Tag("latest".into());
        client.get_manifest(&repo(&server), &latest).expect("first");
        client
            .get_manifest(&repo(&server), &latest)
            .expect("second, cached token");
        let seen = server.seen();
        let token_requests: Vec<_> = seen
            .iter()
            .filter(|r| r.path.starts_with("/token"))
            .collect();
        assert_eq!(token_requests.len(), 1, "token cached ({field})");
        assert_eq!(
            token_requests[0].path,
            "/token?service=fake-registry&scope=repository%3Alib%2Fx%3Apull"
        );
        // 401 challenge, token, retried GET, then the cached second GET.
        assert_eq!(seen.len(), 4, "{seen:#?}");
    }
}

#[test]
fn bearer_token_with_wrong_credentials_is_unauthorized() {
    let server = token_server("token");
    let client = client_with(user_pass(&server.host(), "nope"));
    let err = client
        .get_manifest(&repo(&server), &TagOrDigest::Tag("latest".into()))
        .expect_err("bad creds");
    match &err {
        RegistryError::Unauthorized {
            registry,
            had_credentials,
            ..
        } => {
            assert_eq!(registry, &server.host());
            assert!(*had_credentials);
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[test]
fn mount_asks_for_both_scopes_and_uploads_after_202() {
    let server = token_server("token");
    let client = client_with(user_pass(&server.host(), "pass"));
    let blob = b"layer".to_vec();
    let outcome = client
        .push_blob(
            &repo(&server),
            &Digest::of(&blob),
            &blob,
            Some("base/img"),
            &NoProgress,
        )
        .expect("202 falls back to upload");
    assert_eq!(outcome, PushOutcome::Uploaded);
    let seen = server.seen();
    assert!(
        seen.iter().any(|r| r.path.starts_with("/token")
            && r.path.contains("scope=repository%3Abase%2Fimg%3Apull")
            && r.path.contains("scope=repository%3Alib%2Fx%3Apull%2Cpush")),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|r| r.method == "PUT"), "{seen:#?}");
}
