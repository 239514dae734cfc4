//! `stowage-registry`: a blocking client for the OCI distribution protocol that
//! works with Docker Hub, GHCR, ECR, Harbor and the CNCF distribution registry.
//!
//! ## Why blocking `ureq` and worker threads
//! Registry traffic in a builder is a handful of large sequential streams per
//! blob (a few in parallel), not thousands of concurrent sockets. A blocking
//! client ([`ureq`] 3 on rustls) keeps every transfer a plain `Read`/`Write`
//! pipeline — file → socket on push, socket → hasher → file on pull — with
//! bounded memory and no async runtime leaking into the rest of the program.
//! Parallelism comes from [`for_each_parallel`] (scoped threads, default 3 like
//! Docker). `oci-client` was not used: it requires tokio, and its mount handling
//! treats the spec-legal 202 answer as an error.
//!
//! ## Map
//! - [`RegistryClient`] with [`ClientOptions`] / [`RetryPolicy`]: endpoints, TLS,
//!   auth, retries ([`client`], [`endpoint`], [`auth`]).
//! - Credentials from Docker's config and helpers: [`DockerConfig`] ([`credentials`]).
//! - Operations ([`transfer`]): manifests, blobs, mounts, uploads.
//! - Small manifest facts and platform selection ([`manifest`]).
//! - Progress reporting and parallel transfers ([`progress`]).

pub mod auth;
pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod manifest;
pub mod progress;
pub mod reference;
pub mod transfer;

pub use client::{ClientOptions, RegistryClient, RetryPolicy};
pub use credentials::{
    Anonymous, Credential, CredentialProvider, DOCKER_HUB_CONFIG_KEY, DockerConfig,
    StaticCredentials,
};
pub use error::{RegistryError, Result};
pub use manifest::{BlobDescriptor, Manifest, ManifestBlobs};
pub use progress::{DEFAULT_PARALLEL_TRANSFERS, NoProgress, Progress, for_each_parallel};
pub use reference::{Platform, Repository, TagOrDigest};
pub use transfer::{
    BlobSource, FileSource, ManifestHead, MountOutcome, PushOutcome, ResolvedManifest,
};

/// `stowage login`: verifies the credentials against the registry, then stores
/// them in the Docker config (through its credential helper if one is set).
pub fn login(
    client: &RegistryClient,
    config: &DockerConfig,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<()> {
    let credential = Credential::UsernamePassword {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    client.verify_credentials(registry, &credential)?;
    config.store(registry, username, password)
}

/// `stowage logout`: removes stored credentials; returns whether there were any.
pub fn logout(config: &DockerConfig, registry: &str) -> Result<bool> {
    config.erase(registry)
}

#[cfg(test)]
mod tests;
