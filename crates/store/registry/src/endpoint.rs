//! Where a registry name is actually reached and how: `docker.io` is
//! `https://registry-1.docker.io`; loopback registries (`localhost`,
//! `127.0.0.0/8`, `::1`) speak plain HTTP like Docker assumes; everything else
//! is HTTPS verified against the system bundle plus custom CAs (the explicit
//! option and Docker's `/etc/docker/certs.d/<host>/*.crt`). Hosts listed as
//! insecure are tried over HTTPS without verification, then plain HTTP.

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::credentials::is_docker_hub;
use crate::error::{RegistryError, Result};

/// Default system CA bundle (Debian/Ubuntu/Alpine layout).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Docker's per-registry certificate directory root.
pub const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

/// URL scheme of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One way of reaching a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]` as used in URLs (`registry-1.docker.io`, `[::1]:5000`).
    pub authority: String,
    /// Whether the server certificate is verified (always true for HTTP, irrelevant there).
    pub verify_tls: bool,
}

impl Endpoint {
    /// `scheme://authority`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority)
    }
}

/// The host part of `host[:port]` (brackets removed from IPv6 literals).
pub fn host_part(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.matches(':').count() {
        0 => registry,
        1 => registry.split(':').next().unwrap_or(registry),
        _ => registry, // bare IPv6 without port
    }
}

/// Whether the registry is on this machine (Docker talks plain HTTP to those).
pub fn is_loopback(registry: &str) -> bool {
    let host = host_part(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The endpoints to try for a registry, in order. `tls_registries` lists
/// loopback registries that nevertheless serve verified HTTPS.
pub fn candidate_endpoints(
    registry: &str,
    insecure_registries: &[String],
    tls_registries: &[String],
) -> Vec<Endpoint> {
    let authority = if is_docker_hub(registry) {
        "registry-1.docker.io".to_owned()
    } else if registry.matches(':').count() > 1 && !registry.starts_with('[') {
        format!("[{registry}]")
    } else {
        registry.to_owned()
    };
    let https = |verify_tls| Endpoint {
        scheme: Scheme::Https,
        authority: authority.clone(),
        verify_tls,
    };
    let http = Endpoint {
        scheme: Scheme::Http,
        authority: authority.clone(),
        verify_tls: true,
    };
    let listed = |list: &[String]| {
        list.iter()
            .any(|entry| entry == registry || entry == host_part(registry))
    };
    if listed(insecure_registries) {
        vec![https(false), http]
    } else if is_loopback(registry) && !listed(tls_registries) {
        vec![http]
    } else {
        vec![https(true)]
    }
}

/// Builds the TLS configuration for one registry host.
pub(crate) fn tls_config(
    registry: &str,
    verify: bool,
    system_bundle: Option<&Path>,
    extra_ca_files: &[PathBuf],
    docker_certs_dir: Option<&Path>,
) -> Result<TlsConfig> {
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    let mut use_webpki_roots = false;
    match system_bundle {
        Some(bundle) if bundle.exists() => roots.extend(read_certificates(bundle)?),
        _ => use_webpki_roots = true,
    }
    for file in extra_ca_files {
        roots.extend(read_certificates(file)?);
    }
    let mut client_cert = None;
    if let Some(certs_dir) = docker_certs_dir {
        let dir = certs_dir.join(registry);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in &paths {
                match path.extension().and_then(|e| e.to_str()) {
                    Some("crt") => roots.extend(read_certificates(path)?),
                    Some("cert") => {
                        let key_path = path.with_extension("key");
                        let chain = read_certificates(path)?;
                        let key = read_private_key(&key_path)?;
                        client_cert = Some(ClientCert::new_with_certs(&chain, key));
                    }
                    _ => {}
                }
            }
        }
    }
    let root_certs = if use_webpki_roots && roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&roots)
    };
    Ok(TlsConfig::builder()
        .root_certs(root_certs)
        .client_cert(client_cert)
        .disable_verification(!verify)
        .build())
}

fn read_pem_items(path: &Path) -> Result<Vec<PemItem<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| {
        RegistryError::io(format!("reading certificate file {}", path.display()), e)
    })?;
    ureq::tls::parse_pem(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            RegistryError::InvalidArgument(format!("invalid PEM in {}: {e}", path.display()))
        })
}

fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    Ok(read_pem_items(path)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect())
}

fn read_private_key(path: &Path) -> Result<PrivateKey<'static>> {
    read_pem_items(path)?
        .into_iter()
        .find_map(|item| match item {
            PemItem::PrivateKey(key) => Some(key),
            _ => None,
        })
        .ok_or_else(|| {
            RegistryError::InvalidArgument(format!("no private key in {}", path.display()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_registry_1_over_https() {
        let endpoints = candidate_endpoints("docker.io", &[], &[]);
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].base_url(), "https://registry-1.docker.io");
        assert!(endpoints[0].verify_tls);
    }

    #[test]
    fn loopback_is_plain_http() {
        for registry in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            let endpoints = candidate_endpoints(registry, &[], &[]);
            assert_eq!(endpoints.len(), 1, "{registry}");
            assert_eq!(endpoints[0].scheme, Scheme::Http, "{registry}");
        }
        assert_eq!(
            candidate_endpoints("::1", &[], &[])[0].base_url(),
            "http://[::1]"
        );
        let forced = candidate_endpoints("127.0.0.1:5000", &[], &["127.0.0.1:5000".to_owned()]);
        assert_eq!(forced[0].base_url(), "https://127.0.0.1:5000");
        assert!(forced[0].verify_tls);
        let insecure_loopback = candidate_endpoints("localhost:1", &["localhost".to_owned()], &[]);
        assert_eq!(insecure_loopback.len(), 2);
        assert!(!is_loopback("128.0.0.1"));
        assert!(!is_loopback("localhost.example.com"));
    }

    #[test]
    fn insecure_registries_try_unverified_https_then_http() {
        let insecure = vec!["reg.lan:5000".to_owned()];
        let endpoints = candidate_endpoints("reg.lan:5000", &insecure, &[]);
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].scheme, Scheme::Https);
        assert!(!endpoints[0].verify_tls);
        assert_eq!(endpoints[1].base_url(), "http://reg.lan:5000");
        let secure = candidate_endpoints("ghcr.io", &insecure, &[]);
        assert_eq!(secure.len(), 1);
        assert!(secure[0].verify_tls);
    }

    #[test]
    fn bad_ca_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.crt");
        let err = tls_config("x", true, None, &[missing], None).expect_err("missing CA");
        assert!(err.to_string().contains("missing.crt"), "{err}");
    }
}
